"""``load_dataset``: config -> validated inputs -> cached, preprocessed ``SliceDataset``.

Real data (source 'nifti'), per volume:
  load (canonical RAS, NaN check) -> foreground mask (mask NIfTI or automatic)
  -> intensity mapping to [-1, 1] from the whole volume (CT window / MR
  foreground percentiles) -> slices in the slice range along the axis (display
  orientation, see :mod:`jaxlatent.data.slicing`) -> skip near-empty slices
  -> square resize with physical aspect ratio (pad -1) -> appended to the cache.
DICOM series (source 'dicom', :mod:`jaxlatent.data.dicom`) take the same path
from the canonical volume on.
Phantoms (source 'phantom_thorax' / 'phantom_brain') come from
``jaxlatent.phantoms.render_dataset`` and get the same normalisation and cache.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, Callable

import ml_collections
import numpy as np

from jaxlatent.data import cache as cache_lib
from jaxlatent.data import dicom as dicom_lib
from jaxlatent.data.config import is_int_range, validate_data_config
from jaxlatent.data.intensity import intensity_range, mr_percentile_range, scale_to_unit
from jaxlatent.data.labels import load_labels
from jaxlatent.data.masks import auto_mask_for_modality
from jaxlatent.data.nifti import (canonical_shape, find_nifti_files, load_mask, load_volume,
                                  subject_id_from_path)
from jaxlatent.data.resize import resize_images, resize_masks, square_geometry
from jaxlatent.data.slicing import (axis_index, extract_slices, foreground_fractions,
                                    resolve_slice_range, slice_pixel_spacing, slice_positions)
from jaxlatent.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Fields that change the cached bytes.  label_column and cache_dir do not.
_SETTING_KEYS = ("source", "path", "labels_csv", "mask_path", "modality", "ct_window",
                 "mr_percentiles", "axis", "slice_range", "skip_empty", "empty_fraction",
                 "replace_nonfinite", "volume_index", "num_images", "seed")


def preprocessing_settings(cfg: ml_collections.ConfigDict, image_size: int) -> dict[str, Any]:
  """The JSON-able settings that determine the cache content."""
  out = {}
  for k in _SETTING_KEYS:
    v = cfg[k]
    out[k] = list(v) if isinstance(v, (tuple, list)) else v
  if cfg.source not in ("nifti", "dicom"):  # Real-data-only fields do not affect phantoms.
    for k in ("path", "labels_csv", "mask_path", "modality", "slice_range", "skip_empty",
              "empty_fraction", "replace_nonfinite", "volume_index", "axis"):
      out.pop(k)
  else:
    for k in ("num_images", "seed"):
      out.pop(k)
  out["image_size"] = int(image_size)
  return out


MASK_SUFFIXES = ("_mask", "_seg", "-mask")


def _match_masks(mask_path: str, subject_ids: list[str]) -> dict[str, str]:
  """Maps each subject id to its mask file ``<id>_mask.nii[.gz]`` (preferred) or ``<id>.nii[.gz]``.

  A suffixed name wins, so ``mask_path`` may be the data folder itself.
  """
  by_id: dict[str, str] = {}
  suffixed: set[str] = set()
  for f in find_nifti_files(mask_path, "data.mask_path"):
    sid = subject_id_from_path(f)
    for suffix in MASK_SUFFIXES:
      if sid.endswith(suffix) and sid[: -len(suffix)] in subject_ids:
        sid = sid[: -len(suffix)]
        by_id[sid] = f
        suffixed.add(sid)
        break
    else:
      if sid not in suffixed:
        by_id.setdefault(sid, f)
  missing = [s for s in subject_ids if s not in by_id]
  if missing:
    raise DataError(f"data.mask_path={mask_path!r} has no mask for subject(s) "
                    f"{missing[:5]}{' ...' if len(missing) > 5 else ''} (expected "
                    f"'<id>.nii[.gz]' or '<id>_mask.nii[.gz]')")
  return {s: by_id[s] for s in subject_ids}


def _plan_nifti(cfg) -> dict[str, Any]:
  """Validates every input (headers, ranges, masks, labels) before any voxel is read."""
  all_files = find_nifti_files(cfg.path, "data.path")
  # Mask files living beside the volumes (``<id>_mask.nii.gz``) are not subjects.
  files = [f for f in all_files if not subject_id_from_path(f).endswith(MASK_SUFFIXES)]
  if not files:
    raise DataError(f"data.path={cfg.path!r}: every file is named like a mask "
                    f"(*{'/*'.join(MASK_SUFFIXES)}); no volumes to load")
  if len(files) < len(all_files):
    log.info("data.path: skipped %d mask file(s) named *_mask/*_seg", len(all_files) - len(files))
  ids = [subject_id_from_path(f) for f in files]
  seen: dict[str, str] = {}
  for f, sid in zip(files, ids):
    if sid in seen:
      raise DataError(f"subject id {sid!r} is used by two files: {seen[sid]!r} and {f!r}")
    seen[sid] = f
  ax = axis_index(cfg.axis)
  if tuple(cfg.slice_range) == (0, 1) and is_int_range(cfg.slice_range):
    log.warning("data.slice_range=(0, 1) holds ints: that is the single absolute slice 0; "
                "write (0.0, 1.0) for every slice")
  ranges, shapes = [], []
  for f in files:
    shape = canonical_shape(f, cfg.volume_index)
    shapes.append(shape)
    ranges.append(resolve_slice_range(tuple(cfg.slice_range), shape[ax], f))
  masks = _match_masks(cfg.mask_path, ids) if cfg.mask_path else {}
  table = None
  if cfg.labels_csv:
    required = [cfg.label_column] if cfg.label_column else []
    table = load_labels(cfg.labels_csv, None, required)
    table.lookup(ids)  # Unknown ids fail here, before any compute.
  elif cfg.label_column:
    raise ConfigError(f"data.label_column={cfg.label_column!r} needs data.labels_csv "
                      "for source 'nifti'")
  inputs = list(files) + [masks[s] for s in ids if s in masks]
  if cfg.labels_csv:
    inputs.append(cfg.labels_csv)
  return dict(files=files, ids=ids, axis=ax, ranges=ranges, shapes=shapes, masks=masks,
              table=table, inputs=inputs)


def _build_nifti(cfg, plan, image_size: int, cache_dir: str, settings: dict,
                 fp: str, validate=None) -> dict:
  ax = plan["axis"]
  max_slices = sum(stop - start for start, stop in plan["ranges"])
  cols = {"subject_id": [], "source_file": [], "slice_index": [], "slice_position": []}
  subjects: dict[str, dict] = {}
  with cache_lib.CacheWriter(cache_dir, max_slices, image_size) as writer:
    for f, sid, (start, stop) in zip(plan["files"], plan["ids"], plan["ranges"]):
      if "load" in plan:  # DICOM series
        vol = plan["load"](sid)
      else:
        vol = load_volume(f, cfg.volume_index, cfg.replace_nonfinite)
      if sid in plan["masks"]:
        mask = load_mask(plan["masks"][sid], vol)
      else:
        mask = auto_mask_for_modality(vol.data, cfg.modality, ax, f)
      lo, hi = intensity_range(vol.data, cfg.modality, tuple(cfg.ct_window),
                               tuple(cfg.mr_percentiles), mask, f)  # whole volume.
      idx = np.arange(start, stop)
      mslices = extract_slices(mask, ax, idx)  # [n, H, W] bool.
      if cfg.skip_empty:
        keep = foreground_fractions(mslices) >= cfg.empty_fraction
        idx, mslices = idx[keep], mslices[keep]
      geom = square_geometry(mslices.shape[1:], slice_pixel_spacing(vol.spacing, ax),
                             image_size)
      subjects[sid] = {"source_file": f, "affine": vol.affine.tolist(),
                       "spacing": vol.spacing.tolist(), "shape": list(vol.shape),
                       "axis": cfg.axis, "volume_index": int(cfg.volume_index),
                       "slice_range": [int(start), int(stop)], "num_slices": int(len(idx)),
                       "geometry": geom.to_dict(), **plan.get("subject_meta", {}).get(sid, {})}
      if len(idx) == 0:
        log.warning("%s: every slice in [%d, %d) is below the foreground fraction %g; "
                    "subject %s contributes no slice", f, start, stop, cfg.empty_fraction, sid)
        continue
      islices = scale_to_unit(extract_slices(vol.data, ax, idx), lo, hi)  # [n, H, W]
      writer.append(resize_images(islices, geom), resize_masks(mslices, geom))
      n = len(idx)
      cols["subject_id"] += [sid] * n
      cols["source_file"] += [f] * n
      cols["slice_index"] += idx.tolist()
      cols["slice_position"] += slice_positions(idx, vol.shape[ax]).tolist()
      log.info("%s: %d slices", f, n)
    if writer.n == 0:
      raise DataError(f"no slice left from {len(plan['files'])} file(s) in {cfg.path!r}: all "
                      f"are below the foreground fraction data.empty_fraction="
                      f"{cfg.empty_fraction} (or set data.skip_empty=False)")
    labels = {}
    if plan["table"] is not None:
      keys = plan.get("label_keys", {})
      labels = dict(plan["table"].lookup([keys.get(s, s) for s in cols["subject_id"]]))
    return writer.finish(_meta(cols, labels, {}, subjects, settings, fp), validate)


def _meta(cols, labels, factors, subjects, settings, fp) -> dict:
  def col(a):
    a = np.asarray(a)
    return {"dtype": "str" if a.dtype.kind in "US" else "float",
            "values": a.astype(str if a.dtype.kind in "US" else np.float64).tolist()}
  return {"fingerprint": fp, "settings": settings,
          "columns": {k: list(v) for k, v in cols.items()},
          "labels": {k: col(v) for k, v in labels.items()},
          "factors": {k: np.asarray(v, np.float64).tolist() for k, v in factors.items()},
          "subjects": subjects}


_PHANTOM_KEYS = ("images", "masks", "subject_id", "slice_position")


def _phantom_module():
  """``jaxlatent.phantoms`` (looked up in sys.modules first, so tests can swap it)."""
  try:
    module = importlib.import_module("jaxlatent.phantoms")
  except ImportError as e:
    raise ConfigError(f"data.source needs jaxlatent.phantoms, which cannot be imported: {e}"
                      ) from None
  if not callable(getattr(module, "render_dataset", None)):
    raise ConfigError("data.source needs jaxlatent.phantoms.render_dataset, which does "
                      "not exist (yet)")
  return module


def _phantom_sources(module) -> list[str]:
  """The phantom package's .py files, so editing the renderer invalidates caches."""
  files = []
  if getattr(module, "__file__", None):
    files.append(module.__file__)
  for d in getattr(module, "__path__", []) or []:
    files += [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".py")]
  return sorted({f for f in files if os.path.isfile(f)})


def _build_phantom(cfg, kind: str, image_size: int, cache_dir: str, settings: dict,
                   fp: str, validate=None) -> dict:
  phantoms = _phantom_module()
  out = phantoms.render_dataset(kind, n=int(cfg.num_images), size=int(image_size),
                                seed=int(cfg.seed))
  n = int(cfg.num_images)
  missing = [k for k in _PHANTOM_KEYS if k not in out]
  if missing:
    raise DataError(f"phantoms.render_dataset({kind!r}) returned no {missing}")
  images = np.asarray(out["images"], np.float32)
  masks = np.asarray(out["masks"], bool)
  if images.shape != (n, image_size, image_size) or masks.shape != images.shape:
    raise DataError(f"phantoms.render_dataset({kind!r}) returned images {images.shape} / "
                    f"masks {masks.shape}, expected {(n, image_size, image_size)}")
  name = f"phantom_{kind}"
  if not np.all(np.isfinite(images)):
    raise DataError(f"{name}: rendered images contain NaN/Inf")
  sids = np.asarray(out["subject_id"]).astype(str)
  # Per-slice (low, high) of the linear map to [-1, 1]: the CT window, or the MR
  # percentiles of each subject's foreground (all its slices together).
  lo = np.empty(n, np.float64)
  hi = np.empty(n, np.float64)
  subjects = {}
  for sid in dict.fromkeys(sids.tolist()):  # Subjects in first-seen order.
    idx = np.flatnonzero(sids == sid)
    if kind == "thorax":
      lo[idx], hi[idx] = cfg.ct_window
    else:
      fg = masks[idx] if masks[idx].any() else None
      lo[idx], hi[idx] = mr_percentile_range(images[idx], tuple(cfg.mr_percentiles), fg,
                                             f"{name}:{sid}")
    subjects[sid] = {"source_file": name, "affine": None, "spacing": None,
                     "shape": [int(len(idx)), image_size, image_size], "axis": "axial",
                     "num_slices": int(len(idx))}
  with cache_lib.CacheWriter(cache_dir, n, image_size) as writer:
    for i in range(0, n, 256):  # Slices keep the renderer's order.
      j = slice(i, min(i + 256, n))
      writer.append(scale_to_unit(images[j], lo[j, None, None], hi[j, None, None]), masks[j])
    cols = {"subject_id": sids.tolist(), "source_file": [name] * n,
            "slice_index": list(range(n)),  # Index in the rendered set.
            "slice_position": np.asarray(out["slice_position"], np.float64).tolist()}
    labels = {k: np.asarray(v) for k, v in out.get("labels", {}).items()}
    factors = {k: np.asarray(v) for k, v in out.get("factors", {}).items()}
    for k, v in list(labels.items()) + list(factors.items()):
      if v.shape != (n,):
        raise DataError(f"phantoms.render_dataset({kind!r}): column {k!r} has shape "
                        f"{v.shape}, expected ({n},)")
    return writer.finish(_meta(cols, labels, factors, subjects, settings, fp), validate)


def load_dataset(data_config: ml_collections.ConfigDict, image_size: int,
                 cache_dir: str | None = None,
                 check: Callable[["cache_lib.SliceDataset"], None] | None = None,
                 ) -> "cache_lib.SliceDataset":
  """Builds (or re-uses) the preprocessed cache for ``data_config`` and opens it.

  Args:
    data_config: see :func:`jaxlatent.data.config.default_data_config`.
    image_size: side S of the square slices.
    cache_dir: cache folder; None or '' uses ``data_config.cache_dir``.
    check: the caller's validation of the data set (e.g. enough images for the
      batch size); it raises to refuse it.  A newly built cache replaces the
      existing one only after ``check`` passed, so a refused build leaves the
      previous cache byte-identical.

  Returns:
    The :class:`SliceDataset` (images memory-mapped read-only from the cache).

  Raises:
    ConfigError / DataError naming the key or file, before any heavy compute
    where the problem can be seen from the config, headers and CSV alone.
  """
  validate_data_config(data_config, image_size)
  cache_dir = cache_dir or data_config.cache_dir
  if not cache_dir:
    raise ConfigError("no cache folder: pass cache_dir or set data.cache_dir")
  cfg = data_config
  settings = preprocessing_settings(cfg, image_size)
  if cfg.source in ("nifti", "dicom"):
    plan = _plan_nifti(cfg) if cfg.source == "nifti" else dicom_lib.plan_dicom(cfg, _match_masks)
    inputs = plan["inputs"]
  else:
    kind = cfg.source.split("_", 1)[1]
    phantoms = _phantom_module()
    inputs = _phantom_sources(phantoms)
    settings["phantom_kind"] = kind
  fp = cache_lib.fingerprint(inputs, settings)

  def accept(ds):
    if cfg.label_column and cfg.label_column not in ds.labels:
      raise ConfigError(f"data.label_column={cfg.label_column!r} is not a label of this "
                        f"dataset (labels: {sorted(ds.labels)})")
    if check is not None:
      check(ds)

  def validate(build_dir: str) -> None:
    built = cache_lib.load_cache(build_dir, fp, cfg.label_column, verify=False)
    if built is None:
      raise DataError(f"the cache just built in {cache_dir!r} cannot be read back")
    accept(built)

  ds = cache_lib.load_cache(cache_dir, fp, cfg.label_column)
  if ds is not None:
    log.info("re-using the preprocessed cache in %s (%d slices, fingerprint %s)",
             cache_dir, len(ds), fp[:12])
    accept(ds)
    return ds
  log.info("building the preprocessed cache in %s", cache_dir)
  if cfg.source in ("nifti", "dicom"):
    meta = _build_nifti(cfg, plan, image_size, cache_dir, settings, fp, validate)
  else:
    meta = _build_phantom(cfg, kind, image_size, cache_dir, settings, fp, validate)
  # Hashing is skipped when meta.json still holds the checksums just computed.
  ds = cache_lib.load_cache(cache_dir, fp, cfg.label_column, verify=meta["checksums"])
  if ds is None:
    raise DataError(f"the cache just built in {cache_dir!r} cannot be read back")
  return ds
