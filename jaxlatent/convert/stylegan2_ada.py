"""An official stylegan2-ada-pytorch snapshot as a jaxlatent workdir or Generator.

The file is read by :mod:`jaxlatent.convert.pickle_reader` (nothing in it runs); the
networks' ``init_kwargs`` and state_dicts become our config and Flax variables through
``jaxlatent.models.stylegan2_ada`` (the JAX port of the official architecture):

  * ``generator_config_from_kwargs(init_kwargs) -> dict`` (``config.model`` fields),
  * ``generator_variables_from_state_dict(state_dict, model_config) -> variables``,
  * optionally ``discriminator_config_from_kwargs`` /
    ``discriminator_variables_from_state_dict`` (the same for D),
  * ``make_generator(variables, model_config, space) -> Generator``.

Only unconditional (``c_dim == 0``), single-channel networks are taken: jaxlatent
analyses grey-value slices.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import re
from typing import Any

import ml_collections

from jaxlatent.convert.pickle_reader import NetworkRecord, read_network_pickle
from jaxlatent.errors import CheckpointError, ConfigError

ARCH_MODULE = "jaxlatent.models.stylegan2_ada"
# config.model.name of workdirs holding the official architecture.
MODEL_NAME = "stylegan2"
GENERATORS = ("G_ema", "G")


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
  if rec.class_name != "Generator":
    raise CheckpointError(f"{path}: network {name} is a {rec.class_name or 'bare state_dict'}, "
                          "not a stylegan2-ada Generator")
  kw = rec.init_kwargs
  for key in ("z_dim", "w_dim", "c_dim", "img_resolution", "img_channels"):
    if not isinstance(kw.get(key), int):
      raise CheckpointError(f"{path}: network {name} has no integer init_kwargs[{key!r}]")
  if kw["c_dim"] > 0:
    raise CheckpointError(f"{path}: network {name} is conditional (c_dim={kw['c_dim']}); only "
                          "unconditional networks can be analysed")
  if kw["img_channels"] != 1:
    raise CheckpointError(f"{path}: network {name} makes {kw['img_channels']}-channel images; "
                          "jaxlatent analyses single-channel (img_channels=1) slices")
  res = kw["img_resolution"]
  if res < 4 or 2 ** int(round(math.log2(res))) != res:
    raise CheckpointError(f"{path}: network {name} has img_resolution={res}, not a power of 2")
  return res


def _config_from_kwargs(fn, path: str, name: str, init_kwargs: dict) -> dict:
  try:
    return dict(fn(init_kwargs))
  except CheckpointError as e:
    raise CheckpointError(f"{path}: network {name}: {e}") from None


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def train_config_for(model_fields: dict, image_size: int,
                     discriminator_fields: dict | None = None) -> ml_collections.ConfigDict:
  """A run config holding ``model_fields`` over the model's defaults.

  ``discriminator_fields`` (when given) go to ``model.discriminator``: the official G
  and D differ in fields of the same name (e.g. ``architecture`` 'skip' vs 'resnet').
  Data, optimizer and seed are the library defaults: they describe how analysis
  preprocesses images (``data``) and how a resumed training would continue.
  """
  # pylint: disable=g-import-not-at-top
  from jaxlatent.data.config import default_data_config
  from jaxlatent.models import default_model_config
  from jaxlatent.training import default_optim_config

  c = ml_collections.ConfigDict()
  c.seed = 0
  c.image_size = int(image_size)
  c.data = default_data_config()
  model = default_model_config(MODEL_NAME)
  fields = dict(model_fields)
  if discriminator_fields:
    fields["discriminator"] = dict(discriminator_fields)
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


def stylegan2_ada_workdir_parts(path: str | os.PathLike, network: str = "G_ema"
                                ) -> tuple[ml_collections.ConfigDict, dict, dict]:
  """(train config, ``variables_by_network``, provenance) of an official snapshot.

  Args:
    path: ``network-snapshot-*.pkl``.
    network: the generator analysed ('G_ema', the averaged weights; or 'G').  It
      becomes the state's EMA generator; the raw 'G' (when present) its trained one,
      and 'D' the discriminator when the architecture module converts it.

  Raises:
    ConfigError: a bad ``network`` or the architecture module is missing.
    CheckpointError: unreadable file, unknown class, conditional / multi-channel
      networks, G and D of different resolutions, missing or mis-shaped tensors.
  """
  path = os.fspath(path)
  if network not in GENERATORS:
    raise ConfigError(f"--network={network!r}: expected one of {GENERATORS}")
  records = read_network_pickle(path)
  if network not in records:
    raise CheckpointError(f"{path}: holds no network {network!r} (has {sorted(records)})")
  res = _check_generator(path, network, records[network])
  arch = _arch()
  fields = _config_from_kwargs(arch.generator_config_from_kwargs, path, network,
                               records[network].init_kwargs)
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
  config = train_config_for(fields, res, d_fields)

  def g_vars(name: str) -> dict:
    try:
      return arch.generator_variables_from_state_dict(records[name].state_dict, fields)
    except CheckpointError as e:
      raise CheckpointError(f"{path}: network {name}: {e}") from None

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
      "sha256": _sha256(path), "network": network,
      "networks_converted": sorted({"generator_ema": network, "generator": raw,
                                    "discriminator": "D"}[k] for k in nets),
      "init_kwargs": {k: records[k].init_kwargs for k in records if k in ("G", "G_ema", "D")},
      "snapshot_kimg": int(kimg.group(1)) if kimg else None, "notes": notes}
  return config, nets, provenance


def convert_stylegan2_ada(path: str | os.PathLike, workdir: str | os.PathLike,
                          network: str = "G_ema") -> str:
  """Writes ``workdir`` (config.json + checkpoint at step 0) from an official snapshot."""
  # pylint: disable=g-import-not-at-top
  from jaxlatent.convert.workdir import check_new_workdir, write_workdir
  check_new_workdir(workdir)  # before the (slow) conversion
  config, nets, provenance = stylegan2_ada_workdir_parts(path, network)
  return write_workdir(os.fspath(workdir), config, nets, step=0, provenance=provenance)


def load_stylegan2_ada(path: str | os.PathLike, network: str = "G_ema", space: str = "z"):
  """The snapshot's generator as a :class:`~jaxlatent.Generator`, in-process (no workdir).

  Args:
    path: ``network-snapshot-*.pkl``.
    network: 'G_ema' (default) or 'G'.
    space: 'z', 'w' or 'w+'.
  """
  path = os.fspath(path)
  if network not in GENERATORS:
    raise ConfigError(f"network={network!r}: expected one of {GENERATORS}")
  records = read_network_pickle(path)
  if network not in records:
    raise CheckpointError(f"{path}: holds no network {network!r} (has {sorted(records)})")
  res = _check_generator(path, network, records[network])
  arch = _arch()
  fields = _config_from_kwargs(arch.generator_config_from_kwargs, path, network,
                               records[network].init_kwargs)
  try:
    variables = arch.generator_variables_from_state_dict(records[network].state_dict, fields)
  except CheckpointError as e:
    raise CheckpointError(f"{path}: network {network}: {e}") from None
  return arch.make_generator(variables, fields, space)
