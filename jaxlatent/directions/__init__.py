"""Latent-direction discovery: Voynov & Babenko, GANSpace, SeFa, InterFaceGAN.

Every method takes a :class:`~jaxlatent.generator.Generator` (DCGAN, VAE decoder,
StyleGAN in z / w / w+, a user's Flax module) and returns a :class:`Directions` set
(unit vectors ``[K, *latent_shape]`` with method, model, space, scores) that
``save_directions`` / ``load_directions`` write as ``.npz`` + ``.json``.
"""

from jaxlatent.directions.alignment import (AlignmentResult, FactorCNN, FactorRegressor,
                                            disentanglement_scores, factor_alignment,
                                            in_display_order, load_factor_regressor, phantom_images,
                                            save_factor_regressor, train_factor_regressor,
                                            train_phantom_regressor)
from jaxlatent.directions.ganspace import ganspace, pca
from jaxlatent.directions.io import Directions, load_directions, save_directions
from jaxlatent.directions.matching import direction_recurrence, match_directions
from jaxlatent.directions.networks import (DEFORMATOR_KINDS, RECONSTRUCTOR_KINDS, Deformator,
                                           LeNetReconstructor, MLPReconstructor,
                                           ResNetReconstructor)
from jaxlatent.directions.discovery import METHODS, discover
from jaxlatent.directions.report import (PAPER_SHIFTS, save_rca_curve,
                                         save_traversal_grid, summary_rows, traversal_grid,
                                         write_table)
from jaxlatent.directions.predictors import ReferenceLeNet, ReferenceResNet
from jaxlatent.directions.sefa import (find_kernels, first_dense_kernel, sefa,
                                       sefa_directions, sefa_edit, style_kernels)
from jaxlatent.directions.supervised import (Boundary, condition_direction, fit_boundary,
                                             train_boundary)
from jaxlatent.directions.svm import LinearSVC, fit_linear_svc
from jaxlatent.directions.voynov import (RestartsResult, VoynovConfig, VoynovResult,
                                         VoynovState, deformator_directions, evaluate_rca,
                                         init_state, make_train_step, run_voynov,
                                         run_voynov_restarts, sample_shifts, train_step)

__all__ = [
    "AlignmentResult", "Boundary", "condition_direction", "Deformator", "deformator_directions",
    "DEFORMATOR_KINDS", "direction_recurrence", "Directions", "discover",
    "disentanglement_scores", "evaluate_rca", "factor_alignment", "FactorCNN", "in_display_order",
    "FactorRegressor", "find_kernels", "first_dense_kernel", "fit_boundary", "fit_linear_svc",
    "ganspace", "LinearSVC", "ReferenceLeNet", "ReferenceResNet", "sefa_edit",
    "train_boundary",
    "init_state", "LeNetReconstructor", "load_directions", "load_factor_regressor",
    "make_train_step",
    "match_directions", "METHODS", "MLPReconstructor", "PAPER_SHIFTS", "pca", "phantom_images",
    "RECONSTRUCTOR_KINDS", "ResNetReconstructor", "RestartsResult", "run_voynov",
    "run_voynov_restarts", "sample_shifts", "save_directions", "save_factor_regressor",
    "save_rca_curve",
    "save_traversal_grid", "sefa", "sefa_directions", "style_kernels", "summary_rows",
    "train_factor_regressor", "train_phantom_regressor", "train_step", "traversal_grid",
    "VoynovConfig", "VoynovResult", "VoynovState", "write_table",
]
