"""train.py end to end: each tiny config trains a few steps; user errors exit 2 in one line."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train  # noqa: E402
from jaxlatent.training import checkpoint as ckpt_lib  # noqa: E402
from jaxlatent.viz import read_png  # noqa: E402

SIZE, NUM_SAMPLES = 16, 16
TINY = ("dcgan_tiny", "vae_tiny", "stylegan_tiny")
LOSS_TERMS = {"dcgan_tiny": ("g_loss", "d_loss"), "vae_tiny": ("loss",),
              "stylegan_tiny": ("g_loss", "d_loss")}
BAD = {
    "image_size": (["--config.image_size=48"], "image_size=48 must be a power of 2"),
    "unknown_key": (["--config.sedd=1"], "unknown config key 'sedd'"),
    "nifti_path": (["--config.data.source=nifti", "--config.data.path=/no/such/folder"],
                   "data.path='/no/such/folder' does not exist"),
    "malloc": (["--malloc=lots"], "--malloc='lots': expected one of ('retain', 'system')"),
}
# The one user error that goes through a real process (and the furthest into train.py:
# the data check); the others fail while parsing flags, so they run here, in-process.
BAD_IN_A_PROCESS = "nifti_path"


def launch(config, workdir, *overrides):
  cmd = [sys.executable, os.path.join(ROOT, "train.py"),
         f"--config={os.path.join(ROOT, 'configs', config + '.py')}", f"--workdir={workdir}",
         *overrides]
  # The environment carries conftest's fast-compile XLA flags.
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def finish(proc):
  out, err = proc.communicate(timeout=900)
  return proc.returncode, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Runs all CLI commands once: the first tiny run builds the shared phantom cache."""
  base = tmp_path_factory.mktemp("cli")
  common = [f"--config.image_size={SIZE}", "--config.batch_size=8", "--config.steps=2",
            "--config.data.source=phantom_thorax", "--config.data.num_images=64",
            f"--config.data.cache_dir={base / 'cache'}", "--config.log_every=1",
            "--config.ckpt_every=1", "--config.sample_every=2",
            f"--config.num_samples={NUM_SAMPLES}"]
  fd = ["--config.fid_every=2", f"--config.fid_num_samples={NUM_SAMPLES}"]
  results = {}
  bad = {k: launch("dcgan_tiny", base / k, *BAD[k][0]) for k in (BAD_IN_A_PROCESS,)}
  first = launch("dcgan_tiny", base / "dcgan_tiny", *common, *fd)
  results.update({k: finish(p) + (base / k,) for k, p in bad.items()})
  results["dcgan_tiny"] = finish(first) + (base / "dcgan_tiny",)
  # dcgan_tiny (with FD) is the real process; the other two run train.main in this
  # process, which spares each one a process start and its imports.  They keep the
  # worker's allocator as it is (--malloc=system): the default is exercised above.
  # StyleGAN2 with both regulariser intervals at 1: its 2 steps share one step program
  # (R1 and path length every step) instead of compiling the regularised and the plain
  # phase; the phase schedule is tested in test_trainers.py.
  one_phase = {"stylegan_tiny": ["--config.model.r1_interval=1", "--config.model.pl_interval=1"]}
  for name in TINY[1:]:
    results[name] = run_main(name, base / name, *common, "--config.fid_every=0",
                             "--malloc=system", *one_phase.get(name, []))
  return results


@pytest.mark.parametrize("name", TINY)
def test_tiny_config_trains_and_writes_outputs(runs, name):
  code, out, err, workdir = runs[name]
  assert code == 0, f"stdout:\n{out}\nstderr:\n{err[-3000:]}"
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in records] == [1, 2]
  for term in LOSS_TERMS[name]:
    assert all(isinstance(r[term], float) for r in records), records
  assert all(r["images_per_sec"] > 0 and r["elapsed"] > 0 for r in records)
  assert ("fd_random_features" in records[-1]) == (name == "dcgan_tiny")
  assert sum(line.startswith("step ") for line in out.splitlines()) == 2  # a line per log
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2"]
  step, tree = ckpt_lib.load_state_tree(str(workdir))
  assert step == 2 and int(tree["step"]) == 2
  grid = read_png(workdir / "samples" / "step_000002.png")
  assert grid.shape == (4 * (SIZE + 2) + 2,) * 2  # 16 samples in a 4x4 grid
  assert grid.std() > 0  # not a blank image
  assert (workdir / "losses.png").stat().st_size > 1000
  saved = json.load(open(workdir / "config.json"))
  assert saved["steps"] == 2 and saved["image_size"] == SIZE


def run_main(config, workdir, *overrides):
  """train.py's ``main`` in this process: (exit code, stdout, stderr, workdir)."""
  argv = ["train.py", f"--config={os.path.join(ROOT, 'configs', config + '.py')}",
          f"--workdir={workdir}", *overrides]
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      code = train.main(argv)
    except SystemExit as e:
      code = e.code
  return code, out.getvalue(), err.getvalue(), workdir


@pytest.mark.parametrize("case", sorted(BAD))
def test_user_errors_exit_2_with_one_line(runs, case, tmp_path):
  if case == BAD_IN_A_PROCESS:
    code, out, err, workdir = runs[case]
  else:
    code, out, err, workdir = run_main("dcgan_tiny", tmp_path / case, *BAD[case][0])
  assert code == 2, err
  lines = [ln for ln in err.splitlines() if ln.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  assert BAD[case][1] in lines[0]
  assert not os.path.exists(workdir / "checkpoints")  # failed before any compute
