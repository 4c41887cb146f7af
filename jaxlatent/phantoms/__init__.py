"""Synthetic medical-image phantoms with known ground-truth factors (JAX).

Two kinds: 'thorax' (axial chest CT in HU, :mod:`.thorax`) and 'brain' (axial
skull-stripped T1 MR with HC/MS populations, :mod:`.brain`).  Images are rendered
analytically on a pixel grid with anti-aliased shapes (pure jnp, vmapped, jitted),
deterministically from a ``jax.random`` key; each image carries its factor values,
tissue label map and foreground mask.  Images are display-oriented: anterior up,
subject right on the image left (see :mod:`.io` for the NIfTI affine convention).
"""

from jaxlatent.phantoms.brain import BRAIN_FACTORS, BRAIN_LABELS
from jaxlatent.phantoms.io import (canonical_to_display, csv_columns, volume_affine,
                                   write_dataset, write_preview)
from jaxlatent.phantoms.population import (brain_population, draw_population, render_dataset,
                                           subject_factor_names, thorax_population)
from jaxlatent.phantoms.rendering import (KINDS, complete_factors, factor_table, label_names,
                                       render, render_labels, render_masks, render_volume,
                                       render_with_keys, sample_factors)
from jaxlatent.phantoms.shapes import principal_axis_angle
from jaxlatent.phantoms.thorax import THORAX_FACTORS, THORAX_LABELS

__all__ = [
    "BRAIN_FACTORS", "BRAIN_LABELS", "KINDS", "THORAX_FACTORS", "THORAX_LABELS",
    "brain_population", "canonical_to_display", "complete_factors", "csv_columns",
    "draw_population", "factor_table", "label_names", "principal_axis_angle", "render",
    "render_dataset", "render_labels", "render_masks", "render_volume", "render_with_keys",
    "sample_factors", "subject_factor_names", "thorax_population", "volume_affine",
    "write_dataset", "write_preview",
]
