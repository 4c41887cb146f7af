"""Deterministic, resumable batching with a per-host sharding hook.

The data order is a pure function of ``(seed, step)``: epoch ``e`` uses the
permutation ``np.random.default_rng([seed, e]).permutation(N)`` and step ``t`` is
batch ``t % steps_per_epoch`` of epoch ``t // steps_per_epoch``.  The incomplete
last batch of an epoch is dropped, so every step has a full batch and resuming
at any step reproduces exactly the order of an uninterrupted run.

Multi-host: each of ``process_count`` hosts takes its contiguous block of
``batch_size // process_count`` examples of the same global batch (host ``p``
gets rows ``[p * B_local, (p + 1) * B_local)``), the layout
``jax.make_array_from_process_local_data`` expects for a batch-sharded array.
"""

from __future__ import annotations

import numbers
from typing import Iterator

import numpy as np

from jaxlatent.data.dataset import SliceDataset
from jaxlatent.errors import ConfigError


def _check_int(name: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    raise ConfigError(f"{name}={value!r} must be an int >= {minimum}")
  return int(value)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch (the remainder is dropped); ConfigError if there are none."""
  n = _check_int("num_examples", num_examples, 0)
  b = _check_int("batch_size", batch_size, 1)
  if n < b:
    raise ConfigError(f"batch_size={b} is larger than the dataset ({n} examples)")
  return n // b


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The shuffled order of epoch ``epoch``: a permutation of ``range(num_examples)``."""
  seed = _check_int("seed", seed, 0)
  return np.random.default_rng([seed, int(epoch)]).permutation(num_examples)


def batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Global example indices int64 [batch_size] of training step ``step``."""
  step = _check_int("step", step, 0)
  spe = steps_per_epoch(num_examples, batch_size)
  epoch, i = divmod(step, spe)
  perm = epoch_permutation(num_examples, seed, epoch)
  return perm[i * batch_size:(i + 1) * batch_size].astype(np.int64)


def host_slice(batch_size: int, process_index: int = 0, process_count: int = 1) -> slice:
  """The rows of a global batch that host ``process_index`` loads."""
  b = _check_int("batch_size", batch_size, 1)
  pc = _check_int("process_count", process_count, 1)
  pi = _check_int("process_index", process_index, 0)
  if pi >= pc:
    raise ConfigError(f"process_index={pi} must be < process_count={pc}")
  if b % pc:
    raise ConfigError(f"batch_size={b} is not divisible by process_count={pc}")
  local = b // pc
  return slice(pi * local, (pi + 1) * local)


def _take(array: np.ndarray, idx: np.ndarray) -> np.ndarray:
  """``array[idx]`` reading a memmap in ascending order (fast), returned in ``idx`` order."""
  order = np.argsort(idx, kind="stable")
  out = np.empty((len(idx), *array.shape[1:]), array.dtype)
  out[order] = array[idx[order]]
  return out


def iterate_batches(dataset: SliceDataset, batch_size: int, seed: int, start_step: int = 0,
                    process_index: int = 0, process_count: int = 1,
                    label_column: str | None = None, num_steps: int | None = None,
                    with_index: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """Yields this host's part of the global batch of every step from ``start_step`` on.

  Args:
    dataset: the slices.
    batch_size: the GLOBAL batch size (all hosts together).
    seed: shuffle seed; with ``start_step`` it fixes the order completely.
    start_step: first training step (resume from a checkpoint at this step).
    process_index, process_count: this host and the number of hosts
      (``jax.process_index()``, ``jax.process_count()``).
    label_column: label column for ``'label'``; None = ``dataset.label_column``,
      '' = no label.
    num_steps: stop after this many batches; None = never stop.
    with_index: also yield ``'index'`` (int64 global dataset indices).

  Yields:
    ``{'image': float32 [B_local, S, S, 1], 'label': int32 [B_local]}`` (``'label'``
    only when a label column is chosen), B_local = batch_size // process_count.
  """
  rows = host_slice(batch_size, process_index, process_count)
  n = len(dataset)
  spe = steps_per_epoch(n, batch_size)
  step = _check_int("start_step", start_step, 0)
  column = dataset.label_column if label_column is None else label_column
  label_ids = dataset.label_ids(column)[0] if column else None
  stop = None if num_steps is None else step + _check_int("num_steps", num_steps, 0)
  perm_epoch, perm = None, None
  while stop is None or step < stop:
    epoch, i = divmod(step, spe)
    if epoch != perm_epoch:
      perm_epoch, perm = epoch, epoch_permutation(n, seed, epoch)
    idx = perm[i * batch_size:(i + 1) * batch_size][rows].astype(np.int64)
    batch = {"image": _take(dataset.images, idx).astype(np.float32, copy=False)}
    if label_ids is not None:
      batch["label"] = label_ids[idx]
    if with_index:
      batch["index"] = idx
    yield batch
    step += 1
