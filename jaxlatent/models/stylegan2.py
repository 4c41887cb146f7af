"""StyleGAN2 (``model.name='stylegan2'``): the official StyleGAN2-ADA networks as a model.

The networks are :mod:`jaxlatent.models.stylegan2_ada` (NVlabs' ``training/networks.py``
exactly: FIR resampling, ``conv_clamp``, skip G / resnet D, no output tanh, the
official ``num_ws`` and w+ layout); this module builds them from ``config.model`` and
wraps them as :class:`~jaxlatent.Generator` objects in z, w and w+.  The simplified, faster
variant is ``model.name='stylegan2_simple'`` (:mod:`jaxlatent.models.stylegan2_simple`).

``config.model`` keys are the :class:`~jaxlatent.models.stylegan2_ada.Generator`
fields (``z_dim`` is ``latent_dim``, ``mapping_num_layers`` is
``num_mapping_layers``), the discriminator's minibatch-std settings, the loss
settings of :class:`StyleGAN2Loss`, and ``model.discriminator``: any
:class:`~jaxlatent.models.stylegan2_ada.Discriminator` field that differs from the
generator's (by default ``architecture='resnet'``; a converted snapshot stores its
D's fields there).  The image resolution is ``config.image_size``.

Variables of the generator: ``{'params', 'buffers'}`` (``buffers``: ``mapping.w_avg``,
each layer's ``noise_const`` and the FIR filters, as the reference's state_dict).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator
from jaxlatent.models import settings
from jaxlatent.models import stylegan2_ada as sg
# The loss settings and style mixing are the same for both variants.
from jaxlatent.models.stylegan2_simple import StyleGAN2Loss, loss_settings, mix_styles

# Config keys that name a Generator field differently (the keys of earlier configs).
_CONFIG_KEYS = {"z_dim": "latent_dim", "mapping_num_layers": "num_mapping_layers"}
# Generator fields fixed by jaxlatent: unconditional; the resolution is config.image_size.
_FIXED = ("c_dim",)
# Discriminator fields taken from the generator's unless model.discriminator sets them.
_SHARED_WITH_D = ("img_channels", "channel_base", "channel_max", "conv_clamp", "dtype")


@dataclasses.dataclass(frozen=True)
class _MinibatchStd:
  """The discriminator's minibatch-std settings (flat ``config.model`` keys)."""

  mbstd_group_size: int = 4  # samples per group; the batch must be a multiple
  mbstd_num_channels: int = 1  # 0: no minibatch-std layer


# Discriminator fields set elsewhere: by the generator / image size, or flat (mbstd).
_D_NOT_NESTED = ("img_resolution", "c_dim", "img_channels", "mbstd_group_size",
                 "mbstd_num_channels")


def default_config() -> ml_collections.ConfigDict:
  """``config.model`` of the official StyleGAN2 (stylegan2-ada-pytorch defaults).

  ``model.discriminator`` lists every other Discriminator field; ``None`` there
  means the generator's value (channel_base, channel_max, conv_clamp, dtype) or the
  module's default.
  """
  c = settings.default_config("stylegan2", sg.Generator, _MinibatchStd, StyleGAN2Loss,
                              renames=_CONFIG_KEYS, exclude=_FIXED)
  d = ml_collections.ConfigDict()
  for f in dataclasses.fields(sg.Discriminator):
    if f.name in _D_NOT_NESTED or f.name in settings.NOT_SETTINGS:
      continue
    if f.name == "architecture":
      d[f.name] = f.default
    elif "Sequence" in str(f.type):
      d[f.name] = None
    else:
      d[f.name] = settings._typed_none(f)  # pylint: disable=protected-access
  c.discriminator = d
  return c


def config_keys(fields: Mapping[str, Any]) -> dict[str, Any]:
  """``config.model`` entries of Generator ``fields`` (e.g. from a converted snapshot):
  the config's key names; ``img_resolution`` (``config.image_size``) and a zero
  ``c_dim`` are left out."""
  out = {}
  for k, v in fields.items():
    if k == "img_resolution" or (k == "c_dim" and not v):
      continue
    out[_CONFIG_KEYS.get(k, k)] = v
  return out


def _image_size(config: ml_collections.ConfigDict) -> int:
  size = int(config.image_size)
  if size < 4 or size & (size - 1):
    raise ConfigError(f"image_size={size}: StyleGAN2 needs a power of two >= 4")
  return size


def generator_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The :class:`~jaxlatent.models.stylegan2_ada.Generator` keyword arguments of ``config``."""
  m = config.model
  if int(m.get("c_dim", 0) or 0):
    raise ConfigError(f"model.c_dim={m.c_dim}: conditional StyleGAN2 networks need a label "
                      "per image; only unconditional ones (c_dim=0) are supported")
  fields = settings.kwargs_for(sg.Generator, m, _CONFIG_KEYS, _FIXED)
  fields["img_resolution"] = _image_size(config)
  if "resample_filter" in fields:
    fields["resample_filter"] = tuple(float(v) for v in fields["resample_filter"])
  for key in ("z_dim", "w_dim", "mapping_num_layers", "channel_base", "channel_max",
              "img_channels"):
    if key in fields and int(fields[key]) < 1:
      raise ConfigError(f"model.{_CONFIG_KEYS.get(key, key)}={fields[key]}: must be >= 1")
  if fields.get("architecture", "skip") not in sg.ARCHITECTURES:
    raise ConfigError(f"model.architecture={fields['architecture']!r}: expected one of "
                      f"{sg.ARCHITECTURES}")
  return fields


def discriminator_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The :class:`~jaxlatent.models.stylegan2_ada.Discriminator` keyword arguments."""
  g, m = generator_fields(config), config.model
  fields = {k: g[k] for k in _SHARED_WITH_D if k in g}
  fields.update(settings.kwargs_for(_MinibatchStd, m))
  own = m.get("discriminator") or {}
  own = own.to_dict() if isinstance(own, ml_collections.ConfigDict) else dict(own)
  known = {f.name for f in dataclasses.fields(sg.Discriminator)} - {"parent", "name"}
  for k, v in own.items():
    if k not in known:
      raise ConfigError(f"model.discriminator.{k}: not a discriminator field "
                        f"(one of {sorted(known)})")
    if v is not None:
      fields[k] = v
  for k, want in (("img_resolution", g["img_resolution"]), ("c_dim", 0),
                  ("img_channels", g.get("img_channels", 1))):
    if k in fields and fields[k] != want:
      raise ConfigError(f"model.discriminator.{k}={fields[k]}: the generator has {want}")
    fields[k] = want
  if "resample_filter" in fields:
    fields["resample_filter"] = tuple(float(v) for v in fields["resample_filter"])
  if fields.get("architecture", "resnet") not in sg.ARCHITECTURES:
    raise ConfigError(f"model.discriminator.architecture={fields['architecture']!r}: "
                      f"expected one of {sg.ARCHITECTURES}")
  return fields


def build_generator(config: ml_collections.ConfigDict) -> sg.Generator:
  """The generator module for ``config``."""
  return sg.Generator(**generator_fields(config))


def build_discriminator(config: ml_collections.ConfigDict) -> sg.Discriminator:
  """The discriminator module for ``config`` (logits ``[N, 1]``)."""
  return sg.Discriminator(**discriminator_fields(config))


def init_generator(config: ml_collections.ConfigDict, key: jax.Array) -> dict[str, Any]:
  """Generator variables ``{'params', 'buffers'}``."""
  g = build_generator(config)
  return dict(g.init({"params": key, "noise": key}, jnp.zeros((1, g.z_dim), jnp.float32),
                     noise_mode="const"))


def noise_buffer_shapes(config: ml_collections.ConfigDict) -> dict[str, tuple[int, ...]]:
  """Names and shapes ``[1, res, res, 1]`` of the explicit noise inputs."""
  out = {}
  for res in sg.block_resolutions(_image_size(config)):
    for conv in (("conv1",) if res == 4 else ("conv0", "conv1")):
      out[f"b{res}.{conv}"] = (1, res, res, 1)
  return out


def const_noise_buffers(variables: Mapping[str, Any]) -> dict[str, jax.Array]:
  """The stored const noise as a ``noise_buffers`` dict (``[1, R, R, 1]`` each)."""
  out = {}
  for block, layers in variables["buffers"]["synthesis"].items():
    for conv, v in layers.items():
      if isinstance(v, Mapping) and "noise_const" in v:
        out[f"{block}.{conv}"] = v["noise_const"][None, :, :, None]
  return out


def make_generator(variables: Any, config: ml_collections.ConfigDict, space: str = "z",
                   truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                   noise_mode: str = "const") -> Generator:
  """A :class:`~jaxlatent.Generator` of the model in space 'z', 'w' or 'w+'.

  Args:
    variables: ``{'params', 'buffers'}`` (for a trained model the EMA weights:
      ``trainer.generator(state).params``).
    config: the run config.
    space: 'z' (apply maps z, with truncation), 'w' (one ``[B, w_dim]`` code for every
      layer) or 'w+' (``[B, num_ws, w_dim]``, the official layout); for 'w' / 'w+'
      ``sample_fn`` maps random z (with truncation) and apply does not truncate.
    truncation_psi, truncation_cutoff: the truncation trick towards ``w_avg``.
    noise_mode: 'const' (the stored noise) or 'none': images are a pure function of
      the latents.
  """
  gen = sg.make_generator(variables, generator_fields(config), space, truncation_psi,
                          truncation_cutoff, noise_mode)
  return gen.replace(name=f"stylegan2-{space}")


__all__ = ["StyleGAN2Loss", "build_discriminator", "build_generator", "config_keys", "const_noise_buffers",
           "default_config", "discriminator_fields", "generator_fields", "init_generator",
           "loss_settings", "make_generator", "mix_styles", "noise_buffer_shapes"]
