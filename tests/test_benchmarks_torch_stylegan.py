"""The PyTorch StyleGAN2 reference (benchmarks/torch_stylegan.py) is jaxlatent's network.

At 16x16 with tiny widths (different per resolution): equal parameter counts per
module, and with the JAX parameters copied over (perturbed, so zero-initialised
biases and noise strengths matter) the same mapping, synthesis (w+ with a distinct w
per layer, const noise), discriminator logits, R1 penalties and path lengths.  The
step's phase schedule, Adam settings and EMA follow the JAX trainer.  Skipped without
torch (the optional bench extra).
"""

from __future__ import annotations

import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxlatent.models import default_model_config  # noqa: E402
from jaxlatent.training import default_optim_config  # noqa: E402
from jaxlatent.models import stylegan2_simple as sg  # noqa: E402
from jaxlatent.training import losses  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "torch_stylegan", ROOT / "benchmarks" / "torch_stylegan.py")
ts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ts)

SIZE = 16


def _config(**model) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.image_size = SIZE
  c.model = default_model_config("stylegan2_simple")  # the architecture torch_stylegan.py ports
  c.model.latent_dim, c.model.w_dim = 8, 6
  c.model.num_mapping_layers = 2
  c.model.channel_base, c.model.channel_max = 64, 8  # 8 channels at 4x4 and 8x8, 4 at 16x16
  c.model.update(model)
  c.optim = default_optim_config("stylegan2_simple")
  return c


def _perturb(tree, key, scale=0.3):
  """Adds N(0, scale) to every leaf, so biases and noise strengths are not 0."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  return treedef.unflatten([x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def _size(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _torch_count(module, prefix: str) -> int:
  return sum(p.numel() for n, p in module.named_parameters() if n.startswith(prefix + "."))


def _jax_generator(cfg):
  g = sg.build_generator(cfg)
  v = sg.init_generator(cfg, jax.random.key(0))
  v = {**v, "params": _perturb(v["params"], jax.random.key(1)),
       "stats": {"mapping": {"w_avg": jax.random.normal(jax.random.key(2), (cfg.model.w_dim,))}}}
  return g, v


def _jax_discriminator(cfg, batch=6):
  d = sg.build_discriminator(cfg)
  p = d.init(jax.random.key(3), jnp.zeros((batch, SIZE, SIZE, 1)))["params"]
  return d, _perturb(p, jax.random.key(4), 0.1)


def _t(x) -> torch.Tensor:
  return torch.from_numpy(np.array(x))  # a writable copy


def _nchw(x) -> torch.Tensor:
  return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


def test_parameter_counts_match_per_module():
  cfg = _config()
  step = ts.StyleGAN2Step.from_config(cfg, batch=4)
  g_vars = jax.eval_shape(lambda: sg.init_generator(cfg, jax.random.key(0)))  # shapes only
  gp = g_vars["params"]
  assert ts.count_params(step.g) == _size(gp)
  assert _torch_count(step.g, "mapping") == _size(gp["mapping"])
  assert set(gp["synthesis"]) == {"b4", "b8", "b16"}
  for block, sub in gp["synthesis"].items():
    assert _torch_count(step.g, f"synthesis.{block}") == _size(sub), block
  # Buffers: w_avg and one const noise image per noise input.
  buffers = dict(step.g.named_buffers())
  assert buffers["mapping.w_avg"].numel() == _size(g_vars["stats"])
  assert sum(v.numel() for k, v in buffers.items() if k.endswith("noise_const")) == _size(
      g_vars["noise_const"])
  dp = jax.eval_shape(lambda: sg.build_discriminator(cfg).init(
      jax.random.key(1), jnp.zeros((4, SIZE, SIZE, 1)))["params"])
  assert ts.count_params(step.d) == _size(dp)
  assert set(dp) == {"b16", "b8", "conv", "fc", "out"}
  for name, sub in dp.items():
    assert _torch_count(step.d, name) == _size(sub), name


@pytest.mark.parametrize("resample,fused", [("bilinear", False), ("nearest", False),
                                            ("bilinear", True)])
def test_generator_matches_jax_with_copied_params(resample, fused):
  cfg = _config(resample=resample, fused_modconv=fused)
  g, v = _jax_generator(cfg)
  tg = ts.StyleGAN2Step.from_config(cfg, batch=3).g
  ts.generator_from_jax(tg, v)
  z = jax.random.normal(jax.random.key(5), (3, cfg.model.latent_dim))
  # Mapping with the w_avg update.
  ws, upd = g.apply(v, z, update_emas=True, method="map", mutable=["stats"])
  with torch.no_grad():
    tws = tg.mapping(_t(z), update_emas=True)
  np.testing.assert_allclose(tws.numpy(), np.asarray(ws), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(tg.mapping.w_avg.numpy(), np.asarray(upd["stats"]["mapping"]["w_avg"]),
                             rtol=1e-4, atol=1e-5)
  # Synthesis on w+ with a different w per layer (catches a wrong ws index) and const noise.
  wplus = jax.random.normal(jax.random.key(6), (3, g.num_ws, cfg.model.w_dim))
  img = g.apply(v, wplus, "const", method="synthesize")
  with torch.no_grad():
    timg = tg.synthesize(_t(wplus), "const")
  assert timg.shape == (3, 1, SIZE, SIZE)
  np.testing.assert_allclose(timg.numpy(), np.asarray(img).transpose(0, 3, 1, 2),
                             rtol=1e-4, atol=2e-5)
  assert float(jnp.std(img)) > 0.05  # not a saturated or constant image


@pytest.mark.parametrize("mbstd_channels,batch", [(1, 6), (2, 4)])
def test_discriminator_matches_jax_with_copied_params(mbstd_channels, batch):
  cfg = _config(mbstd_num_channels=mbstd_channels)
  d, p = _jax_discriminator(cfg, batch)
  td = ts.StyleGAN2Step.from_config(cfg, batch=batch).d
  ts.discriminator_from_jax(td, p)
  x = jax.random.uniform(jax.random.key(7), (batch, SIZE, SIZE, 1), jnp.float32, -1, 1)
  logits = d.apply({"params": p}, x)
  with torch.no_grad():
    tlogits = td(_nchw(x))
  assert tlogits.shape == (batch,)
  np.testing.assert_allclose(tlogits.numpy(), np.asarray(logits), rtol=1e-4, atol=1e-5)
  # R1: the double-backward path of the D reg phase.
  r1 = losses.r1_penalty(lambda im: d.apply({"params": p}, im), x)
  np.testing.assert_allclose(ts.r1_penalty(td, _nchw(x)).detach().numpy(), np.asarray(r1),
                             rtol=1e-3, atol=1e-6)


def test_path_lengths_match_jax():
  cfg = _config()
  g, v = _jax_generator(cfg)
  tg = ts.StyleGAN2Step.from_config(cfg, batch=2).g
  ts.generator_from_jax(tg, v)
  ws = jax.random.normal(jax.random.key(8), (2, g.num_ws, cfg.model.w_dim))
  noise = jax.random.normal(jax.random.key(9), (2, SIZE, SIZE, 1)) / SIZE
  lengths = losses.path_lengths(lambda w: g.apply(v, w, "const", method="synthesize"), ws, noise)
  tws = _t(ws).requires_grad_(True)
  tl = ts.path_lengths(lambda w: tg.synthesize(w, "const"), tws, _nchw(noise))
  np.testing.assert_allclose(tl.detach().numpy(), np.asarray(lengths), rtol=1e-3, atol=1e-6)


def test_step_phases_adam_and_ema_follow_the_jax_trainer():
  cfg = _config(pl_interval=2, r1_interval=4)
  step = ts.StyleGAN2Step.from_config(cfg, batch=4)
  # Adam per network with lr and betas rescaled by c / (c + 1), as jaxlatent.training.optim.adam.
  for opt, c in ((step.opt_g, 2), (step.opt_d, 4)):
    group = opt.param_groups[0]
    r = c / (c + 1)
    assert group["lr"] == pytest.approx(2.5e-3 * r)
    assert group["betas"] == pytest.approx((0.0, 0.99**r))
    assert group["eps"] == 1e-8
  before = [p.detach().clone() for p in step.d.parameters()]
  phases = []
  for _ in range(5):
    loss = step()
    assert math.isfinite(loss)
    phases.append(step.last_phases)
    if step.step == 1:  # beta = 0 on the first step (ramp-up): the EMA is G itself
      for e, p in zip(step.g_ema, step.g.parameters()):
        torch.testing.assert_close(e, p.detach())
      assert float(step.pl_mean) > 0
  assert phases == [("Gmain", "Greg", "Dreg"), ("Gmain",), ("Gmain", "Greg"), ("Gmain",),
                    ("Gmain", "Greg", "Dreg")]
  assert step.step == 5
  assert any(not torch.equal(a, b) for a, b in zip(before, step.d.parameters()))
  assert float(step.g.mapping.w_avg.abs().sum()) > 0  # updated by the G main phase
