"""Creswell et al.'s attribute edits at validation scale, scored against the true change.

configs/compare_edits.py on the study's runs (``{runs}``: validation/run.py's --runs,
default runs/validate): the IFcVAE-GAN and SS-DAAE HC -> MS edits next to the
StyleGAN2's InterFaceGAN direction of the MS analysis, and the thorax IFcVAE-GAN's
large-breast edit next to the DCGAN's Voynov direction best aligned with breast size.

  python analyze.py --config=configs/validate_compare_edits.py --out=runs/validate/compare_edits
"""

from __future__ import annotations

from configs import compare_edits

RUNS = "runs/validate"


def get_config(runs: str = RUNS):
  c = compare_edits.get_config()
  c.brain.ifcvae_gan = f"{runs}/ifcvae_brain"
  c.brain.ssdaae = f"{runs}/ssdaae_brain"
  c.brain.stylegan = f"{runs}/stylegan_brain"
  c.brain.stylegan_directions = f"{runs}/stylegan_brain/ms/directions/interfacegan_directions"
  c.thorax.ifcvae_gan = f"{runs}/ifcvae_thorax"
  c.thorax.dcgan = f"{runs}/dcgan_ct"
  c.thorax.dcgan_directions = f"{runs}/dcgan_ct/proj_lenet_k100_s0/directions/voynov_directions"
  return c
