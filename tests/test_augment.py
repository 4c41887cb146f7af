"""ADA augmentation and adaptive p against the slow references of tests/reference/augment_ref.py."""

import dataclasses

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlatent.errors import ConfigError
from jaxlatent.training import augment as A
from reference import augment_ref as R

BGC = A.AugmentSpec(**A.PRESETS["bgc"])
_apply = jax.jit(A.apply_draws, static_argnames="spec")
_geom = jax.jit(A.apply_geometric)
_TRACES = []


def _counted_augment(x, key, p, spec):
  _TRACES.append(1)
  return A.augment(x, key, p, spec)


# One compiled batch augment shared by the tests (one shape: [4, 8, 8, 3]).
_augment = jax.jit(_counted_augment, static_argnames="spec")
_sample = jax.jit(jax.vmap(A.sample_draws, in_axes=(0, None, None)), static_argnums=2)


def _smooth(h, w, ch, seed=0):
  """Smooth test images: a few cycles across the image per channel."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  chans = [np.sin(rng.uniform(1, 4) * xx + rng.uniform(1, 4) * yy**2) + rng.uniform() * xx * yy
           for _ in range(ch)]
  return np.stack(chans, -1).astype(np.float32)


def _noise(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _draws(**kw):
  return A.identity_draws().replace(**{k: jnp.asarray(v, jnp.float32) for k, v in kw.items()})


def _as_dict(d):
  return {k: np.asarray(v, np.float64) for k, v in flax.serialization.to_state_dict(d).items()}


# --- p = 0 --------------------------------------------------------------------


def test_p_zero_returns_input_bit_identical_and_p_is_traced_once():
  x = jnp.asarray(_noise((4, 8, 8, 3)))
  key = jax.random.key(0)
  assert A.augment(x, key, 0.0, BGC) is x  # a Python 0 skips all work
  x1 = x[..., :1]
  assert A.augment(x1, key, 0, BGC) is x1
  before = len(_TRACES)
  np.testing.assert_array_equal(np.asarray(_augment(x, key, jnp.float32(0.0), spec=BGC)),
                                np.asarray(x))
  for p in (0.3, 1.2):
    y = _augment(x, key, jnp.float32(p), spec=BGC)
    assert y.shape == x.shape and not np.array_equal(np.asarray(y), np.asarray(x))
  assert len(_TRACES) - before <= 1  # p is an argument: no retrace per value


# --- matrices and the colour transform -------------------------------------------

GENERAL_DRAWS = dict(xflip=1.0, rotate90=3.0, xint=[0.1, -0.2], scale=1.3, rotate_pre=0.7,
                     aniso=0.8, rotate_post=-2.1, xfrac=[0.05, -0.11], brightness=0.3,
                     contrast=1.7, lumaflip=1.0, hue=1.1, saturation=0.6)


def test_matrices_match_reference():
  d = _draws(**GENERAL_DRAWS)
  ref = _as_dict(d)
  np.testing.assert_allclose(A.geometric_matrix(d, 12, 16), R.geometric_matrix(ref, 12, 16),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(A.blit_matrix(d, 12, 16) @ A.general_matrix(d, 12, 16),
                             R.geometric_matrix(ref, 12, 16), rtol=1e-5, atol=1e-5)
  for ch in (1, 3):
    np.testing.assert_allclose(A.color_matrix(d, ch), R.color_matrix(ref, ch), atol=1e-6)
  # Each transform alone, so a sign or order slip in one cannot hide behind another.
  for name, value in GENERAL_DRAWS.items():
    one = _draws(**{name: value})
    np.testing.assert_allclose(A.geometric_matrix(one, 8, 8),
                               R.geometric_matrix(_as_dict(one), 8, 8), atol=1e-5, err_msg=name)
    np.testing.assert_allclose(A.color_matrix(one, 3), R.color_matrix(_as_dict(one), 3),
                               atol=1e-6, err_msg=name)


@pytest.mark.parametrize("ch", [1, 3])
def test_color_transform_matches_reference(ch):
  x = _noise((5, 6, ch))
  d = _draws(**GENERAL_DRAWS)
  got = A.apply_color(jnp.asarray(x), A.color_matrix(d, ch))
  np.testing.assert_allclose(got, R.apply_color(x, R.color_matrix(_as_dict(d), ch)), atol=1e-5)


def test_one_channel_luma_flip_negates_and_ignores_hue_saturation():
  x = _noise((4, 4, 1))
  d = _draws(lumaflip=1.0, hue=2.0, saturation=3.0)
  np.testing.assert_allclose(A.apply_color(jnp.asarray(x), A.color_matrix(d, 1)), -x, atol=1e-6)


# --- geometric transforms ---------------------------------------------------------

INTEGER_CASES = [(1, 0, 0, 0), (0, 1, 0, 0), (0, 2, 0, 0), (0, 3, 0, 0), (0, 0, 2, -1),
                 (1, 3, -2, 1), (1, 1, 1, 2)]


@pytest.mark.parametrize("ch", [1, 3])
def test_integer_transforms_exact(ch):
  x = _noise((8, 8, ch), seed=ch)
  blit_only = A.AugmentSpec(**A.PRESETS["blit"])
  for flip, rot, sx, sy in INTEGER_CASES:
    d = _draws(xflip=flip, rotate90=rot, xint=[sx / 8, sy / 8])
    ref = R.integer_transforms(x, flip, rot, sx, sy)
    # Indexing alone: bit-exact.
    np.testing.assert_array_equal(_apply(jnp.asarray(x), d, spec=blit_only), ref)
    # With the general transforms enabled but not fired: the resampler's identity.
    np.testing.assert_allclose(_apply(jnp.asarray(x), d, spec=BGC), ref, atol=2e-6)


def test_blit_order_matches_official_pipeline():
  """The official single resample of flip @ rotate @ shift, against our exact blit.

  Any axis reversal runs the official's asymmetric sym6 filter pair backwards, so
  its flips and quarter turns are close to exact only on smooth images; a wrong
  order of the three blits would be off by the image's whole range.
  """
  pytest.importorskip("torch")
  yy, xx = np.mgrid[0:8, 0:8] / 8
  x = (0.5 * np.sin(0.7 * np.pi * xx + 0.7) + 0.3 * np.cos(1.1 * np.pi * yy)
       + 0.4 * xx * yy)[..., None].astype(np.float32)
  for flip, rot, sx, sy in INTEGER_CASES:
    d = _draws(xflip=flip, rotate90=rot, xint=[sx / 8, sy / 8])
    g = np.asarray(A.geometric_matrix(d, 8, 8), np.float64)
    official = R.official_geometric(x[None], g[None])[0]
    got = np.asarray(_apply(jnp.asarray(x), d, spec=BGC))
    np.testing.assert_allclose(got, official, atol=0.03)
    if (flip, rot) in ((0, 0), (1, 1)):  # no axis reversed (identity, transpose): exact
      np.testing.assert_allclose(got, official, atol=1e-5)
    reversed_order = np.rot90(R.integer_transforms(x, 0, 0, sx, sy), rot)[:, ::(-1 if flip else 1)]
    if (sx, sy) != (0, 0) and rot:
      assert np.abs(reversed_order - official).max() > 0.3


@pytest.mark.parametrize("name,value", [("scale", 1.4), ("scale", 0.7), ("rotate_pre", 0.5),
                                        ("aniso", 1.3), ("rotate_post", -2.5),
                                        ("xfrac", [0.07, -0.04])])
def test_general_transform_matches_official_resampler(name, value):
  pytest.importorskip("torch")
  x = _noise((10, 10, 2), seed=3)  # white noise: every frequency is compared
  d = _draws(**{name: value})
  g = A.general_matrix(d, 10, 10)
  got = _geom(jnp.asarray(x), g)
  official = R.official_geometric(x[None], np.asarray(g, np.float64)[None], full_pad=True)[0]
  np.testing.assert_allclose(got, official, atol=1e-5)
  # With its adaptive margin the official can differ only in the outermost pixels
  # (a zoom-out reads zeros beyond its pad).
  official = R.official_geometric(x[None], np.asarray(g, np.float64)[None])[0]
  np.testing.assert_allclose(got[1:-1, 1:-1], official[1:-1, 1:-1], atol=1e-5)


def test_all_general_transforms_and_non_square_match_official():
  pytest.importorskip("torch")
  d = _draws(**GENERAL_DRAWS)
  x = _noise((12, 12, 1), seed=4)
  g = A.general_matrix(d, 12, 12)
  official = R.official_geometric(x[None], np.asarray(g, np.float64)[None], full_pad=True)[0]
  np.testing.assert_allclose(_geom(jnp.asarray(x), g), official, atol=1e-5)
  # Non-square: the whole G_inv (blit included) in one resample, as the official.
  geom = A.AugmentSpec(**A.PRESETS["bg"])
  x = _noise((8, 12, 1), seed=5)
  g = np.asarray(A.geometric_matrix(d, 8, 12), np.float64)
  official = R.official_geometric(x[None], g[None], full_pad=True)[0]
  np.testing.assert_allclose(_apply(jnp.asarray(x), d, spec=geom), official, atol=1e-5)


# --- the full pipeline ------------------------------------------------------------------


def _reference(x, d, ch):
  """The slow reference of one image: exact blit, the official resample (padded by
  its cap, as ours), colour matrix."""
  size = x.shape[0]
  y = R.integer_transforms(x, int(d["xflip"]), int(d["rotate90"]),
                           int(np.round(d["xint"][0] * size)), int(np.round(d["xint"][1] * size)))
  general = dict(d, xflip=0.0, rotate90=0.0, xint=np.zeros(2))
  y = R.official_geometric(y[None], R.geometric_matrix(general, size, size)[None], full_pad=True)[0]
  return R.apply_color(y, R.color_matrix(d, ch))


@pytest.mark.parametrize("ch", [1, 3])
def test_each_transform_alone_matches_reference(ch):
  """Fixed draws, one transform at a time, through the whole 'bgc' pipeline."""
  pytest.importorskip("torch")
  x = _smooth(8, 8, ch, seed=ch) + _noise((8, 8, ch), seed=ch)
  for name, value in GENERAL_DRAWS.items():
    d = _draws(**{name: value})
    got = np.asarray(_apply(jnp.asarray(x), d, spec=BGC))
    np.testing.assert_allclose(got, _reference(x, _as_dict(d), ch), atol=2e-5, err_msg=name)
    if ch == 1 and name in ("hue", "saturation"):  # RGB only
      np.testing.assert_allclose(got, x, atol=2e-6)
    else:
      assert np.abs(got - x).max() > 1e-2, name  # the transform did something


def test_augment_at_p1_matches_reference():
  """Random draws at p = 1 (every continuous transform fires), all transforms, RGB."""
  pytest.importorskip("torch")
  x = np.stack([_smooth(8, 8, 3, seed=s) for s in range(4)])
  key = jax.random.key(7)
  got = np.asarray(_augment(jnp.asarray(x), key, jnp.float32(1.0), spec=BGC))
  draws = _as_dict(_sample(jax.random.split(key, 4), 1.0, BGC))
  identity = _as_dict(A.identity_draws())
  for name in ("scale", "aniso", "xfrac", "brightness", "contrast", "hue", "saturation"):
    assert np.all(np.any((draws[name] != identity[name]).reshape(4, -1), axis=1)), name
  for b in range(4):
    d = {k: v[b] for k, v in draws.items()}
    np.testing.assert_allclose(got[b], _reference(x[b], d, 3), atol=5e-5, err_msg=f"image {b}")


# --- how often transforms fire at p ---------------------------------------------------


def test_firing_rates_follow_p():
  n, p = 2000, 0.4
  draws = _sample(jax.random.split(jax.random.key(1), n), p, BGC)
  d = _as_dict(draws)
  tol = 0.035  # > 3 binomial standard deviations at n = 2000

  def rate(mask):
    return float(np.mean(mask))

  assert abs(rate(d["xflip"] == 1) - 0.5 * p) < tol
  assert abs(rate(d["rotate90"] != 0) - 0.75 * p) < tol
  assert abs(rate(np.any(d["xint"] != 0, axis=-1)) - p) < tol
  assert abs(rate(d["scale"] != 1) - p) < tol
  assert abs(rate((d["rotate_pre"] != 0) | (d["rotate_post"] != 0)) - p) < tol  # P(pre or post)
  assert abs(rate(d["aniso"] != 1) - p) < tol
  assert abs(rate(np.any(d["xfrac"] != 0, axis=-1)) - p) < tol
  assert abs(rate(d["brightness"] != 0) - p) < tol
  assert abs(rate(d["contrast"] != 1) - p) < tol
  assert abs(rate(d["lumaflip"] == 1) - 0.5 * p) < tol
  assert abs(rate(d["hue"] != 0) - p) < tol
  assert abs(rate(d["saturation"] != 1) - p) < tol
  # Magnitudes of the fired draws follow the spec's spreads.
  fired = d["scale"] != 1
  assert abs(np.std(np.log2(d["scale"][fired])) - BGC.scale_std) < 0.03
  assert abs(np.std(d["brightness"][d["brightness"] != 0]) - BGC.brightness_std) < 0.03
  assert np.all(np.abs(d["xint"]) <= BGC.xint_max)


# --- gradients ------------------------------------------------------------------------


def test_gradient_flows_through_augment():
  x = jnp.asarray(_noise((4, 8, 8, 3)))
  w = jnp.asarray(_noise((4, 8, 8, 3), seed=9))
  key = jax.random.key(3)
  loss = lambda imgs, p: jnp.sum(_augment(imgs, key, p, spec=BGC) * w)
  grad_fn = jax.jit(jax.grad(loss))
  one = jnp.float32(1.0)
  grad = grad_fn(x, one)
  assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).sum()) > 0
  # The augmentation is affine in the image: loss(x) = <grad, x> + loss(0).
  np.testing.assert_allclose(float(jnp.sum(grad * x)),
                             float(loss(x, one) - loss(jnp.zeros_like(x), one)), rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(grad_fn(x, jnp.float32(0.0)), w)  # p = 0: identity


# --- adaptive p -------------------------------------------------------------------------


def test_ada_update_hand_computed_sequence():
  batch, interval, kimg = 8, 2, 0.1
  step = batch * interval / (kimg * 1000)  # 0.16 per adjustment
  pos, neg = jnp.ones((batch, 1)), -jnp.ones((batch, 1))
  mixed = jnp.asarray([1.0] * 5 + [-1.0] * 2 + [0.0])  # mean sign 3/8 < 0.6
  update = jax.jit(A.ada_update, static_argnames=("batch_size", "target", "interval", "kimg"))
  s = A.ada_init(0.0)
  for logits, p_after in [(pos, 0.0), (pos, step), (pos, step), (mixed, 2 * step),  # mean 11/16
                          (neg, 2 * step), (neg, step), (neg, step), (neg, 0.0),
                          (neg, 0.0), (neg, 0.0),  # never below 0
                          (mixed, 0.0), (mixed, 0.0)]:
    s = update(s, logits, batch_size=batch, target=0.6, interval=interval, kimg=kimg)
    np.testing.assert_allclose(float(s.p), p_after, atol=1e-6)
  assert int(s.steps) == 0 and float(s.count) == 0.0
  # Half-way through an interval the statistics are carried, p unchanged.
  s = update(s, pos, batch_size=batch, target=0.6, interval=interval, kimg=kimg)
  assert int(s.steps) == 1 and float(s.sign_sum) == batch and float(s.count) == batch
  assert float(s.p) == 0.0


def test_ada_state_resume_gives_same_next_p():
  rng = np.random.default_rng(0)
  logits = [jnp.asarray(rng.normal(0.4, 1.0, (16, 1)), jnp.float32) for _ in range(11)]
  update = lambda s, l: A.ada_update(s, l, batch_size=16, interval=4, kimg=0.5)
  s = A.ada_init(0.2)
  for l in logits[:7]:  # 7 = mid-interval: the sign statistics must survive too
    s = update(s, l)
  assert int(s.steps) == 3
  restored = flax.serialization.from_bytes(A.ada_init(), flax.serialization.to_bytes(s))
  assert jax.tree.all(jax.tree.map(lambda a, b: a.dtype == b.dtype and a.shape == b.shape, s,
                                   restored))
  a, b = s, restored
  for l in logits[7:]:
    a, b = update(a, l), update(b, l)
  assert float(a.p) != 0.2  # it moved
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- config -----------------------------------------------------------------------------


def test_spec_from_config_presets_and_overrides():
  c = A.default_augment_config()
  A.check_augment_config(c)
  assert A.spec_from_config(c) == BGC
  c.xflip = 0.0
  c.scale_std = 0.1
  spec = A.spec_from_config(c)
  assert spec.xflip == 0.0 and spec.scale_std == 0.1 and spec.rotate90 == 1.0
  assert A.spec_from_config({"spec": "blit"}) == A.AugmentSpec(xflip=1, rotate90=1, xint=1)
  assert {f.name for f in dataclasses.fields(A.AugmentSpec)} <= set(c.keys())


@pytest.mark.parametrize("bad,key", [({"spec": "bgcfnc"}, "augment.spec"),
                                     ({"cutout": 1.0}, "augment.cutout"),
                                     ({"xflip": -1.0}, "augment.xflip"),
                                     ({"mode": "always"}, "augment.mode"),
                                     ({"target": 1.5}, "augment.target"),
                                     ({"interval": 0}, "augment.interval"),
                                     ({"kimg": 0.0}, "augment.kimg")])
def test_bad_config_raises_config_error_naming_key(bad, key):
  c = A.default_augment_config().to_dict()
  c.update(bad)
  with pytest.raises(ConfigError, match=key):
    A.check_augment_config(c)
