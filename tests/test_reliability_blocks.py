"""Workdir lock, atomic writes, phantoms --out/--overwrite and the checksummed cache,
each as the failing scenario: a second process, a real ``kill -9``, a full disk."""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from jaxlatent import atomic_io, data
from jaxlatent.errors import ConfigError, DataError, exit_on_user_error
from jaxlatent.workdir_lock import WorkdirBusyError, hold_workdir_lock, lock_holder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
  return {**os.environ, "JAX_PLATFORMS": "cpu",
          "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _hashes(folder) -> dict[str, str]:
  """sha256 of every file under ``folder`` (hidden ones included), by relative path."""
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      p = os.path.join(root, name)
      with open(p, "rb") as f:
        out[os.path.relpath(p, folder)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _wait_for(predicate, timeout=120.0, what=""):
  end = time.monotonic() + timeout
  while time.monotonic() < end:
    if predicate():
      return
    time.sleep(0.05)
  raise AssertionError(f"timed out waiting for {what}")


# --- workdir lock ---------------------------------------------------------------------

_HOLDER = """
import sys, time
from jaxlatent.workdir_lock import hold_workdir_lock
with hold_workdir_lock(sys.argv[1], "train.py workdir"):
  print("locked", flush=True)
  time.sleep(600)
"""


def test_lock_second_process_refused_and_kill9_taken_over(tmp_path, caplog):
  wd = tmp_path / "wd"
  wd.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(wd)], env=_env(),
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(WorkdirBusyError) as e:
      with hold_workdir_lock(str(wd), "train.py workdir"):
        pass
    msg = str(e.value)
    assert "\n" not in msg and f"pid {holder.pid}" in msg
    assert f"host {socket.gethostname()}" in msg and msg.startswith("train.py workdir")
    assert lock_holder(str(wd))["pid"] == holder.pid

    @exit_on_user_error
    def cli():
      with hold_workdir_lock(str(wd), "analyze.py --out"):
        return 0

    with pytest.raises(SystemExit) as ex:
      cli()
    assert ex.value.code == 2
  finally:
    holder.send_signal(signal.SIGKILL)  # a real kill -9: the kernel drops the flock.
    holder.wait(timeout=30)
  assert holder.returncode == -signal.SIGKILL
  assert lock_holder(str(wd)) is None
  with caplog.at_level(logging.WARNING, logger="jaxlatent.workdir_lock"):
    with hold_workdir_lock(str(wd), "train.py workdir") as info:
      assert info["pid"] == os.getpid()
      assert json.loads((wd / ".lock").read_text())["pid"] == os.getpid()
      with pytest.raises(WorkdirBusyError, match=f"pid {os.getpid()}"):
        with hold_workdir_lock(str(wd), "train.py workdir"):
          pass
  assert "taking over" in caplog.text and f"pid {holder.pid}" in caplog.text
  assert (wd / ".lock").read_text() == "" and os.listdir(wd) == [".lock"]
  with pytest.raises(atomic_io.OutputError, match="not an existing folder"):
    with hold_workdir_lock(str(tmp_path / "missing"), "train.py workdir"):
      pass
  assert not (tmp_path / "missing").exists()


# --- atomic writes ----------------------------------------------------------------------

def _no_temp_files(folder) -> bool:
  return not [n for n in os.listdir(folder) if ".tmp-" in n]


def test_atomic_writes_under_simulated_enospc(tmp_path, monkeypatch):
  target = tmp_path / "results.json"
  atomic_io.atomic_write_json(target, {"version": 1})
  before = target.read_bytes()

  # The writer fails halfway (what a full disk does to np.savez or nib.save).
  with pytest.raises(atomic_io.OutputError) as e:
    with atomic_io.atomic_path(target) as tmp:
      with open(tmp, "wb") as f:
        f.write(b'{"version": 2, "trunc')
      raise OSError(errno.ENOSPC, "No space left on device")
  assert str(e.value) == f"no space left on device while writing {target}"
  assert target.read_bytes() == before and _no_temp_files(tmp_path)

  # The data reaches the disk only at fsync (delayed allocation, NFS).
  def full_disk(fd):
    raise OSError(errno.ENOSPC, "No space left on device")

  npz = tmp_path / "latents.npz"
  atomic_io.atomic_save_npz(npz, w=np.zeros(3, np.float32))
  npz_before = npz.read_bytes()
  monkeypatch.setattr(os, "fsync", full_disk)
  for write, path in ((lambda: atomic_io.atomic_write_json(target, {"version": 3}), target),
                      (lambda: atomic_io.atomic_save_npz(npz, w=np.ones(5)), npz)):
    with pytest.raises(atomic_io.OutputError, match="^no space left on device while writing"):
      write()
    assert _no_temp_files(tmp_path)
  monkeypatch.undo()
  assert target.read_bytes() == before and npz.read_bytes() == npz_before
  np.testing.assert_array_equal(np.load(npz)["w"], np.zeros(3))

  # Permission denied (simulated: tests run as root, whom chmod does not stop).
  def denied(*a, **k):
    raise PermissionError(errno.EACCES, "Permission denied")

  with pytest.raises(atomic_io.OutputError, match=r"^cannot write .*results\.json: "
                     "permission denied$"):
    with atomic_io.atomic_path(target) as tmp:
      denied(tmp)
  assert target.read_bytes() == before
  # Other errors are not turned into user errors.
  with pytest.raises(ValueError):
    with atomic_io.atomic_path(target) as tmp:
      open(tmp, "wb").close()
      raise ValueError("a bug")
  assert target.read_bytes() == before and _no_temp_files(tmp_path)


def test_output_folder_checks(tmp_path, monkeypatch):
  f = tmp_path / "file.txt"
  f.write_text("x")
  with pytest.raises(atomic_io.OutputError, match=r"^--out .*file\.txt is a regular file, "
                     "not a folder$"):
    atomic_io.check_writable_dir(f, "--out")
  with pytest.raises(atomic_io.OutputError, match=r"cannot be created: .*file\.txt is a "
                     "regular file"):
    atomic_io.check_writable_dir(f / "sub", "--out")
  with pytest.raises(atomic_io.OutputError, match=r"file\.txt is a regular file"):
    atomic_io.atomic_write_text(f / "a.txt", "y")
  new = tmp_path / "a" / "b"
  assert atomic_io.check_writable_dir(new, "--out") == str(new)
  assert not (tmp_path / "a").exists()  # checks only
  # An unwritable folder (simulated: root passes chmod 0o500).
  ro = tmp_path / "ro"
  ro.mkdir()
  real_access = os.access
  monkeypatch.setattr(os, "access",
                      lambda p, m: False if os.fspath(p) == str(ro) else real_access(p, m))
  with pytest.raises(atomic_io.OutputError, match=r"^cannot write --workdir .*ro: "
                     "permission denied$"):
    atomic_io.check_writable_dir(ro, "--workdir")
  with pytest.raises(atomic_io.OutputError, match=r"cannot be created in .*ro: permission"):
    atomic_io.check_writable_dir(ro / "x", "--workdir")
  monkeypatch.undo()
  # A folder swap never lands on a regular file.
  tmp = atomic_io.temp_dir_beside(tmp_path / "out")
  with pytest.raises(atomic_io.OutputError, match="regular file, not a folder"):
    atomic_io.atomic_replace_dir(tmp, f)
  assert f.read_text() == "x"


def test_atomic_replace_dir_swaps_whole_folders(tmp_path):
  final = tmp_path / "out"
  final.mkdir()
  (final / "old.txt").write_text("old")
  tmp = atomic_io.temp_dir_beside(final)
  (tmp_path / os.path.basename(tmp) / "new.txt").write_text("new")
  assert atomic_io.atomic_replace_dir(tmp, final) == str(final)
  assert os.listdir(final) == ["new.txt"] and os.listdir(tmp_path) == ["out"]


def test_real_full_and_read_only_file_system(tmp_path):
  """A real 64 KiB tmpfs (needs mount rights: root in a container that allows it)."""
  mnt = tmp_path / "small"
  mnt.mkdir()
  r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                     capture_output=True)
  if r.returncode != 0:
    pytest.skip("cannot mount a tmpfs here; ENOSPC is covered by the simulated test")
  try:
    path = mnt / "a.npy"
    atomic_io.atomic_save_npy(path, np.arange(10))
    before = path.read_bytes()
    with pytest.raises(atomic_io.OutputError, match=f"^no space left on device while "
                       f"writing {path}$"):
      atomic_io.atomic_save_npy(path, np.zeros(1 << 16))  # 512 KiB
    assert path.read_bytes() == before and os.listdir(mnt) == ["a.npy"]
    # A cache build that does not fit (128 KiB of images) fails at once, not with SIGBUS.
    cfg = _cfg(_ct_folder(tmp_path / "ct"))
    with pytest.raises(atomic_io.OutputError, match="^no space left on device while writing"):
      data.load_dataset(cfg, 64, str(mnt / "cache"))
    assert os.listdir(mnt / "cache") == []
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    with pytest.raises(atomic_io.OutputError, match="read-only file system"):
      atomic_io.atomic_write_text(path, "x")
    with pytest.raises(atomic_io.OutputError, match="read-only file system"):
      atomic_io.check_writable_dir(mnt, "--out")
    assert path.read_bytes() == before
  finally:
    subprocess.run(["umount", str(mnt)], check=True)


# --- phantoms --out / --overwrite --------------------------------------------------------

def _phantoms_main(argv, capsys):
  from jaxlatent.phantoms.__main__ import main
  with pytest.raises(SystemExit) as e:
    main(argv)
  return e.value.code, capsys.readouterr().err.strip().splitlines()


def test_phantoms_out_refuses_existing_and_overwrite_replaces(tmp_path, capsys, monkeypatch):
  from jaxlatent.phantoms.__main__ import main
  out = tmp_path / "brain"
  small = ["--size", "8", "--slices", "3", "--subjects", "2"]
  assert main(["--kind", "brain", "--out", str(out), *small]) == 0
  before = _hashes(out)
  assert sorted(before) == ["labels.csv", "sub-000.nii.gz", "sub-000_mask.nii.gz",
                            "sub-001.nii.gz", "sub-001_mask.nii.gz"]
  code, err = _phantoms_main(["--kind", "thorax", "--out", str(out), *small], capsys)
  assert code == 2 and len(err) == 1, err
  assert err[0] == (f"error: output folder {out} already exists and is not empty; choose a "
                    "new folder or pass --overwrite to replace it")
  assert _hashes(out) == before
  code, err = _phantoms_main(["--kind", "brain", "--out", str(out / "labels.csv")], capsys)
  assert code == 2 and len(err) == 1 and "labels.csv is a regular file, not a folder" in err[0]
  assert _hashes(out) == before
  # A full disk during --overwrite: one line, the old folder as it was, no temp sibling.
  def full_disk(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(nib, "save", full_disk)
  code, err = _phantoms_main(["--kind", "thorax", "--out", str(out), "--overwrite", *small],
                             capsys)
  assert code == 2 and len(err) == 1, err
  assert err[0] == f"error: no space left on device while writing {out}/sub-000.nii.gz"
  monkeypatch.undo()
  assert _hashes(out) == before and os.listdir(tmp_path) == ["brain"]
  # --overwrite: wholly the new population, nothing of the old one, no temp sibling.
  assert main(["--kind", "thorax", "--out", str(out), "--overwrite", "--size", "8",
               "--slices", "3", "--subjects", "1"]) == 0
  assert sorted(os.listdir(out)) == ["labels.csv", "sub-000.nii.gz", "sub-000_mask.nii.gz"]
  assert "large_breast" in (out / "labels.csv").read_text().splitlines()[0]
  assert nib.aff2axcodes(nib.load(str(out / "sub-000.nii.gz")).affine) == ("P", "L", "I")
  assert os.listdir(tmp_path) == ["brain"]
  # An empty existing folder is fine without --overwrite.
  (tmp_path / "empty").mkdir()
  assert main(["--kind", "brain", "--out", str(tmp_path / "empty"), *small]) == 0
  assert len(os.listdir(tmp_path / "empty")) == 5


def test_kill9_during_phantoms_overwrite_keeps_old_folder(tmp_path):
  out = tmp_path / "data"
  out.mkdir()
  for name in ("sub-000.nii.gz", "labels.csv"):
    (out / name).write_bytes(os.urandom(64))
  before = _hashes(out)
  proc = subprocess.Popen(
      [sys.executable, "-m", "jaxlatent.phantoms", "--kind", "brain", "--subjects", "400",
       "--size", "8", "--slices", "3", "--out", str(out), "--overwrite"],
      env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    def partly_written():
      return any(os.listdir(d) for d in glob.glob(str(tmp_path / ".data.tmp-*")))
    _wait_for(lambda: partly_written() or proc.poll() is not None, what="the first subject")
    assert proc.poll() is None, proc.stderr.read()
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
  assert proc.returncode == -signal.SIGKILL
  assert _hashes(out) == before


# --- the data cache ---------------------------------------------------------------------

def _ct_folder(folder, n=2, shape=(12, 12, 4)):
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(n):
    vol = np.full(shape, -1000.0, np.float32)
    vol[2:10, 3:9] = 40.0 + rng.normal(0, 5, size=(8, 6, shape[2])).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(folder / f"p{i}.nii.gz"))
  return folder


def _cfg(path, **kw):
  cfg = data.default_data_config()
  cfg.source, cfg.path, cfg.modality, cfg.skip_empty = "nifti", str(path), "ct", False
  for k, v in kw.items():
    cfg[k] = v
  return cfg


def test_corrupt_cache_is_detected(tmp_path, caplog):
  cfg = _cfg(_ct_folder(tmp_path / "ct"))
  cache = tmp_path / "cache"
  ref = np.array(data.load_dataset(cfg, 8, str(cache)).images)
  meta = json.loads((cache / "meta.json").read_text())
  assert set(meta["checksums"]) == {"images.npy", "masks.npy"}
  img = cache / "images.npy"
  raw = bytearray(img.read_bytes())
  raw[-7] ^= 0xFF  # same size, flipped bits: what a bad disk or copy leaves.
  img.write_bytes(bytes(raw))
  with pytest.raises(DataError) as e:
    data.open_cache(str(cache))
  assert str(e.value) == (f"cache {cache} is corrupt (checksum mismatch in images.npy): "
                          "delete it or rebuild it")
  # A build folder left by a killed process of this host is cleared by the next build.
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True).stdout.strip()
  left = cache / f".build-{socket.gethostname()}-{dead}-0123abcd"
  left.mkdir()
  (left / "images.npy").write_bytes(b"partial")
  with caplog.at_level(logging.INFO, logger="jaxlatent.data"):
    ds = data.load_dataset(cfg, 8, str(cache))
  assert "corrupt (checksum mismatch in images.npy)" in caplog.text
  np.testing.assert_array_equal(ds.images, ref)
  assert sorted(os.listdir(cache)) == ["images.npy", "masks.npy", "meta.json"]
  # A cache from before checksums is rebuilt once, then re-used.
  meta = json.loads((cache / "meta.json").read_text())
  del meta["checksums"]
  (cache / "meta.json").write_text(json.dumps(meta))
  caplog.clear()
  with caplog.at_level(logging.INFO, logger="jaxlatent.data"):
    data.load_dataset(cfg, 8, str(cache))
    assert "no checksums" in caplog.text and "building" in caplog.text
    caplog.clear()
    data.load_dataset(cfg, 8, str(cache))
    assert "re-using" in caplog.text


def test_failing_rebuild_leaves_old_cache_byte_identical(tmp_path):
  ct = _ct_folder(tmp_path / "ct")
  cache = tmp_path / "cache"
  data.load_dataset(_cfg(ct), 8, str(cache))
  before = _hashes(cache)

  def too_small(ds):  # the training driver's check, e.g. too few images for the batch
    raise DataError(f"only {len(ds)} training images for batch_size=64")

  # New settings build a new cache, which the caller's check refuses.
  with pytest.raises(DataError, match="only 8 training images"):
    data.load_dataset(_cfg(ct, ct_window=(-200.0, 200.0)), 8, str(cache), check=too_small)
  assert _hashes(cache) == before
  # A label column the new data lacks.
  with pytest.raises((ConfigError, DataError), match="group"):
    data.load_dataset(_cfg(ct, ct_window=(-100.0, 100.0), label_column="group",
                           labels_csv=_labels(tmp_path)), 8, str(cache))
  assert _hashes(cache) == before
  # A volume that fails only once its voxels are read, mid-build.
  bad = np.full((12, 12, 4), 40.0, np.float32)
  bad[1, 1, 1] = np.nan
  nib.save(nib.Nifti1Image(bad, np.eye(4)), str(ct / "p9.nii.gz"))
  with pytest.raises(DataError, match=r"p9\.nii\.gz"):
    data.load_dataset(_cfg(ct), 8, str(cache))
  assert _hashes(cache) == before
  # The check also guards a re-used cache, which it leaves as it is.
  os.remove(ct / "p9.nii.gz")
  with pytest.raises(DataError, match="only 8 training images"):
    data.load_dataset(_cfg(ct), 8, str(cache), check=too_small)
  assert _hashes(cache) == before
  assert len(data.load_dataset(_cfg(ct), 8, str(cache), check=lambda ds: None)) == 8


def _labels(tmp_path) -> str:
  p = tmp_path / "labels.csv"
  p.write_text("subject_id,age\np0,50\np1,60\n")
  return str(p)
