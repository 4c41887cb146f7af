"""Per-op profile of a benchmark's compiled JAX step: which HLO ops take the time.

  python benchmarks/profile_ops.py --case dcgan --json-out dcgan-ops.json
  taskset -c 1 python benchmarks/profile_ops.py --case discovery --json-out one.json
  python benchmarks/profile_ops.py --case discovery --json-out all.json
  python benchmarks/profile_ops.py --compare one.json all.json

Runs the library's step of case 1 (DCGAN, ``--size``, C512, batch 64) or case 3 (the
discovery step, as ``run.py``) under ``jax.profiler.trace``, sums each HLO op's
durations per step from the Perfetto trace, and joins them with the op's shape, kind and
source ``op_name`` from the compiled HLO.  It prints the top ops and the totals per op
family (``ynn_fusion``, ``dot_general``, ``copy_bitcast_fusion``, ...), and writes them
to ``--json-out``.  ``--compare A B`` pairs two such files op by op, e.g. pinned to one
core (A) against all cores (B): the ops whose time does not fall are the ones XLA runs
on one thread.  Durations under the profiler are a little longer than without it, and
the step's median wall and CPU times (``step_wall_s``, ``step_cpu_s``) are measured
apart, without the profiler.  How the RESULTS.md profiles were taken.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import re
import sys
import tempfile
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from jaxlatent.host import MALLOC_HELP, MALLOC_MODES  # pylint: disable=g-import-not-at-top  # noqa: E402

CASES = ("dcgan", "discovery")
_HLO_OP = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ([\w\-]+)\(")


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--case", choices=CASES, help="the step to profile")
  p.add_argument("--size", type=int, default=None,
                 help="DCGAN image size (default 64; 16 with --quick)")
  p.add_argument("--steps", type=int, default=3, help="profiled steps (after 3 warm-up)")
  p.add_argument("--top", type=int, default=30, help="ops to print")
  p.add_argument("--quick", action="store_true", help="tiny shapes (a smoke run)")
  p.add_argument("--json-out", default=None, help="write the profile here")
  p.add_argument("--malloc", default="retain", choices=MALLOC_MODES, help=MALLOC_HELP)
  p.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                 help="compare two --json-out files op by op instead of profiling")
  args = p.parse_args(argv)
  if not args.compare and not args.case:
    p.error("one of --case or --compare is required")
  if args.steps < 1:
    p.error(f"--steps {args.steps}: expected at least 1")
  if args.size is not None:
    if args.case != "dcgan":
      p.error("--size applies to --case dcgan only (the discovery step's size is fixed)")
    if args.size < 8 or args.size & (args.size - 1):
      p.error(f"--size {args.size}: expected a power of two >= 8")
  return args


def hlo_ops(hlo_text: str) -> dict[str, dict[str, str]]:
  """``{op name: {shape, kind, op_name}}`` of every instruction in the HLO text."""
  ops = {}
  for line in hlo_text.splitlines():
    m = _HLO_OP.match(line)
    if m:
      meta = re.search(r'op_name="([^"]*)"', line)
      ops[m.group(1)] = {"shape": m.group(2), "kind": m.group(3),
                         "op_name": meta.group(1) if meta else ""}
  return ops


def op_durations(trace_dir: str, names: set[str], steps: int) -> dict[str, float]:
  """Milliseconds per step of each named op, summed over the Perfetto trace's events."""
  files = sorted(pathlib.Path(trace_dir).glob("**/perfetto_trace.json.gz"))
  if not files:
    raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir}")
  with gzip.open(files[-1]) as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  total: collections.Counter = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e.get("name") in names:
      total[e["name"]] += e["dur"] / 1e3 / steps  # microseconds -> ms per step
  return dict(total)


def family(op: str) -> str:
  """``ynn_fusion.46`` -> ``ynn_fusion``."""
  return re.sub(r"\.\d+$", "", op)


def build(case: str, size: int | None, quick: bool):
  """(call, compiled, shape text) of the library step of ``case``."""
  if case == "dcgan":
    import case_dcgan  # pylint: disable=g-import-not-at-top
    sizes, batch, c4 = case_dcgan.shapes(quick)
    size = size or sizes[0]
    call, _, compiled = case_dcgan.lib_step(size, batch, c4)
    return call, compiled, case_dcgan.shape_text(size, batch, c4)
  import case_discovery  # pylint: disable=g-import-not-at-top
  size, c4, batch, k = case_discovery.shapes(quick)
  gen = case_discovery._generator(size, c4)  # pylint: disable=protected-access
  call, _, compiled = case_discovery.jax_step(gen, batch, k)
  return call, compiled, case_discovery.shape_text(size, c4, batch, k)


def profile(args) -> dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import common  # pylint: disable=g-import-not-at-top
  call, compiled, shape = build(args.case, args.size, args.quick)
  info = hlo_ops(compiled.as_text())
  for _ in range(3):
    jax.block_until_ready(call())
  timing = common.time_calls(call, repeats=5, warmup=0)
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(args.steps):
        jax.block_until_ready(call())
    ms = op_durations(trace_dir, set(info), args.steps)
  ops = sorted(({"op": k, "ms": v, **info[k]} for k, v in ms.items()), key=lambda r: -r["ms"])
  families: collections.Counter = collections.Counter()
  for r in ops:
    families[family(r["op"])] += r["ms"]
  return {"case": args.case, "shape": shape, "environment": common.environment(),
          "step_wall_s": float(np.median(timing.times)),
          "step_cpu_s": float(np.median(timing.cpu_times)),
          "ops_ms_total": sum(ms.values()), "families_ms": dict(families.most_common()),
          "ops": ops}


def print_profile(result: dict[str, Any], top: int) -> None:
  env = result["environment"]
  print(f"{result['case']} {result['shape']}: step {result['step_wall_s']:.4f} s wall, "
        f"{result['step_cpu_s']:.4f} s CPU ({env['cpus_usable']} usable CPUs); ops under "
        f"the profiler {result['ops_ms_total']:.1f} ms per step")
  print("by family: " + ", ".join(f"{k} {v:.1f}" for k, v in
                                  list(result["families_ms"].items())[:8]))
  for r in result["ops"][:top]:
    print(f"{r['ms']:8.2f} ms  {r['op'][:30]:30s} {r['shape'][:36]:36s} {r['op_name'][-80:]}")


def compare(a: dict[str, Any], b: dict[str, Any], top: int) -> dict[str, Any]:
  """Pairs the ops of two profiles of the same program; prints and returns the totals."""
  a_ms = {r["op"]: r for r in a["ops"]}
  b_ms = {r["op"]: r["ms"] for r in b["ops"]}
  rows = [(r["ms"], b_ms.get(op, 0.0), op, r) for op, r in a_ms.items()]
  not_faster = [x for x in rows if x[1] >= 0.8 * x[0]]
  summary = {"a_ms": sum(x[0] for x in rows), "b_ms": sum(x[1] for x in rows),
             "not_faster_a_ms": sum(x[0] for x in not_faster),
             "not_faster_b_ms": sum(x[1] for x in not_faster)}
  print(f"A: {a['step_wall_s']:.4f} s wall, {a['environment']['cpus_usable']} CPUs; "
        f"B: {b['step_wall_s']:.4f} s wall, {b['environment']['cpus_usable']} CPUs")
  print(f"ops: A {summary['a_ms']:.1f} ms, B {summary['b_ms']:.1f} ms; ops not >= 1.25x "
        f"faster in B: A {summary['not_faster_a_ms']:.1f} -> B "
        f"{summary['not_faster_b_ms']:.1f} ms")
  for am, bm, op, r in sorted(rows, key=lambda x: -x[1])[:top]:
    print(f"{am:8.2f} -> {bm:8.2f} ms  x{am / max(bm, 1e-6):5.2f}  {op[:28]:28s} "
          f"{r['shape'][:30]:30s} {r['op_name'][-70:]}")
  return summary


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.compare:
    files = []
    for path in args.compare:
      try:
        with open(path) as f:
          files.append(json.load(f))
      except (OSError, json.JSONDecodeError) as e:
        print(f"error: {path}: {e}", file=sys.stderr)
        return 2
      missing = [k for k in ("case", "shape", "ops", "step_wall_s", "environment")
                 if not isinstance(files[-1], dict) or k not in files[-1]]
      if missing:
        print(f"error: {path}: not a profile_ops.py --json-out file (no {missing})",
              file=sys.stderr)
        return 2
    if (files[0]["case"], files[0]["shape"]) != (files[1]["case"], files[1]["shape"]):
      print(f"error: {args.compare[0]} profiles {files[0]['case']} {files[0]['shape']}, "
            f"{args.compare[1]} {files[1]['case']} {files[1]['shape']}: not the same step",
            file=sys.stderr)
      return 2
    compare(files[0], files[1], args.top)
    return 0
  from jaxlatent.host import configure_malloc  # pylint: disable=g-import-not-at-top
  configure_malloc(args.malloc)  # before JAX starts its threads (see run.py)
  t0 = time.perf_counter()
  result = profile(args)
  print_profile(result, args.top)
  if args.json_out:
    out = pathlib.Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"# wrote {out} ({time.perf_counter() - t0:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
