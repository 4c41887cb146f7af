"""One table of attribute edits by different generative models on the same phantom subjects.

``run_edit_comparison(config, out_dir)`` (``analyze.py`` with ``config.task ==
'compare_edits'``, configs/compare_edits*.py) scores every configured model's edit of
the SAME held-out phantom subjects against the phantom's true factor change:

  * brain, HC -> MS (the population's mean factor change, see
    :data:`jaxlatent.analysis.attribute_edit.BRAIN_HC_TO_MS`):
      - IFcVAE-GAN / SS-DAAE: encode, y from the HC class to the MS class, decode;
      - StyleGAN: project into W (or W+), walk the InterFaceGAN HC -> MS direction
        that ``analyze.py --config=configs/analyze_ms.py`` saved, alpha 0..alpha_stop
        in the file's alpha units;
  * thorax, male -> ``factor`` set to ``factor_value`` (default breast_size 0.9):
      - IFcVAE-GAN: encode, y from small to large breast (label ``large_breast``), decode;
      - DCGAN: invert into z, walk the discovered direction (Voynov / SeFa / GANSpace
        file of ``analyze.py --config=configs/analyze_ct.py``) best aligned with
        ``factor``, oriented by its alignment slope so that the factor grows,
        alpha 0..alpha_stop.

Every path has ``steps`` images and is scored by
:func:`jaxlatent.analysis.attribute_edit.score_edits`: correlation of the edit's
difference map ``x_T - x_0`` with the true difference map, of the traversal
eigen-analysis' component-2 map with it (the schedule is y = 0..1 for attribute
models, alpha for directions), and the mean |edit|.  Subjects are drawn once per
phantom kind (``subjects.seed``) and rendered at each model's image size (same seed,
same subjects).  Outputs in ``out_dir``: ``edit_comparison.md`` (THE table, also
printed), ``edit_comparison.json`` (per-subject scores) and
``edit_comparison_<kind>.png`` (per model: original, reconstruction, edited,
edit difference, true difference of one subject).  No other file is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlatent import phantoms
from jaxlatent.analysis.attribute_edit import (BRAIN_HC_TO_MS, phantom_edit_subjects,
                                               score_edits, score_encoder_edits)
from jaxlatent.config_cli import over_defaults
from jaxlatent.directions import load_directions
from jaxlatent.errors import ConfigError, DataError, JaxlatentError
from jaxlatent.pipeline import (build_generator, default_analysis_config, finite_or_none,
                                invert_batched, json_clean, make_inverter)
from jaxlatent.training.checkpoint import CHECKPOINT_DIR, load_run_config, load_trained

KINDS = ("brain", "thorax")
# Config fields naming train workdirs, per kind: field -> (accepted model.name, role).
MODEL_FIELDS = {
    "brain": {"ifcvae_gan": ("ifcvae_gan", "encoder"), "ssdaae": ("ssdaae", "encoder"),
              "stylegan": ("stylegan2", "inverted")},
    "thorax": {"ifcvae_gan": ("ifcvae_gan", "encoder"), "dcgan": ("dcgan", "inverted")},
}
# Direction-file fields of the inverted models and analyze.py's default file under the
# model's workdir (run_analysis writes <workdir>/report/directions/<method>_directions).
DIRECTION_FIELDS = {("brain", "stylegan"): ("stylegan_directions", "interfacegan"),
                    ("thorax", "dcgan"): ("dcgan_directions", "voynov")}
# Attribute-model labels an edit can use: (kind, data.label_column) -> (class id of the
# subjects' class, class id to edit towards, description).  Class ids as the data
# pipeline assigns them (SliceDataset.label_ids): string labels -> index in the sorted
# class names (HC 0 / MS 1; F 0 / M 1), boolean labels -> their value (large_breast 1).
EDIT_LABELS = {
    ("brain", "group"): (0, 1, "group HC (0) -> MS (1)"),
    ("thorax", "large_breast"): (0, 1, "large_breast False (0) -> True (1)"),
    ("thorax", "group"): (1, 0, "group M (1) -> F (0)"),
}


# ----------------------------------------------------------------------------- config


def default_comparison_config() -> ml_collections.ConfigDict:
  """Every field :func:`run_edit_comparison` reads (configs/compare_edits*.py adjust).

  Fields:
    task: 'compare_edits' (analyze.py routes this config to :func:`run_edit_comparison`).
    seed: PRNG seed of the inversions (one key per model, folded from it).
    steps: T, images along every edit path (>= 3: the eigen-analysis' component 2).
    subjects.num_subjects: held-out subjects per phantom kind (one slice each).
    subjects.seed: population seed of the held-out subjects; choose one the models never
      saw (training phantoms use data.seed, analyze.py's held-out images data.seed +
      1000; 4321 is analyze.py's ground-truth seed, so the brain subjects match its
      ground-truth check).
    subjects.slice_position: slice of every subject (0..1 along the body axis).
    brain.ifcvae_gan: train.py workdir of an IFcVAE-GAN on brain phantoms (label
      'group'); '' = not compared.
    brain.ssdaae: workdir of a semi-supervised DAAE on brain phantoms; '' = none.
    brain.stylegan: workdir of a StyleGAN2 on brain phantoms; '' = none.
    brain.stylegan_directions: path stem (no .npz/.json) of its InterFaceGAN HC -> MS
      direction; '' = analyze.py's default <stylegan>/report/directions/
      interfacegan_directions.
    brain.stylegan_space: latent space of the projection and the direction: 'w' or 'w+'
      (must be the direction file's space).
    brain.alpha_stop: the StyleGAN edit walks alpha = 0..alpha_stop in the direction
      file's alpha units (meta alpha_unit; analyze_ms.py traverses 0..50).
    brain.inversion: projector settings of the StyleGAN (the fields of
      ``jaxlatent.pipeline.default_analysis_config().inversion``; defaults as
      configs/analyze_ms.py: 1000 steps, lr 0.1, MS-SSIM weight 0.1).
    thorax.ifcvae_gan: workdir of an IFcVAE-GAN on thorax phantoms (label
      'large_breast' or 'group'); '' = none.
    thorax.dcgan: workdir of a DCGAN on thorax phantoms; '' = none.
    thorax.dcgan_directions: path stem of its discovered directions with factor alignment
      (analyze_ct.py); '' = <dcgan>/report/directions/voynov_directions.
    thorax.factor: the thorax factor edited (the DCGAN's direction is the one best
      aligned with it); attribute models need 'breast_size' (their label).
    thorax.factor_value: the true change sets ``factor`` of male subjects to this value
      (breast_size 0.9: a large breast, large_breast = breast_size > 0.6).
    thorax.alpha_stop: the DCGAN edit walks alpha = 0..alpha_stop along the unit
      direction (Schön et al.'s largest traversal shift, 18).
    thorax.inversion: z-inversion settings of the DCGAN (Creswell & Bharath; defaults as
      configs/analyze_ct.py: RMSprop lr 0.01, 500 steps, 4 restarts).
    report.figure_subject: index of the subject shown in the per-kind figures.
  """

  c = ml_collections.ConfigDict()
  c.task = "compare_edits"
  c.seed = 0
  c.steps = 15

  c.subjects = ml_collections.ConfigDict()
  c.subjects.num_subjects = 16
  c.subjects.seed = 4321
  c.subjects.slice_position = 0.5

  c.brain = ml_collections.ConfigDict()
  c.brain.ifcvae_gan = ""
  c.brain.ssdaae = ""
  c.brain.stylegan = ""
  c.brain.stylegan_directions = ""
  c.brain.stylegan_space = "w"
  c.brain.alpha_stop = 50.0
  c.brain.inversion = default_analysis_config().inversion
  c.brain.inversion.steps = 1000
  c.brain.inversion.learning_rate = 0.1
  c.brain.inversion.ssim_weight = 0.1

  c.thorax = ml_collections.ConfigDict()
  c.thorax.ifcvae_gan = ""
  c.thorax.dcgan = ""
  c.thorax.dcgan_directions = ""
  c.thorax.factor = "breast_size"
  c.thorax.factor_value = 0.9
  c.thorax.alpha_stop = 18.0
  c.thorax.inversion = default_analysis_config().inversion

  c.report = ml_collections.ConfigDict()
  c.report.figure_subject = 0
  return c


def complete_comparison_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config`` over :func:`default_comparison_config` (missing fields take defaults)."""
  return over_defaults(default_comparison_config(), config)


def validate_comparison_config(config: ml_collections.ConfigDict) -> None:
  """Config-only checks (no file access); ConfigError naming the field."""

  if str(config.task) != "compare_edits":
    raise ConfigError(f"config.task={config.task!r}: run_edit_comparison runs 'compare_edits'")
  if int(config.steps) < 3:
    raise ConfigError(f"config.steps={config.steps}: the eigen-analysis (component 2) needs "
                      ">= 3 images per edit path")
  if int(config.subjects.num_subjects) < 1:
    raise ConfigError(f"config.subjects.num_subjects={config.subjects.num_subjects} must be "
                      ">= 1")
  if not 0.0 <= float(config.subjects.slice_position) <= 1.0:
    raise ConfigError(f"config.subjects.slice_position={config.subjects.slice_position} must "
                      "be in [0, 1]")
  if str(config.brain.stylegan_space) not in ("w", "w+"):
    raise ConfigError(f"config.brain.stylegan_space={config.brain.stylegan_space!r}: choose "
                      "'w' or 'w+'")
  for kind in KINDS:
    if float(config[kind].alpha_stop) == 0.0:
      raise ConfigError(f"config.{kind}.alpha_stop must not be 0")
    for name in ("steps", "batch_size"):
      if int(config[kind].inversion[name]) < 1:
        raise ConfigError(f"config.{kind}.inversion.{name}={config[kind].inversion[name]} "
                          "must be >= 1")
  factors = sorted(k for k in phantoms.factor_table("thorax") if k not in ("slice_position",
                                                                            "noise"))
  if str(config.thorax.factor) not in factors:
    raise ConfigError(f"config.thorax.factor={config.thorax.factor!r} is not a thorax phantom "
                      f"factor; choose one of {factors}")
  if str(config.thorax.ifcvae_gan).strip() and str(config.thorax.factor) != "breast_size":
    raise ConfigError(f"config.thorax.factor={config.thorax.factor!r}: the attribute model "
                      "config.thorax.ifcvae_gan edits the breast size (its label), so the "
                      "factor must be 'breast_size'; set config.thorax.ifcvae_gan='' to compare "
                      "the DCGAN alone on another factor")
  if not any(str(config[kind][field]).strip() for kind in KINDS for field in MODEL_FIELDS[kind]):
    fields = [f"config.{k}.{f}" for k in KINDS for f in MODEL_FIELDS[k]]
    raise ConfigError(f"nothing to compare: every model workdir is empty; set at least one of "
                      f"{fields}")


# ----------------------------------------------------------------------------- helpers


def _log(msg: str) -> None:
  print(f"[compare_edits {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclasses.dataclass
class ModelEntry:
  """One configured model, checked before any heavy compute.

  Attributes:
    kind, field: where it is configured (``config.<kind>.<field>``).
    workdir: absolute train workdir.
    train_config: its saved config.json.
    role: 'encoder' (attribute model, encode -> y edit) or 'inverted' (GAN + direction).
    y_from, y_to, label: attribute models: class ids of the edit and its description.
    directions_stem, directions, direction_index, direction_sign, direction_info:
      inverted models: the direction file, the chosen direction and its orientation.
    loaded, generator: the restored run and (inverted models) its Generator.
  """

  kind: str
  field: str
  workdir: str
  train_config: Any
  role: str
  y_from: int = 0
  y_to: int = 1
  label: str = ""
  directions_stem: str = ""
  directions: Any = None
  direction_index: int = 0
  direction_sign: float = 1.0
  direction_info: dict = dataclasses.field(default_factory=dict)
  loaded: Any = None  # (train_config, trainer, state) of load_trained
  generator: Any = None  # inverted models: the Generator in the edit's latent space


def _check_workdir(config, kind: str, field: str) -> ModelEntry | None:
  """The model of ``config.<kind>.<field>``: exists, is the expected model and phantom."""

  raw = str(config[kind][field]).strip()
  if not raw:
    return None
  where = f"config.{kind}.{field}={raw!r}"
  workdir = os.path.abspath(os.path.expanduser(raw))
  if not os.path.isdir(workdir):
    raise ConfigError(f"{where}: the workdir {workdir} does not exist (train it with train.py "
                      "or set the field to '' to leave the model out)")
  if not os.path.isfile(os.path.join(workdir, "config.json")):
    raise ConfigError(f"{where}: {workdir} has no config.json, it is not a train.py workdir")
  if not os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
    raise ConfigError(f"{where}: {workdir} has no {CHECKPOINT_DIR}/ folder (no checkpoint)")
  tc = load_run_config(workdir)
  expected, role = MODEL_FIELDS[kind][field]
  name = str(tc.get("model", {}).get("name", ""))
  if name != expected:
    raise ConfigError(f"{where}: {workdir}/config.json holds a {name!r} run (model.name), "
                      f"expected {expected!r}")
  source = str(tc.get("data", {}).get("source", ""))
  if source != f"phantom_{kind}":
    raise ConfigError(f"{where}: the {name} run was trained on data.source={source!r} "
                      f"({workdir}/config.json); the {kind} comparison scores against {kind} "
                      f"phantom subjects and needs a model trained on 'phantom_{kind}'")
  entry = ModelEntry(kind=kind, field=field, workdir=workdir, train_config=tc, role=role)
  if role == "encoder":
    column = str(tc.get("data", {}).get("label_column", ""))
    if (kind, column) not in EDIT_LABELS:
      known = [c for k, c in EDIT_LABELS if k == kind]
      raise ConfigError(f"{where}: the {name} run's label is data.label_column={column!r}; "
                        f"the {kind} edit needs one of {known}")
    entry.y_from, entry.y_to, entry.label = EDIT_LABELS[(kind, column)]
    k = int(tc.model.get("num_classes", 2))
    if max(entry.y_from, entry.y_to) >= k:
      raise ConfigError(f"{where}: model.num_classes={k} has no class id "
                        f"{max(entry.y_from, entry.y_to)} ({entry.label})")
  return entry


def _directions_stem(config, entry: ModelEntry) -> tuple[str, str]:
  field, method = DIRECTION_FIELDS[(entry.kind, entry.field)]
  raw = str(config[entry.kind][field]).strip()
  if raw:
    stem = os.path.abspath(os.path.expanduser(raw))
    for suffix in (".npz", ".json"):
      stem = stem[:-len(suffix)] if stem.endswith(suffix) else stem
  else:
    stem = os.path.join(entry.workdir, "report", "directions", f"{method}_directions")
  return f"config.{entry.kind}.{field}", stem


def _load_directions_checked(config, entry: ModelEntry):

  field, stem = _directions_stem(config, entry)
  analyze = ("configs/analyze_ms.py" if entry.kind == "brain" else "configs/analyze_ct.py")
  missing = [p for p in (stem + ".npz", stem + ".json") if not os.path.isfile(p)]
  if missing:
    raise ConfigError(f"{field}: the directions file {missing[0]} does not exist (write it "
                      f"with python analyze.py --config={analyze} --workdir={entry.workdir}, "
                      "or set the field to the path stem of a saved direction set)")
  try:
    d = load_directions(stem)
  except DataError as e:
    raise ConfigError(f"{field}: {e}") from None
  entry.directions_stem = stem
  return field, d


def select_aligned_direction(directions, factor: str, where: str = "directions"
                             ) -> tuple[int, float, dict]:
  """(index, sign, alignment row) of the direction best aligned with ``factor``.

  Candidates are the directions whose best factor (``meta['alignment_rows']``, written
  by analyze.py's factor alignment) is ``factor``; the pick prefers a direction the
  alignment named after the factor (score above its threshold), then the highest
  alignment score.  ``sign`` is +1 when the factor grows along +direction (the row's
  ``slope[factor]`` >= 0), else -1.

  Raises:
    ConfigError: no alignment in the file, or no direction aligned with ``factor``
      (the message lists what the file has).
  """
  if directions.collapsed:
    raise ConfigError(f"{where}: the {directions.method} directions are flagged as collapsed "
                      f"(RCA {directions.scores.get('rca')}); they carry no factor")
  rows = directions.meta.get("alignment_rows")
  if not rows:
    raise ConfigError(f"{where}: the {directions.method} directions have no factor alignment "
                      "(meta 'alignment_rows'); run analyze.py with alignment.enabled on the "
                      "phantom-trained generator")
  slope_key = f"slope[{factor}]"
  if slope_key not in rows[0]:
    have = sorted(k[len("slope["):-1] for k in rows[0] if k.startswith("slope["))
    raise ConfigError(f"{where}: the alignment scores no factor {factor!r}; it has {have}")
  candidates = [k for k, r in enumerate(rows) if r.get("best_factor") == factor]
  if not candidates:
    listing = ", ".join(f"{r.get('direction')}: best {r.get('best_factor')} "
                        f"({float(r.get('alignment', float('nan'))):.2f})" for r in rows)
    raise ConfigError(f"{where}: no {directions.method} direction has {factor!r} as its best "
                      f"factor; the file has {listing}")
  best = max(candidates, key=lambda k: (rows[k].get("name") == factor,
                                        float(rows[k].get("alignment", 0.0))))
  sign = 1.0 if float(rows[best][slope_key]) >= 0 else -1.0
  return best, sign, dict(rows[best])


def _check_directions(config, entry: ModelEntry) -> None:
  """Loads and checks the direction file of an inverted model; sets index and sign."""
  field, d = _load_directions_checked(config, entry)
  where = f"{field} ({entry.directions_stem})"
  if entry.kind == "brain":
    space = str(config.brain.stylegan_space)
    if d.space != space:
      raise ConfigError(f"{where}: the direction is in {d.space!r}, but "
                        f"config.brain.stylegan_space={space!r}")
    if d.method != "interfacegan":
      _log(f"note: {where} holds {d.method!r} directions, not InterFaceGAN; using the first")
    name = d.names[0]
    parts = name.split("->")
    if parts == ["HC", "MS"]:
      sign = 1.0
    elif parts == ["MS", "HC"]:
      sign = -1.0
    else:
      raise ConfigError(f"{where}: direction 0 is named {name!r}; expected 'HC->MS' (the "
                        "InterFaceGAN direction of analyze_ms.py, supervised.negative='HC', "
                        "positive='MS') or 'MS->HC'")
    entry.direction_index, entry.direction_sign = 0, sign
    unit = float(d.meta.get("alpha_unit", 1.0))
    val_accuracy = finite_or_none(d.scores.get("val_accuracy", float("nan")))
    entry.direction_info = {"method": d.method, "name": name, "alpha_unit": unit,
                            "val_accuracy": val_accuracy}
  else:
    if d.space != "z":
      raise ConfigError(f"{where}: directions in {d.space!r}; the DCGAN has only z")
    index, sign, row = select_aligned_direction(d, str(config.thorax.factor), where)
    entry.direction_index, entry.direction_sign = index, sign
    entry.direction_info = {"method": d.method, "name": d.names[index], "index": index,
                            "alignment": finite_or_none(row.get("alignment", float("nan"))),
                            "best_factor": row.get("best_factor"),
                            "slope": float(row[f"slope[{config.thorax.factor}]"]),
                            "alpha_unit": 1.0}
  entry.directions = d


def _load_model(entry: ModelEntry, config) -> None:
  """Restores the run and, for an inverted model, builds its generator.

  Done for every model before any is run, so a bad checkpoint or a direction of the
  wrong latent shape fails in seconds.
  """
  try:
    entry.loaded = load_trained(entry.workdir)
  except JaxlatentError as e:
    raise type(e)(f"config.{entry.kind}.{entry.field}: {e}") from None
  if entry.role != "inverted":
    return
  tc, trainer, state = entry.loaded
  space = str(config.brain.stylegan_space) if entry.kind == "brain" else "z"
  entry.generator = build_generator(tc, trainer, state, space)
  shape = tuple(entry.generator.latent_spec.shape)
  if tuple(entry.directions.latent_shape) != shape:
    field, _ = _directions_stem(config, entry)
    raise ConfigError(f"{field} ({entry.directions_stem}): directions of shape "
                      f"{tuple(entry.directions.latent_shape)} do not fit the {tc.model.name} "
                      f"run {entry.workdir}, whose {space} latents have shape {shape}")


# ----------------------------------------------------------------------------- scoring


def _subjects_for(cache: dict, config, kind: str, size: int):
  """The held-out subjects of ``kind`` rendered at ``size`` (drawn once per size)."""
  if (kind, size) not in cache:
    sc = config.subjects
    change = None
    if kind == "thorax":
      change = {str(config.thorax.factor): float(config.thorax.factor_value)}
    _log(f"{kind}: {sc.num_subjects} held-out subjects (seed {sc.seed}) at {size} px")
    cache[(kind, size)] = phantom_edit_subjects(
        kind, int(sc.num_subjects), int(size), int(sc.seed), change=change,
        absolute=(str(config.thorax.factor),) if kind == "thorax" else (),
        slice_position=float(sc.slice_position))
  return cache[(kind, size)]


def _y_code(entry: ModelEntry, class_id: int) -> np.ndarray:
  """The decoder's attribute code of ``class_id``: scalar (binary IFcVAE-GAN) or one-hot."""
  k = int(entry.train_config.model.get("num_classes", 2))
  if entry.train_config.model.name == "ifcvae_gan" and k == 2:
    return np.asarray([float(class_id)], np.float32)
  return np.eye(k, dtype=np.float32)[class_id]


def _score_model(config, entry: ModelEntry, subjects, key) -> dict:
  """Runs one model's edit of ``subjects``; returns its row (scores + end images)."""
  t0 = time.time()
  tc, _, state = entry.loaded
  step = int(np.asarray(getattr(state, "step", -1)))
  steps = int(config.steps)
  model = str(tc.model.name)
  row: dict[str, Any] = {"kind": entry.kind, "field": f"{entry.kind}.{entry.field}",
                         "model": model, "workdir": entry.workdir, "checkpoint_step": step,
                         "image_size": int(tc.image_size)}
  inversion_errors = None
  if entry.role == "encoder":
    y_from, y_to = _y_code(entry, entry.y_from), _y_code(entry, entry.y_to)
    _log(f"{entry.kind}/{model}: encode {len(subjects.images)} subjects, edit "
         f"{entry.label}")
    scores = score_encoder_edits(model, state.params, tc, subjects, y_from, y_to, steps)
    schedule = np.linspace(0.0, 1.0, steps)
    row["method"] = f"encoder, y {y_from.tolist()} -> {y_to.tolist()} ({entry.label})"
    row["edit"] = {"label": entry.label, "y_from": y_from.tolist(), "y_to": y_to.tolist()}
  else:
    kc = config[entry.kind]
    gen = entry.generator
    space = gen.latent_spec.space
    info = entry.direction_info
    unit = float(info["alpha_unit"])
    vec = entry.directions.vectors[entry.direction_index] * entry.direction_sign * unit
    ic = ml_collections.ConfigDict({"inversion": kc.inversion.to_dict()})
    _log(f"{entry.kind}/{model}: inverting {len(subjects.images)} subjects into {space} "
         f"({int(kc.inversion.steps)} steps)")
    invert_fn = make_inverter(gen, tc, ic, key)
    masks = subjects.masks if bool(kc.inversion.use_mask) else None
    latents, _, errors = invert_batched(invert_fn, subjects.images, masks,
                                        int(kc.inversion.batch_size))
    inversion_errors = np.asarray(errors, np.float64)
    schedule = np.linspace(0.0, float(kc.alpha_stop), steps)
    scores = score_edits(gen, jnp.asarray(latents), jnp.asarray(vec, jnp.float32),
                         jnp.asarray(schedule, jnp.float32), subjects.true_difference,
                         subjects.masks)
    sign = "+" if entry.direction_sign > 0 else "-"
    if entry.kind == "brain":
      row["method"] = (f"{info['method']} {info['name']} in {space}, alpha 0..{kc.alpha_stop:g} "
                       f"(unit {unit:.4g})")
    else:
      score = info["alignment"] if info["alignment"] is not None else float("nan")
      row["method"] = (f"{info['method']} {sign}{info['name']} (#{info['index']}, "
                       f"{config.thorax.factor} alignment {score:.2f}) in z, "
                       f"alpha 0..{kc.alpha_stop:g}")
    row["direction"] = {"file": entry.directions_stem, "index": entry.direction_index,
                        "sign": entry.direction_sign, **info}
  images = np.asarray(scores.images)  # [B, T, S, S, 1]
  recon = np.mean((images[:, 0] - np.asarray(subjects.images)) ** 2, axis=(1, 2, 3))
  row.update({
      "schedule": [float(a) for a in schedule],
      "subject_ids": [str(s) for s in subjects.subject_id],
      "per_subject": {
          "edit_corr": [finite_or_none(v) for v in scores.edit_corr],
          "component2_corr": [finite_or_none(v) for v in scores.component2_corr],
          "edit_magnitude": [finite_or_none(v) for v in scores.edit_magnitude],
          "reconstruction_mse": [finite_or_none(v) for v in recon],
          "inversion_error": (None if inversion_errors is None
                              else [finite_or_none(v) for v in inversion_errors])},
      "summary": {**{k: finite_or_none(v) for k, v in scores.summary().items()},
                  "reconstruction_mse_mean": finite_or_none(recon.mean()),
                  "reconstruction_mse_std": finite_or_none(recon.std()),
                  "inversion_error_mean": (None if inversion_errors is None
                                           else finite_or_none(inversion_errors.mean())),
                  "inversion_error_std": (None if inversion_errors is None
                                          else finite_or_none(inversion_errors.std()))},
      "seconds": round(time.time() - t0, 2)})
  row["_images"] = images  # dropped before JSON: [B, T, S, S, 1]
  return row


# ----------------------------------------------------------------------------- outputs


def _pm(summary: dict, key: str) -> str:
  m, s = summary.get(f"{key}_mean"), summary.get(f"{key}_std")
  return "n/a" if m is None else f"{m:.3f} ± {s or 0.0:.3f}"


def table_rows(rows: list[dict], attributes: dict[str, str]) -> list[dict]:
  """The table's rows (strings), grouped by phantom kind in ``rows``' order."""
  out = []
  for r in rows:
    s = r["summary"]
    err = ("inversion " + _pm(s, "inversion_error") if s.get("inversion_error_mean") is not None
           else "encode " + _pm(s, "reconstruction_mse"))
    out.append({"phantom": r["kind"], "attribute": attributes[r["kind"]], "model": r["model"],
                "method": r["method"], "n": len(r["subject_ids"]),
                "edit corr": _pm(s, "edit_corr"), "component-2 corr": _pm(s, "component2_corr"),
                "mean abs edit": _pm(s, "edit_magnitude"), "recon MSE": err})
  return out


def format_table(rows: list[dict]) -> str:
  """A fixed-width plain-text rendering of :func:`table_rows` (for the console)."""
  cols = list(rows[0]) if rows else []
  width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
  line = lambda vals: "  ".join(str(v).ljust(width[c]) for c, v in zip(cols, vals))
  out = [line(cols), line(["-" * width[c] for c in cols])]
  kind = None
  for r in rows:
    if kind is not None and r["phantom"] != kind:
      out.append("")
    kind = r["phantom"]
    out.append(line([r[c] for c in cols]))
  return "\n".join(out)


def _figure(path: str, rows: list[dict], subjects_by_size: dict, index: int, attribute: str
            ) -> str:
  """Per model: original, reconstruction, edited, edit difference, true difference.

  One subject (``index``); difference maps are scaled to their own max |.| (grey = 0).
  """
  from jaxlatent.directions.report import save_traversal_grid  # pylint: disable=g-import-not-at-top

  size = max(r["image_size"] for r in rows)

  def up(x):  # [S, S] -> [size, size] (sizes are powers of 2: pixel repeat)
    f = size // x.shape[0]
    return np.repeat(np.repeat(x, f, axis=0), f, axis=1)

  def signed(d, mask):  # a difference map scaled into [-1, 1] by its own max |.|
    d = np.where(mask, d, 0.0)
    return d / max(float(np.abs(d).max()), 1e-12)

  grid = []
  for r in rows:
    subj = subjects_by_size[r["image_size"]]
    im = r["_images"][index]  # [T, S, S, 1]
    mask = subj.masks[index]
    cells = [subj.images[index, ..., 0], im[0, ..., 0], im[-1, ..., 0],
             signed(im[-1, ..., 0] - im[0, ..., 0], mask),
             signed(subj.true_difference[index], mask)]
    grid.append(np.stack([up(np.asarray(c, np.float32)) for c in cells])[..., None])
  labels = [r["model"] if "direction" not in r else
            f"{r['model']}\n{'-' if r['direction']['sign'] < 0 else ''}"
            f"{r['direction']['method']} {r['direction']['name']}" for r in rows]
  subject = rows[0]["subject_ids"][index]
  return save_traversal_grid(
      path, np.stack(grid), labels,
      ["original", "reconstruction x₀", "edited x_T", "x_T − x₀", "true difference"],
      title=f"{rows[0]['kind']} {attribute}, subject {subject}")


# ----------------------------------------------------------------------------- main


def run_edit_comparison(config: ml_collections.ConfigDict, out_dir: str) -> str:
  """Scores every configured model's attribute edit on the same held-out phantom subjects.

  Args:
    config: a comparison config (configs/compare_edits*.py); missing fields take
      :func:`default_comparison_config` values.
    out_dir: output folder (created); only ``edit_comparison.{md,json}`` and
      ``edit_comparison_<kind>.png`` are written there.

  Returns:
    The path of ``edit_comparison.md`` (the table).

  Raises:
    ConfigError: a bad field, a missing workdir or directions file, a workdir holding
      another model or phantom kind than its field expects (all checked before any
      model is run).
  """
  t_start = time.time()
  config = complete_comparison_config(config)
  validate_comparison_config(config)
  entries = {kind: [e for f in MODEL_FIELDS[kind] if (e := _check_workdir(config, kind, f))]
             for kind in KINDS}
  for kind in KINDS:
    for e in entries[kind]:
      if e.role == "inverted":
        _check_directions(config, e)
  for kind in KINDS:
    for e in entries[kind]:
      _load_model(e, config)
  out = os.path.abspath(os.path.expanduser(out_dir))
  os.makedirs(out, exist_ok=True)

  root = jax.random.PRNGKey(int(config.seed))
  attributes = {
      "brain": "HC -> MS (" + ", ".join(f"{k} +{v:g}" for k, v in BRAIN_HC_TO_MS.items()) + ")",
      "thorax": f"male -> {config.thorax.factor} = {float(config.thorax.factor_value):g}"}
  rows: list[dict] = []
  subjects_meta, figures = {}, {}
  for kind in KINDS:
    if not entries[kind]:
      continue
    cache: dict = {}
    kind_rows = []
    for i, e in enumerate(entries[kind]):
      subj = _subjects_for(cache, config, kind, int(e.train_config.image_size))
      key = jax.random.fold_in(jax.random.fold_in(root, KINDS.index(kind)), i)
      kind_rows.append(_score_model(config, e, subj, key))
    first = next(iter(cache.values()))
    subjects_meta[kind] = {
        "seed": int(config.subjects.seed), "num_subjects": int(config.subjects.num_subjects),
        "slice_position": float(config.subjects.slice_position),
        "subject_ids": [str(s) for s in first.subject_id],
        "image_sizes": sorted(s for _, s in cache),
        "attribute": attributes[kind],
        "mean_factor_change": {k: float(np.mean(first.changed[k] - first.factors[k]))
                               for k in first.changed
                               if np.any(first.changed[k] != first.factors[k])}}
    index = min(max(int(config.report.figure_subject), 0), len(first.subject_id) - 1)
    fig = os.path.join(out, f"edit_comparison_{kind}.png")
    _figure(fig, kind_rows, {s: cache[(kind, s)] for _, s in cache}, index,
            attributes[kind].split(" (")[0])
    figures[kind] = os.path.basename(fig)
    subjects_meta[kind]["figure_subject"] = index
    rows += kind_rows

  table = table_rows(rows, attributes)
  text = format_table(table)
  print(text, flush=True)
  from jaxlatent.viz.report import table_markdown  # pylint: disable=g-import-not-at-top
  md = [
      "# Attribute edits on held-out phantom subjects",
      "",
      "Every model edits the same held-out phantom subjects of a kind (drawn with "
      f"seed {config.subjects.seed}, {config.subjects.num_subjects} subjects, slice position "
      f"{config.subjects.slice_position:g}); each edit is a path of {config.steps} images "
      "(attribute models: y from the subjects' class to the target class; StyleGAN / DCGAN: "
      "the inverted code walked along the direction, alpha from 0). Scores against the "
      "phantom's true, noise-free difference map over the foreground: Pearson correlation of "
      "the edit (last − first image) and of the traversal eigen-analysis' component-2 map; "
      "mean |edit| in model units ([-1, 1] images); recon MSE: inversion error (inverted "
      "models) or encode-decode error at the start class (attribute models). "
      "Mean ± std over subjects.",
      "",
      table_markdown(table),
  ]
  for kind, meta in subjects_meta.items():
    md.append(f"- {kind}: {meta['attribute']}; subjects {', '.join(meta['subject_ids'])}; "
              f"figure {figures[kind]} (subject {meta['subject_ids'][meta['figure_subject']]}: "
              "original, reconstruction x₀, edited x_T, x_T − x₀ and the true difference per "
              "model; "
              "difference maps scaled to their own max |.|, grey = 0)")
  md_path = os.path.join(out, "edit_comparison.md")
  with open(md_path, "w") as f:
    f.write("\n".join(md) + "\n")
  record = {"task": "compare_edits", "steps": int(config.steps), "subjects": subjects_meta,
            "rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
            "table": table, "figures": figures,
            "config": json.loads(config.to_json_best_effort()),
            "seconds": round(time.time() - t_start, 2)}
  with open(os.path.join(out, "edit_comparison.json"), "w") as f:
    json.dump(json_clean(record), f, indent=2, allow_nan=False)
  _log(f"table: {md_path}")
  return md_path
