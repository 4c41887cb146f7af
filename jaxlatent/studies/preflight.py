"""The analysis' checks that need the restored generator or the inputs, but no compute.

:func:`jaxlatent.studies.config.validate_analysis_config` checks the config alone;
:func:`preflight_analysis` runs after the training run is restored and before the
output folder is created: method settings against the latent space, the images to
invert (path, labels CSV, label rows without an image) and, for InterFaceGAN, that
both classes occur among the subjects that will be inverted.  Held-out phantom
subjects' labels come from the population draw alone (no rendering); DICOM labels
are checked by :func:`check_supervised_labels` once the images are loaded, still
before any discovery.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from jaxlatent.data.labels import load_labels
from jaxlatent.data.nifti import find_nifti_files, subject_id_from_path
from jaxlatent.directions.sefa import find_kernels
from jaxlatent.directions.voynov import VoynovConfig
from jaxlatent.errors import ConfigError, DataError

# Mask files beside the volumes are not subjects (as the data loader skips them).
_MASK_SUFFIXES = ("_mask", "_seg", "-mask")


def preflight_analysis(config, trained) -> None:
  """Raises ConfigError / DataError naming the key for anything wrong before compute."""
  spec = trained.generator.latent_spec
  methods = tuple(config.methods)
  if "voynov" in methods:
    try:
      VoynovConfig.from_config(config.voynov).validate(spec.size)
    except ConfigError as e:
      raise ConfigError(f"config.voynov: {e}") from None
  if "sefa" in methods:
    d = spec.size if spec.space == "z" else spec.shape[-1]
    if not 1 <= int(config.sefa_components) <= d:
      raise ConfigError(f"config.sefa_components={config.sefa_components} must be in 1..{d} "
                        f"(the {spec.space} size of {trained.generator.name})")
    if spec.space == "z" and not find_kernels(trained.generator.params, in_dim=spec.size):
      # SeFa factorises the linear layer that takes z; some decoders (Schön's VAE:
      # residual up-blocks on z as a 1x1 image) have none.
      raise ConfigError(f"config.methods has 'sefa', but {trained.generator.name} has no "
                        f"dense layer taking the {spec.size}-d z (SeFa's closed form needs "
                        "one); drop 'sefa' from config.methods")
  if "ganspace" in methods:
    n = int(config.ganspace_samples)
    if n < 2:
      raise ConfigError(f"config.ganspace_samples={n} must be >= 2 (PCA)")
    if spec.space == "z":
      h = int(trained.train_config.image_size)
      f = max(1, h // 8)
      features = (h // f) ** 2  # the analysis' pooled-image features
    else:
      features = spec.size
    most = min(n, features)
    if not 0 <= int(config.ganspace_components) <= most:
      raise ConfigError(f"config.ganspace_components={config.ganspace_components} must be in "
                        f"0..{most} (0: all; {features} features, {n} samples)")
  check_images(config, trained.train_config)


def _nifti_subjects(path: str) -> list[str]:
  files = find_nifti_files(path, "config.images.path")
  ids = [subject_id_from_path(f) for f in files]
  return [s for s in ids if not s.endswith(_MASK_SUFFIXES)]


def check_images(config, train_config) -> None:
  """The images to invert exist; labels CSV rows match images; InterFaceGAN's classes."""
  ic = config.images
  source = str(ic.source)
  selected_labels = None  # label column -> values of the selected subjects, when known
  columns: list[str] | None = None
  if source == "heldout":
    data_source = str(train_config.data.source)
    if not data_source.startswith("phantom_"):
      raise ConfigError("config.images.source='heldout' re-draws phantom subjects, but the "
                        f"generator was trained on {data_source} data: set config.images."
                        f"source={data_source!r} and config.images.path to held-out scans")
    if int(ic.num_images) < 1:
      raise ConfigError(f"config.images.num_images={ic.num_images} must be >= 1")
    selected_labels = _heldout_labels(data_source.split("_", 1)[1], int(ic.num_images),
                                      int(train_config.data.seed) + int(ic.seed_offset),
                                      int(ic.max_subjects))
    columns = sorted(selected_labels)
  elif source == "nifti":
    ids = _nifti_subjects(str(ic.path))
    if not ids:
      raise DataError(f"config.images.path={str(ic.path)!r}: every file is named like a mask; "
                      "no volumes to invert")
    if str(ic.labels_csv).strip():
      table = load_labels(str(ic.labels_csv))
      extra = sorted(set(table.ids) - set(ids))
      if extra:
        more = f" (+{len(extra) - 8} more)" if len(extra) > 8 else ""
        raise DataError(f"config.images.labels_csv={str(ic.labels_csv)!r} has rows for "
                        f"subject(s) {extra[:8]}{more} with no image in config.images.path="
                        f"{str(ic.path)!r}")
      chosen = ids[:int(ic.max_subjects)] if int(ic.max_subjects) > 0 else ids
      selected_labels = {k: v for k, v in table.lookup(chosen).items()}
      columns = sorted(table.columns)
    else:
      columns = []
  elif source == "dicom":
    path = os.path.expanduser(str(ic.path))
    if not os.path.isdir(path):
      raise DataError(f"config.images.path={str(ic.path)!r}: no such DICOM folder")
    if str(ic.labels_csv).strip():
      columns = sorted(load_labels(str(ic.labels_csv)).columns)
  if "interfacegan" in tuple(config.methods) and columns is not None:
    col = str(config.supervised.label_column)
    if col not in columns:
      raise DataError(f"config.supervised.label_column={col!r} is not a label of the images "
                      f"to invert (labels: {columns}); give labelled images "
                      "(config.images.labels_csv for NIfTI / DICOM)")
    if selected_labels is not None:
      _check_two_classes(config, np.asarray(selected_labels[col]).astype(str))


def _heldout_labels(kind: str, num_images: int, seed: int, max_subjects: int) -> dict:
  """Labels of the first ``max_subjects`` held-out phantom subjects, without rendering.

  The population draw of :func:`jaxlatent.phantoms.render_dataset` (same key, same
  subject count), which assigns every subject's labels before any image is rendered.
  """
  from jaxlatent.phantoms import population  # pylint: disable=g-import-not-at-top
  n_sub = math.ceil(num_images / population.SLICES_PER_SUBJECT)
  pop = population.draw_population(kind, jax.random.fold_in(jax.random.PRNGKey(seed), 0),
                                   n_sub)
  keep = n_sub if max_subjects <= 0 else min(n_sub, max_subjects)
  names = ("group", "age") if kind == "brain" else ("group", "large_breast")
  return {k: np.asarray(pop[k])[:keep] for k in names if k in pop}


def _check_two_classes(config, values: np.ndarray) -> None:
  sc = config.supervised
  neg, pos = str(sc.negative), str(sc.positive)
  found = dict(zip(*np.unique(values, return_counts=True)))
  found = {str(k): int(v) for k, v in found.items()}
  if found.get(neg, 0) < 1 or found.get(pos, 0) < 1:
    raise DataError(
        f"config.supervised.label_column={str(sc.label_column)!r}: InterFaceGAN needs both "
        f"classes negative={neg!r} and positive={pos!r} among the subjects to invert, found "
        f"{found or 'none'} (config.images.max_subjects={int(config.images.max_subjects)})")


def check_supervised_labels(config, dataset, rows) -> np.ndarray:
  """The InterFaceGAN label of each of ``rows`` (str); DataError naming the key if unusable."""
  col = str(config.supervised.label_column)
  if col not in dataset.labels:
    raise DataError(f"config.supervised.label_column={col!r} is not a label of the inverted "
                    f"images (labels: {sorted(dataset.labels)}); give labelled images "
                    "(config.images.labels_csv for NIfTI / DICOM)")
  values = np.asarray(dataset.labels[col])[np.asarray(rows)].astype(str)
  _check_two_classes(config, values)
  return values
