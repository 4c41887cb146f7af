"""Real image -> latent: GAN z inversion (Creswell & Bharath), StyleGAN W/W+
projection (stylegan2-ada projector, no LPIPS), VAE encoder (+ refinement), and one
batched API over them driven by the ``inversion`` config block (``batched``)."""

from jaxlatent.inversion.batched import (InvertedSlices, default_inversion_config,
                                         invert_batched, invert_dataset, invert_images,
                                         make_inverter, select_subjects)
from jaxlatent.inversion.gan import (InversionResult, coverage, invert_z, make_optimizer,
                                     normal_prior_penalty)
from jaxlatent.inversion.losses import (multiscale_ssim_loss, noise_regularization,
                                        normalize_noise, pixel_mse, reconstruction_loss, ssim)
from jaxlatent.inversion.stylegan import (NoiseInputs, ProjectionResult, project,
                                          projector_schedule, stylegan2_noise_inputs,
                                          w_statistics)
from jaxlatent.inversion.vae import invert_vae

__all__ = [
    "InversionResult", "InvertedSlices", "NoiseInputs", "ProjectionResult", "coverage",
    "default_inversion_config", "invert_batched", "invert_dataset", "invert_images",
    "invert_vae", "invert_z", "make_inverter", "make_optimizer", "multiscale_ssim_loss",
    "noise_regularization", "normal_prior_penalty", "normalize_noise", "pixel_mse",
    "project", "projector_schedule", "reconstruction_loss", "select_subjects", "ssim",
    "stylegan2_noise_inputs", "w_statistics",
]
