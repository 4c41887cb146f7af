"""Attribute edits of four models on the same held-out phantom subjects, one table.

Scores against the phantom's true factor change (jaxlatent/studies/edit_comparison.py):
brain HC -> MS by the IFcVAE-GAN and the SS-DAAE (encode, y 0 -> 1) next to the
StyleGAN's InterFaceGAN direction (W projection, alpha 0..50 as in analyze_ms.py);
thorax male -> large breast by the IFcVAE-GAN next to the DCGAN's discovered
direction best aligned with breast_size (z inversion, alpha 0..18 as in analyze_ct.py).
Every edit path has 15 steps and is eigen-analysed (component 2 vs the true map).

The runs it reads (paper-size settings; each line produces one):

  python train.py --config=configs/ifcvae_brain.py --workdir=runs/ifcvae_brain
  python train.py --config=configs/ssdaae_brain.py --workdir=runs/ssdaae_brain
  python train.py --config=configs/stylegan_brain.py --workdir=runs/stylegan_brain
  python analyze.py --config=configs/analyze_ms.py --workdir=runs/stylegan_brain
  python train.py --config=configs/ifcvae_thorax.py --workdir=runs/ifcvae_thorax
  python train.py --config=configs/dcgan_ct.py --workdir=runs/dcgan_ct
  python analyze.py --config=configs/analyze_ct.py --workdir=runs/dcgan_ct

then the comparison (writes edit_comparison.md / .json / _<kind>.png into --out):

  python analyze.py --config=configs/compare_edits.py --out=runs/compare_edits

Leave a model out with e.g. ``--config.brain.ssdaae=''``; a direction file elsewhere:
``--config.thorax.dcgan_directions=runs/dcgan_ct/report/directions/sefa_directions``.
"""

from __future__ import annotations

from configs import analyze_ct
from configs import analyze_ms
from configs import common


def get_config():
  c = common.blocks("subjects", "brain", "thorax", "report")
  c.task = "compare_edits"
  ms, ct = analyze_ms.get_config(), analyze_ct.get_config()
  c.steps = int(ms.traversal.alpha_num)  # 15, the abstract's schedule
  c.subjects.num_subjects = 16
  c.subjects.seed = 4321  # analyze.py's ground-truth subjects (ground_truth.seed)
  c.subjects.slice_position = 0.5
  c.brain.ifcvae_gan = "runs/ifcvae_brain"
  c.brain.ssdaae = "runs/ssdaae_brain"
  c.brain.stylegan = "runs/stylegan_brain"
  c.brain.stylegan_directions = ""  # runs/stylegan_brain/report/directions/interfacegan_directions
  c.brain.stylegan_space = str(ms.space)
  c.brain.alpha_stop = float(ms.traversal.alpha_stop)  # 50
  c.brain.inversion = ms.inversion  # the W projector of analyze_ms.py
  c.thorax.ifcvae_gan = "runs/ifcvae_thorax"
  c.thorax.dcgan = "runs/dcgan_ct"
  c.thorax.dcgan_directions = ""  # runs/dcgan_ct/report/directions/voynov_directions
  c.thorax.factor = "breast_size"
  c.thorax.factor_value = 0.9
  c.thorax.alpha_stop = float(ct.traversal.alpha_stop)  # 18
  c.thorax.inversion = ct.inversion  # Creswell & Bharath z inversion of analyze_ct.py
  return c
