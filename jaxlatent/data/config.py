"""Data configuration: the ``config.data`` block shared by every CLI.

Field names are a contract other modules rely on; see :func:`default_data_config`.
:func:`validate_data_config` checks a config before any file is read, so a typo
fails in milliseconds with a :class:`~jaxlatent.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import numbers

import ml_collections

from jaxlatent.errors import ConfigError

SOURCES = ("phantom_thorax", "phantom_brain", "nifti", "dicom")
MODALITIES = ("ct", "mr")
AXES = {"sagittal": 0, "coronal": 1, "axial": 2}  # index of the fixed axis in RAS.


def default_data_config() -> ml_collections.ConfigDict:
  """Returns the default data config (phantom thorax CT, axial slices).

  Fields:
    source: 'phantom_thorax' | 'phantom_brain' | 'nifti' | 'dicom'.
    path: folder, single file or glob of ``.nii``/``.nii.gz`` files (source 'nifti');
      a folder tree of DICOM files, one series per subject (source 'dicom').
    labels_csv: CSV with a ``subject_id`` (or ``filename``) column; '' = no labels.
      For DICOM it may be keyed by ``PatientID`` or ``SeriesInstanceUID`` instead.
    label_column: CSV/phantom column used as the class label of a batch; '' = none.
    mask_path: '' (automatic body/brain mask) or a folder/glob of mask NIfTIs,
      matched by subject id (``<id>.nii[.gz]`` or ``<id>_mask.nii[.gz]``).
    modality: 'ct' (HU windowing) or 'mr' (robust percentile normalisation).
      Phantoms ignore it: thorax is CT, brain is MR.
    ct_window: (low, high) HU window, clipped then scaled to [-1, 1].
    mr_percentiles: (low, high) percentiles of the foreground, mapped to [-1, 1].
    axis: 'sagittal' (x) | 'coronal' (y) | 'axial' (z) in canonical RAS.
    slice_range: (start, stop): floats = fractions of the extent in [0, 1],
      ints = absolute voxel indices (stop exclusive).
    skip_empty: drop slices whose foreground fraction is below ``empty_fraction``.
    empty_fraction: the foreground fraction threshold for ``skip_empty``.
    replace_nonfinite: replace NaN/Inf voxels by the volume minimum instead of
      raising a DataError.
    volume_index: -1 = 3D files only; >= 0 picks that volume of 4D files.
    num_images: number of slices rendered for phantom sources.
    seed: phantom rendering seed.
    cache_dir: preprocessed-cache folder; '' = ``<workdir>/cache`` (set by the CLI).
  """
  c = ml_collections.ConfigDict()
  c.source = "phantom_thorax"
  c.path = ""
  c.labels_csv = ""
  c.label_column = ""
  c.mask_path = ""
  c.modality = "ct"
  c.ct_window = (-1000.0, 2000.0)
  c.mr_percentiles = (0.5, 99.5)
  c.axis = "axial"
  c.slice_range = (0.0, 1.0)
  c.skip_empty = True
  c.empty_fraction = 0.05
  c.replace_nonfinite = False
  c.volume_index = -1
  c.num_images = 2048
  c.seed = 0
  c.cache_dir = ""
  return c


def _pair(cfg, key: str) -> tuple:
  value = cfg.get(key)
  if not isinstance(value, (tuple, list)) or len(value) != 2:
    raise ConfigError(f"data.{key} must be a pair (low, high), got {value!r}")
  for v in value:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
      raise ConfigError(f"data.{key} must hold two numbers, got {value!r}")
  return tuple(value)


def is_int_range(slice_range) -> bool:
  """True for absolute (int) slice ranges, False for fractional (float) ones."""
  return all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in slice_range)


def validate_data_config(cfg: ml_collections.ConfigDict, image_size: int | None = None) -> None:
  """Checks every field of a data config; raises ConfigError naming the bad key."""
  required = default_data_config().keys()
  missing = [k for k in required if k not in cfg]
  if missing:
    raise ConfigError(f"data config lacks the key(s) {', '.join(missing)}")
  if cfg.source not in SOURCES:
    raise ConfigError(f"data.source={cfg.source!r} is unknown; choose one of {', '.join(SOURCES)}")
  if cfg.source == "nifti" and not str(cfg.path).strip():
    raise ConfigError("data.path is empty: set it to a folder or glob of NIfTI files "
                      "when data.source='nifti'")
  if cfg.source == "dicom" and not str(cfg.path).strip():
    raise ConfigError("data.path is empty: set it to a folder of DICOM series "
                      "when data.source='dicom'")
  if cfg.modality not in MODALITIES:
    raise ConfigError(f"data.modality={cfg.modality!r} is unknown; choose 'ct' or 'mr'")
  if cfg.axis not in AXES:
    raise ConfigError(f"data.axis={cfg.axis!r} is unknown; choose one of {', '.join(AXES)}")
  lo, hi = _pair(cfg, "ct_window")
  if not lo < hi:
    raise ConfigError(f"data.ct_window={cfg.ct_window!r} needs low < high")
  lo, hi = _pair(cfg, "mr_percentiles")
  if not 0.0 <= lo < hi <= 100.0:
    raise ConfigError(f"data.mr_percentiles={cfg.mr_percentiles!r} needs 0 <= low < high <= 100")
  start, stop = _pair(cfg, "slice_range")
  if is_int_range((start, stop)):
    if not start < stop:
      raise ConfigError(f"data.slice_range={cfg.slice_range!r} needs start < stop")
  elif any(isinstance(v, numbers.Integral) for v in (start, stop)):
    raise ConfigError(f"data.slice_range={cfg.slice_range!r} mixes ints and floats: use two "
                      "ints (absolute indices) or two floats (fractions)")
  elif not 0.0 <= start < stop <= 1.0:
    raise ConfigError(f"data.slice_range={cfg.slice_range!r}: fractions need "
                      "0 <= start < stop <= 1")
  if not 0.0 <= float(cfg.empty_fraction) < 1.0:
    raise ConfigError(f"data.empty_fraction={cfg.empty_fraction!r} must be in [0, 1)")
  if isinstance(cfg.volume_index, bool) or not isinstance(cfg.volume_index, numbers.Integral) \
      or cfg.volume_index < -1:
    raise ConfigError(f"data.volume_index={cfg.volume_index!r} must be -1 (3D) or >= 0")
  if cfg.source not in ("nifti", "dicom"):
    if not isinstance(cfg.num_images, numbers.Integral) or cfg.num_images < 1:
      raise ConfigError(f"data.num_images={cfg.num_images!r} must be a positive int")
  if not isinstance(cfg.seed, numbers.Integral) or cfg.seed < 0:
    raise ConfigError(f"data.seed={cfg.seed!r} must be a non-negative int")
  if image_size is not None:
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) \
        or image_size < 4:
      raise ConfigError(f"image_size={image_size!r} must be an int >= 4")
