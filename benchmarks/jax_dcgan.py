"""A bench-local JAX DCGAN with every speed knob exposed, to find what moves the step.

This is not the library's model (that is ``jaxlatent.models``); it is the lab bench
on which candidate changes are measured against the PyTorch reference before being
proposed to the models / training code.  Same network as ``torch_refs.DCGANStep``:
same widths, same up/down-sampling FLOPs, BN, BCE, Adam(2e-4, 0.5).

Knobs:
  upsample: "subpixel" (2x2 conv to 4C + depth-to-space), "transpose"
    (nn.ConvTranspose 4x4 s2), "resize" (nearest x2 + 3x3 conv).
  downsample: "s2d" (space-to-depth + 2x2 conv), "strided" (4x4 s2 conv).
  dtype: compute dtype of convs/matmuls (params stay f32): float32 or bfloat16.
  reuse_fake: render G(z) once and reuse it for the G update through ``jax.vjp``
    (as the PyTorch loop does) instead of a second G forward inside G's loss.
  impl: "xla" (``nn.Conv``) or "im2col" (the 2x2 convs as one matmul each).
  norm: BatchNorm on (True) or off (a diagnostic of its cost).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


def depth_to_space(x: jax.Array, r: int = 2) -> jax.Array:
  """[B, H, W, r*r*C] -> [B, r*H, r*W, C]."""
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, r, r, c // (r * r))
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * r, w * r, c // (r * r))


def space_to_depth(x: jax.Array, r: int = 2) -> jax.Array:
  """[B, H, W, C] -> [B, H/r, W/r, r*r*C]."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // r, r, w // r, r, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // r, w // r, r * r * c)


class Conv2x2(nn.Module):
  """A 2x2 'SAME' conv (pad 0 before, 1 after) as one matmul on 4 shifted views.

  im2col by hand: ``[B, H, W, C] -> [B, H, W, 4C] @ [4C, F]``; XLA:CPU then runs a
  dot (Eigen / XNNPACK GEMM) instead of its convolution kernel.  Same FLOPs.
  """
  features: int
  use_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    k = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, c, self.features))
    xp = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    cols = jnp.concatenate([xp[:, i:i + x.shape[1], j:j + x.shape[2]]
                            for i in range(2) for j in range(2)], axis=-1)  # [B, H, W, 4C]
    y = jnp.dot(cols.astype(self.dtype), k.reshape(4 * c, self.features).astype(self.dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return y


class Conv2x2Shift(nn.Module):
  """A 2x2 'SAME' conv as ONE matmul to the 4 taps' outputs, summed over shifted views.

  ``P = x @ W[C, 4F]`` (``[B, H, W, 4, F]``), then ``y[h, w] = sum_ij P[h+i, w+j, ij]``
  (zero past the border).  Forward, input gradient and kernel gradient are each one
  GEMM plus an elementwise shift-sum; no im2col copy of the input.  Same FLOPs.
  """
  features: int
  use_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    f = self.features
    k = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, c, f))
    taps = k.transpose(2, 0, 1, 3).reshape(c, 4 * f).astype(self.dtype)  # [C, (i, j, F)]
    p = jnp.dot(x.astype(self.dtype).reshape(-1, c), taps).reshape(b, h, w, 4, f)
    p = jnp.pad(p, ((0, 0), (0, 1), (0, 1), (0, 0), (0, 0)))
    y = sum(p[:, i:i + h, j:j + w, 2 * i + j] for i in range(2) for j in range(2))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (f,)).astype(self.dtype)
    return y


def _conv2x2(features, use_bias, dtype, impl):
  if impl == "im2col":
    return Conv2x2(features, use_bias, dtype)
  if impl == "shift":
    return Conv2x2Shift(features, use_bias, dtype)
  return nn.Conv(features, (2, 2), padding="SAME", use_bias=use_bias, dtype=dtype)


class Up(nn.Module):
  """x2 upsampling conv with the FLOPs of a 4x4 stride-2 transposed conv."""
  features: int
  mode: str
  dtype: Any
  use_bias: bool = False
  impl: str = "xla"

  @nn.compact
  def __call__(self, x):
    if self.mode == "transpose":
      return nn.ConvTranspose(self.features, (4, 4), (2, 2), padding="SAME",
                              use_bias=self.use_bias, dtype=self.dtype)(x)
    if self.mode == "resize":
      b, h, w, c = x.shape
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      return nn.Conv(self.features, (3, 3), padding="SAME", use_bias=self.use_bias,
                     dtype=self.dtype)(x)
    x = _conv2x2(4 * self.features, self.use_bias, self.dtype, self.impl)(x)  # [B, H, W, 4F]
    return depth_to_space(x)  # [B, 2H, 2W, F]


class Down(nn.Module):
  """/2 downsampling conv with the FLOPs of a 4x4 stride-2 conv."""
  features: int
  mode: str
  dtype: Any
  use_bias: bool = False
  impl: str = "xla"

  @nn.compact
  def __call__(self, x):
    if self.mode == "strided":
      return nn.Conv(self.features, (4, 4), (2, 2), padding=((1, 1), (1, 1)),
                     use_bias=self.use_bias, dtype=self.dtype)(x)
    x = space_to_depth(x)  # [B, H/2, W/2, 4C]
    return _conv2x2(self.features, self.use_bias, self.dtype, self.impl)(x)


class G(nn.Module):
  widths: Sequence[int]
  upsample: str = "subpixel"
  dtype: Any = jnp.float32
  channels: int = 1
  impl: str = "xla"
  norm: bool = True

  @nn.compact
  def __call__(self, z):
    w0 = self.widths[0]
    x = nn.Dense(16 * w0, use_bias=False, dtype=self.dtype)(z).reshape(-1, 4, 4, w0)
    bn = (lambda: nn.BatchNorm(use_running_average=False, dtype=self.dtype)) if self.norm \
        else (lambda: (lambda y: y))
    x = nn.relu(bn()(x))
    for f in self.widths[1:]:
      x = Up(f, self.upsample, self.dtype, impl=self.impl)(x)
      x = nn.relu(bn()(x))
    x = Up(self.channels, self.upsample, self.dtype, use_bias=True, impl=self.impl)(x)
    return jnp.tanh(x.astype(jnp.float32))


class D(nn.Module):
  widths: Sequence[int]
  downsample: str = "s2d"
  dtype: Any = jnp.float32
  impl: str = "xla"
  norm: bool = True

  @nn.compact
  def __call__(self, x):
    x = x.astype(self.dtype)
    for i, f in enumerate(self.widths):
      x = Down(f, self.downsample, self.dtype, use_bias=(i == 0), impl=self.impl)(x)
      if i > 0 and self.norm:
        x = nn.BatchNorm(use_running_average=False, dtype=self.dtype)(x)
      x = nn.leaky_relu(x, 0.2)
    x = nn.Dense(1, dtype=self.dtype)(x.reshape(x.shape[0], -1))  # the 4x4 head conv
    return x[:, 0].astype(jnp.float32)


def make_step(image_size: int, z_dim: int, g_widths, d_widths, batch: int, *,
              upsample="subpixel", downsample="s2d", dtype=jnp.float32,
              reuse_fake=True, impl="xla", norm=True):
  """Returns (init(key) -> state, step(state, real, key) -> (state, loss))."""
  g = G(tuple(g_widths), upsample, dtype, impl=impl, norm=norm)
  d = D(tuple(d_widths), downsample, dtype, impl=impl, norm=norm)
  tx = optax.adam(2e-4, b1=0.5)
  bce = optax.sigmoid_binary_cross_entropy

  def init(key):
    kg, kd = jax.random.split(key)
    gv = g.init(kg, jnp.zeros((2, z_dim)))
    dv = d.init(kd, jnp.zeros((2, image_size, image_size, 1)))
    gv = {"params": gv["params"], "batch_stats": gv.get("batch_stats", {})}
    dv = {"params": dv["params"], "batch_stats": dv.get("batch_stats", {})}
    return {"g": gv, "d": dv, "opt_g": tx.init(gv["params"]),
            "opt_d": tx.init(dv["params"])}

  def _apply(mod, p, stats, x):
    v = {"params": p, **({"batch_stats": stats} if stats else {})}
    out, mut = mod.apply(v, x, mutable=["batch_stats"])
    return out, {"batch_stats": mut.get("batch_stats", {})}

  g_apply = lambda p, s, z: _apply(g, p, s, z)
  d_apply = lambda p, s, x: _apply(d, p, s, x)

  def step(state, real, key):
    z = jax.random.normal(key, (batch, z_dim))
    gp, gstats = state["g"]["params"], state["g"]["batch_stats"]
    dp, dstats = state["d"]["params"], state["d"]["batch_stats"]
    if reuse_fake:
      (fake, gmut), g_vjp = jax.vjp(lambda p: g_apply(p, gstats, z), gp, has_aux=False)
    else:
      fake, gmut = g_apply(gp, gstats, z)

    def d_loss(p):
      lr_, m1 = d_apply(p, dstats, real)
      lf_, m2 = d_apply(p, m1["batch_stats"], jax.lax.stop_gradient(fake))
      return (bce(lr_, 1.).mean() + bce(lf_, 0.).mean()), m2["batch_stats"]

    (dl, dstats2), dgrad = jax.value_and_grad(d_loss, has_aux=True)(dp)
    upd, opt_d = tx.update(dgrad, state["opt_d"], dp)
    dp = optax.apply_updates(dp, upd)

    if reuse_fake:
      def g_loss_of_fake(x):
        lf_, m = d_apply(dp, dstats2, x)
        return bce(lf_, 1.).mean(), m["batch_stats"]
      (gl, dstats3), dfake = jax.value_and_grad(g_loss_of_fake, has_aux=True)(fake)
      zero_stats = jax.tree.map(jnp.zeros_like, gmut)
      (ggrad,) = g_vjp((dfake, zero_stats))
    else:
      def g_loss(p):
        x, m = g_apply(p, gstats, z)
        lf_, md = d_apply(dp, dstats2, x)
        return bce(lf_, 1.).mean(), (m, md["batch_stats"])
      (gl, (gmut, dstats3)), ggrad = jax.value_and_grad(g_loss, has_aux=True)(gp)
    upd, opt_g = tx.update(ggrad, state["opt_g"], gp)
    gp = optax.apply_updates(gp, upd)
    new = {"g": {"params": gp, "batch_stats": gmut["batch_stats"]},
           "d": {"params": dp, "batch_stats": dstats3},
           "opt_g": opt_g, "opt_d": opt_d}
    return new, dl + gl

  return init, step
