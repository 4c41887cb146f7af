"""Discovery for a driver: run the configured methods on a generator, write their outputs.

Reads the fields of ``configs/discover_ct.py`` / ``configs/discover_tiny.py``:
``methods``, ``restarts``, ``voynov``, ``ganspace_*``, ``sefa_components``,
``traversal_shifts``.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import numpy as np

from jaxlatent.directions import report
from jaxlatent.directions.ganspace import ganspace
from jaxlatent.directions.io import save_directions, to_jsonable
from jaxlatent.directions.sefa import sefa_directions
from jaxlatent.directions.voynov import VoynovConfig, run_voynov, run_voynov_restarts
from jaxlatent.errors import ConfigError

METHODS = ("voynov", "ganspace", "sefa")


def discover(generator, config: Any, key: jax.Array, *, workdir: str | None = None,
             log_fn: Callable[[dict], None] | None = None, force_save: bool = False) -> dict:
  """Runs ``config.methods`` on ``generator``; with ``workdir`` writes for each method
  ``<method>_directions.{npz,json}``, ``<method>_traversals.png``, ``<method>_summary.{csv,md}``
  and for Voynov ``voynov_rca.{csv,png}``.

  Returns:
    dict method -> {"directions": Directions, "result": the method's full result or
    None, "files": [written paths], "saved": bool (False for a collapsed run)}.
  """
  methods = tuple(config.get("methods", ("voynov",)))
  bad = [m for m in methods if m not in METHODS]
  if bad:
    raise ConfigError(f"config.methods has unknown method(s) {bad}; known: {list(METHODS)}")
  shifts = tuple(config.get("traversal_shifts", report.PAPER_SHIFTS))
  out = {}
  for i, method in enumerate(methods):
    mkey = jax.random.fold_in(key, i)
    result = None
    if method == "voynov":
      vcfg = VoynovConfig.from_config(config.voynov)
      restarts = int(config.get("restarts", 1))
      if restarts > 1:
        result = run_voynov_restarts(generator, vcfg, jax.random.split(mkey, restarts),
                                     log_fn=log_fn)
        best = int(np.argmax(result.rca))
        directions = result.directions[best]
        directions.meta["recurrence"] = {
            "counts": result.recurrence["counts"][best],
            "mean_best_cos": result.recurrence["mean_best_cos"][best],
            "recurring_fraction": result.recurrence["recurring_fraction"]}
        curve = {"step": result.curves["step"][0], "rca": result.curves["rca"]}
      else:
        result = run_voynov(generator, vcfg, mkey, log_fn=log_fn)
        directions, curve = result.directions, result.curve
    elif method == "ganspace":
      directions = ganspace(generator, mkey, config.get("ganspace_components", None),
                            num_samples=int(config.get("ganspace_samples", 10_000)))
    else:
      directions = sefa_directions(generator, num_components=config.get("sefa_components", None))
    directions.meta.setdefault("run_config", to_jsonable(config))
    entry = {"directions": directions, "result": result, "files": [], "saved": False}
    if workdir is not None:
      stem = os.path.join(os.fspath(workdir), method)
      if not directions.collapsed or force_save:
        entry["files"] += list(save_directions(stem + "_directions", directions, force=force_save))
        entry["saved"] = True
      z = generator.sample_latents(jax.random.fold_in(mkey, 99), 1)[0]
      grid = report.traversal_grid(generator, directions, z, shifts)
      entry["files"].append(report.save_traversal_grid(
          stem + "_traversals.png", grid, directions.names, [f"{s:+g}" for s in shifts],
          title=f"{method} on {generator.name} ({generator.latent_spec.space})"))
      entry["files"] += list(report.write_table(stem + "_summary",
                                                report.summary_rows(directions)))
      if method == "voynov":
        entry["files"] += list(report.save_rca_curve(stem + "_rca", curve, vcfg.chance))
    out[method] = entry
  return out
