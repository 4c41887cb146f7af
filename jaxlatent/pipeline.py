"""The analysis of a trained generator, end to end: ``run_analysis(config, workdir)``.

What ``analyze.py`` runs.  Read top to bottom, one analysis is:

  1. restore the training run (``workdir/config.json`` + latest checkpoint) and build
     its :class:`~jaxlatent.Generator` in the chosen latent space (z, or StyleGAN's w / w+);
  2. discover directions with the unsupervised methods in ``config.methods``
     (Voynov & Babenko, SeFa, GANSpace) and, on phantoms, score them against the
     known factors (factor alignment; a direction is named by its best factor);
  3. load held-out images (phantom subjects the generator never saw, or a NIfTI folder
     through the data pipeline, with subject / slice metadata) and invert them
     (z: Creswell & Bharath; VAE: encoder + refinement; StyleGAN: W / W+ projector);
  4. ``interfacegan`` in ``config.methods``: fit the supervised HC -> MS boundary on the
     inverted, labelled codes (Güllmar et al.; Shen et al.);
  5. traverse every analysed direction from the inverted codes and eigen-decompose
     each traversal (one jitted vmap over slices x directions); per-subject NIfTI maps;
  6. on brain phantoms, the ground-truth check: correlation of the component-2 map and
     of the subtraction map with the phantom's true HC -> MS difference map;
  7. write ``<out>/index.html`` (PNGs and a GIF beside it) and ``<out>/metrics.json``.

Finished stages are re-used when the same output folder is analysed again
(directions ``.npz/.json``, inverted codes ``inversion/latents.npz``); delete a file
to redo its stage.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlatent.config_cli import over_defaults
from jaxlatent.errors import ConfigError, DataError

UNSUPERVISED = ("voynov", "sefa", "ganspace")
SUPERVISED = ("interfacegan",)
METHODS = UNSUPERVISED + SUPERVISED
SPACES = ("z", "w", "w+")


# ----------------------------------------------------------------------------- config


def default_analysis_config() -> ml_collections.ConfigDict:
  """Every field ``run_analysis`` reads, at neutral defaults (configs/analyze_*.py adjust).

  Fields:
    seed: base PRNG seed of the analysis (discovery, inversion, alignment).
    space: latent space analysed: 'z' (DCGAN, VAE, StyleGAN z) or 'w' / 'w+' (StyleGAN).
    methods: any of voynov, sefa, ganspace (unsupervised) and interfacegan (supervised,
      needs labelled images: ``supervised.label_column``).
    restarts, voynov, ganspace_*, sefa_components: discovery settings (as
      configs/discover_ct.py; ``voynov`` = ``jaxlatent.directions.VoynovConfig`` fields).
    traversal_shifts: columns of the traversal grids (Schön et al.: +-6, +-18).
    alignment: factor alignment on phantoms (regressor size and steps, shifts, naming
      threshold); skipped for real data.
    images: which images are inverted.  source 'heldout': the training phantom
      population re-drawn with ``data.seed + seed_offset`` (subjects never seen in
      training); 'nifti' / 'dicom': ``path`` (glob/folder) through the training run's
      preprocessing, ``labels_csv`` for labels.  max_subjects: first N subjects (0: all).
    inversion: optimizer settings; StyleGAN: the projector (lr warm-up/ramp-down,
      MSE + ssim_weight * MS-SSIM, no noise optimisation so a code alone renders its
      image); VAE: encoder mean + vae_refine_steps; batch_size images per call.
    traversal: the eigen-analysis schedule alpha_start..alpha_stop in alpha_num steps,
      how many directions per method (directions_per_method) and subjects
      (max_subjects, 0: all) are analysed, covariance centring, kept components.
    supervised: InterFaceGAN (label column, negative / positive class, classifier) and
      the alpha unit: one alpha unit = (class-mean separation along the normal) /
      alpha_per_separation.
    ground_truth: brain phantoms only: held-out healthy subjects rendered before and
      after the mean HC -> MS factor change (true difference maps).
    report: sample-grid size, rows of the traversal grids, GIF speed.
  """
  from jaxlatent.directions.voynov import VoynovConfig  # pylint: disable=g-import-not-at-top

  c = ml_collections.ConfigDict()
  c.seed = 0
  c.space = "z"
  c.methods = ("voynov", "sefa", "ganspace")
  c.restarts = 1
  c.voynov = ml_collections.ConfigDict(
      {k: v for k, v in dataclasses.asdict(VoynovConfig()).items() if k != "collapse_threshold"})
  c.voynov.collapse_threshold = ml_collections.FieldReference(None, field_type=float)
  c.ganspace_components = 80
  c.ganspace_samples = 10_000
  c.sefa_components = 32
  c.traversal_shifts = (-18.0, -6.0, 0.0, 6.0, 18.0)

  c.alignment = ml_collections.ConfigDict()
  c.alignment.enabled = True
  c.alignment.regressor_images = 2048
  c.alignment.regressor_steps = 1000
  c.alignment.num_latents = 8
  c.alignment.shifts = (-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0)
  c.alignment.threshold = 0.5

  c.images = ml_collections.ConfigDict()
  c.images.source = "heldout"  # heldout | nifti | dicom
  c.images.path = ""
  c.images.labels_csv = ""
  c.images.seed_offset = 1000
  c.images.num_images = 64
  c.images.max_subjects = 4

  c.inversion = ml_collections.ConfigDict()
  c.inversion.steps = 500
  c.inversion.restarts = 4
  c.inversion.optimizer = "rmsprop"
  c.inversion.learning_rate = 0.01
  c.inversion.prior_weight = -1.0  # < 0: the inverter's default (1e-3 for z, 0 for w)
  c.inversion.ssim_weight = 0.0
  c.inversion.use_mask = False
  c.inversion.w_avg_samples = 10_000
  c.inversion.vae_refine_steps = 100
  c.inversion.batch_size = 64

  c.traversal = ml_collections.ConfigDict()
  c.traversal.alpha_start = 0.0
  c.traversal.alpha_stop = 18.0
  c.traversal.alpha_num = 15
  c.traversal.directions_per_method = 3
  c.traversal.max_subjects = 4
  c.traversal.center = "voxels"
  c.traversal.n_components = 4

  c.supervised = ml_collections.ConfigDict()
  c.supervised.label_column = "group"
  c.supervised.negative = "HC"
  c.supervised.positive = "MS"
  c.supervised.classifier = "svm"
  c.supervised.l2 = 1e-3
  c.supervised.steps = 500
  c.supervised.learning_rate = 0.05
  c.supervised.val_fraction = 0.2
  c.supervised.alpha_per_separation = 25.0

  c.ground_truth = ml_collections.ConfigDict()
  c.ground_truth.enabled = True
  c.ground_truth.num_subjects = 8
  c.ground_truth.seed = 4321
  c.ground_truth.slice_position = 0.5

  c.report = ml_collections.ConfigDict()
  c.report.num_samples = 36
  c.report.grid_directions = 10
  c.report.gif_duration_ms = 120
  return c


def complete_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config`` with every missing field taken from :func:`default_analysis_config`.

  Lets older discovery configs (configs/discover_*.py) drive ``analyze.py`` too.
  """
  return over_defaults(default_analysis_config(), config)


def validate_analysis_config(config: ml_collections.ConfigDict) -> None:
  """Config-only checks (milliseconds); ConfigError naming the key."""
  methods = tuple(config.methods)
  bad = [m for m in methods if m not in METHODS]
  if bad or not methods:
    raise ConfigError(f"config.methods={list(methods)}: unknown or empty; choose from "
                      f"{list(METHODS)}")
  if config.space not in SPACES:
    raise ConfigError(f"config.space={config.space!r}: choose one of {list(SPACES)}")
  if config.images.source not in ("heldout", "nifti", "dicom"):
    raise ConfigError(f"config.images.source={config.images.source!r}: choose 'heldout', "
                      "'nifti' or 'dicom'")
  if config.images.source in ("nifti", "dicom") and not str(config.images.path).strip():
    raise ConfigError("config.images.path is empty: set it to the NIfTI files (or DICOM "
                      f"folder) to invert when config.images.source={config.images.source!r}")
  t = config.traversal
  if int(t.alpha_num) < 3:
    raise ConfigError(f"config.traversal.alpha_num={t.alpha_num}: the eigen-analysis needs "
                      ">= 3 steps")
  if not float(t.alpha_stop) != float(t.alpha_start):
    raise ConfigError("config.traversal.alpha_stop must differ from alpha_start")
  for name in ("steps", "batch_size"):
    if int(config.inversion[name]) < 1:
      raise ConfigError(f"config.inversion.{name}={config.inversion[name]} must be >= 1")
  if float(config.supervised.alpha_per_separation) <= 0:
    raise ConfigError("config.supervised.alpha_per_separation must be > 0")


# ----------------------------------------------------------------------------- helpers


def _log(msg: str) -> None:
  print(f"[analyze {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _safe(name: str) -> str:
  """A file-name-safe version of a direction name ("HC->MS" -> "HC-MS")."""
  return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-") or "d"


def finite_or_none(x) -> float | None:
  """``float(x)``, or None where it is NaN / inf (strict JSON has neither)."""
  x = float(x)
  return x if math.isfinite(x) else None


def build_generator(train_config, trainer, state, space: str):
  """The trained run's Generator in ``space`` (StyleGAN: z, w or w+; others: z)."""
  gen = trainer.generator(state)
  name = train_config.model.name
  if name in ("stylegan2", "stylegan2_simple"):
    if space != "z":
      from jaxlatent.models import model_module  # pylint: disable=g-import-not-at-top
      gen = model_module(name).make_generator(gen.params, train_config, space)
  elif space != "z":
    raise ConfigError(f"config.space={space!r}: the {name} generator has only a z space")
  return gen


@dataclasses.dataclass
class Inverted:
  """Inverted images: codes, reconstructions, per-image error (+ dataset rows)."""

  latents: np.ndarray  # [N, *latent_shape]
  reconstructions: np.ndarray  # [N, H, W, 1]
  errors: np.ndarray  # [N]
  indices: np.ndarray  # [N] dataset rows
  subject_id: np.ndarray  # [N] str
  slice_index: np.ndarray  # [N]

  @property
  def error_mean(self) -> float:
    return float(np.mean(self.errors))

  @property
  def error_std(self) -> float:
    return float(np.std(self.errors))


def make_inverter(gen, train_config, config, key) -> Callable[..., Any]:
  """``(targets [B, H, W, 1], mask=None) -> result`` with ``.latents/.reconstructions/.errors``.

  Chooses the paper's inverter for the model: W/W+ projector (StyleGAN), encoder mean
  + refinement (VAE), Creswell & Bharath z inversion (DCGAN, StyleGAN z).
  """
  from jaxlatent import inversion  # pylint: disable=g-import-not-at-top

  ic = config.inversion
  prior = None if float(ic.prior_weight) < 0 else float(ic.prior_weight)
  if gen.latent_spec.space in ("w", "w+"):
    w_avg, w_std = inversion.w_statistics(gen, jax.random.fold_in(key, 7),
                                          int(ic.w_avg_samples), gen.latent_spec.space)
    return functools.partial(
        inversion.project, gen, key=key, space=gen.latent_spec.space, steps=int(ic.steps),
        learning_rate=float(ic.learning_rate), ssim_weight=float(ic.ssim_weight),
        w_avg=w_avg, w_std=w_std)
  if train_config.model.name == "vae":
    from jaxlatent.models import vae  # pylint: disable=g-import-not-at-top
    encode_fn = jax.jit(functools.partial(vae.encode, gen.params, config=train_config))
    return functools.partial(
        inversion.invert_vae, gen, encode_fn, refine_steps=int(ic.vae_refine_steps), key=key,
        prior_weight=prior, ssim_weight=float(ic.ssim_weight))
  return functools.partial(
      inversion.invert_z, gen, key=key, steps=int(ic.steps), restarts=int(ic.restarts),
      optimizer=str(ic.optimizer), learning_rate=float(ic.learning_rate),
      prior_weight=prior, ssim_weight=float(ic.ssim_weight))


def invert_batched(invert_fn, targets: np.ndarray, masks: np.ndarray | None, batch_size: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Runs ``invert_fn`` on fixed-size chunks (the last padded: one compilation).

  Returns (latents [N, ...], reconstructions [N, H, W, 1], errors [N]).
  """
  n = len(targets)
  bs = min(int(batch_size), n)
  lat, rec, err = [], [], []
  for start in range(0, n, bs):
    idx = np.arange(start, start + bs).clip(max=n - 1)  # pad by repeating the last image
    keep = min(bs, n - start)
    t = jnp.asarray(np.asarray(targets)[idx], jnp.float32)
    m = None if masks is None else jnp.asarray(np.asarray(masks)[idx], bool)
    r = invert_fn(t, mask=m)
    lat.append(np.asarray(r.latents)[:keep])
    rec.append(np.asarray(r.reconstructions)[:keep])
    err.append(np.asarray(r.errors)[:keep])
  return np.concatenate(lat), np.concatenate(rec), np.concatenate(err)


# ----------------------------------------------------------------------------- stages


def analysis_dataset(config, train_config, out_dir: str):
  """The images to invert: held-out phantom subjects or a NIfTI / DICOM folder (SliceDataset)."""
  from jaxlatent.data import load_dataset  # pylint: disable=g-import-not-at-top

  ic = config.images
  data = ml_collections.ConfigDict(train_config.data.to_dict())
  if ic.source == "heldout":
    if data.source in ("nifti", "dicom"):
      raise ConfigError("config.images.source='heldout' re-draws phantom subjects, but the "
                        f"generator was trained on {data.source} data: set config.images."
                        f"source={data.source!r} and config.images.path to held-out scans")
    data.seed = int(data.seed) + int(ic.seed_offset)
    data.num_images = int(ic.num_images)
  else:
    data.source = str(ic.source)
    data.path = str(ic.path)
    data.labels_csv = str(ic.labels_csv)
  data.label_column = ""
  data.cache_dir = ""
  return load_dataset(data, int(train_config.image_size), os.path.join(out_dir, "cache"))


def select_subjects(dataset, max_subjects: int, candidates=None) -> np.ndarray:
  """Rows of the first ``max_subjects`` subjects (0: all) among ``candidates`` rows."""
  rows = np.arange(len(dataset)) if candidates is None else np.asarray(candidates)
  sids = np.asarray(dataset.subject_id).astype(str)[rows]
  order = list(dict.fromkeys(sids.tolist()))
  if max_subjects and max_subjects > 0:
    order = order[:int(max_subjects)]
  return rows[np.isin(sids, order)]


def discover_or_load(gen, config, method: str, key, out_dir: str):
  """Directions of ``method`` (re-used from ``out_dir`` when saved there before)."""
  from jaxlatent import directions as dl  # pylint: disable=g-import-not-at-top

  stem = os.path.join(out_dir, f"{method}_directions")
  if os.path.exists(stem + ".npz") and os.path.exists(stem + ".json"):
    d = dl.load_directions(stem)
    if tuple(d.latent_shape) == tuple(gen.latent_spec.shape) and d.space == gen.latent_spec.space:
      _log(f"{method}: re-using {stem}.npz")
      return d
  _log(f"{method}: discovering directions on {gen.name}")
  if method == "ganspace" and gen.latent_spec.space == "z":
    # PCA of isotropic z is meaningless: use early features, here the generated images
    # pooled to 8x8 (GANSpace's activation PCA mapped back to z by least squares).
    d = dl.ganspace(gen, key, int(config.ganspace_components) or None,
                    num_samples=int(config.ganspace_samples), features_fn=_pooled_images(gen),
                    batch_size=min(1000, int(config.ganspace_samples)))
  else:
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.methods = (method,)
    log_fn = (lambda m: _log(f"voynov step {int(m['step'])}: rca {float(m['rca']):.3f} "
                             f"loss {float(m['loss']):.3f}")) if method == "voynov" else None
    d = dl.discover(gen, sub, key, log_fn=log_fn)[method]["directions"]
  dl.save_directions(stem, d, force=True)  # a collapsed run is saved but flagged
  return d


def _pooled_images(gen):
  h, w, _ = gen.image_shape
  f = max(1, h // 8)

  def features(z):
    images = gen(z)  # [B, H, W, 1]
    b = images.shape[0]
    return images.reshape(b, h // f, f, w // f, f).mean((2, 4)).reshape(b, -1)

  return jax.jit(features)


def align_or_load(gen, directions, config, train_config, key, out_dir: str, reg_key=None):
  """Factor alignment on phantoms (cached in the directions' meta); names by best factor.

  The factor regressor (trained on ``regressor_images`` phantoms of the training kind,
  drawn with ``reg_key``) is shared by every method of a run.
  """
  from jaxlatent import directions as dl  # pylint: disable=g-import-not-at-top

  if "alignment_rows" in directions.meta or directions.collapsed:
    return directions
  source = train_config.data.source
  if not config.alignment.enabled or not source.startswith("phantom_"):
    return directions
  kind = source.split("_", 1)[1]
  ac = config.alignment
  reg = _regressor(kind, int(train_config.image_size), ac, key if reg_key is None else reg_key)
  res = dl.factor_alignment(gen, directions, reg, tuple(ac.shifts), jax.random.fold_in(key, 1),
                            num_latents=int(ac.num_latents), threshold=float(ac.threshold))
  named = res.apply_to(directions)
  named.meta = dict(named.meta, alignment_rows=res.rows(), alignment_summary=res.summary,
                    regressor_val_r2=dict(zip(reg.factor_names,
                                              np.asarray(reg.val_r2).tolist())))
  dl.save_directions(os.path.join(out_dir, f"{directions.method}_directions"), named, force=True)
  return named


@functools.lru_cache(maxsize=4)
def _regressor_cached(kind, size, images, steps, seed):
  from jaxlatent import directions as dl  # pylint: disable=g-import-not-at-top
  _log(f"training a {kind} factor regressor ({images} phantoms, {steps} steps)")
  return dl.train_phantom_regressor(kind, jax.random.PRNGKey(seed), size=size,
                                    num_images=images, steps=steps)


def _regressor(kind, size, ac, key):
  seed = int(jax.random.randint(key, (), 0, 2**30))
  return _regressor_cached(kind, size, int(ac.regressor_images), int(ac.regressor_steps), seed)


def invert_or_load(gen, train_config, config, dataset, rows, key, out_dir: str) -> Inverted:
  """Inverts dataset ``rows`` (re-using ``out_dir/latents.npz`` for the same rows/model)."""
  path = os.path.join(out_dir, "latents.npz")
  if os.path.exists(path):
    with np.load(path, allow_pickle=False) as f:
      if (f["indices"].shape == rows.shape and np.array_equal(f["indices"], rows)
          and tuple(f["latents"].shape[1:]) == tuple(gen.latent_spec.shape)):
        _log(f"inversion: re-using {path}")
        return Inverted(f["latents"], f["reconstructions"], f["errors"], f["indices"],
                        f["subject_id"].astype(str), f["slice_index"])
  _log(f"inverting {len(rows)} slices into {gen.latent_spec.space} of {gen.name}")
  invert_fn = make_inverter(gen, train_config, config, key)
  targets = np.asarray(dataset.images[rows], np.float32)
  masks = np.asarray(dataset.masks[rows], bool) if config.inversion.use_mask else None
  lat, rec, err = invert_batched(invert_fn, targets, masks, int(config.inversion.batch_size))
  inv = Inverted(lat, rec, err, rows.astype(np.int64),
                 np.asarray(dataset.subject_id)[rows].astype(str),
                 np.asarray(dataset.slice_index)[rows].astype(np.int64))
  os.makedirs(out_dir, exist_ok=True)
  np.savez(path, latents=inv.latents, reconstructions=inv.reconstructions, errors=inv.errors,
           indices=inv.indices, subject_id=inv.subject_id.astype("U"),
           slice_index=inv.slice_index)
  return inv


def fit_supervised(gen, config, dataset, inv: Inverted, key, out_dir: str):
  """InterFaceGAN HC -> MS boundary on the inverted, labelled codes; the alpha unit."""
  from jaxlatent import directions as dl  # pylint: disable=g-import-not-at-top

  sc = config.supervised
  col = str(sc.label_column)
  if col not in dataset.labels:
    raise DataError(f"config.supervised.label_column={col!r} is not a label of the inverted "
                    f"images (labels: {sorted(dataset.labels)}); give labelled images "
                    "(config.images.labels_csv for NIfTI)")
  values = np.asarray(dataset.labels[col])[inv.indices].astype(str)
  y = np.where(values == str(sc.positive), 1, np.where(values == str(sc.negative), 0, -1))
  keep = y >= 0
  boundary = dl.fit_boundary(inv.latents[keep], y[keep], key, method=str(sc.classifier),
                             l2=float(sc.l2), steps=int(sc.steps),
                             learning_rate=float(sc.learning_rate),
                             val_fraction=float(sc.val_fraction))
  name = f"{sc.negative}->{sc.positive}"
  d = boundary.to_directions(model=gen.name, space=gen.latent_spec.space, name=name)
  dec = boundary.decision(inv.latents)
  separation = float(dec[y == 1].mean() - dec[y == 0].mean())
  unit = abs(separation) / float(sc.alpha_per_separation)
  if not unit > 0:
    unit = 1.0 / float(sc.alpha_per_separation)
  d.meta.update(alpha_unit=unit, class_separation=separation,
                num_labelled={str(sc.negative): int((y == 0).sum()),
                              str(sc.positive): int((y == 1).sum())})
  dl.save_directions(os.path.join(out_dir, "interfacegan_directions"), d, force=True)
  return d, y


def eigen_for(gen, vectors: np.ndarray, latents: np.ndarray, masks: np.ndarray,
              alphas: np.ndarray, config):
  """Traversal + eigen-analysis of ``vectors [K, ...]`` from ``latents [N, ...]``: [N, K]."""
  from jaxlatent.analysis import traverse_and_analyze  # pylint: disable=g-import-not-at-top

  t = config.traversal
  return jax.device_get(traverse_and_analyze(
      gen, jnp.asarray(latents, jnp.float32), jnp.asarray(vectors, jnp.float32),
      jnp.asarray(masks, jnp.float32), jnp.asarray(alphas, jnp.float32),
      batch_size=256, center=str(t.center),
      n_components=min(int(t.n_components), len(alphas))))


# ----------------------------------------------------------------------------- figures


def upscale(images, min_size: int = 96) -> np.ndarray:
  """``[N, H, W, C]`` repeated to at least ``min_size`` px (pixel-exact, for small models)."""
  images = np.asarray(images, np.float32)
  s = max(1, min_size // images.shape[1])
  return images.repeat(s, axis=1).repeat(s, axis=2) if s > 1 else images


def _save_grid(path: str, images, nrow: int) -> str:
  from jaxlatent.viz.grids import save_image_grid  # pylint: disable=g-import-not-at-top
  save_image_grid(upscale(images), path, nrow=nrow)
  return path


def inversion_figure(path: str, targets, recs, n: int = 8) -> str:
  """Rows: target / reconstruction / |error| (error 0 -> black, 2 -> white)."""
  n = min(n, len(targets))
  t, r = np.asarray(targets[:n]), np.asarray(recs[:n])
  err = np.abs(r - t) - 1.0
  return _save_grid(path, np.concatenate([t, r, err]), nrow=n)


# ----------------------------------------------------------------------------- main


def run_analysis(config: ml_collections.ConfigDict, workdir: str,
                 out_dir: str | None = None) -> str:
  """Runs the analysis of the training run in ``workdir``; returns the report's path.

  Args:
    config: an analysis config (configs/analyze_*.py); missing fields take
      :func:`default_analysis_config` values.
    workdir: a ``train.py`` workdir (config.json + checkpoints/).
    out_dir: report folder (default ``<workdir>/report``).

  Raises:
    ConfigError, DataError: bad config or images (before heavy compute where possible).
    CheckpointError: ``workdir`` is no training workdir or has no readable checkpoint.
  """
  # pylint: disable=g-import-not-at-top
  from jaxlatent.training.checkpoint import load_trained
  from jaxlatent.viz import plots
  from jaxlatent.viz.report import Section, write_report
  from jaxlatent.directions import report as dreport
  # pylint: enable=g-import-not-at-top

  t_start, cpu_start = time.time(), time.process_time()
  config = complete_config(config)
  validate_analysis_config(config)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  out = os.path.abspath(out_dir or os.path.join(workdir, "report"))
  os.makedirs(out, exist_ok=True)
  dir_out = os.path.join(out, "directions")
  train_config, trainer, state = load_trained(workdir)
  step = int(np.asarray(getattr(state, "step", -1)))
  gen = build_generator(train_config, trainer, state, str(config.space))
  key = jax.random.PRNGKey(int(config.seed))
  methods = tuple(config.methods)
  metrics: dict[str, Any] = {"workdir": workdir, "checkpoint_step": step, "model": gen.name,
                             "space": gen.latent_spec.space, "methods": list(methods)}
  sections = []
  _log(f"analysing {gen.name} ({train_config.model.name}, step {step}) from {workdir}")

  # 1. Samples.
  samples = gen(gen.sample_latents(jax.random.fold_in(key, 0), int(config.report.num_samples)))
  _save_grid(os.path.join(out, "samples.png"), samples,
             int(math.ceil(math.sqrt(int(config.report.num_samples)))))
  sections.append(Section(
      "Generator", [f"{gen.name} trained for {step} steps on {train_config.data.source} "
                    f"({train_config.image_size} px); latent {gen.latent_spec.space} of shape "
                    f"{tuple(gen.latent_spec.shape)}. Workdir: {workdir}."],
      figures=[("samples.png", "random samples")]))

  # 2. Unsupervised directions (+ factor alignment on phantoms).
  dir_sets: dict[str, Any] = {}
  dsec = Section("Directions", [
      "Traversal grids: rows = directions (named by their best ground-truth factor when the "
      "factor alignment score is high), columns = shifts along the unit direction."])
  shifts = tuple(float(s) for s in config.traversal_shifts)
  z0 = gen.sample_latents(jax.random.fold_in(key, 99), 1)[0]
  for method in (m for m in methods if m in UNSUPERVISED):
    mkey = jax.random.fold_in(key, 10 + METHODS.index(method))
    d = discover_or_load(gen, config, method, mkey, dir_out)
    d = align_or_load(gen, d, config, train_config, jax.random.fold_in(mkey, 5), dir_out,
                      reg_key=jax.random.fold_in(key, 6))
    dir_sets[method] = d
    rows = dreport.summary_rows(d)
    for r, a in zip(rows, d.meta.get("alignment_rows", [])):
      r.update({k: v for k, v in a.items() if k not in ("direction", "name")})
    dreport.write_table(os.path.join(dir_out, f"{method}_summary"), rows)
    k_grid = min(d.num_directions, int(config.report.grid_directions))
    grid = dreport.traversal_grid(gen, d.vectors[:k_grid], z0, shifts)
    dreport.save_traversal_grid(os.path.join(out, f"traversal_{method}.png"), grid,
                                d.names[:k_grid], [f"{s:+g}" for s in shifts],
                                title=f"{method} on {gen.name}")
    dsec.figures.append((f"traversal_{method}.png",
                         f"{method}: first {k_grid} of {d.num_directions} directions"))
    m = {"num_directions": d.num_directions}
    if method == "voynov":
      curve = d.scores.get("rca_curve")
      m.update(rca=finite_or_none(d.scores.get("rca", float("nan"))), collapsed=d.collapsed,
               chance=1.0 / d.num_directions)
      if curve:
        dreport.save_rca_curve(os.path.join(out, "rca_curve"),
                               {"step": np.asarray(curve["step"]),
                                "rca": np.asarray(curve["rca"])}, 1.0 / d.num_directions)
        dsec.figures.append(("rca_curve.png", "Voynov: held-out reconstructor classification "
                             "accuracy (RCA) over training; dashed: chance 1/K"))
      dsec.paragraphs.append(
          f"Voynov: final RCA {m['rca']:.3f} (chance {m['chance']:.3f})"
          + (" — COLLAPSED: the directions carry no information and are not analysed "
             "further." if d.collapsed else "."))
    if "alignment_summary" in d.meta:
      s = d.meta["alignment_summary"]
      m["alignment"] = {k: finite_or_none(v) for k, v in s.items() if isinstance(v, (int, float))}
      dsec.tables.append((f"{method}: factor alignment (DCI disentanglement "
                          f"{s['dci_disentanglement']:.3f}, completeness "
                          f"{s['dci_completeness']:.3f}, MIG gap {s['mig_gap']:.3f})",
                          [{k: v for k, v in r.items() if not k.startswith("slope[")}
                           for r in d.meta["alignment_rows"][:k_grid]]))
    dsec.tables.append((f"{method}: direction summary (first {k_grid}; all in "
                        f"directions/{method}_summary.csv)", _short_rows(rows[:k_grid])))
    metrics[method] = m
  if dir_sets:
    sections.append(dsec)

  # 3. Inversion of held-out images.
  dataset = analysis_dataset(config, train_config, out)
  rows = select_subjects(dataset, int(config.images.max_subjects))
  if rows.size == 0:
    raise DataError("no images to invert (config.images selects none)")
  inv = invert_or_load(gen, train_config, config, dataset, rows, jax.random.fold_in(key, 2),
                       os.path.join(out, "inversion"))
  targets = np.asarray(dataset.images[inv.indices], np.float32)
  masks_all = np.asarray(dataset.masks[inv.indices], bool)
  inversion_figure(os.path.join(out, "inversion.png"), targets, inv.reconstructions)
  metrics["inversion"] = {"num_images": int(len(inv.errors)), "error_mean": inv.error_mean,
                          "error_std": inv.error_std,
                          "subjects": sorted(set(inv.subject_id.tolist()))}
  source = (f"phantom subjects re-drawn with seed offset {config.images.seed_offset}"
            if config.images.source == "heldout" else str(config.images.path))
  per_subject = [{"subject": s, "slices": int((inv.subject_id == s).sum()),
                  "mse mean": float(inv.errors[inv.subject_id == s].mean())}
                 for s in dict.fromkeys(inv.subject_id.tolist())]
  sections.append(Section(
      "Inversion of held-out images",
      [f"{len(inv.errors)} slices of {len(per_subject)} subjects "
       f"({source}) "
       f"inverted into {gen.latent_spec.space}. Reconstruction MSE mean ± std over images "
       f"(Creswell & Bharath's coverage measure): {inv.error_mean:.4f} ± {inv.error_std:.4f}."],
      tables=[("per subject", per_subject)],
      figures=[("inversion.png", "rows: target / reconstruction / |error|")]))

  # 4. Supervised direction.
  labels_y = None
  if "interfacegan" in methods:
    d, labels_y = fit_supervised(gen, config, dataset, inv, jax.random.fold_in(key, 3), dir_out)
    dir_sets["interfacegan"] = d
    sc = config.supervised
    from jaxlatent.analysis import traverse  # pylint: disable=g-import-not-at-top
    hc = np.flatnonzero(labels_y == 0)[:4]
    grid_alphas = np.linspace(float(config.traversal.alpha_start),
                              float(config.traversal.alpha_stop), 6).astype(np.float32)
    grid = np.asarray(traverse(gen, jnp.asarray(inv.latents[hc]),
                               jnp.asarray(d.vectors[0] * d.meta["alpha_unit"]),
                               jnp.asarray(grid_alphas)))  # [rows, 6, H, W, 1]
    dreport.save_traversal_grid(
        os.path.join(out, "traversal_interfacegan.png"), grid,
        [f"{inv.subject_id[i]} #{inv.slice_index[i]}" for i in hc],
        [f"α={a:g}" for a in grid_alphas], title=f"{d.names[0]} from inverted healthy codes")
    metrics["interfacegan"] = {
        "train_accuracy": finite_or_none(d.scores["train_accuracy"]),
        "val_accuracy": finite_or_none(d.scores["val_accuracy"]),
        "val_balanced_accuracy": finite_or_none(d.scores["val_balanced_accuracy"]),
        "alpha_unit": d.meta["alpha_unit"], "class_separation": d.meta["class_separation"],
        "num_labelled": d.meta["num_labelled"]}
    sections.append(Section(
        f"Supervised direction {sc.negative} -> {sc.positive} (InterFaceGAN)",
        [f"Linear {sc.classifier} on {sum(d.meta['num_labelled'].values())} inverted, labelled "
         f"codes ({d.meta['num_labelled']}): train accuracy {d.scores['train_accuracy']:.3f}, "
         f"held-out accuracy {d.scores['val_accuracy']:.3f} (balanced "
         f"{d.scores['val_balanced_accuracy']:.3f}). The unit normal is the direction.",
         f"Alpha units: class-mean separation along the normal = "
         f"{d.meta['class_separation']:.4g} latent units; one alpha unit = separation / "
         f"{float(sc.alpha_per_separation):g} = {d.meta['alpha_unit']:.4g} latent units "
         f"(alpha {float(sc.alpha_per_separation):g} moves a healthy code by the mean "
         f"{sc.negative} -> {sc.positive} distance)."],
        figures=[("traversal_interfacegan.png", "rows: inverted healthy slices, columns: "
                  "alpha along the HC -> MS direction")]))

  # 5. Traversal eigen-analysis.
  alphas = np.linspace(float(config.traversal.alpha_start), float(config.traversal.alpha_stop),
                       int(config.traversal.alpha_num)).astype(np.float32)
  cand = np.arange(len(inv.indices))
  if labels_y is not None:
    cand = cand[labels_y == 0]  # traverse healthy subjects (Güllmar)
  sel_subjects = list(dict.fromkeys(inv.subject_id[cand].tolist()))
  if int(config.traversal.max_subjects) > 0:
    sel_subjects = sel_subjects[:int(config.traversal.max_subjects)]
  sel = cand[np.isin(inv.subject_id[cand], sel_subjects)]
  esec = Section("Traversal eigen-analysis", [
      f"From each inverted code ({len(sel)} slices of {len(sel_subjects)} subjects"
      f"{', healthy controls' if labels_y is not None else ''}) every direction is traversed "
      f"with alpha = {alphas[0]:g} .. {alphas[-1]:g} in {len(alphas)} steps; the foreground "
      "voxels of the steps form M (voxels x steps), whose steps x steps covariance is "
      "eigen-decomposed. Component c's map is M v_c. Alpha sequences: top the images, "
      "bottom the subtraction from alpha_0 (blue = decrease, red = increase)."])
  eig_rows, metrics["eigen"] = [], {}
  nifti_dir = os.path.join(out, "nifti")
  gif_done = False
  for method, d in dir_sets.items():
    if d.collapsed or sel.size == 0:
      continue
    k = 1 if method in SUPERVISED else min(d.num_directions,
                                           int(config.traversal.directions_per_method))
    scale = float(d.meta.get("alpha_unit", 1.0)) if method in SUPERVISED else 1.0
    vecs = d.vectors[:k] * scale
    res = eigen_for(gen, vecs, inv.latents[sel], masks_all[sel], alphas, config)
    for j in range(k):
      name = d.names[j]
      corr2 = np.abs(np.asarray(res.corr_alpha)[:, j, 1])
      ratio = np.asarray(res.explained_variance_ratio)[:, j]
      row = {"method": method, "direction": name, "|corr(v2, alpha)| mean": float(corr2.mean()),
             "min": float(corr2.min()), "explained c1": float(ratio[:, 0].mean()),
             "explained c2": float(ratio[:, 1].mean())}
      eig_rows.append(row)
      metrics["eigen"][f"{method}/{name}"] = {
          "abs_corr_v2_alpha_mean": float(corr2.mean()),
          "abs_corr_v2_alpha_min": float(corr2.min()),
          "explained_c1": float(ratio[:, 0].mean()), "explained_c2": float(ratio[:, 1].mean())}
      tag = _safe(f"{method}-{name}")
      for sid in sel_subjects:
        pos = np.flatnonzero(inv.subject_id[sel] == sid)
        pos = pos[np.argsort(inv.slice_index[sel][pos], kind="stable")]
        from jaxlatent.analysis import write_subject_maps  # pylint: disable=g-import-not-at-top
        write_subject_maps(nifti_dir, _safe(sid), dataset.subjects.get(sid, {}),
                           inv.slice_index[sel][pos],
                           np.asarray(res.component_maps)[pos, j],
                           subtraction_maps=np.asarray(res.subtraction_maps)[pos, j], tag=tag)
    # Figures for the method's first direction, one representative slice.
    r0 = len(sel) // 2 if labels_y is None else 0
    i0 = sel[r0]
    from jaxlatent.analysis import traverse  # pylint: disable=g-import-not-at-top
    frames = np.asarray(traverse(gen, jnp.asarray(inv.latents[i0:i0 + 1]),
                                 jnp.asarray(vecs[0]), jnp.asarray(alphas)))[0]
    mask0 = masks_all[i0]
    tag = _safe(f"{method}-{d.names[0]}")
    plots.plot_change_sequence(frames, alphas, os.path.join(out, f"sequence_{tag}.png"),
                               mask=mask0)
    plots.plot_eigenvectors(alphas, np.asarray(res.eigenvectors)[:, 0],
                            os.path.join(out, f"eigenvectors_{tag}.png"),
                            explained=np.asarray(res.explained_variance_ratio)[:, 0].mean(0),
                            title=f"Eigenvectors v_c vs alpha: {method} {d.names[0]}")
    comps = np.asarray(res.component_maps)[r0, 0][..., 0]  # [K, H, W]
    sub_last = np.asarray(res.subtraction_maps)[r0, 0, -1][..., 0]
    maps = np.concatenate([comps[:3], sub_last[None]])
    titles = [f"component {c + 1}" for c in range(min(3, len(comps)))] + [
        f"subtraction α={alphas[-1]:g} − α₀"]
    plots.plot_component_maps(frames[0], maps, os.path.join(out, f"components_{tag}.png"),
                              titles=titles, mask=mask0)
    esec.figures += [
        (f"sequence_{tag}.png", f"{method} {d.names[0]}: alpha sequence of subject "
         f"{inv.subject_id[i0]} slice {inv.slice_index[i0]} with subtraction overlays "
         "(blue = decrease, red = increase)"),
        (f"eigenvectors_{tag}.png", f"{method} {d.names[0]}: eigenvectors v_c vs alpha "
         "(thin: each slice, thick: mean)"),
        (f"components_{tag}.png", f"{method} {d.names[0]}: component maps over the anatomy "
         "(alpha_0 image), next to the last subtraction map")]
    if not gif_done:
      plots.save_gif(frames, os.path.join(out, "traversal.gif"),
                     duration_ms=int(config.report.gif_duration_ms))
      esec.figures.insert(0, ("traversal.gif", f"animated traversal: {method} {d.names[0]}"))
      gif_done = True
  if eig_rows:
    esec.tables.insert(0, ("|corr(v_2, alpha)| over slices and explained variance of "
                           "components 1 and 2", eig_rows))
    esec.paragraphs.append(f"Per-subject NIfTI maps (component and subtraction volumes, "
                           f"[H, W, slices, K]) in nifti/ ({len(os.listdir(nifti_dir))} files).")
    sections.append(esec)

  # 6. Ground truth on brain phantoms.
  if ("interfacegan" in dir_sets and config.ground_truth.enabled
      and train_config.data.source == "phantom_brain"):
    sections.append(_ground_truth(gen, train_config, config, dir_sets["interfacegan"], alphas,
                                  jax.random.fold_in(key, 4), out, metrics, plots))

  # 7. Summary, metrics.json, index.html.
  summary = []
  for method, d in dir_sets.items():
    summary += [{"method": method, "index": i, "name": d.names[i],
                 **({"rca": finite_or_none(d.scores.get("rca", float("nan")))} if method == "voynov"
                    else {}),
                 **({"alignment": float(d.meta["alignment_rows"][i]["alignment"])}
                    if "alignment_rows" in d.meta else {})}
                for i in range(min(d.num_directions, int(config.report.grid_directions)))]
  files = sorted(os.path.relpath(os.path.join(dp, f), out) for dp, _, fs in os.walk(dir_out)
                 for f in fs)
  sections.append(Section("Direction summary", [
      "Saved directions (.npz vectors + .json metadata, load with "
      "jaxlatent.directions.load_directions): " + ", ".join(
          f for f in files if f.endswith(".npz"))], tables=[("", summary)]))
  metrics["seconds"] = {"wall": time.time() - t_start, "cpu": time.process_time() - cpu_start}
  with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump(json_clean(metrics), f, indent=2)
  path = write_report(out, f"jaxlatent analysis: {gen.name}", sections,
                      meta={"workdir": workdir, "step": step, "methods": ", ".join(methods)})
  _log(f"report: {path}")
  return path


def _short_rows(rows):
  return [{k: v for k, v in r.items() if not k.startswith("slope[") and k not in ("model",)}
          for r in rows]


def json_clean(x):
  """NaN/inf -> None, NumPy scalars and arrays -> Python values (strict JSON)."""
  if isinstance(x, dict):
    return {str(k): json_clean(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [json_clean(v) for v in x]
  if isinstance(x, np.ndarray):
    return json_clean(x.tolist())
  if isinstance(x, (bool, np.bool_)):
    return bool(x)
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (float, np.floating)):
    return finite_or_none(x)
  return x


def _ground_truth(gen, train_config, config, direction, alphas, key, out, metrics, plots):
  """Component-2 and subtraction maps vs the phantom's true HC -> MS difference map."""
  # pylint: disable=g-import-not-at-top
  from jaxlatent.analysis.attribute_edit import phantom_edit_subjects, score_edits
  from jaxlatent.viz.report import Section  # pylint: disable=g-import-not-at-top

  gc = config.ground_truth
  _log(f"ground truth: {gc.num_subjects} held-out healthy brain phantoms, HC vs MS version")
  subj = phantom_edit_subjects("brain", int(gc.num_subjects), int(train_config.image_size),
                               int(gc.seed), slice_position=float(gc.slice_position))
  path = os.path.join(out, "inversion", "ground_truth_latents.npz")
  lat = None
  if os.path.exists(path):
    with np.load(path) as f:
      if f["latents"].shape[0] == len(subj.images):
        lat = f["latents"]
  if lat is None:
    invert_fn = make_inverter(gen, train_config, config, key)
    lat, _, _ = invert_batched(invert_fn, subj.images, None, int(config.inversion.batch_size))
    np.savez(path, latents=lat)
  unit = float(direction.meta.get("alpha_unit", 1.0))
  scores = score_edits(gen, jnp.asarray(lat), jnp.asarray(direction.vectors[0] * unit),
                       jnp.asarray(alphas), jnp.asarray(subj.true_difference),
                       jnp.asarray(subj.masks))
  s = scores.summary()
  metrics["ground_truth"] = {
      "num_subjects": int(len(subj.images)),
      "component2_corr_mean": s["component2_corr_mean"],
      "component2_corr_std": s["component2_corr_std"],
      "subtraction_corr_mean": s["edit_corr_mean"], "subtraction_corr_std": s["edit_corr_std"],
      "change": {k: float(np.mean(subj.changed[k] - subj.factors[k]))
                 for k in ("ventricle_size", "atrophy", "lesion_load")}}
  # Figure: subject 0's true difference, component 2 and subtraction.
  from jaxlatent.analysis import eigen_analysis  # pylint: disable=g-import-not-at-top
  im = jnp.asarray(scores.images[0])
  res = jax.device_get(eigen_analysis(im, jnp.asarray(subj.masks[0], jnp.float32),
                                      jnp.asarray(alphas), n_components=2))
  maps = np.stack([subj.true_difference[0], np.asarray(res.component_maps)[1][..., 0],
                   np.asarray(res.subtraction_maps)[-1][..., 0]])
  plots.plot_component_maps(scores.images[0, 0], maps, os.path.join(out, "ground_truth.png"),
                            titles=["true HC→MS difference", "component 2",
                                    f"subtraction α={alphas[-1]:g} − α₀"], mask=subj.masks[0])
  rows = [{"map": "component 2 (eigen-analysis)",
           "corr with true difference": f"{s['component2_corr_mean']:.3f} ± "
                                        f"{s['component2_corr_std']:.3f}"},
          {"map": f"subtraction (alpha {alphas[-1]:g} - alpha 0)",
           "corr with true difference": f"{s['edit_corr_mean']:.3f} ± {s['edit_corr_std']:.3f}"}]
  return Section("Ground truth on brain phantoms", [
      f"{len(subj.images)} held-out healthy phantom subjects (seed {gc.seed}, slice position "
      f"{gc.slice_position}) are rendered as they are and with the population's mean HC -> MS "
      "factor change (ventricles, atrophy, lesions; same anatomy, noise-free); the difference "
      "is the true disease map. Each subject is inverted, traversed along the HC -> MS "
      "direction and eigen-analysed; Pearson correlation over the foreground, mean ± std "
      "over subjects."], tables=[("", rows)],
      figures=[("ground_truth.png", "subject 0: true difference, component-2 map, "
                "subtraction map")])
