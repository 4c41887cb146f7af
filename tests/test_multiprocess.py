"""train.py as two JAX processes (jax.distributed on CPU, one device each): the
multi-host code path runs end to end, and a workdir the chief cannot lock stops both
processes with one error line each instead of leaving one waiting forever."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from jaxlatent.workdir_lock import hold_workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.image_size=16", "--config.batch_size=8", "--config.data.num_images=64",
        "--config.fid_every=0", "--config.sample_every=0", "--config.log_every=1"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _two_processes(workdir, *overrides, timeout=600):
  """Runs train.py as processes 0 and 1 of one job; returns [(returncode, stderr)]."""
  port = _free_port()
  procs = []
  for i in range(2):
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(i), JAX_PLATFORMS="cpu")
    procs.append(subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"),
         f"--config={os.path.join(ROOT, 'configs', 'dcgan_tiny.py')}", f"--workdir={workdir}",
         *TINY, *overrides], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
  out = []
  for p in procs:
    _, err = p.communicate(timeout=timeout)
    out.append((p.returncode, err))
  return out


def test_two_processes_train_and_checkpoint(tmp_path):
  workdir = tmp_path / "run"
  res = _two_processes(workdir, "--config.steps=2", "--config.ckpt_every=1")
  for rc, err in res:
    assert rc == 0, err[-3000:]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2"]
  records = [json.loads(x) for x in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in records] == [1, 2]  # the chief alone writes the metrics


def test_a_locked_workdir_stops_both_processes(tmp_path):
  workdir = tmp_path / "busy"
  workdir.mkdir()
  with hold_workdir_lock(workdir, "test"):
    res = _two_processes(workdir, "--config.steps=2", timeout=300)
  (rc0, err0), (rc1, err1) = res
  assert rc0 == 2 and "is in use by pid" in err0, err0[-3000:]
  assert rc1 == 2 and "process 0 failed to lock the training workdir" in err1, err1[-3000:]
  assert not os.path.exists(workdir / "checkpoints")
