"""StyleGAN2 (simplified variant, stylegan2_simple): shapes, the three latent spaces, and each trick against a slow reference."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator
from jaxlatent.models import default_model_config, stylegan2_simple as sg
from jaxlatent.training import losses


def _config(size=8, **model):
  c = ml_collections.ConfigDict()
  c.model = default_model_config("stylegan2_simple")
  c.model.update(latent_dim=8, w_dim=8, num_mapping_layers=2, channel_base=64, channel_max=8,
                 **model)
  c.image_size = size
  return c


@functools.lru_cache(maxsize=None)
def _gen_vars(size=8):
  c = _config(size)
  v = jax.jit(functools.partial(sg.init_generator, c))(jax.random.key(0))
  # A non-zero w_avg so that truncation is visible.
  v["stats"] = {"mapping": {"w_avg": jax.random.normal(jax.random.key(9), (8,))}}
  return c, v


_render = jax.jit(lambda g, lat: g(lat))


def test_generator_and_discriminator_shapes_and_latent_spaces():
  c, v = _gen_vars()
  assert set(v) == {"params", "stats", "noise_const"}
  assert sum(x.size for x in jax.tree.leaves(v["params"])) > 0
  num_ws = sg.num_ws_for(8)
  assert num_ws == 4 and sg.num_ws_for(32) == 8 and sg.num_ws_for(256) == 14
  z = jax.random.normal(jax.random.key(1), (3, 8))
  gz = sg.make_generator(v, c, "z")
  gw = sg.make_generator(v, c, "w")
  gwp = sg.make_generator(v, c, "w+")
  assert all(isinstance(g, Generator) for g in (gz, gw, gwp))
  assert gz.latent_spec.shape == (8,) and gw.latent_spec.shape == (8,)
  assert gwp.latent_spec.shape == (num_ws, 8) and gwp.latent_spec.space == "w+"
  x = _render(gz, z)
  assert x.shape == (3, 8, 8, 1) and float(jnp.max(jnp.abs(x))) <= 1.0
  # 'w' broadcasts to every layer: equal to w+ with the w tiled.
  w = gw.sample_latents(jax.random.key(2), 3)
  wp = gwp.sample_latents(jax.random.key(2), 3)
  assert w.shape == (3, 8) and wp.shape == (3, num_ws, 8)
  np.testing.assert_allclose(np.asarray(wp), np.repeat(np.asarray(w)[:, None], num_ws, 1),
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(_render(gw, w)), np.asarray(_render(gwp, wp)),
                             atol=1e-5)
  # z space = w+ space on the mapped z (the sample_fn draws z from N(0, I)).
  z2 = jax.random.normal(jax.random.key(2), (3, 8))
  np.testing.assert_allclose(np.asarray(_render(gz, z2)), np.asarray(_render(gwp, wp)),
                             atol=1e-5)
  d = sg.build_discriminator(c)
  dv = jax.jit(d.init)(jax.random.key(3), x)
  assert jax.jit(d.apply)(dv, x).shape == (3,)
  with pytest.raises(ConfigError, match="noise_mode"):
    sg.make_generator(v, c, "z", noise_mode="random")


def test_demodulated_weights_have_unit_norm_and_fused_equals_unfused():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  weight = jax.random.normal(k1, (3, 3, 4, 5))
  styles = 1.0 + jax.random.normal(k2, (2, 4))
  w = sg.modulate_weight(weight, styles, demodulate=True)  # [B, kh, kw, I, O]
  norms = np.sqrt(np.sum(np.asarray(w) ** 2, axis=(1, 2, 3)))
  np.testing.assert_allclose(norms, np.ones((2, 5)), rtol=1e-5)
  x = jax.random.normal(k3, (2, 6, 6, 4))
  for demod in (True, False):
    wm = sg.modulate_weight(weight, styles, demod)
    # Slow reference: one conv per sample with that sample's weights.
    ref = np.stack([np.asarray(jax.lax.conv_general_dilated(
        x[i:i + 1], wm[i], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))[0]
                    for i in range(2)])
    for fused in (True, False):
      y = sg.modulated_conv2d(x, weight, styles, demod, fused)
      np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-4)


def test_demod_coefs_match_modulated_weight_norms_with_gradients():
  """demod_coefs (a [B, I] @ [I, O] product) = the norms of the [B, kh, kw, I, O]
  modulated weights, values and gradients (weight and styles)."""
  k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
  weight = jax.random.normal(k1, (3, 3, 4, 5))
  styles = 1.0 + jax.random.normal(k2, (2, 4))
  cot = jax.random.normal(k3, (2, 5))

  def by_tensor(weight, styles):  # the formulation modulated_conv2d used before
    w = weight[None] * styles[:, None, None, :, None]
    return jax.lax.rsqrt(jnp.sum(jnp.square(w), axis=(1, 2, 3)) + 1e-8)

  for fn in (sg.demod_coefs, by_tensor):
    assert fn(weight, styles).shape == (2, 5)
  np.testing.assert_allclose(np.asarray(sg.demod_coefs(weight, styles)),
                             np.asarray(by_tensor(weight, styles)), rtol=1e-6)
  grads = [jax.grad(lambda w, s, f=f: jnp.vdot(f(w, s), cot), argnums=(0, 1))(weight, styles)
           for f in (sg.demod_coefs, by_tensor)]
  for new, old in zip(*grads):
    np.testing.assert_allclose(np.asarray(new), np.asarray(old), rtol=1e-5, atol=1e-7)
  # Through the whole modulated conv: gradients of x, weight and styles.
  x = jax.random.normal(k3, (2, 6, 6, 4))

  def old_modconv(x, weight, styles):
    y = sg._conv(x * styles[:, None, None, :], weight)
    return y * by_tensor(weight, styles)[:, None, None, :]

  gy = jax.random.normal(k1, (2, 6, 6, 5))
  g_new, g_old = [jax.grad(lambda *a, f=f: jnp.vdot(f(*a), gy), argnums=(0, 1, 2))(
      x, weight, styles) for f in (sg.modulated_conv2d, old_modconv)]
  for new, old in zip(g_new, g_old):
    np.testing.assert_allclose(np.asarray(new), np.asarray(old), rtol=1e-4, atol=1e-5)


def test_ema_beta_and_update_formula():
  # beta = 0.5 ** (batch / half_life): after half_life images the old weight halves.
  beta = float(losses.ema_beta(jnp.int32(1000), 32, 10000.0))
  np.testing.assert_allclose(beta, 0.5 ** (32 / 10000), rtol=1e-6)
  np.testing.assert_allclose(beta ** (10000 / 32), 0.5, rtol=1e-5)
  # Ramp-up caps the half-life at rampup * images seen; at step 0 the EMA copies params.
  np.testing.assert_allclose(float(losses.ema_beta(jnp.int32(10), 8, 1e4, 0.05)),
                             0.5 ** (8 / (10 * 8 * 0.05)), rtol=1e-6)
  assert float(losses.ema_beta(jnp.int32(0), 8, 1e4, 0.05)) == 0.0
  ema = {"a": jnp.array([1.0, 2.0])}
  p = {"a": jnp.array([3.0, -2.0])}
  out = losses.ema_update(ema, p, jnp.float32(0.9))
  np.testing.assert_allclose(np.asarray(out["a"]), 0.9 * np.array([1, 2]) + 0.1 * np.array([3, -2]),
                             rtol=1e-6)


def test_w_avg_tracking_and_truncation():
  c, v = _gen_vars()
  g = sg.build_generator(c)
  z = jax.random.normal(jax.random.key(4), (5, 8))
  ws, upd = g.apply(v, z, update_emas=True, method="map", mutable=["stats"])
  old = np.asarray(v["stats"]["mapping"]["w_avg"])
  np.testing.assert_allclose(np.asarray(upd["stats"]["mapping"]["w_avg"]),
                             0.995 * old + 0.005 * np.asarray(ws[:, 0]).mean(0), rtol=1e-5)
  # psi = 0: every z renders the w_avg image; psi = 1: no change.
  x0 = _render(sg.make_generator(v, c, "z", truncation_psi=0.0), z)
  gwp = sg.make_generator(v, c, "w+")
  ref = _render(gwp, jnp.broadcast_to(jnp.asarray(old), (1, 4, 8)))
  np.testing.assert_allclose(np.asarray(x0), np.repeat(np.asarray(ref), 5, 0), atol=1e-5)
  np.testing.assert_allclose(np.asarray(_render(sg.make_generator(v, c, "z", 1.0), z)),
                             np.asarray(_render(gwp, ws)), atol=1e-5)
  # psi = 0.5 halves the distance to w_avg.
  ws_half = g.apply(v, z, 0.5, method="map")
  np.testing.assert_allclose(np.asarray(ws_half), old + 0.5 * (np.asarray(ws) - old), atol=1e-5)


def test_style_mixing_takes_later_layers_from_second_z():
  ws1 = jnp.broadcast_to(jnp.arange(4.0)[:, None, None], (4, 6, 3))  # num_ws = 6
  ws2 = -1.0 - ws1
  cutoffs = set()
  for seed in range(12):
    out = np.asarray(sg.mix_styles(ws1, ws2, jax.random.key(seed), 1.0))
    from1 = np.all(out == np.asarray(ws1), axis=(0, 2))  # [num_ws]
    from2 = np.all(out == np.asarray(ws2), axis=(0, 2))
    c = int(np.argmin(from1))
    assert 1 <= c <= 5 and from1[:c].all() and from2[c:].all(), out[0, :, 0]
    cutoffs.add(c)
  assert len(cutoffs) > 1  # the cutoff is random
  np.testing.assert_array_equal(np.asarray(sg.mix_styles(ws1, ws2, jax.random.key(0), 0.0)),
                                np.asarray(ws1))


def _np_mbstd(x, group):
  n, h, w, c = x.shape
  out = np.zeros((n, h, w, 1), x.dtype)
  m = n // group
  for j in range(m):
    members = x[j::m]  # the group of sample j: j, j + m, ...
    s = np.sqrt(members.var(axis=0) + 1e-8).mean()
    out[j::m] = s
  return np.concatenate([x, out], -1)


def test_minibatch_std_matches_numpy_and_clamps_group():
  mb = sg.MinibatchStd(group_size=4)
  for n, group in ((8, 4), (6, 3), (2, 2), (5, 1)):
    x = np.random.default_rng(n).normal(size=(n, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(mb.apply({}, jnp.asarray(x))), _np_mbstd(x, group),
                               rtol=1e-5, atol=1e-6)


def test_r1_penalty_matches_per_sample_gradients():
  c = _config(8, mbstd_group_size=1)  # samples independent: per-sample grads are exact
  d = sg.build_discriminator(c)
  x = jnp.tanh(jax.random.normal(jax.random.key(0), (3, 8, 8, 1)))
  dv = jax.jit(d.init)(jax.random.key(1), x)
  d_fn = lambda imgs: d.apply(dv, imgs)
  r1 = np.asarray(jax.jit(lambda x: losses.r1_penalty(d_fn, x))(x))
  single = jax.jit(jax.grad(lambda xi: d_fn(xi[None])[0]))
  ref = np.array([np.sum(np.asarray(single(x[i])) ** 2) for i in range(3)])
  np.testing.assert_allclose(r1, ref, rtol=1e-4)
  assert np.all(ref > 0)


def test_path_lengths_match_per_sample_jacobian():
  c, v = _gen_vars()
  g = sg.build_generator(c)
  ws = g.apply(v, jax.random.normal(jax.random.key(5), (3, 8)), method="map")
  ws = ws + 0.1 * jax.random.normal(jax.random.key(6), ws.shape)  # distinct per layer
  noise = jax.random.normal(jax.random.key(7), (3, 8, 8, 1)) / 8.0
  synth = lambda w: g.apply(v, w, "const", method="synthesize")
  pl = np.asarray(jax.jit(lambda w: losses.path_lengths(synth, w, noise))(ws))
  # Slow reference: the full Jacobian of one sample's image w.r.t. its ws, J^T y.
  jac = jax.jit(jax.jacrev(lambda w: synth(w[None])[0]))
  ref = []
  for i in range(3):
    j = np.asarray(jac(ws[i]))  # [8, 8, 1, num_ws, w_dim]
    g_i = np.tensordot(np.asarray(noise[i]), j, axes=3)  # [num_ws, w_dim]
    ref.append(np.sqrt(np.mean(np.sum(g_i**2, axis=1))))
  np.testing.assert_allclose(pl, np.array(ref), rtol=1e-4)


def test_explicit_noise_buffers_override_and_const_noise_is_stored():
  c, v = _gen_vars()
  g = sg.build_generator(c)
  v = dict(v)
  params = jax.tree.map(lambda x: x, v["params"])
  for blk in params["synthesis"].values():  # make noise visible
    for name in ("conv0", "conv1"):
      if name in blk:
        blk[name]["noise_strength"] = jnp.float32(0.5)
  v["params"] = params
  ws = g.apply(v, jax.random.normal(jax.random.key(8), (2, 8)), method="map")
  bufs = sg.const_noise_buffers(v)
  assert {k: b.shape for k, b in bufs.items()} == sg.noise_buffer_shapes(c)
  synth = jax.jit(lambda v, ws, nb, mode: g.apply(v, ws, mode, nb, method="synthesize"),
                  static_argnums=3)
  const = synth(v, ws, None, "const")
  np.testing.assert_allclose(np.asarray(synth(v, ws, bufs, "none")), np.asarray(const), atol=1e-6)
  zeros = {k: jnp.zeros(b.shape) for k, b in bufs.items()}
  np.testing.assert_allclose(np.asarray(synth(v, ws, zeros, "const")),
                             np.asarray(synth(v, ws, None, "none")), atol=1e-6)
  assert not np.allclose(np.asarray(const), np.asarray(synth(v, ws, None, "none")))
