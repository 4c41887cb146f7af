"""The studies' outputs: figures, ``index.html`` + ``metrics.json``, Markdown tables, JSON.

The studies compute and return dataclasses; this module only draws and writes:
:func:`write_analysis_report` (the analysis of a run), :func:`write_edit_comparison`
and :func:`write_label_fraction`.  Tables go through one helper each for HTML and
Markdown (:func:`jaxlatent.viz.report.table_html` / ``table_markdown``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from typing import Any

import numpy as np

from jaxlatent import atomic_io
from jaxlatent import directions as dirs
from jaxlatent.analysis.eigen import polynomial_match
from jaxlatent.viz import plots
from jaxlatent.viz.grids import save_image_grid
from jaxlatent.viz.report import Section, table_markdown, write_report


def log(study: str, msg: str) -> None:
  """One console line of a study, with the wall-clock time."""
  print(f"[{study} {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Clock:
  """Wall and CPU seconds since construction (the ``seconds`` entry of the outputs)."""

  def __init__(self):
    self.wall, self.cpu = time.time(), time.process_time()

  def seconds(self) -> dict[str, float]:
    return {"wall": time.time() - self.wall, "cpu": time.process_time() - self.cpu}


def finite_or_none(x) -> float | None:
  """``float(x)``, or None where it is NaN / inf (strict JSON has neither)."""
  x = float(x)
  return x if math.isfinite(x) else None


def json_clean(x):
  """NaN/inf -> None, NumPy scalars and arrays -> Python values (strict JSON)."""
  if isinstance(x, dict):
    return {str(k): json_clean(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [json_clean(v) for v in x]
  if isinstance(x, np.ndarray):
    return json_clean(x.tolist())
  if isinstance(x, (bool, np.bool_)):
    return bool(x)
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (float, np.floating)):
    return finite_or_none(x)
  return x


def write_json(path: str, record: Any) -> str:
  """``record`` as strict JSON (NaN/inf -> null) at ``path``, written atomically."""
  return atomic_io.atomic_write_json(path, json_clean(record), allow_nan=False)


def upscale(images, min_size: int = 96) -> np.ndarray:
  """``[N, H, W, C]`` repeated to at least ``min_size`` px (pixel-exact, for small models)."""
  images = np.asarray(images, np.float32)
  s = max(1, min_size // images.shape[1])
  return images.repeat(s, axis=1).repeat(s, axis=2) if s > 1 else images


def inversion_figure(path: str, targets, recs, n: int = 8) -> str:
  """Rows: target / reconstruction / |error| (error 0 -> black, 2 -> white)."""
  n = min(n, len(targets))
  t, r = np.asarray(targets[:n]), np.asarray(recs[:n])
  err = np.abs(r - t) - 1.0
  save_image_grid(upscale(np.concatenate([t, r, err])), path, nrow=n)
  return path


def safe_name(name: str) -> str:
  """A file-name-safe version of a direction name ("HC->MS" -> "HC-MS")."""
  return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-") or "d"


# ----------------------------------------------------------------------------- analysis


@dataclasses.dataclass
class AnalysisResults:
  """What :func:`jaxlatent.studies.analysis.run_analysis`'s stages returned."""

  trained: Any  # studies.generators.TrainedGenerator
  samples: np.ndarray
  found: dict  # method -> analysis.MethodDirections
  dataset: Any
  inverted: Any  # inversion.InvertedSlices
  masks: np.ndarray
  supervised: Any  # analysis.Supervised | None
  eigen: Any  # analysis.Eigen
  ground_truth: Any  # analysis.GroundTruth | None
  scrubbers: list = dataclasses.field(default_factory=list)  # analysis.Scrubber per direction


def write_analysis_report(out: str, config, r: AnalysisResults, clock: Clock) -> str:
  """Figures, ``<out>/metrics.json`` and ``<out>/index.html``; returns the HTML's path."""
  gen, trained = r.trained.generator, r.trained
  metrics: dict[str, Any] = {"workdir": trained.workdir, "checkpoint_step": trained.step,
                             "model": gen.name, "space": gen.latent_spec.space,
                             "methods": list(config.methods)}
  sections = [_generator_section(out, config, r)]
  if r.found:
    sections.append(_directions_section(out, config, r, metrics))
  sections.append(_inversion_section(out, config, r, metrics))
  if r.supervised is not None:
    sections.append(_supervised_section(out, config, r, metrics))
  if r.eigen.methods:
    sections.append(_eigen_section(out, config, r, metrics))
  if r.ground_truth is not None:
    sections.append(_ground_truth_section(out, config, r, metrics))
  sections.append(_summary_section(out, config, r))
  metrics["seconds"] = clock.seconds()
  write_json(os.path.join(out, "metrics.json"), metrics)
  return write_report(out, f"jaxlatent analysis: {gen.name}", sections,
                      meta={"workdir": trained.workdir, "step": trained.step,
                            "methods": ", ".join(config.methods)})


def _generator_section(out, config, r) -> Section:
  gen, tc = r.trained.generator, r.trained.train_config
  n = int(config.report.num_samples)
  save_image_grid(upscale(r.samples), os.path.join(out, "samples.png"),
                  nrow=int(math.ceil(math.sqrt(n))))
  return Section(
      "Generator", [f"{gen.name} trained for {r.trained.step} steps on {tc.data.source} "
                    f"({tc.image_size} px); latent {gen.latent_spec.space} of shape "
                    f"{tuple(gen.latent_spec.shape)}. Workdir: {r.trained.workdir}."],
      figures=[("samples.png", "random samples")])


def _directions_section(out, config, r, metrics) -> Section:
  gen = r.trained.generator
  shifts = tuple(float(s) for s in config.traversal_shifts)
  sec = Section("Directions", [
      "Traversal grids: rows = directions (named by their best ground-truth factor when the "
      "factor alignment score is high), columns = shifts along the unit direction."])
  for method, f in r.found.items():
    d = f.directions
    k_grid = len(f.grid)
    dirs.save_traversal_grid(os.path.join(out, f"traversal_{method}.png"), f.grid,
                             d.names[:k_grid], [f"{s:+g}" for s in shifts],
                             title=f"{method} on {gen.name}")
    first = ("the best-aligned direction per factor first" if "display_order" in d.meta
             else "in saved order")
    sec.figures.append((f"traversal_{method}.png",
                        f"{method}: {k_grid} of {d.num_directions} directions ({first})"))
    m = {"num_directions": d.num_directions}
    if method == "voynov":
      curve = d.scores.get("rca_curve")
      m.update(rca=finite_or_none(d.scores.get("rca", float("nan"))), collapsed=d.collapsed,
               chance=1.0 / d.num_directions)
      if curve:
        dirs.save_rca_curve(os.path.join(out, "rca_curve"),
                            {"step": np.asarray(curve["step"]), "rca": np.asarray(curve["rca"])},
                            1.0 / d.num_directions)
        sec.figures.append(("rca_curve.png", "Voynov: held-out reconstructor classification "
                            "accuracy (RCA) over training; dashed: chance 1/K"))
      sec.paragraphs.append(
          f"Voynov: final RCA {m['rca']:.3f} (chance {m['chance']:.3f})"
          + (" — COLLAPSED: the directions carry no information and are not analysed "
             "further." if d.collapsed else "."))
    if "alignment_summary" in d.meta:
      s = d.meta["alignment_summary"]
      m["alignment"] = {k: finite_or_none(v) for k, v in s.items() if isinstance(v, (int, float))}
      sec.tables.append((f"{method}: factor alignment (DCI disentanglement "
                         f"{s['dci_disentanglement']:.3f}, completeness "
                         f"{s['dci_completeness']:.3f}, MIG gap {s['mig_gap']:.3f})",
                         [{k: v for k, v in row.items() if not k.startswith("slope[")}
                          for row in d.meta["alignment_rows"][:k_grid]]))
    sec.tables.append((f"{method}: direction summary (first {k_grid}; all in "
                       f"directions/{method}_summary.csv)",
                       [{k: v for k, v in row.items()
                         if not k.startswith("slope[") and k != "model"}
                        for row in f.summary[:k_grid]]))
    metrics[method] = m
  return sec


def _inversion_section(out, config, r, metrics) -> Section:
  inv, gen = r.inverted, r.trained.generator
  targets = np.asarray(r.dataset.images[inv.indices], np.float32)
  inversion_figure(os.path.join(out, "inversion.png"), targets, inv.reconstructions)
  metrics["inversion"] = {"num_images": int(len(inv.errors)), "error_mean": inv.error_mean,
                          "error_std": inv.error_std,
                          "subjects": sorted(set(inv.subject_id.tolist()))}
  source = (f"phantom subjects re-drawn with seed offset {config.images.seed_offset}"
            if config.images.source == "heldout" else str(config.images.path))
  per_subject = [{"subject": s, "slices": int((inv.subject_id == s).sum()),
                  "mse mean": float(inv.errors[inv.subject_id == s].mean())}
                 for s in dict.fromkeys(inv.subject_id.tolist())]
  return Section(
      "Inversion of held-out images",
      [f"{len(inv.errors)} slices of {len(per_subject)} subjects ({source}) "
       f"inverted into {gen.latent_spec.space}. Reconstruction MSE mean ± std over images "
       f"(Creswell & Bharath's coverage measure): {inv.error_mean:.4f} ± {inv.error_std:.4f}."],
      tables=[("per subject", per_subject)],
      figures=[("inversion.png", "rows: target / reconstruction / |error|")])


def _supervised_section(out, config, r, metrics) -> Section:
  sup, inv = r.supervised, r.inverted
  d, sc = sup.directions, config.supervised
  dirs.save_traversal_grid(
      os.path.join(out, "traversal_interfacegan.png"), sup.grid,
      [f"{inv.subject_id[i]} #{inv.slice_index[i]}" for i in sup.grid_rows],
      [f"α={a:g}" for a in sup.grid_alphas], title=f"{d.names[0]} from inverted healthy codes")
  metrics["interfacegan"] = {
      "train_accuracy": finite_or_none(d.scores["train_accuracy"]),
      "val_accuracy": finite_or_none(d.scores["val_accuracy"]),
      "val_balanced_accuracy": finite_or_none(d.scores["val_balanced_accuracy"]),
      "alpha_unit": d.meta["alpha_unit"], "class_separation": d.meta["class_separation"],
      "num_labelled": d.meta["num_labelled"],
      "held_out": d.meta["config"].get("held_out", "codes"),
      "num_train": d.meta["num_train"], "num_val": d.meta["num_val"]}
  held = ("codes of held-out subjects" if metrics["interfacegan"]["held_out"] == "groups"
          else "held-out codes")
  return Section(
      f"Supervised direction {sc.negative} -> {sc.positive} (InterFaceGAN)",
      [f"Linear {sc.classifier} on {sum(d.meta['num_labelled'].values())} inverted, labelled "
       f"codes ({d.meta['num_labelled']}): train accuracy {d.scores['train_accuracy']:.3f}, "
       f"accuracy on {d.meta['num_val']} {held} {d.scores['val_accuracy']:.3f} (balanced "
       f"{d.scores['val_balanced_accuracy']:.3f}). The unit normal is the direction.",
       f"Alpha units: class-mean separation along the normal = "
       f"{d.meta['class_separation']:.4g} latent units; one alpha unit = separation / "
       f"{float(sc.alpha_per_separation):g} = {d.meta['alpha_unit']:.4g} latent units "
       f"(alpha {float(sc.alpha_per_separation):g} moves a healthy code by the mean "
       f"{sc.negative} -> {sc.positive} distance)."],
      figures=[("traversal_interfacegan.png", "rows: inverted healthy slices, columns: "
                "alpha along the HC -> MS direction")])


def _eigen_section(out, config, r, metrics) -> Section:
  e, inv = r.eigen, r.inverted
  alphas = e.alphas
  sec = Section("Traversal eigen-analysis", [
      f"From each inverted code ({len(e.selected)} slices of {len(e.subjects)} subjects"
      f"{', healthy controls' if e.healthy_only else ''}) every direction is traversed "
      f"with alpha = {alphas[0]:g} .. {alphas[-1]:g} in {len(alphas)} steps; the foreground "
      "voxels of the steps form M (voxels x steps), whose steps x steps covariance is "
      "eigen-decomposed. Component c's map is M v_c. Alpha sequences: top the images, "
      "bottom the subtraction from alpha_0 (blue = decrease, red = increase)."])
  rows, metrics["eigen"] = [], {}
  for m in e.methods:
    d, res = m.directions, m.result
    # Components 1..4 against the constant, linear, quadratic, cubic of the schedule,
    # mean over slices: [directions, 4], one program for every direction.
    poly_all = np.asarray(polynomial_match(res.eigenvectors, alphas)).mean(0)
    for j in range(m.k):
      corr2 = np.abs(np.asarray(res.corr_alpha)[:, j, 1])
      ratio = np.asarray(res.explained_variance_ratio)[:, j]
      poly = poly_all[j]
      rows.append({"method": m.method, "direction": d.names[j],
                   "|corr(v2, alpha)| mean": float(corr2.mean()), "min": float(corr2.min()),
                   "explained c1": float(ratio[:, 0].mean()),
                   "explained c2": float(ratio[:, 1].mean()),
                   "|cos(v_c, polynomial c-1)| c1..c4": " ".join(f"{p:.3f}" for p in poly)})
      metrics["eigen"][f"{m.method}/{d.names[j]}"] = {
          "abs_corr_v2_alpha_mean": float(corr2.mean()),
          "abs_corr_v2_alpha_min": float(corr2.min()),
          "explained_c1": float(ratio[:, 0].mean()), "explained_c2": float(ratio[:, 1].mean()),
          "polynomial_match_mean": [float(p) for p in poly]}
    i0 = e.selected[m.rep]
    mask0 = r.masks[i0]
    tag = safe_name(f"{m.method}-{d.names[0]}")
    plots.plot_change_sequence(m.frames, alphas, os.path.join(out, f"sequence_{tag}.png"),
                               mask=mask0)
    plots.plot_eigenvectors(alphas, np.asarray(res.eigenvectors)[:, 0],
                            os.path.join(out, f"eigenvectors_{tag}.png"),
                            explained=np.asarray(res.explained_variance_ratio)[:, 0].mean(0),
                            title=f"Eigenvectors v_c vs alpha: {m.method} {d.names[0]}")
    comps = np.asarray(res.component_maps)[m.rep, 0][..., 0]  # [K, H, W]
    sub_last = np.asarray(res.subtraction_maps)[m.rep, 0, -1][..., 0]
    maps = np.concatenate([comps[:3], sub_last[None]])
    titles = [f"component {c + 1}" for c in range(min(3, len(comps)))] + [
        f"subtraction α={alphas[-1]:g} − α₀"]
    plots.plot_component_maps(m.frames[0], maps, os.path.join(out, f"components_{tag}.png"),
                              titles=titles, mask=mask0)
    sec.figures += [
        (f"sequence_{tag}.png", f"{m.method} {d.names[0]}: alpha sequence of subject "
         f"{inv.subject_id[i0]} slice {inv.slice_index[i0]} with subtraction overlays "
         "(blue = decrease, red = increase)"),
        (f"eigenvectors_{tag}.png", f"{m.method} {d.names[0]}: eigenvectors v_c vs alpha "
         "(thin: each slice, thick: mean)"),
        (f"components_{tag}.png", f"{m.method} {d.names[0]}: component maps over the anatomy "
         "(alpha_0 image), next to the last subtraction map")]
  first = e.methods[0]
  plots.save_gif(first.frames, os.path.join(out, "traversal.gif"),
                 duration_ms=int(config.report.gif_duration_ms))
  sec.figures.insert(0, ("traversal.gif", f"animated traversal: {first.method} "
                         f"{first.directions.names[0]}"))
  sec.tables.insert(0, ("|corr(v_2, alpha)| over slices, explained variance of "
                        "components 1 and 2, and how closely components 1-4 follow the "
                        "schedule's constant, linear, quadratic and cubic polynomial "
                        "(|cosine|, mean over slices)", rows))
  sec.paragraphs.append(f"Per-subject NIfTI maps (component and subtraction volumes, "
                        f"[H, W, slices, K]) in nifti/ ({len(os.listdir(e.nifti_dir))} files).")
  if e.dicom_dir:
    sec.paragraphs.append("The same maps as DICOM series in the source scans' studies and "
                          "frames of reference (open them next to the scans in a DICOM "
                          "viewer) in dicom/.")
  if r.scrubbers:
    sec.paragraphs.append(
        "Scrubbable traversals: per direction, an alpha slider moves the generated slice, "
        "its subtraction map and the component-2 map in step; a slice slider and a subject "
        "selector pick what is shown (self-contained pages, they work offline).")
    sec.links += write_scrubber_pages(out, r.trained.generator.name, e.alphas, r.scrubbers)
    metrics["scrubber_pages"] = [rel for rel, _ in sec.links]
  return sec


def write_scrubber_pages(out: str, model: str, alphas, scrubbers: list) -> list[tuple[str, str]]:
  """One ``<out>/scrub/<method>-<direction>.html`` per scrubber; (relpath, text) links."""
  from jaxlatent.viz.scrubber import write_scrubber  # pylint: disable=g-import-not-at-top
  links = []
  for s in scrubbers:
    rel = os.path.join("scrub", safe_name(f"{s.method}-{s.direction}") + ".html")
    write_scrubber(os.path.join(out, rel), s.frames, alphas, s.slice_labels,
                   title=f"{model}: {s.method} {s.direction}")
    links.append((rel, f"{s.method} {s.direction}: scrub alpha over "
                  f"{len(s.frames)} subject(s) x {len(s.slice_labels)} slice(s)"))
  return links


def _ground_truth_section(out, config, r, metrics) -> Section:
  g, gc, alphas = r.ground_truth, config.ground_truth, r.eigen.alphas
  subj, s = g.subjects, g.summary
  metrics["ground_truth"] = {
      "num_subjects": int(len(subj.images)),
      "component2_corr_mean": s["component2_corr_mean"],
      "component2_corr_std": s["component2_corr_std"],
      "subtraction_corr_mean": s["edit_corr_mean"], "subtraction_corr_std": s["edit_corr_std"],
      "change": {k: float(np.mean(subj.changed[k] - subj.factors[k]))
                 for k in ("ventricle_size", "atrophy", "lesion_load")}}
  maps = np.stack([subj.true_difference[0], np.asarray(g.result.component_maps)[1][..., 0],
                   np.asarray(g.result.subtraction_maps)[-1][..., 0]])
  plots.plot_component_maps(g.images[0], maps, os.path.join(out, "ground_truth.png"),
                            titles=["true HC→MS difference", "component 2",
                                    f"subtraction α={alphas[-1]:g} − α₀"], mask=subj.masks[0])
  rows = [{"map": "component 2 (eigen-analysis)",
           "corr with true difference": f"{s['component2_corr_mean']:.3f} ± "
                                        f"{s['component2_corr_std']:.3f}"},
          {"map": f"subtraction (alpha {alphas[-1]:g} - alpha 0)",
           "corr with true difference": f"{s['edit_corr_mean']:.3f} ± {s['edit_corr_std']:.3f}"}]
  return Section("Ground truth on brain phantoms", [
      f"{len(subj.images)} held-out healthy phantom subjects (seed {gc.seed}, slice position "
      f"{gc.slice_position}) are rendered as they are and with the population's mean HC -> MS "
      "factor change (ventricles, atrophy, lesions; same anatomy, noise-free); the difference "
      "is the true disease map. Each subject is inverted, traversed along the HC -> MS "
      "direction and eigen-analysed; Pearson correlation over the foreground, mean ± std "
      "over subjects."], tables=[("", rows)],
      figures=[("ground_truth.png", "subject 0: true difference, component-2 map, "
                "subtraction map")])


def _summary_section(out, config, r) -> Section:
  analysed = {m: f.directions for m, f in r.found.items()}
  if r.supervised is not None:
    analysed["interfacegan"] = r.supervised.directions
  summary = []
  for method, d in analysed.items():
    order = d.meta.get("display_order", range(d.num_directions))
    summary += [{"method": method, "index": int(order[i]), "name": d.names[i],
                 **({"rca": finite_or_none(d.scores.get("rca", float("nan")))}
                    if method == "voynov" else {}),
                 **({"alignment": float(d.meta["alignment_rows"][i]["alignment"])}
                    if "alignment_rows" in d.meta else {})}
                for i in range(min(d.num_directions, int(config.report.grid_directions)))]
  dir_out = os.path.join(out, "directions")
  files = sorted(os.path.relpath(os.path.join(dp, f), out) for dp, _, fs in os.walk(dir_out)
                 for f in fs)
  return Section("Direction summary", [
      "Saved directions (.npz vectors + .json metadata, load with "
      "jaxlatent.directions.load_directions): " + ", ".join(
          f for f in files if f.endswith(".npz"))], tables=[("", summary)])


# ----------------------------------------------------------------------------- compare_edits


def mean_pm_std(summary: dict, key: str) -> str:
  """``"mean ± std"`` of ``summary[key_mean]`` / ``[key_std]`` ('n/a' without a mean)."""
  m, s = summary.get(f"{key}_mean"), summary.get(f"{key}_std")
  return "n/a" if m is None else f"{m:.3f} ± {s or 0.0:.3f}"


def edit_table_rows(rows: list[dict], attributes: dict[str, str]) -> list[dict]:
  """The comparison table's rows (strings), grouped by phantom kind in ``rows``' order."""
  out = []
  for r in rows:
    s = r["summary"]
    err = ("inversion " + mean_pm_std(s, "inversion_error")
           if s.get("inversion_error_mean") is not None
           else "encode " + mean_pm_std(s, "reconstruction_mse"))
    out.append({"phantom": r["kind"], "attribute": attributes[r["kind"]], "model": r["model"],
                "method": r["method"], "n": len(r["subject_ids"]),
                "edit corr": mean_pm_std(s, "edit_corr"),
                "component-2 corr": mean_pm_std(s, "component2_corr"),
                "mean abs edit": mean_pm_std(s, "edit_magnitude"), "recon MSE": err})
  return out


def edit_figure(path: str, kc) -> str:
  """Per model: original, reconstruction, edited, edit difference, true difference.

  One subject (``kc.figure_subject``); difference maps are scaled to their own max |.|
  (grey = 0).
  """
  index = kc.figure_subject
  size = max(e.row["image_size"] for e in kc.edits)

  def up(x):  # [S, S] -> [size, size] (sizes are powers of 2: pixel repeat)
    f = size // x.shape[0]
    return np.repeat(np.repeat(x, f, axis=0), f, axis=1)

  def signed(d, mask):  # a difference map scaled into [-1, 1] by its own max |.|
    d = np.where(mask, d, 0.0)
    return d / max(float(np.abs(d).max()), 1e-12)

  grid = []
  for e in kc.edits:
    subj = kc.subjects_by_size[e.row["image_size"]]
    im = e.images[index]  # [T, S, S, 1]
    mask = subj.masks[index]
    cells = [subj.images[index, ..., 0], im[0, ..., 0], im[-1, ..., 0],
             signed(im[-1, ..., 0] - im[0, ..., 0], mask),
             signed(subj.true_difference[index], mask)]
    grid.append(np.stack([up(np.asarray(c, np.float32)) for c in cells])[..., None])
  rows = [e.row for e in kc.edits]
  labels = [r["model"] if "direction" not in r else
            f"{r['model']}\n{'-' if r['direction']['sign'] < 0 else ''}"
            f"{r['direction']['method']} {r['direction']['name']}" for r in rows]
  subject = rows[0]["subject_ids"][index]
  return dirs.save_traversal_grid(
      path, np.stack(grid), labels,
      ["original", "reconstruction x₀", "edited x_T", "x_T − x₀", "true difference"],
      title=f"{kc.kind} {kc.attribute.split(' (')[0]}, subject {subject}")


def write_edit_comparison(out: str, config, kinds: list, clock: Clock) -> str:
  """``edit_comparison.md`` (THE table, also printed), ``.json`` and one figure per kind."""
  rows = [e.row for kc in kinds for e in kc.edits]
  subjects_meta, figures = {}, {}
  for kc in kinds:
    first = next(iter(kc.subjects_by_size.values()))
    subjects_meta[kc.kind] = {
        "seed": int(config.subjects.seed), "num_subjects": int(config.subjects.num_subjects),
        "slice_position": float(config.subjects.slice_position),
        "subject_ids": [str(s) for s in first.subject_id],
        "image_sizes": sorted(kc.subjects_by_size), "attribute": kc.attribute,
        "mean_factor_change": {k: float(np.mean(first.changed[k] - first.factors[k]))
                               for k in first.changed
                               if np.any(first.changed[k] != first.factors[k])},
        "figure_subject": kc.figure_subject}
    figures[kc.kind] = os.path.basename(
        edit_figure(os.path.join(out, f"edit_comparison_{kc.kind}.png"), kc))
  table = edit_table_rows(rows, {kc.kind: kc.attribute for kc in kinds})
  print(table_markdown(table), flush=True)
  md = [
      "# Attribute edits on held-out phantom subjects",
      "",
      "Every model edits the same held-out phantom subjects of a kind (drawn with "
      f"seed {config.subjects.seed}, {config.subjects.num_subjects} subjects, slice position "
      f"{config.subjects.slice_position:g}); each edit is a path of {config.steps} images "
      "(attribute models: y from the subjects' class to the target class; StyleGAN / DCGAN: "
      "the inverted code walked along the direction, alpha from 0). Scores against the "
      "phantom's true, noise-free difference map over the foreground: Pearson correlation of "
      "the edit (last − first image) and of the traversal eigen-analysis' component-2 map; "
      "mean |edit| in model units ([-1, 1] images); recon MSE: inversion error (inverted "
      "models) or encode-decode error at the start class (attribute models). "
      "Mean ± std over subjects.",
      "",
      table_markdown(table),
  ]
  for kind, meta in subjects_meta.items():
    md.append(f"- {kind}: {meta['attribute']}; subjects {', '.join(meta['subject_ids'])}; "
              f"figure {figures[kind]} (subject {meta['subject_ids'][meta['figure_subject']]}: "
              "original, reconstruction x₀, edited x_T, x_T − x₀ and the true difference per "
              "model; difference maps scaled to their own max |.|, grey = 0)")
  md_path = os.path.join(out, "edit_comparison.md")
  atomic_io.atomic_write_text(md_path, "\n".join(md) + "\n")
  write_json(os.path.join(out, "edit_comparison.json"), {
      "task": "compare_edits", "steps": int(config.steps), "subjects": subjects_meta,
      "rows": rows, "table": table, "figures": figures,
      "config": json.loads(config.to_json_best_effort()),
      "seconds": round(clock.seconds()["wall"], 2)})
  return md_path


# ----------------------------------------------------------------------------- label_fraction


def write_label_fraction(out: str, config, rows: list[dict], classes: list[str],
                         num_train: int, num_heldout: int, chance: float, clock: Clock,
                         supervised: dict | None = None) -> str:
  """``label_fraction.json`` (settings + rows) and ``label_fraction.md``; returns the .md path.

  ``supervised``: the baseline's ``{'classifier', 'steps', 'learning_rate'}`` when it
  ran (rows then carry ``supervised_accuracy``, None for a fraction without labels):
  the table gets a "supervised accuracy" column and a caption naming the classifier.
  """
  heldout_seed = int(config.data.seed) + int(config.heldout.seed_offset)
  atomic_io.atomic_write_text(os.path.join(out, "label_fraction.json"), json.dumps({
        "task": "label_fraction", "model": "ssdaae",
        "label_column": str(config.data.label_column), "classes": classes,
        "data_source": str(config.data.source), "image_size": int(config.image_size),
        "steps": int(config.steps), "batch_size": int(config.batch_size),
        "seed": int(config.seed), "label_seed": int(config.model.get("label_seed", 0)),
        "num_train_images": int(num_train), "num_heldout_images": int(num_heldout),
        "train_population_seed": int(config.data.seed),
        "heldout_population_seed": heldout_seed, "chance": chance,
        "supervised": supervised, "rows": rows,
        "seconds": clock.seconds()["wall"], "config": config.to_dict(),
    }, indent=2, default=str))

  def table_row(r):
    row = {"labelled fraction": f"{r['fraction']:g}", "labelled images": r["num_labelled"],
           "SS-DAAE accuracy": f"{r['accuracy']:.3f}"}
    if supervised is not None:
      acc = r.get("supervised_accuracy")
      row["supervised accuracy"] = "n/a" if acc is None else f"{acc:.3f}"
    row["chance"] = f"{r['chance']:.3f}"
    return row

  caption = ""
  if supervised is not None:
    caption = (f"Supervised accuracy: {supervised['classifier']} ({int(supervised['steps'])} "
               f"steps, Adam lr {float(supervised['learning_rate']):g}, the same input "
               "corruption, seed and held-out slices; n/a: no labelled image).\n")
  md_path = os.path.join(out, "label_fraction.md")
  atomic_io.atomic_write_text(md_path, "".join([
      f"# SS-DAAE head accuracy vs labelled fraction"
      f"{'' if supervised is None else ', next to a supervised baseline'} "
      f"({config.data.source}, label '{config.data.label_column}')\n\n",
      f"{int(config.steps)} steps per fraction, batch {int(config.batch_size)}, "
      f"{num_train} training slices; accuracy on {num_heldout} slices of held-out "
      f"subjects.\n\n",
      table_markdown([table_row(r) for r in rows]),
      f"\nClasses: {', '.join(classes)}; chance = the held-out majority-class rate.\n",
      caption]))
  return md_path
