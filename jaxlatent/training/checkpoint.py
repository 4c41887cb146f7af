"""Orbax checkpoints of the train state, and the run config saved next to them.

Layout of a workdir::

  workdir/config.json          the run config (architecture checked on resume)
  workdir/checkpoints/<step>/  orbax checkpoints, the last ``keep_checkpoints`` kept
  workdir/metrics.jsonl, losses.png, samples/step_XXXXXX.png

A checkpoint that cannot be read (truncated files, another model's shapes) raises
:class:`~jaxlatent.errors.CheckpointError` naming its path; nothing is ever
overwritten or deleted to "repair" it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

import jax
import numpy as np
import ml_collections
import orbax.checkpoint as ocp

from jaxlatent.errors import CheckpointError, ConfigError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
# Config fields that fix the shapes of the state: a workdir cannot resume with others.
ARCHITECTURE_KEYS = ("model", "image_size")


def _one_line(e: BaseException, limit: int = 300) -> str:
  msg = " ".join(f"{type(e).__name__}: {e}".split())
  return msg if len(msg) <= limit else msg[:limit] + " ..."


class Checkpointer:
  """Saves and restores the train state in ``directory`` (an orbax CheckpointManager).

  Saving is asynchronous (the device-to-host copy happens inside ``save``, so the
  state may be donated right after); the step's directory appears atomically once
  written.  The decision *when* to save stays with the caller (``save`` always saves).
  """

  def __init__(self, directory: str, keep: int, read_only: bool = False):
    self.directory = os.path.abspath(directory)
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
      if ".orbax-checkpoint-tmp" in name:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

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
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """``jax.eval_shape`` output -> ShapeDtypeStructs carrying ``sharding`` (restore target)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  """The JSON-able dict of ``config`` (tuples become lists)."""
  return json.loads(config.to_json_best_effort())


def save_run_config(workdir: str, config: ml_collections.ConfigDict) -> str:
  """Writes ``workdir/config.json`` (atomically); returns its path."""
  path = os.path.join(workdir, CONFIG_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
  os.replace(tmp, path)
  return path


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
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      key = f"{prefix}.{k}" if prefix else k
      if k not in a or k not in b:
        out.append(f"{key}: {a.get(k, '<absent>')!r} vs {b.get(k, '<absent>')!r}")
      else:
        out.extend(_diff(a[k], b[k], key))
    return out
  return [] if a == b else [f"{prefix}: {a!r} vs {b!r}"]


def check_same_architecture(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
  """Raises ConfigError if ``workdir``'s saved config has another model architecture.

  Returns:
    The other (allowed) differences, ``"key: saved vs new"``, e.g. a longer ``steps``.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return []
  saved = config_to_dict(load_run_config(workdir))
  current = config_to_dict(config)
  diffs = []
  for key in ARCHITECTURE_KEYS:
    diffs += _diff(saved.get(key), current.get(key), key)
  if diffs:
    raise ConfigError(
        f"workdir {workdir} holds checkpoints of a different architecture (saved in {path} "
        f"vs this config: {'; '.join(diffs)}); resume with the saved settings or use a new "
        "--workdir")
  others = {k: v for k, v in saved.items() if k not in ARCHITECTURE_KEYS}
  return _diff(others, {k: v for k, v in current.items() if k not in ARCHITECTURE_KEYS}, "")


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

  ``trainer.generator(state)`` then gives the :class:`~jaxlatent.Generator` for analysis.
  """
  from jaxlatent.training.trainers import make_trainer  # pylint: disable=g-import-not-at-top
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
