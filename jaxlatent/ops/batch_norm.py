"""BatchNorm with PyTorch ``BatchNorm2d``'s training behaviour and flax's variable names.

``flax.linen.BatchNorm`` keeps a running average of the *biased* batch variance;
PyTorch's keeps the unbiased one (``n / (n - 1)`` times larger), so the same training
run ends with different running statistics and a different eval-mode network.  This
module normalises with the biased batch variance (as both do) and stores the
unbiased one, so networks trained in either framework convert both ways exactly.
Variables: ``params`` ``scale``, ``bias``; ``batch_stats`` ``mean``, ``var``.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


class BatchNorm2d(nn.Module):
  """``[B, H, W, C]`` batch normalisation over B, H, W (PyTorch's ``BatchNorm2d``).

  Attributes:
    use_running_average: normalise with the stored statistics (eval mode).
    momentum: weight of the old running statistics (PyTorch's ``1 - momentum``).
    epsilon: added to the variance.
    scale_init: initialiser of ``scale`` (DCGAN's ``weights_init``: N(1, 0.02)).
  """

  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  scale_init: Callable = nn.initializers.ones

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", self.scale_init, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      xf = x.astype(jnp.float32)
      mean = jnp.mean(xf, axis=(0, 1, 2))
      var = jnp.mean(jnp.square(xf - mean), axis=(0, 1, 2))  # biased, two-pass
      n = x.shape[0] * x.shape[1] * x.shape[2]
      if not self.is_initializing():
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1 - m) * mean
        ra_var.value = m * ra_var.value + (1 - m) * var * (n / max(n - 1, 1))
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
    return (y * scale + bias).astype(x.dtype)
