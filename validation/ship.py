"""Packs a validation run for the repository: pretrained/<name>/ (docs/VALIDATION.md).

  python validation/ship.py --stage=dcgan_ct/proj_lenet_k100_s0 --name=dcgan_ct_64 \
      [--runs=runs/validate] [--force]

Writes ``pretrained/<name>/``:
  * the generator as ``python -m jaxlatent.convert export`` writes it (config.json,
    generator.npz, export.json): what the analysis reads, without the discriminator
    and optimiser state;
  * ``analysis/``: the stage's effective analysis config (``config.json``), its
    directions with their factor alignment and factor regressor (``directions/``),
    its inverted codes (``inversion/``), so ``make demo`` re-uses them instead of
    re-computing hours of discovery and inversion;
  * ``recorded.json``: the figures the study recorded for it (per method and factor the
    best-aligned direction and its alignment; the analysis' metrics.json), which
    tests/test_pretrained.py re-computes from the files above.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from validation import collect, run  # noqa: E402  pylint: disable=g-import-not-at-top

PRETRAINED = os.path.join(REPO, "pretrained")
ANALYSIS_FILES = ("directions/*_directions.npz", "directions/*_directions.json",
                  "directions/factor_regressor.npz", "inversion/latents.npz",
                  "inversion/latents.json", "inversion/ground_truth_latents.npz",
                  "inversion/ground_truth_latents.json")


def effective_analysis_config(stage: run.Stage):
  """The completed config ``analyze.py`` ran the stage with (its file plus overrides)."""
  from jaxlatent.config_cli import parse_config_flags  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies.config import complete_study_config  # pylint: disable=g-import-not-at-top
  argv = stage.argv("/unused")
  flags_only = [a for a in argv[2:] if not a.startswith(("--workdir", "--out"))]
  config, _ = parse_config_flags(["analyze.py"] + flags_only,
                                 [("workdir", None, ""), ("out", None, "")],
                                 complete=complete_study_config)
  return config


def recorded_figures(folder: str) -> dict:
  """What a test re-computes: per method, per factor, the best-aligned direction (CT),
  and the analysis' metrics.json (for MS its ground-truth scores)."""
  res = collect.ct_analysis(folder) if factor_alignment_ran(folder) else None
  with open(os.path.join(folder, "metrics.json")) as f:
    metrics = json.load(f)
  best = {m: e["best"] for m, e in (res or {}).get("methods", {}).items()}
  return {"best_alignment": best, "metrics": metrics}


def ensure_regressor(runs: str, stage: run.Stage, folder: str) -> str:
  """The stage's ``directions/factor_regressor.npz``; trained (same seed, so the same
  regressor the analysis used) when the analysis did not keep it."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies import analysis  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies.generators import load_generator  # pylint: disable=g-import-not-at-top
  path = os.path.join(folder, "directions", analysis.REGRESSOR_FILE)
  if not os.path.exists(path):
    config = effective_analysis_config(stage)
    trained = load_generator(os.path.join(runs, stage.workdir), str(config.space))
    analysis.regressor_or_load(trained, config, os.path.dirname(path),
                               analysis.regressor_key(jax.random.PRNGKey(int(config.seed))))
  return path


def ship(runs: str, stage_name: str, name: str, force: bool = False) -> str:
  """Packs the finished validation stage ``stage_name`` as ``pretrained/<name>``."""
  stages = {s.name: s for s in run.stages()}
  if stage_name not in stages:
    raise SystemExit(f"error: --stage={stage_name!r}: not a stage of validation/run.py")
  stage = stages[stage_name]
  folder = os.path.join(runs, stage.folder)
  if not os.path.exists(os.path.join(folder, "DONE")):
    raise SystemExit(f"error: {folder} has not finished (no DONE)")
  config = effective_analysis_config(stage)
  if factor_alignment_ran(folder):
    ensure_regressor(runs, stage, folder)
  return pack(os.path.join(runs, stage.workdir), folder, config,
              os.path.join(PRETRAINED, name), {"stage": stage.name, "name": name}, force)


def factor_alignment_ran(folder: str) -> bool:
  """Whether the analysis in ``folder`` scored discovered directions (CT: a regressor)."""
  names = glob.glob(os.path.join(folder, "directions", "*_directions.npz"))
  return any(not os.path.basename(n).startswith("interfacegan") for n in names)


def pack(workdir: str, folder: str, config, out: str, record: dict,
         force: bool = False) -> str:
  """Writes ``out``: the exported generator of ``workdir``, the re-usable files of its
  analysis ``folder`` (run with ``config``) and ``recorded.json`` (+ ``record``).

  ``out`` appears only once complete; an existing one is replaced only with ``force``.
  """
  from jaxlatent.convert.export import export_generator  # pylint: disable=g-import-not-at-top
  rec = recorded_figures(folder)
  rec.update(record)
  if os.path.exists(out):
    if not force:
      raise SystemExit(f"error: {out} exists (--force replaces it)")
    shutil.rmtree(out)
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}.")
  try:
    # The checkpoint the analysis read, even if the training went on since.
    export_generator(workdir, os.path.join(tmp, "g"), step=rec["metrics"]["checkpoint_step"])
    dest = os.path.join(tmp, "g", "analysis")
    for pattern in ANALYSIS_FILES:
      for src in glob.glob(os.path.join(folder, pattern)):
        rel = os.path.relpath(src, folder)
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, rel))
    with open(os.path.join(dest, "config.json"), "w") as f:
      f.write(config.to_json(indent=1, sort_keys=True))
    with open(os.path.join(tmp, "g", "recorded.json"), "w") as f:
      json.dump(rec, f, indent=1, sort_keys=True)
    os.rename(os.path.join(tmp, "g"), out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out


def recompute_ground_truth(pretrained: str) -> dict:
  """The MS ground-truth scores of a shipped generator, from its files alone: its
  InterFaceGAN direction walks its shipped ground-truth codes (no re-inversion: a
  mismatched fingerprint is an error), scored against the phantom's true difference
  maps like the analysis does.  Returns ``{component2_corr_mean, subtraction_corr_mean,
  ...}`` to compare with ``recorded.json``'s ``metrics.ground_truth``."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxlatent import directions as dirs  # pylint: disable=g-import-not-at-top
  from jaxlatent.demo import shipped_analysis_config  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies import analysis  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies.generators import load_generator  # pylint: disable=g-import-not-at-top

  config = shipped_analysis_config(pretrained)
  config.cache_mismatch = "error"
  codes = os.path.join(pretrained, "analysis", "inversion")
  if not os.path.isfile(os.path.join(codes, "ground_truth_latents.npz")):
    raise FileNotFoundError(f"{codes}/ground_truth_latents.npz: not shipped")
  trained = load_generator(pretrained, str(config.space))
  direction = dirs.load_directions(os.path.join(pretrained, "analysis", "directions",
                                                "interfacegan_directions"))
  alphas = analysis.traversal_alphas(config)
  key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), 4)  # unused: codes re-used
  got = analysis.ground_truth(trained, config, direction, alphas, key, codes)
  return {"component2_corr_mean": got.summary["component2_corr_mean"],
          "subtraction_corr_mean": got.summary["edit_corr_mean"]}


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--runs", default=os.path.join(REPO, "runs", "validate"))
  p.add_argument("--stage", required=True)
  p.add_argument("--name", required=True)
  p.add_argument("--force", action="store_true")
  a = p.parse_args(argv)
  out = ship(os.path.abspath(a.runs), a.stage, a.name, a.force)
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
  print(f"wrote {out} ({size / 2**20:.1f} MiB)")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
