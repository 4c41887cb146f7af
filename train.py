"""Trains a generative model of medical image slices.

  python train.py --config=configs/dcgan_tiny.py --workdir=runs/dcgan_tiny \
    [--config.steps=1000 --config.data.source=nifti --config.data.path=...]

The config file (``get_config()`` returning an ml_collections ConfigDict) names the
model, data and schedule of a paper setting; the rest of the fields take the library
defaults (``jaxlatent.training.default_train_config``), and ``--config.<key>=<value>``
overrides any field.  Training
resumes automatically from the latest checkpoint in ``--workdir``.  The same command
runs on one CPU, a multi-GPU node, a SLURM job (one process per host, ``srun``) or a
TPU pod slice (``--worker=all``): see "Scaling out" in README.md.

Outputs in the workdir: config.json, checkpoints/<step>/, metrics.jsonl, losses.png,
samples/step_XXXXXX.png.  ``--malloc=system`` leaves glibc's allocator as it is
(default 'retain': freed memory is reused, see jaxlatent/host.py).  User errors print
one ``error:`` line and exit with status 2.

A workdir holds one run.  While training, ``<workdir>/.lock`` keeps a second
``train.py`` out.  Resuming with a config that differs in what defines the run (data,
model, image_size, seed, batch_size, the FD hold-out) is refused, naming the keys;
``steps``, the log/checkpoint/sample/FD intervals and ``optim`` may change.
``--config_mismatch=allow`` continues the checkpoints with the new config anyway;
``--restart`` deletes the workdir's checkpoints, metrics, samples and config.json
(after all checks passed; the data cache stays) and starts from step 0.
"""

from __future__ import annotations

import logging
import sys

from jaxlatent.config_cli import parse_config_flags
from jaxlatent.errors import ConfigError, exit_on_user_error
from jaxlatent.host import MALLOC_HELP, configure_malloc
from jaxlatent.training import complete_train_config, train_and_evaluate
from jaxlatent.training.checkpoint import check_not_export, quiet_orbax_logs


@exit_on_user_error
def main(argv: list[str]) -> int:
  config, flag_values = parse_config_flags(argv, extra_flags=[
      ("workdir", None, "output folder (created; resumed if it exists)"),
      ("malloc", "retain", MALLOC_HELP),
      ("config_mismatch", "refuse", "refuse | allow: resume a workdir whose config.json "
       "differs from this config in data/model/image_size/seed/batch_size"),
      ("restart", False, "delete the workdir's checkpoints, metrics, samples and "
       "config.json, then train from step 0"),
  ], complete=complete_train_config)
  configure_malloc(flag_values["malloc"].value)  # before JAX starts its threads
  workdir = flag_values["workdir"].value
  if not workdir:
    raise ConfigError("no --workdir given: pass --workdir=<output folder>")
  mismatch = flag_values["config_mismatch"].value
  if mismatch not in ("refuse", "allow"):
    raise ConfigError(f"--config_mismatch={mismatch!r}: expected 'refuse' or 'allow'")
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  quiet_orbax_logs()  # its failures are reported as one error line
  check_not_export(workdir)  # before --restart could clear part of it
  train_and_evaluate(config, workdir, restart=flag_values["restart"].value,
                     config_mismatch=mismatch)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
