"""Rearranging pixels between space and channels (NHWC).

Sub-pixel up-sampling and space-to-depth down-sampling are built on these; the
2x2-block layout ``[B, h, w, 4, C]`` is what :func:`jaxlatent.ops.conv_same.conv_same_blocks`
returns for a following 2x2 pool.
"""

from __future__ import annotations

import jax


def depth_to_space(x: jax.Array, r: int = 2) -> jax.Array:
  """Rearranges channels into ``r x r`` spatial blocks (TF ``depth_to_space``, NHWC).

  ``[B, H, W, r*r*C] -> [B, H*r, W*r, C]``; output pixel ``(h*r + i, w*r + j, c)``
  is input channel ``(i*r + j)*C + c`` at ``(h, w)``.
  """
  b, h, w, c = x.shape
  if c % (r * r):
    raise ValueError(f"depth_to_space: channels {c} not divisible by r*r={r * r}")
  oc = c // (r * r)
  x = x.reshape(b, h, w, r, r, oc)  # [B, H, W, i, j, C]
  x = x.transpose(0, 1, 3, 2, 4, 5)  # [B, H, i, W, j, C]
  return x.reshape(b, h * r, w * r, oc)


def space_to_depth(x: jax.Array, r: int = 2) -> jax.Array:
  """Inverse of :func:`depth_to_space`: ``[B, H, W, C] -> [B, H/r, W/r, r*r*C]``."""
  b, h, w, c = x.shape
  if h % r or w % r:
    raise ValueError(f"space_to_depth: spatial size {(h, w)} not divisible by {r}")
  x = x.reshape(b, h // r, r, w // r, r, c)  # [B, H/r, i, W/r, j, C]
  x = x.transpose(0, 1, 3, 2, 4, 5)  # [B, H/r, W/r, i, j, C]
  return x.reshape(b, h // r, w // r, r * r * c)


def blocks_to_image(blocks: jax.Array) -> jax.Array:
  """``[B, h, w, 4, C]`` 2x2 blocks (index 2i + j) -> the ``[B, 2h, 2w, C]`` image."""
  b, h, w, _, c = blocks.shape
  return depth_to_space(blocks.reshape(b, h, w, 4 * c))
