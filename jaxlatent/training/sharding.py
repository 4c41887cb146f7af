"""Data parallelism with ``jax.sharding``, set up once at the start of a run.

One 1-D mesh named ``'data'`` spans every device of every host.  Batches are
sharded along their leading axis (``P('data')``); the train state is replicated
(``P()``).  Each process reads only the rows of the global batch that live on its
own devices and :func:`global_batch` assembles the global ``jax.Array``.  The rest of
the code never mentions devices.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from jaxlatent.errors import ConfigError, TrainingError

DISTRIBUTED_MODES = ("auto", "off", "on")


def distributed_requested(mode: str, environ: Mapping[str, str] | None = None) -> bool:
  """Whether to call ``jax.distributed.initialize()`` for ``config.distributed``.

  'on': always; 'off': never; 'auto': when the environment describes more than one
  process: a SLURM job step with SLURM_NTASKS > 1, an explicit coordinator
  (JAX_COORDINATOR_ADDRESS or COORDINATOR_ADDRESS), or a multi-worker TPU slice
  (TPU_WORKER_HOSTNAMES / TPU_PROCESS_ADDRESSES listing several workers, or
  MEGASCALE_COORDINATOR_ADDRESS).
  """
  if mode not in DISTRIBUTED_MODES:
    raise ConfigError(f"distributed={mode!r}: expected one of {DISTRIBUTED_MODES}")
  if mode != "auto":
    return mode == "on"
  env = os.environ if environ is None else environ
  slurm_vars = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID")
  try:
    slurm_tasks = int(env.get("SLURM_NTASKS", "1"))
  except ValueError:
    slurm_tasks = 1
  if slurm_tasks > 1 and all(v in env for v in slurm_vars):
    return True
  if env.get("JAX_COORDINATOR_ADDRESS") or env.get("COORDINATOR_ADDRESS"):
    return True
  for var in ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"):
    if len([h for h in env.get(var, "").split(",") if h.strip()]) > 1:
      return True
  return bool(env.get("MEGASCALE_COORDINATOR_ADDRESS"))


def maybe_initialize_distributed(mode: str) -> bool:
  """Initializes the multi-process runtime when :func:`distributed_requested`; idempotent.

  Must run before anything touches a device.  The coordinator and process ids come
  from JAX's own cluster detection (SLURM, Cloud TPU, Open MPI, Kubernetes) or from
  ``(JAX_)COORDINATOR_ADDRESS``, ``(JAX_)NUM_PROCESSES`` and ``(JAX_)PROCESS_ID``.
  Returns whether the runtime is (now) initialized.
  """
  if jax.distributed.is_initialized():
    return True
  if not distributed_requested(mode):
    return False
  env = os.environ

  def pick(*names):
    return next((env[n] for n in names if env.get(n)), None)

  kwargs: dict[str, Any] = {}
  coordinator = pick("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")
  if coordinator:
    kwargs["coordinator_address"] = coordinator
    for key, names in (("num_processes", ("JAX_NUM_PROCESSES", "NUM_PROCESSES")),
                       ("process_id", ("JAX_PROCESS_ID", "PROCESS_ID"))):
      value = pick(*names)
      if value is not None:
        kwargs[key] = int(value)
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, RuntimeError) as e:
    raise ConfigError(f"distributed={mode!r}: jax.distributed.initialize() failed: {e}. "
                      "Set --config.distributed=off for a single process.") from None
  return True


def raise_with_the_chief(error: Exception | None, what: str) -> None:
  """Stops every process when the chief (process 0) failed ``what``.

  A step that only the chief takes (e.g. the workdir's lock) must not leave the
  other processes waiting in the next collective: all of them learn its outcome.
  The chief raises its own ``error``; the others raise a TrainingError naming
  ``what``.  With one process this just raises ``error`` (if any).
  """
  failed = error is not None
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    failed = bool(multihost_utils.broadcast_one_to_all(np.int32(failed)))
  if error is not None:
    raise error
  if failed:
    raise TrainingError(f"process {jax.process_index()}: process 0 failed to {what}; its "
                        "error message says why")


def make_mesh() -> Mesh:
  """A 1-D mesh ``('data',)`` over all devices of all processes."""
  return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of the train state: a full copy on every device."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch: the leading (example) axis split over ``'data'``."""
  return NamedSharding(mesh, P("data"))


def local_rows(sharding: NamedSharding, global_batch_size: int) -> tuple[int, int]:
  """The rows ``[start, stop)`` of the global batch this process must provide."""
  index_map = sharding.addressable_devices_indices_map((global_batch_size,))
  starts = [idx[0].start or 0 for idx in index_map.values()]
  stops = [global_batch_size if idx[0].stop is None else idx[0].stop
           for idx in index_map.values()]
  start, stop = min(starts), max(stops)
  if sum(b - a for a, b in set(zip(starts, stops))) != stop - start:
    raise RuntimeError("this process's devices do not hold a contiguous block of the batch")
  return start, stop


def global_batch(local: Mapping[str, np.ndarray], sharding: NamedSharding,
                 global_batch_size: int) -> dict[str, jax.Array]:
  """Host-local rows ``{name: [b_local, ...]}`` -> global arrays ``[B, ...]`` on the mesh."""
  return {
      name: jax.make_array_from_process_local_data(
          sharding, value, (global_batch_size, *value.shape[1:]))
      for name, value in local.items()
  }


def to_host(tree: Any) -> Any:
  """Fetches replicated (or fully addressable) arrays of ``tree`` as NumPy arrays.

  Works on every process of a multi-host run (reads the local copy of a replicated
  array instead of gathering).
  """

  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)

  return jax.tree.map(fetch, tree)
