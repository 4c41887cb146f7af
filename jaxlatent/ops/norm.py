"""GroupNorm written as two passes over the activations in each direction.

``flax.linen.GroupNorm`` reduces ``[B, H, W, G, C/G]`` over the spatial axes and
the last one, and autodiff adds several more reductions on the way back, all slow on
XLA:CPU; a plain sum over H, W with few channels minor is also slower than the same
sum on the view below.  Here the per-channel sums are
taken over a ``[B, N, L]`` view whose minor axis ``L`` is a multiple of both ``C``
and 16 floats, the group statistics come from those ``[B, C]`` sums, and the
backward pass is one reduction (``sum dy``, ``sum dy * (x - mean)``) plus one
elementwise pass.  The variance is flax's exact two-pass one, computed in one pass
about a per-group shift (flax's default ``use_fast_variance`` loses float32 precision
when |mean| >> std); the parameters (``scale``, ``bias``) are flax's, so checkpoints
of either load in the other.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Minor axis of the summing view: a multiple of this many float32s (one AVX-512 row).
_LANES = 16


def sum_spatial(x: jax.Array) -> jax.Array:
  """``[B, ..., C] -> [B, C]``: float32 sums over every axis but the first and last."""
  b, c = x.shape[0], x.shape[-1]
  per_sample = x.size // b
  lanes = c * (_LANES // math.gcd(c, _LANES))
  if per_sample % lanes:
    lanes = c
  partial = x.reshape(b, per_sample // lanes, lanes).sum(axis=1, dtype=jnp.float32)
  return partial.reshape(b, lanes // c, c).sum(axis=1)


def per_channel(v: jax.Array, channels: int) -> jax.Array:
  """``[B, G] -> [B, C]``: each group's value repeated over its channels.

  A product with the 0/1 group-membership matrix, not ``jnp.repeat``: XLA fuses a
  repeat into the elementwise pass that reads it and recomputes it per element (an
  integer division per value).
  """
  groups = v.shape[1]
  member = np.equal.outer(np.arange(groups), np.arange(channels) // (channels // groups))
  return jnp.dot(v, jnp.asarray(member, v.dtype), precision=jax.lax.Precision.HIGHEST)


def _over(v: jax.Array, x: jax.Array) -> jax.Array:
  """``[B, C]`` shaped to broadcast against ``x`` (``[B, 1, ..., 1, C]``)."""
  return v.reshape(v.shape[0], *([1] * (x.ndim - 2)), v.shape[1])


def _group_sum(v: jax.Array, num_groups: int) -> jax.Array:
  """``[B, C] -> [B, G]``: sums over each group's channels."""
  return v.reshape(v.shape[0], num_groups, -1).sum(-1)


def group_statistics(x: jax.Array, num_groups: int, epsilon: float):
  """Per sample and group: mean and 1/sqrt(var + eps), each ``[B, G]`` float32
  (differentiable: :func:`group_norm` takes its own backward pass, but
  ``pool.group_norm_relu_max_pool_blocks`` differentiates through these)."""
  b, c = x.shape[0], x.shape[-1]
  count = (x.size // b) // num_groups
  group = lambda v: _group_sum(v, num_groups)
  # Moments about a shift near the mean (each group's values at the first position),
  # so E[d^2] - E[d]^2 does not cancel when |mean| >> std, still in one pass.  The
  # statistics do not depend on the shift, so autodiff need not go through it.
  first = jax.lax.stop_gradient(x.reshape(b, -1, c)[:, 0].astype(jnp.float32))
  shift = group(first) / (c // num_groups)
  xs = x.astype(jnp.float32) - _over(per_channel(shift, c), x)
  d1 = group(sum_spatial(xs)) / count
  d2 = group(sum_spatial(xs * xs)) / count
  var = jnp.maximum(d2 - d1 * d1, 0.0)
  return shift + d1, jax.lax.rsqrt(var + epsilon)


def _normalise(x, scale, bias, mean, rstd):
  c = x.shape[-1]
  mean_c, rstd_c = per_channel(mean, c), per_channel(rstd, c)
  y = (x.astype(jnp.float32) - _over(mean_c, x)) * _over(rstd_c * scale, x) + bias
  return y.astype(jnp.result_type(x.dtype, scale.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, num_groups: int,
               epsilon: float = 1e-6) -> jax.Array:
  """GroupNorm of ``x [B, ..., C]`` over all but the batch axis, per channel group,
  then ``* scale + bias`` (``[C]`` each); the values and gradients of
  ``flax.linen.GroupNorm(num_groups, epsilon, use_fast_variance=False)``."""
  mean, rstd = group_statistics(x, num_groups, epsilon)
  return _normalise(x, scale, bias, mean, rstd)


def _group_norm_fwd(x, scale, bias, num_groups, epsilon):
  mean, rstd = group_statistics(x, num_groups, epsilon)
  return _normalise(x, scale, bias, mean, rstd), (x, scale, bias, mean, rstd)


def _group_norm_bwd(num_groups, epsilon, res, dy):
  del epsilon
  x, scale, bias, mean, rstd = res
  b, c = x.shape[0], x.shape[-1]
  count = (x.size // b) // num_groups
  mean_c, rstd_c = per_channel(mean, c), per_channel(rstd, c)
  dyf = dy.astype(jnp.float32)
  centred = x.astype(jnp.float32) - _over(mean_c, x)
  sum_dy = sum_spatial(dyf)  # [B, C]
  # Centred inside the sum (free in the fused pass): sum(dy x) - mean sum(dy) would
  # cancel catastrophically in float32 when |mean| >> std.
  sum_dy_xhat = rstd_c * sum_spatial(dyf * centred)  # sum of dy * normalised x
  d_scale = sum_dy_xhat.sum(0)
  d_bias = sum_dy.sum(0)
  group = lambda v: _group_sum(v, num_groups) / count  # group means
  m1 = per_channel(group(scale * sum_dy), c)  # mean of d(normalised x)
  m2 = per_channel(group(scale * sum_dy_xhat), c)  # mean of d(normalised x) * it
  # dx = rstd (dy scale - m1 - xhat m2), xhat = (x - mean) rstd
  dx = (dyf * _over(rstd_c * scale, x) - centred * _over(rstd_c * rstd_c * m2, x)
        - _over(rstd_c * m1, x))
  return (dx.astype(x.dtype), d_scale.astype(scale.dtype), d_bias.astype(bias.dtype))


group_norm.defvjp(_group_norm_fwd, _group_norm_bwd)


class GroupNorm(nn.Module):
  """Drop-in for ``nn.GroupNorm(num_groups, epsilon)`` (parameters ``scale`` and
  ``bias`` of shape ``[C]``; statistics over every axis but the batch axis) through
  :func:`group_norm`."""

  num_groups: int = 32
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale, bias = self._scale_and_bias(x.shape[-1])
    return group_norm(x, scale, bias, self.num_groups, self.epsilon)

  def _scale_and_bias(self, channels: int) -> tuple[jax.Array, jax.Array]:
    """The ``[C]`` parameters, after checking that the groups divide the channels."""
    if self.num_groups <= 0 or channels % self.num_groups:
      raise ValueError(f"{type(self).__name__}: {self.num_groups} groups do not divide "
                       f"{channels} channels")
    return (self.param("scale", nn.initializers.ones, (channels,)),
            self.param("bias", nn.initializers.zeros, (channels,)))
