"""A trained generator exported as a small folder that ``analyze.py`` reads like a workdir.

A ``train.py`` workdir keeps the whole train state (discriminator, optimizer moments,
every checkpoint); analysing a run needs only the networks the analysis evaluates.
:func:`export_generator` writes::

  out/config.json     the run's config.json, byte for byte
  out/generator.npz   the analysed networks' variables (``np.savez_compressed``), one
                      array per key ``<network>/<collection>/<path>``, e.g.
                      ``generator/params/Dense_0/kernel``, as trained (float32)
  out/export.json     format_version, model, source workdir, step, the sha256 of
                      generator.npz, the networks and collections, jaxlatent version, date

:func:`jaxlatent.training.checkpoint.load_trained` (and so ``analyze.py`` and every
study) reads such a folder through :func:`load_export`: the trainer built from
config.json gives the state's structure, the arrays are put in their places
(:data:`jaxlatent.convert.workdir.STATE_LAYOUT`) after checking the hash and every
key and shape.  The rest of the state (discriminator, optimizer) is not stored, so an
export cannot be resumed by ``train.py``.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlatent import atomic_io
from jaxlatent.convert.pickle_reader import file_sha256
from jaxlatent.convert.workdir import (STATE_LAYOUT, _ABSENT, _get, check_new_workdir,
                                       place_variables)
from jaxlatent.errors import CheckpointError, ConfigError
from jaxlatent.training import checkpoint

FORMAT_VERSION = 1
EXPORT_FILE = checkpoint.EXPORT_FILE
ARRAYS_FILE = "generator.npz"

# The networks each model's analysis evaluates (trainer.generator(state), the VAE's
# encoder for the inversion, the encoder models' edits in studies.edit_comparison).
EXPORTED_NETWORKS: dict[str, tuple[str, ...]] = {
    "dcgan": ("generator",),
    "vae": ("encoder", "decoder"),
    "stylegan2": ("generator_ema",),
    "stylegan2_simple": ("generator_ema",),
    "ifcvae_gan": ("encoder", "decoder"),
    "ssdaae": ("encoder", "decoder"),
}


def exported_networks(model_name: str) -> tuple[str, ...]:
  """The networks an export of ``model_name`` holds; ConfigError for another model."""
  if model_name not in EXPORTED_NETWORKS or model_name not in STATE_LAYOUT:
    raise ConfigError(f"model.name={model_name!r} is not exportable (exportable: "
                      f"{sorted(EXPORTED_NETWORKS)})")
  return EXPORTED_NETWORKS[model_name]


def collect_variables(state: Any, model_name: str) -> dict[str, dict[str, Any]]:
  """``{network: {collection: tree}}`` of the exported networks in ``state``.

  Collections the state lacks or that hold no array (e.g. no BatchNorm) are left out.
  """
  layout = STATE_LAYOUT[model_name]
  out: dict[str, dict[str, Any]] = {}
  for net in exported_networks(model_name):
    for coll, path in layout[net].items():
      tree = _get(state, path)
      if tree is not _ABSENT and jax.tree_util.tree_leaves(tree):
        out.setdefault(net, {})[coll] = tree
  return out


def _key_name(k) -> str:
  name = str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
  if "/" in name or not name:
    raise ConfigError(f"variable name {name!r} cannot be a generator.npz key component")
  return name


def flat_arrays(variables: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """``{'<network>/<collection>/<path>': leaf}`` of :func:`collect_variables`' result."""
  flat = {}
  for net, colls in variables.items():
    for coll, tree in colls.items():
      for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        flat["/".join([net, coll] + [_key_name(k) for k in path])] = leaf
  return flat


def _nest(flat: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
  """Inverse of :func:`flat_arrays`: nested dicts (list indices stay string keys, which
  :func:`jaxlatent.convert.workdir.place_variables` matches by name)."""
  return flax.traverse_util.unflatten_dict(flat, sep="/")


def export_generator(workdir: str, out: str, step: int | None = None) -> str:
  """Writes the analysed networks of ``workdir``'s checkpoint ``step`` to ``out``.

  Args:
    workdir: a ``train.py`` (or converted) workdir.
    out: the folder to create (new or empty); it appears only once complete.
    step: the checkpoint step; ``None``: the latest.

  Returns:
    ``out`` as an absolute path.

  Raises:
    ConfigError: ``out`` exists and is not empty, or the model is not exportable.
    CheckpointError: ``workdir`` has no such readable checkpoint.
  """
  workdir = os.path.abspath(os.fspath(workdir))
  out = check_new_workdir(out, "--out")
  if out == workdir:
    raise ConfigError(f"--out {out} is the workdir itself: choose a new folder")
  model = str(checkpoint.load_run_config(workdir).model.get("name", ""))
  exported_networks(model)
  if not os.path.isfile(os.path.join(workdir, EXPORT_FILE)):
    steps = checkpoint.checkpoint_steps(workdir)
    if not steps:
      raise CheckpointError(f"no checkpoint in {os.path.join(workdir, checkpoint.CHECKPOINT_DIR)}")
    if step is not None and int(step) not in steps:
      raise CheckpointError(f"no checkpoint of step {step} in "
                            f"{os.path.join(workdir, checkpoint.CHECKPOINT_DIR)} (have {steps})")
  _, _, state = checkpoint.load_trained(workdir, step)
  variables = collect_variables(state, model)
  arrays = {k: np.asarray(jax.device_get(v)) for k, v in flat_arrays(variables).items()}
  step = int(np.asarray(state.step))

  tmp = atomic_io.temp_dir_beside(out, create_parent=True)
  try:
    shutil.copyfile(os.path.join(workdir, checkpoint.CONFIG_FILE),
                    os.path.join(tmp, checkpoint.CONFIG_FILE))
    npz = os.path.join(tmp, ARRAYS_FILE)
    np.savez_compressed(npz, **arrays)
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model,
        "source_workdir": workdir,
        "step": step,
        "generator_npz_sha256": file_sha256(npz),
        "networks": {net: sorted(colls) for net, colls in variables.items()},
        "num_arrays": len(arrays),
        "jaxlatent_version": _version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with open(os.path.join(tmp, EXPORT_FILE), "w") as f:
      json.dump(meta, f, indent=2, sort_keys=True)
      f.write("\n")
    atomic_io.atomic_replace_dir(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


def _version() -> str:
  import jaxlatent  # pylint: disable=g-import-not-at-top
  return str(jaxlatent.__version__)


def is_export(path: str) -> bool:
  """True when ``path`` is an exported generator folder (it holds ``export.json``)."""
  return os.path.isfile(os.path.join(path, EXPORT_FILE))


def read_export_meta(path: str) -> dict:
  """``path/export.json`` as a dict; CheckpointError naming the file when unreadable."""
  file = os.path.join(path, EXPORT_FILE)
  try:
    with open(file) as f:
      meta = json.load(f)
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{file} cannot be read: {e}") from None
  if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
    raise CheckpointError(f"{file}: format_version "
                          f"{meta.get('format_version') if isinstance(meta, dict) else None!r}"
                          f" is not {FORMAT_VERSION} (written by another jaxlatent version?)")
  for key in ("model", "step", "generator_npz_sha256"):
    if key not in meta:
      raise CheckpointError(f"{file}: key {key!r} is missing")
  return meta


def _zeros(leaf: jax.ShapeDtypeStruct) -> jax.Array:
  if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    impl = jax.random.key_impl(jax.random.key(0))
    return jax.random.wrap_key_data(
        jnp.zeros(tuple(leaf.shape) + tuple(impl.key_shape), jnp.uint32), impl=impl)
  return jnp.zeros(leaf.shape, leaf.dtype)


def load_export(path: str, step: int | None = None
                ) -> tuple[ml_collections.ConfigDict, Any, Any]:
  """``(config, trainer, state)`` of an exported folder, like ``load_trained``.

  The state has the structure of the trainer's ``init`` state, the exported networks in
  place, zeros elsewhere (discriminator, optimizer moments: not needed to analyse) and
  ``step`` the exported step.

  Raises:
    CheckpointError: a bad hash, a missing, unexpected or mis-shaped key, another
      step than the exported one, or an unreadable file (each naming the file).
  """
  # pylint: disable=g-import-not-at-top
  from jaxlatent.training.trainers import make_trainer
  path = os.path.abspath(path)
  meta = read_export_meta(path)
  config = checkpoint.load_run_config(path)
  model = str(config.model.get("name", ""))
  meta_file = os.path.join(path, EXPORT_FILE)
  if meta["model"] != model:
    raise CheckpointError(f"{meta_file}: model {meta['model']!r} but config.json has "
                          f"model.name={model!r}")
  exported = int(meta["step"])
  if step is not None and int(step) != exported:
    raise CheckpointError(f"{path} is an export of step {exported}, not step {step}")
  npz = os.path.join(path, ARRAYS_FILE)
  try:
    digest = file_sha256(npz)
  except OSError as e:
    raise CheckpointError(f"{npz} cannot be read: {e.strerror or e}") from None
  if digest != meta["generator_npz_sha256"]:
    raise CheckpointError(f"{npz}: sha256 {digest} differs from the one in {EXPORT_FILE} "
                          f"({meta['generator_npz_sha256']}): the file is corrupt or changed")
  trainer = make_trainer(config)
  # The structure of trainer.init's state without running (and compiling) it: only the
  # exported networks are used, the rest stays zeros.
  state = jax.tree.map(_zeros, jax.eval_shape(trainer.init, jax.random.PRNGKey(0)))
  expected = flat_arrays(collect_variables(state, model))
  try:
    with np.load(npz, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"{npz} cannot be read: {type(e).__name__}: {e}") from None
  for key in expected:
    if key not in arrays:
      raise CheckpointError(f"{npz}: key {key!r} is missing (the {model} model built from "
                            "config.json needs it)")
  for key, value in arrays.items():
    if key not in expected:
      raise CheckpointError(f"{npz}: unexpected key {key!r} (not a variable of the {model} "
                            "model built from config.json)")
    want = tuple(expected[key].shape)
    if tuple(value.shape) != want:
      raise CheckpointError(f"{npz}: key {key!r} has shape {tuple(value.shape)} but the "
                            f"model built from config.json has {want}")
    if np.dtype(expected[key].dtype) != value.dtype:
      raise CheckpointError(f"{npz}: key {key!r} has dtype {value.dtype} but the model "
                            f"built from config.json has {np.dtype(expected[key].dtype)}")
  state = place_variables(state, model, _nest(arrays))
  return config, trainer, state.replace(step=jnp.asarray(exported, state.step.dtype))
