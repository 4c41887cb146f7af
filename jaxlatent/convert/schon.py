"""Imports Schön et al.'s trained PyTorch DCGAN and VAE (Latent-Space-Exploration-CT).

  python -m jaxlatent.convert schon-dcgan gan_log/checkpoint.pt --workdir=runs/schon_gan
  python -m jaxlatent.convert schon-vae vae_log/decoder.pt --workdir=runs/schon_vae
  python analyze.py --config=configs/analyze_ct.py --workdir=runs/schon_gan

Inputs are the files their training scripts save: for the GAN ``checkpoint.pt``
(``{'modelG_state_dict', 'modelD_state_dict', ...}``, or a bare generator
state_dict); for the VAE ``checkpoint.pt`` (``{'state_dict'}`` of the whole VAE) or
``decoder.pt`` (``{'state_dict'}`` of the decoder: the encoder then keeps fresh
weights, and encoder-based inversion is meaningless).  Files are read with
:func:`jaxlatent.convert.pickle_reader.read_state_dict` (tensors only, nothing
unpickled is executed).  The network sizes (image size, latent size, channels) come
from the tensor shapes; the data settings are the paper's CT preprocessing (HU
window [-1000, 2000], axial slices).
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from jaxlatent.convert.pickle_reader import file_sha256, read_state_dict
from jaxlatent.errors import CheckpointError


def _sub(sd: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _train_config(model: ml_collections.ConfigDict, image_size: int
                  ) -> ml_collections.ConfigDict:
  """A run config: the converted model, the paper's CT data settings, default Adam."""
  # pylint: disable=g-import-not-at-top
  from jaxlatent.data.config import default_data_config
  from jaxlatent.training import default_optim_config
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.image_size = int(image_size)
  c.data = default_data_config()
  c.data.modality = "ct"
  c.data.ct_window = (-1000.0, 2000.0)
  c.data.axis = "axial"
  c.model = model
  c.optim = default_optim_config(str(model.name))
  return c


def schon_dcgan_workdir_parts(path: str | os.PathLike
                              ) -> tuple[ml_collections.ConfigDict, dict, dict]:
  """(train config, ``variables_by_network``, provenance) of a Schön GAN checkpoint."""
  from jaxlatent.models import dcgan  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  sd = read_state_dict(path)
  g_sd = _sub(sd, "modelG_state_dict.")
  d_sd = _sub(sd, "modelD_state_dict.")
  if not g_sd and any(k.startswith("main.") for k in sd):
    g_sd = sd  # a bare generator state_dict
  if not g_sd:
    raise CheckpointError(f"{path}: no 'modelG_state_dict' (nor a bare generator "
                          f"state_dict 'main.*'): keys start {sorted(sd)[:4]}")
  nets = {"generator": dcgan.dcgan_variables_from_torch(g_sd, "generator",
                                                        f"{path}: modelG_state_dict")}
  if d_sd:
    nets["discriminator"] = dcgan.dcgan_variables_from_torch(
        d_sd, "discriminator", f"{path}: modelD_state_dict")
  size, model = dcgan.schon_model_config(nets["generator"], nets.get("discriminator"))
  if "discriminator" in nets:
    d_convs = sum(1 for k in nets["discriminator"]["params"] if k.startswith("down"))
    if 4 * 2 ** d_convs != size:
      raise CheckpointError(f"{path}: the discriminator takes {4 * 2 ** d_convs}px images "
                            f"but the generator makes {size}px")
  provenance = {"format": "Schön et al. DCGAN checkpoint (Latent-Space-Exploration-CT)",
                "source": os.path.abspath(path), "sha256": file_sha256(path),
                "networks_converted": sorted(nets)}
  return _train_config(model, size), nets, provenance


def schon_vae_workdir_parts(path: str | os.PathLike
                            ) -> tuple[ml_collections.ConfigDict, dict, dict]:
  """(train config, ``variables_by_network``, provenance) of a Schön VAE checkpoint."""
  from jaxlatent.models import default_model_config, vae  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  sd = read_state_dict(path)
  inner = _sub(sd, "state_dict.")
  sd = inner or sd
  variables = vae.vae_variables_from_torch(sd, path)
  dec = variables["params"].get("decoder", {})
  if "conv7" not in dec or "conv1" not in dec:
    raise CheckpointError(f"{path}: no decoder (expected keys conv1.* ... conv7.* of "
                          "Schön's Decoder, or decoder.* of the VAE)")
  ups = [k for k in dec if k.startswith("conv") and k != "conv7"]
  model = default_model_config("vae")
  model.arch = "schon"
  model.latent_dim = int(dec["conv1"]["conv1"]["kernel"].shape[2])
  model.ch = 2 * int(dec["conv7"]["kernel"].shape[2])
  size = 2 ** len(ups)
  nets = {}
  for net in ("encoder", "decoder"):
    if net in variables["params"]:
      nets[net] = {"params": variables["params"][net],
                   "batch_stats": variables["batch_stats"].get(net, {})}
  provenance = {"format": "Schön et al. VAE checkpoint (Latent-Space-Exploration-CT)",
                "source": os.path.abspath(path), "sha256": file_sha256(path),
                "networks_converted": sorted(nets)}
  if "encoder" not in nets:
    provenance["notes"] = ["decoder only: the encoder has fresh weights"]
  return _train_config(model, size), nets, provenance


def _convert(parts_fn, path, workdir) -> str:
  # pylint: disable=g-import-not-at-top
  from jaxlatent.convert.workdir import check_new_workdir, write_workdir
  check_new_workdir(workdir)  # before the conversion
  config, nets, provenance = parts_fn(path)
  try:
    return write_workdir(os.fspath(workdir), config, nets, step=0, provenance=provenance)
  except CheckpointError as e:  # shapes that do not fit together: name the file
    raise CheckpointError(f"{os.fspath(path)}: {e}") from None


def convert_schon_dcgan(path: str | os.PathLike, workdir: str | os.PathLike) -> str:
  """Writes ``workdir`` (config.json + checkpoint at step 0) from a Schön GAN checkpoint."""
  return _convert(schon_dcgan_workdir_parts, path, workdir)


def convert_schon_vae(path: str | os.PathLike, workdir: str | os.PathLike) -> str:
  """Writes ``workdir`` from a Schön VAE ``checkpoint.pt`` or ``decoder.pt``."""
  return _convert(schon_vae_workdir_parts, path, workdir)
