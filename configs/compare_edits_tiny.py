"""configs/compare_edits.py on the tiny 32 px runs (CPU, minutes): 8 subjects per kind.

The runs it reads:

  python train.py --config=configs/ifcvae_brain_tiny.py --workdir=runs/ifcvae_brain_tiny
  python train.py --config=configs/ssdaae_brain_tiny.py --workdir=runs/ssdaae_brain_tiny
  python train.py --config=configs/stylegan_tiny.py --workdir=runs/stylegan_tiny
  python analyze.py --config=configs/analyze_ms_tiny.py --workdir=runs/stylegan_tiny
  python train.py --config=configs/ifcvae_thorax_tiny.py --workdir=runs/ifcvae_thorax_tiny
  python train.py --config=configs/dcgan_tiny.py --workdir=runs/dcgan_tiny
  python analyze.py --config=configs/analyze_ct_tiny.py --workdir=runs/dcgan_tiny

then:

  python analyze.py --config=configs/compare_edits_tiny.py --out=runs/compare_edits_tiny

Inversion settings are analyze_ms_tiny.py's (100 projector steps) and
analyze_ct_tiny.py's (150 RMSprop steps x 2 restarts).
"""

from __future__ import annotations

from configs import analyze_ct_tiny
from configs import analyze_ms_tiny
from configs import compare_edits


def get_config():
  c = compare_edits.get_config()
  c.subjects.num_subjects = 8
  c.brain.ifcvae_gan = "runs/ifcvae_brain_tiny"
  c.brain.ssdaae = "runs/ssdaae_brain_tiny"
  c.brain.stylegan = "runs/stylegan_tiny"
  c.brain.inversion = analyze_ms_tiny.get_config().inversion
  c.brain.inversion.batch_size = 8
  c.thorax.ifcvae_gan = "runs/ifcvae_thorax_tiny"
  c.thorax.dcgan = "runs/dcgan_tiny"
  c.thorax.inversion = analyze_ct_tiny.get_config().inversion
  c.thorax.inversion.batch_size = 8
  return c
