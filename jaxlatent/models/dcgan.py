"""DCGAN (Radford et al. 2016) as used by Schön et al. 2022 on CT slices.

``arch='schon'`` (default) is the network of Schön et al.'s code
(julschoen/Latent-Space-Exploration-CT ``Models/DCGAN.py``) exactly: the generator maps
z[32] through a 4x4 transposed conv (1x1 -> 4x4, ``gen_channels`` = 16 ngf = 2048),
then transposed convs with kernel 4, stride 2, padding 1 (no bias), each followed by
BatchNorm and ReLU, channels halving per doubling, and a last one to 1 channel with
tanh; the discriminator has convs with kernel 4, stride 2, padding 1 (no bias) and
LeakyReLU(0.2), BatchNorm from the second, and a 4x4 conv to one logit (no bias).
Weights start as ``weights_init``: N(0, 0.02) kernels, BatchNorm scale N(1, 0.02).
The stride-2 layers run as 2x2 convs plus depth-to-space / space-to-depth
(:mod:`jaxlatent.ops.conv4x4`: the same values, the fast form on XLA:CPU) with the
kernels stored as full 4x4 kernels, so :func:`dcgan_variables_from_torch` and
:func:`dcgan_variables_to_torch` convert PyTorch state_dicts exactly; BatchNorm keeps
PyTorch's running statistics (:class:`jaxlatent.ops.batch_norm.BatchNorm2d`).

``arch='resample'`` is the earlier variant: a dense stem, then the resampling layers
that ``upsample`` / ``downsample`` / ``subpixel_kernel`` pick (default 2x2 sub-pixel
convs, which have the FLOPs of the 4x4 layers but not their receptive field), biases
where no BatchNorm follows, flax initialisers and a dense logit with bias.

BatchNorm (``norm='batch'``) runs with batch statistics during training and with the
stored running statistics in :func:`make_generator`, so a Generator is a
deterministic function of z; ``norm='none'`` drops it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator, LatentSpec
from jaxlatent.models import blocks, settings
from jaxlatent.ops import conv2x2, conv4x4
from jaxlatent.ops.batch_norm import BatchNorm2d

NORMS = ("batch", "none")
ARCHS = ("schon", "resample")
# DCGAN's weights_init: N(0, 0.02) conv kernels, N(1, 0.02) BatchNorm scales.
_KERNEL_INIT = nn.initializers.normal(0.02)


def _bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _norm(kind: str, train: bool, name: str, arch: str = "resample"):
  if kind == "batch" and arch == "schon":
    return BatchNorm2d(use_running_average=not train, scale_init=_bn_scale_init, name=name)
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)
  if kind == "none":
    return lambda x: x
  raise ConfigError(f"model.norm={kind!r}: expected one of {NORMS}")


class DCGANGenerator(nn.Module):
  """z ``[B, latent_dim]`` -> images ``[B, S, S, 1]`` in [-1, 1].

  Attributes:
    image_size: output side S (power of two >= 8).
    latent_dim: size of z (paper: 32).
    gen_channels: channels at 4x4 (paper: 2048 = 16 ngf); halved per doubling.
    max_channels: cap on the channels of any layer.
    arch: 'schon' (Schön et al.'s layers exactly) or 'resample' (dense stem and the
      ``upsample`` layers; see the module docstring).
    upsample: 'resample' only: 'subpixel' | 'resize' | 'transpose' (see jaxlatent.models.blocks.Upsample).
    subpixel_kernel: conv kernel of sub-pixel up-sampling.
    norm: 'batch' (DCGAN) or 'none'.
    conv_grad: how the 2x2 resampling convs back-propagate (jaxlatent.ops.conv2x2.Conv2x2).
    matmul_dtype: 'float32', or 'bfloat16' for mixed precision in the 2x2 resampling
      convs (bfloat16 operands, float32 accumulation; jaxlatent.ops.conv2x2.Conv2x2).
  """

  image_size: int
  latent_dim: int = 32
  gen_channels: int = 2048
  max_channels: int = 2048
  arch: str = "schon"
  upsample: str = "subpixel"
  subpixel_kernel: int = 2
  norm: str = "batch"
  conv_grad: str = "auto"
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
    if self.arch == "schon":
      return self._schon(z, train)
    b = z.shape[0]
    bias = self.norm == "none"
    ch = lambda res: blocks.channels_at(res, self.gen_channels, self.max_channels)
    x = nn.Dense(4 * 4 * ch(4), use_bias=bias, name="fc")(z)
    x = x.reshape(b, 4, 4, ch(4))  # [B, 4, 4, C4]
    x = nn.relu(_norm(self.norm, train, "fc_norm")(x))
    res = 4
    while res < self.image_size // 2:
      res *= 2
      x = blocks.Upsample(ch(res), self.upsample, self.subpixel_kernel, use_bias=bias,
                          conv_grad=self.conv_grad, matmul_dtype=self.matmul_dtype,
                          name=f"up{res}")(x)  # [B, res, res, C_res]
      x = nn.relu(_norm(self.norm, train, f"norm{res}")(x))
    x = blocks.Upsample(1, self.upsample, self.subpixel_kernel, conv_grad=self.conv_grad,
                        matmul_dtype=self.matmul_dtype, name="to_image")(x)
    return jnp.tanh(x)  # [B, S, S, 1]

  def _schon(self, z: jax.Array, train: bool) -> jax.Array:
    ch = lambda res: blocks.channels_at(res, self.gen_channels, self.max_channels)
    conv = dict(conv_grad=self.conv_grad, matmul_dtype=self.matmul_dtype)
    # ConvTranspose2d(nz, C4, 4, 1, 0) on a 1x1 input is a linear map z -> 4x4xC4: a
    # Dense kernel [nz, (h, w, C4)] (SeFa reads it as the first layer's weight).
    x = nn.Dense(16 * ch(4), use_bias=False, kernel_init=_KERNEL_INIT, name="stem",
                 precision=jax.lax.Precision.HIGHEST)(z)
    x = x.reshape(z.shape[0], 4, 4, ch(4))  # [B, 4, 4, C4]
    x = nn.relu(_norm(self.norm, train, "norm4", self.arch)(x))
    res = 4
    while res < self.image_size // 2:
      res *= 2
      x = conv4x4.ConvTranspose4x4(ch(res), **conv, name=f"up{res}")(x)  # [B, res, res, C]
      x = nn.relu(_norm(self.norm, train, f"norm{res}", self.arch)(x))
    x = conv4x4.ConvTranspose4x4(1, **conv, name="to_image")(x)
    return jnp.tanh(x)  # [B, S, S, 1]


class DCGANDiscriminator(nn.Module):
  """images ``[B, S, S, 1]`` -> logits ``[B]`` (real > 0).

  Attributes:
    image_size: input side S.
    disc_channels: channels at 4x4; halved per doubling of the resolution.
    max_channels: cap on the channels of any layer.
    arch: 'schon' or 'resample' (as in DCGANGenerator).
    downsample: 'resample' only: 'space_to_depth' | 'strided' | 'avgpool' (see jaxlatent.models.blocks.Downsample).
    subpixel_kernel: conv kernel after space-to-depth.
    norm: 'batch' (DCGAN; none on the first layer) or 'none'.
    conv_grad: how the 2x2 convs back-propagate (jaxlatent.ops.conv2x2.Conv2x2).
    matmul_dtype: 'float32' or 'bfloat16' (as in DCGANGenerator).
  """

  image_size: int
  disc_channels: int = 2048
  max_channels: int = 2048
  arch: str = "schon"
  downsample: str = "space_to_depth"
  subpixel_kernel: int = 2
  norm: str = "batch"
  conv_grad: str = "auto"
  matmul_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.arch == "schon":
      return self._schon(x, train)
    ch = lambda res: blocks.channels_at(res, self.disc_channels, self.max_channels)
    bias = self.norm == "none"
    res = self.image_size // 2
    x = blocks.Downsample(ch(res), self.downsample, self.subpixel_kernel,
                          conv_grad=self.conv_grad, matmul_dtype=self.matmul_dtype,
                          name=f"down{res}")(x)
    x = nn.leaky_relu(x, 0.2)  # [B, S/2, S/2, C]
    while res > 4:
      res //= 2
      x = blocks.Downsample(ch(res), self.downsample, self.subpixel_kernel, use_bias=bias,
                            conv_grad=self.conv_grad, matmul_dtype=self.matmul_dtype,
                            name=f"down{res}")(x)
      x = nn.leaky_relu(_norm(self.norm, train, f"norm{res}")(x), 0.2)
    x = x.reshape(x.shape[0], -1)  # [B, 16*C4]
    return nn.Dense(1, name="logit")(x)[:, 0]  # [B]

  def _schon(self, x: jax.Array, train: bool) -> jax.Array:
    ch = lambda res: blocks.channels_at(res, self.disc_channels, self.max_channels)
    conv = dict(conv_grad=self.conv_grad, matmul_dtype=self.matmul_dtype)
    res = self.image_size // 2
    x = nn.leaky_relu(conv4x4.Conv4x4(ch(res), **conv, name=f"down{res}")(x), 0.2)
    while res > 4:
      res //= 2
      x = conv4x4.Conv4x4(ch(res), **conv, name=f"down{res}")(x)  # [B, res, res, C]
      x = nn.leaky_relu(_norm(self.norm, train, f"norm{res}", self.arch)(x), 0.2)
    # Conv2d(C4, 1, 4, 1, 0) on the 4x4 map: one logit.
    logit = self.param("logit", _KERNEL_INIT, (4, 4, x.shape[-1], 1))
    return jnp.einsum("bhwc,hwco->bo", x, logit.astype(x.dtype),
                      precision=jax.lax.Precision.HIGHEST)[:, 0]  # [B]


@dataclasses.dataclass(frozen=True)
class DCGANTraining:
  """The training recipe's settings (``config.model`` keys next to the networks').

  Attributes:
    label_smoothing: real labels drawn from {0.900, 0.901, ..., 0.999} per image as in
      Schön et al.'s ``make_labels`` (False: real labels 1); fake labels are 0, and the
      generator's target is 1.
    instance_noise: add N(0, (1/std_reduce)^2) to every discriminator input and clamp
      to [-1, 1], with ``std_reduce`` annealed per epoch (:func:`instance_noise_std`).
      Off by default: in the reference training loop the epoch-0 pass through its
      schedule takes the branch that switches the noise off, and nothing switches it
      on again, so the reference networks were trained without it.
    steps_per_epoch: steps of one epoch for the noise schedule; 0 derives it from
      ``(data.num_images - fid_num_samples) // batch_size`` of the run config.
  """

  label_smoothing: bool = True
  instance_noise: bool = False
  steps_per_epoch: int = 0


# std_reduce of the reference schedule (Training/TrainGAN.py) as its comparisons were
# evidently meant: 10, +10 every 5 epochs below 20, 100 at 20, x4 for 20 < epoch < 26,
# then no noise.
_NOISE_EPOCHS = 26


def instance_noise_std(epoch: jax.Array) -> jax.Array:
  """``1 / std_reduce`` of ``epoch`` (int, may be traced); 0 from epoch 26 on."""
  reduce = [10.0 + 10.0 * (e // 5) for e in range(20)] + [100.0 * 4.0 ** k for k in range(6)]
  table = jnp.asarray([1.0 / r for r in reduce] + [0.0], jnp.float32)
  return table[jnp.clip(epoch, 0, _NOISE_EPOCHS)]


def default_config() -> ml_collections.ConfigDict:
  """``config.model`` of the paper's DCGAN (Schön et al. 2022): the modules' field defaults."""
  return settings.default_config("dcgan", DCGANGenerator, DCGANDiscriminator, DCGANTraining)


def training_settings(config: ml_collections.ConfigDict) -> DCGANTraining:
  """The :class:`DCGANTraining` of ``config.model``."""
  return DCGANTraining(**settings.kwargs_for(DCGANTraining, config.model))


def _checked_image_size(config: ml_collections.ConfigDict) -> int:
  """``config.image_size`` after checking the model's mode keys (ConfigError names the key)."""
  m = config.model
  size = blocks.check_image_size(config.image_size, 8)
  blocks.check_resample_modes(m.get("upsample"), m.get("downsample"))
  if "arch" in m and m.arch not in ARCHS:
    raise ConfigError(f"model.arch={m.arch!r}: expected one of {ARCHS}")
  if "norm" in m and m.norm not in NORMS:
    raise ConfigError(f"model.norm={m.norm!r}: expected one of {NORMS}")
  if "conv_grad" in m:
    conv2x2.check_conv_grad(m.conv_grad)
  if "matmul_dtype" in m:
    conv2x2.check_matmul_dtype(m.matmul_dtype)
  return size


def build_generator(config: ml_collections.ConfigDict) -> DCGANGenerator:
  """The generator module for ``config`` (``config.model`` + ``config.image_size``)."""
  size = _checked_image_size(config)
  return DCGANGenerator(image_size=size, **settings.kwargs_for(DCGANGenerator, config.model))


def build_discriminator(config: ml_collections.ConfigDict) -> DCGANDiscriminator:
  """The discriminator module for ``config``."""
  size = _checked_image_size(config)
  return DCGANDiscriminator(image_size=size,
                            **settings.kwargs_for(DCGANDiscriminator, config.model))


def init_generator(config: ml_collections.ConfigDict, key: jax.Array) -> dict[str, Any]:
  """Generator variables ``{'params', ['batch_stats']}`` for ``config``."""
  g = build_generator(config)
  return dict(g.init(key, jnp.zeros((1, g.latent_dim), jnp.float32)))


def make_generator(params: Any, config: ml_collections.ConfigDict) -> Generator:
  """A :class:`Generator` over z from the generator's variables.

  Args:
    params: the generator's variables ``{'params': ..., 'batch_stats': ...}`` (as
      returned by :func:`init_generator` or ``trainer.generator(state).params``).
    config: the run config (``config.model``, ``config.image_size``).
  """
  g = build_generator(config)
  # train=False: BatchNorm uses the stored running statistics.
  apply_fn = blocks.ModuleApply(g, None, (("train", False),))
  return Generator(
      params=params, apply_fn=apply_fn, latent_spec=LatentSpec((g.latent_dim,), "z", "normal"),
      image_shape=(g.image_size, g.image_size, 1), name="dcgan")


# PyTorch layout of Schön et al.'s networks: an nn.Sequential 'main' whose convs and
# BatchNorms are told apart by the rank of their weight.
_TORCH_KEY = re.compile(r"main\.(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)")


def _torch_layers(state_dict: Mapping[str, Any], network: str, where: str):
  """``[(index, 'conv' | 'bn')]`` of a Sequential state_dict, in order; CheckpointError
  naming ``where`` when a key or shape does not fit a DCGAN ``network``."""
  from jaxlatent.errors import CheckpointError  # pylint: disable=g-import-not-at-top
  layers = {}
  for key, value in state_dict.items():
    m = _TORCH_KEY.fullmatch(key)
    if m is None:
      raise CheckpointError(f"{where}: unexpected key {key!r} for Schön's DCGAN {network} "
                            "(expected main.<i>.weight / BatchNorm buffers)")
    if m.group(2) == "weight":
      rank = np.ndim(value)
      if rank not in (1, 4):
        raise CheckpointError(f"{where}: {key} has shape {np.shape(value)}: expected a "
                              "4-d conv weight or a 1-d BatchNorm weight")
      if rank == 4 and tuple(np.shape(value)[2:]) != (4, 4):
        raise CheckpointError(f"{where}: {key} has shape {np.shape(value)}: Schön's DCGAN "
                              "has 4x4 kernels")
      layers[int(m.group(1))] = "conv" if rank == 4 else "bn"
  out = sorted(layers.items())
  convs = [i for i, kind in out if kind == "conv"]
  if len(convs) < 3:
    raise CheckpointError(f"{where}: {len(convs)} conv layers: not a DCGAN {network}")
  for i, kind in out:
    need = ("weight", "bias", "running_mean", "running_var") if kind == "bn" else ("weight",)
    for name in need:
      if f"main.{i}.{name}" not in state_dict:
        raise CheckpointError(f"{where}: main.{i}.{name} is missing")
  return out


def _names(layers, network: str) -> dict[int, str]:
  """Torch Sequential index -> our module name (the BatchNorm after a conv: norm<res>)."""
  convs = [i for i, kind in layers if kind == "conv"]
  size = 4 * 2 ** (len(convs) - 1)
  names = {}
  if network == "generator":
    res_of = [4 * 2 ** k for k in range(len(convs))]
    conv_names = ["stem"] + [f"up{r}" for r in res_of[1:-1]] + ["to_image"]
  else:
    res_of = [size // 2 ** (k + 1) for k in range(len(convs) - 1)] + [1]
    conv_names = [f"down{r}" for r in res_of[:-1]] + ["logit"]
  for k, i in enumerate(convs):
    names[i] = conv_names[k]
    names[i + 1] = f"norm{res_of[k]}"  # used only where index i + 1 is a BatchNorm
  return names


def dcgan_variables_from_torch(state_dict: Mapping[str, Any], network: str = "generator",
                               where: str = "state_dict") -> dict[str, Any]:
  """Our variables ``{'params', 'batch_stats'}`` from a PyTorch state_dict of Schön et
  al.'s ``Generator`` / ``Discriminator`` (keys ``main.<i>.weight``, ...).

  Args:
    state_dict: name -> array (numpy or torch tensors converted with ``.numpy()``).
    network: 'generator' or 'discriminator'.
    where: names the source in errors (a CheckpointError on unexpected keys/shapes).

  The image size is ``4 * 2**(convs - 1)``; :func:`schon_model_config` gives the
  matching ``config.model``.  The generator's first layer (a 4x4 transposed conv of a
  1x1 input) becomes a Dense kernel ``[nz, 4 * 4 * C4]`` in (h, w, C) order; the other
  kernels become ``[4, 4, C_in, C_out]``
  (:mod:`jaxlatent.ops.conv4x4`), BatchNorm ``weight``/``bias``/``running_*`` become
  ``scale``/``bias``/``mean``/``var``.  Exact: :func:`dcgan_variables_to_torch` inverts it.
  """
  if network not in ("generator", "discriminator"):
    raise ValueError(f"network={network!r}: expected 'generator' or 'discriminator'")
  layers = _torch_layers(state_dict, network, where)
  names = _names(layers, network)
  params, stats = {}, {}
  arr = lambda k: np.asarray(state_dict[k], np.float32)
  for i, kind in layers:
    if kind == "conv":
      w = arr(f"main.{i}.weight")
      if names[i] == "stem":  # [nz, C4, 4, 4] -> Dense kernel [nz, (4, 4, C4)]
        params["stem"] = {"kernel": np.ascontiguousarray(
            w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1))}
        continue
      kernel = (conv4x4.kernel_from_torch_transpose(w) if network == "generator"
                else conv4x4.kernel_from_torch_conv(w))
      params[names[i]] = kernel if names[i] == "logit" else {"kernel": kernel}
    else:
      params[names[i]] = {"scale": arr(f"main.{i}.weight"), "bias": arr(f"main.{i}.bias")}
      stats[names[i]] = {"mean": arr(f"main.{i}.running_mean"),
                         "var": arr(f"main.{i}.running_var")}
  return {"params": params, "batch_stats": stats}


def dcgan_variables_to_torch(variables: Mapping[str, Any], network: str = "generator"
                             ) -> dict[str, np.ndarray]:
  """The PyTorch state_dict of Schön et al.'s network from our variables (inverse of
  :func:`dcgan_variables_from_torch`; ``num_batches_tracked`` is written as 0)."""
  params, stats = variables["params"], variables.get("batch_stats", {})
  if network == "generator":
    ups = sorted((int(k[2:]) for k in params if k.startswith("up")))
    order = ["stem", *[f"up{r}" for r in ups], "to_image"]
    norms = ["norm4", *[f"norm{r}" for r in ups], None]
    to_torch = conv4x4.kernel_to_torch_transpose
  else:
    downs = sorted((int(k[4:]) for k in params if k.startswith("down")), reverse=True)
    order = [*[f"down{r}" for r in downs], "logit"]
    norms = [None, *[f"norm{r}" for r in downs[1:]], None]
    to_torch = conv4x4.kernel_to_torch_conv
  out, i = {}, 0
  for name, norm in zip(order, norms):
    p = params[name]
    if name == "stem":
      k = np.asarray(p["kernel"])
      out["main.0.weight"] = np.ascontiguousarray(
          k.reshape(k.shape[0], 4, 4, -1).transpose(0, 3, 1, 2))
    else:
      out[f"main.{i}.weight"] = to_torch(p if name == "logit" else p["kernel"])
    i += 1
    if norm is not None and norm in params:
      out[f"main.{i}.weight"] = np.asarray(params[norm]["scale"])
      out[f"main.{i}.bias"] = np.asarray(params[norm]["bias"])
      out[f"main.{i}.running_mean"] = np.asarray(stats[norm]["mean"])
      out[f"main.{i}.running_var"] = np.asarray(stats[norm]["var"])
      out[f"main.{i}.num_batches_tracked"] = np.asarray(0, np.int64)
      i += 1
    i += 1  # the activation (ReLU / LeakyReLU) has no state
  return out


def schon_model_config(g_variables: Mapping[str, Any], d_variables: Mapping[str, Any] | None
                       = None) -> tuple[int, ml_collections.ConfigDict]:
  """``(image_size, config.model)`` of converted Schön networks (from their shapes)."""
  g = g_variables["params"]
  latent_dim, stem_out = g["stem"]["kernel"].shape
  gen_channels = stem_out // 16
  ups = [k for k in g if k.startswith("up")]
  size = 4 * 2 ** (len(ups) + 1)
  m = default_config()
  m.arch = "schon"
  m.latent_dim = int(latent_dim)
  m.gen_channels = int(gen_channels)
  m.disc_channels = int(d_variables["params"]["logit"].shape[2]) if d_variables else int(
      gen_channels)
  m.max_channels = max(m.gen_channels, m.disc_channels)
  return size, m
