"""Eigen-analysis of traversals: NumPy reference, streaming, batching, planted truth."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlatent.analysis import (difference_map_correlation,
                                eigen_analysis, eigen_analysis_batched,
                                eigen_analysis_chunked, eigen_analysis_stream,
                                polynomial_match)
from jaxlatent.errors import ConfigError, DataError

T, H, W = 15, 16, 16
ALPHAS = np.linspace(0.0, 50.0, T).astype(np.float32)


def covariance_reference(images: np.ndarray, mask: np.ndarray, center: str = "voxels"):
  """Slow NumPy float64 reference of the eigen-analysis covariance."""
  images = np.asarray(images, np.float64)
  t = images.shape[0]
  mask = np.broadcast_to(np.asarray(mask, bool).reshape(
      mask.shape + (1,) * (images.ndim - 1 - np.ndim(mask))), images.shape[1:])
  mat = images.reshape(t, -1).T[mask.reshape(-1)]  # [V, T]
  if center == "voxels":
    return np.cov(mat, rowvar=False)
  if center == "steps":
    mat = mat - mat.mean(1, keepdims=True)
  return mat.T @ mat / (mat.shape[0] - 1)


def _disk_mask(h=H, w=W, r=6.5):
  yy, xx = np.mgrid[:h, :w]
  return (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 <= r ** 2


def _blob(cy, cx, s, h=H, w=W):
  yy, xx = np.mgrid[:h, :w]
  return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s ** 2))


def _random_traversal(seed, t=T, h=H, w=W):
  """Smooth-ish traversal with several temporal profiles and noise: [T, H, W, 1]."""
  rng = np.random.default_rng(seed)
  a = np.linspace(0, 1, t)
  base = rng.normal(size=(h, w))
  x = (base[None] + a[:, None, None] * 0.8 * rng.normal(size=(h, w))[None]
       + (a ** 2)[:, None, None] * 0.4 * rng.normal(size=(h, w))[None]
       + np.sin(3 * a)[:, None, None] * 0.2 * rng.normal(size=(h, w))[None]
       + 0.05 * rng.normal(size=(t, h, w)))
  return x[..., None].astype(np.float32)


def _reference(images, mask, alphas):
  """Slow NumPy float64 eigen-analysis of one traversal (the module's conventions)."""
  images = np.asarray(images, np.float64)
  t = images.shape[0]
  fg = np.asarray(mask, bool)
  mat = images[..., 0].reshape(t, -1).T[fg.reshape(-1)]  # [V, T]
  cov = np.cov(mat, rowvar=False)
  evals, evecs = np.linalg.eigh(cov)
  order = np.argsort(evals)[::-1]
  evals, evecs = evals[order], evecs[:, order]
  a = np.asarray(alphas, np.float64)
  x = 2 * (a - a.min()) / (a.max() - a.min()) - 1
  # Orthonormal polynomials of the schedule by Gram-Schmidt on 1, x, x^2, ...
  poly = []
  for d in range(t):
    p = x ** d
    for q in poly:
      p = p - np.dot(p, q) * q
    poly.append(p / np.linalg.norm(p))
  for c in range(t):
    key = np.dot(poly[c], evecs[:, c])
    if key < 0:
      evecs[:, c] *= -1
  maps = np.zeros((t, mask.size))
  maps[:, fg.reshape(-1)] = (mat @ evecs).T
  ratio = np.clip(evals, 0, None) / np.clip(evals, 0, None).sum()
  return evals, evecs, maps.reshape((t,) + mask.shape), ratio


def test_matches_numpy_reference():
  images = _random_traversal(0)
  mask = _disk_mask()
  res = eigen_analysis(jnp.asarray(images), jnp.asarray(mask), jnp.asarray(ALPHAS))
  evals, evecs, maps, ratio = _reference(images, mask, ALPHAS)
  scale = evals[0]
  np.testing.assert_allclose(np.asarray(res.eigenvalues), evals, atol=2e-5 * scale)
  np.testing.assert_allclose(np.asarray(res.explained_variance_ratio), ratio, atol=1e-5)
  np.testing.assert_allclose(np.asarray(res.n_voxels),
                             mask.sum())
  # Components with a clear eigen-gap are determined up to sign; the sign convention
  # is the same in both, so compare them signed and their |.| too.
  gaps = np.abs(np.diff(evals)) / scale
  clear = [c for c in range(4) if gaps[c] > 1e-3 and (c == 0 or gaps[c - 1] > 1e-3)]
  assert len(clear) >= 3
  for c in clear:
    np.testing.assert_allclose(np.abs(np.asarray(res.eigenvectors[:, c])),
                               np.abs(evecs[:, c]), atol=1e-3)
    np.testing.assert_allclose(np.asarray(res.eigenvectors[:, c]), evecs[:, c], atol=1e-3)
    np.testing.assert_allclose(np.asarray(res.component_maps[c, ..., 0]), maps[c],
                               atol=2e-3 * np.abs(maps[c]).max())
  # Maps are zero off the mask; subtraction maps are x_t - x_0 on the mask.
  assert np.all(np.asarray(res.component_maps)[:, ~mask] == 0)
  np.testing.assert_allclose(np.asarray(res.subtraction_maps[..., 0]),
                             (images[..., 0] - images[:1, ..., 0]) * mask, atol=1e-5)
  # The covariance reference and the "centered" projection identity.
  cen = eigen_analysis(jnp.asarray(images), jnp.asarray(mask), jnp.asarray(ALPHAS),
                       project="centered")
  energy = np.sum(np.asarray(cen.component_maps, np.float64) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(energy, (mask.sum() - 1) * evals, atol=1e-4 * scale * mask.sum())
  np.testing.assert_allclose(np.trace(covariance_reference(images, mask)), evals.sum(),
                             rtol=1e-10)


@pytest.mark.parametrize("center", ["steps", "none"])
def test_other_centerings_match_numpy(center):
  images = _random_traversal(1)
  mask = _disk_mask()
  res = eigen_analysis(jnp.asarray(images), jnp.asarray(mask), jnp.asarray(ALPHAS),
                       center=center)
  cov = covariance_reference(images, mask, center)
  evals = np.sort(np.linalg.eigvalsh(cov))[::-1]
  np.testing.assert_allclose(np.asarray(res.eigenvalues), evals, atol=2e-5 * evals[0])
  if center == "steps":  # each voxel's mean over steps is removed: no constant component
    v = np.asarray(res.eigenvectors[:, :3])
    np.testing.assert_allclose(v.sum(0), 0.0, atol=1e-3)


def test_streaming_equals_in_memory():
  images = _random_traversal(2)
  mask = _disk_mask()
  args = (jnp.asarray(images), jnp.asarray(mask), jnp.asarray(ALPHAS))
  ref = eigen_analysis(*args, n_components=4)
  # lax.scan over voxel chunks (a chunk size that does not divide H*W, so padding is used).
  chk = eigen_analysis_chunked(*args, chunk_size=37, n_components=4)
  for name in ("eigenvalues", "explained_variance_ratio", "step_means", "n_voxels"):
    np.testing.assert_allclose(np.asarray(getattr(chk, name)), np.asarray(getattr(ref, name)),
                               rtol=1e-4, atol=1e-5 * float(ref.eigenvalues[0]))
  np.testing.assert_allclose(np.asarray(chk.eigenvectors[:, :3]),
                             np.asarray(ref.eigenvectors[:, :3]), atol=1e-4)
  np.testing.assert_allclose(np.asarray(chk.component_maps[:3]),
                             np.asarray(ref.component_maps[:3]), atol=1e-3)
  # Python iterator of chunks (as from a memmap): rows of the image, both passes.
  mm = np.asarray(images)
  chunks = [(mm[:, r0:r0 + 4], mask[r0:r0 + 4]) for r0 in range(0, H, 4)]
  out = np.zeros((H * W, 4), np.float32)
  st = eigen_analysis_stream(chunks, ALPHAS, n_components=4, out=out)
  assert st.component_maps is out
  np.testing.assert_allclose(np.asarray(st.eigenvalues), np.asarray(ref.eigenvalues),
                             rtol=1e-4, atol=1e-5 * float(ref.eigenvalues[0]))
  maps = out.T.reshape(4, H, W)
  np.testing.assert_allclose(maps[:3], np.asarray(ref.component_maps[:3, ..., 0]), atol=1e-3)
  # A callable source works too; a one-shot iterator is refused (two passes needed).
  st2 = eigen_analysis_stream(lambda: iter(chunks), ALPHAS, center="steps", n_components=2)
  ref2 = eigen_analysis(*args, center="steps", n_components=2)
  np.testing.assert_allclose(np.asarray(st2.eigenvalues), np.asarray(ref2.eigenvalues),
                             rtol=1e-4, atol=1e-5 * float(ref2.eigenvalues[0]))
  with pytest.raises(DataError, match="two passes"):
    eigen_analysis_stream(iter(chunks), ALPHAS)


def test_streaming_3d_volume_from_memmap(tmp_path):
  """A traversal of 3D volumes [T, X, Y, Z] read chunk by chunk from a memmap."""
  rng = np.random.default_rng(3)
  t, shape = 6, (8, 6, 5)
  a = np.linspace(0, 1, t)
  vol = (rng.normal(size=shape)[None] + a[:, None, None, None] * rng.normal(size=shape)[None]
         + 0.05 * rng.normal(size=(t,) + shape)).astype(np.float32)
  path = str(tmp_path / "trav.dat")
  mm = np.memmap(path, np.float32, "w+", shape=vol.shape)
  mm[:] = vol
  mm.flush()
  mm = np.memmap(path, np.float32, "r", shape=vol.shape)
  mask = np.ones(shape, bool)
  mask[0] = False
  st = eigen_analysis_stream(lambda: ((mm[:, x:x + 2], mask[x:x + 2]) for x in range(0, 8, 2)),
                             a, n_components=2)
  ref = eigen_analysis_chunked(jnp.asarray(vol), jnp.asarray(mask), jnp.asarray(a),
                               chunk_size=64, n_components=2)
  np.testing.assert_allclose(np.asarray(st.eigenvalues), np.asarray(ref.eigenvalues),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(st.component_maps.T.reshape((2,) + shape),
                             np.asarray(ref.component_maps), atol=1e-3)
  evals = np.sort(np.linalg.eigvalsh(covariance_reference(vol, mask)))[::-1]
  np.testing.assert_allclose(np.asarray(st.eigenvalues), evals, atol=1e-5 * evals[0])


def test_batched_equals_loop():
  # subjects x slices x directions = 2 x 2 x 2 traversals; masks per (subject, slice).
  imgs = np.stack([_random_traversal(10 + i) for i in range(8)]).reshape(2, 2, 2, T, H, W, 1)
  rng = np.random.default_rng(4)
  masks = rng.random((2, 2, 1, H, W)) < 0.7
  res = eigen_analysis_batched(jnp.asarray(imgs), jnp.asarray(masks), jnp.asarray(ALPHAS),
                               n_components=3)
  assert res.component_maps.shape == (2, 2, 2, 3, H, W, 1)
  assert res.eigenvalues.shape == (2, 2, 2, T)
  for i in range(2):
    for j in range(2):
      for k in range(2):
        one = eigen_analysis(jnp.asarray(imgs[i, j, k]), jnp.asarray(masks[i, j, 0]),
                             jnp.asarray(ALPHAS), n_components=3)
        got = jax.tree.map(lambda x: x[i, j, k], res)
        scale = float(one.eigenvalues[0])
        np.testing.assert_allclose(got.eigenvalues, one.eigenvalues, atol=1e-5 * scale)
        # The trailing (noise) components are nearly degenerate: compare the leading 3.
        np.testing.assert_allclose(got.eigenvectors[:, :3], one.eigenvectors[:, :3], atol=1e-4)
        np.testing.assert_allclose(got.corr_alpha[:3], one.corr_alpha[:3], atol=1e-4)
        np.testing.assert_allclose(got.component_maps, one.component_maps, atol=1e-3)
        np.testing.assert_allclose(got.subtraction_maps, one.subtraction_maps, atol=1e-6)
        np.testing.assert_allclose(got.step_means, one.step_means, atol=1e-6)
        assert float(got.n_voxels) == float(masks[i, j, 0].sum())
  with pytest.raises(ConfigError, match="broadcast"):
    eigen_analysis_batched(jnp.asarray(imgs), jnp.ones((3, H, W), bool), jnp.asarray(ALPHAS))


def _orthogonalize(v, others, mask):
  """v minus its foreground mean and its projections on ``others`` over the mask."""
  v = v - v[mask].mean()
  for o in others:
    oc = o - o[mask].mean()
    v = v - (v[mask] @ oc[mask]) / (oc[mask] @ oc[mask]) * oc
  return v


def test_planted_linear_change_is_component_2():
  """x_t = base + a_t * pattern + 4 a_t (1 - a_t) * nuisance + noise_t, a_t = alpha/50.

  Component 2 must be ~linear in alpha and its map must show the planted pattern,
  and beat the subtraction map of a middle step, which also carries the
  non-monotone nuisance (a bump in alpha, zero at both ends).  Centred component
  maps are mutually orthogonal over the foreground, so component 2 can only show
  the part of a change orthogonal to the component-1 (anatomy) map: the planted
  maps are orthogonalized to the anatomy (and to each other) over the mask.
  (Against the *final* subtraction map, which the bump does not reach, component 2
  is only on par at this noise level, so that is not claimed.)
  """
  rng = np.random.default_rng(0)
  mask = _disk_mask()
  a = ALPHAS / 50.0
  base = 0.6 * _blob(7.5, 7.5, 6.0) + 0.3 * rng.normal(size=(H, W))
  nuisance = 0.3 * _orthogonalize(_blob(10.5, 10.0, 2.0), [base], mask)
  pattern = 0.5 * _orthogonalize(_blob(5.0, 6.0, 2.5), [base, nuisance], mask)
  assert np.corrcoef(pattern[mask], _blob(5.0, 6.0, 2.5)[mask])[0, 1] > 0.8  # still a blob
  noise = 0.02 * rng.normal(size=(T, H, W))
  x = (base[None] + a[:, None, None] * pattern[None]
       + (4 * a * (1 - a))[:, None, None] * nuisance[None] + noise)
  images = jnp.asarray(x[..., None], jnp.float32)
  res = eigen_analysis(images, jnp.asarray(mask), jnp.asarray(ALPHAS))
  assert float(res.corr_alpha[1]) > 0.99  # |corr(v_2, alpha)|, sign-fixed to be >= 0
  v1 = np.asarray(res.eigenvectors[:, 0])
  assert v1.min() > 0 and v1.std() / v1.mean() < 0.05  # component 1: constant offset
  m = jnp.asarray(mask)
  truth = jnp.asarray(pattern)
  c2 = float(difference_map_correlation(res.component_maps[1], truth, m))
  sub_mid = float(difference_map_correlation(res.subtraction_maps[T // 2], truth, m))
  assert c2 > 0.95
  assert c2 > sub_mid + 0.2
  # The component-3 map carries the bump nuisance, which is not linear in alpha.
  c3n = float(difference_map_correlation(res.component_maps[2], jnp.asarray(nuisance), m))
  assert abs(c3n) > 0.9
  # Components 1 and 2 follow the constant and the linear polynomial of the schedule;
  # component 3 (the bump 4a(1 - a)) is mostly the quadratic.
  match = np.asarray(polynomial_match(res.eigenvectors, jnp.asarray(ALPHAS)))
  assert match.shape == (4,)
  assert match[0] > 0.99 and match[1] > 0.99 and match[2] > 0.9


def test_polynomial_match_is_the_cosine_with_the_schedule_polynomials():
  """NumPy float64 reference: Gram-Schmidt of 1, x, x^2, ... over the steps (x = alpha
  rescaled to [-1, 1]); the match is |cos| between component c and degree c - 1, for
  any batch shape."""
  rng = np.random.default_rng(3)
  x = 2.0 * (ALPHAS - ALPHAS.min()) / np.ptp(ALPHAS) - 1.0
  basis, _ = np.linalg.qr(np.vander(x.astype(np.float64), 4, increasing=True))
  vecs = np.linalg.qr(rng.normal(size=(2, 3, T, T)))[0]  # orthonormal columns
  want = np.abs(np.einsum("td,abtd->abd", basis, vecs[..., :4]))
  got = np.asarray(polynomial_match(jnp.asarray(vecs, jnp.float32), jnp.asarray(ALPHAS)))
  np.testing.assert_allclose(got, want, atol=1e-5)
  exact = np.asarray(polynomial_match(jnp.asarray(-basis, jnp.float32), jnp.asarray(ALPHAS), 3))
  np.testing.assert_allclose(exact, np.ones(3), atol=1e-5)  # sign-free, truncated to n


def test_difference_map_correlation_matches_numpy():
  rng = np.random.default_rng(6)
  a, b = rng.normal(size=(2, H, W))
  mask = _disk_mask()
  got = float(difference_map_correlation(jnp.asarray(a), jnp.asarray(b), jnp.asarray(mask)))
  np.testing.assert_allclose(got, np.corrcoef(a[mask], b[mask])[0, 1], atol=1e-5)
  # Off-mask values are ignored.
  a2 = np.where(mask, a, 100.0)
  got2 = float(difference_map_correlation(jnp.asarray(a2), jnp.asarray(b), jnp.asarray(mask)))
  np.testing.assert_allclose(got2, got, atol=1e-6)


def test_bad_options_raise():
  images = jnp.asarray(_random_traversal(7))
  with pytest.raises(ConfigError, match="center"):
    eigen_analysis(images, jnp.ones((H, W), bool), jnp.asarray(ALPHAS), center="mean")


def test_sign_convention_follows_the_schedule_polynomials():
  """Component c correlates positively with the degree-(c-1) polynomial of alpha,
  so even-shaped components (e.g. 3, quadratic) get a reproducible sign too."""
  from jaxlatent.analysis.eigen import schedule_polynomials, sign_fix
  alphas = jnp.linspace(0.0, 50.0, 15)
  poly = np.asarray(schedule_polynomials(alphas, 3))
  np.testing.assert_allclose(poly.T @ poly, np.eye(4), atol=1e-5)
  assert np.all(np.diff(poly[:, 1]) > 0)  # degree 1 increases with alpha
  rng = np.random.default_rng(0)
  flips = np.where(rng.random(4) < 0.5, -1.0, 1.0)
  fixed = np.asarray(sign_fix(jnp.asarray(poly * flips), alphas))
  np.testing.assert_allclose(fixed, poly, atol=1e-6)  # every flip undone


def test_sign_with_center_steps_is_not_left_to_rounding():
  """With center='steps' every component is orthogonal to the constant, so component 1
  takes its sign from the lowest polynomial it projects on (here the linear one): the
  single and the batched analysis agree, whatever their rounding."""
  from jaxlatent.analysis.eigen import schedule_polynomials
  images = jnp.asarray(_random_traversal(11))
  mask = jnp.asarray(_disk_mask())
  one = eigen_analysis(images, mask, jnp.asarray(ALPHAS), center="steps")
  both = eigen_analysis_batched(jnp.stack([images] * 3), mask, jnp.asarray(ALPHAS),
                                center="steps")
  poly = np.asarray(schedule_polynomials(jnp.asarray(ALPHAS), 2))
  v1 = np.asarray(one.eigenvectors)[:, 0]
  assert abs(poly[:, 0] @ v1) < 1e-3 and poly[:, 1] @ v1 > 1e-3
  for i in range(3):
    np.testing.assert_allclose(np.asarray(both.eigenvectors[i])[:, :3],
                               np.asarray(one.eigenvectors)[:, :3], atol=1e-4)


@pytest.mark.parametrize("offset", [1e4, "per_step"])
def test_large_mean_is_stable_in_float32(offset):
  """A large offset (common, or a different one per step) relative to the spread must
  not spoil the float32 covariance: the mean is removed before the Gram is formed."""
  images = _random_traversal(8)
  shift = 1e4 if offset == 1e4 else (2e3 * np.arange(T))[:, None, None, None]
  images = (images + shift).astype(np.float32)
  mask = _disk_mask()
  evals = np.sort(np.linalg.eigvalsh(covariance_reference(images, mask)))[::-1]
  args = (jnp.asarray(images), jnp.asarray(mask), jnp.asarray(ALPHAS))
  one = eigen_analysis(*args, project="centered")
  both = eigen_analysis_batched(jnp.stack([args[0]] * 2), jnp.asarray(mask), args[2],
                                project="centered")
  for res in (one, jax.tree.map(lambda a: a[1], both)):
    np.testing.assert_allclose(np.asarray(res.eigenvalues), evals, atol=1e-4 * evals[0])
    np.testing.assert_allclose(np.asarray(res.step_means),
                               images[..., 0][:, mask].astype(np.float64).mean(1), rtol=1e-6)
    energy = np.sum(np.asarray(res.component_maps[:3], np.float64) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(energy, (mask.sum() - 1) * evals[:3], rtol=1e-3)


@pytest.mark.parametrize("center,project", [("voxels", "raw"), ("voxels", "centered"),
                                            ("none", "raw")])
def test_batched_cpu_loop_equals_vmap_path(center, project):
  """eigen_analysis_batched runs a scan on CPU and a vmap elsewhere: same results."""
  from jaxlatent.analysis.eigen import _analyse, _analyse_loop, _analyse_vmap
  import functools
  imgs = np.stack([_random_traversal(20 + i) for i in range(6)])  # [6, T, H, W, 1]
  rng = np.random.default_rng(5)
  x = jnp.asarray(imgs.reshape(6, T, -1))
  m = jnp.asarray((rng.random((6, H * W)) < 0.7).astype(np.float32))
  analyse = functools.partial(_analyse, center=center, project=project, k=3)
  for batch in [(2, 3), (6,)]:
    kw = dict(analyse=analyse, batch=batch, vshape=(H, W, 1))
    loop = jax.jit(functools.partial(_analyse_loop, k=3, **kw))(x, m, jnp.asarray(ALPHAS))
    vmap = jax.jit(functools.partial(_analyse_vmap, **kw))(x, m, jnp.asarray(ALPHAS))
    for a, b in zip(loop, vmap):
      assert a.shape == b.shape and a.shape[:len(batch)] == batch
      np.testing.assert_allclose(np.asarray(a)[..., :3] if a.ndim == len(batch) + 2 else a,
                                 np.asarray(b)[..., :3] if b.ndim == len(batch) + 2 else b,
                                 rtol=1e-4, atol=1e-3)
  # No batch dims at all: the same as eigen_analysis.
  one = eigen_analysis(jnp.asarray(imgs[0]), jnp.asarray(_disk_mask()), jnp.asarray(ALPHAS),
                       center=center, project=project)
  got = eigen_analysis_batched(jnp.asarray(imgs[0]), jnp.asarray(_disk_mask()),
                               jnp.asarray(ALPHAS), center=center, project=project)
  assert jax.tree.map(jnp.shape, got) == jax.tree.map(jnp.shape, one)
  np.testing.assert_allclose(got.eigenvalues, one.eigenvalues, atol=1e-5 * float(one.eigenvalues[0]))
  np.testing.assert_allclose(got.component_maps[:3], one.component_maps[:3], atol=1e-3)
