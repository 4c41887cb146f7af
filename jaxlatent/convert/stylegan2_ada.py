"""An official stylegan2-ada-pytorch snapshot as a jaxlatent workdir or Generator.

The file is read by :mod:`jaxlatent.convert.pickle_reader` (nothing in it runs); the
networks' ``init_kwargs`` and state_dicts become our config and Flax variables through
``jaxlatent.models.stylegan2_ada`` (the JAX port of the official architecture):

  * ``generator_config_from_kwargs(init_kwargs) -> dict`` (``config.model`` fields),
  * ``generator_variables_from_state_dict(state_dict, model_config) -> variables``,
  * optionally ``discriminator_config_from_kwargs`` /
    ``discriminator_variables_from_state_dict`` (the same for D),
  * ``make_generator(variables, model_config, space) -> Generator``.

Only unconditional (``c_dim == 0``) networks are taken.  RGB networks convert (and
:func:`load_stylegan2_ada` renders them), but jaxlatent's analyses read single-channel
slices: analysing such a workdir stops with a DataError naming ``model.img_channels``.

A plain ``state_dict`` (``torch.save(G_ema.state_dict(), 'G_ema.pt')``, or a dict
``{'G_ema': state_dict, ...}``) has no ``init_kwargs``: they are inferred from the
tensor names and shapes (:func:`infer_generator_kwargs`); ``conv_clamp``, which no
tensor records, is the official trainer's 256 unless given.
"""

from __future__ import annotations

import importlib
import math
import os
import re
from typing import Any

import ml_collections

from jaxlatent.convert.pickle_reader import (NetworkRecord, file_sha256, read_network_pickle,
                                             read_state_dict)
from jaxlatent.errors import CheckpointError, ConfigError

ARCH_MODULE = "jaxlatent.models.stylegan2_ada"
# config.model.name of workdirs holding the official architecture.
MODEL_NAME = "stylegan2"
GENERATORS = ("G_ema", "G")
# The official train.py's conv_clamp, assumed for state_dicts (no tensor records it).
OFFICIAL_CONV_CLAMP = 256.0


def _arch():
  try:
    return importlib.import_module(ARCH_MODULE)
  except ModuleNotFoundError as e:
    if e.name != ARCH_MODULE:
      raise
    raise ConfigError(f"{ARCH_MODULE} is not part of this installation: the official "
                      "StyleGAN2-ADA architecture is needed to convert its snapshots") from None


def _check_generator(path: str, name: str, rec: NetworkRecord) -> int:
  """Validates an official Generator record; returns its resolution."""
  if rec.class_name not in ("Generator", ""):
    raise CheckpointError(f"{path}: network {name} is a {rec.class_name or 'bare state_dict'}, "
                          "not a stylegan2-ada Generator")
  kw = rec.init_kwargs
  for key in ("z_dim", "w_dim", "c_dim", "img_resolution", "img_channels"):
    if not isinstance(kw.get(key), int):
      raise CheckpointError(f"{path}: network {name} has no integer init_kwargs[{key!r}]")
  if kw["c_dim"] > 0:
    raise CheckpointError(f"{path}: network {name} is conditional (c_dim={kw['c_dim']}); only "
                          "unconditional networks can be analysed")
  if kw["img_channels"] < 1:
    raise CheckpointError(f"{path}: network {name} has img_channels={kw['img_channels']}")
  res = kw["img_resolution"]
  if res < 4 or 2 ** int(round(math.log2(res))) != res:
    raise CheckpointError(f"{path}: network {name} has img_resolution={res}, not a power of 2")
  return res


def _channels_from(path: str, ch: dict[int, int]) -> tuple[int, int]:
  """(channel_base, channel_max) giving ``min(base // res, max) == ch[res]`` for all res."""
  cmax = max(ch.values())
  for base in sorted({c * r for r, c in ch.items()}):
    if all(min(base // r, cmax) == c for r, c in ch.items()):
      return base, cmax
  raise CheckpointError(f"{path}: channels per resolution {dict(sorted(ch.items()))} do not "
                        "follow min(channel_base // res, channel_max)")


def infer_generator_kwargs(path: str, sd: dict, conv_clamp: float | None = OFFICIAL_CONV_CLAMP
                           ) -> dict[str, Any]:
  """The official ``Generator.init_kwargs`` of a bare ``state_dict``, from its tensors.

  Names, shapes and counts give z_dim, w_dim, the mapping layers, the resolution,
  image channels, channel_base / channel_max, kernel size, noise and the
  architecture; ``conv_clamp`` (not in any tensor) is the argument.  Raises
  CheckpointError when the tensors are not an official generator's.
  """
  fc = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
  if not fc or "synthesis.b4.const" not in sd:
    raise CheckpointError(f"{path}: not a stylegan2-ada generator state_dict (no mapping.fc*.weight "
                          "or synthesis.b4.const)")
  if "mapping.embed.weight" in sd:
    raise CheckpointError(f"{path}: the generator is conditional (mapping.embed); only "
                          "unconditional networks can be analysed")
  res = sorted(int(m.group(1)) for k in sd
               if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
  top = res[-1]
  torgb = sd.get(f"synthesis.b{top}.torgb.weight")
  if torgb is None:
    raise CheckpointError(f"{path}: synthesis.b{top}.torgb.weight is missing")
  ch = {r: int(sd[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in res}
  base, cmax = _channels_from(path, ch)
  w0, wl = sd["mapping.fc0.weight"], sd[f"mapping.fc{fc[-1]}.weight"]
  arch = ("resnet" if any(k.endswith(".skip.weight") for k in sd) else
          "skip" if top > 4 and "synthesis.b4.torgb.weight" in sd else "orig")
  mapping = {"num_layers": len(fc)}
  if len(fc) > 1 and w0.shape[0] != wl.shape[0]:
    mapping["layer_features"] = int(w0.shape[0])
  return {"z_dim": int(w0.shape[1]), "c_dim": 0, "w_dim": int(wl.shape[0]),
          "img_resolution": top, "img_channels": int(torgb.shape[0]),
          "mapping_kwargs": mapping,
          "synthesis_kwargs": {
              "channel_base": base, "channel_max": cmax, "architecture": arch,
              "conv_clamp": conv_clamp,
              "kernel_size": int(sd[f"synthesis.b{top}.conv1.weight"].shape[-1]),
              "use_noise": f"synthesis.b{top}.conv1.noise_strength" in sd}}


def read_networks(path: str, conv_clamp: float | None = OFFICIAL_CONV_CLAMP
                  ) -> dict[str, NetworkRecord]:
  """The networks of a snapshot, a ``{name: state_dict}`` file or one generator
  ``state_dict`` (as 'G_ema'); bare state_dicts get inferred ``init_kwargs``."""
  try:
    records = read_network_pickle(path)
  except CheckpointError as e:
    if "holds no network" not in str(e):
      raise
    records = {"G_ema": NetworkRecord("", {}, read_state_dict(path))}
  out = {}
  for name, rec in records.items():
    if not rec.class_name and name in GENERATORS:
      rec = NetworkRecord("Generator", infer_generator_kwargs(path, rec.state_dict, conv_clamp),
                          rec.state_dict)
    elif not rec.class_name:
      continue  # a bare D / optimizer state: not converted
    out[name] = rec
  return out


def _config_from_kwargs(fn, path: str, name: str, init_kwargs: dict) -> dict:
  try:
    return dict(fn(init_kwargs))
  except CheckpointError as e:
    raise CheckpointError(f"{path}: network {name}: {e}") from None


def _read_generator(path: str, network: str, conv_clamp: float | None, network_key: str):
  """The snapshot's records, ``network``'s resolution, the architecture module and
  ``network``'s config fields; ``network_key`` names the option in the error."""
  if network not in GENERATORS:
    raise ConfigError(f"{network_key}={network!r}: expected one of {GENERATORS}")
  records = read_networks(path, conv_clamp)
  if network not in records:
    raise CheckpointError(f"{path}: holds no network {network!r} (has {sorted(records)})")
  res = _check_generator(path, network, records[network])
  arch = _arch()
  fields = _config_from_kwargs(arch.generator_config_from_kwargs, path, network,
                               records[network].init_kwargs)
  return records, res, arch, fields


def _generator_variables(arch, path: str, name: str, rec: NetworkRecord, fields: dict
                         ) -> dict:
  """Network ``name``'s Flax variables; a conversion error names the file and network."""
  try:
    return arch.generator_variables_from_state_dict(rec.state_dict, fields)
  except CheckpointError as e:
    raise CheckpointError(f"{path}: network {name}: {e}") from None


MODALITIES = {"mr": "phantom_brain", "ct": "phantom_thorax"}


def train_config_for(model_fields: dict, image_size: int,
                     discriminator_fields: dict | None = None,
                     modality: str = "mr") -> ml_collections.ConfigDict:
  """A run config holding ``model_fields`` over the model's defaults.

  ``discriminator_fields`` (when given) go to ``model.discriminator``: the official G
  and D differ in fields of the same name (e.g. ``architecture`` 'skip' vs 'resnet').
  Data, optimizer and seed are the library defaults: they describe how analysis
  preprocesses images (``data``) and how a resumed training would continue.
  ``modality`` ('mr' | 'ct') is what the network was trained on: it sets
  ``data.modality`` and the phantom data set analysis draws held-out images from.
  """
  # pylint: disable=g-import-not-at-top
  from jaxlatent.data.config import default_data_config
  from jaxlatent.models import default_model_config
  from jaxlatent.models import stylegan2 as model_mod
  from jaxlatent.training import default_optim_config

  c = ml_collections.ConfigDict()
  c.seed = 0
  c.image_size = int(image_size)
  c.data = default_data_config()
  if modality not in MODALITIES:
    raise ConfigError(f"--modality={modality!r}: expected one of {sorted(MODALITIES)}")
  c.data.modality, c.data.source = modality, MODALITIES[modality]
  model = default_model_config(MODEL_NAME)
  fields = model_mod.config_keys(model_fields)
  if discriminator_fields:
    d = dict(discriminator_fields)
    for k in ("mbstd_group_size", "mbstd_num_channels"):  # flat keys of config.model
      if k in d:
        fields[k] = d.pop(k)
    fields["discriminator"] = {k: v for k, v in d.items()
                               if k not in ("img_resolution", "img_channels", "c_dim")}
  for k, v in fields.items():
    try:
      if k in model and isinstance(model[k], ml_collections.ConfigDict) and isinstance(v, dict):
        model[k].update(v)
      else:
        model[k] = v
    except (TypeError, KeyError) as e:
      raise CheckpointError(f"model.{k}={v!r} does not fit the {MODEL_NAME} config: {e}") from None
  c.model = model
  c.optim = default_optim_config(MODEL_NAME)
  return c


def stylegan2_ada_workdir_parts(path: str | os.PathLike, network: str = "G_ema",
                                conv_clamp: float | None = OFFICIAL_CONV_CLAMP,
                                modality: str = "mr"
                                ) -> tuple[ml_collections.ConfigDict, dict, dict]:
  """(train config, ``variables_by_network``, provenance) of an official snapshot.

  Args:
    path: ``network-snapshot-*.pkl`` (or a state_dict file, see the module docstring).
    conv_clamp: for a bare state_dict only (a snapshot records its own).
    modality: 'mr' or 'ct', the images the network was trained on (``data.modality``).
    network: the generator analysed ('G_ema', the averaged weights; or 'G').  It
      becomes the state's EMA generator; the raw 'G' (when present) its trained one,
      and 'D' the discriminator when the architecture module converts it.

  Raises:
    ConfigError: a bad ``network`` or the architecture module is missing.
    CheckpointError: unreadable file, unknown class, conditional / multi-channel
      networks, G and D of different resolutions, missing or mis-shaped tensors.
  """
  path = os.fspath(path)
  records, res, arch, fields = _read_generator(path, network, conv_clamp, "--network")
  notes = []
  d_rec = records.get("D")
  d_fields: dict[str, Any] = {}
  if d_rec is not None and hasattr(arch, "discriminator_config_from_kwargs"):
    d_res = d_rec.init_kwargs.get("img_resolution")
    if d_res != res:
      raise CheckpointError(f"{path}: D has img_resolution={d_res} but {network} has {res}")
    if d_rec.init_kwargs.get("c_dim", 0):
      raise CheckpointError(f"{path}: D is conditional (c_dim={d_rec.init_kwargs['c_dim']})")
    d_fields = _config_from_kwargs(arch.discriminator_config_from_kwargs, path, "D",
                                   d_rec.init_kwargs)
  elif d_rec is not None:
    notes.append("D not converted: the architecture module has no discriminator conversion")
    d_rec = None
  config = train_config_for(fields, res, d_fields, modality)

  def g_vars(name: str) -> dict:
    return _generator_variables(arch, path, name, records[name], fields)

  nets = {"generator_ema": g_vars(network)}
  raw = "G" if "G" in records and network != "G" else network
  if raw != network:
    _check_generator(path, raw, records[raw])
    if records[raw].init_kwargs != records[network].init_kwargs:
      raise CheckpointError(f"{path}: G and {network} were built with different init_kwargs")
  nets["generator"] = {"params": (g_vars(raw) if raw != network else nets["generator_ema"]
                                  )["params"]}
  if d_rec is not None:
    try:
      d_vars = arch.discriminator_variables_from_state_dict(d_rec.state_dict, d_fields)
    except CheckpointError as e:
      raise CheckpointError(f"{path}: network D: {e}") from None
    nets["discriminator"] = {"params": d_vars["params"]}
  kimg = re.search(r"(\d+)\.pkl$", os.path.basename(path))
  provenance = {
      "format": "stylegan2-ada-pytorch network pickle", "source": os.path.abspath(path),
      "sha256": file_sha256(path), "network": network,
      "networks_converted": sorted({"generator_ema": network, "generator": raw,
                                    "discriminator": "D"}[k] for k in nets),
      "init_kwargs": {k: records[k].init_kwargs for k in records if k in ("G", "G_ema", "D")},
      "snapshot_kimg": int(kimg.group(1)) if kimg else None, "notes": notes}
  return config, nets, provenance


def convert_stylegan2_ada(path: str | os.PathLike, workdir: str | os.PathLike,
                          network: str = "G_ema",
                          conv_clamp: float | None = OFFICIAL_CONV_CLAMP,
                          modality: str = "mr") -> str:
  """Writes ``workdir`` (config.json + checkpoint at step 0) from an official snapshot."""
  # pylint: disable=g-import-not-at-top
  from jaxlatent.convert.workdir import check_new_workdir, write_workdir
  check_new_workdir(workdir)  # before the (slow) conversion
  config, nets, provenance = stylegan2_ada_workdir_parts(path, network, conv_clamp, modality)
  return write_workdir(os.fspath(workdir), config, nets, step=0, provenance=provenance)


def load_stylegan2_ada(path: str | os.PathLike, network: str = "G_ema", space: str = "z",
                       truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                       noise_mode: str = "const",
                       conv_clamp: float | None = OFFICIAL_CONV_CLAMP):
  """The snapshot's generator as a :class:`~jaxlatent.Generator`, in-process (no workdir).

  Args:
    path: ``network-snapshot-*.pkl``.
    network: 'G_ema' (default) or 'G'.
    space: 'z', 'w' or 'w+'.
    truncation_psi, truncation_cutoff, noise_mode: as the official ``G(z, c, psi,
      cutoff, noise_mode=...)`` ('const' or 'none').
    conv_clamp: for a bare state_dict only.
  """
  path = os.fspath(path)
  records, _, arch, fields = _read_generator(path, network, conv_clamp, "network")
  variables = _generator_variables(arch, path, network, records[network], fields)
  return arch.make_generator(variables, fields, space, truncation_psi, truncation_cutoff,
                             noise_mode)
