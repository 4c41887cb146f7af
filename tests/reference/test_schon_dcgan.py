"""Our DCGAN computes Schön et al.'s network and training step, weight for weight.

Our PyTorch port of their ``Models/DCGAN.py`` and ``Training/TrainGAN.py``
(schon_torch.py) gets random weights and BatchNorm statistics; its state_dict is
converted with ``dcgan_variables_from_torch``; images, logits (with the same instance
noise), BatchNorm statistics and one Adam step of D and G must agree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

import schon_torch as ref
from jaxlatent.models import dcgan, default_model_config
from jaxlatent.training.optim import default_optim_config
from jaxlatent.training.trainers import dcgan as dcgan_trainer
from jaxlatent.training.trainers import make_trainer

ATOL = 1e-4


def _config(size: int, c4: int) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = default_model_config("dcgan")
  c.model.update(gen_channels=c4, disc_channels=c4, max_channels=c4, latent_dim=8,
                 instance_noise=True, steps_per_epoch=1)
  c.optim = default_optim_config("dcgan")
  c.image_size = size
  return c


def _nets(size: int, c4: int, seed: int):
  torch.manual_seed(seed)
  g, d = ref.Generator(size, 8, c4), ref.Discriminator(size, c4)
  g.apply(ref.dcgan_weights_init)
  d.apply(ref.dcgan_weights_init)
  with torch.no_grad():  # running statistics away from (0, 1), as after training
    for net in (g, d):
      for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
          m.bias.normal_(0.0, 0.1)
          m.running_mean.normal_(0.0, 0.1)
          m.running_var.uniform_(0.5, 2.0)
  return g, d


def _numpy(state_dict) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy().copy() for k, v in state_dict.items()}


def _nchw(x) -> torch.Tensor:
  return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


def _close(ours, theirs, atol=ATOL):
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       rtol=1e-4, atol=atol), ours, theirs)


@pytest.mark.parametrize("size,c4", [(32, 16), (64, 16), (128, 32)])
def test_generator_and_discriminator_match_the_reference(size, c4):
  tg, td = _nets(size, c4, seed=size)
  gv = dcgan.dcgan_variables_from_torch(_numpy(tg.state_dict()), "generator")
  dv = dcgan.dcgan_variables_from_torch(_numpy(td.state_dict()), "discriminator")
  config = _config(size, c4)
  g, d = dcgan.build_generator(config), dcgan.build_discriminator(config)
  z = np.random.default_rng(size).normal(size=(4, 8)).astype(np.float32)
  zt = torch.from_numpy(z)[:, :, None, None]

  # Eval mode: running statistics (the Generator that analyze.py uses).
  tg.eval(), td.eval()
  with torch.no_grad():
    img_t = tg(zt).numpy()
  img = dcgan.make_generator(gv, config)(jnp.asarray(z))
  _close(np.asarray(img).transpose(0, 3, 1, 2), img_t)
  x = jnp.asarray(img)
  noise = jax.random.normal(jax.random.key(3), x.shape)  # what discriminator_input draws
  with torch.no_grad():
    logit_t = td(_nchw(x), _nchw(noise)).numpy().reshape(-1)
  x_noisy = dcgan_trainer.discriminator_input(x, jax.random.key(3), jnp.float32(0.1))
  _close(d.apply(dv, x_noisy), logit_t)

  # Training mode: batch statistics, and the running statistics they update.
  tg.train(), td.train()
  img_t = tg(zt)
  img, g_upd = g.apply(gv, jnp.asarray(z), train=True, mutable=["batch_stats"])
  _close(np.asarray(img).transpose(0, 3, 1, 2), img_t.detach().numpy())
  logit_t = td(img_t.detach()).detach().numpy().reshape(-1)
  logit, d_upd = d.apply(dv, img, train=True, mutable=["batch_stats"])
  _close(logit, logit_t, atol=1e-3)  # BatchNorm over 4 images amplifies rounding
  _close(g_upd["batch_stats"],
         dcgan.dcgan_variables_from_torch(_numpy(tg.state_dict()), "generator")["batch_stats"])
  _close(d_upd["batch_stats"],
         dcgan.dcgan_variables_from_torch(_numpy(td.state_dict()),
                                          "discriminator")["batch_stats"], atol=1e-3)


def test_one_training_step_matches_the_reference():
  """D then G with Adam(2e-4, 0.5): same batch, z, smoothed labels and instance noise."""
  size, c4, b = 16, 16, 8
  tg, td = _nets(size, c4, seed=7)
  config = _config(size, c4)
  trainer = make_trainer(config)
  state = trainer.init(jax.random.key(0))
  gv = dcgan.dcgan_variables_from_torch(_numpy(tg.state_dict()), "generator")
  dv = dcgan.dcgan_variables_from_torch(_numpy(td.state_dict()), "discriminator")
  state = state.replace(params={"generator": gv["params"], "discriminator": dv["params"]},
                        model_state={"generator": gv["batch_stats"],
                                     "discriminator": dv["batch_stats"]})
  real = jnp.tanh(jax.random.normal(jax.random.key(1), (b, size, size, 1)))
  key = jax.random.key(2)
  new_state, metrics = jax.jit(trainer.train_step)(state, {"image": real}, key)

  # The draws train_step makes from its key, handed to the PyTorch loop.
  k_z, k_label, k_real, k_fake, k_g = jax.random.split(key, 5)
  z = jax.random.normal(k_z, (b, 8))
  labels = dcgan_trainer.real_labels(dcgan.training_settings(config), k_label, b)
  assert np.all((labels >= 0.9) & (labels < 1.0))
  noises = [_nchw(jax.random.normal(k, real.shape)) for k in (k_real, k_fake, k_g)]
  tg.train(), td.train()
  opt_g = torch.optim.Adam(tg.parameters(), lr=2e-4, betas=(0.5, 0.999))
  opt_d = torch.optim.Adam(td.parameters(), lr=2e-4, betas=(0.5, 0.999))
  d_loss, g_loss = ref.gan_train_step(tg, td, opt_g, opt_d, _nchw(real),
                                      torch.from_numpy(np.array(z))[:, :, None, None],
                                      torch.from_numpy(np.array(labels)), noises)
  np.testing.assert_allclose(float(metrics["d_loss"]), d_loss, rtol=1e-4)
  np.testing.assert_allclose(float(metrics["g_loss"]), g_loss, rtol=1e-4)
  g_t = dcgan.dcgan_variables_from_torch(_numpy(tg.state_dict()), "generator")
  d_t = dcgan.dcgan_variables_from_torch(_numpy(td.state_dict()), "discriminator")
  # An Adam step moves each weight by about lr = 2e-4: 2e-6 is 1% of it.
  _close(new_state.params["discriminator"], d_t["params"], atol=2e-6)
  _close(new_state.params["generator"], g_t["params"], atol=2e-6)
  _close(new_state.model_state["discriminator"], d_t["batch_stats"], atol=1e-4)
  _close(new_state.model_state["generator"], g_t["batch_stats"], atol=1e-4)
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), new_state.params,
                       state.params)
  assert min(jax.tree.leaves(moved)) > 1e-4  # every tensor took a real step
