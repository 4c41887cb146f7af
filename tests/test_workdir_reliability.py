"""A training workdir is never silently corrupted, mixed or lost.

Each test is a failing scenario on a copy of one trained tiny workdir: a second
``train.py`` while a run holds the workdir, a real ``kill -9``, a diverging run, a
deleted ``checkpoints/``, a config of another run, a refused data set, a save that
fails in the background, a corrupt checkpoint or cache.  User errors must give one
``error:`` line, exit status 2, and leave every file of the workdir byte-identical.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train as train_cli  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxlatent import atomic_io  # noqa: E402
from jaxlatent.config_cli import parse_config_flags  # noqa: E402
from jaxlatent.training import complete_train_config  # noqa: E402
from jaxlatent.errors import CheckpointError, TrainingError  # noqa: E402
from jaxlatent.training import checkpoint as ckpt_lib  # noqa: E402
from jaxlatent.training import metrics as metrics_lib  # noqa: E402
from jaxlatent.training.loop import train_and_evaluate  # noqa: E402
from jaxlatent.training.testing import toy_dataset, toy_trainer  # noqa: E402
from jaxlatent.workdir_lock import lock_holder  # noqa: E402

SIZE = 16
# The run every test starts from: 6 steps, a checkpoint, log line and sample every 2.
ARGS = (f"--config={os.path.join(ROOT, 'configs', 'vae_tiny.py')}", f"--config.image_size={SIZE}",
        "--config.batch_size=8", "--config.steps=6", "--config.log_every=2",
        "--config.ckpt_every=2", "--config.keep_checkpoints=10", "--config.sample_every=2",
        "--config.num_samples=4", "--config.fid_every=0", "--config.data.num_images=64")
DATA = toy_dataset(64, SIZE)


def make_config(*overrides: str):
  return parse_config_flags(["train.py", *ARGS, *overrides], complete=complete_train_config)[0]


def toy_run(workdir, *overrides: str, trainer=None, dataset=DATA, **kwargs):
  """The run of ``ARGS`` (+ overrides) trained by the toy model (seconds, not minutes)."""
  return train_and_evaluate(make_config(*overrides), str(workdir),
                            trainer=trainer or toy_trainer(SIZE), dataset=dataset, **kwargs)


def hashes(folder) -> dict[str, str]:
  """sha256 of every file under ``folder`` (hidden ones included), by relative path."""
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return out


def cli_error(capsys, *args: str) -> str:
  """Runs ``train.py`` in this process; asserts exit status 2 and one ``error:`` line."""
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    train_cli.main(["train.py", *ARGS, "--malloc=system", *args])
  assert e.value.code == 2
  lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("trained") / "run"
  toy_run(workdir)
  return workdir


@pytest.fixture
def workdir(trained, tmp_path):
  return shutil.copytree(trained, tmp_path / "run")


def test_trained_workdir_layout(trained):
  assert ckpt_lib.checkpoint_steps(str(trained)) == [2, 4, 6]
  assert (trained / ".lock").read_bytes() == b""  # released: an empty lock file
  assert lock_holder(str(trained)) is None


# A resumed run of the workdir that holds it and blocks on its first batch (the test
# creates the gate file first), so it is surely mid-run when the test acts.
_HOLDER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from test_workdir_reliability import toy_run, DATA

    class Gated:
      shape = DATA.images.shape
      def __getitem__(self, idx):
        print("reading", flush=True)
        while os.path.exists({gate!r}):
          time.sleep(0.2)
        return DATA.images[idx]

    class Data:
      images = Gated()

    toy_run({workdir!r}, "--config.steps=1000", dataset=Data())
""")


def test_second_train_py_refused_while_a_run_holds_the_workdir_then_kill9(workdir, tmp_path,
                                                                         caplog):
  gate = tmp_path / "gate"
  gate.write_text("")
  holder = subprocess.Popen(
      [sys.executable, "-c", _HOLDER.format(tests=os.path.dirname(__file__), gate=str(gate),
                                           workdir=str(workdir))],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    seen = []
    for line in holder.stdout:  # ends at EOF if the holder dies
      seen.append(line)
      if line.strip() == "reading":
        break
    assert seen and seen[-1].strip() == "reading", "".join(seen)
    assert lock_holder(str(workdir))["pid"] == holder.pid
    before = hashes(workdir)
    second = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), *ARGS, "--config.optim.lr=0.5",
         f"--workdir={workdir}"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 2, second.stderr
    lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith(f"error: training workdir {workdir} is in use by pid "
                               f"{holder.pid} on host "), lines
    assert hashes(workdir) == before  # the refused run wrote nothing
    holder.send_signal(signal.SIGKILL)  # a real kill -9 mid-run: the kernel drops the flock
    holder.wait(timeout=60)
  finally:
    if holder.poll() is None:
      holder.kill()
      holder.wait()
  assert holder.returncode == -signal.SIGKILL
  gate.unlink()
  with caplog.at_level(logging.WARNING, logger="jaxlatent.workdir_lock"):
    state = toy_run(workdir, "--config.steps=8")  # takes the stale lock over and resumes
  assert f"pid {holder.pid}" in caplog.text and int(state.step) == 8
  assert lock_holder(str(workdir)) is None
  assert ckpt_lib.checkpoint_steps(str(workdir)) == [2, 4, 6, 8]


def test_diverged_state_is_never_saved_and_the_workdir_recovers(workdir):
  # Step 9's loss is NaN: the state after step 8 (a checkpoint step) produced it.
  with pytest.raises(TrainingError) as e:
    toy_run(workdir, "--config.steps=12", trainer=toy_trainer(SIZE, nan_at_step=9))
  msg = str(e.value)
  assert "non-finite loss=nan at step 9" in msg
  assert f"last good checkpoint is step 6 ({workdir}/checkpoints/6)" in msg
  assert "nothing after it was saved" in msg and "--config.optim.lr=1e-05" in msg
  assert ckpt_lib.checkpoint_steps(str(workdir)) == [2, 4, 6]
  # Resuming as advised (a lower lr is an allowed change) goes past the bad step.
  state = toy_run(workdir, "--config.steps=12", "--config.optim.lr=1e-05")
  assert int(state.step) == 12
  assert ckpt_lib.checkpoint_steps(str(workdir)) == [2, 4, 6, 8, 10, 12]
  steps = [r["step"] for r in metrics_lib.read_metrics(str(workdir / "metrics.jsonl"))]
  assert steps == [2, 4, 6, 8, 10, 12]
  assert sorted(os.listdir(workdir / "samples")) == [f"step_{s:06d}.png" for s in steps]


def test_diverged_final_state_is_not_saved(tmp_path):
  # The last update (step 6) diverged: a step from it (not kept) shows the NaN.
  with pytest.raises(TrainingError, match=r"in a step from the final state of step 6; "
                     r"training stopped: the last good checkpoint is step 4"):
    toy_run(tmp_path / "run", trainer=toy_trainer(SIZE, nan_at_step=7))
  assert ckpt_lib.checkpoint_steps(str(tmp_path / "run")) == [2, 4]


def test_no_checkpoint_at_all_suggests_restart(tmp_path):
  with pytest.raises(TrainingError, match="no checkpoint was saved; start over with --restart"):
    toy_run(tmp_path / "fresh", trainer=toy_trainer(SIZE, nan_at_step=3))
  assert ckpt_lib.checkpoint_steps(str(tmp_path / "fresh")) == []


def test_deleted_checkpoints_are_refused_then_restart_starts_over(workdir, capsys):
  shutil.rmtree(workdir / "checkpoints")
  before = hashes(workdir)
  line = cli_error(capsys, f"--workdir={workdir}", "--config.steps=10")
  assert f"{workdir} holds metrics/samples up to step 6 but no checkpoint" in line
  assert "--restart" in line
  assert hashes(workdir) == before
  state = toy_run(workdir, "--config.steps=4", restart=True)
  assert int(state.step) == 4
  steps = [r["step"] for r in metrics_lib.read_metrics(str(workdir / "metrics.jsonl"))]
  assert steps == [2, 4]  # the earlier run's records and samples are gone, not mixed in
  assert sorted(os.listdir(workdir / "samples")) == ["step_000002.png", "step_000004.png"]


def test_config_of_another_run_is_refused_before_writing(workdir, capsys):
  before = hashes(workdir)
  line = cli_error(capsys, f"--workdir={workdir}", "--config.data.source=phantom_brain",
                   "--config.steps=20")
  assert "data.source: 'phantom_thorax' vs 'phantom_brain'" in line
  assert "--config_mismatch=allow" in line and "--restart" in line
  line = cli_error(capsys, f"--workdir={workdir}", "--config.seed=3")
  assert "seed: 0 vs 3" in line
  assert hashes(workdir) == before and not (workdir / "cache").exists()
  assert "phantom_thorax" in (workdir / "config.json").read_text()
  # --config_mismatch=allow accepts it: the checkpoints go on with the new config.
  state = toy_run(workdir, "--config.seed=3", "--config.steps=8", config_mismatch="allow")
  assert int(state.step) == 8


def test_finished_run_with_nothing_to_do_writes_nothing(workdir, capsys):
  before = hashes(workdir)
  # The lock file is written while the run holds it (and emptied again, as before).
  mtimes = {p: os.stat(workdir / p).st_mtime_ns for p in before if p != ".lock"}
  state = toy_run(workdir, "--config.steps=6")
  assert int(state.step) == 6 and "nothing to do" in capsys.readouterr().out
  assert hashes(workdir) == before
  assert {p: os.stat(workdir / p).st_mtime_ns for p in mtimes} == mtimes


def test_refused_data_leaves_the_cache_byte_identical(tmp_path, capsys):
  from jaxlatent.data import load_dataset  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  load_dataset(make_config().data, SIZE, str(workdir / "cache"))
  before = hashes(workdir)
  # Other phantoms (a new cache is built), too few for the batch: refused after the
  # build, before the new cache replaced the old one.
  line = cli_error(capsys, f"--workdir={workdir}", "--config.data.seed=5",
                   "--config.batch_size=128")
  assert "only 64 training images" in line and "batch_size=128" in line
  assert (workdir / ".lock").read_bytes() == b""  # all it wrote: the released lock
  os.remove(workdir / ".lock")
  assert hashes(workdir) == before


def test_failed_background_save_stops_training_at_once(workdir, monkeypatch, capfd):
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top
  ckpt_lib.quiet_orbax_logs()  # what train.py does: the error line replaces orbax's reports
  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def disk_full(self):
    if self._final_path.name == "8":  # pylint: disable=protected-access
      raise OSError(errno.ENOSPC, "No space left on device")
    return await finalize(self)

  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", disk_full)
  with pytest.raises(atomic_io.OutputError) as e:
    toy_run(workdir, "--config.steps=400")
  assert str(e.value).startswith(
      f"no space left on device while saving checkpoint {workdir}/checkpoints/8: training "
      "stopped (the last checkpoint is step 6")
  names = os.listdir(workdir / "checkpoints")
  assert sorted(names, key=int) == ["2", "4", "6"], names  # no orbax temporary folder left
  # Stopped within a few steps of the failure, not at the end of the run.
  steps = [r["step"] for r in metrics_lib.read_metrics(str(workdir / "metrics.jsonl"))]
  assert max(steps) <= 14, steps
  out = capfd.readouterr()
  assert "Traceback" not in out.out + out.err, out.err[-2000:]


def _mount_tmpfs(path, size: str) -> bool:
  path.mkdir()
  if not shutil.which("mount") or os.geteuid() != 0:
    return False
  return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                        capture_output=True).returncode == 0


def test_real_full_disk_gives_one_error_and_keeps_the_checkpoints(workdir, tmp_path):
  disk = tmp_path / "disk"
  if not _mount_tmpfs(disk, "600k"):
    pytest.skip("needs root and tmpfs to make a small file system (the simulated full "
                "disk above runs everywhere)")
  try:
    run = shutil.copytree(workdir, disk / "run")
    with pytest.raises(atomic_io.OutputError, match="^no space left on device while "):
      toy_run(run, "--config.steps=100000", "--config.ckpt_every=1",
              "--config.keep_checkpoints=100000", "--config.log_every=1000",
              "--config.sample_every=0")
    assert not [n for n in os.listdir(run / "checkpoints") if not n.isdigit()]
    last = ckpt_lib.checkpoint_steps(str(run))[-1]
    assert ckpt_lib.load_state_tree(str(run), last)[0] == last  # every kept one reads
    # The same file system read-only: one line before anything else happens.
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    with pytest.raises(atomic_io.OutputError, match="read-only file system"):
      toy_run(run, "--config.steps=200000")
    with pytest.raises(atomic_io.OutputError, match="read-only file system"):
      toy_run(disk / "new")
  finally:
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_corrupt_checkpoint_is_one_line_without_tensorstore_noise(workdir, capfd):
  ckpt_lib.quiet_orbax_logs()
  biggest = max((os.path.join(d, f) for d, _, fs in os.walk(workdir / "checkpoints" / "6")
                 for f in fs), key=os.path.getsize)
  data = bytearray(open(biggest, "rb").read())
  data[len(data) // 2:] = bytes(len(data) - len(data) // 2)  # same size, zeroed tail
  open(biggest, "wb").write(bytes(data))
  before = hashes(workdir)
  capfd.readouterr()
  with pytest.raises(CheckpointError) as e:
    toy_run(workdir, "--config.steps=8")
  msg = str(e.value)
  assert msg.startswith(f"checkpoint {workdir}/checkpoints/6 cannot be restored (")
  assert "\n" not in msg and "TensorStore(" not in msg and len(msg) < 700
  out = capfd.readouterr()
  assert "Traceback" not in out.out + out.err and "TensorStore" not in out.out + out.err
  assert hashes(workdir) == before


def test_corrupt_same_size_cache_is_rebuilt_not_trained_on(tmp_path, caplog):
  workdir = tmp_path / "run"
  toy_run(workdir, "--config.steps=2", dataset=None)  # renders the phantoms into its cache
  images = workdir / "cache" / "images.npy"
  good = images.read_bytes()
  bad = bytearray(good)
  bad[-4096:] = np.full(1024, np.nan, np.float32).tobytes()  # same size, NaN pixels
  images.write_bytes(bytes(bad))
  with caplog.at_level(logging.WARNING):
    state = toy_run(workdir, "--config.steps=4", dataset=None)
  assert int(state.step) == 4
  assert "checksum mismatch in images.npy" in caplog.text
  assert images.read_bytes() == good


def test_config_checks_fail_before_the_workdir_exists(tmp_path, capsys):
  workdir = tmp_path / "new"
  line = cli_error(capsys, f"--workdir={workdir}", "--config.optim.b2=1.0", "--restart")
  assert "optim.b2=1.0 must be in [0, 1)" in line
  line = cli_error(capsys, f"--workdir={workdir}", "--config.fid_every=2",
                   "--config.fid_num_samples=60")
  assert "fid_num_samples=60" in line and "leave 4 of data.num_images=64" in line
  line = cli_error(capsys, f"--workdir={workdir}", "--config_mismatch=maybe")
  assert "--config_mismatch='maybe'" in line
  assert not workdir.exists()
  # A repeated override replaces the earlier one (absl would concatenate tuples).
  config = make_config("--config.data.slice_range=(0.1,0.9)",
                       "--config.data.slice_range=(0.2,0.8)")
  assert tuple(config.data.slice_range) == (0.2, 0.8)


def test_unwritable_workdir_is_one_line(tmp_path, capsys):
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  line = cli_error(capsys, f"--workdir={a_file}")
  assert line == f"error: --workdir {a_file} is a regular file, not a folder"
  line = cli_error(capsys, f"--workdir={a_file}/run")
  assert f"cannot be created: {a_file} is a regular file" in line
  assert a_file.read_text() == "x"


def test_metrics_line_on_a_full_disk_leaves_whole_records(tmp_path, monkeypatch):
  path = tmp_path / "metrics.jsonl"
  writer = metrics_lib.MetricWriter(str(path))
  writer.write({"step": 1, "loss": 0.5})
  before = path.read_bytes()
  real_write = os.write

  def half_then_full(fd, data):
    real_write(fd, data[:7])
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(os, "write", half_then_full)
  with pytest.raises(atomic_io.OutputError, match=f"no space left on device while writing {path}"):
    writer.write({"step": 2, "loss": 0.25})
  monkeypatch.undo()
  assert path.read_bytes() == before
