"""Direction discovery on the library's own DCGAN (jaxlatent.models): the Generator seam.

The DCGAN here is freshly initialised, not trained: training one inside the test
would not fit the time budget.  A random DCGAN still maps distinct latents to
distinct images, so Voynov's reconstructor must reach an RCA far above chance.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxlatent.directions import (LeNetReconstructor, ResNetReconstructor, VoynovConfig,
                                  ganspace, run_voynov, sefa, sefa_directions)
from jaxlatent.models import dcgan, default_model_config
from jaxlatent.training import complete_train_config  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dcgan():
  c = ml_collections.ConfigDict()
  c.image_size = 16
  c.model = default_model_config("dcgan")
  c.model.gen_channels = 32
  c.model.latent_dim = 8
  # Untrained: Schön's initial weights (N(0, 0.02) convs) render near-constant images
  # with nothing to discover; the resample layers' initial images vary with z.
  c.model.arch = "resample"
  return dcgan.make_generator(dcgan.init_generator(c, jax.random.key(0)), c)


def test_voynov_on_dcgan_reaches_rca_well_above_chance(tiny_dcgan):
  cfg = VoynovConfig(num_directions=6, deformator="proj", reconstructor="mlp",
                     reconstructor_width=64, steps=100, batch_size=32, learning_rate=3e-3,
                     eval_every=50, eval_batches=2)
  res = run_voynov(tiny_dcgan, cfg, jax.random.key(1))
  assert res.rca > 3 * cfg.chance and not res.collapsed
  assert res.directions.vectors.shape == (6, 8) and res.directions.model == "dcgan"


def test_sefa_and_ganspace_on_dcgan(tiny_dcgan):
  kernel = tiny_dcgan.params["params"]["fc"]["kernel"]  # [8, 4*4*32], the projection (resample layers)
  d = sefa_directions(tiny_dcgan, num_components=4)
  ref, _ = sefa(kernel, 4)
  np.testing.assert_allclose(d.flat(), ref, atol=1e-6)
  g = ganspace(tiny_dcgan, jax.random.key(0), 4, num_samples=256,
               features_fn=lambda z: z @ kernel)  # the first layer's pre-norm activations
  assert g.vectors.shape == (4, 8) and g.meta["mode"] == "features"
  np.testing.assert_allclose(np.linalg.norm(g.flat(), axis=1), 1.0, atol=1e-5)
  assert np.all(np.diff(g.scores["explained_variance_ratio"]) <= 0)


@pytest.mark.parametrize("module", [LeNetReconstructor(5, 1),
                                    ResNetReconstructor(5, 8, stage_blocks=(1, 1))])
def test_conv_reconstructors_shapes(module):
  x = jax.random.normal(jax.random.key(0), (3, 16, 16, 2))  # an image pair stacked as channels
  params = jax.jit(module.init)(jax.random.key(1), x)
  logits, eps = jax.jit(module.apply)(params, x)
  assert logits.shape == (3, 5) and eps.shape == (3,)
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_lenet_cpu_convs_keep_params_outputs_and_gradients():
  """conv_impl='fast' (the CPU default) has the nn.Conv parameter tree and the same
  outputs and gradients as XLA's convs, so checkpoints load either way."""
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 2))
  fast, ref = LeNetReconstructor(5, 1, conv_impl="fast"), LeNetReconstructor(5, 1, conv_impl="xla")
  params = fast.init(jax.random.key(1), x)
  assert jax.tree.structure(params) == jax.tree.structure(ref.init(jax.random.key(1), x))
  assert set(params["params"]) == {"Conv_0", "Conv_1", "Conv_2", "GroupNorm_0",
                                   "GroupNorm_1", "GroupNorm_2", "logits", "shift"}

  def loss(module):
    def f(p, x):
      logits, eps = module.apply(p, x)
      return jnp.sum(jnp.tanh(logits)) + jnp.sum(eps ** 2)
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))

  (lf, gf), (lr, gr) = loss(fast)(params, x), loss(ref)(params, x)
  np.testing.assert_allclose(float(lf), float(lr), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(gf), jax.tree.leaves(gr)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)


def test_voynov_on_a_phantom_trained_dcgan(tmp_path):
  """Issue 5's end-to-end check: a DCGAN trained on thorax phantoms, then discovery."""
  import os
  import sys
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
  from configs import dcgan_tiny  # pylint: disable=g-import-not-at-top
  from jaxlatent.training import train_and_evaluate
  from jaxlatent.training.checkpoint import load_trained

  c = complete_train_config(dcgan_tiny.get_config())
  c.image_size, c.batch_size, c.steps = 16, 32, 120
  c.data.num_images = 256
  c.model.latent_dim, c.model.gen_channels, c.model.disc_channels = 8, 32, 32
  c.model.max_channels = 32
  # 120 steps at 16 px: the resample layers learn enough structure for discovery in
  # that budget (Schön's network at this scale is the validation study's subject).
  c.model.arch = "resample"
  c.fid_every = c.sample_every = 0
  c.ckpt_every, c.log_every = 120, 60
  c.data.cache_dir = str(tmp_path / "cache")
  train_and_evaluate(c, str(tmp_path / "run"))
  _, trainer, state = load_trained(str(tmp_path / "run"))
  gen = trainer.generator(state)
  assert gen.latent_spec.shape == (8,)
  cfg = VoynovConfig(num_directions=6, deformator="proj", reconstructor="mlp",
                     reconstructor_width=64, steps=100, batch_size=32, learning_rate=3e-3,
                     eval_every=50, eval_batches=2)
  res = run_voynov(gen, cfg, jax.random.key(2))
  assert res.rca > 3 * cfg.chance and not res.collapsed, res.rca
