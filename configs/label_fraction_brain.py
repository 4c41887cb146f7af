"""SS-DAAE head accuracy vs the fraction of labels on brain MR phantoms (HC/MS).

The semi-supervised denoising AAE of configs/ssdaae_brain.py (64 px, 4096 slices,
30 epochs) trained once per labelled fraction with the same steps, seed and data
order; the class head is scored on slices of held-out subjects (a population drawn
with ``data.seed + heldout.seed_offset``).  Next to each run, a supervised baseline:
the SS-DAAE's encoder and class head trained with cross-entropy on the same labelled
images only (``supervised``).  Writes ``label_fraction.json`` and
``label_fraction.md`` (fraction, labelled images, SS-DAAE and supervised held-out
accuracy, chance) into the output folder
(``jaxlatent.studies.label_fraction.run_label_fraction``).

Fields used: task, fractions, heldout, supervised, seed, image_size, batch_size,
steps, data, model (``model.labelled_fraction`` is replaced by each fraction), optim.
"""

from __future__ import annotations

import ml_collections

from configs import ssdaae_brain


def get_config():
  c = ssdaae_brain.get_config()
  c.task = "label_fraction"
  c.fractions = (0.01, 0.1, 0.5, 1.0)
  c.heldout = ml_collections.ConfigDict()
  c.heldout.seed_offset = 1000  # held-out population seed = data.seed + seed_offset
  c.heldout.num_images = 1024  # slices of held-out subjects (8 per subject)
  c.supervised = ml_collections.ConfigDict()
  c.supervised.enabled = True
  c.supervised.steps = 0  # 0 = as many steps as each SS-DAAE run
  c.supervised.lr = 0.0  # 0 = the SS-DAAE autoencoder's Adam learning rate
  return c
