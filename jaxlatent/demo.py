"""``make demo``: the whole chain on phantoms, in one command.

  python -m jaxlatent.demo --out runs/demo [--models=pretrained|tiny] [--quick]
      [--paths=ct,ms,edits] [--ms-model=stylegan2|dcgan|vae|none] [--malloc=retain|system]

1. CT path (Schön et al.).  ``--models=pretrained`` (default): analyse the 64 px DCGAN
   and VAE of the validation study shipped in ``pretrained/dcgan_ct_64`` and
   ``pretrained/vae_ct_64`` (docs/VALIDATION.md) with the analysis config each was
   validated with; their Voynov, SeFa and GANSpace directions (named by factor
   alignment) and their inverted held-out subjects ship with them and are re-used, so
   the stage draws the traversal grids, runs the eigen-analysis and writes the reports.
   ``--models=tiny``: train the tiny DCGAN on thorax phantoms (configs/dcgan_tiny.py)
   and analyse it from scratch (configs/analyze_ct_tiny.py).
2. MS path (Güllmar et al.): train the tiny StyleGAN2 on brain phantoms
   (configs/stylegan_tiny.py), project labelled held-out HC and MS subjects into W, fit
   the InterFaceGAN HC -> MS direction, traverse healthy subjects with alpha 0..50,
   eigen-analysis and the ground-truth check against the phantom's true difference map
   (configs/analyze_ms_tiny.py).  ``--ms-model=dcgan|vae`` runs the same MS analysis on
   a tiny DCGAN / VAE of brain phantoms (z inversion) instead; ``none`` skips it.  When
   a brain StyleGAN2 of the validation study is shipped (``PRETRAINED_MS``),
   ``--models=pretrained`` analyses it instead of training one, re-using its
   InterFaceGAN direction and inverted codes.
3. Attribute edits (Creswell et al.): train the tiny IFcVAE-GAN on brain (HC/MS) and
   thorax (large breast) phantoms and the tiny SS-DAAE on brain phantoms, then score
   their attribute edits beside the StyleGAN's InterFaceGAN direction and the DCGAN's
   discovered breast-size direction (paths 1 and 2) on the same held-out subjects
   against the phantom's true change: one table (configs/compare_edits_tiny.py).

Each stage writes into ``--out`` and a second run re-uses what is finished (training
resumes from its checkpoints, directions and inverted codes are loaded).  ``--quick``
cuts every step count to a few (a smoke test: the numbers mean nothing).  The paths of
the HTML reports are printed at the end, with wall and CPU time per stage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time

import ml_collections

from jaxlatent import host
from jaxlatent.config_cli import config_from_file
from jaxlatent.errors import ConfigError, exit_on_user_error
from jaxlatent.studies.analysis import run_analysis
from jaxlatent.studies.config import complete_study_config
from jaxlatent.studies.edit_comparison import run_edit_comparison
from jaxlatent.training import complete_train_config, train_and_evaluate

# The tiny StyleGAN costs ~1 CPU-second per step on 2 cores: 200 steps keep the demo's
# total near 10 minutes (configs/stylegan_tiny.py says 300).
DEMO_STYLEGAN_STEPS = 200

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The validation study's generators shipped in pretrained/ (docs/VALIDATION.md).
PRETRAINED_CT = "dcgan_ct_64"  # its discovered breast-size direction joins the edit table
PRETRAINED_CT_MODELS = (PRETRAINED_CT, "vae_ct_64")
# The brain StyleGAN2 of the MS analysis (validation/ship.py --stage=stylegan_brain/ms);
# None makes the MS path train the tiny StyleGAN2.
PRETRAINED_MS: str | None = "stylegan_brain_64"
PRETRAINED_MODELS = PRETRAINED_CT_MODELS + ((PRETRAINED_MS,) if PRETRAINED_MS else ())
MODEL_SOURCES = ("pretrained", "tiny")


def load_config(name: str, complete):
  """``configs/<name>.py``'s ``get_config()`` (the repo's configs/ folder), completed."""
  path = os.path.join(_REPO, "configs", f"{name}.py")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist (the demo needs the repository's "
                      "configs/ folder)")
  return complete(config_from_file(path))


def train_config(name: str, quick: bool, brain: bool = False):
  """A tiny training config; ``quick``: a few steps on few images; ``brain``: brain phantoms."""
  c = load_config(name, complete_train_config)
  if brain and c.data.source != "phantom_brain":
    c.data.source, c.data.modality = "phantom_brain", "mr"
  if quick:
    c.steps, c.ckpt_every, c.sample_every, c.log_every = 4, 4, 4, 2
    c.fid_every = 0
    c.data.num_images = 96
  else:
    c.fid_every = 0  # the FD metric is a training diagnostic; the demo skips it
    if c.model.name == "stylegan2":
      c.steps = DEMO_STYLEGAN_STEPS
  return c


def analysis_config(name: str, quick: bool):
  """A tiny analysis config; ``quick`` cuts every loop to a few steps."""
  c = load_config(name, complete_study_config)
  if quick:
    c.voynov.steps, c.voynov.eval_every, c.voynov.eval_batches = 10, 5, 1
    c.voynov.batch_size = 8
    c.voynov.reconstructor, c.voynov.reconstructor_width = "mlp", 16
    c.ganspace_samples = 64
    c.alignment.regressor_images, c.alignment.regressor_steps = 64, 5
    c.alignment.num_latents = 2
    c.images.num_images = 16 if "interfacegan" not in c.methods else 32
    c.inversion.steps, c.inversion.restarts = 5, 1
    c.inversion.w_avg_samples = 64
    c.inversion.vae_refine_steps = 5
    c.supervised.steps = 50
    c.ground_truth.num_subjects = 2
    c.traversal.alpha_num = 5
    c.traversal.max_subjects = 1
  return c


class _Clock:
  """Wall and CPU seconds per stage (CPU: this process, all threads, + children)."""

  def __init__(self):
    self.rows = []

  @staticmethod
  def _cpu():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system

  def __call__(self, name, fn, *args, **kwargs):
    w0, c0 = time.time(), self._cpu()
    print(f"\n=== demo: {name} ===", flush=True)
    out = fn(*args, **kwargs)
    self.rows.append({"stage": name, "wall_s": round(time.time() - w0, 1),
                      "cpu_s": round(self._cpu() - c0, 1)})
    print(f"=== {name}: {self.rows[-1]['wall_s']} s wall, {self.rows[-1]['cpu_s']} s CPU ===",
          flush=True)
    return out


def pretrained_folder(name: str) -> str:
  """``pretrained/<name>`` of the repository (validation/ship.py writes it)."""
  return os.path.join(_REPO, "pretrained", name)


def shipped_analysis_config(folder: str):
  """The completed analysis config a shipped model's folder records (``analysis/config.json``:
  the one its validation analysis ran, which its shipped directions and codes fit)."""
  path = os.path.join(folder, "analysis", "config.json")
  if not os.path.isfile(path):
    raise ConfigError(f"{path} does not exist: {folder} is an incomplete shipped model "
                      "(run the demo with --models=tiny to train tiny models instead)")
  with open(path) as f:
    return complete_study_config(ml_collections.ConfigDict(json.load(f)))


def pretrained_analysis_config(name: str, quick: bool):
  """The analysis config the validation study ran on the shipped model (its caches fit it)."""
  c = shipped_analysis_config(pretrained_folder(name))
  if quick:
    c.traversal.alpha_num, c.traversal.max_subjects = 5, 1
    c.report.scrubber_slices = 2
  return c


def _analyse_pretrained(clock, reports, out, name, quick) -> str:
  """Analyses the shipped generator ``name`` into ``<out>/<name>``, re-using the
  directions and inverted codes it ships with; returns that report folder."""
  src = pretrained_folder(name)
  report_dir = os.path.join(out, name)
  config = pretrained_analysis_config(name, quick)
  # The shipped directions (with their factor alignment and regressor) and inverted
  # codes carry the generator's fingerprint: run_analysis re-uses them instead of
  # hours of discovery and inversion; a stale copy in the output is replaced.
  shutil.copytree(os.path.join(src, "analysis"), report_dir, dirs_exist_ok=True,
                  ignore=shutil.ignore_patterns("config.json"))
  reports.append(clock(f"analyse the pretrained {name} ({', '.join(config.methods)})",
                       run_analysis, config, src, report_dir))
  return report_dir


def _pretrained_ct_path(clock, reports, out, quick) -> tuple[str, str]:
  """Analyses the shipped 64 px CT generators; returns the DCGAN's folder and its Voynov
  directions (for the edit table)."""
  for name in PRETRAINED_CT_MODELS:
    _analyse_pretrained(clock, reports, out, name, quick)
  return (pretrained_folder(PRETRAINED_CT),
          os.path.join(out, PRETRAINED_CT, "directions", "voynov_directions"))


def _pretrained_ms_path(clock, reports, out, quick) -> tuple[str, str]:
  """Analyses the shipped brain StyleGAN2 (HC -> MS); returns its folder and its
  InterFaceGAN direction (for the edit table)."""
  report_dir = _analyse_pretrained(clock, reports, out, PRETRAINED_MS, quick)
  return (pretrained_folder(PRETRAINED_MS),
          os.path.join(report_dir, "directions", "interfacegan_directions"))


def _ct_path(clock, reports, ct_dir, quick):
  config = train_config("dcgan_tiny", quick)
  # In 300 steps at 32 px the resample layers learn enough anatomy for Voynov to find
  # directions (the edit comparison needs one); Schön's network at this budget gives
  # directions at chance level.
  config.model.arch = "resample"
  clock("train tiny DCGAN on thorax phantoms", train_and_evaluate, config, ct_dir)
  reports.append(clock("analyse CT DCGAN (Voynov, SeFa, GANSpace)", run_analysis,
                       analysis_config("analyze_ct_tiny", quick), ct_dir,
                       os.path.join(ct_dir, "report")))


def ms_analysis_config(ms_model: str, quick: bool):
  """configs/analyze_ms_tiny.py for the MS path's tiny ``ms_model``."""
  c = analysis_config("analyze_ms_tiny", quick)
  if ms_model != "stylegan2":
    c.space = "z"  # DCGAN / VAE: Creswell & Bharath z inversion instead of W projection
    c.inversion.learning_rate = 0.05
  return c


def _ms_path(clock, reports, out, quick, ms_model):
  name = {"stylegan2": "stylegan_tiny", "dcgan": "dcgan_tiny", "vae": "vae_tiny"}[ms_model]
  ms_dir = os.path.join(out, f"ms_{ms_model}")
  clock(f"train tiny {ms_model} on brain phantoms", train_and_evaluate,
        train_config(name, quick, brain=True), ms_dir)
  ms_cfg = ms_analysis_config(ms_model, quick)
  reports.append(clock(f"analyse MS {ms_model} (InterFaceGAN HC->MS, ground truth)",
                       run_analysis, ms_cfg, ms_dir, os.path.join(ms_dir, "report")))


def comparison_config(quick: bool, ct_dir: str | None, stylegan_dir: str | None,
                      attr_dirs: dict[str, str], ct_directions: str = "",
                      stylegan_directions: str = ""):
  """configs/compare_edits_tiny.py on the demo's runs (a path not run is left out).

  ``ct_directions`` / ``stylegan_directions``: the DCGAN's / StyleGAN's direction file
  when it is not in ``<dir>/report`` (a shipped generator).
  """
  c = load_config("compare_edits_tiny", complete_study_config)
  c.brain.ifcvae_gan, c.brain.ssdaae = attr_dirs["ifcvae_brain"], attr_dirs["ssdaae_brain"]
  c.thorax.ifcvae_gan = attr_dirs["ifcvae_thorax"]
  c.brain.stylegan = stylegan_dir or ""
  c.thorax.dcgan = ct_dir or ""
  c.thorax.dcgan_directions = ct_directions
  c.brain.stylegan_directions = stylegan_directions
  if quick:
    c.subjects.num_subjects, c.steps = 2, 3
    for kind in ("brain", "thorax"):
      c[kind].inversion.steps, c[kind].inversion.restarts = 5, 1
      c[kind].inversion.w_avg_samples = 64
  return c


def _edits_path(clock, reports, out, quick, ct_dir, stylegan_dir, ct_directions="",
                stylegan_directions=""):
  attr_dirs = {}
  for name, what in (("ifcvae_brain", "IFcVAE-GAN on brain phantoms (HC/MS)"),
                     ("ssdaae_brain", "SS-DAAE on brain phantoms (10% labels)"),
                     ("ifcvae_thorax", "IFcVAE-GAN on thorax phantoms (large breast)")):
    attr_dirs[name] = os.path.join(out, name)
    clock(f"train tiny {what}", train_and_evaluate, train_config(f"{name}_tiny", quick),
          attr_dirs[name])
  reports.append(clock("compare attribute edits (one table, same subjects)",
                       run_edit_comparison,
                       comparison_config(quick, ct_dir, stylegan_dir, attr_dirs,
                                         ct_directions, stylegan_directions),
                       os.path.join(out, "edit_comparison")))


def run_demo(out: str, quick: bool = False, ms_model: str = "stylegan2",
             paths: tuple[str, ...] = ("ct", "ms", "edits"), models: str = "pretrained"
             ) -> dict:
  """Runs the chosen ``paths`` into ``out``; returns {"reports": [...], "timing": [...]}.

  ``models='pretrained'``: the CT path analyses the shipped validation DCGAN
  (pretrained/); ``'tiny'``: it trains the tiny DCGAN first.
  """
  if models not in MODEL_SOURCES:
    raise ConfigError(f"--models={models!r}: choose {' or '.join(MODEL_SOURCES)}")
  if ms_model not in ("stylegan2", "dcgan", "vae", "none"):
    raise ConfigError(f"--ms-model={ms_model!r}: choose stylegan2, dcgan, vae or none")
  bad = [p for p in paths if p not in ("ct", "ms", "edits")]
  if bad or not paths:
    raise ConfigError(f"--paths={','.join(paths)}: choose from ct, ms, edits")
  out = os.path.abspath(out)
  os.makedirs(out, exist_ok=True)
  clock = _Clock()
  reports = []

  ct_dir, ct_directions = None, ""
  if "ct" in paths and models == "pretrained":
    ct_dir, ct_directions = _pretrained_ct_path(clock, reports, out, quick)
  elif "ct" in paths:
    ct_dir = os.path.join(out, "ct_dcgan")
    _ct_path(clock, reports, ct_dir, quick)
  stylegan_dir, stylegan_directions = None, ""
  if "ms" in paths and ms_model == "stylegan2" and models == "pretrained" and PRETRAINED_MS:
    stylegan_dir, stylegan_directions = _pretrained_ms_path(clock, reports, out, quick)
  elif "ms" in paths and ms_model != "none":
    _ms_path(clock, reports, out, quick, ms_model)
    if ms_model == "stylegan2":
      stylegan_dir = os.path.join(out, "ms_stylegan2")
  if "edits" in paths:
    _edits_path(clock, reports, out, quick, ct_dir, stylegan_dir, ct_directions,
                stylegan_directions)

  total = {"stage": "total", "wall_s": round(sum(r["wall_s"] for r in clock.rows), 1),
           "cpu_s": round(sum(r["cpu_s"] for r in clock.rows), 1)}
  result = {"reports": reports, "timing": clock.rows + [total], "quick": quick,
            "ms_model": ms_model, "models": models}
  with open(os.path.join(out, "demo_timing.json"), "w") as f:
    json.dump(result, f, indent=2)
  return result


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxlatent.demo", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="runs/demo", help="output folder (re-used if it exists)")
  parser.add_argument("--quick", action="store_true", help="a few steps per stage (smoke test)")
  parser.add_argument("--paths", default="ct,ms,edits",
                      help="comma list of paths: ct, ms, edits (default: all three)")
  parser.add_argument("--ms-model", default="stylegan2",
                      help="model of the MS path: stylegan2 (default), dcgan, vae or none")
  parser.add_argument("--models", default="pretrained",
                      help="'pretrained' (default) analyses the shipped 64 px validation "
                      "generators; 'tiny' trains the tiny models from scratch")
  parser.add_argument("--malloc", default="retain", help=host.MALLOC_HELP)
  args = parser.parse_args(argv)
  host.configure_malloc(args.malloc)  # before JAX starts its threads
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.ERROR)
  result = run_demo(args.out, quick=args.quick, ms_model=args.ms_model,
                    paths=tuple(p.strip() for p in args.paths.split(",") if p.strip()),
                    models=args.models)
  print("\nstage timing (wall / CPU seconds):")
  for r in result["timing"]:
    print(f"  {r['stage']:<58} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f}")
  print("\nReports:")
  for path in result["reports"]:
    print(f"  {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
