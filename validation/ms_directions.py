"""Which HC -> MS direction can the StyleGAN2's W space render? Claim 2's diagnosis.

  python validation/ms_directions.py --ms=runs/validate/stylegan_brain/ms \
      [--workdir=runs/validate/stylegan_brain] [--out=<ms>/ms_directions.json]

The MS analysis (``configs/validate_analyze_ms.py``, whose settings this script uses)
projects the ground-truth subjects'
healthy slices into W.  This script projects the same subjects rendered with the MS
change too (the same projector settings) and scores, against the phantom's true
difference map, with the analysis' alpha schedule:

- ``pair``: each subject's ``G(w_MS) - G(w_HC)``: whether projected codes carry the
  change at all;
- ``own_path``: each healthy code walked to its own MS code;
- ``mean_pair_difference``: one shared direction, the mean of ``w_MS - w_HC``, walked
  from every healthy code so that its last frame moves by that mean;
- the analysis' supervised direction (``interfacegan``, with whichever classifier the
  analysis fitted) and the class-mean difference of the analysis' labelled codes
  (the direction ``supervised.classifier='mean_difference'`` fits), at the analysis'
  alpha unit and alpha 0..50;

with each direction's cosine to the mean pair difference, and the split-half cosine of
class-mean directions from disjoint halves of the labelled subjects (how much a
direction estimated from that many subjects varies).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _cos(a, b) -> float:
  a, b = np.ravel(a), np.ravel(b)
  return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _split_half_cos(codes, labels, subject_ids, repeats: int = 50, seed: int = 0) -> float:
  """Mean cosine between the class-mean directions of two disjoint halves of the
  subjects (the subjects' mean codes; each half keeps both classes)."""
  subs = sorted(set(subject_ids))
  means = np.stack([codes[subject_ids == s].mean(0) for s in subs])
  ys = np.array([labels[subject_ids == s][0] for s in subs])
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(repeats):
    halves = []
    for c in (0, 1):
      idx = rng.permutation(np.flatnonzero(ys == c))
      halves.append((idx[:len(idx) // 2], idx[len(idx) // 2:]))
    a = means[halves[1][0]].mean(0) - means[halves[0][0]].mean(0)
    b = means[halves[1][1]].mean(0) - means[halves[0][1]].mean(0)
    out.append(_cos(a, b))
  return float(np.mean(out))


def check(ms_dir: str, workdir: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jaxlatent.analysis.attribute_edit import (phantom_edit_path,  # pylint: disable=g-import-not-at-top
                                                 phantom_edit_subjects, score_edits)
  from jaxlatent.directions import load_directions  # pylint: disable=g-import-not-at-top
  from jaxlatent.inversion import invert_images  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies.analysis import traversal_alphas  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies.config import complete_analysis_config  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies.generators import load_generator  # pylint: disable=g-import-not-at-top
  from configs import validate_analyze_ms  # pylint: disable=g-import-not-at-top

  cfg = complete_analysis_config(validate_analyze_ms.get_config())
  gc = cfg.ground_truth
  trained = load_generator(workdir, str(cfg.space))
  gen = trained.generator
  size = int(trained.train_config.image_size)
  subj = phantom_edit_subjects("brain", int(gc.num_subjects), size, int(gc.seed),
                               slice_position=float(gc.slice_position))
  w_hc = np.load(os.path.join(ms_dir, "inversion", "ground_truth_latents.npz"))["latents"]
  # The MS versions' codes depend only on the ground-truth codes' settings: kept beside
  # them, keyed by their hash, so a re-run (or another analysis folder with the same
  # ground truth) skips the projection.
  cache = os.path.join(ms_dir, "inversion", "ground_truth_ms_latents.npz")
  hc_sha = hashlib.sha256(np.ascontiguousarray(w_hc).tobytes()).hexdigest()
  cached = dict(np.load(cache)) if os.path.exists(cache) else {}
  if str(cached.get("hc_sha256")) == hc_sha:
    w_ms, err_ms = cached["latents"], cached["errors"]
  else:
    ms_images = phantom_edit_path("brain", int(gc.num_subjects), size, int(gc.seed), steps=2,
                                  slice_position=float(gc.slice_position))[:, 1]
    key = jax.random.PRNGKey(int(cfg.seed))
    w_ms, _, err_ms = invert_images(gen, jnp.asarray(ms_images), cfg.inversion, key,
                                    encode_fn=trained.encode_fn)
    w_ms, err_ms = np.asarray(w_ms), np.asarray(err_ms)
    from jaxlatent import atomic_io  # pylint: disable=g-import-not-at-top
    atomic_io.atomic_save_npz(cache, latents=w_ms, errors=err_ms, hc_sha256=np.asarray(hc_sha))
  true, masks = jnp.asarray(subj.true_difference), jnp.asarray(subj.masks)
  alphas = jnp.asarray(traversal_alphas(cfg))
  span = float(alphas[-1] - alphas[0])

  def scored(direction, schedule=alphas):
    s = score_edits(gen, jnp.asarray(w_hc), jnp.asarray(direction), schedule, true, masks)
    return {k: round(v, 4) for k, v in s.summary().items()}

  x_hc = np.asarray(gen(jnp.asarray(w_hc)))[..., 0]
  mean_pair = (w_ms - w_hc).mean(0)
  # Each healthy code walked to its own MS code: the edit (last frame minus first) is
  # the projected pair's difference G(w_MS) - G(w_HC).
  own_path = scored(w_ms - w_hc, jnp.linspace(0.0, 1.0, len(alphas)))
  out = {
      "subjects": int(len(w_hc)),
      "projection_mse": {"hc": float(np.mean((x_hc - np.asarray(subj.images)[..., 0]) ** 2)),
                         "ms": float(np.mean(err_ms))},
      "pair": {"corr_mean": own_path["edit_corr_mean"], "corr_std": own_path["edit_corr_std"]},
      "own_path": own_path,
      "mean_pair_difference": dict(scored(mean_pair / span), norm=float(np.linalg.norm(mean_pair))),
  }
  inv = np.load(os.path.join(ms_dir, "inversion", "latents.npz"))
  with open(os.path.join(ms_dir, "cache", "meta.json")) as f:
    meta = json.load(f)
  sc = cfg.supervised
  values = np.asarray(meta["labels"][str(sc.label_column)]["values"])[inv["indices"]]
  keep = np.isin(values, [str(sc.negative), str(sc.positive)])
  codes, labels = inv["latents"][keep], (values[keep] == str(sc.positive)).astype(int)
  sids = np.asarray(inv["subject_id"])[keep]
  ifg = load_directions(os.path.join(ms_dir, "directions", "interfacegan_directions"))
  unit = float(ifg.meta["alpha_unit"])
  normal = np.asarray(ifg.vectors[0])
  class_mean = codes[labels == 1].mean(0) - codes[labels == 0].mean(0)
  out["labelled"] = {"codes": int(len(codes)), "subjects": int(len(set(sids))),
                     "split_half_cos_of_class_mean_directions":
                         round(_split_half_cos(codes, labels, sids), 4)}
  out["supervised"] = {
      # The classifier the analysis in ``ms_dir`` fitted (an override may differ from
      # the config file's).
      "classifier": str(ifg.meta["config"]["method"]), "alpha_unit": unit,
      "cos_to_mean_pair_difference": round(_cos(normal, mean_pair), 4),
      **scored(normal * unit)}
  out["class_mean_difference"] = {
      "cos_to_mean_pair_difference": round(_cos(class_mean, mean_pair), 4),
      "at_the_supervised_alpha_unit": scored(class_mean / np.linalg.norm(class_mean) * unit),
      "alpha_50_twice_the_class_mean_difference": scored(class_mean / 25.0)}
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--ms", default="runs/validate/stylegan_brain/ms")
  p.add_argument("--workdir", default="runs/validate/stylegan_brain")
  p.add_argument("--out", default="")
  a = p.parse_args(argv)
  needed = [os.path.join(a.ms, "inversion", "ground_truth_latents.npz"),
            os.path.join(a.ms, "inversion", "latents.npz"),
            os.path.join(a.ms, "cache", "meta.json"),
            os.path.join(a.ms, "directions", "interfacegan_directions.npz")]
  missing = [f for f in needed if not os.path.isfile(f)]
  if missing:
    print(f"error: --ms={a.ms} is not a finished MS analysis with ground truth: missing "
          f"{', '.join(os.path.relpath(f, a.ms) for f in missing)}", file=sys.stderr)
    return 2
  res = check(a.ms, a.workdir)
  path = a.out or os.path.join(a.ms, "ms_directions.json")
  from jaxlatent import atomic_io  # pylint: disable=g-import-not-at-top
  atomic_io.atomic_write_text(path, json.dumps(res, indent=1) + "\n")
  print(json.dumps(res, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
