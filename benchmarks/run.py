"""Runs jaxlatent's benchmarks, writes ``benchmarks/results/<host>-<date>.json``, prints a table.

  python benchmarks/run.py                        # every case, full shapes
  python benchmarks/run.py --cases dcgan,eigen    # some cases
  python benchmarks/run.py --quick                # tiny shapes, seconds (smoke test)

Cases: dcgan, stylegan, discovery, eigen, inversion, flops (see the case_*.py
docstrings).  The PyTorch references need the optional extra (``pip install -e
.[bench]``); without torch those rows say 'not available'.  A case whose library code
is missing is recorded as 'not available: <reason>' instead of failing the run.

XLA_FLAGS can only be set before jax starts, so ``--xla-variants`` re-runs the DCGAN
case in one subprocess per flag set (each pairs JAX with the PyTorch reference in its
own process, so the JAX/PyTorch ratio is comparable across flag sets).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from jaxlatent.host import MALLOC_MODES  # pylint: disable=g-import-not-at-top  # noqa: E402
import report  # pylint: disable=g-import-not-at-top  # noqa: E402  (no jax, no torch)

ALL_CASES = ("dcgan", "stylegan", "discovery", "eigen", "inversion", "flops")
TORCH_DEVICES = ("auto", "cpu", "cuda")

# Named XLA_FLAGS sets tried for the DCGAN step (each in its own subprocess).
XLA_VARIANTS = {
    "onednn": "--xla_cpu_use_onednn=true",
    "onednn_fusion": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot,eltwise",
    "xnn_fusion": "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce",
    "xnn_graph": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "vector512": "--xla_cpu_prefer_vector_width=512",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    # YNNPACK off: XLA:CPU's own (Eigen) convolutions, dots and fusions.
    "ynn_off": "--xla_cpu_experimental_ynn_fusion_type=",
    # YNNPACK's convolutions off (its dots kept): XLA:CPU's Eigen convolutions.
    "ynn_noconv": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
}


def size_list(text: str) -> list[int]:
  """``'64,128'`` -> ``[64, 128]`` (argparse type: a bad value names its flag)."""
  try:
    sizes = [int(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated image sizes, "
                                     "e.g. 64,128") from None
  if any(v <= 0 for v in sizes):
    raise argparse.ArgumentTypeError(f"{text!r}: image sizes must be positive")
  return sizes


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--cases", default=",".join(ALL_CASES),
                 help=f"comma-separated subset of {','.join(ALL_CASES)}")
  p.add_argument("--quick", action="store_true", help="tiny shapes: a smoke run of the harness, not a measurement")
  p.add_argument("--repeats", type=int, default=5, help="timed repeats per figure (>= 5)")
  p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
  p.add_argument("--out", default=str(HERE / "results"), help="folder of the JSON result")
  p.add_argument("--json-out", default=None, help="exact JSON path (overrides --out)")
  p.add_argument("--torch-threads", type=int, default=0,
                 help="torch.set_num_threads (0: every core this process may use, as XLA)")
  p.add_argument("--torch-device", default="auto", choices=TORCH_DEVICES,
                 help="where the PyTorch references run; auto: 'cuda' when JAX runs on a "
                      "GPU and torch sees one, else 'cpu'")
  p.add_argument("--dcgan-sizes", type=size_list, default=[], help="e.g. 64,128")
  p.add_argument("--dcgan-batch", type=int, default=0)
  p.add_argument("--dcgan-channels", type=int, default=0,
                 help="channels at 4x4 (default 512; the paper: 2048)")
  p.add_argument("--dcgan-variants", default="", help="comma list (case_dcgan.VARIANTS)")
  p.add_argument("--transpose-max-size", type=int, default=64)
  p.add_argument("--stylegan-sizes", type=size_list, default=[],
                 help="e.g. 64,256 (default 64; 16 with --quick)")
  p.add_argument("--stylegan-full", action="store_true",
                 help="stylegan2-ada's 512-channel network (batch 32) instead of the narrow "
                      "CPU one; for accelerators")
  p.add_argument("--xla-variants", default="",
                 help=f"comma list of {','.join(XLA_VARIANTS)} (or 'all'): DCGAN per flag set")
  p.add_argument("--host-devices", type=int, default=0,
                 help="CPU only: split the host into N XLA devices "
                      "(--xla_force_host_platform_device_count), e.g. to time restarts "
                      "spread over devices against sequential runs using every core")
  p.add_argument("--malloc", default="retain", choices=MALLOC_MODES,
                 help="host allocator, as train.py's --malloc (jaxlatent/host.py); both "
                      "frameworks share it")
  p.add_argument("--no-table", action="store_true")
  return p.parse_args(argv)


def resolve_torch_device(requested: str, torch, jax_platform: str) -> str:
  """The device the PyTorch references run on: 'cpu' or 'cuda'.

  ``auto`` pairs them with JAX: 'cuda' when JAX runs on a GPU and torch sees one.  An
  explicit 'cuda' that torch cannot use is an error, not a silent CPU run (that would
  set a GPU JAX step against a CPU PyTorch step).
  """
  if requested not in TORCH_DEVICES:
    raise ValueError(f"--torch-device {requested!r}: expected one of {TORCH_DEVICES}")
  if requested == "cuda" and torch is None:
    raise ValueError("--torch-device cuda: torch is not installed (pip install -e .[bench])")
  cuda = torch is not None and torch.cuda.is_available()
  if requested == "cuda" and not cuda:
    raise ValueError(f"--torch-device cuda: torch {torch.__version__} sees no CUDA device")
  if requested == "auto":
    return "cuda" if cuda and jax_platform == "gpu" else "cpu"
  return requested


def make_ctx(args) -> dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  torch = None
  try:
    import torch as torch_mod  # pylint: disable=g-import-not-at-top
    import torch_refs  # pylint: disable=g-import-not-at-top
    torch = torch_mod
  except ImportError:
    pass
  # Every reference step takes this device explicitly (torch_refs.py's docstring).
  torch_device = resolve_torch_device(args.torch_device, torch, jax.default_backend())
  if torch is not None:
    torch_refs.set_threads(args.torch_threads or len(os.sched_getaffinity(0)))
  return {
      "quick": args.quick, "repeats": max(5, args.repeats), "warmup": max(1, args.warmup),
      "torch": torch, "torch_device": torch_device,
      "dcgan_sizes": args.dcgan_sizes, "dcgan_batch": args.dcgan_batch,
      "dcgan_channels": args.dcgan_channels,
      "dcgan_variants": tuple(x for x in args.dcgan_variants.split(",") if x),
      "transpose_max_size": args.transpose_max_size,
      "stylegan_sizes": args.stylegan_sizes, "stylegan_full": args.stylegan_full,
  }


def run_case(name: str, ctx: dict[str, Any]) -> list[dict[str, Any]]:
  """Runs one case; a missing library piece or a crash becomes a row, not an abort."""
  t0 = time.perf_counter()
  try:
    module = __import__(f"case_{name}")
    rows = module.run(ctx)
  except ImportError as e:
    rows = [{"case": name, "status": "not available", "reason": f"{type(e).__name__}: {e}"}]
  except Exception as e:  # pylint: disable=broad-except
    rows = [{"case": name, "status": "error", "reason": f"{type(e).__name__}: {e}",
             "traceback": traceback.format_exc(limit=6)}]
  for r in rows:
    r.setdefault("case", name)
  print(f"[{name}] {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
  return rows


def xla_variant_rows(args, names: list[str]) -> list[dict[str, Any]]:
  """DCGAN jax_schon (the default network) vs torch_nchw under each XLA_FLAGS set, one
  subprocess each."""
  rows = []
  sizes = ",".join(map(str, args.dcgan_sizes)) or ("16" if args.quick else "64")
  for name in ["baseline", *names]:
    flags = "" if name == "baseline" else XLA_VARIANTS[name]
    with tempfile.TemporaryDirectory() as tmp:
      out = pathlib.Path(tmp) / "r.json"
      cmd = [sys.executable, str(HERE / "run.py"), "--cases", "dcgan", "--no-table",
             "--dcgan-sizes", sizes, "--dcgan-variants", "jax_schon,torch_nchw",
             "--json-out", str(out), "--repeats", str(args.repeats), "--malloc", args.malloc]
      if args.quick:
        cmd.append("--quick")
      if args.dcgan_channels:
        cmd += ["--dcgan-channels", str(args.dcgan_channels)]
      if args.dcgan_batch:
        cmd += ["--dcgan-batch", str(args.dcgan_batch)]
      env = {**os.environ, "XLA_FLAGS": flags}
      proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
      if proc.returncode != 0 or not out.exists():
        rows.append({"case": "dcgan_xla_flags", "variant": name, "XLA_FLAGS": flags,
                     "status": "error", "reason": proc.stderr.strip()[-400:]})
        continue
      for r in json.loads(out.read_text())["rows"]:
        if r.get("variant") == "jax_schon":
          r.update(case="dcgan_xla_flags", variant=f"jax_schon[{name}]", XLA_FLAGS=flags)
          rows.append(r)
  return rows


def add_peak_fractions(rows: list[dict[str, Any]]) -> None:
  """Achieved FLOP/s of every JAX row as a fraction of the measured matmul peak."""
  peak = next((r.get("flops_per_s") for r in rows
               if r.get("case") == "flops" and r.get("variant") == "peak_matmul_f32"), None)
  if not peak:
    return
  for r in rows:
    # Rows from XLA_FLAGS subprocesses ran at another time under another load: no.
    if (r.get("flops_per_s") and r.get("variant") != "peak_matmul_f32"
        and "XLA_FLAGS" not in r):
      r["fraction_of_peak"] = r["flops_per_s"] / peak


def fmt(x, spec=".3g"):
  return "-" if x is None else format(x, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
  head = f"{'case':<16} {'variant':<34} {'shape':<22} {'median':>9} {'min':>8} {'max':>8} {'compile':>8} {'thru':>16} {'speedup':>14} {'GF/s':>7} {'%pk':>5}"
  print(head)
  print("-" * len(head))
  for r in rows:
    if r.get("case") == "eigen_memory":
      mem = {k: v for k, v in r.items() if k.endswith("_bytes") and v is not None}
      print(f"{r['case']:<16} {r['variant']:<34} {r.get('shape', ''):<22} " +
            ", ".join(f"{k.replace('_bytes', '')}={v / 2**20:.2f} MiB" for k, v in mem.items()))
      continue
    if "median_s" not in r:
      print(f"{r.get('case', ''):<16} {r.get('variant', ''):<34} {r.get('shape', ''):<22} "
            f"{r.get('status', '')}: {r.get('reason', '')[:120]}")
      continue
    thru, sp = report.throughput_text(r), report.speedup_text(r, spread=False)
    gf = r["flops_per_s"] / 1e9 if r.get("flops_per_s") else None
    pk = 100 * r["fraction_of_peak"] if r.get("fraction_of_peak") else None
    print(f"{r.get('case', ''):<16} {r.get('variant', ''):<34} {r.get('shape', ''):<22} "
          f"{r['median_s']:>9.4f} {r['min_s']:>8.4f} {r['max_s']:>8.4f} "
          f"{fmt(r.get('compile_s'), '.1f'):>8} {thru:>16} {sp:>14} {fmt(gf, '.1f'):>7} "
          f"{fmt(pk, '.0f'):>5}")


def main(argv=None) -> int:
  args = parse_args(argv)
  t_start = time.perf_counter()
  cases = [c for c in args.cases.split(",") if c]
  unknown = [c for c in cases if c not in ALL_CASES]
  if unknown:
    print(f"error: unknown case(s) {unknown}; expected some of {ALL_CASES}", file=sys.stderr)
    return 2
  # JAX and PyTorch share one GPU in this process: XLA's default preallocation (75% of
  # the device's memory) would leave torch too little.  No effect on CPU.
  os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")
  if args.host_devices > 1:  # read when the CPU backend starts, which has not happened yet
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.host_devices}"
                               ).strip()
  # Before JAX or torch start their threads (they pick their malloc arenas then).
  from jaxlatent.host import configure_malloc  # pylint: disable=g-import-not-at-top
  malloc_applied = configure_malloc(args.malloc)
  import common  # pylint: disable=g-import-not-at-top
  try:
    ctx = make_ctx(args)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  env = common.environment()
  env["malloc"] = args.malloc if malloc_applied or args.malloc == "system" else (
      f"{args.malloc} (not applied: not glibc)")
  if ctx["torch"] is not None:
    env["torch_threads"] = ctx["torch"].get_num_threads()
    env["torch_device"] = ctx["torch_device"]
    if ctx["torch_device"] == "cuda":
      env["torch_device_name"] = ctx["torch"].cuda.get_device_name()
  rows: list[dict[str, Any]] = []
  result = {"command": " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
            "environment": env, "quick": args.quick, "rows": rows}
  path = result_path(args)
  # The peak first, so every case's achieved FLOP/s can be set against it.  The JSON
  # is rewritten after every case, so a long run that is cut short keeps its figures.
  for name in sorted(cases, key=lambda c: c != "flops"):
    rows += run_case(name, ctx)
    write(path, result, common, t_start, partial=True)
  if args.xla_variants:
    names = list(XLA_VARIANTS) if args.xla_variants == "all" else [
        x for x in args.xla_variants.split(",") if x]
    rows += xla_variant_rows(args, names)
  add_peak_fractions(rows)
  write(path, result, common, t_start, partial=False)
  if not args.no_table:
    print(f"# {env['cpu_model']} x{env['cpu_count']} ({env['device_kind']}), jax "
          f"{env['jax']}, torch {env['torch']}, XLA_FLAGS='{env['XLA_FLAGS']}', "
          f"GLIBC_TUNABLES='{env.get('GLIBC_TUNABLES', '')}', malloc {env['malloc']}, load "
          f"{env['load_average_start']} -> {env['load_average_end']}")
    print_table(rows)
    print(f"# wrote {path}")
  return 0


def write(path: pathlib.Path, result: dict[str, Any], common, t_start: float,
          partial: bool) -> None:
  env = result["environment"]
  env["load_average_end"] = common._loadavg()  # pylint: disable=protected-access
  env["wall_s"] = round(time.perf_counter() - t_start, 1)
  result["partial"] = partial
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(result, indent=1, default=str))


def result_path(args) -> pathlib.Path:
  """--json-out, or <out>/<host>-<date>[-quick].json (a time suffix if that exists)."""
  if args.json_out:
    path = pathlib.Path(args.json_out)
  else:
    day = datetime.date.today().isoformat()
    stamp = datetime.datetime.now().strftime("%H%M%S")
    suffix = "-quick" if args.quick else ""
    path = pathlib.Path(args.out) / f"{socket.gethostname()}-{day}{suffix}.json"
    if path.exists():  # keep earlier runs of the same day
      path = path.with_name(f"{path.stem}-{stamp}.json")
  return path


if __name__ == "__main__":
  sys.exit(main())
