"""Runs the validation study (docs/VALIDATION.md): trainings, then analyses, resumably.

  python validation/run.py [--runs=runs/validate] [--only=PATTERN,...] [--list]
      [--cpus=0,1] [--retries=3]

Every stage is one ``train.py`` or ``analyze.py`` command.  A stage that finished
leaves ``<its folder>/DONE`` and is skipped on the next call; one that was interrupted
resumes where it stopped (training from its last checkpoint, an analysis from its
saved directions and inverted codes), so the whole study is re-run by calling this
script again, e.g. after a reboot.  A stage that fails is retried ``--retries`` times,
then the script stops with its exit status.  ``--only`` picks stages whose name
contains one of the patterns (fnmatch), e.g. ``--only='dcgan_ct*'``; ``--cpus`` pins
the commands to those CPU cores (Linux ``taskset``), so two calls with disjoint
``--only`` and ``--cpus`` run side by side.

``python validation/collect.py`` then gathers the figures into
validation/results.json and docs/validation/.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Stage:
  """One command of the study; ``folder`` (under --runs) holds its outputs and DONE."""

  name: str
  script: str  # train.py | analyze.py
  config: str
  folder: str
  workdir: str = ""  # analyze.py: the train run (under --runs)
  overrides: tuple[str, ...] = ()

  def argv(self, runs: str) -> list[str]:
    # A config may take the runs folder as its argument ("x.py:{runs}").
    config = os.path.join(REPO, "configs", self.config.format(runs=runs))
    cmd = [sys.executable, os.path.join(REPO, self.script), f"--config={config}"]
    if self.script == "train.py":
      cmd.append(f"--workdir={os.path.join(runs, self.folder)}")
    else:
      if self.workdir:  # a study over several runs (edits, label fraction) has none
        cmd.append(f"--workdir={os.path.join(runs, self.workdir)}")
      cmd.append(f"--out={os.path.join(runs, self.folder)}")
    return cmd + [f"--config.{o}" for o in self.overrides]


# Voynov & Babenko settings of the CT study: Schön et al.'s run (proj, LeNet, K = 100)
# with restarts, their other deformator / reconstructor / K choices, and a longer run.
VOYNOV_VARIANTS = (
    ("proj_lenet_k100_s0", ("voynov.deformator=proj", "voynov.reconstructor=lenet",
                            "voynov.num_directions=100", "seed=0")),
    ("ortho_lenet_k32_s0", ("voynov.deformator=ortho", "voynov.reconstructor=lenet",
                            "voynov.num_directions=32", "seed=0")),
    ("proj_lenet_k100_s1", ("voynov.deformator=proj", "voynov.reconstructor=lenet",
                            "voynov.num_directions=100", "seed=1")),
    ("proj_resnet_k100_s0", ("voynov.deformator=proj", "voynov.reconstructor=resnet",
                             "voynov.num_directions=100", "seed=0")),
    ("ortho_resnet_k32_s0", ("voynov.deformator=ortho", "voynov.reconstructor=resnet",
                             "voynov.num_directions=32", "seed=0")),
    ("proj_lenet_k100_s2", ("voynov.deformator=proj", "voynov.reconstructor=lenet",
                            "voynov.num_directions=100", "seed=2")),
    # Training length: four times the paper's 3000 steps (twice its images at batch 64).
    ("proj_lenet_k100_s0_12k", ("voynov.deformator=proj", "voynov.reconstructor=lenet",
                                "voynov.num_directions=100", "seed=0",
                                "voynov.steps=12000")),
)


TRAINING_SUBJECTS = "inversion_training_subjects"
# Seeds of the label-fraction restarts (claim 5).
LABEL_FRACTION_RESTARTS = (1, 2)
# The closed-form baselines per model.  SeFa needs a dense layer taking z: Schön's VAE
# decoder has none (z enters as a 1x1 image), so the VAE gets GANSpace only.
BASELINES = {"dcgan_ct": ("sefa", "ganspace"), "vae_ct": ("ganspace",)}


def stages() -> list[Stage]:
  """The study in the order it runs (trainings first: analyses need their generators)."""
  out = [
      Stage("dcgan_ct/train", "train.py", "validate_dcgan_ct.py", "dcgan_ct"),
      Stage("vae_ct/train", "train.py", "validate_vae_ct.py", "vae_ct"),
      Stage("stylegan_brain/train", "train.py", "validate_stylegan_brain.py",
            "stylegan_brain"),
      Stage("stylegan_brain/ms", "analyze.py", "validate_analyze_ms.py",
            "stylegan_brain/ms", workdir="stylegan_brain"),
      # Creswell et al.: the attribute models, their edits, the label fraction.
      Stage("ssdaae_brain/train", "train.py", "validate_ssdaae_brain.py", "ssdaae_brain"),
      Stage("ifcvae_brain/train", "train.py", "validate_ifcvae_brain.py", "ifcvae_brain"),
      Stage("ifcvae_thorax/train", "train.py", "validate_ifcvae_thorax.py", "ifcvae_thorax"),
  ]
  for model in ("dcgan_ct", "vae_ct"):
    for i, (variant, overrides) in enumerate(VOYNOV_VARIANTS):
      # SeFa and GANSpace do not depend on the Voynov variant: the first one runs them.
      methods = (f"methods={('voynov',) + BASELINES[model]}" if i == 0
                 else "methods=('voynov',)")
      out.append(Stage(f"{model}/{variant}", "analyze.py", "validate_analyze_ct.py",
                       f"{model}/{variant}", workdir=model,
                       overrides=overrides + (methods,)))
  for model in ("dcgan_ct", "vae_ct"):
    # Creswell et al.: the same inversion on subjects of the training population (the
    # variants invert held-out subjects); one cheap method, the analysis needs one.
    out.append(Stage(f"{model}/{TRAINING_SUBJECTS}", "analyze.py", "validate_analyze_ct.py",
                     f"{model}/{TRAINING_SUBJECTS}", workdir=model,
                     overrides=("images.seed_offset=0", f"methods={BASELINES[model][:1]}")))
  out.append(Stage("label_fraction", "analyze.py", "validate_label_fraction_brain.py",
                   "label_fraction"))
  # Restarts of the fraction whose goal is closest (1% labels): another initialisation,
  # data order and labelled subset each.
  for seed in LABEL_FRACTION_RESTARTS:
    out.append(Stage(f"label_fraction_s{seed}", "analyze.py",
                     "validate_label_fraction_brain.py", f"label_fraction_s{seed}",
                     overrides=(f"seed={seed}", f"model.label_seed={seed}",
                                "fractions=(0.01,)")))
  # After the MS analysis and the DCGAN's discovery: it reads their directions.
  out.append(Stage("compare_edits", "analyze.py", "validate_compare_edits.py:{runs}",
                   "compare_edits"))
  return out


def _selected(all_stages: list[Stage], only: str) -> list[Stage]:
  if not only:
    return all_stages
  pats = [p.strip() for p in only.split(",") if p.strip()]
  return [s for s in all_stages if any(fnmatch.fnmatch(s.name, p) or p in s.name
                                       for p in pats)]


def run_stage(stage: Stage, runs: str, cpus: str, retries: int) -> int:
  folder = os.path.join(runs, stage.folder)
  os.makedirs(folder, exist_ok=True)
  cmd = stage.argv(runs)
  if cpus and shutil.which("taskset"):
    cmd = ["taskset", "-c", cpus] + cmd
  log = os.path.join(folder, "stage.log")
  rc = 1
  for attempt in range(retries + 1):
    t0 = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] {stage.name}: {' '.join(cmd)}", flush=True)
    with open(log, "a") as f:
      rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    print(f"[{time.strftime('%H:%M:%S')}] {stage.name}: exit {rc} after "
          f"{time.time() - t0:.0f} s (log {log})", flush=True)
    if rc == 0:
      with open(os.path.join(folder, "DONE"), "w") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {time.time() - t0:.0f}s\n")
      return 0
    if rc == 2:  # a user error (bad config): retrying cannot help
      return rc
  return rc


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--runs", default=os.path.join(REPO, "runs", "validate"))
  p.add_argument("--only", default="")
  p.add_argument("--cpus", default="")
  p.add_argument("--retries", type=int, default=3)
  p.add_argument("--list", action="store_true")
  a = p.parse_args(argv)
  chosen = _selected(stages(), a.only)
  for s in chosen:
    done = os.path.exists(os.path.join(a.runs, s.folder, "DONE"))
    if a.list:
      print(f"{'done   ' if done else 'pending'} {s.name}: {' '.join(s.argv(a.runs)[1:])}")
      continue
    if done:
      continue
    rc = run_stage(s, a.runs, a.cpus, a.retries)
    if rc:
      return rc
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
