"""Analyses a trained generator: directions, inversion, traversal eigen-analysis, report.

  python analyze.py --config=configs/analyze_ct.py --workdir=runs/dcgan_ct \
    [--out=runs/dcgan_ct/report] [--config.voynov.steps=1000 ...]

``--workdir`` is a ``train.py`` workdir: its saved ``config.json`` and latest checkpoint
give the generator.  The analysis config (``configs/analyze_*.py``) names the direction
methods (voynov, sefa, ganspace, interfacegan), the images to invert (held-out phantom
subjects or a NIfTI folder), the traversal schedule and the report contents; fields
it leaves out take the defaults of ``jaxlatent.studies.config``, and
``--config.<key>=<value>`` overrides any field.  Outputs in ``--out`` (default
``<workdir>/report``): index.html with its PNGs/GIF, metrics.json, directions/
(.npz + .json), inversion/, nifti/ (per-subject component and subtraction maps).
Re-running with the same ``--out`` re-uses finished stages (directions, inverted codes,
factor alignment) whose fingerprint (checkpoint step, config and parameter hashes of the
generator, the producing settings) matches; others are recomputed with a log line, or
refused with ``--config.cache_mismatch=error``.  ``--out`` is locked while a run writes
into it: a second run on the same folder stops with an ``error:`` line.
Configs with a ``checkpoint`` field (configs/discover_*.py) name the train workdir
there; ``--workdir`` is then the output folder.  Configs with a ``task`` field run a
study over several runs named in the config, writing into ``--out``:

  python analyze.py --config=configs/compare_edits.py --out=runs/compare_edits
      (attribute edits of IFcVAE-GAN, SS-DAAE, StyleGAN + InterFaceGAN and DCGAN +
       discovered direction on the same held-out phantom subjects: one table)
  python analyze.py --config=configs/label_fraction_brain.py --out=runs/label_fraction
      (SS-DAAE classification accuracy vs the fraction of labelled images)
``--malloc=system`` leaves glibc's allocator as it is (default 'retain': freed memory
is reused, see jaxlatent/host.py).  User errors print one ``error:`` line and exit
with status 2.
"""

from __future__ import annotations

import logging
import sys

from jaxlatent.config_cli import parse_config_flags
from jaxlatent.errors import ConfigError, exit_on_user_error
from jaxlatent.host import MALLOC_HELP, configure_malloc
from jaxlatent.studies.analysis import run_analysis
from jaxlatent.studies.config import complete_study_config, study_task
from jaxlatent.studies.edit_comparison import run_edit_comparison
from jaxlatent.studies.label_fraction import run_label_fraction

# config.task -> the study writing into --out.
TASK_STUDIES = {"compare_edits": run_edit_comparison, "label_fraction": run_label_fraction}


@exit_on_user_error
def main(argv: list[str]) -> int:
  config, flag_values = parse_config_flags(argv, extra_flags=[
      ("workdir", None, "train.py workdir holding config.json and checkpoints/"),
      ("out", None, "report folder (default: <workdir>/report)"),
      ("malloc", "retain", MALLOC_HELP),
  ], complete=complete_study_config)
  configure_malloc(flag_values["malloc"].value)  # before JAX starts its threads
  workdir = flag_values["workdir"].value
  out = flag_values["out"].value
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  task = study_task(config)  # again: --config.task may have changed it
  if task in TASK_STUDIES:
    out = out or workdir
    if not out:
      raise ConfigError(f"config.task={task!r} writes into --out: pass --out=<folder>")
    print(TASK_STUDIES[task](config, out), flush=True)
    return 0
  if not workdir:
    raise ConfigError("no --workdir given: pass --workdir=<train.py workdir>")
  if config.get("checkpoint", ""):  # configs/discover_*.py style: --workdir is the output
    workdir, out = config.checkpoint, out or workdir
  print(run_analysis(config, workdir, out), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
