"""Our StyleGAN2-ADA networks compute the reference's function, weight for weight.

Tiny networks of our PyTorch port of NVlabs stylegan2-ada-pytorch (sg2ada_torch.py,
same state_dict names and shapes as the official networks) get random weights
(non-zero biases, noise strengths and w_avg); their state_dict is converted with
``generator_variables_from_state_dict`` and the mapped ws, images and logits must agree.
The FIR ops are checked against a slow NumPy definition. With ``SG2ADA_PYTORCH_DIR``
set to a checkout of NVlabs/stylegan2-ada-pytorch, the port itself is checked against
the official modules.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import sg2ada_torch as ref
from jaxlatent.errors import CheckpointError, ConfigError
from jaxlatent.models import stylegan2_ada as sg
from jaxlatent.ops import upfirdn2d as fir

ATOL = 1e-4  # max abs error of images (unit scale) and logits


def _max_err(ours, theirs) -> float:
  return float(np.max(np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))))


def _nchw(x) -> np.ndarray:
  return np.asarray(x).transpose(0, 3, 1, 2)


def _randomize(net: torch.nn.Module, seed: int) -> dict[str, np.ndarray]:
  """Random biases and noise strengths (weights are already N(0, 1)) and a random w_avg;
  returns the state_dict as numpy arrays."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in net.named_parameters():
      if name.endswith("bias") or name.endswith("noise_strength"):
        p.add_(0.3 * torch.randn(p.shape, generator=g))
    for name, b in net.named_buffers():
      if name.endswith("w_avg"):
        b.copy_(torch.randn(b.shape, generator=g))
  return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


# ----------------------------------------------------------------------------- FIR ops


def _np_upfirdn2d(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip_filter=False, gain=1.0):
  """The definition, one image ``[H, W]`` at a time: zero insertion, pad / crop, FIR, keep."""
  (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
  f = np.asarray(f, np.float64)
  if f.ndim == 1:
    f = np.outer(f, f)
  f = f * gain
  h, w = x.shape
  u = np.zeros((h * upy, w * upx))
  u[::upy, ::upx] = x
  u = np.pad(u, ((max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
  u = u[max(-py0, 0):u.shape[0] - max(-py1, 0), max(-px0, 0):u.shape[1] - max(-px1, 0)]
  k = f if flip_filter else f[::-1, ::-1]  # convolution = correlation with the flipped filter
  fh, fw = k.shape
  out = np.zeros((u.shape[0] - fh + 1, u.shape[1] - fw + 1))
  for i in range(out.shape[0]):
    for j in range(out.shape[1]):
      out[i, j] = np.sum(u[i:i + fh, j:j + fw] * k)
  return out[::downy, ::downx]


@pytest.mark.parametrize("f, up, down, pad, flip, gain", [
    ([1, 3, 3, 1], 2, 1, (2, 1, 2, 1), False, 4.0),  # upsample2d's padding
    ([1, 3, 3, 1], 1, 2, (1, 1, 1, 1), False, 1.0),  # downsample2d's padding
    ([[1, 2], [3, 4], [5, 7]], 2, 1, (1, -1, 0, 2), False, 1.0),  # non-square, cropping
    ([[1, 2, 0], [3, -4, 1]], (2, 1), (1, 2), (2, 0, -1, 1), True, 2.0),  # x != y, correlation
    ([1, 2, 3, 4, 4, 3, 2, 1], 1, 2, (3, 4, 3, 4), False, 1.0),  # 8 taps: separable
])
def test_upfirdn2d_matches_numpy_definition(f, up, down, pad, flip, gain):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 7, 6, 3)).astype(np.float32)
  fs = fir.setup_filter(f, normalize=False) if np.ndim(f) == 1 else np.asarray(f, np.float32)
  ours = np.asarray(fir.upfirdn2d(jnp.asarray(x), fs, up=up, down=down, padding=pad,
                                  flip_filter=flip, gain=gain))
  upxy = (up, up) if isinstance(up, int) else up
  downxy = (down, down) if isinstance(down, int) else down
  for n in range(2):
    for c in range(3):
      want = _np_upfirdn2d(x[n, :, :, c], f, upxy, downxy, pad, flip, gain)
      np.testing.assert_allclose(ours[n, :, :, c], want, rtol=1e-5, atol=1e-4)


def test_resampling_shapes_and_dc_gain():
  f = fir.setup_filter([1, 3, 3, 1])
  assert f.shape == (4, 4) and abs(float(f.sum()) - 1) < 1e-6
  x = jnp.ones((1, 8, 8, 2))
  up, down, same = fir.upsample2d(x, f), fir.downsample2d(x, f), fir.filter2d(x, f)
  assert up.shape == (1, 16, 16, 2) and down.shape == (1, 4, 4, 2) and same.shape == x.shape
  # A constant stays constant away from the zero-padded border.
  np.testing.assert_allclose(up[0, 2:-2, 2:-2], 1.0, atol=1e-6)
  np.testing.assert_allclose(down[0, 1:-1, 1:-1], 1.0, atol=1e-6)


@pytest.mark.parametrize("k, up, down, groups, flip_weight", [
    (3, 2, 1, 1, False), (3, 2, 1, 2, True), (3, 1, 2, 1, True), (1, 2, 1, 1, False),
    (1, 1, 2, 2, True), (3, 1, 1, 2, True), (3, 2, 2, 1, False)])
def test_conv2d_resample_matches_port(k, up, down, groups, flip_weight):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
  w = rng.normal(size=(6, 4 // groups, k, k)).astype(np.float32)  # reference layout
  f = fir.setup_filter([1, 3, 3, 1])
  ours = fir.conv2d_resample(jnp.asarray(x), jnp.asarray(w.transpose(2, 3, 1, 0)), f, up=up,
                             down=down, padding=k // 2, groups=groups, flip_weight=flip_weight)
  theirs = ref.conv2d_resample(torch.from_numpy(_nchw(x).copy()), torch.from_numpy(w),
                               torch.from_numpy(f), up, down, k // 2, groups, flip_weight)
  assert _nchw(ours).shape == tuple(theirs.shape)
  assert _max_err(_nchw(ours), theirs.numpy()) < 1e-4


def test_bias_act_gain_and_clamp():
  x = jnp.asarray([[-3.0, -0.5, 0.5, 3.0]])
  b = jnp.asarray([0.0, 0.0, 1.0, 0.0])
  y = fir.bias_act(x, b, act="lrelu", gain=np.sqrt(2) * 2, clamp=4.0)
  want = np.clip(np.where(np.array([-3, -0.5, 1.5, 3]) >= 0, 1.0, 0.2) *
                 np.array([-3, -0.5, 1.5, 3]) * np.sqrt(2) * 2, -4, 4)
  np.testing.assert_allclose(y[0], want, rtol=1e-6)
  assert fir.activation_gain("lrelu") == pytest.approx(np.sqrt(2))


# ----------------------------------------------------------------------------- networks

G_KWARGS = {
    "gray32_skip": dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=1,
                        mapping_kwargs=dict(num_layers=2),
                        synthesis_kwargs=dict(channel_base=1024, channel_max=64)),
    "rgb64_skip_clamp": dict(z_dim=16, c_dim=0, w_dim=24, img_resolution=64, img_channels=3,
                             mapping_kwargs=dict(num_layers=3, w_avg_beta=0.9),
                             synthesis_kwargs=dict(channel_base=1024, channel_max=32,
                                                   num_fp16_res=2, conv_clamp=0.5)),
    "rgb32_resnet_cond": dict(z_dim=8, c_dim=3, w_dim=16, img_resolution=32, img_channels=3,
                              mapping_kwargs=dict(num_layers=2, embed_features=8),
                              synthesis_kwargs=dict(channel_base=512, channel_max=32,
                                                    architecture="resnet")),
}


def _torch_g(kwargs, seed):
  torch.manual_seed(seed)
  g = ref.Generator(**kwargs).eval()
  return g, _randomize(g, seed + 1)


@pytest.mark.parametrize("name", sorted(G_KWARGS))
def test_generator_matches_port(name):
  kwargs = G_KWARGS[name]
  g_t, sd = _torch_g(kwargs, seed=len(name))
  config = sg.generator_config_from_kwargs(kwargs)
  g = sg.Generator(**config)
  assert g.num_ws == g_t.num_ws
  variables = sg.generator_variables_from_state_dict(sd, config)
  rng = np.random.default_rng(2)
  z = rng.normal(size=(3, kwargs["z_dim"])).astype(np.float32)
  c = rng.normal(size=(3, kwargs["c_dim"])).astype(np.float32) if kwargs["c_dim"] else None
  zt, ct = torch.from_numpy(z), None if c is None else torch.from_numpy(c)
  cutoff = 3

  @jax.jit
  def run(variables, z, c):
    out = {}
    for psi, cut in ((1.0, None), (0.7, None), (0.7, cutoff)):
      out[f"ws_{psi}_{cut}"] = g.apply(variables, z, c, psi, cut, method=sg.Generator.map)
    ws = out["ws_0.7_None"]
    for mode in ("const", "none"):
      out[f"img_{mode}"] = g.apply(variables, ws, mode, method=sg.Generator.synthesize)
    return out

  ours = run(variables, z, c)
  with torch.no_grad():
    for psi, cut in ((1.0, None), (0.7, None), (0.7, cutoff)):
      ws_t = g_t.mapping(zt, ct, truncation_psi=psi, truncation_cutoff=cut)
      assert _max_err(ours[f"ws_{psi}_{cut}"], ws_t.numpy()) < 1e-5, (psi, cut)
    for mode in ("const", "none"):
      img_t = g_t(zt, ct, truncation_psi=0.7, noise_mode=mode).numpy()
      assert _nchw(ours[f"img_{mode}"]).shape == img_t.shape
      err = _max_err(_nchw(ours[f"img_{mode}"]), img_t)
      assert err <= ATOL, (mode, err)
  # The noise is used: 'const' and 'none' differ.
  assert _max_err(ours["img_const"], ours["img_none"]) > 1e-3
  if kwargs["synthesis_kwargs"].get("conv_clamp") is not None:
    # The clamp is active at this value: the network without it computes something else.
    g_free = ref.Generator(**dict(kwargs, synthesis_kwargs=dict(
        kwargs["synthesis_kwargs"], conv_clamp=None))).eval()
    g_free.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    with torch.no_grad():
      free = g_free(zt, ct, truncation_psi=0.7, noise_mode="const").numpy()
    assert _max_err(free, _nchw(ours["img_const"])) > 1e-2


@pytest.mark.parametrize("up, demodulate, fused", [
    (1, True, False), (2, True, False), (2, True, True), (1, False, True), (1, False, False)])
def test_modulated_conv2d_matches_port(up, demodulate, fused):
  rng = np.random.default_rng(5)
  x = rng.normal(size=(3, 6, 6, 4)).astype(np.float32)
  w = rng.normal(size=(5, 4, 3, 3)).astype(np.float32)  # reference layout
  styles = rng.normal(size=(3, 4)).astype(np.float32)
  f = fir.setup_filter([1, 3, 3, 1])
  ours = sg.modulated_conv2d(jnp.asarray(x), jnp.asarray(w.transpose(2, 3, 1, 0)),
                             jnp.asarray(styles), up=up, padding=1, resample_filter=f,
                             demodulate=demodulate, flip_weight=up == 1, fused_modconv=fused)
  theirs = ref.modulated_conv2d(torch.from_numpy(_nchw(x).copy()), torch.from_numpy(w),
                                torch.from_numpy(styles), up=up, padding=1,
                                resample_filter=torch.from_numpy(f), demodulate=demodulate,
                                flip_weight=up == 1, fused_modconv=True)
  assert _max_err(_nchw(ours), theirs.numpy()) < 1e-4 * max(1.0, float(theirs.abs().max()))


def test_bfloat16_compute_dtype():
  """dtype='bfloat16' runs the convs in bfloat16 and stays near the float32 result."""
  x, w = jax.random.normal(jax.random.key(0), (2, 4, 4, 8)), jnp.ones((2, 6))
  layer = sg.SynthesisLayer(8, resolution=8, up=2)
  v = layer.init({"params": jax.random.key(1), "noise": jax.random.key(2)}, x, w)
  y32 = layer.apply(v, x, w, "const")
  y16 = sg.SynthesisLayer(8, resolution=8, up=2, dtype="bfloat16").apply(v, x, w, "const")
  assert y32.dtype == jnp.float32 and y16.dtype == jnp.bfloat16
  assert 0 < _max_err(y16, y32) < 0.05 * float(jnp.abs(y32).max())


def test_w_avg_update_and_random_noise():
  kwargs = G_KWARGS["gray32_skip"]
  g_t, sd = _torch_g(kwargs, seed=5)
  config = sg.generator_config_from_kwargs(kwargs)
  variables = sg.generator_variables_from_state_dict(sd, config)
  z = np.random.default_rng(3).normal(size=(4, kwargs["z_dim"])).astype(np.float32)
  # w_avg moves only when asked, with 'buffers' mutable, as the reference's training mode.
  g = sg.Generator(**config)
  _, updated = g.apply(variables, z, method=sg.Generator.map, update_w_avg=True,
                       mutable=["buffers"])
  g_t.train()
  with torch.no_grad():
    g_t.mapping(torch.from_numpy(z), None)
  assert _max_err(updated["buffers"]["mapping"]["w_avg"], g_t.mapping.w_avg.numpy()) < 1e-5
  assert _max_err(updated["buffers"]["mapping"]["w_avg"], sd["mapping.w_avg"]) > 1e-3
  same = g.apply(variables, z, method=sg.Generator.map, update_w_avg=False, mutable=["buffers"])[1]
  assert _max_err(same["buffers"]["mapping"]["w_avg"], sd["mapping.w_avg"]) == 0

  # Random noise comes from the 'noise' rng: same key, same output; another key differs.
  layer = sg.SynthesisLayer(4, resolution=8)
  x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((2, 5))
  lv = layer.init({"params": jax.random.key(0), "noise": jax.random.key(0)}, x, w)
  lv = {"params": dict(lv["params"], noise_strength=jnp.ones(())), "buffers": lv["buffers"]}
  a, a2, b = (layer.apply(lv, x, w, "random", rngs={"noise": jax.random.key(k)})
              for k in (1, 1, 2))
  assert _max_err(a, a2) == 0 and _max_err(a, b) > 1e-3
  assert _max_err(a, layer.apply(lv, x, w, "none")) > 1e-3


D_KWARGS = {
    "gray32_resnet": dict(c_dim=0, img_resolution=32, img_channels=1, channel_base=1024,
                          channel_max=64, epilogue_kwargs=dict(mbstd_group_size=2)),
    "rgb64_resnet_clamp_cond": dict(c_dim=3, img_resolution=64, img_channels=3,
                                    channel_base=1024, channel_max=32, conv_clamp=0.5,
                                    num_fp16_res=2, mapping_kwargs=dict(num_layers=2)),
    "gray32_skip": dict(c_dim=0, img_resolution=32, img_channels=1, channel_base=512,
                        channel_max=32, architecture="skip",
                        epilogue_kwargs=dict(mbstd_group_size=None, mbstd_num_channels=2)),
    "rgb32_orig": dict(c_dim=0, img_resolution=32, img_channels=3, channel_base=512,
                       channel_max=32, architecture="orig",
                       epilogue_kwargs=dict(mbstd_num_channels=0)),
}


@pytest.mark.parametrize("name", sorted(D_KWARGS))
def test_discriminator_matches_port(name):
  kwargs = D_KWARGS[name]
  torch.manual_seed(len(name))
  d_t = ref.Discriminator(**kwargs).eval()
  sd = _randomize(d_t, len(name) + 1)
  config = sg.discriminator_config_from_kwargs(kwargs)
  variables = sg.discriminator_variables_from_state_dict(sd, config)
  r, ch = kwargs["img_resolution"], kwargs["img_channels"]
  rng = np.random.default_rng(4)
  img = rng.uniform(-1, 1, size=(4, r, r, ch)).astype(np.float32)
  c = rng.normal(size=(4, kwargs["c_dim"])).astype(np.float32) if kwargs["c_dim"] else None
  d = sg.Discriminator(**config)
  logits = jax.jit(d.apply)(variables, img, c)
  with torch.no_grad():
    want = d_t(torch.from_numpy(_nchw(img).copy()),
               None if c is None else torch.from_numpy(c)).numpy()
  assert logits.shape == want.shape == (4, 1)
  assert _max_err(logits, want) <= ATOL


# ----------------------------------------------------------------------------- conversion


def test_state_dict_names_round_trip_and_errors():
  kwargs = G_KWARGS["rgb32_resnet_cond"]
  _, sd = _torch_g(kwargs, seed=7)
  config = sg.generator_config_from_kwargs(kwargs)
  variables = sg.generator_variables_from_state_dict(sd, config)
  back = sg.state_dict_from_variables(variables)
  assert sorted(back) == sorted(sd)
  assert all(np.array_equal(back[k], sd[k]) for k in sd)
  for key in ("mapping.embed.weight", "synthesis.b8.skip.weight",
              "synthesis.b8.conv0.resample_filter",
              "synthesis.b4.conv1.noise_const", "synthesis.b32.torgb.affine.bias"):
    assert key in sd

  missing = dict(sd)
  del missing["synthesis.b16.conv1.affine.weight"]
  with pytest.raises(CheckpointError, match=r"synthesis\.b16\.conv1\.affine\.weight"):
    sg.generator_variables_from_state_dict(missing, config)
  extra = dict(sd, **{"synthesis.b64.conv0.weight": np.zeros((1,), np.float32)})
  with pytest.raises(CheckpointError, match=r"synthesis\.b64\.conv0\.weight"):
    sg.generator_variables_from_state_dict(extra, config)
  bad = dict(sd, **{"synthesis.b8.conv0.weight": np.zeros((32, 31, 3, 3), np.float32)})
  with pytest.raises(CheckpointError, match=r"conv0\.weight.*\[32, 31, 3, 3\].*\[32, 32, 3, 3\]"):
    sg.generator_variables_from_state_dict(bad, config)
  with pytest.raises(CheckpointError, match="synthesis_kwargs.*'channels_first'"):
    sg.generator_config_from_kwargs(dict(kwargs, synthesis_kwargs={"channels_first": True}))
  with pytest.raises(CheckpointError, match="'img_resolution' is missing"):
    sg.generator_config_from_kwargs({k: v for k, v in kwargs.items() if k != "img_resolution"})


@pytest.mark.parametrize("res, arch", [(4, "skip"), (16, "orig"), (128, "resnet")])
def test_layout_matches_port_at_other_sizes(res, arch):
  """Every tensor name and shape of the reference networks, at sizes not run above."""
  g_kwargs = dict(z_dim=4, c_dim=0, w_dim=4, img_resolution=res, img_channels=2,
                  synthesis_kwargs=dict(channel_base=256, channel_max=8, architecture=arch))
  g_t = ref.Generator(**g_kwargs)
  config = sg.generator_config_from_kwargs(g_kwargs)
  assert sg.Generator(**config).num_ws == g_t.num_ws == 2 * int(np.log2(res)) - 2
  sd = {k: v.numpy() for k, v in g_t.state_dict().items()}
  back = sg.state_dict_from_variables(sg.generator_variables_from_state_dict(sd, config))
  assert sorted(back) == sorted(sd)
  if res > 4:
    d_kwargs = dict(c_dim=2, img_resolution=res, img_channels=2, channel_base=256,
                    channel_max=8, architecture=arch)
    sd = {k: v.numpy() for k, v in ref.Discriminator(**d_kwargs).state_dict().items()}
    d_config = sg.discriminator_config_from_kwargs(d_kwargs)
    assert sorted(sg.state_dict_from_variables(
        sg.discriminator_variables_from_state_dict(sd, d_config))) == sorted(sd)


def test_make_generator_spaces_agree():
  config = dict(z_dim=8, w_dim=8, img_resolution=8, img_channels=1, channel_base=64,
                channel_max=8, mapping_num_layers=2)
  g = sg.Generator(**config)
  variables = jax.jit(g.init)({"params": jax.random.key(0), "noise": jax.random.key(1)},
                              jnp.ones((1, 8)))
  z = jax.random.normal(jax.random.key(2), (2, 8))

  @jax.jit
  def run(variables, z, key):
    gz = sg.make_generator(variables, config, "z", truncation_psi=0.5)
    gw = sg.make_generator(variables, config, "w+", truncation_psi=0.5)
    ws = g.apply(variables, z, None, 0.5, method=sg.Generator.map)
    w1 = sg.make_generator(variables, config, "w", truncation_psi=0.5).sample_latents(key, 5)
    return gz(z), gw(ws), gw.sample_latents(key, 5), w1

  img_z, img_w, wplus, w1 = run(variables, z, jax.random.key(3))
  assert img_z.shape == (2, 8, 8, 1)
  np.testing.assert_allclose(img_z, img_w, atol=1e-6)
  assert wplus.shape == (5, g.num_ws, 8) and w1.shape == (5, 8)
  np.testing.assert_allclose(w1, wplus[:, 0], atol=1e-6)  # same key: the same mapped z
  with pytest.raises(ConfigError, match="noise_mode"):
    sg.make_generator(variables, config, noise_mode="random")
  with pytest.raises(ConfigError, match="c_dim=3"):
    sg.make_generator(variables, dict(config, c_dim=3))


@pytest.mark.skipif(not os.environ.get("SG2ADA_PYTORCH_DIR"),
                    reason="set SG2ADA_PYTORCH_DIR to a stylegan2-ada-pytorch checkout")
def test_port_matches_official_code(monkeypatch):
  """Optional: our port against NVlabs' own networks.py (its CPU reference ops, float32).

  The official modules must accept the port's state_dict strictly (same names and
  shapes) and compute bit-identical outputs.
  """
  monkeypatch.syspath_prepend(os.environ["SG2ADA_PYTORCH_DIR"])
  try:
    import requests  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:  # dnnlib imports it for downloads only
    monkeypatch.setitem(sys.modules, "requests", types.ModuleType("requests"))
  networks = importlib.import_module("training.networks")
  for name, kwargs in G_KWARGS.items():
    port, sd = _torch_g(kwargs, seed=len(name))
    official = networks.Generator(**kwargs).eval()
    official.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    z = torch.randn([2, kwargs["z_dim"]])
    c = torch.randn([2, kwargs["c_dim"]])
    with torch.no_grad():
      want = official(z, c, truncation_psi=0.7, truncation_cutoff=3, noise_mode="const",
                      force_fp32=True)
      got = port(z, c if kwargs["c_dim"] else None, truncation_psi=0.7, truncation_cutoff=3,
                 noise_mode="const")
    assert torch.equal(want, got), name
  for name, kwargs in D_KWARGS.items():
    port = ref.Discriminator(**kwargs).eval()
    sd = _randomize(port, len(name))
    official = networks.Discriminator(**kwargs).eval()
    official.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    img = torch.rand([4, kwargs["img_channels"]] + [kwargs["img_resolution"]] * 2) * 2 - 1
    c = torch.randn([4, kwargs["c_dim"]])
    with torch.no_grad():
      want = official(img, c, force_fp32=True)
      got = port(img, c if kwargs["c_dim"] else None)
    assert torch.equal(want, got), name
