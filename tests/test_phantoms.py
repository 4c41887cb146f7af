"""Tests of jaxlatent.phantoms (rendering, factors, populations, NIfTI I/O, CLI).

Every render uses 32 px and at most 8 images, so each kind compiles once.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from jaxlatent.errors import ConfigError
from jaxlatent import phantoms as ph
from jaxlatent.phantoms import shapes

S = 32
T1_CSF = 0.15
KEY = jax.random.PRNGKey(3)


def sweep(kind, rows, key=KEY):
  """Renders one subject (same subject and noise key) under several factor settings."""
  n = len(rows)
  factors = {k: np.array([r.get(k, ph.factor_table(kind)[k][2]) for r in rows], np.float32)
             for k in ph.factor_table(kind)}
  sk = jnp.stack([key] * n)
  nk = jnp.stack([jax.random.fold_in(key, 99)] * n)
  img, lab, mask = ph.render_with_keys(kind, factors, S, sk, nk)
  return np.asarray(img), np.asarray(lab), np.asarray(mask)


def count(lab, *values):
  return int(np.isin(lab, values).sum())


# --- primitives --------------------------------------------------------------------

def test_coverage_area_matches_analytic_area():
  pw = shapes.pixel_width(64)

  @jax.jit
  def planted():
    x, y = shapes.grid(64)
    return (x, y, shapes.ellipse(x, y, 0.1, -0.05, 0.5, 0.5, pw),
            shapes.ellipse(x, y, 0.0, 0.0, 0.6, 0.3, pw, 30.0),
            shapes.ellipse(x, y, 0.0, 0.0, 0.0, 0.0, pw),
            shapes.ellipse_sdf(x, y, 0.0, 0.0, 0.5, 0.5))

  x, y, circle, ell, empty, d = (np.asarray(a) for a in planted())
  np.testing.assert_allclose(circle.sum() * pw**2, np.pi * 0.25, rtol=0.01)
  np.testing.assert_allclose(ell.sum() * pw**2, np.pi * 0.18, rtol=0.02)
  assert empty.sum() == 0.0  # a zero-size shape vanishes exactly (no one-pixel dot)
  np.testing.assert_allclose(d, np.hypot(x, y) - 0.5, atol=1e-5)  # exact for circles


def test_principal_axis_angle_of_planted_ellipse():
  planted = jax.jit(lambda: shapes.ellipse(*shapes.grid(64), 0.0, 0.0, 0.7, 0.3, 2 / 64, 25.0))
  m = np.asarray(planted()) > 0.5
  assert abs(shapes.principal_axis_angle(m) - 25.0) < 1.0


# --- factors, API errors ----------------------------------------------------------

def test_sample_factors_ranges_fixed_and_errors():
  for kind in ph.KINDS:
    table = ph.factor_table(kind)
    f = ph.sample_factors(kind, KEY, 50, slice_position=0.25)
    assert set(f) == set(table)
    for name, (lo, hi, default) in table.items():
      assert lo <= default <= hi
      assert f[name].shape == (50,) and f[name].dtype == jnp.float32
      if name == "slice_position":
        np.testing.assert_array_equal(f[name], 0.25)
      else:
        assert float(f[name].min()) >= lo and float(f[name].max()) <= hi
        assert float(f[name].std()) > 0
    # sample i does not depend on n
    g = ph.sample_factors(kind, KEY, 7, slice_position=0.25)
    for name in table:
      np.testing.assert_array_equal(g[name], f[name][:7])
  with pytest.raises(ConfigError, match="unknown brain factor"):
    ph.render("brain", {"bogus": jnp.zeros(2)}, S, KEY)
  with pytest.raises(ConfigError, match="kind"):
    ph.render("knee", {}, S, KEY)
  with pytest.raises(ConfigError, match="size"):
    ph.render("brain", {}, 0, KEY)


# --- thorax ------------------------------------------------------------------------

def test_thorax_shapes_ranges_determinism_and_batch_independence():
  f = ph.sample_factors("thorax", KEY, 6)
  img, lab = ph.render("thorax", f, S, KEY, return_labels=True)
  assert img.shape == (6, S, S) and img.dtype == jnp.float32
  assert lab.shape == (6, S, S) and lab.dtype == jnp.int32
  assert float(img.min()) >= -1024.0 and float(img.max()) <= 3000.0
  assert set(np.unique(lab)) <= set(ph.THORAX_LABELS)
  np.testing.assert_array_equal(img, ph.render("thorax", f, S, KEY))
  first3 = ph.render("thorax", {k: v[:3] for k, v in f.items()}, S, KEY)
  np.testing.assert_array_equal(first3, img[:3])
  assert float(jnp.abs(ph.render("thorax", f, S, jax.random.PRNGKey(4)) - img).max()) > 1.0
  # Noise-free: air is exactly -1000, foreground mask = non-air pixels.
  clean = ph.render("thorax", {**f, "noise": jnp.zeros(6)}, S, KEY)
  masks = ph.render_masks("thorax", {**f, "noise": jnp.zeros(6)}, S, KEY)
  far = ~ndimage.binary_dilation(np.asarray(masks), iterations=1, axes=(1, 2))
  assert np.all(np.asarray(clean)[far] == -1000.0)
  np.testing.assert_array_equal(np.asarray(masks), np.asarray(lab) > 0)


def test_thorax_factor_monotonicity():
  rows = [{}, {"breast_size": 1.0}, {"lung_size": 0.85}, {"lung_size": 1.15},
          {"slice_position": 0.0}, {"slice_position": 1.0}, {"slice_position": 0.2},
          {"slice_position": 0.75}]
  img, lab, mask = sweep("thorax", rows)
  anterior = np.arange(S)[:, None] < S // 2  # rows above the centre (y > 0)
  assert (mask[1] & anterior).sum() > (mask[0] & anterior).sum() + 10
  assert count(lab[1], 6) > 0 and count(lab[0], 6) == 0
  assert count(lab[3], 3) > count(lab[0], 3) > count(lab[2], 3)
  # Lung area rises from the apex to the middle, then falls towards the base.
  assert count(lab[0], 3) > 1.5 * count(lab[4], 3)
  assert count(lab[0], 3) > 1.5 * count(lab[5], 3)
  # Heart only in the lower half; liver dome at the base.
  assert count(lab[6], 4) == 0 and count(lab[7], 4) > 20
  assert count(lab[5], 7) > count(lab[0], 7) == 0


def test_thorax_rotation_turns_principal_axis():
  rows = [{"rotation": 0.0}, {"rotation": 15.0}, {"rotation": -10.0}]
  _, _, mask = sweep("thorax", rows)
  angles = [shapes.principal_axis_angle(m) for m in mask]
  assert abs(angles[0]) < 1.5
  assert abs(angles[1] - angles[0] - 15.0) < 1.5
  assert abs(angles[2] - angles[0] + 10.0) < 1.5


def test_thorax_factor_changes_stay_in_their_region():
  rows = [{"noise": 20.0}, {"noise": 20.0, "breast_size": 0.8},
          {"noise": 20.0, "heart_size": 1.2}]
  img, lab, _ = sweep("thorax", rows)
  changed = np.abs(img[1] - img[0]) > 0
  assert changed.any()
  ys = np.nonzero(changed)[0]
  assert ys.max() < S // 2  # breasts only change the anterior half
  changed = np.abs(img[2] - img[0]) > 0
  heart = ndimage.binary_dilation((lab[0] == 4) | (lab[2] == 4), iterations=2)
  assert changed.any() and not (changed & ~heart).any()


# --- brain -------------------------------------------------------------------------

def test_brain_ranges_background_and_labels():
  f = ph.sample_factors("brain", KEY, 5, noise=0.0)
  img, lab = ph.render("brain", f, S, KEY, return_labels=True)
  img, lab = np.asarray(img), np.asarray(lab)
  mask = np.asarray(ph.render_masks("brain", f, S, KEY))
  assert img.dtype == np.float32 and img.min() >= 0.0 and img.max() <= 1.2
  far = ~ndimage.binary_dilation(mask, iterations=1, axes=(1, 2))
  assert np.all(img[far] == 0.0) and np.all(img[~mask] < T1_CSF)
  np.testing.assert_array_equal(mask, lab > 0)
  np.testing.assert_array_equal(lab, np.asarray(ph.render_labels("brain", f, S, KEY)))
  # Noise is Rician: background stays >= 0, images differ from the clean ones.
  noisy = np.asarray(ph.render("brain", {**f, "noise": jnp.full(5, 0.05)}, S, KEY))
  assert noisy.min() >= 0.0 and np.abs(noisy - img).mean() > 0.01


def test_brain_factor_monotonicity_and_lesion_nesting():
  rows = [{"ventricle_size": 0.8}, {"ventricle_size": 1.6}, {"atrophy": 0.0},
          {"atrophy": 0.8}, {"lesion_load": 0.3}, {"lesion_load": 1.0},
          {"slice_position": 0.1}, {"slice_position": 0.95}]
  _, lab, mask = sweep("brain", rows)
  assert count(lab[1], 4) > 1.5 * count(lab[0], 4) > 0
  assert count(lab[1], 1, 4) > count(lab[0], 1, 4)
  assert count(lab[3], 2) < 0.85 * count(lab[2], 2)
  assert count(lab[3], 1) > count(lab[2], 1) + 20
  assert count(lab[5], 5) > count(lab[4], 5)
  assert np.all(lab[5][lab[4] == 5] == 5)  # lesions only grow or get added
  # No ventricles near the skull base / vertex; smaller section near the vertex.
  assert count(lab[6], 4) == 0 and count(lab[7], 4) == 0
  assert mask[7].sum() < 0.7 * mask[2].sum()


def test_brain_ventricle_change_is_confined_to_ventricles():
  rows = [{"ventricle_size": 1.0, "lesion_load": 0.6, "noise": 0.03},
          {"ventricle_size": 1.4, "lesion_load": 0.6, "noise": 0.03}]
  img, lab, _ = sweep("brain", rows)
  changed = img[1] != img[0]
  vent = ndimage.binary_dilation((lab[0] == 4) | (lab[1] == 4), np.ones((3, 3), bool))
  assert changed.sum() > 5 and not (changed & ~vent).any()


def test_brain_rotation():
  _, _, mask = sweep("brain", [{"rotation": 0.0}, {"rotation": 12.0}])
  a0, a1 = (shapes.principal_axis_angle(m) for m in mask)
  assert abs((a1 - a0 + 90.0) % 180.0 - 90.0 - 12.0) < 1.5


# --- populations, data sets, volumes, files ------------------------------------------

def test_brain_population_groups_are_shifted():
  pop = ph.brain_population(jax.random.PRNGKey(0), 400, ms_fraction=0.25)
  ms = pop["group"] == "MS"
  assert ms.sum() == 100 and set(np.unique(pop["group"])) == {"HC", "MS"}
  for name in ("ventricle_size", "atrophy", "lesion_load"):
    lo, hi, _ = ph.BRAIN_FACTORS[name]
    assert pop[name][ms].mean() > pop[name][~ms].mean() + 0.1
    assert pop[name].min() >= lo and pop[name].max() <= hi
  # overlapping distributions: some HC have larger ventricles than some MS
  assert pop["ventricle_size"][~ms].max() > pop["ventricle_size"][ms].min()
  assert len(set(pop["subject_id"])) == 400 and pop["subject_key"].shape == (400, 2)
  with pytest.raises(ConfigError):
    ph.brain_population(0, 4, ms_fraction=1.5)


def test_render_dataset_structure():
  d = ph.render_dataset("brain", 7, S, seed=1, slices_per_subject=3)
  assert d["images"].shape == (7, S, S) and d["images"].dtype == np.float32
  assert d["masks"].dtype == bool and d["masks"].shape == (7, S, S)
  assert list(d["subject_id"]) == ["sub-000"] * 3 + ["sub-001"] * 3 + ["sub-002"]
  assert set(d["factors"]) == set(ph.BRAIN_FACTORS)
  np.testing.assert_array_equal(d["slice_position"], d["factors"]["slice_position"])
  assert len(set(d["slice_position"][:3])) == 3
  assert set(d["labels"]["group"]) <= {"HC", "MS"}
  for name in ("ventricle_size", "atrophy", "lesion_load", "rotation", "noise"):
    assert len(set(d["factors"][name][:3])) == 1  # subject-level factors
  np.testing.assert_array_equal(d["masks"], d["tissue"] > 0)
  again = ph.render_dataset("brain", 7, S, seed=1, slices_per_subject=3)
  np.testing.assert_array_equal(again["images"], d["images"])
  t = ph.render_dataset("thorax", 4, S, seed=0, slices_per_subject=2)
  assert set(t["labels"]) == {"group", "large_breast"} and t["images"].min() >= -1024


def test_render_volume_matches_slices():
  f = {"ventricle_size": 1.3, "lesion_load": 0.7, "noise": 0.0}
  vol = ph.render_volume("brain", f, S, 8, KEY)
  assert vol.shape == (S, S, 8) and vol.dtype == np.float32
  z = jnp.linspace(0.0, 1.0, 8, dtype=jnp.float32)
  sk = jnp.stack([jax.random.fold_in(KEY, 0)] * 8)
  img, _, _ = ph.render_with_keys("brain", {**f, "slice_position": z}, S, sk, sk)
  np.testing.assert_allclose(np.moveaxis(vol, -1, 0), img, atol=1e-6)


def test_write_dataset_round_trip(tmp_path):
  out = tmp_path / "brain"
  paths = ph.write_dataset("brain", 3, out, size=S, n_slices=8, seed=0)
  assert [os.path.basename(p) for p in paths] == [f"sub-00{i}.nii.gz" for i in range(3)]
  img = nib.load(paths[1])
  assert img.shape == (S, S, 8) and img.get_data_dtype() == np.float32
  assert nib.aff2axcodes(img.affine) == ("P", "L", "S")
  np.testing.assert_allclose(img.affine, ph.volume_affine("brain", S, 8))
  data = np.asarray(img.dataobj)
  mask = nib.load(str(out / "sub-001_mask.nii.gz"))
  assert mask.get_data_dtype() == np.uint8 and mask.shape == (S, S, 8)
  outside = np.asarray(mask.dataobj) == 0
  assert outside.any() and data[outside].mean() < 0.05 and data[~outside].mean() > 0.3
  canon = nib.as_closest_canonical(img)
  assert nib.aff2axcodes(canon.affine) == ("R", "A", "S")
  np.testing.assert_array_equal(ph.canonical_to_display(np.asarray(canon.dataobj)), data)
  with open(out / "labels.csv") as fh:
    rows = list(csv.DictReader(fh))
  assert list(rows[0]) == ph.csv_columns("brain")
  assert list(rows[0])[:2] == ["subject_id", "group"]
  assert [r["subject_id"] for r in rows] == ["sub-000", "sub-001", "sub-002"]
  pop = ph.brain_population(jax.random.PRNGKey(0), 3)
  np.testing.assert_allclose([float(r["atrophy"]) for r in rows], pop["atrophy"], rtol=1e-5)
  # Thorax: slice axis points inferior (slice_position 0 = apex); display round trip.
  aff = ph.volume_affine("thorax", S, 8)
  assert nib.aff2axcodes(aff) == ("P", "L", "I")
  vol = np.random.default_rng(0).normal(size=(S, S, 8)).astype(np.float32)
  canon = nib.as_closest_canonical(nib.Nifti1Image(vol, aff))
  np.testing.assert_array_equal(ph.canonical_to_display(np.asarray(canon.dataobj)),
                                vol[:, :, ::-1])
  with pytest.raises(ConfigError, match="output folder"):
    ph.write_dataset("brain", 1, "/proc/no/such/dir", size=S, n_slices=8)


def _cli(*args):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "jaxlatent.phantoms", *args],
                        capture_output=True, text=True, env=env, timeout=300)


def test_cli(tmp_path):
  r = _cli("--kind", "brain", "--subjects", "2", "--out", str(tmp_path / "t"), "--size", "16",
           "--slices", "16", "--preview", str(tmp_path / "p.png"))
  assert r.returncode == 0, r.stderr
  assert sorted(os.listdir(tmp_path / "t")) == [
      "labels.csv", "sub-000.nii.gz", "sub-000_mask.nii.gz", "sub-001.nii.gz",
      "sub-001_mask.nii.gz"]
  assert nib.load(str(tmp_path / "t" / "sub-000.nii.gz")).shape == (16, 16, 16)
  with open(tmp_path / "p.png", "rb") as fh:
    assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_arguments_in_process(tmp_path, capsys):
  from jaxlatent.phantoms.__main__ import main
  for bad, what in ((["--kind", "knee", "--out", str(tmp_path)], "kind"),
                    (["--kind", "brain", "--size", "-4", "--out", str(tmp_path)], "--size"),
                    (["--kind", "brain", "--size", "2.5", "--out", str(tmp_path)], "--size"),
                    (["--kind", "thorax", "--out", "/proc/nope/x"], "output folder"),
                    (["--kind", "brain", "--subjects", "0", "--out", str(tmp_path / "b")],
                     "--subjects")):
    with pytest.raises(SystemExit) as e:
      main(bad)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and what in err[0], err
  assert not (tmp_path / "b").exists()
