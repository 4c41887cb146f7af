"""model.name='stylegan2': the official networks from config.model, and their training
with ADA (p in the train state, restored exactly from a checkpoint)."""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxlatent.errors import ConfigError, DataError
from jaxlatent.models import default_model_config, stylegan2, stylegan2_ada
from jaxlatent.training.checkpoint import Checkpointer, abstract_like
from jaxlatent.training.trainers import make_trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(size=16, augment=None, **model):
  c = ml_collections.ConfigDict()
  c.model = default_model_config("stylegan2")
  c.model.update(latent_dim=8, w_dim=8, num_mapping_layers=2, channel_base=64, channel_max=8,
                 r1_interval=2, pl_interval=2, **model)
  c.image_size = size
  c.batch_size = 8
  if augment is not None:
    c.augment = ml_collections.ConfigDict(augment)
  return c


def test_default_config_is_the_official_architecture():
  m = default_model_config("stylegan2")
  # Derived from the module fields: the official defaults.
  assert (m.architecture, m.discriminator.architecture) == ("skip", "resnet")
  assert tuple(m.resample_filter) == (1, 3, 3, 1) and m.conv_clamp is None
  assert (m.latent_dim, m.w_dim, m.num_mapping_layers, m.mapping_lr_multiplier) == (
      512, 512, 8, 0.01)
  assert default_model_config("stylegan2_simple").name == "stylegan2_simple"
  c = _config(32, conv_clamp=256.0, dtype="bfloat16")
  g, d = stylegan2.build_generator(c), stylegan2.build_discriminator(c)
  assert isinstance(g, stylegan2_ada.Generator) and isinstance(d, stylegan2_ada.Discriminator)
  assert (g.z_dim, g.img_resolution, g.conv_clamp, g.dtype) == (8, 32, 256.0, "bfloat16")
  assert (d.architecture, d.conv_clamp, d.channel_base, d.mbstd_group_size) == (
      "resnet", 256.0, 64, 4)
  assert g.num_ws == 2 * 5 - 2  # the official count at 32 px
  with pytest.raises(ConfigError, match=r"model\.discriminator\.nope: not a discriminator"):
    stylegan2.build_discriminator(_config(discriminator={"nope": 1}))
  with pytest.raises(ConfigError, match=r"model\.architecture='wide'"):
    stylegan2.build_generator(_config(architecture="wide"))


def test_generator_spaces_share_the_official_w_plus_layout():
  c = _config(16)
  variables = jax.jit(lambda k: stylegan2.init_generator(c, k))(jax.random.key(0))
  assert set(variables) == {"params", "buffers"}
  gz = stylegan2.make_generator(variables, c, "z", truncation_psi=0.5)
  gw = stylegan2.make_generator(variables, c, "w", truncation_psi=0.5)
  gp = stylegan2.make_generator(variables, c, "w+", truncation_psi=0.5)
  assert (gz.name, gw.latent_spec.shape, gp.latent_spec.shape) == (
      "stylegan2-z", (8,), (6, 8))
  render = jax.jit(lambda g, x: g.apply_fn(g.params, x))
  key = jax.random.key(1)
  wp = jax.jit(lambda g, k: g.sample_latents(k, 2))(gp, key)
  w = jax.jit(lambda g, k: g.sample_latents(k, 2))(gw, key)
  np.testing.assert_allclose(np.asarray(render(gw, w)),
                             np.asarray(render(gp, jnp.broadcast_to(w[:, None], wp.shape))),
                             atol=1e-5)
  # The noise hook of the projector: the stored const noise gives the same images.
  const = stylegan2.const_noise_buffers(variables)
  assert set(const) == set(stylegan2.noise_buffer_shapes(c))
  g = stylegan2.build_generator(c)
  via_buffers = jax.jit(lambda v, ws, nb: g.apply(v, ws, "none", nb, method="synthesize"))(
      variables, wp, const)
  np.testing.assert_allclose(np.asarray(via_buffers), np.asarray(render(gp, wp)), atol=1e-5)


def _batch(size, b=8, seed=0):
  return {"image": jnp.tanh(jax.random.normal(jax.random.key(seed), (b, size, size, 1)))}


def test_ada_p_adapts_is_checkpointed_and_resume_continues_identically(tmp_path):
  # p starts at 0.5 and moves by 8 * 1 / (0.08 * 1000) = 0.1 per step (interval 1).
  # 8 px (the smallest official network): the p update and its checkpoint do not
  # depend on the image size.
  c = _config(8, augment={"mode": "ada", "spec": "blit", "p": 0.5, "target": 0.6,
                          "interval": 1, "kimg": 0.08})
  trainer = make_trainer(c)
  step = jax.jit(trainer.train_step, static_argnames=("phase",))
  state = jax.jit(trainer.init)(jax.random.key(0))
  assert float(state.model_state["ada"]["p"]) == 0.5
  state, m = step(state, _batch(8), jax.random.key(1), phase=(False, False))
  p1 = float(state.model_state["ada"]["p"])
  assert abs(abs(p1 - 0.5) - 0.1) < 1e-6 and float(m["augment_p"]) == p1
  assert all(np.isfinite(float(m[k])) for k in trainer.loss_terms)
  # Save, restore into a fresh abstract state, and take the same next step.
  ckpt = Checkpointer(str(tmp_path / "ckpt"), keep=1)
  ckpt.save(1, state)
  ckpt.wait()
  abstract = abstract_like(jax.eval_shape(trainer.init, jax.random.key(0)),
                           jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  restored = ckpt.restore(1, abstract)
  ckpt.close()
  assert float(restored.model_state["ada"]["p"]) == p1
  a, _ = step(state, _batch(8, seed=2), jax.random.key(2), phase=(False, False))
  b, _ = step(restored, _batch(8, seed=2), jax.random.key(2), phase=(False, False))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert float(a.model_state["ada"]["p"]) != p1  # still adapting


def test_augmentation_reaches_every_image_d_sees_and_bad_settings_are_refused():
  # With p = 1 and a fixed x-flip, D's logits on the reals are those of flipped reals.
  c = _config(augment={"mode": "fixed", "spec": "blit", "p": 1.0, "rotate90": 0.0,
                       "xint": 0.0})
  from jaxlatent.training.trainers import stylegan2 as tr  # pylint: disable=g-import-not-at-top
  parts = make_trainer(c)  # builds; the parts are reached through the module function
  del parts
  kw = tr.augment_settings(c)
  assert kw["augment"].xflip == 1.0 and kw["ada_p0"] == 1.0 and "ada_target" not in kw
  with pytest.raises(ConfigError, match=r"augment\.mode"):
    make_trainer(_config(augment={"mode": "sometimes"}))
  with pytest.raises(ConfigError, match=r"augment\.bogus: unknown key"):
    make_trainer(_config(augment={"bogus": 1}))
  with pytest.raises(ConfigError, match=r"batch_size=6: must be a multiple of "
                     r"model\.mbstd_group_size=4"):
    cfg = _config()
    cfg.batch_size = 6
    make_trainer(cfg)
  # An RGB generator cannot be trained on (or analysed with) 1-channel slices.
  rgb = _config(img_channels=3)
  rgb.data = ml_collections.ConfigDict({"modality": "mr"})
  t = make_trainer(rgb)
  state = jax.jit(t.init)(jax.random.key(0))
  with pytest.raises(DataError, match=r"model\.img_channels=3: the generator makes 3-channel"):
    t.train_step(state, _batch(16), jax.random.key(1), phase=(False, False))
  with pytest.raises(DataError, match=r"data\.modality='mr'\) gives 1-channel slices"):
    t.generator(state)


def test_brain_config_enables_ada_and_tiny_is_cheap():
  sys.path.insert(0, ROOT)
  from configs import stylegan_brain, stylegan_tiny  # pylint: disable=g-import-not-at-top
  brain, tiny = stylegan_brain.get_config(), stylegan_tiny.get_config()
  assert brain.model.name == "stylegan2" and brain.model.conv_clamp == 256.0
  assert (brain.augment.mode, brain.augment.spec, brain.augment.target,
          brain.augment.interval, brain.augment.kimg) == ("ada", "bgc", 0.6, 4, 500.0)
  assert tiny.augment.mode == "ada" and tiny.augment.spec == "blit"
  from jaxlatent.training.trainers import stylegan2 as tr  # pylint: disable=g-import-not-at-top
  assert tr.augment_settings(brain)["ada_target"] == 0.6
