"""NIfTI / phantom data pipeline: volumes -> normalised square slices -> cached dataset.

Typical use::

  from jaxlatent import data
  cfg = data.default_data_config()
  cfg.source, cfg.path, cfg.modality = "nifti", "/data/ct/*.nii.gz", "ct"
  ds = data.load_dataset(cfg, image_size=128, cache_dir="runs/x/cache")
  for batch in data.iterate_batches(ds, batch_size=64, seed=0, start_step=step):
    ...  # batch["image"]: float32 [64, 128, 128, 1] in [-1, 1]
"""

from jaxlatent.data.cache import CacheWriter, fingerprint, load_cache, open_cache
from jaxlatent.data.config import AXES, default_data_config, validate_data_config
from jaxlatent.data.dataset import SliceDataset
from jaxlatent.data.export import save_slices_as_nifti, slices_to_volume
from jaxlatent.data.intensity import (intensity_range, mr_percentile_range, normalize, normalize_mr,
                                      scale_to_unit, window_ct)
from jaxlatent.data.iterator import (batch_indices, epoch_permutation, host_slice,
                                     iterate_batches, steps_per_epoch)
from jaxlatent.data.labels import LabelTable, categorical_to_ids, load_labels
from jaxlatent.data.masks import (auto_mask, auto_mask_for_modality, fill_holes,
                                  largest_component, otsu_threshold)
from jaxlatent.data.nifti import (Volume, canonical_shape, check_finite, find_nifti_files,
                                  load_mask, load_volume, save_volume, subject_id_from_path)
from jaxlatent.data.loading import load_dataset, preprocessing_settings
from jaxlatent.data.resize import SquareGeometry, resize_images, resize_masks, square_geometry
from jaxlatent.data.slicing import (axis_index, extract_slices, orient_slices,
                                    resolve_slice_range, slice_pixel_spacing, slice_positions)

__all__ = [
    "AXES", "CacheWriter", "LabelTable", "SliceDataset", "SquareGeometry", "Volume",
    "auto_mask", "auto_mask_for_modality", "axis_index", "batch_indices", "canonical_shape",
    "categorical_to_ids", "check_finite", "default_data_config", "epoch_permutation",
    "extract_slices", "fill_holes", "find_nifti_files", "fingerprint", "host_slice", "intensity_range",
    "iterate_batches", "largest_component", "load_cache", "load_dataset", "load_labels",
    "load_mask", "load_volume", "mr_percentile_range", "normalize", "normalize_mr",
    "open_cache", "orient_slices", "otsu_threshold", "preprocessing_settings",
    "resize_images", "resize_masks", "resolve_slice_range", "save_slices_as_nifti", "scale_to_unit",
    "save_volume", "slices_to_volume",
    "slice_pixel_spacing", "slice_positions", "square_geometry", "steps_per_epoch",
    "subject_id_from_path", "validate_data_config", "window_ct",
]
