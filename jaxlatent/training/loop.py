"""The generic training loop: ``train_and_evaluate(config, workdir)``.

Read top to bottom, a run is:

  1. validate the config (milliseconds; ConfigError/DataError naming the key);
  2. start the multi-process runtime if asked (``config.distributed``), build the
     1-D ``'data'`` mesh over all devices;
  3. load the dataset, hold out ``fid_num_samples`` images for the FD metric;
  4. create the state replicated on the mesh (``jax.jit(init, out_shardings=...)``),
     or restore the latest checkpoint into ``jax.eval_shape(init)``;
  5. loop: host batch -> global array -> jitted step (traced once, state donated) ->
     NaN/Inf guard -> metrics, sample grids, FD, checkpoints.

Everything a step depends on is a function of ``(config, step)``: the batch is
``batch_indices(..., step)`` and the key ``fold_in(key, step)``, so a run resumed
from a checkpoint ends with the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import sys
import threading
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np

from jaxlatent.errors import CheckpointError, DataError, TrainingError
from jaxlatent.training import checkpoint
from jaxlatent.training import metrics as metrics_lib
from jaxlatent.training import sharding
from jaxlatent.training import tensorboard
from jaxlatent.training.defaults import complete_train_config
from jaxlatent.training.validate import validate_config

# Stream ids for jax.random.fold_in on the run's base key.
_INIT, _TRAIN, _SAMPLES, _FD = 0, 1, 2, 3


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       trainer: Any = None, dataset: Any = None) -> Any:
  """Trains ``config.model`` on ``config.data``, writing everything into ``workdir``.

  Resumes from the latest checkpoint in ``workdir/checkpoints`` when there is one.

  Args:
    config: the run config (``configs/*.py``; fields documented in configs/dcgan_ct.py).
    workdir: output folder (config.json, checkpoints/, metrics.jsonl, losses.png,
      samples/, and TensorBoard event files of the metrics, sample grids and FD).
    trainer: a ``ModelTrainer``; ``None`` builds ``make_trainer(config)``.  Pass your
      own to train a custom model with this loop.
    dataset: an object with ``images [N, S, S, 1]`` in [-1, 1] (e.g. a SliceDataset);
      ``None`` loads ``config.data``.

  Returns:
    The final train state (replicated on the mesh).

  Raises:
    ConfigError, DataError: bad config or data, before any compute.
    CheckpointError: an unreadable checkpoint in ``workdir`` (left untouched).
    TrainingError: a non-finite loss (the step and term are named; not saved).
  """
  config = complete_train_config(config)  # a config file lists only its own settings
  validate_config(config)  # config-only checks, before touching any device
  sharding.maybe_initialize_distributed(config.distributed)
  validate_config(config, device_count=jax.device_count(), process_count=jax.process_count())
  is_chief = jax.process_index() == 0
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)

  if trainer is None:
    from jaxlatent.training.trainers import make_trainer  # pylint: disable=g-import-not-at-top
    trainer = make_trainer(config)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, checkpoint.CHECKPOINT_DIR),
                               keep=config.keep_checkpoints)
  try:
    latest = ckpt.latest_step()
    if latest is not None:
      changed = checkpoint.check_same_architecture(workdir, config)  # before loading any data
      if changed and is_chief:
        print(f"resuming {workdir} from step {latest} with changed settings: "
              f"{'; '.join(changed)}", flush=True)
    if dataset is None:
      from jaxlatent.data import load_dataset  # pylint: disable=g-import-not-at-top
      cache_dir = config.data.cache_dir or os.path.join(workdir, "cache")
      dataset = load_dataset(config.data, config.image_size, cache_dir)
    return _train(config, workdir, trainer, dataset, ckpt, latest, is_chief)
  finally:
    ckpt.wait()  # an in-flight save of a good state completes even when we raise
    ckpt.close()


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
  train_idx, held_idx = split_holdout(num_images, config.fid_num_samples if fd_on else 0,
                                      config.seed)
  if len(train_idx) < config.batch_size:
    raise DataError(f"only {len(train_idx)} training images (of {num_images}, "
                    f"{len(held_idx)} held out for FD) for batch_size={config.batch_size}")
  labels = None
  if config.data.get("label_column", "") and hasattr(dataset, "label_ids"):
    labels = dataset.label_ids(config.data.label_column)[0]
  return train_idx, held_idx, labels


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


def _check_finite(step: int, metrics: Any, terms: tuple[str, ...], ckpt) -> dict[str, float]:
  """NaN/Inf guard: host metrics of ``step``, or TrainingError naming step and term."""
  host = {k: float(v) for k, v in sharding.to_host(metrics).items()}
  for term in terms:
    if term not in host:
      raise TrainingError(f"the trainer did not report loss term {term!r} "
                          f"(got {sorted(host)})")
    if not np.isfinite(host[term]):
      last = ckpt.latest_step()
      kept = (f"the last good checkpoint (step {last}) in {ckpt.directory} is kept"
              if last is not None else "no checkpoint was written")
      raise TrainingError(f"non-finite {term}={host[term]} at step {step}; training "
                          f"stopped without saving this state ({kept}); try a lower "
                          "optim.lr or another seed")
  return host


@dataclasses.dataclass(frozen=True)
class _Run:
  """What the step loop and its reports share over one run."""

  config: ml_collections.ConfigDict
  workdir: str
  total: int
  is_chief: bool
  terms: tuple[str, ...]
  ckpt: Any
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
    run.ckpt.save(done, state)
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
  if start >= total:
    print(f"{workdir}: already trained to step {start} >= steps={total}; nothing to do",
          flush=True)
    return state
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
             terms=tuple(trainer.loss_terms), ckpt=ckpt, metric_writer=metric_writer,
             tb_writer=tb_writer,
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
  window = _LogWindow(config.batch_size, config.optim.get("lr", None), run.t_start)
  pending = None  # (step, device metrics) not checked yet: lets the host run ahead one step
  for step in range(start, total):
    batch = sharding.global_batch(next(batches), data_sharding, config.batch_size)
    state, metrics = train_step(state, batch, np.int32(step), run.phase_of(step))
    done = step + 1
    if pending is not None:
      window.history.append(_check_finite(*pending, terms, run.ckpt))
    pending = (done, metrics)
    window.steps += 1
    if bar is not None:
      bar.update(1)
    now = _events(config, done, total)
    if not any(now.values()):
      continue
    # This state is finite before it is used or saved.
    window.history.append(_check_finite(*pending, terms, run.ckpt))
    pending = None
    _report(run, state, done, window, now)
  return state
