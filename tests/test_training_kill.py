"""A training process killed with SIGKILL after its first checkpoint resumes exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import dcgan_tiny  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxlatent.training import checkpoint as ckpt_lib  # noqa: E402
from jaxlatent.training import metrics as metrics_lib  # noqa: E402
from jaxlatent.training.loop import train_and_evaluate  # noqa: E402
from jaxlatent.training.testing import toy_dataset, toy_trainer  # noqa: E402
from jaxlatent.training import complete_train_config  # noqa: E402

STEPS, CKPT_EVERY, SIZE = 80, 10, 16

# The same run as `config()` below, on a "disk" that stalls once the first checkpoint
# exists, so the process is surely mid-run when it is killed.
SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    from test_training_kill import config, SlowImages
    from jaxlatent.training.loop import train_and_evaluate
    from jaxlatent.training.testing import toy_dataset, toy_trainer
    data = toy_dataset(64, {size})
    train_and_evaluate(config(), {workdir!r}, trainer=toy_trainer({size}),
                       dataset=SlowImages(data.images, {gate!r}))
""")


class SlowImages:
  """A dataset whose reads take 10 ms, and hang once the file ``gate`` exists."""

  def __init__(self, images, gate):
    self._images, self._gate = images, gate

  @property
  def images(self):
    return self

  @property
  def shape(self):
    return self._images.shape

  def __getitem__(self, idx):
    time.sleep(0.01)
    while os.path.exists(self._gate):
      time.sleep(1.0)
    return self._images[idx]


def config():
  c = complete_train_config(dcgan_tiny.get_config())
  c.image_size, c.batch_size, c.steps = SIZE, 8, STEPS
  c.log_every, c.ckpt_every, c.keep_checkpoints = 5, CKPT_EVERY, 10
  c.sample_every, c.fid_every = 0, 0
  return c


def test_kill_9_then_resume_equals_uninterrupted_run(tmp_path):
  workdir = tmp_path / "killed"
  first = workdir / "checkpoints" / str(CKPT_EVERY)
  script = SCRIPT.format(root=ROOT, tests=os.path.dirname(__file__), size=SIZE,
                         workdir=str(workdir), gate=str(first))
  # The subprocess gets as many (CPU) devices as this process, which resumes its run,
  # and the same XLA flags (the same compiled numerics: resume must be bit-exact).
  flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                   if "xla_force_host_platform_device_count" not in f)
  env = dict(os.environ, XLA_FLAGS=(
      f"{flags} --xla_force_host_platform_device_count={jax.device_count()}").strip())
  proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True,
                          env=env)
  ckpt_dir = workdir / "checkpoints"
  deadline = time.time() + 300
  try:
    while not first.exists() and proc.poll() is None and time.time() < deadline:
      time.sleep(0.05)
    assert first.exists(), proc.communicate()[0] if proc.poll() is not None else "timeout"
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.wait()
  assert proc.returncode == -signal.SIGKILL
  steps_at_kill = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  assert steps_at_kill and max(steps_at_kill) < STEPS, steps_at_kill  # killed mid-run

  # A save cut short leaves orbax's temporary folder: never a checkpoint, removed.
  partial = ckpt_dir / f"{CKPT_EVERY * 2}.orbax-checkpoint-tmp-1234"
  (partial / "default").mkdir(parents=True, exist_ok=True)
  (partial / "default" / "junk").write_bytes(b"\0" * 10)
  data = toy_dataset(64, SIZE)
  resumed = train_and_evaluate(config(), str(workdir), trainer=toy_trainer(SIZE), dataset=data)
  straight = train_and_evaluate(config(), str(tmp_path / "straight"),
                                trainer=toy_trainer(SIZE), dataset=data)
  assert int(resumed.step) == int(straight.step) == STEPS
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=0)
  # No partial save survives; every kept checkpoint is readable.
  assert all(d.isdigit() for d in os.listdir(ckpt_dir)), os.listdir(ckpt_dir)
  for step in sorted(int(d) for d in os.listdir(ckpt_dir)):
    assert ckpt_lib.load_state_tree(str(workdir), step)[0] == step
  logged = [r["step"] for r in metrics_lib.read_metrics(str(workdir / "metrics.jsonl"))]
  assert logged == list(range(5, STEPS + 1, 5))
