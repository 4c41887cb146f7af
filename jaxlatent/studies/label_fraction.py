"""Accuracy of the semi-supervised DAAE's class head vs the fraction of labels.

``run_label_fraction(config, out_dir)`` trains the SS-DAAE on brain phantoms (label
``data.label_column``, e.g. 'group' HC/MS) once per fraction in ``config.fractions``,
with the same steps, seed, data order and initialisation (only the labelled subset
changes), and scores the head on held-out phantom SUBJECTS: a population re-drawn
with ``data.seed + heldout.seed_offset``, never seen in training.  The labelled
subsets are nested (one uniform per training index: example ``i`` is labelled iff
``u_i < fraction``, :func:`jaxlatent.models.ssdaae.labelled_mask`).

Next to each SS-DAAE run, a supervised baseline (``config.supervised``, on by
default) trains on exactly the same labelled images: the SS-DAAE's own encoder and
class head (same architecture, initial weights, input corruption, seed, steps and
Adam, unless ``supervised.steps`` / ``supervised.lr`` say otherwise) with
cross-entropy on the labelled images only: no decoder, no reconstruction, no
adversaries, no unlabelled images (:func:`supervised_accuracy`).  It is scored by the
same function on the same held-out slices, so the gap between the two columns is
what the unlabelled images and the autoencoder's terms add.

Outputs in ``out_dir``: ``label_fraction.json`` (settings and one row per fraction:
fraction, labelled images, SS-DAAE held-out accuracy, supervised held-out accuracy,
chance = the held-out majority-class rate) and ``label_fraction.md`` (the same rows as
a Markdown table).

Read :func:`run_label_fraction` top to bottom: check the config, load the phantom
sets, train and score per fraction (:func:`accuracy_vs_label_fraction`), write the
outputs (:func:`jaxlatent.studies.report.write_label_fraction`).  The experiment's
building blocks live here too: :func:`probe_attribute` (how much attribute
information a code carries) and :func:`majority_rate` (chance level).

The runs share one compiled step (the baselines another) and run one after another:
vmapping the step over fractions (stacked states, per-fraction labelled flags)
compiled about 3x slower and ran each step about 1.7x slower per fraction on CPU
(tiny 32 px config, 4 fractions).
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxlatent.data import batch_indices, load_dataset
from jaxlatent.data.config import validate_data_config
from jaxlatent.errors import ConfigError, DataError
from jaxlatent.models import ssdaae
from jaxlatent import atomic_io
from jaxlatent.studies import artifacts, report
from jaxlatent.training.defaults import complete_train_config
from jaxlatent.training.optim import adam, adam_settings, apply_gradients
from jaxlatent.training.trainers.ssdaae import make_ssdaae_trainer
from jaxlatent.training.trainers.state import TrainState, first_state, float32_metrics

TASK = "label_fraction"
PHANTOM_SOURCES = ("phantom_brain", "phantom_thorax")
SUPERVISED_CLASSIFIER = ("the SS-DAAE's encoder and class head, trained with cross-entropy "
                         "on the labelled images only")


def _log(msg: str) -> None:
  report.log("label_fraction", msg)


def _int_at_least(key: str, value: Any, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    raise ConfigError(f"{key}={value!r}: must be an int >= {minimum}")
  return int(value)


def validate_label_fraction_config(config: ml_collections.ConfigDict) -> tuple[float, ...]:
  """Checks a ``configs/label_fraction_*.py`` config before any compute; returns the fractions.

  Needs ``task='label_fraction'``, an 'ssdaae' ``model``, a phantom ``data.source``
  with a ``data.label_column``, ``fractions`` (numbers in [0, 1]), ``steps``,
  ``batch_size``, ``seed``, ``image_size`` and ``heldout.{seed_offset, num_images}``;
  optional ``supervised.{enabled, steps, lr}`` (:func:`supervised_settings`).
  """
  if config.get("task", None) != TASK:
    raise ConfigError(f"config.task={config.get('task', None)!r}: expected {TASK!r}")
  for key in ("model", "data", "fractions", "steps", "batch_size", "seed", "image_size",
              "heldout"):
    if key not in config:
      raise ConfigError(f"config.{key} is missing (see configs/label_fraction_brain.py)")
  if config.model.get("name", None) != "ssdaae":
    raise ConfigError(f"config.model.name={config.model.get('name', None)!r}: the label-"
                      "fraction study trains the semi-supervised DAAE, expected 'ssdaae'")
  fractions = config.fractions
  if isinstance(fractions, (str, bytes)) or not isinstance(fractions, (tuple, list)) \
      or not fractions:
    raise ConfigError(f"config.fractions={fractions!r}: expected a non-empty tuple of "
                      "numbers in [0, 1], e.g. (0.01, 0.1, 0.5, 1.0)")
  for f in fractions:
    if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0.0 <= float(f) <= 1.0:
      raise ConfigError(f"config.fractions={tuple(fractions)!r}: {f!r} is not a number in "
                        "[0, 1]")
  if len(set(float(f) for f in fractions)) != len(fractions):
    raise ConfigError(f"config.fractions={tuple(fractions)!r}: repeated fraction")
  _int_at_least("config.steps", config.steps, 1)
  _int_at_least("config.batch_size", config.batch_size, 1)
  _int_at_least("config.seed", config.seed, 0)
  _int_at_least("config.heldout.num_images", config.heldout.get("num_images"), 1)
  offset = _int_at_least("config.heldout.seed_offset", config.heldout.get("seed_offset"), 0)
  if offset == 0:
    raise ConfigError("config.heldout.seed_offset=0 would score the head on the training "
                      "subjects: use a population seed offset > 0")
  if config.data.get("source", None) not in PHANTOM_SOURCES:
    raise ConfigError(f"config.data.source={config.data.get('source', None)!r}: held-out "
                      f"subjects are re-drawn phantoms, expected one of {PHANTOM_SOURCES}")
  if not config.data.get("label_column", ""):
    raise ConfigError("config.data.label_column is empty: set the class label, e.g. 'group' "
                      "(HC/MS) for the brain phantom")
  supervised_settings(config)
  validate_data_config(config.data, config.image_size)
  make_ssdaae_trainer(config)  # model fields (widths, weights, corruption)
  return tuple(float(f) for f in fractions)


@dataclasses.dataclass(frozen=True)
class SupervisedSettings:
  """The supervised baseline of the study (``config.supervised``).

  Attributes:
    enabled: train the baseline next to each SS-DAAE run.
    steps: its training steps; 0 = as many as the SS-DAAE runs.
    lr: its Adam learning rate; 0 = the SS-DAAE autoencoder's (``optim.g_lr``, else
      ``optim.lr``).  The other Adam settings are always the autoencoder's.
  """

  enabled: bool = True
  steps: int = 0
  lr: float = 0.0


def supervised_settings(config: ml_collections.ConfigDict) -> SupervisedSettings:
  """The checked ``config.supervised`` (defaults when the config has none)."""
  node = config.get("supervised", None)
  if node is None:
    return SupervisedSettings()
  if not isinstance(node, ml_collections.ConfigDict):
    raise ConfigError(f"config.supervised={node!r}: expected a block with enabled, steps, lr")
  unknown = sorted(set(node.keys()) - {f.name for f in dataclasses.fields(SupervisedSettings)})
  if unknown:
    raise ConfigError(f"config.supervised.{unknown[0]}: unknown key (expected enabled, steps, "
                      "lr)")
  enabled = node.get("enabled", True)
  if not isinstance(enabled, bool):
    raise ConfigError(f"config.supervised.enabled={enabled!r}: must be True or False")
  steps = _int_at_least("config.supervised.steps", node.get("steps", 0), 0)
  lr = node.get("lr", 0.0)
  if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not np.isfinite(lr) \
      or lr < 0:
    raise ConfigError(f"config.supervised.lr={lr!r}: must be a number >= 0 (0 = the SS-DAAE's "
                      "learning rate)")
  return SupervisedSettings(enabled=enabled, steps=steps, lr=float(lr))


def _datasets(config: ml_collections.ConfigDict, out: str):
  """(train images, labels, held-out images, labels, class names) of the phantom sets."""
  data = ml_collections.ConfigDict(config.data.to_dict())
  cache = data.cache_dir or os.path.join(out, "cache")
  train = load_dataset(data, config.image_size, os.path.join(cache, "train"))
  y_train, classes = train.label_ids(data.label_column)
  held = ml_collections.ConfigDict(data.to_dict())
  held.seed = int(data.seed) + int(config.heldout.seed_offset)
  held.num_images = int(config.heldout.num_images)
  test = load_dataset(held, config.image_size, os.path.join(cache, "heldout"))
  y_test, _ = test.label_ids(data.label_column, classes=classes)
  return (np.asarray(train.images, np.float32), y_train, np.asarray(test.images, np.float32),
          y_test, [str(c) for c in classes])


def run_label_fraction(config: ml_collections.ConfigDict, out_dir: str) -> str:
  """Trains the SS-DAAE per labelled fraction and scores it on held-out subjects.

  Args:
    config: ``configs/label_fraction_brain.py`` (or ``_tiny``): an ssdaae training
      config plus ``task='label_fraction'``, ``fractions`` and
      ``heldout.{seed_offset, num_images}``; ``model.labelled_fraction`` is ignored.
    out_dir: output folder (created); phantom caches go to ``data.cache_dir`` or
      ``<out_dir>/cache``.

  Returns:
    The path of ``<out_dir>/label_fraction.md``; ``label_fraction.json`` lies beside it.

  Raises:
    ConfigError: a bad config (before any data is rendered).
    DataError: too few training images for ``batch_size``.
  """
  clock = report.Clock()
  config = complete_train_config(config)
  fractions = validate_label_fraction_config(config)
  what = "label-fraction output folder (--out)"
  atomic_io.check_writable_dir(out_dir, what)
  with artifacts.locked_output_dir(out_dir, what) as out:
    x_train, y_train, x_test, y_test, classes = _datasets(config, out)
    if len(x_train) < int(config.batch_size):
      raise DataError(f"{len(x_train)} training images (data.num_images) < "
                      f"batch_size={config.batch_size}")
    _log(f"{len(x_train)} training slices, {len(x_test)} held-out slices (population seed "
         f"{int(config.data.seed) + int(config.heldout.seed_offset)}), classes {classes}; "
         f"fractions {list(fractions)}, {int(config.steps)} steps each")
    sup = supervised_settings(config)

    def log_row(row):
      baseline = ""
      if row.get("supervised_accuracy") is not None:
        baseline = (f", supervised {row['supervised_accuracy']:.3f} "
                    f"({row['supervised_seconds']:.0f} s)")
      _log(f"fraction {row['fraction']:g}: {row['num_labelled']} labelled, held-out accuracy "
           f"{row['accuracy']:.3f}{baseline} (chance {row['chance']:.3f}), "
           f"{row['seconds']:.0f} s")

    rows = accuracy_vs_label_fraction(config, x_train, y_train, x_test, y_test,
                                      fractions=fractions, on_row=log_row)
    supervised = None
    if sup.enabled:
      supervised = {"classifier": SUPERVISED_CLASSIFIER,
                    "steps": sup.steps or int(config.steps),
                    "learning_rate": supervised_adam(config, sup)["lr"]}
    path = report.write_label_fraction(out, config, rows, classes, len(x_train), len(x_test),
                                       majority_rate(y_test), clock, supervised=supervised)
  _log(f"done in {clock.seconds()['wall']:.0f} s: {path}")
  return path


# ----------------------------------------------------------------------------- probes


def probe_attribute(z_train: jax.Array, y_train: jax.Array, z_test: jax.Array,
                    y_test: jax.Array, key: jax.Array, *, num_classes: int = 2,
                    steps: int = 300, learning_rate: float = 0.05,
                    l2: float = 1e-3) -> jax.Array:
  """Held-out accuracy (f32 scalar) of a FRESH logistic-regression probe of y from z.

  Measures how much attribute information a code still carries, whatever an
  adversary saw during training: a multinomial logistic regression (weights drawn
  from ``key``, features standardised with the training codes' mean and std, L2
  penalty ``l2``) is fitted by full-batch Adam for ``steps`` steps on
  ``(z_train [N, D], y_train int [N])`` and scored on ``(z_test [M, D], y_test [M])``.
  Pure and jittable (``num_classes``, ``steps`` static); vmap it over runs or seeds.
  Compare with the majority-class rate (:func:`majority_rate`), not 1 / K.
  """
  z_train = jnp.asarray(z_train, jnp.float32)
  z_test = jnp.asarray(z_test, jnp.float32)
  y_train = jnp.asarray(y_train).astype(jnp.int32)
  y_test = jnp.asarray(y_test).astype(jnp.int32)
  mean = jnp.mean(z_train, axis=0)
  scale = jnp.std(z_train, axis=0) + 1e-6
  x_train, x_test = (z_train - mean) / scale, (z_test - mean) / scale  # [N, D], [M, D]
  d, k = z_train.shape[-1], int(num_classes)
  params = {"w": 0.01 * jax.random.normal(key, (d, k), jnp.float32),
            "b": jnp.zeros((k,), jnp.float32)}
  tx = optax.adam(learning_rate)

  def loss_fn(p):
    logp = jax.nn.log_softmax(x_train @ p["w"] + p["b"], axis=-1)  # [N, K]
    ce = -jnp.mean(jnp.take_along_axis(logp, y_train[:, None], axis=-1))
    return ce + l2 * jnp.sum(jnp.square(p["w"]))

  def update(carry, _):
    p, opt_state = carry
    grads = jax.grad(loss_fn)(p)
    updates, opt_state = tx.update(grads, opt_state, p)
    return (optax.apply_updates(p, updates), opt_state), None

  (params, _), _ = jax.lax.scan(update, (params, tx.init(params)), None, length=int(steps))
  pred = jnp.argmax(x_test @ params["w"] + params["b"], axis=-1)
  return jnp.mean((pred == y_test).astype(jnp.float32))


def majority_rate(labels: Any) -> float:
  """Chance level of a classifier: the frequency of the most common class in ``labels``."""
  labels = np.asarray(labels).astype(np.int64).ravel()
  if labels.size == 0:
    raise DataError("majority_rate: no labels")
  return float(np.bincount(labels).max() / labels.size)


# ----------------------------------------------------------------------------- label fraction


def _train(step_fn, init_fn, batch_at: Callable[[int], dict], steps: int, seed: int):
  """``steps`` jitted steps from ``init_fn(key(seed))``; step ``t`` gets ``batch_at(t)``.

  A Python loop over one compiled step, not ``lax.scan``: XLA:CPU runs the weight
  gradients of convolutions inside a scanned loop far slower (jax-ml/jax#12868).
  """
  state = init_fn(jax.random.PRNGKey(seed))
  key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
  for t in range(steps):
    state, _ = step_fn(state, batch_at(t), jax.random.fold_in(key, t))
  return state


def _fit(step_fn, init_fn, images: np.ndarray, labels: np.ndarray, labelled: np.ndarray,
         steps: int, batch_size: int, seed: int):
  """SS-DAAE: ``steps`` steps over every image with per-example ``labelled`` flags."""

  def batch_at(t):
    idx = batch_indices(len(images), batch_size, seed, t)
    return {"image": jnp.asarray(images[idx]), "label": jnp.asarray(labels[idx], jnp.int32),
            "labelled": jnp.asarray(labelled[idx])}

  return _train(step_fn, init_fn, batch_at, steps, seed)


# ----------------------------------------------------------------------------- supervised baseline


def labelled_batch_indices(labelled: np.ndarray, batch_size: int, seed: int,
                           step: int) -> np.ndarray:
  """Training-set indices int64 ``[batch_size]`` of baseline step ``step``: labelled only.

  ``labelled``: bool ``[N]`` over the training set.  With at least a batch of labelled
  images, the batches walk shuffled epochs of the labelled subset
  (:func:`jaxlatent.data.batch_indices` over it: no repeats within an epoch); with
  fewer, each batch is a uniform draw with replacement seeded by ``(seed, step)``.
  Deterministic in its arguments.
  """
  idx = np.flatnonzero(np.asarray(labelled, bool))
  if idx.size == 0:
    raise DataError("the supervised baseline needs at least one labelled image")
  if idx.size >= batch_size:
    return idx[batch_indices(idx.size, batch_size, seed, step)].astype(np.int64)
  rng = np.random.default_rng([int(seed), int(step)])
  return idx[rng.integers(0, idx.size, batch_size)].astype(np.int64)


def supervised_adam(config: ml_collections.ConfigDict,
                    sup: SupervisedSettings | None = None) -> dict[str, float]:
  """The baseline's Adam settings: the SS-DAAE autoencoder's, lr from ``supervised.lr`` if > 0."""
  sup = supervised_settings(config) if sup is None else sup
  settings = adam_settings(config, "g")
  if sup.lr > 0:
    settings["lr"] = sup.lr
  return settings


def make_supervised_classifier(config: ml_collections.ConfigDict
                               ) -> tuple[Callable[[jax.Array], TrainState], Callable]:
  """``(init, step)`` of the supervised baseline (pure, not jitted).

  The network is the SS-DAAE's encoder with its class head
  (:class:`jaxlatent.models.ssdaae.SSEncoder`; the z output gets no loss), its initial
  weights those of an SS-DAAE run with the same key.  ``step(state, batch, key)``
  corrupts ``batch['image']`` as the SS-DAAE does (``model.noise_std``,
  ``model.dropout``) and takes one Adam step (:func:`supervised_adam`) on the mean
  cross-entropy of ``batch['label']``: every image in the batch is a labelled one.
  ``state.params = {'encoder': ...}``, so :func:`jaxlatent.models.ssdaae.classify`
  scores it.
  """
  net = ssdaae.build(config)
  model = ssdaae.model_settings(config)
  tx = adam(supervised_adam(config))

  def init(key: jax.Array) -> TrainState:
    params = {"encoder": ssdaae.init_params(config, key)["encoder"]}
    return first_state(params, tx.init(params))

  def loss_fn(params, x_tilde, labels):
    _, logits = net.encoder.apply({"params": params["encoder"]}, x_tilde)  # [B, K]
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1)[:, 0]
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return jnp.mean(ce), jnp.mean(correct)

  def supervised_step(state: TrainState, batch: dict, key: jax.Array):
    x_tilde = ssdaae.corrupt(batch["image"], key, float(model.noise_std), float(model.dropout))
    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, x_tilde, batch["label"].astype(jnp.int32))
    params, opt_state = apply_gradients(tx, state.params, state.opt_state, grads)
    return (state.replace(step=state.step + 1, params=params, opt_state=opt_state),
            float32_metrics({"class_loss": loss, "batch_acc": acc}))

  return init, supervised_step


def _predict(classify, params, images: np.ndarray) -> np.ndarray:
  """Class ids of ``images`` in chunks of 256 (bounded memory at any held-out size)."""
  return np.concatenate([np.asarray(classify(params, jnp.asarray(images[i:i + 256])))
                         for i in range(0, len(images), 256)])


def supervised_accuracy(step_fn, init_fn, classify, train_images: np.ndarray,
                        train_labels: np.ndarray, labelled: np.ndarray,
                        test_images: np.ndarray, test_labels: np.ndarray, steps: int,
                        batch_size: int, seed: int) -> float:
  """Held-out accuracy of the supervised baseline trained on the ``labelled`` images.

  ``step_fn``, ``init_fn``: :func:`make_supervised_classifier`'s (jitted once by the
  caller, shared by every labelled subset); ``classify``: ``(params, images) -> ids``
  (:func:`jaxlatent.models.ssdaae.classify`).  Batches come from
  :func:`labelled_batch_indices`; the key schedule is the SS-DAAE runs' (``seed``).
  """

  def batch_at(t):
    idx = labelled_batch_indices(labelled, batch_size, seed, t)
    return {"image": jnp.asarray(train_images[idx]),
            "label": jnp.asarray(train_labels[idx], jnp.int32)}

  state = _train(step_fn, init_fn, batch_at, steps, seed)
  return float(np.mean(_predict(classify, state.params, test_images) == test_labels))


# ----------------------------------------------------------------------------- label fraction


def accuracy_vs_label_fraction(
    config: ml_collections.ConfigDict,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    fractions: Sequence[float] = (0.05, 0.1, 0.5, 1.0),
    steps: int | None = None,
    jit_options: dict[str, Any] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
  """Classification accuracy of the semi-supervised head vs the fraction of labels.

  Trains one short SS-DAAE run per fraction (same seed, data order and init; only
  the labelled subset changes: :func:`jaxlatent.models.ssdaae.labelled_mask` over the
  example indices with ``model.label_seed``, passed as ``batch['labelled']``, so all
  runs share one compiled step), and scores the head on held-out images.  With
  ``config.supervised.enabled`` (the default), the supervised baseline
  (:func:`supervised_accuracy`) trains on the same labelled images with the same seed
  and is scored on the same held-out images, its step also compiled once.

  Args:
    config: an ssdaae config (``config.steps``, ``config.batch_size``, ``config.seed``,
      optional ``config.supervised``: :func:`supervised_settings`).
    train_images, train_labels: ``[N, S, S, 1]`` in [-1, 1] and int ``[N]``.
    test_images, test_labels: held-out examples.
    fractions: labelled fractions to try.
    steps: training steps per SS-DAAE run (default ``config.steps``); the baseline
      takes ``supervised.steps``, or as many when that is 0.
    jit_options: extra ``jax.jit`` arguments (e.g. ``{'compiler_options':
      {'xla_backend_optimization_level': 0}}`` for fast compiles of tiny models).
    on_row: called with each row as soon as its runs are scored (progress reports).

  Returns:
    One row per fraction: ``{'fraction', 'num_labelled', 'accuracy', 'chance',
    'seconds'}`` (chance = the majority-class rate of the test labels; seconds = the
    run's wall time, the first including the step's compilation), plus, with the
    baseline enabled, ``'supervised_accuracy'`` (None when no image is labelled) and
    ``'supervised_seconds'``.
  """
  if config.model.get("name", None) != "ssdaae":
    raise ConfigError("accuracy_vs_label_fraction needs an 'ssdaae' config")
  train_images = np.asarray(train_images, np.float32)
  train_labels = np.asarray(train_labels, np.int32)
  test_labels = np.asarray(test_labels, np.int32)
  if len(train_images) != len(train_labels) or len(test_images) != len(test_labels):
    raise DataError("images and labels differ in length")
  if len(train_images) < int(config.batch_size):
    raise DataError(f"{len(train_images)} training images < batch_size={config.batch_size}")
  steps = int(config.steps if steps is None else steps)
  seed, label_seed = int(config.get("seed", 0)), int(config.model.get("label_seed", 0))
  batch_size = int(config.batch_size)
  sup = supervised_settings(config)
  trainer = make_ssdaae_trainer(config)
  jit_options = dict(jit_options or {})
  step_fn = jax.jit(trainer.train_step, **jit_options)
  init_fn = jax.jit(trainer.init, **jit_options)
  classify = jax.jit(lambda params, x: ssdaae.classify(params, x, config), **jit_options)
  if sup.enabled:
    sup_init, sup_step = make_supervised_classifier(config)
    sup_init, sup_step = jax.jit(sup_init, **jit_options), jax.jit(sup_step, **jit_options)
  chance = float(np.bincount(test_labels).max() / len(test_labels))
  rows = []
  for frac in fractions:
    if not 0.0 <= float(frac) <= 1.0:
      raise ConfigError(f"labelled fraction {frac} must be in [0, 1]")
  for frac in fractions:
    t_run = time.time()
    labelled = ssdaae.labelled_mask(len(train_images), float(frac), label_seed)
    state = _fit(step_fn, init_fn, train_images, train_labels, labelled, steps, batch_size,
                 seed)
    pred = _predict(classify, state.params, test_images)
    row = {"fraction": float(frac), "num_labelled": int(labelled.sum()),
           "accuracy": float(np.mean(pred == test_labels)), "chance": chance,
           "seconds": time.time() - t_run}
    if sup.enabled:
      t_sup = time.time()
      row["supervised_accuracy"] = None if not labelled.any() else supervised_accuracy(
          sup_step, sup_init, classify, train_images, train_labels, labelled, test_images,
          test_labels, sup.steps or steps, batch_size, seed)
      row["supervised_seconds"] = time.time() - t_sup
    rows.append(row)
    if on_row is not None:
      on_row(row)
  return rows
