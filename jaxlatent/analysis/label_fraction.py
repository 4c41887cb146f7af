"""Accuracy of the semi-supervised DAAE's class head vs the fraction of labels.

``run_label_fraction(config, out_dir)`` trains the SS-DAAE on brain phantoms (label
``data.label_column``, e.g. 'group' HC/MS) once per fraction in ``config.fractions``,
with the same steps, seed, data order and initialisation (only the labelled subset
changes), and scores the head on held-out phantom SUBJECTS: a population re-drawn
with ``data.seed + heldout.seed_offset``, never seen in training.  The labelled
subsets are nested (one uniform per training index: example ``i`` is labelled iff
``u_i < fraction``, :func:`jaxlatent.models.ssdaae.labelled_mask`).

Outputs in ``out_dir``: ``label_fraction.json`` (settings and one row per fraction:
fraction, labelled images, held-out accuracy, chance = the held-out majority-class
rate) and ``label_fraction.md`` (the same rows as a Markdown table).

The runs share one compiled step and run one after another: vmapping the step over
fractions (stacked states, per-fraction labelled flags) compiled about 3x slower and
ran each step about 1.7x slower per fraction on CPU (tiny 32 px config, 4 fractions).
"""

from __future__ import annotations

import json
import numbers
import os
import time
from typing import Any

import ml_collections
import numpy as np

from jaxlatent.errors import ConfigError, DataError

TASK = "label_fraction"
PHANTOM_SOURCES = ("phantom_brain", "phantom_thorax")


def _log(msg: str) -> None:
  print(f"[label_fraction {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _int_at_least(key: str, value: Any, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    raise ConfigError(f"{key}={value!r}: must be an int >= {minimum}")
  return int(value)


def validate_label_fraction_config(config: ml_collections.ConfigDict) -> tuple[float, ...]:
  """Checks a ``configs/label_fraction_*.py`` config before any compute; returns the fractions.

  Needs ``task='label_fraction'``, an 'ssdaae' ``model``, a phantom ``data.source``
  with a ``data.label_column``, ``fractions`` (numbers in [0, 1]), ``steps``,
  ``batch_size``, ``seed``, ``image_size`` and ``heldout.{seed_offset, num_images}``.
  """
  from jaxlatent.data.config import validate_data_config  # pylint: disable=g-import-not-at-top
  from jaxlatent.training.trainers_attr import make_ssdaae_trainer  # pylint: disable=g-import-not-at-top
  if config.get("task", None) != TASK:
    raise ConfigError(f"config.task={config.get('task', None)!r}: expected {TASK!r}")
  for key in ("model", "data", "fractions", "steps", "batch_size", "seed", "image_size",
              "heldout"):
    if key not in config:
      raise ConfigError(f"config.{key} is missing (see configs/label_fraction_brain.py)")
  if config.model.get("name", None) != "ssdaae":
    raise ConfigError(f"config.model.name={config.model.get('name', None)!r}: the label-"
                      "fraction study trains the semi-supervised DAAE, expected 'ssdaae'")
  fractions = config.fractions
  if isinstance(fractions, (str, bytes)) or not isinstance(fractions, (tuple, list)) \
      or not fractions:
    raise ConfigError(f"config.fractions={fractions!r}: expected a non-empty tuple of "
                      "numbers in [0, 1], e.g. (0.01, 0.1, 0.5, 1.0)")
  for f in fractions:
    if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0.0 <= float(f) <= 1.0:
      raise ConfigError(f"config.fractions={tuple(fractions)!r}: {f!r} is not a number in "
                        "[0, 1]")
  if len(set(float(f) for f in fractions)) != len(fractions):
    raise ConfigError(f"config.fractions={tuple(fractions)!r}: repeated fraction")
  _int_at_least("config.steps", config.steps, 1)
  _int_at_least("config.batch_size", config.batch_size, 1)
  _int_at_least("config.seed", config.seed, 0)
  _int_at_least("config.heldout.num_images", config.heldout.get("num_images"), 1)
  offset = _int_at_least("config.heldout.seed_offset", config.heldout.get("seed_offset"), 0)
  if offset == 0:
    raise ConfigError("config.heldout.seed_offset=0 would score the head on the training "
                      "subjects: use a population seed offset > 0")
  if config.data.get("source", None) not in PHANTOM_SOURCES:
    raise ConfigError(f"config.data.source={config.data.get('source', None)!r}: held-out "
                      f"subjects are re-drawn phantoms, expected one of {PHANTOM_SOURCES}")
  if not config.data.get("label_column", ""):
    raise ConfigError("config.data.label_column is empty: set the class label, e.g. 'group' "
                      "(HC/MS) for the brain phantom")
  validate_data_config(config.data, config.image_size)
  make_ssdaae_trainer(config)  # model fields (widths, weights, corruption)
  return tuple(float(f) for f in fractions)


def _datasets(config: ml_collections.ConfigDict, out: str):
  """(train images, labels, held-out images, labels, class names) of the phantom sets."""
  from jaxlatent.data import load_dataset  # pylint: disable=g-import-not-at-top
  data = ml_collections.ConfigDict(config.data.to_dict())
  cache = data.cache_dir or os.path.join(out, "cache")
  train = load_dataset(data, config.image_size, os.path.join(cache, "train"))
  y_train, classes = train.label_ids(data.label_column)
  held = ml_collections.ConfigDict(data.to_dict())
  held.seed = int(data.seed) + int(config.heldout.seed_offset)
  held.num_images = int(config.heldout.num_images)
  test = load_dataset(held, config.image_size, os.path.join(cache, "heldout"))
  y_test, _ = test.label_ids(data.label_column, classes=classes)
  return (np.asarray(train.images, np.float32), y_train, np.asarray(test.images, np.float32),
          y_test, [str(c) for c in classes])


def format_markdown_table(rows: list[dict[str, Any]], classes: list[str] | None = None) -> str:
  """The rows of :func:`run_label_fraction` as a Markdown table."""
  lines = ["| labelled fraction | labelled images | held-out accuracy | chance |",
           "|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['fraction']:g} | {r['num_labelled']} | {r['accuracy']:.3f} | "
                 f"{r['chance']:.3f} |")
  if classes:
    lines.append("")
    lines.append(f"Classes: {', '.join(classes)}; chance = the held-out majority-class rate.")
  return "\n".join(lines) + "\n"


def run_label_fraction(config: ml_collections.ConfigDict, out_dir: str) -> str:
  """Trains the SS-DAAE per labelled fraction and scores it on held-out subjects.

  Args:
    config: ``configs/label_fraction_brain.py`` (or ``_tiny``): an ssdaae training
      config plus ``task='label_fraction'``, ``fractions`` and
      ``heldout.{seed_offset, num_images}``; ``model.labelled_fraction`` is ignored.
    out_dir: output folder (created); phantom caches go to ``data.cache_dir`` or
      ``<out_dir>/cache``.

  Returns:
    The path of ``<out_dir>/label_fraction.md``; ``label_fraction.json`` lies beside it.

  Raises:
    ConfigError: a bad config (before any data is rendered).
    DataError: too few training images for ``batch_size``.
  """
  from jaxlatent.training import trainers_attr as ta  # pylint: disable=g-import-not-at-top
  t_start = time.time()
  fractions = validate_label_fraction_config(config)
  out = os.path.abspath(os.path.expanduser(out_dir))
  os.makedirs(out, exist_ok=True)
  x_train, y_train, x_test, y_test, classes = _datasets(config, out)
  if len(x_train) < int(config.batch_size):
    raise DataError(f"{len(x_train)} training images (data.num_images) < "
                    f"batch_size={config.batch_size}")
  _log(f"{len(x_train)} training slices, {len(x_test)} held-out slices (population seed "
       f"{int(config.data.seed) + int(config.heldout.seed_offset)}), classes {classes}; "
       f"fractions {list(fractions)}, {int(config.steps)} steps each")

  def report(row):
    _log(f"fraction {row['fraction']:g}: {row['num_labelled']} labelled, held-out accuracy "
         f"{row['accuracy']:.3f} (chance {row['chance']:.3f}), {row['seconds']:.0f} s")

  rows = ta.accuracy_vs_label_fraction(config, x_train, y_train, x_test, y_test,
                                       fractions=fractions, on_row=report)
  result = {
      "task": TASK, "model": "ssdaae", "label_column": str(config.data.label_column),
      "classes": classes, "data_source": str(config.data.source),
      "image_size": int(config.image_size), "steps": int(config.steps),
      "batch_size": int(config.batch_size), "seed": int(config.seed),
      "label_seed": int(config.model.get("label_seed", 0)),
      "num_train_images": int(len(x_train)), "num_heldout_images": int(len(x_test)),
      "train_population_seed": int(config.data.seed),
      "heldout_population_seed": int(config.data.seed) + int(config.heldout.seed_offset),
      "chance": ta.majority_rate(y_test), "rows": rows, "seconds": time.time() - t_start,
      "config": config.to_dict(),
  }
  with open(os.path.join(out, "label_fraction.json"), "w") as f:
    json.dump(result, f, indent=2, default=str)
  md_path = os.path.join(out, "label_fraction.md")
  with open(md_path, "w") as f:
    f.write(f"# SS-DAAE head accuracy vs labelled fraction ({config.data.source}, "
            f"label '{config.data.label_column}')\n\n")
    f.write(f"{int(config.steps)} steps per fraction, batch {int(config.batch_size)}, "
            f"{len(x_train)} training slices; accuracy on {len(x_test)} slices of held-out "
            f"subjects.\n\n")
    f.write(format_markdown_table(rows, classes))
  _log(f"done in {time.time() - t_start:.0f} s: {md_path}")
  return md_path
