"""Writes converted networks as a training workdir that ``analyze.py`` reads.

The workdir is what ``train.py`` would leave after ``step`` steps: ``config.json`` and
``checkpoints/<step>/`` holding the model's whole train state (the trainer's
``init`` state, with the converted networks' variables put in their places and fresh
optimizer moments), so ``jaxlatent.training.checkpoint.load_trained`` and therefore
``analyze.py`` (and a resumed ``train.py``) need nothing special.  It is written in
a temporary folder beside ``out`` and renamed at the end: a failure leaves no
half-written workdir.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlatent.errors import CheckpointError, ConfigError

PROVENANCE_FILE = "converted_from.json"

# Where each network's Flax variable collections live in the model's TrainState
# (jaxlatent/training/trainers.py): network -> collection -> path of fields/keys.
STATE_LAYOUT: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "dcgan": {
        "generator": {"params": ("params", "generator"),
                      "batch_stats": ("model_state", "generator")},
        "discriminator": {"params": ("params", "discriminator"),
                          "batch_stats": ("model_state", "discriminator")},
    },
    "vae": {
        "encoder": {"params": ("params", "encoder"),
                    "batch_stats": ("model_state", "encoder")},
        "decoder": {"params": ("params", "decoder"),
                    "batch_stats": ("model_state", "decoder")},
    },
    "stylegan2": {
        "generator": {"params": ("params", "generator")},
        # The EMA generator is the one analysed (trainer.generator(state)).
        # 'stats' / 'noise_const': the generator's buffers as separate collections;
        # 'buffers': as one collection (jaxlatent.models.stylegan2_ada).
        "generator_ema": {"params": ("ema_params",), "stats": ("model_state", "stats"),
                          "noise_const": ("model_state", "noise_const"),
                          "buffers": ("model_state", "buffers")},
        "discriminator": {"params": ("params", "discriminator")},
    },
    "stylegan2_simple": {
        "generator": {"params": ("params", "generator")},
        "generator_ema": {"params": ("ema_params",), "stats": ("model_state", "stats"),
                          "noise_const": ("model_state", "noise_const")},
        "discriminator": {"params": ("params", "discriminator")},
    },
    # The attribute models: params only (no BatchNorm statistics in their state).
    "ifcvae_gan": {net: {"params": ("params", net)}
                   for net in ("encoder", "decoder", "aux", "discriminator")},
    "ssdaae": {net: {"params": ("params", net)}
               for net in ("encoder", "decoder", "disc_z", "disc_y")},
}


def _path_str(path) -> str:
  return ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                  for k in path)


def _fit(given: Any, target: Any, where: str) -> Any:
  """``given`` with ``target``'s tree structure and dtypes; a mismatch raises, naming it."""
  g_leaves = dict((_path_str(p), v) for p, v in jax.tree_util.tree_flatten_with_path(given)[0])
  t_flat, treedef = jax.tree_util.tree_flatten_with_path(target)
  t_leaves = dict((_path_str(p), v) for p, v in t_flat)
  missing = [k for k in t_leaves if k not in g_leaves]
  extra = [k for k in g_leaves if k not in t_leaves]
  if missing or extra:
    raise CheckpointError(
        f"{where}: the converted variables do not match the model built from the config "
        f"(missing: {missing[:5]}{' ...' if len(missing) > 5 else ''}; unexpected: "
        f"{extra[:5]}{' ...' if len(extra) > 5 else ''})")
  out = []
  for p, t in t_flat:
    key = _path_str(p)
    g = np.asarray(g_leaves[key])
    if g.shape != tuple(t.shape):
      raise CheckpointError(f"{where}.{key}: converted shape {g.shape} but the model built "
                            f"from the config has {tuple(t.shape)}")
    if np.dtype(t.dtype).kind != g.dtype.kind and not (
        np.issubdtype(t.dtype, np.floating) and np.issubdtype(g.dtype, np.floating)):
      raise CheckpointError(f"{where}.{key}: converted dtype {g.dtype} but the model has "
                            f"{t.dtype}")
    out.append(jnp.asarray(g, dtype=t.dtype))
  return jax.tree_util.tree_unflatten(treedef, out)


_ABSENT = object()


def _get(tree: Any, path: tuple[str, ...]) -> Any:
  """The subtree at ``path``, or ``_ABSENT`` when the state has no such field / key."""
  for k in path:
    tree = tree.get(k, _ABSENT) if isinstance(tree, dict) else getattr(tree, k, _ABSENT)
    if tree is _ABSENT:
      return _ABSENT
  return tree


def _set(tree: Any, path: tuple[str, ...], value: Any) -> Any:
  """``tree`` with ``path`` replaced (TrainState fields via ``replace``, dicts copied)."""
  if not path:
    return value
  head, rest = path[0], path[1:]
  if isinstance(tree, dict):
    return {**tree, head: _set(tree[head], rest, value)}
  return tree.replace(**{head: _set(getattr(tree, head), rest, value)})


def check_layout(model_name: str, variables_by_network: dict[str, dict]) -> dict:
  """The model's :data:`STATE_LAYOUT`; raises if a network or collection has no place."""
  if model_name not in STATE_LAYOUT:
    raise ConfigError(f"model.name={model_name!r}: no converted-workdir layout (known: "
                      f"{sorted(STATE_LAYOUT)})")
  layout = STATE_LAYOUT[model_name]
  for net, variables in variables_by_network.items():
    if net not in layout:
      raise ConfigError(f"network {net!r}: model {model_name} has {sorted(layout)}")
    for coll in variables:
      if coll not in layout[net]:
        raise CheckpointError(f"{net}: variable collection {coll!r} is not kept by model "
                              f"{model_name} (it keeps {sorted(layout[net])})")
  return layout


def place_variables(state: Any, model_name: str, variables_by_network: dict[str, dict]) -> Any:
  """``state`` with each network's variable collections put where the trainer keeps them.

  Args:
    state: the trainer's ``init`` TrainState.
    model_name: ``config.model.name`` (a key of :data:`STATE_LAYOUT`).
    variables_by_network: ``{network: {collection: tree}}``, e.g. ``{'generator':
      {'params': ..., 'batch_stats': ...}}``; networks left out keep their init values.

  Raises:
    ConfigError: an unknown network for this model.
    CheckpointError: a collection the model does not keep, a missing collection, or a
      tensor whose name or shape differs from the model built from the config.
  """
  layout = check_layout(model_name, variables_by_network)
  for net, variables in variables_by_network.items():
    for coll, path in layout[net].items():
      target = _get(state, path)
      if target is _ABSENT:
        if coll in variables:
          raise CheckpointError(f"{net}: the {model_name} train state has no "
                                f"{'.'.join(path)} for variable collection {coll!r}")
        continue
      if coll not in variables:
        if jax.tree_util.tree_leaves(target):
          raise CheckpointError(f"{net}: the converted variables lack collection {coll!r}")
        continue
      state = _set(state, path, _fit(variables[coll], target, f"{net}.{coll}"))
  return state


def check_new_workdir(out: str | os.PathLike, flag: str = "--workdir") -> str:
  """``out`` as an absolute path; raises ConfigError (naming ``flag``) unless it is new or
  an empty folder."""
  out = os.path.abspath(os.fspath(out))
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ConfigError(f"{flag} {out} exists and is not empty: choose a new folder")
  return out


def write_workdir(out: str, train_config: ml_collections.ConfigDict,
                  variables_by_network: dict[str, dict], step: int,
                  provenance: dict | None = None) -> str:
  """Writes ``out`` as a training workdir holding the given networks; returns its path.

  Args:
    out: the workdir to create; it must not exist or be an empty folder.
    train_config: the run config (``model``, ``image_size``, ``data``, ...), saved as
      ``config.json`` and used to build the trainer whose state layout is filled.
    variables_by_network: ``{network: {collection: tree}}`` (see
      :func:`place_variables`); the rest of the state is the trainer's ``init``
      (seeded with ``train_config.seed``), e.g. fresh Adam moments.
    step: the step number the checkpoint is saved under.
    provenance: optional JSON-able description of the source (file, hash, networks),
      written to ``converted_from.json``.

  Raises:
    ConfigError: ``out`` exists and is not an empty folder, or a bad config.
    CheckpointError: the variables do not fit the model built from the config.
  """
  # pylint: disable=g-import-not-at-top
  from jaxlatent.training.checkpoint import CHECKPOINT_DIR, Checkpointer, save_run_config
  from jaxlatent.training.trainers import make_trainer

  out = check_new_workdir(out)
  if int(step) < 0:
    raise ConfigError(f"step={step}: must be >= 0")
  if "model" not in train_config or "name" not in train_config.model:
    raise ConfigError("config.model.name is missing")
  check_layout(str(train_config.model.name), variables_by_network)
  trainer = make_trainer(train_config)
  state = jax.jit(trainer.init)(jax.random.PRNGKey(int(train_config.get("seed", 0))))
  state = place_variables(state, str(train_config.model.name), variables_by_network)
  state = state.replace(step=jnp.asarray(int(step), jnp.int32))

  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
  try:
    save_run_config(tmp, train_config)
    if provenance is not None:
      with open(os.path.join(tmp, PROVENANCE_FILE), "w") as f:
        json.dump(provenance, f, indent=2, sort_keys=True, default=str)
    ckpt = Checkpointer(os.path.join(tmp, CHECKPOINT_DIR), keep=1)
    try:
      ckpt.save(int(step), state)
      ckpt.wait()
    finally:
      ckpt.close()
    if os.path.isdir(out):
      os.rmdir(out)  # empty (checked above); rename needs the name free
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out
