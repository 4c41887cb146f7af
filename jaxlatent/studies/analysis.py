"""The analysis of a trained generator, end to end: ``run_analysis(config, workdir)``.

What ``analyze.py`` runs.  Read :func:`run_analysis` top to bottom; each stage returns
a dataclass and :mod:`jaxlatent.studies.report` turns them into the report:

  1. restore the training run (``workdir/config.json`` + latest checkpoint) and build
     its :class:`~jaxlatent.Generator` in the chosen latent space (z, or StyleGAN's w / w+);
  2. discover directions with the unsupervised methods in ``config.methods``
     (Voynov & Babenko, SeFa, GANSpace) and, on phantoms, score them against the
     known factors (factor alignment; a direction is named by its best factor);
  3. load held-out images (phantom subjects the generator never saw, or a NIfTI / DICOM folder
     through the data loader, with subject / slice metadata) and invert them
     (z: Creswell & Bharath; VAE: encoder + refinement; StyleGAN: W / W+ projector);
  4. ``interfacegan`` in ``config.methods``: fit the supervised HC -> MS boundary on the
     inverted, labelled codes (Güllmar et al.; Shen et al.);
  5. traverse every analysed direction from the inverted codes and eigen-decompose
     each traversal (one jitted vmap over slices x directions); per-subject NIfTI maps
     (and DICOM series when the images were DICOM); the scrubber pages' frames;
  6. on brain phantoms, the ground-truth check: correlation of the component-2 map and
     of the subtraction map with the phantom's true HC -> MS difference map;
  7. write ``<out>/index.html`` (PNGs and a GIF beside it, one scrubber page per
     direction in ``<out>/scrub/``) and ``<out>/metrics.json``.

Finished stages are re-used when the same output folder is analysed again
(directions ``.npz/.json``, inverted codes ``inversion/latents.npz``, the factor
alignment) only when their fingerprint matches this run's: the generator's checkpoint
step and config / parameter hashes plus the settings that produced them
(:mod:`jaxlatent.studies.fingerprint`).  Anything else (another model's report
folder, other settings, a truncated file) is recomputed with a log line, or refused
with ``config.cache_mismatch='error'``.  Every check that needs no compute runs
before anything is written, and the output folder is locked for the run.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlatent import atomic_io
from jaxlatent import directions as dirs
from jaxlatent.analysis import (eigen_analysis, traverse, traverse_and_analyze,
                                write_subject_maps)
from jaxlatent.analysis.attribute_edit import phantom_edit_subjects, score_edits
from jaxlatent.data import load_dataset
from jaxlatent.errors import ConfigError, DataError
from jaxlatent.inversion import InvertedSlices, invert_dataset, invert_images, select_subjects
from jaxlatent.studies import artifacts, report
from jaxlatent.studies import fingerprint as fp_lib
from jaxlatent.studies.config import (METHODS, SUPERVISED, UNSUPERVISED,
                                      complete_analysis_config, validate_analysis_config)
from jaxlatent.studies.generators import TrainedGenerator, generator_fingerprint, load_generator
from jaxlatent.studies.preflight import check_supervised_labels, preflight_analysis


def _log(msg: str) -> None:
  report.log("analyze", msg)


# ----------------------------------------------------------------------------- results


@dataclasses.dataclass
class MethodDirections:
  """One method's directions with what the report shows of them.

  ``summary``: per-direction rows (also written as directions/<method>_summary.csv);
  ``grid``: traversal images [K, shifts, H, W, 1] of the first directions from one z.
  """

  directions: Any
  summary: list[dict]
  grid: np.ndarray


@dataclasses.dataclass
class Supervised:
  """The InterFaceGAN direction, each inverted code's class (-1: unlabelled) and its grid."""

  directions: Any
  labels: np.ndarray
  grid_rows: np.ndarray  # inverted rows (healthy) shown in the grid
  grid_alphas: np.ndarray
  grid: np.ndarray  # [rows, 6, H, W, 1]


@dataclasses.dataclass
class MethodEigen:
  """Eigen-analysis of one method's first ``k`` directions from the selected codes.

  ``result``: ``EigenResult`` of ``[slices, k]``; ``frames``: the traversal of the
  first direction from the representative slice ``rep`` (position in the selection).
  """

  method: str
  directions: Any
  k: int
  result: Any
  frames: np.ndarray
  rep: int
  vectors: np.ndarray | None = None  # [k, *shape] as traversed (InterFaceGAN: alpha-unit scaled)


@dataclasses.dataclass
class Scrubber:
  """One analysed direction's traversal as the report's scrubber page shows it.

  ``frames``: {subject: :func:`jaxlatent.viz.traversal_panels` arrays [n_slices, T, H, W]};
  ``slice_labels``: the slice slider's names (n_slices).
  """

  method: str
  direction: str
  frames: dict
  slice_labels: list


@dataclasses.dataclass
class Eigen:
  """The traversal eigen-analysis: schedule, selected inverted rows and subjects, per method."""

  alphas: np.ndarray
  selected: np.ndarray
  subjects: list[str]
  healthy_only: bool
  methods: list[MethodEigen]
  nifti_dir: str
  dicom_dir: str = ""  # set when maps were also written as DICOM (DICOM input)


@dataclasses.dataclass
class GroundTruth:
  """Brain phantoms: edit scores of the HC -> MS direction against the true difference."""

  subjects: Any  # attribute_edit.EditSubjects
  summary: dict
  images: np.ndarray  # subject 0's traversal [T, H, W, 1]
  result: Any  # its eigen-analysis


# ----------------------------------------------------------------------------- stages


def method_key(key, method: str):
  """The PRNG key of one direction method's discovery (and, folded, its alignment)."""
  return jax.random.fold_in(key, 10 + METHODS.index(method))


def regressor_key(key):
  """The key the factor regressor of an analysis with base key ``key`` is trained with."""
  return jax.random.fold_in(key, 6)


def alignment_latents_key(seed: int, method: str):
  """The key ``factor_alignment`` draws its start latents with for ``method`` in an
  analysis with ``config.seed = seed``: a recorded alignment is re-computed with it."""
  return jax.random.fold_in(jax.random.fold_in(method_key(jax.random.PRNGKey(seed), method),
                                               5), 1)


def discover_directions(trained: TrainedGenerator, config, key, out_dir: str
                        ) -> dict[str, MethodDirections]:
  """Every unsupervised method's directions (re-used from ``out_dir``), aligned on phantoms."""
  gen = trained.generator
  z0 = gen.sample_latents(jax.random.fold_in(key, 99), 1)[0]
  shifts = tuple(float(s) for s in config.traversal_shifts)
  regressor = []  # trained on first use, shared by every method of the run
  found = {}
  for method in (m for m in config.methods if m in UNSUPERVISED):
    mkey = method_key(key, method)
    d = discover_or_load(gen, config, method, mkey, out_dir, generator_fingerprint(trained))
    d = align_or_load(trained, d, config, jax.random.fold_in(mkey, 5), out_dir,
                      regressor_key(key), regressor)
    rows = dirs.summary_rows(d)
    for r, a in zip(rows, d.meta.get("alignment_rows", [])):
      r.update({k: v for k, v in a.items() if k not in ("direction", "name")})
    dirs.write_table(os.path.join(out_dir, f"{method}_summary"), rows)
    # The report and the eigen-analysis show the best-aligned direction per factor
    # first; the saved files keep the discovery's order.
    d = dirs.in_display_order(d)
    rows = [rows[i] for i in d.meta.get("display_order", range(len(rows)))]
    k_grid = min(d.num_directions, int(config.report.grid_directions))
    # SeFa in w+ edits every chosen layer by the distance (the reference's per-layer
    # addition): a shift of distance * distance_scale along the unit w+ vector.
    step = float(d.meta.get("distance_scale", 1.0))
    grid = dirs.traversal_grid(gen, d.vectors[:k_grid] * step, z0, shifts)
    found[method] = MethodDirections(d, rows, np.asarray(grid))
  return found


def method_settings(config, method: str) -> dict:
  """The analysis settings that determine ``method``'s directions (their fingerprint)."""
  if method == "voynov":
    return {"voynov": config.voynov, "restarts": int(config.restarts), "seed": int(config.seed)}
  if method == "ganspace":
    return {"ganspace_components": int(config.ganspace_components),
            "ganspace_samples": int(config.ganspace_samples), "seed": int(config.seed)}
  if method == "sefa":
    return {"sefa_components": int(config.sefa_components)}
  return {"supervised": config.supervised, "images": config.images,
          "inversion": config.inversion, "seed": int(config.seed)}


def discover_or_load(gen, config, method: str, key, out_dir: str, generator_fp: dict):
  """Directions of ``method``, re-used from ``out_dir`` when their fingerprint matches.

  ``generator_fp``: :func:`jaxlatent.studies.generators.generator_fingerprint`.
  """
  stem = os.path.join(out_dir, f"{method}_directions")
  expected = fp_lib.artifact_fingerprint(generator_fp, method=method,
                                         **method_settings(config, method))
  if os.path.exists(stem + ".npz") or os.path.exists(stem + ".json"):
    try:
      d = dirs.load_directions(stem)
    except DataError as e:
      _log(f"{method}: not re-using {stem}: {e}; recomputing")
    else:
      if fp_lib.reuse_decision(method, stem + ".npz", d.meta.get("fingerprint"), expected,
                               str(config.cache_mismatch), _log):
        return d
  _log(f"{method}: discovering directions on {gen.name}")
  if method == "ganspace" and gen.latent_spec.space == "z":
    # PCA of isotropic z is meaningless: use early features, here the generated images
    # pooled to 8x8 (GANSpace's activation PCA mapped back to z by least squares).
    d = dirs.ganspace(gen, key, int(config.ganspace_components) or None,
                      num_samples=int(config.ganspace_samples), features_fn=_pooled_images(gen),
                      batch_size=min(1000, int(config.ganspace_samples)))
  else:
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.methods = (method,)
    log_fn = (lambda m: _log(f"voynov step {int(m['step'])}: rca {float(m['rca']):.3f} "
                             f"loss {float(m['loss']):.3f}")) if method == "voynov" else None
    d = dirs.discover(gen, sub, key, log_fn=log_fn)[method]["directions"]
  d.meta["fingerprint"] = expected
  dirs.save_directions(stem, d, force=True)  # a collapsed run is saved but flagged
  return d


def _pooled_images(gen):
  h, w, _ = gen.image_shape
  f = max(1, h // 8)

  def features(z):
    images = gen(z)  # [B, H, W, 1]
    b = images.shape[0]
    return images.reshape(b, h // f, f, w // f, f).mean((2, 4)).reshape(b, -1)

  return jax.jit(features)


REGRESSOR_FILE = "factor_regressor.npz"  # in the report's directions/ folder


def regressor_or_load(trained: TrainedGenerator, config, out_dir: str, reg_key):
  """The phantom factor regressor of the alignment, re-used from ``out_dir`` when it fits.

  Saved as ``factor_regressor.npz`` so the alignment can be re-checked later from the
  generator, the directions and this file alone.
  """
  source = trained.train_config.data.source
  ac = config.alignment
  seed = int(jax.random.randint(reg_key, (), 0, 2**30))
  expected = {"source": source, "image_size": int(trained.train_config.image_size),
              "regressor_images": int(ac.regressor_images),
              "regressor_steps": int(ac.regressor_steps), "seed": seed}
  path = os.path.join(out_dir, REGRESSOR_FILE)
  if os.path.exists(path):
    reg, stored = dirs.load_factor_regressor(path)
    if fp_lib.reuse_decision("factor regressor", path, stored, expected,
                             str(config.cache_mismatch), _log):
      return reg
  kind = source.split("_", 1)[1]
  _log(f"training a {kind} factor regressor ({ac.regressor_images} phantoms, "
       f"{ac.regressor_steps} steps)")
  reg = dirs.train_phantom_regressor(
      kind, jax.random.PRNGKey(seed), size=int(trained.train_config.image_size),
      num_images=int(ac.regressor_images), steps=int(ac.regressor_steps))
  os.makedirs(out_dir, exist_ok=True)
  dirs.save_factor_regressor(path, reg, expected)
  return reg


def align_or_load(trained: TrainedGenerator, directions, config, key, out_dir: str, reg_key,
                  regressor: list):
  """Factor alignment on phantoms (cached in the directions' meta); names by best factor.

  The factor regressor (``regressor_images`` phantoms of the training kind drawn with
  ``reg_key``) is trained once into ``regressor`` and shared by every method of a run.
  """
  source = trained.train_config.data.source
  if (directions.collapsed or not config.alignment.enabled
      or not source.startswith("phantom_")):
    return directions
  ac = config.alignment
  expected = {"alignment": ac, "seed": int(config.seed), "source": source,
              "image_size": int(trained.train_config.image_size),
              "directions": directions.meta.get("fingerprint")}
  expected = fp_lib.to_jsonable(expected)
  if "alignment_rows" in directions.meta and fp_lib.reuse_decision(
      f"{directions.method} alignment", os.path.join(out_dir, f"{directions.method}_directions"),
      directions.meta.get("alignment_fingerprint"), expected, str(config.cache_mismatch), _log):
    return directions
  if not regressor:
    regressor.append(regressor_or_load(trained, config, out_dir, reg_key))
  reg = regressor[0]
  res = dirs.factor_alignment(trained.generator, directions, reg, tuple(ac.shifts),
                              jax.random.fold_in(key, 1), num_latents=int(ac.num_latents),
                              threshold=float(ac.threshold))
  named = res.apply_to(directions)
  named.meta = dict(named.meta, alignment_rows=res.rows(), alignment_summary=res.summary,
                    alignment_fingerprint=expected,
                    regressor_val_r2=dict(zip(reg.factor_names,
                                              np.asarray(reg.val_r2).tolist())))
  dirs.save_directions(os.path.join(out_dir, f"{directions.method}_directions"), named,
                       force=True)
  return named


def load_images(config, train_config, out_dir: str):
  """The images to invert: held-out phantom subjects or a NIfTI / DICOM folder (SliceDataset)."""
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


PARTIAL_INVERSION_FILE = "latents_partial.npz"  # the finished chunks of a running inversion


def invert_or_load(trained: TrainedGenerator, config, dataset, key, out_dir: str
                   ) -> InvertedSlices:
  """Inverts the chosen subjects' slices (re-using ``out_dir/latents.npz`` when it fits)."""
  rows = select_subjects(dataset, int(config.images.max_subjects))
  if rows.size == 0:
    raise DataError("no images to invert (config.images selects none)")
  gen = trained.generator
  path = os.path.join(out_dir, "latents.npz")
  expected = fp_lib.artifact_fingerprint(
      generator_fingerprint(trained), inversion=config.inversion, images=config.images,
      seed=int(config.seed), rows=rows,
      images_sha256=fp_lib.array_sha256(np.asarray(dataset.images[rows], np.float32)))
  f = artifacts.reuse_artifact("inversion", path, expected, str(config.cache_mismatch), _log)
  if f is not None:
    return InvertedSlices(f["latents"], f["reconstructions"], f["errors"], f["indices"],
                          f["subject_id"].astype(str), f["slice_index"])
  # The chunks finished so far are saved with the same fingerprint, so an interrupted
  # analysis resumes its inversion (hours on a CPU) instead of starting it again.
  partial = os.path.join(out_dir, PARTIAL_INVERSION_FILE)
  f = artifacts.reuse_artifact("inversion (finished chunks)", partial, expected, "recompute",
                               _log)
  done = None if f is None else (f["latents"], f["reconstructions"], f["errors"])
  _log(f"inverting {len(rows)} slices into {gen.latent_spec.space} of {gen.name}"
       + ("" if done is None else f", resuming after {len(done[2])}"))

  def save_chunks(chunk):
    artifacts.save_artifact(partial, expected, latents=chunk[0], reconstructions=chunk[1],
                            errors=chunk[2])

  inv = invert_dataset(gen, dataset, rows, config.inversion, key, trained.encode_fn,
                       done=done, on_chunk=save_chunks)
  artifacts.save_artifact(path, expected, latents=inv.latents,
                          reconstructions=inv.reconstructions, errors=inv.errors,
                          indices=inv.indices, subject_id=inv.subject_id.astype("U"),
                          slice_index=inv.slice_index)
  artifacts.remove_artifact(partial)
  return inv


def fit_supervised(gen, config, dataset, inv: InvertedSlices, key, out_dir: str,
                   fingerprint: dict | None = None) -> Supervised:
  """InterFaceGAN HC -> MS boundary on the inverted, labelled codes; the alpha unit.

  Always fitted (it takes seconds); ``fingerprint`` is stored in the saved direction's
  meta for the studies that read it.
  """
  sc = config.supervised
  values = check_supervised_labels(config, dataset, inv.indices)
  y = np.where(values == str(sc.positive), 1, np.where(values == str(sc.negative), 0, -1))
  keep = y >= 0
  boundary = dirs.fit_boundary(inv.latents[keep], y[keep], key, method=str(sc.classifier),
                               l2=float(sc.l2), steps=int(sc.steps),
                               learning_rate=float(sc.learning_rate),
                               val_fraction=float(sc.val_fraction), c=float(sc.c),
                               groups=(inv.subject_id[keep]
                                       if str(sc.get("held_out", "subjects")) == "subjects"
                                       else None))
  d = boundary.to_directions(model=gen.name, space=gen.latent_spec.space,
                             name=f"{sc.negative}->{sc.positive}")
  dec = boundary.decision(inv.latents)
  separation = float(dec[y == 1].mean() - dec[y == 0].mean())
  unit = abs(separation) / float(sc.alpha_per_separation)
  if not unit > 0:
    unit = 1.0 / float(sc.alpha_per_separation)
  d.meta.update(alpha_unit=unit, class_separation=separation, fingerprint=fingerprint,
                num_labelled={str(sc.negative): int((y == 0).sum()),
                              str(sc.positive): int((y == 1).sum())})
  dirs.save_directions(os.path.join(out_dir, "interfacegan_directions"), d, force=True)
  healthy = np.flatnonzero(y == 0)[:4]
  alphas = np.linspace(float(config.traversal.alpha_start), float(config.traversal.alpha_stop),
                       6).astype(np.float32)
  grid = traverse(gen, jnp.asarray(inv.latents[healthy]), jnp.asarray(d.vectors[0] * unit),
                  jnp.asarray(alphas))
  return Supervised(d, y, healthy, alphas, np.asarray(grid))


def traversal_alphas(config) -> np.ndarray:
  """The eigen-analysis schedule ``config.traversal.alpha_start..alpha_stop``, float32
  ``[alpha_num]``."""
  t = config.traversal
  return np.linspace(float(t.alpha_start), float(t.alpha_stop),
                     int(t.alpha_num)).astype(np.float32)


def traverse_and_eigen(gen, found: dict[str, Any], inv: InvertedSlices, masks: np.ndarray,
                       labels, config) -> Eigen:
  """Traverses each method's first directions (in display order: the best-aligned per
  factor first) from the selected codes; eigen-analysis."""
  t = config.traversal
  alphas = traversal_alphas(config)
  cand = np.arange(len(inv.indices))
  if labels is not None:
    cand = cand[labels == 0]  # traverse healthy subjects (Güllmar)
  subjects = list(dict.fromkeys(inv.subject_id[cand].tolist()))
  if int(t.max_subjects) > 0:
    subjects = subjects[:int(t.max_subjects)]
  sel = cand[np.isin(inv.subject_id[cand], subjects)]
  per_method = []
  for method, d in found.items():
    if d.collapsed or sel.size == 0:
      continue
    k = 1 if method in SUPERVISED else min(d.num_directions, int(t.directions_per_method))
    scale = float(d.meta.get("alpha_unit" if method in SUPERVISED else "distance_scale", 1.0))
    vecs = d.vectors[:k] * scale
    res = jax.device_get(traverse_and_analyze(
        gen, jnp.asarray(inv.latents[sel], jnp.float32), jnp.asarray(vecs, jnp.float32),
        jnp.asarray(masks[sel], jnp.float32), jnp.asarray(alphas, jnp.float32),
        batch_size=256, center=str(t.center), n_components=min(int(t.n_components), len(alphas))))
    rep = len(sel) // 2 if labels is None else 0
    i0 = sel[rep]
    frames = np.asarray(traverse(gen, jnp.asarray(inv.latents[i0:i0 + 1]), jnp.asarray(vecs[0]),
                                 jnp.asarray(alphas)))[0]
    per_method.append(MethodEigen(method, d, k, res, frames, rep, np.asarray(vecs)))
  return Eigen(alphas, sel, subjects, labels is not None, per_method, "")


def scrubber_frames(gen, eigen: Eigen, inv: InvertedSlices, config) -> list[Scrubber]:
  """Per analysed direction, the scrubbable traversal of every traversed subject.

  Up to ``config.report.scrubber_slices`` evenly spaced slices per subject (the same
  count for each, so one slice slider serves all).  Only these slices are rendered
  again; their subtraction and component maps are the eigen-analysis' own.
  """
  from jaxlatent.analysis.traversal import traverse_many  # pylint: disable=g-import-not-at-top
  from jaxlatent.viz.scrubber import traversal_panels  # pylint: disable=g-import-not-at-top
  n_max = int(config.report.scrubber_slices)
  sel = eigen.selected
  if n_max <= 0 or not eigen.methods or sel.size == 0:
    return []
  ordered = {}  # subject -> its positions in the selection, by slice index
  for sid in eigen.subjects:
    pos = np.flatnonzero(inv.subject_id[sel] == sid)
    ordered[sid] = pos[np.argsort(inv.slice_index[sel][pos], kind="stable")]
  n = min(n_max, min(len(p) for p in ordered.values()))
  # linspace steps are >= 1 here, so the rounded picks are distinct slices.
  shown = {sid: p[np.round(np.linspace(0, len(p) - 1, n)).astype(int)]
           for sid, p in ordered.items()}
  flat = np.concatenate(list(shown.values()))  # [subjects * n]
  index = np.stack([inv.slice_index[sel][p] for p in shown.values()])  # [subjects, n]
  if (index == index[0]).all():
    labels = [f"slice {int(i)}" for i in index[0]]
  else:  # subjects were cut differently: name slices by their place in each volume
    labels = [f"slice {i + 1} of {n}" for i in range(n)]
  latents = jnp.asarray(inv.latents[sel][flat], jnp.float32)
  out = []
  for m in eigen.methods:
    if int(np.asarray(m.result.component_maps).shape[-4]) < 2:
      continue  # no component 2 to show
    images = np.asarray(traverse_many(gen, latents, jnp.asarray(m.vectors, jnp.float32),
                                      jnp.asarray(eigen.alphas), batch_size=256))
    for j in range(m.k):
      res = jax.tree.map(lambda x, j=j: np.asarray(x)[flat][:, j], m.result)
      panels = traversal_panels(images[j], res)  # each [subjects * n, T, H, W]
      frames = {sid: {k: v[i * n:(i + 1) * n] for k, v in panels.items()}
                for i, sid in enumerate(shown)}
      out.append(Scrubber(m.method, str(m.directions.names[j]), frames, labels))
  return out


def write_nifti_maps(eigen: Eigen, inv: InvertedSlices, dataset, out_dir: str,
                     dicom_dir: str = "") -> None:
  """Per subject and direction: component and subtraction volumes ([H, W, slices, K]).

  Subjects read from DICOM also get their maps as DICOM series in ``dicom_dir`` (in
  the scan's study and frame of reference, so a viewer overlays them on the scan).
  """
  from jaxlatent.analysis.dicom_out import write_subject_maps_dicom  # pylint: disable=g-import-not-at-top
  eigen.nifti_dir = out_dir
  sel = eigen.selected
  for m in eigen.methods:
    for j in range(m.k):
      tag = report.safe_name(f"{m.method}-{m.directions.names[j]}")
      for sid in eigen.subjects:
        pos = np.flatnonzero(inv.subject_id[sel] == sid)
        pos = pos[np.argsort(inv.slice_index[sel][pos], kind="stable")]
        info = dataset.subjects.get(sid, {})
        maps = dict(subtraction_maps=np.asarray(m.result.subtraction_maps)[pos, j], tag=tag)
        write_subject_maps(out_dir, report.safe_name(sid), info, inv.slice_index[sel][pos],
                           np.asarray(m.result.component_maps)[pos, j], **maps)
        if dicom_dir and info.get("dicom"):
          write_subject_maps_dicom(dicom_dir, report.safe_name(sid), info,
                                   inv.slice_index[sel][pos],
                                   np.asarray(m.result.component_maps)[pos, j], **maps)
          eigen.dicom_dir = dicom_dir


def ground_truth(trained: TrainedGenerator, config, direction, alphas, key, out_dir: str
                 ) -> GroundTruth:
  """Component-2 and subtraction maps vs the phantom's true HC -> MS difference map."""
  gc = config.ground_truth
  _log(f"ground truth: {gc.num_subjects} held-out healthy brain phantoms, HC vs MS version")
  subj = phantom_edit_subjects("brain", int(gc.num_subjects),
                               int(trained.train_config.image_size), int(gc.seed),
                               slice_position=float(gc.slice_position))
  path = os.path.join(out_dir, "ground_truth_latents.npz")
  expected = fp_lib.artifact_fingerprint(generator_fingerprint(trained),
                                         inversion=config.inversion, ground_truth=gc,
                                         seed=int(config.seed))
  f = artifacts.reuse_artifact("ground truth", path, expected, str(config.cache_mismatch), _log)
  lat = None if f is None else f["latents"]
  if lat is None:
    lat, _, _ = invert_images(trained.generator, subj.images, config.inversion, key,
                              encode_fn=trained.encode_fn)  # no masks: whatever use_mask
    artifacts.save_artifact(path, expected, latents=lat)
  unit = float(direction.meta.get("alpha_unit", 1.0))
  scores = score_edits(trained.generator, jnp.asarray(lat),
                       jnp.asarray(direction.vectors[0] * unit), jnp.asarray(alphas),
                       jnp.asarray(subj.true_difference), jnp.asarray(subj.masks))
  images = np.asarray(scores.images[0])
  res = jax.device_get(eigen_analysis(jnp.asarray(images), jnp.asarray(subj.masks[0], jnp.float32),
                                      jnp.asarray(alphas), n_components=2))
  return GroundTruth(subj, scores.summary(), images, res)


# ----------------------------------------------------------------------------- main


def run_analysis(config: ml_collections.ConfigDict, workdir: str,
                 out_dir: str | None = None) -> str:
  """Runs the analysis of the training run in ``workdir``; returns the report's path.

  Args:
    config: an analysis config (configs/analyze_*.py); missing fields take
      :func:`jaxlatent.studies.config.default_analysis_config` values.
    workdir: a ``train.py`` workdir (config.json + checkpoints/).
    out_dir: report folder (default ``<workdir>/report``).

  Raises:
    ConfigError, DataError: bad config or images; every check that needs no compute
      runs before anything is written (:mod:`jaxlatent.studies.preflight`).
    CheckpointError: ``workdir`` is no training workdir or has no readable checkpoint.
    OutputError: ``out_dir`` is a regular file or cannot be written.
    WorkdirBusyError: another process is analysing into ``out_dir``.
  """
  clock = report.Clock()
  config = complete_analysis_config(config)
  validate_analysis_config(config)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  out = os.path.abspath(out_dir or os.path.join(workdir, "report"))
  dir_out = os.path.join(out, "directions")
  what = "analysis output folder (--out)"
  # Every check that needs no compute comes before the first write.
  atomic_io.check_writable_dir(out, what)
  trained = load_generator(workdir, str(config.space))
  gen = trained.generator
  preflight_analysis(config, trained)
  key = jax.random.PRNGKey(int(config.seed))
  with artifacts.locked_output_dir(out, what):
    _log(f"analysing {gen.name} ({trained.train_config.model.name}, step {trained.step}) "
         f"from {workdir}")
    # The images first: their remaining checks (labels of the selected subjects) fail
    # before the discovery's compute.
    dataset = load_images(config, trained.train_config, out)
    if "interfacegan" in config.methods:
      check_supervised_labels(config, dataset,
                              select_subjects(dataset, int(config.images.max_subjects)))
    samples = gen(gen.sample_latents(jax.random.fold_in(key, 0),
                                     int(config.report.num_samples)))
    found = discover_directions(trained, config, key, dir_out)
    inv = invert_or_load(trained, config, dataset, jax.random.fold_in(key, 2),
                         os.path.join(out, "inversion"))
    supervised = None
    if "interfacegan" in config.methods:
      supervised = fit_supervised(
          gen, config, dataset, inv, jax.random.fold_in(key, 3), dir_out,
          fp_lib.artifact_fingerprint(generator_fingerprint(trained),
                                      **method_settings(config, "interfacegan")))
    analysed = {m: f.directions for m, f in found.items()}
    if supervised is not None:
      analysed["interfacegan"] = supervised.directions
    masks = np.asarray(dataset.masks[inv.indices], bool)
    eigen = traverse_and_eigen(gen, analysed, inv, masks,
                               None if supervised is None else supervised.labels, config)
    write_nifti_maps(eigen, inv, dataset, os.path.join(out, "nifti"),
                     os.path.join(out, "dicom"))
    scrubbers = scrubber_frames(gen, eigen, inv, config)
    truth = None
    if (supervised is not None and config.ground_truth.enabled
        and trained.train_config.data.source == "phantom_brain"):
      truth = ground_truth(trained, config, supervised.directions, eigen.alphas,
                           jax.random.fold_in(key, 4), os.path.join(out, "inversion"))

    path = report.write_analysis_report(
        out, config, report.AnalysisResults(
            trained=trained, samples=np.asarray(samples), found=found, dataset=dataset,
            inverted=inv, masks=masks, supervised=supervised, eigen=eigen,
            ground_truth=truth, scrubbers=scrubbers),
        clock)
  _log(f"report: {path}")
  return path
