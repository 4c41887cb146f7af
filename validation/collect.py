"""Gathers the validation study's figures: validation/results.json, docs/validation/*.png,
and the result tables of docs/VALIDATION.md (between its ``results`` markers).

  python validation/collect.py [--runs=runs/validate]

Reads what ``validation/run.py`` left in ``--runs``: each analysis folder's
``metrics.json`` and ``directions/*.json`` (factor alignment rows), each stage's DONE
(wall time).  Stages not run yet are listed as pending; nothing is invented.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run as a script from anywhere: the repo's jaxlatent and validation

from validation.run import LABEL_FRACTION_RESTARTS, TRAINING_SUBJECTS, VOYNOV_VARIANTS  # noqa: E402  pylint: disable=g-import-not-at-top

CT_MODELS = ("dcgan_ct", "vae_ct")
CT_FACTORS = ("rotation", "body_width", "breast_size", "slice_position", "lung_size",
              "heart_size")
ALIGNMENT_GOAL = 0.8  # issue goal: one direction per factor with alignment >= 0.8
GOAL_FACTORS = ("rotation", "body_width", "slice_position")
INVERSION_GOAL = 1.5  # held-out error at most this times the training subjects' error
MS_STAGE = "stylegan_brain/ms"
MS_TRAIN_CONFIG = "validate_stylegan_brain.py"
FIG_DIR = os.path.join(REPO, "docs", "validation")
DOC = os.path.join(REPO, "docs", "VALIDATION.md")


def _json(path: str):
  with open(path) as f:
    return json.load(f)


def _done_seconds(folder: str) -> float | None:
  p = os.path.join(folder, "DONE")
  if not os.path.exists(p):
    return None
  with open(p) as f:
    parts = f.read().split()
  return float(parts[1].rstrip("s")) if len(parts) > 1 else None


def best_per_factor(rows: list[dict]) -> dict[str, dict]:
  """For each factor, the direction whose best factor it is with the highest alignment."""
  best: dict[str, dict] = {}
  for r in rows:
    f = r["best_factor"]
    if f not in best or r["alignment"] > best[f]["alignment"]:
      best[f] = {"direction": r["direction"], "alignment": float(r["alignment"]),
                 "r2": float(r["r2"]), "total_change": float(r["total_change"])}
  return best


def ct_analysis(folder: str) -> dict | None:
  """One CT analysis folder's figures, or None when it has not finished."""
  if not os.path.exists(os.path.join(folder, "DONE")):
    return None
  m = _json(os.path.join(folder, "metrics.json"))
  out = {"seconds": _done_seconds(folder), "checkpoint_step": m.get("checkpoint_step"),
         "methods": {}}
  for method in m.get("methods", []):
    d = _json(os.path.join(folder, "directions", f"{method}_directions.json"))
    meta = d.get("meta", {})
    entry = {"num_directions": d["num_directions"],
             "best": best_per_factor(meta.get("alignment_rows", [])),
             "summary": m.get(method, {}).get("alignment", {})}
    if method == "voynov":
      entry.update(rca=m["voynov"].get("rca"), chance=m["voynov"].get("chance"),
                   collapsed=m["voynov"].get("collapsed"))
    out["methods"][method] = entry
    out["regressor_val_r2"] = meta.get("regressor_val_r2", out.get("regressor_val_r2"))
  out["inversion"] = m.get("inversion", {})
  out["eigen"] = m.get("eigen", {})
  return out


def edit_comparison(folder: str) -> dict | None:
  """The edit comparison's rows (one per model and phantom kind), or None if not finished."""
  if not os.path.exists(os.path.join(folder, "DONE")):
    return None
  e = _json(os.path.join(folder, "edit_comparison.json"))
  return {"seconds": e.get("seconds"), "steps": e.get("steps"), "subjects": e.get("subjects"),
          "table": e.get("table"), "figures": e.get("figures"),
          "rows": [{"kind": r["kind"], "model": r["model"], "method": r["method"],
                    "summary": r["summary"]} for r in e.get("rows", [])]}


def label_fraction(folder: str) -> dict | None:
  """SS-DAAE and supervised held-out accuracy per labelled fraction, or None."""
  if not os.path.exists(os.path.join(folder, "DONE")):
    return None
  lf = _json(os.path.join(folder, "label_fraction.json"))
  return {k: lf.get(k) for k in ("rows", "chance", "supervised", "steps", "seconds",
                                 "num_train_images", "num_heldout_images", "classes")}


METRIC_MIN_R2 = 0.9  # factors the regressor predicts this well count in the re-scoring
# Restarts of one recipe whose factor regressors (each analysis trains its own) are
# averaged into the ensemble metric.
ENSEMBLE_VARIANTS = ("proj_lenet_k100_s0", "proj_lenet_k100_s1", "proj_lenet_k100_s2")


def metric_check(runs: str, model: str) -> dict | None:
  """What the alignment metric can reach on ``model``'s analyses (validation/ceiling.py):
  its ceiling on exact one-factor phantom traversals (with the first finished
  variant's regressor), and every finished variant's directions re-scored over the
  factors the regressor predicts with R^2 >= METRIC_MIN_R2."""
  from jaxlatent.directions.alignment import NAMING_MIN_CHANGE  # pylint: disable=g-import-not-at-top
  from jaxlatent import directions as dirs  # pylint: disable=g-import-not-at-top
  from validation import ceiling, run, ship  # pylint: disable=g-import-not-at-top
  stages = {s.name: s for s in run.stages()}
  out, finished = None, {}
  for variant, _ in VOYNOV_VARIANTS:
    stage = stages[f"{model}/{variant}"]
    folder = os.path.join(runs, stage.folder)
    reg_path = os.path.join(folder, "directions", "factor_regressor.npz")
    if not (os.path.exists(os.path.join(folder, "DONE")) and os.path.exists(reg_path)):
      continue
    cfg = ship.effective_analysis_config(stage)
    size = int(_json(os.path.join(runs, stage.workdir, "config.json"))["image_size"])
    reg, _ = dirs.load_factor_regressor(reg_path)
    if out is None:
      out = {"regressor_from": variant, "min_r2": METRIC_MIN_R2,
             "val_r2": dict(zip(reg.factor_names, map(float, np.asarray(reg.val_r2)))),
             "ceiling": ceiling.one_factor_sweeps(reg, "thorax", size, 16, 7,
                                                  0, METRIC_MIN_R2),
             "restricted": {}}
    out["restricted"][variant] = ceiling.restricted_alignment(
        reg, os.path.join(folder, "directions"), os.path.join(runs, stage.workdir),
        str(cfg.space), METRIC_MIN_R2, tuple(cfg.alignment.shifts),
        int(cfg.alignment.num_latents), int(cfg.seed), NAMING_MIN_CHANGE)
    finished[variant] = (stage, cfg, reg)
  members = [v for v in ENSEMBLE_VARIANTS if v in finished]
  if len(members) >= 2:
    # The same directions scored by the mean of the restarts' regressors: a less noisy
    # metric, to tell regressor noise from entangled directions.
    ens = ceiling.RegressorEnsemble([finished[v][2] for v in members])
    out["ensemble"] = {
        "members": members,
        "ceiling": ceiling.one_factor_sweeps(ens, "thorax", size, 16, 7, 0, METRIC_MIN_R2),
        "restricted": {
            # Every factor kept: the best direction by its all-factor alignment.
            variant: ceiling.restricted_alignment(
                ens, os.path.join(runs, stage.folder, "directions"),
                os.path.join(runs, stage.workdir), str(cfg.space), -np.inf,
                tuple(cfg.alignment.shifts), int(cfg.alignment.num_latents),
                int(cfg.seed), NAMING_MIN_CHANGE)
            for variant, (stage, cfg, _) in finished.items()}}
  return out


def ms_analysis(folder: str) -> dict | None:
  if not os.path.exists(os.path.join(folder, "DONE")):
    return None
  m = _json(os.path.join(folder, "metrics.json"))
  check = os.path.join(folder, "ms_directions.json")  # validation/ms_directions.py
  return {"seconds": _done_seconds(folder), "checkpoint_step": m.get("checkpoint_step"),
          "inversion": m.get("inversion"), "interfacegan": m.get("interfacegan"),
          "eigen": m.get("eigen"), "ground_truth": m.get("ground_truth"),
          "directions_check": _json(check) if os.path.exists(check) else None}


def ms_ceiling() -> dict:
  """The MS scores of the exact HC -> MS edit (validation/ceiling.py) on the ground-truth
  subjects, schedule and image size of the MS stage: as rendered, and with fresh
  phantom noise in every frame."""
  from jaxlatent.config_cli import config_from_file  # pylint: disable=g-import-not-at-top
  from validation import ceiling, run, ship  # pylint: disable=g-import-not-at-top
  stage = {s.name: s for s in run.stages()}[MS_STAGE]
  cfg = ship.effective_analysis_config(stage)
  train_cfg = config_from_file(os.path.join(REPO, "configs", MS_TRAIN_CONFIG))
  gc, tc = cfg.ground_truth, cfg.traversal
  if float(tc.alpha_start) != 0.0:
    raise ValueError("the ceiling's schedule starts at alpha 0")
  args = (int(train_cfg.image_size), int(gc.num_subjects), int(tc.alpha_num), int(gc.seed),
          float(gc.slice_position), float(tc.alpha_stop))
  return {"exact": ceiling.ms_ceiling(*args),
          "fresh_noise": ceiling.ms_ceiling(*args, fresh_noise=True)}


def factor_traversal_figure(runs: str, model: str, results: dict, path: str) -> str | None:
  """Rows: the best-aligned Voynov direction per factor (over every variant); columns:
  shifts -18..18 from one latent.  Needs the generator, so it is drawn here."""
  picks = []
  for factor in CT_FACTORS:
    cands = [(v["methods"]["voynov"]["best"][factor]["alignment"], variant,
              v["methods"]["voynov"]["best"][factor]["direction"])
             for variant, v in results.items()
             if v and "voynov" in v["methods"] and factor in v["methods"]["voynov"]["best"]]
    if cands:
      score, variant, direction = max(cands)
      picks.append((f"{factor} {score:.2f}", variant, direction))
  return _traversal_figure(runs, model, picks, path,
                           f"{model}: best-aligned Voynov direction per factor")


def rescored_traversal_figure(runs: str, model: str, metric: dict | None, path: str
                              ) -> str | None:
  """As :func:`factor_traversal_figure`, for the best Voynov direction per goal factor
  re-scored over the well-predicted factors (:func:`metric_check`)."""
  picks = []
  for factor in GOAL_FACTORS:
    cands = [(r["methods"]["voynov"][factor]["alignment_kept"], variant,
              r["methods"]["voynov"][factor]["direction"])
             for variant, r in (metric or {}).get("restricted", {}).items()
             if factor in r["methods"].get("voynov", {})]
    if cands:
      score, variant, direction = max(cands)
      picks.append((f"{factor} {score:.2f}", variant, direction))
  return _traversal_figure(runs, model, picks, path,
                           f"{model}: best Voynov direction per factor, re-scored "
                           f"(R^2 >= {METRIC_MIN_R2})")


def _traversal_figure(runs: str, model: str, picks: list, path: str, title: str
                      ) -> str | None:
  """Rows: ``picks`` (label, variant, direction); columns: shifts -18..18 from one z."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxlatent.directions import io as dio  # pylint: disable=g-import-not-at-top
  from jaxlatent.directions.report import save_traversal_grid, traversal_grid  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies.generators import load_generator  # pylint: disable=g-import-not-at-top
  if not picks:
    return None
  gen = load_generator(os.path.join(runs, model), "z").generator
  vecs, labels = [], []
  for label, variant, direction in picks:
    d = dio.load_directions(os.path.join(runs, model, variant, "directions",
                                         "voynov_directions.npz"))
    vecs.append(d.vectors[[f"d{k}" for k in range(d.num_directions)].index(direction)])
    labels.append(label)  # variant and direction: the tables
  z0 = gen.sample_latents(jax.random.PRNGKey(7), 1)[0]
  shifts = (-18.0, -12.0, -6.0, 0.0, 6.0, 12.0, 18.0)
  grid = traversal_grid(gen, np.stack(vecs), z0, shifts)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  save_traversal_grid(path, grid, row_labels=labels, col_labels=[f"{s:+g}" for s in shifts],
                      title=title)
  return path


# Report figures of the brain and edit stages shown in docs/VALIDATION.md: source glob
# under --runs (the first match; sorted) -> name under docs/validation/.
RUN_FIGURES = (
    ("stylegan_brain/ms/ground_truth.png", "ms_ground_truth.png"),
    ("stylegan_brain/ms/components_interfacegan-*.png", "ms_components.png"),
    ("stylegan_brain/ms/eigenvectors_interfacegan-*.png", "ms_eigenvectors.png"),
    ("stylegan_brain/ms/sequence_interfacegan-*.png", "ms_sequence.png"),
    ("compare_edits/edit_comparison_brain.png", "edits_brain.png"),
    ("compare_edits/edit_comparison_thorax.png", "edits_thorax.png"),
)


def copy_run_figures(runs: str, fig_dir: str = FIG_DIR) -> dict[str, str]:
  """Copies the :data:`RUN_FIGURES` whose stage has finished (its folder has DONE);
  returns ``{name: path relative to the repository}``."""
  import shutil  # pylint: disable=g-import-not-at-top
  copied = {}
  for pattern, name in RUN_FIGURES:
    found = sorted(glob.glob(os.path.join(runs, pattern)))
    if not found or not os.path.exists(os.path.join(os.path.dirname(found[0]), "DONE")):
      continue
    os.makedirs(fig_dir, exist_ok=True)
    dest = os.path.join(fig_dir, name)
    shutil.copyfile(found[0], dest)
    copied[os.path.splitext(name)[0]] = os.path.relpath(dest, REPO)
  return copied


def _machine() -> str:
  cpu = "unknown CPU"
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def _commit() -> str:
  try:
    return subprocess.check_output(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                   text=True).strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def collect(runs: str) -> dict:
  res = {"date": datetime.date.today().isoformat(), "commit": _commit(),
         "machine": _machine(), "runs": os.path.relpath(runs, REPO), "training": {},
         "ct": {}, "ms": None, "figures": {}}
  for folder in sorted(glob.glob(os.path.join(runs, "*", "config.json"))):
    name = os.path.basename(os.path.dirname(folder))
    run = os.path.dirname(folder)
    last = None
    if os.path.exists(os.path.join(run, "metrics.jsonl")):
      with open(os.path.join(run, "metrics.jsonl")) as f:
        lines = [json.loads(x) for x in f if x.strip()]
      last = lines[-1] if lines else None
      fd = [x for x in lines if "fd_random_features" in x]
    res["training"][name] = {
        # The loop's own clock: a DONE written by a later no-op call would say seconds.
        "seconds": last.get("elapsed") if last else None,
        "done": os.path.exists(os.path.join(run, "DONE")),
        "last_step": last.get("step") if last else None,
        "fd_random_features": ([(x["step"], x["fd_random_features"]) for x in fd]
                               if last else [])}
  for model in CT_MODELS:
    res["ct"][model] = {variant: ct_analysis(os.path.join(runs, model, variant))
                        for variant, _ in VOYNOV_VARIANTS}
  res["ms"] = ms_analysis(os.path.join(runs, "stylegan_brain", "ms"))
  res["ms_ceiling"] = ms_ceiling()
  res["edits"] = edit_comparison(os.path.join(runs, "compare_edits"))
  res["label_fraction"] = label_fraction(os.path.join(runs, "label_fraction"))
  res["label_fraction_restarts"] = {
      str(seed): label_fraction(os.path.join(runs, f"label_fraction_s{seed}"))
      for seed in LABEL_FRACTION_RESTARTS}
  res["metric"] = {model: metric_check(runs, model) for model in CT_MODELS}
  res["inversion"] = {model: {
      "heldout": (res["ct"][model][VOYNOV_VARIANTS[0][0]] or {}).get("inversion"),
      "training": (ct_analysis(os.path.join(runs, model, TRAINING_SUBJECTS)) or {}).get(
          "inversion")} for model in CT_MODELS}
  return res


def _fmt(x, nd=2):
  return "n/a" if x is None else f"{x:.{nd}f}"


def ct_table(res: dict) -> str:
  """Per model and factor: the best alignment of Voynov (over variants), SeFa, GANSpace."""
  lines = ["| model | factor | Voynov best (variant, direction) | SeFa best | GANSpace best "
           "| goal | met |", "|---|---|---|---|---|---|---|"]
  for model in CT_MODELS:
    runs = {k: v for k, v in res["ct"][model].items() if v}
    if not runs:
      lines.append(f"| {model} | (analyses pending) | | | | | |")
      continue
    for factor in CT_FACTORS:
      voy = [(v["methods"]["voynov"]["best"][factor]["alignment"], k,
              v["methods"]["voynov"]["best"][factor]["direction"])
             for k, v in runs.items() if factor in v["methods"].get("voynov", {}).get("best", {})]
      cells = []
      best_score = None
      if voy:
        s, k, d = max(voy)
        cells.append(f"{s:.2f} ({k}, {d})")
        best_score = s
      else:
        cells.append("none")
      for m in ("sefa", "ganspace"):
        vals = [v["methods"][m]["best"][factor]["alignment"] for v in runs.values()
                if m in v["methods"] and factor in v["methods"][m]["best"]]
        cells.append(_fmt(max(vals)) if vals else "none")
        if vals:
          best_score = max(best_score or 0.0, max(vals))
      goal = f">= {ALIGNMENT_GOAL}" if factor in GOAL_FACTORS else "-"
      met = ("-" if factor not in GOAL_FACTORS else
             ("yes" if best_score is not None and best_score >= ALIGNMENT_GOAL else "no"))
      lines.append(f"| {model} | {factor} | " + " | ".join(cells) + f" | {goal} | {met} |")
  return "\n".join(lines)


def metric_table(res: dict) -> str:
  """Per model and goal factor: the regressor's R^2, the metric's ceiling over all
  factors and over the well-predicted ones, and the best directions re-scored."""
  lines = ["| model | factor | regressor R^2 | ceiling, all factors | ceiling, R^2 >= "
           f"{METRIC_MIN_R2} | Voynov best, R^2 >= {METRIC_MIN_R2} (variant, direction; all "
           "factors) | SeFa | GANSpace |", "|---|---|---|---|---|---|---|---|"]
  for model in CT_MODELS:
    m = (res.get("metric") or {}).get(model)
    if not m:
      lines.append(f"| {model} | (analyses pending) | | | | | | |")
      continue
    for factor in GOAL_FACTORS:
      c = m["ceiling"][factor]
      cells = []
      for method in ("voynov", "sefa", "ganspace"):
        found = [(b[factor]["alignment_kept"], v, b[factor]["direction"],
                  b[factor]["alignment_all"])
                 for v, r in m["restricted"].items()
                 for b in [r["methods"].get(method, {})] if factor in b]
        if not found:
          cells.append("none")
          continue
        kept, variant, d, full = max(found)
        cells.append(f"{kept:.2f} ({variant}, {d}; {full:.2f})" if method == "voynov"
                     else f"{kept:.2f} ({d}; {full:.2f})")
      lines.append(f"| {model} | {factor} | {m['val_r2'][factor]:.3f} | {c['alignment']:.2f} | "
                   f"{_fmt(c['alignment_kept'])} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def ensemble_table(res: dict) -> str:
  """Per model and goal factor: the all-factor ceiling and best directions scored by one
  regressor (each analysis' own) and by the ensemble of the restarts' regressors."""
  lines = ["| model | factor | ceiling: one regressor / ensemble | Voynov best, own regressor "
           "| Voynov best, ensemble (variant, direction) | SeFa, ensemble | GANSpace, ensemble |",
           "|---|---|---|---|---|---|---|"]
  for model in CT_MODELS:
    m = (res.get("metric") or {}).get(model) or {}
    ens = m.get("ensemble")
    if not ens:
      lines.append(f"| {model} | (fewer than two restarts finished) | | | | | |")
      continue
    for factor in GOAL_FACTORS:
      own = [(r["methods"]["voynov"]["best"][factor]["alignment"], v)
             for v, r in (res.get("ct") or {}).get(model, {}).items()
             if r and factor in r["methods"].get("voynov", {}).get("best", {})]
      cells = []
      for method in ("voynov", "sefa", "ganspace"):
        found = [(b[factor]["alignment_all"], v, b[factor]["direction"])
                 for v, r in ens["restricted"].items()
                 for b in [r["methods"].get(method, {})] if factor in b]
        if not found:
          cells.append("none")
          continue
        a, variant, d = max(found)
        cells.append(f"{a:.2f} ({variant}, {d})" if method == "voynov" else f"{a:.2f} ({d})")
      own_cell = f"{max(own)[0]:.2f} ({max(own)[1]})" if own else "none"
      lines.append(f"| {model} | {factor} | {m['ceiling'][factor]['alignment']:.2f} / "
                   f"{ens['ceiling'][factor]['alignment']:.2f} | {own_cell} | "
                   + " | ".join(cells) + " |")
  members = sorted({", ".join(((res.get("metric") or {}).get(mo) or {}).get("ensemble", {})
                              .get("members", [])) for mo in CT_MODELS} - {""})
  if members:
    lines.append("")
    lines.append("Ensemble: the mean prediction of the factor regressors of "
                 + "; ".join(members) + " (per model).")
  return "\n".join(lines)


def inversion_table(res: dict) -> str:
  """Per model: inversion error (masked pixel MSE) on held-out against training subjects."""
  lines = ["| model | held-out subjects: error mean +- std (images) | training subjects | "
           "held-out / training | goal | met |", "|---|---|---|---|---|---|"]
  for model in CT_MODELS:
    inv = (res.get("inversion") or {}).get(model) or {}
    cells, means = [], []
    for which in ("heldout", "training"):
      e = inv.get(which)
      if not e:
        cells.append("pending")
        continue
      cells.append(f"{e['error_mean']:.4f} +- {e['error_std']:.4f} ({e['num_images']})")
      means.append(e["error_mean"])
    ratio = f"{means[0] / means[1]:.2f}" if len(means) == 2 else "n/a"
    met = ("n/a" if len(means) < 2 else
           ("yes" if means[0] <= INVERSION_GOAL * means[1] else "no"))
    lines.append(f"| {model} | {cells[0]} | {cells[1]} | {ratio} | <= {INVERSION_GOAL} | {met} |")
  return "\n".join(lines)


def voynov_table(res: dict) -> str:
  lines = ["| model | variant | RCA (chance) | collapsed | factors named (alignment >= 0.5) "
           "| wall |", "|---|---|---|---|---|---|"]
  for model in CT_MODELS:
    for variant, _ in VOYNOV_VARIANTS:  # the study's order (results.json sorts its keys)
      v = res["ct"][model].get(variant)
      if not v or "voynov" not in v["methods"]:
        lines.append(f"| {model} | {variant} | pending | | | |")
        continue
      e = v["methods"]["voynov"]
      named = sorted(f for f, b in e["best"].items() if b["alignment"] >= 0.5)
      lines.append(f"| {model} | {variant} | {_fmt(e['rca'])} ({_fmt(e['chance'], 3)}) | "
                   f"{e['collapsed']} | {', '.join(named) or 'none'} | "
                   f"{_fmt((v['seconds'] or 0) / 60, 0)} min |")
  return "\n".join(lines)


POLY_GOAL = 0.99  # component 1 ~ constant: |cos(v_1, constant)| at least this


def ms_table(res: dict) -> str:
  """Claim 2 next to its ceiling: the same scores of the exact phantom edit (as rendered;
  with fresh noise in every frame)."""
  ms, ceil = res.get("ms") or {}, res.get("ms_ceiling") or {}
  gt, ig = ms.get("ground_truth") or {}, ms.get("interfacegan") or {}
  eig = next(iter((ms.get("eigen") or {}).values()), {})

  def bound(key):
    got = [ceil[k][key] for k in ("exact", "fresh_noise") if k in ceil]
    return " / ".join(f"{g['mean']:.3f}" for g in got) or "n/a"

  c2, sub = gt.get("component2_corr_mean"), gt.get("subtraction_corr_mean")
  poly = eig.get("polynomial_match_mean") or []

  def poly_bound(c):
    got = [ceil[k]["polynomial_match_mean"][c] for k in ("exact", "fresh_noise")
           if "polynomial_match_mean" in ceil.get(k, {})]
    return " / ".join(f"{g:.3f}" for g in got) or "n/a"

  def poly_row(c, name, paper, goal):
    got = poly[c] if len(poly) > c else None
    return (f"component {c + 1} vs the schedule's {name} (\\|cos\\|)", paper, _fmt(got, 3),
            poly_bound(c), f">= {goal}" if goal else "-",
            None if goal is None or got is None else got >= goal)

  held_out = ("held-out subjects" if ig.get("held_out") == "groups" else "held-out codes")
  rows = [
      poly_row(0, "constant", "~constant", POLY_GOAL),
      ("\\|corr(v2, alpha)\\| (mean over subjects)", "~linear",
       _fmt(eig.get("abs_corr_v2_alpha_mean"), 3), bound("abs_corr_v2_alpha"), ">= 0.99",
       None if not eig else eig["abs_corr_v2_alpha_mean"] >= 0.99),
      ("component-2 map vs true difference map (r)", "maps the change",
       f"{_fmt(c2)} +- {_fmt(gt.get('component2_corr_std'))}", bound("component2_corr"),
       ">= 0.5", None if c2 is None else c2 >= 0.5),
      ("subtraction map vs true difference map (r)", "-",
       f"{_fmt(sub)} +- {_fmt(gt.get('subtraction_corr_std'))}", bound("subtraction_corr"),
       "below component 2", None if c2 is None or sub is None else sub < c2),
      poly_row(2, "quadratic", "polynomial series", None),
      poly_row(3, "cubic", "polynomial series", None),
      (f"HC -> MS direction: balanced accuracy on {held_out}", "-",
       _fmt(ig.get("val_balanced_accuracy")), "-", "-", None),
  ]
  lines = ["| quantity | paper | measured | exact edit (as rendered / fresh noise) | goal | met |",
           "|---|---|---|---|---|---|"]
  for q, p, v, c, g, ok in rows:
    lines.append(f"| {q} | {p} | {v} | {c} | {g} | {'-' if ok is None else ('yes' if ok else 'no')} |")
  if not ms:
    lines.append("\n(the MS analysis has not run yet)")
  return "\n".join(lines)


EDIT_GOAL = 0.5  # an edit's change correlates at least this well with the true change


def edits_table(res: dict) -> str:
  """Claim 4: every model's edit of the same held-out subjects against the true change."""
  e = res.get("edits")
  if not e:
    return "(the edit comparison has not run yet)"
  lines = ["| phantom | model | method | n | edit corr | component-2 corr | goal | met |",
           "|---|---|---|---|---|---|---|---|"]
  for t, r in zip(e["table"], e["rows"]):
    ok = r["summary"].get("edit_corr_mean", 0.0) >= EDIT_GOAL
    lines.append(f"| {t['phantom']} | {t['model']} | {t['method']} | {t['n']} | "
                 f"{t['edit corr']} | {t['component-2 corr']} | edit corr >= {EDIT_GOAL} | "
                 f"{'yes' if ok else 'no'} |")
  return "\n".join(lines)


def label_fraction_table(res: dict) -> str:
  """Claim 5: SS-DAAE held-out accuracy per labelled fraction next to the supervised
  classifier trained on the same labelled images."""
  lf = res.get("label_fraction")
  if not lf:
    return "(the label-fraction study has not run yet)"
  lines = ["| labelled fraction | labelled images | SS-DAAE accuracy | supervised accuracy | "
           "chance | goal | met |", "|---|---|---|---|---|---|---|"]
  for r in lf["rows"]:
    sup = r.get("supervised_accuracy")
    few = r["fraction"] < 1.0
    goal = "SS-DAAE >= supervised" if few else "above chance"
    ok = (sup is not None and r["accuracy"] >= sup) if few else r["accuracy"] > r["chance"]
    lines.append(f"| {r['fraction']:g} | {r['num_labelled']} | {r['accuracy']:.3f} | "
                 f"{_fmt(sup, 3)} | {r['chance']:.3f} | {goal} | {'yes' if ok else 'no'} |")
  return "\n".join(lines)


def label_fraction_restarts_table(res: dict) -> str:
  """Claim 5 at the restarted fractions: per seed (seed 0 is the main run), the SS-DAAE
  and supervised accuracy and their difference; the mean and standard deviation over
  the finished seeds."""
  runs = {"0": res.get("label_fraction")}
  runs.update(res.get("label_fraction_restarts") or {})
  fractions = sorted({r["fraction"] for seed, lf in runs.items() if lf and seed != "0"
                      for r in lf["rows"]})
  if not fractions:
    return "(the label-fraction restarts have not run yet)"
  lines = ["| labelled fraction | seed | labelled images | SS-DAAE accuracy | "
           "supervised accuracy | SS-DAAE - supervised |", "|---|---|---|---|---|---|"]
  for frac in fractions:
    diffs = []
    for seed, lf in sorted(runs.items()):
      row = next((r for r in (lf or {}).get("rows", []) if r["fraction"] == frac), None)
      if row is None or row.get("supervised_accuracy") is None:
        continue
      diff = row["accuracy"] - row["supervised_accuracy"]
      diffs.append((row["accuracy"], row["supervised_accuracy"], diff))
      lines.append(f"| {frac:g} | {seed} | {row['num_labelled']} | {row['accuracy']:.3f} | "
                   f"{row['supervised_accuracy']:.3f} | {diff:+.3f} |")
    if len(diffs) > 1:
      a = np.asarray(diffs)
      lines.append(f"| {frac:g} | mean +- std of {len(a)} | | {a[:, 0].mean():.3f} +- "
                   f"{a[:, 0].std(ddof=1):.3f} | {a[:, 1].mean():.3f} +- "
                   f"{a[:, 1].std(ddof=1):.3f} | {a[:, 2].mean():+.3f} +- "
                   f"{a[:, 2].std(ddof=1):.3f} |")
  return "\n".join(lines)


def write_doc_tables(res: dict, doc: str = DOC) -> None:
  """Replaces each ``<!-- results:NAME -->...<!-- /results:NAME -->`` block of ``doc``."""
  if not os.path.exists(doc):
    return
  with open(doc) as f:
    text = f.read()
  blocks = {"ct": ct_table(res), "voynov": voynov_table(res), "metric": metric_table(res),
            "ensemble": ensemble_table(res),
            "inversion": inversion_table(res), "ms": ms_table(res),
            "edits": edits_table(res), "label_fraction": label_fraction_table(res),
            "label_fraction_restarts": label_fraction_restarts_table(res),
            "provenance": (f"Figures collected {res['date']} at commit {res['commit']} on "
                           f"{res['machine']}.")}
  for name, body in blocks.items():
    start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    i, j = text.find(start), text.find(end)
    if i >= 0 and j > i:
      text = text[:i + len(start)] + "\n" + body + "\n" + text[j:]
  with open(doc, "w") as f:
    f.write(text)


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--runs", default=os.path.join(REPO, "runs", "validate"))
  p.add_argument("--no-figures", action="store_true")
  a = p.parse_args(argv)
  res = collect(os.path.abspath(a.runs))
  if not a.no_figures:
    for model in CT_MODELS:
      fig = factor_traversal_figure(a.runs, model, res["ct"][model],
                                    os.path.join(FIG_DIR, f"{model}_factor_traversals.png"))
      res["figures"][model] = os.path.relpath(fig, REPO) if fig else None
      fig = rescored_traversal_figure(a.runs, model, res["metric"][model],
                                      os.path.join(FIG_DIR, f"{model}_rescored_traversals.png"))
      res["figures"][f"{model}_rescored"] = os.path.relpath(fig, REPO) if fig else None
    res["figures"].update(copy_run_figures(os.path.abspath(a.runs)))
  with open(os.path.join(REPO, "validation", "results.json"), "w") as f:
    json.dump(res, f, indent=1, sort_keys=True)
  write_doc_tables(res)
  print(ct_table(res), voynov_table(res), metric_table(res), ensemble_table(res),
        inversion_table(res), ms_table(res),
        edits_table(res), label_fraction_table(res), label_fraction_restarts_table(res),
        sep="\n\n")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
