"""Smoke test of the benchmark harness: one case on tiny shapes, so it does not rot.

Runs ``benchmarks/run.py --quick --cases eigen`` in a subprocess (the harness sets
up its own imports) and checks the JSON it writes: the environment block, >= 5
timed repeats with median inside [min, max], a compile time, and that the JAX
eigen-analysis agreed with the NumPy loop.  No timing is asserted.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

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
  assert set(rows) == {"jax_batched", "numpy_loop"}
  for r in rows.values():
    assert r["repeats"] >= 5 and len(r["times_s"]) == r["repeats"]
    assert r["min_s"] <= r["median_s"] <= r["max_s"]
  jax_row = rows["jax_batched"]
  assert jax_row["compile_s"] > 0
  assert jax_row["eigenvalue_err_rel_to_largest"] < 1e-3
  mem = [r for r in result["rows"] if r["case"] == "eigen_memory"]
  assert mem and all(r.get("chunked_temp_bytes") is not None or
                     r.get("stream_moments_temp_bytes") is not None for r in mem)
  assert "eigen" in proc.stdout and "wrote" in proc.stdout
