"""Unsupervised discovery of interpretable directions (Voynov & Babenko, ICML 2020).

As used by Schön et al. 2022 on CT: a deformator A and a reconstructor R are trained
jointly while the generator G is frozen.  Per sample: k ~ U{0..K-1},
eps = shift_scale * U[-1, 1] pushed out to ``|eps| >= min_shift``, shift = A(eps e_k);
R sees ``(G(z), G(z + shift))`` stacked as channels and predicts k (cross-entropy,
weight ``label_weight``) and eps (L1, weight ``shift_weight``).  The metric is the
reconstructor classification accuracy (RCA) on held-out samples; a run whose RCA stays
near chance (1/K) is flagged as collapsed.

Works on any :class:`~jaxlatent.generator.Generator`: latents of any shape are
flattened to ``D = latent_spec.size`` for A and reshaped back (so w+ works), and
``Generator.sample_latents`` draws z (or w through the mapping network).

Usage::

  cfg = VoynovConfig(num_directions=32, deformator="ortho", steps=3000)
  result = run_voynov(generator, cfg, jax.random.key(0))
  result.directions  # Directions, [K, *latent_shape]; result.curve["rca"]
  restarts = run_voynov_restarts(generator, cfg, jax.random.split(key, 4))
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable, Sequence

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

from jaxlatent.directions import vector_ops
from jaxlatent.directions.io import Directions
from jaxlatent.directions.matching import direction_recurrence
from jaxlatent.directions.networks import (DEFORMATOR_INITS, DEFORMATOR_KINDS,
                                           RECONSTRUCTOR_KINDS, Deformator, check_deformator,
                                           make_reconstructor)
from jaxlatent.errors import ConfigError, TrainingError
from jaxlatent.generator import Generator


@dataclasses.dataclass(frozen=True)
class VoynovConfig:
  """Settings of one discovery run (defaults: Schön et al. 2022 / Voynov & Babenko).

  Attributes:
    num_directions: K, may exceed the latent size for "proj", "linear", "fc", "random".
    deformator: one of id, linear, proj, ortho, fc, random.
    reconstructor: "lenet" / "resnet" (the reference's shift predictors, BatchNorm),
      "lenet_groupnorm" / "resnet_groupnorm" (padded, GroupNorm) or "mlp".
    reconstructor_width: LeNet width multiplier (default 2), ResNet stem width
      (default 64) or MLP width (default 256); 0: the default of that kind.
    steps: training steps (a multiple of ``eval_every``).
    batch_size: samples per step.
    learning_rate: Adam step size for both A and R.
    shift_scale: eps ~ shift_scale * U[-1, 1].
    min_shift: |eps| is raised to at least this.
    label_weight: weight of the cross-entropy on k.
    shift_weight: weight of the L1 loss on eps.
    deformator_random_init: random start of A (reference default) or identity-like.
    deformator_bias: "linear" / "proj" have the reference's bias.
    deformator_init: "reference" (0.1 * randn) or "scaled" (randn / sqrt(D)).
    deformator_inner_dim: hidden width of the "fc" deformator.
    eval_every: steps between held-out RCA evaluations (the RCA curve's spacing).
    eval_batches: held-out batches (of ``batch_size``) per RCA evaluation.
    collapse_threshold: final RCA below this flags collapse; None:
      ``min(2/K, chance + (1 - chance)/4)`` with chance = 1/K.
    recurrence_threshold: |cos| at which directions of two restarts count as the same.
  """

  num_directions: int = 100
  deformator: str = "proj"
  reconstructor: str = "lenet"
  reconstructor_width: int = 0
  steps: int = 3000
  batch_size: int = 128
  learning_rate: float = 1e-4
  shift_scale: float = 6.0
  min_shift: float = 0.5
  label_weight: float = 1.0
  shift_weight: float = 0.25
  deformator_random_init: bool = True
  deformator_bias: bool = True
  deformator_init: str = "reference"
  deformator_inner_dim: int = 1024
  eval_every: int = 100
  eval_batches: int = 4
  collapse_threshold: float | None = None
  recurrence_threshold: float = 0.8

  @classmethod
  def from_config(cls, config: Any) -> "VoynovConfig":
    """Builds from a ConfigDict / dict (e.g. ``config.voynov``); unknown keys -> ConfigError."""
    if isinstance(config, cls):
      return config
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ConfigError(
          f"unknown Voynov config key(s) {unknown}; known: {sorted(names)}")
    return cls(**d)

  @property
  def chance(self) -> float:
    return 1.0 / self.num_directions

  @property
  def threshold(self) -> float:
    if self.collapse_threshold is not None:
      return float(self.collapse_threshold)
    chance = self.chance
    return min(2.0 * chance, chance + (1.0 - chance) / 4.0)

  def validate(self, latent_size: int | None = None) -> None:
    """Raises ConfigError naming the first bad field."""
    vector_ops.check_positive_int("num_directions", self.num_directions, 2)
    for name in ("steps", "batch_size", "eval_every", "eval_batches"):
      vector_ops.check_positive_int(name, getattr(self, name))
    if self.steps % self.eval_every:
      raise ConfigError(
          f"steps ({self.steps}) must be a multiple of eval_every ({self.eval_every})")
    if self.deformator not in DEFORMATOR_KINDS:
      raise ConfigError(
          f"deformator {self.deformator!r} is not one of {', '.join(DEFORMATOR_KINDS)}")
    if self.deformator_init not in DEFORMATOR_INITS:
      raise ConfigError(
          f"deformator_init {self.deformator_init!r} is not one of "
          f"{', '.join(DEFORMATOR_INITS)}")
    if self.reconstructor not in RECONSTRUCTOR_KINDS:
      raise ConfigError(
          f"reconstructor {self.reconstructor!r} is not one of "
          f"{', '.join(RECONSTRUCTOR_KINDS)}")
    if not (self.shift_scale > 0 and 0 <= self.min_shift <= self.shift_scale):
      raise ConfigError(
          f"need shift_scale > 0 and 0 <= min_shift <= shift_scale, got "
          f"{self.shift_scale}, {self.min_shift}")
    if not self.learning_rate > 0:
      raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
    if latent_size is not None:
      check_deformator(self.deformator, self.num_directions, latent_size)


class VoynovState(struct.PyTreeNode):
  """Train state: ``params = {"deformator": ..., "reconstructor": ...}``.

  ``rng`` seeds the training samples (step key = ``fold_in(rng, step)``), ``eval_rng``
  the fixed held-out set used for every RCA evaluation.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  eval_rng: jax.Array


def _modules(config: VoynovConfig, generator: Generator):
  d = generator.latent_spec.size
  deformator = Deformator(config.deformator, config.num_directions, d,
                          config.deformator_inner_dim, config.deformator_random_init,
                          config.deformator_bias, config.deformator_init)
  reconstructor = make_reconstructor(config.reconstructor, config.num_directions,
                                     config.reconstructor_width or None)
  tx = optax.adam(config.learning_rate)
  return deformator, reconstructor, tx


def sample_shifts(key: jax.Array, batch: int, num_directions: int, shift_scale: float,
                  min_shift: float) -> tuple[jax.Array, jax.Array]:
  """``k [B]`` uniform in {0..K-1} and ``eps [B]`` in [-scale, scale], |eps| >= min_shift."""
  k_key, e_key = jax.random.split(key)
  k = jax.random.randint(k_key, (batch,), 0, num_directions)
  eps = shift_scale * jax.random.uniform(e_key, (batch,), minval=-1.0, maxval=1.0)
  eps = jnp.where((eps >= 0) & (eps < min_shift), min_shift, eps)
  eps = jnp.where((eps < 0) & (eps > -min_shift), -min_shift, eps)
  return k, eps


def init_state(generator: Generator, key: jax.Array, config: VoynovConfig) -> VoynovState:
  """Initial A, R, Adam state and the run's keys (pure; vmappable over ``key``)."""
  deformator, reconstructor, tx = _modules(config, generator)
  a_key, r_key, rng, eval_rng = jax.random.split(key, 4)
  k = config.num_directions
  a_params = deformator.init(a_key, jnp.zeros((1, k), jnp.float32))
  h, w, c = generator.image_shape
  r_params = reconstructor.init(r_key, jnp.zeros((1, h, w, 2 * c), jnp.float32))
  params = {"deformator": a_params, "reconstructor": r_params}
  return VoynovState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=tx.init(params), rng=rng, eval_rng=eval_rng)


def _apply_reconstructor(reconstructor, variables, pair, train: bool):
  """(logits, eps_pred), updated ``batch_stats`` (None without BatchNorm or in eval)."""
  if "batch_stats" not in variables:
    return reconstructor.apply(variables, pair), None
  if train:  # batch statistics, running averages updated (torch's train mode)
    out, updated = reconstructor.apply(variables, pair, train=True, mutable=["batch_stats"])
    return out, updated["batch_stats"]
  return reconstructor.apply(variables, pair, train=False), None


def _forward(generator: Generator, config: VoynovConfig, params, key, train: bool = True):
  """Samples a batch; returns (logits [B, K], eps_pred [B], k [B], eps [B], batch_stats).

  ``batch_stats``: the reconstructor's updated BatchNorm averages (None if it has none
  or ``train`` is False, when the averages normalise as in torch's eval mode).
  """
  deformator, reconstructor, _ = _modules(config, generator)
  b, kdim = config.batch_size, config.num_directions
  z_key, s_key = jax.random.split(key)
  k, eps = sample_shifts(s_key, b, kdim, config.shift_scale, config.min_shift)
  z = generator.sample_latents(z_key, b)  # [B, *shape]
  z = jax.lax.stop_gradient(z)
  codes = jax.nn.one_hot(k, kdim) * eps[:, None]  # [B, K]
  shift = deformator.apply(params["deformator"], codes)  # [B, D]
  z_shifted = (z.reshape(b, -1) + shift).reshape(z.shape)
  g_params = jax.lax.stop_gradient(generator.params)  # G is frozen
  # Two renders, not one of [z, z_shifted]: only G(z_shifted) needs a backward pass
  # (a batched render would back-propagate through G for all 2B images).
  images = jax.lax.stop_gradient(generator.apply_fn(g_params, z))  # [B, H, W, C]
  shifted = generator.apply_fn(g_params, z_shifted)
  pair = jnp.concatenate([images, shifted], axis=-1)  # [B, H, W, 2C]
  (logits, eps_pred), stats = _apply_reconstructor(reconstructor, params["reconstructor"],
                                                   pair, train)
  return logits, eps_pred, k, eps, stats


def train_step(generator: Generator, state: VoynovState, key: jax.Array,
               config: VoynovConfig) -> tuple[VoynovState, dict]:
  """One Adam step on A and R (G frozen). Pure; see :func:`make_train_step`."""
  _, _, tx = _modules(config, generator)

  def loss_fn(params):
    logits, eps_pred, k, eps, stats = _forward(generator, config, params, key)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, k).mean()
    l1 = jnp.abs(eps_pred - eps).mean()
    loss = config.label_weight * ce + config.shift_weight * l1
    acc = (jnp.argmax(logits, -1) == k).mean()
    return loss, ({"loss": loss, "ce": ce, "shift_l1": l1, "accuracy": acc}, stats)

  grads, (metrics, stats) = jax.grad(loss_fn, has_aux=True)(state.params)
  # BatchNorm averages get zero gradients, so Adam leaves them; they are replaced below.
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if stats is not None:
    params = {**params, "reconstructor": {**params["reconstructor"], "batch_stats": stats}}
  metrics["grad_norm"] = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def make_train_step(generator: Generator, config: VoynovConfig
                    ) -> Callable[[VoynovState, jax.Array], tuple[VoynovState, dict]]:
  """``(state, key) -> (state, metrics)``, jitted once (G's params are an argument,
  not a baked-in constant)."""
  config = VoynovConfig.from_config(config)
  jitted = jax.jit(train_step, static_argnames=("config",))

  def step(state, key):
    return jitted(generator, state, key, config=config)

  step.jitted = jitted
  return step


def evaluate_rca(generator: Generator, params, key: jax.Array, config: VoynovConfig
                 ) -> jax.Array:
  """Held-out reconstructor classification accuracy over ``eval_batches`` fresh batches."""
  keys = jax.random.split(key, config.eval_batches)

  def one(k):
    logits, _, target, _, _ = _forward(generator, config, params, k, train=False)
    return (jnp.argmax(logits, -1) == target).mean()

  return jax.lax.map(one, keys).mean()


def _keyed_train_step(generator: Generator, state: VoynovState, config: VoynovConfig):
  """:func:`train_step` with the step's key derived from the state (restartable)."""
  return train_step(generator, state, jax.random.fold_in(state.rng, state.step), config)


def _held_out_rca(generator: Generator, state: VoynovState, config: VoynovConfig):
  return evaluate_rca(generator, state.params, state.eval_rng, config)


def _train_chunk(step: Callable, evaluate: Callable, generator: Generator, state, config):
  """``eval_every`` steps, their mean metrics, then the held-out RCA.

  The steps are a Python loop over one jitted step, not a ``lax.scan``: XLA:CPU
  compiles the weight-gradient convolutions of a while-loop body with layouts it runs
  without its fast convolution kernels (jax-ml/jax#12868), several times slower than
  the same step alone.  Dispatch is asynchronous, so accelerators lose nothing.
  """
  history = []
  for _ in range(config.eval_every):
    state, metrics = step(generator, state, config)
    history.append(metrics)
  metrics = _stack_mean(history)
  metrics["rca"] = evaluate(generator, state, config)
  metrics["step"] = state.step
  return state, metrics


@jax.jit
def _stack_mean(history: list) -> dict:
  return jax.tree.map(lambda *m: jnp.mean(jnp.stack(m), axis=0), *history)


@jax.jit
def _stack(outputs: list):
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *outputs)


_init_jit = jax.jit(init_state, static_argnames=("config",))
_step_jit = jax.jit(_keyed_train_step, static_argnums=(2,))
_eval_jit = jax.jit(_held_out_rca, static_argnums=(2,))
RESTART_BATCHING = ("auto", "vmap", "map")
_RESTART_AXIS = "restart"
_RESTART_STAGES = {"init": init_state, "step": _keyed_train_step, "eval": _held_out_rca}


@functools.lru_cache(maxsize=None)
def _restart_fn(stage: str, batching: str, devices: tuple | None) -> Callable:
  """``stage(generator, x, config)`` over a leading restart axis of ``x``, jitted.

  'vmap': one batched program (fills an accelerator).  'map': the restarts one after
  another; on a compute-bound CPU this is the faster (vmapped convs with per-restart
  kernels become grouped convs, ~2.5x slower there).  On one device 'map' dispatches
  the jitted single-restart stage once per restart (a ``lax.map`` loop body would hit
  the slow loop convolutions of :func:`_train_chunk`); inside ``shard_map`` it is a
  ``lax.map``.  ``devices``: the restart axis is split over them (``shard_map`` on a
  1-D mesh; the generator is replicated) and each device runs its share with
  ``batching``; None: the default device runs them all.
  """
  fn = _RESTART_STAGES[stage]
  if batching == "map" and devices is None:
    one = jax.jit(lambda g, xs, r, c: fn(g, jax.tree.map(lambda x: x[r], xs), c),
                  static_argnums=(3,))

    def each(g, xs, c):
      n = jax.tree.leaves(xs)[0].shape[0]
      return _stack([one(g, xs, r, c) for r in range(n)])

    return each
  if batching == "vmap":
    local = jax.vmap(fn, in_axes=(None, 0, None))
  else:
    local = lambda g, xs, c: jax.lax.map(lambda x: fn(g, x, c), xs)  # noqa: E731
  if devices is None:
    return jax.jit(local, static_argnums=(2,))
  mesh = Mesh(np.array(devices), (_RESTART_AXIS,))
  split = PartitionSpec(_RESTART_AXIS)

  def spread(g, xs, c):
    return jax.shard_map(lambda g_, xs_: local(g_, xs_, c), mesh=mesh,
                         in_specs=(PartitionSpec(), split), out_specs=split,
                         check_vma=False)(g, xs)

  return jax.jit(spread, static_argnums=(2,))


def _restart_devices(devices, n_restarts: int) -> tuple | None:
  """The devices to spread ``n_restarts`` over (None: one device).

  'auto': every device of this process when there are several, the run is single-host
  and they divide the restarts evenly; else one.  A sequence: those devices (one is
  allowed: the restarts run there), which must divide the restarts evenly.
  """
  if devices is None:
    return None
  can_spread = hasattr(jax, "shard_map")  # public from jax 0.7
  if isinstance(devices, str):
    if devices != "auto":
      raise ConfigError(f"devices={devices!r}: expected 'auto', None or a list of devices")
    local = tuple(jax.local_devices())
    if (can_spread and len(local) > 1 and jax.process_count() == 1
        and n_restarts % len(local) == 0):
      return local
    return None
  devices = tuple(devices)
  if not devices:
    raise ConfigError("devices=[]: give at least one device (or None / 'auto')")
  if not can_spread:
    raise ConfigError(f"placing restarts on given devices needs jax.shard_map (jax >= 0.7); "
                      f"this is jax {jax.__version__}")
  if n_restarts % len(devices):
    raise ConfigError(f"{n_restarts} restarts do not split evenly over {len(devices)} "
                      "devices; use a multiple of the device count")
  return devices  # one device too: the restarts then run there, not on the default one


@functools.partial(jax.jit, static_argnames=("deformator", "k"))
def _unit_shifts(deformator, params, k):
  """``A(e_k) - A(0)`` for every k: one program."""
  return (deformator.apply(params, jnp.eye(k, dtype=jnp.float32))
          - deformator.apply(params, jnp.zeros((1, k), jnp.float32)))


def deformator_directions(generator: Generator, params, config: VoynovConfig
                          ) -> tuple[np.ndarray, np.ndarray]:
  """Directions of a trained deformator: ``(unit [K, *latent_shape], norms [K])``.

  For the linear kinds the direction k is column k of A; for "fc" it is the unit
  shift ``A(e_k) - A(0)``.
  """
  deformator, _, _ = _modules(config, generator)
  k = config.num_directions
  shifts = np.asarray(_unit_shifts(deformator, params, k), np.float64)  # [K, D]
  norms = np.linalg.norm(shifts, axis=1)
  unit = shifts / np.maximum(norms, 1e-12)[:, None]
  return unit.reshape((k, *generator.latent_spec.shape)).astype(np.float32), norms


@dataclasses.dataclass
class VoynovResult:
  """One run: the directions, final state, RCA curve and collapse verdict."""

  directions: Directions
  state: VoynovState
  curve: dict  # "step", "rca", "loss", "ce", "shift_l1", "accuracy", "grad_norm": [C]
  rca: float
  collapsed: bool
  warnings: list


@dataclasses.dataclass
class RestartsResult:
  """N vmapped restarts: per-restart directions and RCA, spread, recurrence."""

  directions: list  # [R] Directions
  state: VoynovState  # leaves stacked over restarts
  curves: dict  # name -> [R, C]
  rca: np.ndarray  # [R] final held-out RCA
  collapsed: np.ndarray  # [R] bool
  spread: dict  # mean, std, min, max of final RCA
  recurrence: dict  # see matching.direction_recurrence
  warnings: list


def _check_finite(metrics: dict, step) -> None:
  loss = np.asarray(metrics["loss"])
  if not np.all(np.isfinite(loss)):
    raise TrainingError(
        f"non-finite Voynov loss at step {int(np.max(np.asarray(step)))}: lower "
        "learning_rate or shift_scale, or check the generator's output")


def _make_directions(generator, config, params, rca, collapsed, curve) -> Directions:
  vectors, norms = deformator_directions(generator, params, config)
  return Directions(
      vectors=vectors, method="voynov", model=generator.name,
      space=generator.latent_spec.space,
      scores={"rca": float(rca), "rca_curve": {"step": curve["step"], "rca": curve["rca"]}},
      meta={"config": dataclasses.asdict(config), "collapsed": bool(collapsed),
            "chance": config.chance, "collapse_threshold": config.threshold,
            "norms": norms, "deformator": config.deformator})


def _collapse_warning(config, rca, which="") -> str:
  return (f"Voynov run{which} collapsed: final held-out RCA {rca:.3f} is below "
          f"{config.threshold:.3f} (chance 1/K = {config.chance:.3f}); the directions "
          "carry no information (try more steps, a larger shift_scale, or a different "
          "deformator)")


def run_voynov(generator: Generator, config: VoynovConfig | Any, key: jax.Array, *,
               log_fn: Callable[[dict], None] | None = None) -> VoynovResult:
  """Trains A and R for ``config.steps`` steps; records the held-out RCA curve.

  Args:
    generator: any Generator (frozen: only A and R are updated).
    config: a VoynovConfig or a ConfigDict/dict of its fields.
    key: PRNG key of the run (init, training samples and held-out set).
    log_fn: called with the metrics dict after every ``eval_every`` steps.

  Returns:
    VoynovResult; ``collapsed`` is set (and a warning issued) when the final RCA is
    below ``config.threshold``; ``save_directions`` then refuses unless forced.
  """
  config = VoynovConfig.from_config(config)
  config.validate(generator.latent_spec.size)
  state = _init_jit(generator, key, config=config)
  history = []
  for _ in range(config.steps // config.eval_every):
    state, metrics = _train_chunk(_step_jit, _eval_jit, generator, state, config)
    metrics = jax.device_get(metrics)
    _check_finite(metrics, metrics["step"])
    history.append(metrics)
    if log_fn is not None:
      log_fn(metrics)
  curve = {name: np.asarray([m[name] for m in history]) for name in history[0]}
  rca = float(curve["rca"][-1])
  collapsed = rca < config.threshold
  msgs = []
  if collapsed:
    msgs.append(_collapse_warning(config, rca))
    warnings.warn(msgs[-1], RuntimeWarning, stacklevel=2)
  directions = _make_directions(generator, config, state.params["deformator"], rca,
                                collapsed, curve)
  return VoynovResult(directions, state, curve, rca, bool(collapsed), msgs)


def run_voynov_restarts(generator: Generator, config: VoynovConfig | Any, keys: jax.Array, *,
                        log_fn: Callable[[dict], None] | None = None,
                        batching: str = "auto",
                        devices: Sequence[jax.Device] | str | None = "auto",
                        ) -> RestartsResult:
  """N independent runs over ``keys [R]`` (init + steps), batched by ``batching``.

  ``batching``: 'vmap' (one batched program: accelerators), 'map' (one restart after
  another: CPUs), 'auto' (map on CPU, else vmap).
  ``devices``: 'auto' (default) splits the restarts over all of this process's devices
  when there are several and they divide R (e.g. 8 restarts on a node of 8 GPUs: one
  each); a list of devices splits them over those (R must be a multiple of its
  length); None keeps them on the default device.  Each device runs its share with
  ``batching``.
  Equal (to float tolerance) to ``run_voynov`` called with each key; reports the
  spread of final RCA and which directions recur (Hungarian matching by |cos|).
  """
  config = VoynovConfig.from_config(config)
  config.validate(generator.latent_spec.size)
  if batching not in RESTART_BATCHING:
    raise ConfigError(f"batching={batching!r}: expected one of {RESTART_BATCHING}")
  if batching == "auto":
    batching = "map" if jax.default_backend() == "cpu" else "vmap"
  keys = jnp.asarray(keys)
  spread_over = _restart_devices(devices, keys.shape[0])
  state = _restart_fn("init", batching, spread_over)(generator, keys, config)
  history = []
  step = _restart_fn("step", batching, spread_over)
  evaluate = _restart_fn("eval", batching, spread_over)
  for _ in range(config.steps // config.eval_every):
    state, metrics = _train_chunk(step, evaluate, generator, state, config)
    metrics = jax.device_get(metrics)
    _check_finite(metrics, metrics["step"])
    history.append(metrics)
    if log_fn is not None:
      log_fn(metrics)
  curves = {name: np.stack([m[name] for m in history], axis=1) for name in history[0]}
  rca = curves["rca"][:, -1]
  collapsed = rca < config.threshold
  n = rca.shape[0]
  dirs, msgs = [], []
  for r in range(n):
    params_r = jax.tree.map(lambda x: x[r], state.params["deformator"])
    curve_r = {name: v[r] for name, v in curves.items()}
    dirs.append(_make_directions(generator, config, params_r, rca[r], collapsed[r], curve_r))
    dirs[-1].meta["restart"] = r
    if collapsed[r]:
      msgs.append(_collapse_warning(config, float(rca[r]), f" {r}"))
      warnings.warn(msgs[-1], RuntimeWarning, stacklevel=2)
  spread = {"mean": float(rca.mean()), "std": float(rca.std()), "min": float(rca.min()),
            "max": float(rca.max())}
  recurrence = direction_recurrence(np.stack([d.vectors for d in dirs]),
                                    config.recurrence_threshold)
  for d in dirs:
    d.meta["restarts"] = {"rca": rca, "spread": spread}
  return RestartsResult(dirs, state, curves, rca, collapsed, spread, recurrence, msgs)
