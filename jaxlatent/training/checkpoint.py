"""Orbax checkpoints of the train state, and the run config saved next to them.

Layout of a workdir::

  workdir/config.json          the run config (the run's identity is checked on resume)
  workdir/checkpoints/<step>/  orbax checkpoints, the last ``keep_checkpoints`` kept
  workdir/metrics.jsonl, losses.png, samples/step_XXXXXX.png

A checkpoint that cannot be read (truncated files, another model's shapes) raises
:class:`~jaxlatent.errors.CheckpointError` naming its path; nothing is ever
overwritten or deleted to "repair" it.  A background save that fails (e.g. a full
disk) is reported at the next :meth:`Checkpointer.check`, with its temporary
folder removed.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import sys
from typing import Any

import jax
import numpy as np
import ml_collections
import orbax.checkpoint as ocp

from jaxlatent import atomic_io
from jaxlatent.errors import CheckpointError, ConfigError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
# Marks an exported generator folder (jaxlatent.convert.export): analysable, not resumable.
EXPORT_FILE = "export.json"
# Config fields that define a run (what is learnt from which images): a workdir resumes
# only with the same values.  The schedule (steps, log/ckpt/sample/FD intervals), the
# optimiser's hyperparameters (a lower lr after a NaN) and data.cache_dir may change.
IDENTITY_KEYS = ("seed", "image_size", "batch_size", "fid_num_samples", "model", "data")
# Where the data lives is not what it is.
_NOT_IDENTITY = ("data.cache_dir",)
_TMP_MARK = ".orbax-checkpoint-tmp"


def _one_line(e: BaseException, limit: int = 300) -> str:
  """The root cause of ``e`` in one line: orbax wraps TensorStore's reason (e.g. "Data
  corruption detected") in a message that dumps the whole TensorStore spec."""
  chain = [e]
  while len(chain) < 10 and (chain[-1].__cause__ or chain[-1].__context__) is not None:
    chain.append(chain[-1].__cause__ or chain[-1].__context__)
  root = next((x for x in reversed(chain) if str(x).strip()), e)
  text = str(root).split("See full TensorStore details")[0].strip()
  msg = " ".join(f"{type(root).__name__}: {text}".split())
  return msg if len(msg) <= limit else msg[:limit] + " ..."


class Checkpointer:
  """Saves and restores the train state in ``directory`` (an orbax CheckpointManager).

  Saving is asynchronous (the device-to-host copy happens inside ``save``, so the
  state may be donated right after); the step's directory appears atomically once
  written.  The decision *when* to save stays with the caller (``save`` always saves).
  """

  def __init__(self, directory: str, keep: int, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self._saving = None  # the step of the latest save started (named if it fails)
    self._save_has_failed = False
    if read_only and not os.path.isdir(self.directory):
      raise CheckpointError(f"checkpoint folder {self.directory} does not exist")
    if not read_only and jax.process_index() == 0:
      self._remove_partial_saves()
    try:
      self._manager = ocp.CheckpointManager(
          self.directory,
          options=ocp.CheckpointManagerOptions(
              max_to_keep=keep, create=not read_only, read_only=read_only))
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"cannot open checkpoint folder {self.directory}: "
                            f"{_one_line(e)}") from None

  def _remove_partial_saves(self) -> None:
    """Deletes orbax's temporary folders of saves cut short (e.g. by ``kill -9``).

    They are never valid checkpoints (a save becomes ``<step>/`` only when complete).
    Done here rather than by orbax's own cleanup thread, which can outlive the process.
    """
    if not os.path.isdir(self.directory):
      return
    for name in os.listdir(self.directory):
      if _TMP_MARK in name:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    """Starts saving ``state`` as ``step`` (first reporting a failed earlier save)."""
    self.wait()  # orbax waits for the previous save anyway; its failure is named here
    self._saving = step
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_failed(e) from None

  def check(self) -> None:
    """Raises OutputError/CheckpointError now if a background save has failed.

    Does not wait for a save in progress: call it every step, so a full disk stops
    training at once.
    """
    try:
      self._manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_failed(e) from None

  def _save_failed(self, e: BaseException) -> Exception:
    """The one-line error of a failed save, after removing its temporary folders."""
    step = self._saving
    self._save_has_failed = True
    if jax.process_index() == 0:
      self._remove_partial_saves()
    where = self.path(step) if step is not None else self.directory
    done = [s for s in _checkpoint_steps(self.directory) if step is None or s < step]
    kept = (f"the last checkpoint is step {max(done)}" if done else "no checkpoint was saved")
    text = str(e)
    if (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or \
        "No space left on device" in text or "os_error_code='28'" in text:
      return atomic_io.OutputError(
          f"no space left on device while saving checkpoint {where}: training stopped "
          f"({kept}; free some space and re-run the same command to resume)")
    if isinstance(e, OSError):
      message = atomic_io.describe_os_error(e, where)
      if message is not None:
        return atomic_io.OutputError(f"{message}: training stopped ({kept})")
    return CheckpointError(f"saving checkpoint {where} failed ({_one_line(e)}); training "
                           f"stopped ({kept})")

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Restores ``step`` into the structure/shapes/shardings of ``abstract_state``."""
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(
          f"checkpoint {self.path(step)} cannot be restored ({_one_line(e)}); it is "
          "truncated/corrupt or was written by a different model or config. It was left "
          "untouched: move it away to resume from an older step, or use a new --workdir"
      ) from None

  def wait(self) -> None:
    """Waits for the background save; a failed one raises like :meth:`check`."""
    try:
      self._manager.wait_until_finished()
      self._manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_failed(e) from None

  def close(self) -> None:
    try:
      self._manager.close()
    finally:
      # The other writes of a failed save may still land after the error was raised
      # and recreate its temporary folder; once orbax's threads are joined they cannot.
      if self._save_has_failed and jax.process_index() == 0:
        self._remove_partial_saves()


class _DropOrbaxLogs(logging.Filter):
  """Drops the log records of orbax's own modules (its background-thread tracebacks)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return f"{os.sep}orbax{os.sep}" not in record.pathname


def quiet_orbax_logs() -> None:
  """Silences orbax's tracebacks and asyncio's "exception was never retrieved" reports.

  For command-line drivers: a failed save or restore reaches the user as one
  OutputError/CheckpointError line instead.  Idempotent.
  """
  absl_logger = logging.getLogger("absl")
  if not any(isinstance(f, _DropOrbaxLogs) for f in absl_logger.filters):
    absl_logger.addFilter(_DropOrbaxLogs())
  logging.getLogger("asyncio").setLevel(logging.CRITICAL)
  previous = sys.unraisablehook
  if getattr(previous, "_drops_closed_loop", False):
    return

  def hook(unraisable):
    # TensorStore completes the writes of a failed save from its own threads, into the
    # asyncio loop orbax has closed by then: nothing is lost but the report.
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"):
      previous(unraisable)

  hook._drops_closed_loop = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """``jax.eval_shape`` output -> ShapeDtypeStructs carrying ``sharding`` (restore target)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  """The JSON-able dict of ``config`` (tuples become lists)."""
  return json.loads(config.to_json_best_effort())


def _checkpoint_steps(directory: str) -> list[int]:
  """The steps of the complete checkpoints in ``directory`` (a listing; no orbax)."""
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  return sorted(int(d) for d in names
                if re.fullmatch(r"\d+", d) and os.path.isdir(os.path.join(directory, d)))


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps of the checkpoints in ``workdir/checkpoints`` (none: ``[]``)."""
  return _checkpoint_steps(os.path.join(workdir, CHECKPOINT_DIR))


def save_run_config(workdir: str, config: ml_collections.ConfigDict) -> str:
  """Writes ``workdir/config.json`` atomically; returns its path."""
  path = os.path.join(workdir, CONFIG_FILE)
  return atomic_io.atomic_write_text(
      path, config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """Reads ``workdir/config.json`` back into a ConfigDict (lists stay lists)."""
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except FileNotFoundError:
    raise CheckpointError(f"{path} does not exist: {workdir} is not a training workdir") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path} is not valid JSON: {_one_line(e)}") from None


def _diff(a: Any, b: Any, prefix: str) -> list[str]:
  """``"key: a vs b"`` for every leaf that differs; keys present on one side only are
  skipped (a field added to or dropped from the library since the run was saved)."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) & set(b)):
      out.extend(_diff(a[k], b[k], f"{prefix}.{k}" if prefix else k))
    return out
  return [] if a == b else [f"{prefix}: {a!r} vs {b!r}"]


def _identity(config: dict) -> dict:
  out = {k: config[k] for k in IDENTITY_KEYS if k in config}
  for dotted in _NOT_IDENTITY:
    head, _, tail = dotted.partition(".")
    if isinstance(out.get(head), dict):
      out[head] = {k: v for k, v in out[head].items() if k != tail}
  return out


def run_identity_diff(saved: dict, current: dict) -> tuple[list[str], list[str]]:
  """(differences that make another run, allowed changes) between two config dicts.

  Each entry reads ``"key: saved vs current"``.  Switching FD on or off changes
  which images are held out of training, so it counts as another run.
  """
  different = _diff(_identity(saved), _identity(current), "")
  fd_saved, fd_now = saved.get("fid_every", 0) > 0, current.get("fid_every", 0) > 0
  if fd_saved != fd_now:
    different.append(f"fid_every: {saved.get('fid_every')!r} vs {current.get('fid_every')!r} "
                     "(FD on/off changes the images held out of training)")
  rest = lambda d: {k: v for k, v in d.items() if k not in IDENTITY_KEYS}  # noqa: E731
  return different, _diff(rest(saved), rest(current), "")


def check_run_identity(workdir: str, config: ml_collections.ConfigDict,
                       allow: bool = False) -> list[str]:
  """Refuses a config that would make ``workdir`` hold two different runs.

  Compares ``config`` with ``workdir/config.json`` on :data:`IDENTITY_KEYS`.

  Args:
    workdir: a training workdir (no config.json: nothing to compare, ``[]``).
    config: this run's config.
    allow: accept identity differences too (``--config_mismatch=allow``): they are
      returned with the other changes instead of raising.

  Returns:
    The allowed differences, ``"key: saved vs new"`` (e.g. a longer ``steps``).

  Raises:
    ConfigError: naming the first differing keys, before anything is written.
  """
  check_not_export(workdir)
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return []
  different, changed = run_identity_diff(config_to_dict(load_run_config(workdir)),
                                         config_to_dict(config))
  if different and not allow:
    shown = "; ".join(different[:3]) + (f"; and {len(different) - 3} more"
                                       if len(different) > 3 else "")
    raise ConfigError(
        f"workdir {workdir} holds another run (its {CONFIG_FILE} vs this config: {shown}); "
        "resume with the saved settings, use a new --workdir, pass --config_mismatch=allow "
        "to continue its checkpoints with this config, or --restart to start over")
  return different + changed


def check_not_export(workdir: str) -> None:
  """Refuses to train in an exported generator folder (it lacks the discriminator and
  optimizer state, so it cannot be resumed)."""
  if os.path.isfile(os.path.join(workdir, EXPORT_FILE)):
    raise ConfigError(f"--workdir {workdir} is an exported generator ({EXPORT_FILE}), not a "
                      "train.py workdir: it cannot be resumed; train the source run or use a "
                      "new --workdir")


def check_same_architecture(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
  """:func:`check_run_identity` without ``allow`` (kept for existing callers)."""
  return check_run_identity(workdir, config)


def load_state_tree(workdir: str, step: int | None = None) -> tuple[int, Any]:
  """Reads a checkpoint as a raw nested dict of NumPy arrays (no model code needed).

  Args:
    workdir: a training workdir (or its ``checkpoints`` folder).
    step: which step; ``None``: the latest.

  Returns:
    (step, tree) where ``tree`` mirrors the train state's fields as dicts.
  """
  directory = workdir
  if os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
    directory = os.path.join(workdir, CHECKPOINT_DIR)
  steps = sorted(int(d) for d in os.listdir(directory) if re.fullmatch(r"\d+", d)) \
      if os.path.isdir(directory) else []
  if not steps:
    raise CheckpointError(f"no checkpoint in {directory}")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise CheckpointError(f"no checkpoint of step {step} in {directory} (have {steps})")
  path = os.path.join(directory, str(step), "default")
  try:
    checkpointer = ocp.StandardCheckpointer()
    meta = checkpointer.metadata(path)
    meta = getattr(meta, "item_metadata", meta)
    meta = getattr(meta, "tree", meta)
    # Restore onto this machine's first device whatever the topology that saved it.
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          meta, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
    tree = jax.tree.map(np.asarray, checkpointer.restore(path, target))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"checkpoint {path} cannot be read: {_one_line(e)}") from None
  return step, tree


def load_trained(workdir: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, Any, Any]:
  """Rebuilds a trained run: ``(config, trainer, state)`` from ``workdir``.

  ``workdir`` is a training workdir (checkpoint ``step``, None: the latest) or an
  exported generator folder (:func:`jaxlatent.convert.export.load_export`: the analysed
  networks in place, zeros for the rest of the state).  ``trainer.generator(state)`` then gives the
  :class:`~jaxlatent.Generator` for analysis.
  """
  # pylint: disable=g-import-not-at-top
  from jaxlatent.training.trainers import make_trainer
  if os.path.isfile(os.path.join(workdir, EXPORT_FILE)):
    from jaxlatent.convert.export import load_export
    return load_export(workdir, step)
  config = load_run_config(workdir)
  trainer = make_trainer(config)
  ckpt = Checkpointer(os.path.join(workdir, CHECKPOINT_DIR), keep=1, read_only=True)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {ckpt.directory}")
    abstract = jax.eval_shape(trainer.init, jax.random.PRNGKey(0))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state = ckpt.restore(step, abstract_like(abstract, device))
  finally:
    ckpt.close()
  return config, trainer, state
