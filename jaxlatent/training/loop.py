"""The generic training loop: ``train_and_evaluate(config, workdir)``.

Read top to bottom, a run is:

  1. validate the config (milliseconds; ConfigError/DataError naming the key);
  2. start the multi-process runtime if asked (``config.distributed``), build the
     1-D ``'data'`` mesh over all devices;
  3. lock the workdir (the chief; a second run on it is refused) and check that
     this config is the workdir's run (:func:`checkpoint.check_run_identity`);
  4. load the dataset, hold out ``fid_num_samples`` images for the FD metric (a
     newly built cache replaces the old one only if these checks pass);
  5. create the state replicated on the mesh (``jax.jit(init, out_shardings=...)``),
     or restore the latest checkpoint into ``jax.eval_shape(init)``;
  6. loop: host batch -> global array -> jitted step (traced once, state donated) ->
     NaN/Inf guard -> metrics, sample grids, FD, checkpoints.

Nothing is written before steps 1-4 passed, and a run with nothing to do writes
nothing.  A checkpoint's state is saved only once the loss computed from it (the
next step's) is finite, so the last checkpoint is always one a run can resume from.

Everything a step depends on is a function of ``(config, step)``: the batch is
``batch_indices(..., step)`` and the key ``fold_in(key, step)``, so a run resumed
from a checkpoint ends with the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import re
import sys
import threading
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np

from jaxlatent import atomic_io
from jaxlatent.errors import (CheckpointError, ConfigError, DataError, JaxlatentError,
                              TrainingError)
from jaxlatent.training import checkpoint
from jaxlatent.training import metrics as metrics_lib
from jaxlatent.training import sharding
from jaxlatent.training import tensorboard
from jaxlatent.training.defaults import complete_train_config
from jaxlatent.training.validate import validate_config

# Stream ids for jax.random.fold_in on the run's base key.
_INIT, _TRAIN, _SAMPLES, _FD = 0, 1, 2, 3


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       trainer: Any = None, dataset: Any = None, restart: bool = False,
                       config_mismatch: str = "refuse") -> Any:
  """Trains ``config.model`` on ``config.data``, writing everything into ``workdir``.

  Resumes from the latest checkpoint in ``workdir/checkpoints`` when there is one.

  Args:
    config: the run config (``configs/*.py``; fields documented in configs/dcgan_ct.py).
    workdir: output folder (config.json, checkpoints/, metrics.jsonl, losses.png,
      samples/, and TensorBoard event files of the metrics, sample grids and FD),
      locked for the run (``workdir/.lock``).
    trainer: a ``ModelTrainer``; ``None`` builds ``make_trainer(config)``.  Pass your
      own to train a custom model with this loop.
    dataset: an object with ``images [N, S, S, 1]`` in [-1, 1] (e.g. a SliceDataset);
      ``None`` loads ``config.data``.
    restart: start over from step 0, deleting the workdir's checkpoints, metrics,
      samples and config.json (after every check passed; the data cache is kept).
    config_mismatch: 'refuse' (default): a config that differs from the workdir's
      config.json in what defines the run (data, model, image_size, seed, batch_size,
      FD hold-out) is refused; 'allow': continue the workdir's checkpoints with it.

  Returns:
    The final train state (replicated on the mesh).

  Raises:
    ConfigError, DataError: bad config or data, before anything is written.
    WorkdirBusyError: another run holds the workdir.
    OutputError: the workdir cannot be written (a file, permissions, disk full).
    CheckpointError: an unreadable checkpoint in ``workdir`` (left untouched), or
      outputs of an earlier run whose checkpoints are gone.
    TrainingError: a non-finite loss (the step, the term and the last good
      checkpoint are named; nothing after that checkpoint is saved).
  """
  config = complete_train_config(config)  # a config file lists only its own settings
  if config_mismatch not in ("refuse", "allow"):
    raise ConfigError(f"config_mismatch={config_mismatch!r}: expected 'refuse' or 'allow'")
  validate_config(config)  # config-only checks, before touching any device
  sharding.maybe_initialize_distributed(config.distributed)
  validate_config(config, device_count=jax.device_count(), process_count=jax.process_count())
  is_chief = jax.process_index() == 0
  workdir = atomic_io.check_writable_dir(workdir, "--workdir")
  with contextlib.ExitStack() as stack:
    lock_error = None
    if is_chief:  # one process writes the workdir's files, so one holds its lock
      from jaxlatent.workdir_lock import hold_workdir_lock  # pylint: disable=g-import-not-at-top
      try:
        os.makedirs(workdir, exist_ok=True)
        stack.enter_context(hold_workdir_lock(workdir, "training workdir"))
      except OSError as e:  # from makedirs; the lock raises OutputError for its own
        lock_error = atomic_io.output_error(e, workdir)
      except JaxlatentError as e:
        lock_error = e
    # The other processes would otherwise wait forever in the first collective.
    sharding.raise_with_the_chief(lock_error, f"lock the training workdir {workdir}")
    if trainer is None:
      from jaxlatent.training.trainers import make_trainer  # pylint: disable=g-import-not-at-top
      trainer = make_trainer(config)
    latest = _resume_step(config, workdir, restart, config_mismatch, is_chief)
    if latest is not None and latest >= int(config.steps):
      return _finished_state(config, workdir, trainer, latest)
    check = _data_check(config)
    if dataset is None:
      from jaxlatent.data import load_dataset  # pylint: disable=g-import-not-at-top
      cache_dir = config.data.cache_dir or os.path.join(workdir, "cache")
      dataset = load_dataset(config.data, config.image_size, cache_dir, check=check)
    else:
      check(dataset)
    if restart and is_chief:
      _clear_outputs(workdir)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, checkpoint.CHECKPOINT_DIR),
                                   keep=config.keep_checkpoints)
    try:
      state = _train(config, workdir, trainer, dataset, ckpt, latest, is_chief)
      ckpt.wait()  # a failed final save is an error of this run
      return state
    except BaseException:
      with contextlib.suppress(Exception):
        ckpt.wait()  # an in-flight save of a good state completes; the first error wins
      raise
    finally:
      with contextlib.suppress(Exception):
        ckpt.close()


# Outputs of a run besides its checkpoints; `restart` deletes them with the checkpoints.
_RUN_OUTPUTS = ("metrics.jsonl", "losses.png", "samples", checkpoint.CONFIG_FILE,
                checkpoint.CHECKPOINT_DIR)
_SAMPLE_RE = re.compile(r"step_(\d+)\.png")


def _logged_steps(workdir: str) -> list[int]:
  """Steps of the metrics records and sample grids in ``workdir``."""
  steps = []
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    steps += [int(r["step"]) for r in metrics_lib.read_metrics(path)
              if isinstance(r.get("step"), int)]
  samples = os.path.join(workdir, "samples")
  if os.path.isdir(samples):
    steps += [int(m.group(1)) for m in map(_SAMPLE_RE.fullmatch, os.listdir(samples)) if m]
  return steps


def _resume_step(config, workdir: str, restart: bool, config_mismatch: str,
                 is_chief: bool) -> int | None:
  """The checkpoint step to resume from (None: step 0), after checking the workdir.

  Reads only.  Refuses (ConfigError) a config that is not the workdir's run, and
  (CheckpointError) a workdir whose outputs go past its first checkpoint step while
  its checkpoints are gone: starting from 0 would mix two runs in it.
  """
  if restart:
    return None
  changed = checkpoint.check_run_identity(workdir, config, allow=config_mismatch == "allow")
  steps = checkpoint.checkpoint_steps(workdir)
  if not steps:
    logged = _logged_steps(workdir)
    saved_every = config.ckpt_every
    if os.path.exists(os.path.join(workdir, checkpoint.CONFIG_FILE)):
      saved_every = checkpoint.load_run_config(workdir).get("ckpt_every", saved_every)
    if logged and max(logged) > saved_every:
      raise CheckpointError(
          f"{workdir} holds metrics/samples up to step {max(logged)} but no checkpoint in "
          f"{os.path.join(workdir, checkpoint.CHECKPOINT_DIR)}: training would restart "
          "from step 0 and mix two runs; restore the checkpoints, pass --restart to delete "
          "the earlier outputs and start over, or use a new --workdir")
    return None
  if changed and is_chief:
    print(f"resuming {workdir} from step {steps[-1]} with changed settings: "
          f"{'; '.join(changed)}", flush=True)
  return steps[-1]


def _finished_state(config, workdir: str, trainer, latest: int) -> Any:
  """The state of a finished run (``latest >= steps``), read without writing anything."""
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, checkpoint.CHECKPOINT_DIR),
                                 keep=config.keep_checkpoints, read_only=True)
  try:
    repl = sharding.replicated(sharding.make_mesh())
    init_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), _INIT)
    state, _ = _initial_state(trainer, ckpt, latest, init_key, repl)
  finally:
    ckpt.close()
  if jax.process_index() == 0:
    print(f"{workdir}: already trained to step {latest} >= steps={config.steps}; "
          "nothing to do", flush=True)
  return state


def _clear_outputs(workdir: str) -> None:
  """Deletes an earlier run's outputs (``restart``): checkpoints, metrics, samples, config."""
  import shutil  # pylint: disable=g-import-not-at-top
  for name in _RUN_OUTPUTS:
    path = os.path.join(workdir, name)
    try:
      if os.path.isdir(path):
        shutil.rmtree(path)
      elif os.path.lexists(path):
        os.remove(path)
    except OSError as e:
      raise atomic_io.output_error(e, path) from None


def _drop_samples_after(workdir: str, step: int) -> None:
  """Deletes sample grids of steps after ``step`` (the run resumes before them)."""
  folder = os.path.join(workdir, "samples")
  if not os.path.isdir(folder):
    return
  for name in os.listdir(folder):
    m = _SAMPLE_RE.fullmatch(name)
    if m and int(m.group(1)) > step:
      os.remove(os.path.join(folder, name))


def split_holdout(num_examples: int, num_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Fixed (train, held-out) index split; both sorted, held-out drawn with ``seed``."""
  if num_holdout == 0:
    return np.arange(num_examples), np.zeros((0,), np.int64)
  rng = np.random.default_rng([seed, 7919])  # a stream of its own, not the data order's
  held = np.sort(rng.choice(num_examples, size=num_holdout, replace=False))
  return np.setdiff1d(np.arange(num_examples), held), held


def _read_rows(images: np.ndarray, idx: np.ndarray) -> np.ndarray:
  """``images[idx]`` read in ascending order (fast on memmaps), returned in ``idx`` order."""
  order = np.argsort(idx, kind="stable")
  out = np.empty((len(idx), *images.shape[1:]), np.float32)
  out[order] = images[idx[order]]
  return out


def host_batches(dataset: Any, train_idx: np.ndarray, batch_size: int, seed: int,
                 start_step: int, rows: tuple[int, int],
                 labels: np.ndarray | None = None,
                 with_index: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """This process's rows of the global batch of every step from ``start_step`` on.

  The global batch of step ``t`` is ``train_idx[batch_indices(len(train_idx), B, seed,
  t)]``, a pure function of the step (resume-exact).  ``with_index`` adds ``'index'``:
  int32 dataset indices of the rows (for trainers with ``needs_index``, e.g. the
  semi-supervised DAAE's per-example labelled subset).
  """
  from jaxlatent.data import batch_indices  # pylint: disable=g-import-not-at-top
  step = start_step
  while True:
    idx = train_idx[batch_indices(len(train_idx), batch_size, seed, step)][rows[0]:rows[1]]
    batch = {"image": _read_rows(dataset.images, idx)}  # [B_local, S, S, 1]
    if labels is not None:
      batch["label"] = labels[idx]
    if with_index:
      batch["index"] = idx.astype(np.int32)  # [B_local], sharded like the images
    yield batch
    step += 1


def _prefetch(iterator: Iterator[Any], size: int = 2) -> Iterator[Any]:
  """Runs ``iterator`` in a background thread, ``size`` items ahead."""
  q: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()

  def worker():
    try:
      for item in iterator:
        while not stop.is_set():
          try:
            q.put(("item", item), timeout=0.1)
            break
          except queue.Full:
            continue
        if stop.is_set():
          return
    except BaseException as e:  # pylint: disable=broad-except
      q.put(("error", e))

  thread = threading.Thread(target=worker, daemon=True)
  thread.start()
  try:
    while True:
      kind, item = q.get()
      if kind == "error":
        raise item
      yield item
  finally:
    stop.set()


def _progress(total: int, initial: int, enabled: bool):
  """A tqdm bar with ETA on a terminal; ``None`` otherwise (log lines still print)."""
  if not enabled or not sys.stderr.isatty():
    return None
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def _format_duration(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f"{h}:{m:02d}:{s:02d}"


def _split_data(config, dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """(train indices, FD hold-out indices, labels or None) after checking the dataset."""
  num_images = int(dataset.images.shape[0])
  if dataset.images.shape[1:] != (config.image_size, config.image_size, 1):
    raise DataError(f"dataset images have shape {tuple(dataset.images.shape[1:])}, "
                    f"expected ({config.image_size}, {config.image_size}, 1) from image_size")
  fd_on = config.fid_every > 0
  if fd_on and num_images - config.fid_num_samples < config.batch_size:
    raise DataError(f"fid_num_samples={config.fid_num_samples} images held out for FD leave "
                    f"{max(num_images - config.fid_num_samples, 0)} of the data's "
                    f"{num_images} for training, fewer than batch_size={config.batch_size}: "
                    "lower fid_num_samples or set fid_every=0")
  train_idx, held_idx = split_holdout(num_images, config.fid_num_samples if fd_on else 0,
                                      config.seed)
  if len(train_idx) < config.batch_size:
    raise DataError(f"only {len(train_idx)} training images (of {num_images}, "
                    f"{len(held_idx)} held out for FD) for batch_size={config.batch_size}")
  labels = None
  if config.data.get("label_column", "") and hasattr(dataset, "label_ids"):
    labels = dataset.label_ids(config.data.label_column)[0]
  return train_idx, held_idx, labels


def _data_check(config) -> Callable[[Any], None]:
  """The loop's checks of a data set (shape, enough images), for ``load_dataset(check=)``."""

  def check(dataset) -> None:
    _split_data(config, dataset)

  return check


def _initial_state(trainer, ckpt, latest, init_key, replicated):
  """(state, first step): a fresh state, or the checkpoint of step ``latest``."""
  if latest is None:
    return jax.jit(trainer.init, out_shardings=replicated)(init_key), 0
  abstract = checkpoint.abstract_like(jax.eval_shape(trainer.init, init_key), replicated)
  state = ckpt.restore(latest, abstract)
  start = int(latest)
  if hasattr(state, "step") and int(sharding.to_host(state.step)) != start:
    raise CheckpointError(f"checkpoint {ckpt.path(latest)} holds a state of step "
                          f"{int(sharding.to_host(state.step))}, not {start}; it was not written "
                          "by this run's loop (left untouched)")
  return state, start


def _compile_step(trainer, train_key, replicated, data_sharding):
  """The jitted ``(state, batch, step, phase) -> (state, metrics)``: shardings fixed,
  the state's buffers donated, one program per (static) phase."""

  def step_fn(state, batch, step, phase):
    kw = {} if phase is None else {"phase": phase}
    return trainer.train_step(state, batch, jax.random.fold_in(train_key, step), **kw)

  return jax.jit(step_fn, in_shardings=(replicated, data_sharding, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=(0,),
                 static_argnums=(3,))


def _compile_render(trainer, replicated):
  """The jitted ``(state, key, n) -> [n, S, S, 1]`` samples of the trainer's generator."""

  def render(state, key, n):
    gen = trainer.generator(state)
    return gen(gen.sample_latents(key, n))

  return jax.jit(render, static_argnums=(2,), out_shardings=replicated)


def _fd_scorer(config, dataset, held_idx, render, fd_key, is_chief):
  """``state -> FD (float) on the chief, None elsewhere``; None when FD is off."""
  if config.fid_every <= 0:
    return None
  fd = None
  if is_chief:
    from jaxlatent.training.fid import RandomFeatureFD  # pylint: disable=g-import-not-at-top
    fd = RandomFeatureFD(_read_rows(dataset.images, held_idx), config.fid_feature_seed)

  def fd_value(state) -> float | None:
    # Every process renders (a computation over the whole mesh); the chief scores.
    n, chunk = config.fid_num_samples, min(config.fid_num_samples, 256)
    parts = [sharding.to_host(render(state, jax.random.fold_in(fd_key, i), chunk))
             for i in range(-(-n // chunk))]
    return fd(np.concatenate(parts)[:n]) if fd is not None else None

  return fd_value


def _check_finite(step: int, metrics: Any, terms: tuple[str, ...], saver: "_HeldCheckpoint",
                  lr: Any = None, where: str = "") -> dict[str, float]:
  """NaN/Inf guard: host metrics of ``step``, or TrainingError naming step, term and the
  last good checkpoint."""
  host = {k: float(v) for k, v in sharding.to_host(metrics).items()}
  for term in terms:
    if term not in host:
      raise TrainingError(f"the trainer did not report loss term {term!r} "
                          f"(got {sorted(host)})")
    if not np.isfinite(host[term]):
      lower = (f" (e.g. --config.optim.lr={float(lr) / 10:g}, now {float(lr):g})"
               if isinstance(lr, (int, float)) and not isinstance(lr, bool) else "")
      if saver.last is not None:
        kept = (f"the last good checkpoint is step {saver.last} "
                f"({saver.ckpt.path(saver.last)}) and nothing after it was saved; re-run "
                f"the same command with a lower learning rate{lower} to resume from it")
      else:
        kept = ("no checkpoint was saved; start over with --restart and a lower "
                f"learning rate{lower}")
      raise TrainingError(f"non-finite {term}={host[term]} {where or f'at step {step}'}; "
                          f"training stopped: {kept}")
  return host


class _HeldCheckpoint:
  """Saves a checkpoint step's state only once the loss computed from it is finite.

  The NaN guard sees a step's loss, computed from the state *before* its update; a
  state whose parameters are finite but already diverged (say 1e6 after a huge lr)
  shows only in the next step's loss.  So the state of a checkpoint step is copied
  (the loop donates it to the next step) and saved when that next loss passed.
  """

  def __init__(self, ckpt: checkpoint.Checkpointer, last: int | None):
    self.ckpt, self.last, self.held = ckpt, last, None

  def hold(self, step: int, state: Any) -> None:
    def copy(x):  # onto the same devices: a multi-process array has no single one
      return jax.device_put(x, x.sharding, may_alias=False) if isinstance(x, jax.Array) else x

    self.held = (step, jax.tree.map(copy, state))

  def verified(self, step: int) -> None:
    """The loss of ``step`` was finite: a state held before it is good; save it."""
    if self.held is not None and step > self.held[0]:
      self.ckpt.save(*self.held)
      self.last, self.held = self.held[0], None


@dataclasses.dataclass(frozen=True)
class _Run:
  """What the step loop and its reports share over one run."""

  config: ml_collections.ConfigDict
  workdir: str
  total: int
  is_chief: bool
  terms: tuple[str, ...]
  saver: _HeldCheckpoint
  metric_writer: Any
  tb_writer: Any  # TensorBoard events in the workdir (a no-op off the chief)
  render: Callable[..., Any]
  fd_value: Callable[[Any], float | None] | None
  say: Callable[[str], None]
  t_start: float
  sample_key: jax.Array
  phase_of: Callable[[int], Any]


class _LogWindow:
  """Host metrics and wall time since the last log line (for averages and speed)."""

  def __init__(self, batch_size: int, lr: Any, t_start: float):
    self.batch_size, self.lr = batch_size, lr
    self.t_log = t_start
    self.steps, self.history, self.eval_seconds = 0, [], 0.0  # eval: FD, samples, ckpts

  def record(self, now: float, done: int, total: int) -> tuple[dict[str, float], float]:
    """The averaged record of the window ending now, and the ETA; starts a new window."""
    record = {k: float(np.mean([h[k] for h in self.history])) for k in self.history[-1]}
    train_seconds = max(now - self.t_log - self.eval_seconds, 1e-9)
    record["images_per_sec"] = self.steps * self.batch_size / train_seconds
    eta = (total - done) * train_seconds / self.steps
    if self.lr is not None and "lr" not in record:
      record["lr"] = float(self.lr)
    self.t_log, self.steps, self.history, self.eval_seconds = now, 0, [], 0.0
    return record, eta


def _events(config, done: int, total: int) -> dict[str, bool]:
  """Which of log / checkpoint / samples / FD happen after step ``done``."""
  is_last = done == total
  return {"log": done % config.log_every == 0 or is_last,
          "ckpt": done % config.ckpt_every == 0 or is_last,
          "samples": config.sample_every > 0 and (done % config.sample_every == 0 or is_last),
          "fd": config.fid_every > 0 and (done % config.fid_every == 0 or is_last)}


def _report(run, state, done: int, window: _LogWindow, now: dict[str, bool]) -> None:
  """Everything after a step that is due: metrics line, FD, sample grid, checkpoint."""
  config, is_last = run.config, done == run.total
  t_eval, record, eta = time.time(), {}, 0.0
  if now["log"]:
    record, eta = window.record(t_eval, done, run.total)
  if now["fd"]:
    value = run.fd_value(state)
    if value is not None:
      record["fd_random_features"] = value
  if record:
    record = {"step": done, **record, "elapsed": time.time() - run.t_start}
    run.metric_writer.write(record)
    tensorboard.log_metrics_to_tensorboard(run.tb_writer, done, record)
    line = metrics_lib.format_record(record, run.total, run.terms)
    run.say(line + (f" | eta {_format_duration(eta)}" if now["log"] and not is_last else ""))
  if now["samples"]:
    images = sharding.to_host(run.render(state, run.sample_key, config.num_samples))
    if run.is_chief:
      from jaxlatent.viz.grids import save_image_grid  # pylint: disable=g-import-not-at-top
      grid = save_image_grid(images, os.path.join(run.workdir, "samples", f"step_{done:06d}.png"))
      run.tb_writer.image(done, "samples", grid)
  if now["ckpt"]:
    run.saver.hold(done, state)
  if run.is_chief and (now["samples"] or is_last):
    metrics_lib.plot_losses(metrics_lib.read_metrics(run.metric_writer.path), run.terms,
                            os.path.join(run.workdir, "losses.png"))
  window.eval_seconds += time.time() - t_eval


def _say_fn(bar, is_chief: bool):
  """Prints a line on the chief (through the progress bar when there is one)."""
  if not is_chief:
    return lambda s: None
  return bar.write if bar is not None else lambda s: print(s, flush=True)


def _train(config, workdir, trainer, dataset, ckpt, latest, is_chief):
  """Sets the run up, then steps from the first step not done to ``config.steps``."""
  total = int(config.steps)
  train_idx, held_idx, labels = _split_data(config, dataset)
  mesh = sharding.make_mesh()
  repl, data_sharding = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  base_key = jax.random.PRNGKey(config.seed)
  state, start = _initial_state(trainer, ckpt, latest, jax.random.fold_in(base_key, _INIT),
                                repl)
  metric_writer = metrics_lib.MetricWriter(os.path.join(workdir, "metrics.jsonl"), is_chief)
  if is_chief:
    checkpoint.save_run_config(workdir, config)
    metric_writer.drop_after(start)
    _drop_samples_after(workdir, start)
  train_step = _compile_step(trainer, jax.random.fold_in(base_key, _TRAIN), repl, data_sharding)
  render = _compile_render(trainer, repl)
  fd_value = _fd_scorer(config, dataset, held_idx, render, jax.random.fold_in(base_key, _FD),
                        is_chief)
  # Only trainers that ask for it get 'index', so other models' steps are unchanged.
  batches = _prefetch(host_batches(dataset, train_idx, config.batch_size, config.seed, start,
                                   sharding.local_rows(data_sharding, config.batch_size), labels,
                                   bool(getattr(trainer, "needs_index", False))))
  bar = _progress(total, start, is_chief)
  say = _say_fn(bar, is_chief)
  # After the nothing-to-do check: a finished run's event files stay as they are.
  tb_writer = tensorboard.SummaryWriter(workdir, is_chief, start)
  say(f"training {getattr(trainer, 'name', '') or config.model.name} for steps "
      f"{start}..{total} on {jax.device_count()} device(s), {jax.process_count()} "
      f"process(es); workdir {workdir}")
  run = _Run(config=config, workdir=workdir, total=total, is_chief=is_chief,
             terms=tuple(trainer.loss_terms), saver=_HeldCheckpoint(ckpt, latest),
             metric_writer=metric_writer, tb_writer=tb_writer,
             render=render, fd_value=fd_value, say=say, t_start=time.time(),
             sample_key=jax.random.fold_in(base_key, _SAMPLES),
             phase_of=getattr(trainer, "phase", None) or (lambda step: None))
  try:
    state = _step_loop(run, state, train_step, batches, data_sharding, start, bar)
  finally:
    batches.close()  # stops the prefetch thread
    tb_writer.close()
    if bar is not None:
      bar.close()
  say(f"done: step {total}, {time.time() - run.t_start:.1f} s; outputs in {workdir}")
  return state


def _step_loop(run, state, train_step, batches, data_sharding, start: int, bar):
  """The steps ``start..total``; returns the final state."""
  config, total, terms = run.config, run.total, run.terms
  lr = config.optim.get("lr", None)
  window = _LogWindow(config.batch_size, lr, run.t_start)

  def checked(step, metrics, where=""):
    host = _check_finite(step, metrics, terms, run.saver, lr, where)
    run.saver.verified(step)
    return host

  pending = None  # (step, device metrics) not checked yet: lets the host run ahead one step
  for step in range(start, total):
    batch = sharding.global_batch(next(batches), data_sharding, config.batch_size)
    state, metrics = train_step(state, batch, np.int32(step), run.phase_of(step))
    done = step + 1
    if pending is not None:
      window.history.append(checked(*pending))
    pending = (done, metrics)
    run.saver.ckpt.check()  # a failed background save stops the run now
    window.steps += 1
    if bar is not None:
      bar.update(1)
    now = _events(config, done, total)
    if not any(now.values()):
      continue
    # This state is finite before it is used or saved.
    window.history.append(checked(*pending))
    pending = None
    _report(run, state, done, window, now)
  if run.saver.held is not None:
    # The final state is saved once a step from it (not kept) gives a finite loss.
    final = run.saver.held[1]
    batch = sharding.global_batch(next(batches), data_sharding, config.batch_size)
    _, metrics = train_step(state, batch, np.int32(total), run.phase_of(total))
    checked(total + 1, metrics, f"in a step from the final state of step {total}")
    state = final
  return state
