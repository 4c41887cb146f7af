"""Traversal eigen-analysis (Güllmar et al.): traversals, M -> covariance eigh ->
component maps, subtraction maps, NIfTI output and phantom ground-truth scores."""

from jaxlatent.analysis.eigen import (EigenResult, StreamResult,
                                      eigen_analysis, eigen_analysis_batched,
                                      eigen_analysis_chunked, eigen_analysis_stream,
                                      polynomial_match, sign_fix)
from jaxlatent.analysis.ground_truth import difference_map_correlation, phantom_difference_map
from jaxlatent.analysis.nifti_out import (slice_grid_affine, write_component_volumes,
                                          write_subject_maps, write_volume)
from jaxlatent.analysis.traversal import (default_alphas, shifted_latents, traverse,
                                          traverse_and_analyze, traverse_many)

__all__ = [
    "EigenResult", "StreamResult", "default_alphas",
    "difference_map_correlation", "eigen_analysis", "eigen_analysis_batched",
    "eigen_analysis_chunked", "eigen_analysis_stream", "phantom_difference_map",
    "polynomial_match",
    "shifted_latents", "sign_fix", "slice_grid_affine", "traverse",
    "traverse_and_analyze", "traverse_many", "write_component_volumes", "write_subject_maps",
    "write_volume",
]
