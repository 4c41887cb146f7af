"""What the factor-alignment metric can reach: its ceiling on exact one-factor traversals.

  python validation/ceiling.py --regressor=pretrained/dcgan_ct_64/analysis/directions/factor_regressor.npz \
      [--size=64] [--subjects=16] [--steps=7] [--seed=0] [--out=validation/ceiling.json]

A perfect direction moves one factor and nothing else.  The phantom renderer makes such
traversals exactly: the same subject (same per-subject details and noise) with one
factor swept over its range and every other factor held.  Scoring them with the
study's factor regressor and the study's alignment formula (``|slope_f| / sum_g
|slope_g|`` of the standardised predictions against the sweep) gives the best
alignment any direction can get for that factor: whatever the regressor attributes
to the other factors is cross-talk of the metric, not of the generator.

It also re-scores the study's directions with only the factors the regressor
predicts well (held-out R^2 >= ``--min-r2``) in the denominator (``--directions``:
the analysis' directions folder and the generator folder or workdir), to separate a
noisy regressor output from an entangled direction.  :class:`RegressorEnsemble`
averages several analyses' regressors (independently trained), a less noisy metric
with a higher ceiling, for the same purpose.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def one_factor_sweeps(regressor, kind: str, size: int, subjects: int, steps: int,
                      seed: int, min_r2: float) -> dict:
  """Per factor f: the mean slopes ``[F]`` of every standardised prediction against f
  swept over its whole range (in standardised units of f), f's alignment over every
  factor and over the factors with held-out R^2 >= ``min_r2``."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jaxlatent import phantoms  # pylint: disable=g-import-not-at-top
  from jaxlatent.data import intensity  # pylint: disable=g-import-not-at-top
  from jaxlatent.phantoms import rendering  # pylint: disable=g-import-not-at-top

  if kind != "thorax":  # the CT window below is the thorax phantoms' normalisation
    raise NotImplementedError("only the thorax phantoms are scored here")
  names = list(regressor.factor_names)
  table = rendering.factor_table(kind)
  key = jax.random.PRNGKey(seed)
  base = phantoms.sample_factors(kind, jax.random.fold_in(key, 0), subjects)
  sk, nk = rendering._split_keys(jax.random.fold_in(key, 1), subjects)  # pylint: disable=protected-access
  keep = np.asarray(regressor.val_r2) >= min_r2
  mean = np.asarray(regressor.factor_mean, np.float64)
  std = np.asarray(regressor.factor_std, np.float64)
  out = {}
  for fi, name in enumerate(names):
    low, high, _ = table[name]
    grid = np.linspace(low, high, steps)  # [S]
    factors = {k: jnp.repeat(jnp.asarray(v), steps) for k, v in base.items()}  # [J*S]
    factors[name] = jnp.tile(jnp.asarray(grid, jnp.float32), subjects)
    images = rendering.render_with_keys(kind, factors, size, jnp.repeat(sk, steps, axis=0),
                                        jnp.repeat(nk, steps, axis=0))[0]
    x = jnp.asarray(intensity.window_ct(np.asarray(images))[..., None], jnp.float32)
    pred = np.asarray(regressor(x), np.float64).reshape(subjects, steps, -1)  # [J, S, F]
    t = (grid - mean[fi]) / std[fi]  # the swept factor, standardised like the targets
    tc = t - t.mean()
    pc = pred - pred.mean(axis=1, keepdims=True)
    slopes = np.einsum("s,jsf->jf", tc, pc) / (tc @ tc)  # [J, F]
    imp = np.abs(slopes.mean(0))
    out[name] = {"slopes": slopes.mean(0).tolist(),
                 "alignment": float(imp[fi] / max(imp.sum(), 1e-12)),
                 "alignment_kept": (float(imp[fi] / max(imp[keep].sum(), 1e-12))
                                    if keep[fi] else None),
                 "best_factor": names[int(imp.argmax())]}
  return out


def ms_ceiling(size: int, subjects: int, steps: int, seed: int, slice_position: float,
               alpha_max: float = 50.0, fresh_noise: bool = False) -> dict:
  """What the MS claim's scores reach on the exact HC -> MS edit of the ground-truth subjects.

  The analysis' ground truth (``ground_truth.seed`` / ``slice_position`` of the MS
  config) edits held-out healthy phantoms by the HC -> MS factor change.  Rendering
  that edit exactly in ``steps`` frames (``phantom_edit_path``: every MS factor moved
  linearly, the phantom's noise kept) and scoring it like a generator's traversal
  gives the ceiling of |corr(v2, alpha)|, of the component-2 map's correlation with the
  true difference map and of the subtraction map's: a perfect direction's figures.
  ``fresh_noise``: every frame draws new phantom noise, a path that also carries a
  change unrelated to alpha (as a generator's traversal may).
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jaxlatent.analysis import attribute_edit as ae  # pylint: disable=g-import-not-at-top
  from jaxlatent.analysis.eigen import eigen_analysis_batched, polynomial_match  # pylint: disable=g-import-not-at-top

  subj = ae.phantom_edit_subjects("brain", subjects, size, seed, slice_position=slice_position)
  path = ae.phantom_edit_path("brain", subjects, size, seed, steps,
                              slice_position=slice_position, fresh_noise=fresh_noise)
  masks = jnp.asarray(subj.masks, jnp.float32)
  alphas = jnp.linspace(0.0, alpha_max, steps)
  res = eigen_analysis_batched(jnp.asarray(path), masks, alphas, n_components=2)
  true = jnp.asarray(subj.true_difference)
  comp2 = np.asarray(ae.difference_scores(res.component_maps[:, 1], true, masks))
  sub = np.asarray(ae.difference_scores(path[:, -1, ..., 0] - path[:, 0, ..., 0], true, masks))
  v2 = np.abs(np.asarray(res.corr_alpha)[:, 1])
  stat = lambda v: {"mean": float(v.mean()), "std": float(v.std())}
  return {"subjects": subjects, "steps": steps, "size": size, "seed": seed,
          "slice_position": slice_position, "fresh_noise": fresh_noise,
          "abs_corr_v2_alpha": stat(v2),
          "component2_corr": stat(comp2), "subtraction_corr": stat(sub),
          "explained_c2": stat(np.asarray(res.explained_variance_ratio)[:, 1]),
          "polynomial_match_mean": [float(p) for p in np.asarray(
              polynomial_match(res.eigenvectors, alphas)).mean(0)]}


class RegressorEnsemble:
  """The mean prediction of several factor regressors of the same factors, in the
  first one's standardised units (each is de-standardised with its own statistics
  first).  Its errors are averaged over independently trained networks, so less of
  what it attributes to the factors a direction does not move is its own noise."""

  def __init__(self, regressors):
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    names = [tuple(r.factor_names) for r in regressors]
    if not regressors or len(set(names)) != 1:
      raise ValueError(f"the regressors must predict the same factors, got {names}")
    self._regs = list(regressors)
    self.factor_names = list(names[0])
    self.factor_mean = jnp.asarray(regressors[0].factor_mean)
    self.factor_std = jnp.asarray(regressors[0].factor_std)
    # Not the ensemble's own R^2 (no held-out set here): the members' mean, used only
    # to pick the well-predicted factors like a single regressor's.
    self.val_r2 = np.mean([np.asarray(r.val_r2, np.float64) for r in regressors], 0)

  def __call__(self, images):
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    raw = sum(r(images) * jnp.asarray(r.factor_std) + jnp.asarray(r.factor_mean)
              for r in self._regs) / len(self._regs)
    return (raw - self.factor_mean) / self.factor_std


def restricted_alignment(regressor, directions_dir: str, generator_dir: str, space: str,
                         min_r2: float, shifts, num_latents: int, seed: int,
                         min_change: float) -> dict:
  """Best alignment per factor and method over the factors with R^2 >= ``min_r2``,
  next to the alignment over every factor (same slopes).  A direction counts for factor
  f when f is its largest effect over every factor and changes by at least
  ``min_change`` standard deviations over the traversal (the analysis' naming rule)."""
  from jaxlatent import directions as dirs  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies.analysis import alignment_latents_key  # pylint: disable=g-import-not-at-top
  from jaxlatent.studies.generators import load_generator  # pylint: disable=g-import-not-at-top

  trained = load_generator(generator_dir, space)
  names = list(regressor.factor_names)
  r2 = np.asarray(regressor.val_r2, np.float64)
  keep = np.flatnonzero(r2 >= min_r2)
  res = {"kept_factors": [names[i] for i in keep], "methods": {}}
  for path in sorted(os.listdir(directions_dir)):
    if not path.endswith("_directions.npz"):
      continue
    method = path[:-len("_directions.npz")]
    d = dirs.load_directions(os.path.join(directions_dir, path[:-4]))
    a = dirs.factor_alignment(trained.generator, d, regressor, tuple(shifts),
                              alignment_latents_key(seed, method), num_latents=num_latents)
    imp = np.abs(a.slopes)  # [K, F]
    best = {}
    for fi in keep:
      full = imp[:, fi] / np.maximum(imp.sum(1), 1e-12)
      kept = imp[:, fi] / np.maximum(imp[:, keep].sum(1), 1e-12)
      change = imp[:, fi] * (max(shifts) - min(shifts))
      # f must be the direction's largest effect over every factor (as the analysis
      # names it): only the denominator changes, not which directions count.
      owner = (imp.argmax(1) == fi) & (change >= min_change)
      if not owner.any():
        continue
      k = int(np.flatnonzero(owner)[np.argmax(kept[owner])])
      best[names[fi]] = {"direction": f"d{k}", "alignment_kept": float(kept[k]),
                         "alignment_all": float(full[k]), "change": float(change[k])}
    res["methods"][method] = best
  return res


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--regressor", required=True, help="a factor_regressor.npz")
  p.add_argument("--kind", default="thorax")
  p.add_argument("--size", type=int, default=64)
  p.add_argument("--subjects", type=int, default=16)
  p.add_argument("--steps", type=int, default=7)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--analysis", default="", help="an analysis folder (config.json, directions/)")
  p.add_argument("--generator", default="", help="its generator (workdir or export)")
  p.add_argument("--min-r2", type=float, default=0.9)
  p.add_argument("--out", default=os.path.join(REPO, "validation", "ceiling.json"))
  a = p.parse_args(argv)
  from jaxlatent import directions as dirs  # pylint: disable=g-import-not-at-top
  from jaxlatent.directions.alignment import NAMING_MIN_CHANGE  # pylint: disable=g-import-not-at-top
  regressor, _ = dirs.load_factor_regressor(a.regressor)
  result = {"regressor": os.path.relpath(os.path.abspath(a.regressor), REPO),
            "val_r2": dict(zip(regressor.factor_names,
                               map(float, np.asarray(regressor.val_r2)))),
            "subjects": a.subjects, "steps": a.steps, "size": a.size, "seed": a.seed,
            "min_r2": a.min_r2,
            "ceiling": one_factor_sweeps(regressor, a.kind, a.size, a.subjects, a.steps,
                                         a.seed, a.min_r2)}
  if a.analysis:
    with open(os.path.join(a.analysis, "config.json")) as f:
      cfg = json.load(f)
    result["restricted"] = restricted_alignment(
        regressor, os.path.join(a.analysis, "directions"), a.generator, str(cfg["space"]),
        a.min_r2, cfg["alignment"]["shifts"], int(cfg["alignment"]["num_latents"]),
        int(cfg["seed"]), NAMING_MIN_CHANGE)
    result["restricted"]["analysis"] = os.path.relpath(os.path.abspath(a.analysis), REPO)
  with open(a.out, "w") as f:
    json.dump(result, f, indent=1)
  for name, c in result["ceiling"].items():
    kept = "-" if c["alignment_kept"] is None else f"{c['alignment_kept']:.3f}"
    print(f"{name:16s} ceiling {c['alignment']:.3f}, kept {kept} (largest: {c['best_factor']})")
  for method, best in result.get("restricted", {}).get("methods", {}).items():
    for name, b in best.items():
      print(f"{method:9s} {name:16s} {b['direction']:>4s} all {b['alignment_all']:.3f} "
            f"kept {b['alignment_kept']:.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
