"""Our VAE computes Schön et al.'s ``Models/VAE.py``, weight for weight.

Our PyTorch port (schon_torch.py) gets random weights and BatchNorm statistics; its
state_dict is converted with ``vae_variables_from_torch``; the encoder's posterior
and the decoder's eval-mode images (what the reference's ``make_vae`` analyses) must
agree, and so must eval-mode RReLU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

import schon_torch as ref
from jaxlatent.errors import CheckpointError
from jaxlatent.models import default_model_config, vae

ATOL = 1e-4


def _config(size: int, ch: int) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = default_model_config("vae")
  c.model.update(ch=ch, latent_dim=8)
  c.image_size = size
  return c


def _torch_vae(size: int, ch: int, seed: int) -> ref.VAE:
  torch.manual_seed(seed)
  net = ref.VAE(size, ch, 8)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.1)
        m.running_mean.normal_(0.0, 0.1)
        m.running_var.uniform_(0.5, 2.0)
  return net.eval()


@pytest.mark.parametrize("size,ch", [(32, 8), (128, 4)])
def test_encoder_and_decoder_match_the_reference(size, ch):
  net = _torch_vae(size, ch, seed=size)
  sd = {k: v.numpy().copy() for k, v in net.state_dict().items()}
  variables = vae.vae_variables_from_torch(sd)
  config = _config(size, ch)
  x = np.tanh(np.random.default_rng(0).normal(size=(3, size, size, 1))).astype(np.float32)
  with torch.no_grad():
    mu_t, logvar_t = net.encoder(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
  mean, logvar = vae.encode(variables, jnp.asarray(x), config)
  np.testing.assert_allclose(mean, mu_t.numpy().reshape(3, 8), rtol=1e-4, atol=ATOL)
  np.testing.assert_allclose(logvar, logvar_t.numpy().reshape(3, 8), rtol=1e-4, atol=ATOL)

  z = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
  with torch.no_grad():
    img_t = net.decoder(torch.from_numpy(z)[:, :, None, None]).numpy()
  gen = vae.make_decoder_generator(variables, config)
  img = gen(jnp.asarray(z))
  np.testing.assert_allclose(np.asarray(img).transpose(0, 3, 1, 2), img_t, rtol=1e-4, atol=ATOL)
  # The reference's decoder.pt holds the decoder's state_dict without the prefix.
  dec_only = {k[len("decoder."):]: v for k, v in sd.items() if k.startswith("decoder.")}
  assert set(vae.vae_variables_from_torch(dec_only)["params"]) == {"decoder"}
  back = vae.vae_variables_to_torch(variables)
  assert set(back) == set(sd)
  for k in sd:
    np.testing.assert_array_equal(back[k], sd[k])


def test_rrelu_matches_torch_in_eval_mode_and_draws_slopes_in_training():
  x = jnp.linspace(-3.0, 3.0, 4001)
  np.testing.assert_allclose(
      vae.rrelu(x), torch.nn.functional.rrelu(torch.from_numpy(np.array(x))).numpy(),
      rtol=1e-6)
  y = vae.rrelu(x, jax.random.key(0))
  slope = np.asarray(y[x < 0] / x[x < 0])
  assert slope.min() >= 1 / 8 and slope.max() <= 1 / 3 and slope.std() > 0.05
  np.testing.assert_array_equal(y[x >= 0], x[x >= 0])


def test_unexpected_key_is_a_checkpoint_error():
  with pytest.raises(CheckpointError, match="unexpected key 'encoder.conv1.BN1.momentum'"):
    vae.vae_variables_from_torch({"encoder.conv1.BN1.running_mean": np.zeros(2),
                                  "encoder.conv1.BN1.momentum": np.zeros(2)})
