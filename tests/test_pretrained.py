"""The generators shipped in pretrained/ load, and reproduce the validation figures they record.

Each ``pretrained/<name>/`` (validation/ship.py) holds an exported generator, the
directions and factor regressor of its validation analysis and ``recorded.json``.
Re-computing the factor alignment of the recorded best direction per factor from
those files alone must give the recorded alignment: the shipped weights are the ones
docs/VALIDATION.md measured.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import ml_collections
import numpy as np
import pytest

from jaxlatent import directions as dirs
from jaxlatent.demo import (PRETRAINED_CT_MODELS, PRETRAINED_MODELS, PRETRAINED_MS,
                            pretrained_folder)
from jaxlatent.studies import fingerprint as fp_lib
from jaxlatent.studies.analysis import REGRESSOR_FILE, alignment_latents_key
from jaxlatent.studies.generators import generator_fingerprint, load_generator
from script_checks import assert_check_passed, run_script

MAX_SHIPPED_MIB = 30.0  # the repository's budget for every shipped generator together


def test_shipped_models_fit_the_budget():
  total = 0
  for name in PRETRAINED_MODELS:
    for d, _, files in os.walk(pretrained_folder(name)):
      total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
  assert 0 < total <= MAX_SHIPPED_MIB * 2**20


# The alignment checks run the shipped 64 px generators over many latents: seconds of
# compiled code, where the suite's fast-compile flags (conftest.py) cost more run time
# than they save in compiles.  So one process with XLA's default backend optimisation
# (the level the recorded figures were computed at) runs every model's check, calling
# the check below, and prints a PASS or FAIL line per model.
_ALIGNMENT_SCRIPT = r"""
import functools, sys
sys.path.insert(0, sys.argv[1])
from script_checks import report_checks
from test_pretrained import PRETRAINED_CT_MODELS, check_recorded_alignment
from test_pretrained import PRETRAINED_MS, check_recorded_ground_truth
report_checks([(n, functools.partial(check_recorded_alignment, n)) for n in PRETRAINED_CT_MODELS]
              + [(PRETRAINED_MS, functools.partial(check_recorded_ground_truth, PRETRAINED_MS))])
"""


@pytest.fixture(scope="module")
def alignment_checks(tmp_path_factory):
  """The stdout of the process that ran ``check_recorded_alignment`` for every model."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_backend_optimization_level")]
  return run_script(_ALIGNMENT_SCRIPT, tmp_path_factory.mktemp("alignment"),
                    env=dict(os.environ, XLA_FLAGS=" ".join(flags)))


@pytest.mark.parametrize("name", PRETRAINED_CT_MODELS)  # factor alignment: the CT models
def test_shipped_generator_reproduces_its_recorded_alignment(name, alignment_checks):
  assert_check_passed(alignment_checks, name)


def test_shipped_ms_generator_reproduces_its_recorded_ground_truth(alignment_checks):
  assert_check_passed(alignment_checks, PRETRAINED_MS)


def check_recorded_ground_truth(name):
  """The shipped brain StyleGAN2's HC -> MS direction, walked from its shipped
  ground-truth codes and scored against the phantom's true HC -> MS difference maps,
  gives the recorded component-2 and subtraction correlations (to 2e-3)."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from validation import ship  # pylint: disable=g-import-not-at-top
  folder = pretrained_folder(name)
  with open(os.path.join(folder, "recorded.json")) as f:
    recorded = json.load(f)["metrics"]
  assert load_generator(folder, None).step == recorded["checkpoint_step"]
  got = ship.recompute_ground_truth(folder)
  for key in ("component2_corr_mean", "subtraction_corr_mean"):
    np.testing.assert_allclose(got[key], recorded["ground_truth"][key], atol=2e-3, err_msg=key)


def check_recorded_alignment(name):
  """The recorded best direction per factor, re-scored from the shipped files alone,
  gives the recorded factor and alignment (to 2e-3)."""
  folder = pretrained_folder(name)
  with open(os.path.join(folder, "recorded.json")) as f:
    recorded = json.load(f)
  with open(os.path.join(folder, "analysis", "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  trained = load_generator(folder, str(config.space))
  fingerprint = generator_fingerprint(trained)
  assert fingerprint["checkpoint_step"] == recorded["metrics"]["checkpoint_step"]
  reg, _ = dirs.load_factor_regressor(os.path.join(folder, "analysis", "directions",
                                                   REGRESSOR_FILE))
  checked = 0
  for method, best in recorded["best_alignment"].items():
    d = dirs.load_directions(os.path.join(folder, "analysis", "directions",
                                          f"{method}_directions"))
    # The shipped directions belong to this generator (so the demo re-uses them).
    assert fp_lib.to_jsonable(d.meta["fingerprint"]["generator"]) == \
        fp_lib.to_jsonable(fingerprint)
    factors = sorted(best)
    index = [int(best[f]["direction"][1:]) for f in factors]  # "d17" -> 17
    # Padded to one direction count (repeats are scored alike and dropped) so every
    # method runs the same compiled traversal.
    padded = index + index[-1:] * (len(reg.factor_names) - len(index))
    res = dirs.factor_alignment(
        trained.generator, d.vectors[padded], reg, tuple(config.alignment.shifts),
        alignment_latents_key(int(config.seed), method),
        num_latents=int(config.alignment.num_latents))
    got = {f: (reg.factor_names[b], s) for f, b, s in zip(factors, res.best_factor, res.score)}
    for f in factors:
      assert got[f][0] == f, (method, f, got[f])
      np.testing.assert_allclose(got[f][1], best[f]["alignment"], atol=2e-3,
                                 err_msg=f"{name} {method} {f}")
      checked += 1
  assert checked >= 3
  images = trained.generator(trained.generator.sample_latents(jax.random.PRNGKey(0), 2))
  assert np.all(np.isfinite(np.asarray(images)))


def test_alignment_metric_ceiling_on_exact_phantom_traversals():
  """validation/ceiling.py: exact one-factor traversals scored by the shipped regressor
  are led by their own factor, and the ceiling of every goal factor is well above the
  0.8 goal once only the well-predicted factors count."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from validation import ceiling  # pylint: disable=g-import-not-at-top
  reg, _ = dirs.load_factor_regressor(os.path.join(
      pretrained_folder("dcgan_ct_64"), "analysis", "directions", REGRESSOR_FILE))
  out = ceiling.one_factor_sweeps(reg, "thorax", 64, subjects=4, steps=5, seed=0, min_r2=0.9)
  assert set(out) == set(reg.factor_names)
  for factor in ("rotation", "body_width", "slice_position"):
    assert out[factor]["best_factor"] == factor
    assert 0.5 < out[factor]["alignment"] < out[factor]["alignment_kept"] <= 1.0
    assert out[factor]["alignment_kept"] > 0.9
  assert out["heart_size"]["alignment_kept"] is None  # R^2 0.28: not among the kept
