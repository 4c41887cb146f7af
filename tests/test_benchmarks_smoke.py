"""Smoke tests of the benchmark harness, so it does not rot.

Runs ``benchmarks/run.py --quick --cases eigen`` in a subprocess (the harness sets
up its own imports) and checks the JSON it writes: the environment block, >= 5
timed repeats with median inside [min, max], a compile time, and that the JAX
eigen-analysis agreed with the NumPy loop.  No timing is asserted.  Also: where the
PyTorch references run (``--torch-device``: with JAX on a GPU, never silently on the
CPU) and that the command-line options reach the cases.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_quick_eigen_case_writes_result_json(tmp_path):
  out = tmp_path / "r.json"
  proc = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--cases", "eigen",
       "--json-out", str(out)],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(out.read_text())
  env = result["environment"]
  for key in ("device_kind", "cpu_model", "jax", "flax", "XLA_FLAGS", "host"):
    assert key in env
  rows = {r["variant"]: r for r in result["rows"] if r["case"] == "eigen"}
  assert set(rows) == {"jax_batched", "numpy_loop", "memory_floor"}
  for r in rows.values():
    assert r["repeats"] >= 5 and len(r["times_s"]) == r["repeats"]
    assert r["min_s"] <= r["median_s"] <= r["max_s"]
  jax_row = rows["jax_batched"]
  assert jax_row["compile_s"] > 0
  assert jax_row["eigenvalue_err_rel_to_largest"] < 1e-3
  floor = rows["memory_floor"]
  assert floor["bytes_per_s"] > 0 and floor["max_speedup_vs_numpy"] > 0
  mem = [r for r in result["rows"] if r["case"] == "eigen_memory"]
  assert mem and all(r.get("chunked_temp_bytes") is not None or
                     r.get("stream_moments_temp_bytes") is not None for r in mem)
  assert "eigen" in proc.stdout and "wrote" in proc.stdout
  # The printed table and report.py's Markdown show the same headline speedup.
  speedup = f"{jax_row['speedup_vs_numpy']:.2f}x"
  table_line = next(l for l in proc.stdout.splitlines() if "jax_batched" in l)
  assert speedup in table_line
  report = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), str(out)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
  assert report.returncode == 0, report.stderr[-2000:]
  md_line = next(l for l in report.stdout.splitlines() if "| jax_batched |" in l)
  assert speedup in md_line and "traversals/s" in md_line


def _load_run_module(monkeypatch):
  """benchmarks/run.py as a module; the sys.path entries it adds go with the test."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sys, "path", list(sys.path))
  spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class _FakeTorch:
  """Just what resolve_torch_device reads: ``cuda.is_available()`` and ``__version__``."""

  __version__ = "0.0-fake"

  def __init__(self, cuda: bool):
    self.cuda = type("cuda", (), {"is_available": staticmethod(lambda: cuda)})


def test_torch_device_follows_jax_and_refuses_a_missing_gpu(monkeypatch):
  run = _load_run_module(monkeypatch)
  resolve = run.resolve_torch_device
  # auto: PyTorch on the GPU only when JAX runs there too and torch sees one.
  assert resolve("auto", _FakeTorch(cuda=True), "gpu") == "cuda"
  assert resolve("auto", _FakeTorch(cuda=True), "cpu") == "cpu"
  assert resolve("auto", _FakeTorch(cuda=False), "gpu") == "cpu"
  assert resolve("auto", None, "gpu") == "cpu"
  assert resolve("cpu", _FakeTorch(cuda=True), "gpu") == "cpu"
  assert resolve("cuda", _FakeTorch(cuda=True), "cpu") == "cuda"
  # An explicit 'cuda' that cannot be honoured is an error, never a silent CPU run.
  with pytest.raises(ValueError, match="sees no CUDA device"):
    resolve("cuda", _FakeTorch(cuda=False), "gpu")
  with pytest.raises(ValueError, match="not installed"):
    resolve("cuda", None, "gpu")
  with pytest.raises(ValueError, match="expected one of"):
    resolve("tpu", _FakeTorch(cuda=False), "cpu")


def test_run_options_reach_the_cases(monkeypatch):
  run = _load_run_module(monkeypatch)
  args = run.parse_args(["--stylegan-sizes", "64,256", "--stylegan-full", "--torch-device",
                         "cpu", "--dcgan-sizes", "64"])
  ctx = run.make_ctx(args)
  assert ctx["stylegan_sizes"] == [64, 256] and ctx["stylegan_full"] is True
  assert ctx["dcgan_sizes"] == [64]
  assert ctx["torch_device"] == "cpu"
  assert run.make_ctx(run.parse_args(["--torch-device", "cpu"]))["dcgan_sizes"] == []


@pytest.mark.parametrize("flag", ["--dcgan-sizes", "--stylegan-sizes"])
def test_run_names_the_flag_of_a_bad_size_list(monkeypatch, capsys, flag):
  run = _load_run_module(monkeypatch)
  for bad in ("64,abc", "0"):
    with pytest.raises(SystemExit) as exit_info:
      run.parse_args([flag, bad])
    assert exit_info.value.code == 2
    assert f"argument {flag}: '{bad}'" in capsys.readouterr().err


def test_run_refuses_torch_device_cuda_without_a_gpu(tmp_path, monkeypatch, capsys):
  try:
    import torch  # pylint: disable=g-import-not-at-top
    if torch.cuda.is_available():
      pytest.skip("this machine has a GPU that torch can use")
  except ImportError:
    pass  # then the error says torch is not installed
  out = tmp_path / "r.json"
  # run.py's main in this process (it refuses before any case runs): the variable it
  # sets and the allocator setting would otherwise outlive the test.
  monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")
  run = _load_run_module(monkeypatch)
  capsys.readouterr()
  code = run.main(["--quick", "--cases", "flops", "--torch-device", "cuda", "--json-out",
                   str(out), "--malloc=system"])
  assert code == 2
  assert "--torch-device cuda" in capsys.readouterr().err
  assert not out.exists()


def _profile_ops(monkeypatch, capsys, argv):
  """benchmarks/profile_ops.py's ``main`` in this process: (exit status, stdout, stderr).

  For its --compare and flag checks, which import no JAX of their own: a process each
  would cost a Python start for one JSON read or one argparse error.
  """
  from cli_runs import call_main, load_script  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sys, "path", list(sys.path))  # the entries it adds go with the test
  module = load_script(str(ROOT / "benchmarks" / "profile_ops.py"), "profile_ops")
  return call_main(module.main, argv, capsys)


def test_profile_ops_quick_dcgan_and_compare(tmp_path, monkeypatch, capsys):
  """benchmarks/profile_ops.py: per-op durations of the step joined with the HLO ops'
  shapes and source names, family totals that add up, and --compare of two files.
  The profile runs as a real process (the profiler and its allocator setting)."""
  out = tmp_path / "ops.json"
  script = str(ROOT / "benchmarks" / "profile_ops.py")
  proc = subprocess.run([sys.executable, script, "--case", "dcgan", "--quick", "--top", "5",
                         "--json-out", str(out)],
                        capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(out.read_text())
  assert result["case"] == "dcgan" and result["step_wall_s"] > 0 and result["step_cpu_s"] > 0
  ops = result["ops"]
  assert ops and all(r["ms"] > 0 and r["kind"] and r["shape"] for r in ops)
  assert [r["ms"] for r in ops] == sorted((r["ms"] for r in ops), reverse=True)
  # The discriminator's and generator's layers are named in the ops' source names.
  names = " ".join(r["op_name"] for r in ops)
  assert "DCGANDiscriminator" in names and "DCGANGenerator" in names
  np.testing.assert_allclose(sum(result["families_ms"].values()), result["ops_ms_total"],
                             rtol=1e-6)
  assert ops[0]["op"] in proc.stdout
  code, stdout, stderr = _profile_ops(monkeypatch, capsys, ["--compare", str(out), str(out)])
  assert code == 0, stderr[-2000:]
  assert "x 1.00" in stdout
  code, _, stderr = _profile_ops(monkeypatch, capsys,
                                 ["--compare", str(out), str(tmp_path / "missing.json")])
  assert code == 2 and "missing.json" in stderr
  other = tmp_path / "other.json"
  other.write_text(json.dumps({"rows": []}))  # a run.py result, not a profile
  code, _, stderr = _profile_ops(monkeypatch, capsys, ["--compare", str(out), str(other)])
  assert code == 2 and "other.json: not a profile_ops.py" in stderr
  bad_flags = ((["--case", "dcgan", "--size", "48"], "--size 48: expected a power"),
               (["--case", "discovery", "--size", "64"], "--size applies to --case dcgan"))
  for flags, message in bad_flags:
    code, _, stderr = _profile_ops(monkeypatch, capsys, flags)
    assert code == 2 and message in stderr, stderr[-500:]
