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

Read :func:`run_edit_comparison` top to bottom: check every configured run and
direction file, restore them, score each phantom kind's models
(:func:`compare_kind`), write the outputs (:func:`jaxlatent.studies.report.write_edit_comparison`).
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
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlatent.analysis.attribute_edit import (BRAIN_HC_TO_MS, phantom_edit_subjects,
                                               score_edits, score_encoder_edits)
from jaxlatent.directions import load_directions
from jaxlatent.errors import ConfigError, DataError, JaxlatentError
from jaxlatent.inversion import invert_images
from jaxlatent import atomic_io
from jaxlatent.studies import artifacts, report
from jaxlatent.studies.config import (DIRECTION_FIELDS, EDIT_LABELS, KINDS, MODEL_FIELDS,
                                      complete_comparison_config, validate_comparison_config)
from jaxlatent.studies.generators import generator_fingerprint, load_generator
from jaxlatent.studies.report import finite_or_none
from jaxlatent.training.checkpoint import CHECKPOINT_DIR, EXPORT_FILE, load_run_config

# ----------------------------------------------------------------------------- helpers


def _log(msg: str) -> None:
  report.log("compare_edits", msg)


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
    trained: the restored run (inverted models: with its Generator in the edit's space).
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
  trained: Any = None  # the restored run (TrainedGenerator; a Generator for inverted models)


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
  if not os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)) and \
      not os.path.isfile(os.path.join(workdir, EXPORT_FILE)):
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


def load_model(entry: ModelEntry, config) -> None:
  """Restores the run and, for an inverted model, builds its generator.

  Done for every model before any is run, so a bad checkpoint or a direction of the
  wrong latent shape fails in seconds.
  """
  space = None
  if entry.role == "inverted":
    space = str(config.brain.stylegan_space) if entry.kind == "brain" else "z"
  try:
    entry.trained = load_generator(entry.workdir, space)
  except JaxlatentError as e:
    raise type(e)(f"config.{entry.kind}.{entry.field}: {e}") from None
  if space is None:
    return
  tc = entry.trained.train_config
  shape = tuple(entry.trained.generator.latent_spec.shape)
  if tuple(entry.directions.latent_shape) != shape:
    field, _ = _directions_stem(config, entry)
    raise ConfigError(f"{field} ({entry.directions_stem}): directions of shape "
                      f"{tuple(entry.directions.latent_shape)} do not fit the {tc.model.name} "
                      f"run {entry.workdir}, whose {space} latents have shape {shape}")
  _check_directions_source(config, entry)


def _check_directions_source(config, entry: ModelEntry) -> None:
  """A direction file analyze.py wrote names its generator: it must be this run's.

  Files without a fingerprint (written by hand or by an older version) are accepted.
  """
  made_by = (entry.directions.meta.get("fingerprint") or {}).get("generator")
  if not isinstance(made_by, dict):
    return
  this = generator_fingerprint(entry.trained)
  differs = [k for k in ("config_sha256", "params_sha256", "checkpoint_step")
             if made_by.get(k) != this[k]]
  if differs:
    field, _ = _directions_stem(config, entry)
    what = ("from another checkpoint (step "
            f"{made_by.get('checkpoint_step')}, the run's latest is {this['checkpoint_step']})"
            if differs == ["checkpoint_step"] else "by another generator")
    raise ConfigError(f"{field} ({entry.directions_stem}): these directions were made "
                      f"{what}, not by the run in config.{entry.kind}.{entry.field}="
                      f"{entry.workdir!r}; analyse that run again or point {field} at its "
                      "directions")


# ----------------------------------------------------------------------------- scoring


@dataclasses.dataclass
class ModelEdit:
  """One model's edit: its JSON row (scores, settings) and images [B, T, S, S, 1]."""

  row: dict
  images: np.ndarray


@dataclasses.dataclass
class KindComparison:
  """Every model of one phantom kind on the same subjects (drawn once per image size)."""

  kind: str
  attribute: str
  subjects_by_size: dict  # image size -> attribute_edit.EditSubjects
  edits: list[ModelEdit]
  figure_subject: int


def check_models(config) -> list[ModelEntry]:
  """Every configured model and its direction file, checked before any model is loaded."""
  entries = [e for kind in KINDS for f in MODEL_FIELDS[kind]
             if (e := _check_workdir(config, kind, f))]
  for e in entries:
    if e.role == "inverted":
      _check_directions(config, e)
  return entries


def compare_kind(config, kind: str, entries: list[ModelEntry], root) -> KindComparison:
  """Scores the models of ``kind`` on the kind's held-out subjects."""
  cache: dict = {}
  edits = []
  for i, e in enumerate(entries):
    subj = subjects_for(cache, config, kind, int(e.train_config.image_size))
    key = jax.random.fold_in(jax.random.fold_in(root, KINDS.index(kind)), i)
    edits.append(score_model(config, e, subj, key))
  first = next(iter(cache.values()))
  index = min(max(int(config.report.figure_subject), 0), len(first.subject_id) - 1)
  return KindComparison(kind, attribute_label(config, kind),
                        {s: cache[(kind, s)] for _, s in cache}, edits, index)


def attribute_label(config, kind: str) -> str:
  """The edited attribute, in words."""
  if kind == "brain":
    return "HC -> MS (" + ", ".join(f"{k} +{v:g}" for k, v in BRAIN_HC_TO_MS.items()) + ")"
  return f"male -> {config.thorax.factor} = {float(config.thorax.factor_value):g}"


def subjects_for(cache: dict, config, kind: str, size: int):
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


def score_model(config, entry: ModelEntry, subjects, key) -> ModelEdit:
  """Runs one model's edit of ``subjects``; returns its row and the edit paths' images."""
  t0 = time.time()
  tc, state, step = entry.trained.train_config, entry.trained.state, entry.trained.step
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
    gen = entry.trained.generator
    space = gen.latent_spec.space
    info = entry.direction_info
    unit = float(info["alpha_unit"])
    vec = entry.directions.vectors[entry.direction_index] * entry.direction_sign * unit
    _log(f"{entry.kind}/{model}: inverting {len(subjects.images)} subjects into {space} "
         f"({int(kc.inversion.steps)} steps)")
    latents, _, errors = invert_images(gen, subjects.images, kc.inversion, key,
                                       masks=subjects.masks, encode_fn=entry.trained.encode_fn)
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
  return ModelEdit(row, images)


# ----------------------------------------------------------------------------- main


def run_edit_comparison(config: ml_collections.ConfigDict, out_dir: str) -> str:
  """Scores every configured model's attribute edit on the same held-out phantom subjects.

  Args:
    config: a comparison config (configs/compare_edits*.py); missing fields take
      :func:`jaxlatent.studies.config.default_comparison_config` values.
    out_dir: output folder (created); only ``edit_comparison.{md,json}`` and
      ``edit_comparison_<kind>.png`` are written there.

  Returns:
    The path of ``edit_comparison.md`` (the table).

  Raises:
    ConfigError: a bad field, a missing workdir or directions file, a workdir holding
      another model or phantom kind than its field expects (all checked before any
      model is run).
  """
  clock = report.Clock()
  config = complete_comparison_config(config)
  validate_comparison_config(config)
  what = "edit comparison output folder (--out)"
  atomic_io.check_writable_dir(out_dir, what)
  entries = check_models(config)
  for e in entries:
    load_model(e, config)
  with artifacts.locked_output_dir(out_dir, what) as out:
    root = jax.random.PRNGKey(int(config.seed))
    kinds = [compare_kind(config, kind, [e for e in entries if e.kind == kind], root)
             for kind in KINDS if any(e.kind == kind for e in entries)]
    path = report.write_edit_comparison(out, config, kinds, clock)
  _log(f"table: {path}")
  return path
