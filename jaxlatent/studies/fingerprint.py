"""Fingerprints of what produced a re-usable analysis artifact, and the re-use decision.

An analysis re-uses finished stages (saved directions, inverted codes, the ground-truth
codes, the factor alignment) when its output folder is analysed again.  Matching them
by latent shape alone would hand one model's results to another model with the same
latent size, so every such artifact carries, in its JSON sidecar, a fingerprint:

  * the generator: its checkpoint step, the sha256 of its training config and the
    sha256 of its parameters' bytes (:func:`generator_fingerprint`, computed once per
    run);
  * the analysis settings that produced it (e.g. ``voynov.*`` and the seed for
    Voynov directions, ``inversion.*`` and the inverted images for codes).

:func:`reuse_decision` compares a stored fingerprint with the expected one: a match
is re-used, a mismatch is recomputed with one log line naming what differs, or, with
``config.cache_mismatch='error'``, refused with a ConfigError.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

import jax
import numpy as np

from jaxlatent.convert.pickle_reader import file_sha256  # noqa: F401 (one copy; artifacts use it)
from jaxlatent.directions.io import to_jsonable
from jaxlatent.errors import ConfigError

MISMATCH_MODES = ("recompute", "error")


def tree_sha256(tree) -> str:
  """sha256 over a pytree's leaves: key path, dtype, shape and bytes of each leaf."""
  h = hashlib.sha256()
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  for path, leaf in leaves:
    arr = np.ascontiguousarray(jax.device_get(leaf))
    h.update(jax.tree_util.keystr(path).encode())
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
  return h.hexdigest()


def config_sha256(config) -> str:
  """sha256 of a config (ConfigDict, dict, dataclass) as canonical JSON."""
  text = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()


def array_sha256(array) -> str:
  """sha256 of an array's dtype, shape and bytes (e.g. the images an inversion used)."""
  arr = np.ascontiguousarray(np.asarray(array))
  h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
  h.update(arr.tobytes())
  return h.hexdigest()


def generator_fingerprint(trained) -> dict[str, Any]:
  """What identifies a restored generator: model, space, checkpoint step, config/params hashes.

  ``trained`` is a :class:`jaxlatent.studies.generators.TrainedGenerator` with its
  generator built.  The workdir path is left out on purpose: a moved run is the same
  model.
  """
  gen = trained.generator
  return {"model": str(trained.train_config.model.name), "generator": str(gen.name),
          "space": str(gen.latent_spec.space),
          "latent_shape": [int(s) for s in gen.latent_spec.shape],
          "checkpoint_step": int(trained.step),
          "config_sha256": config_sha256(trained.train_config),
          "params_sha256": tree_sha256(gen.params)}


def artifact_fingerprint(generator: dict[str, Any], **settings) -> dict[str, Any]:
  """The fingerprint stored with an artifact: the generator's plus the producing settings."""
  return {"generator": dict(generator), "settings": to_jsonable(settings)}


def differences(stored: Any, expected: Any, prefix: str = "") -> list[str]:
  """Dotted keys where two JSON-like fingerprints differ (``stored -> expected`` leaves)."""
  if isinstance(stored, dict) and isinstance(expected, dict):
    out = []
    for k in sorted(set(stored) | set(expected)):
      key = f"{prefix}.{k}" if prefix else str(k)
      if k not in stored or k not in expected:
        out.append(key)
      else:
        out += differences(stored[k], expected[k], key)
    return out
  return [] if to_jsonable(stored) == to_jsonable(expected) else [prefix or "(value)"]


def describe_differences(stored: Any, expected: Any, limit: int = 4) -> str:
  """A short text naming what differs, with the generator called out as another model."""
  if not isinstance(stored, dict):
    return "it carries no fingerprint"
  diff = differences(stored, expected)
  gen = [d for d in diff if d.startswith("generator.")]
  parts = []
  if any(d.endswith(("params_sha256", "config_sha256", ".model", ".generator")) for d in gen):
    parts.append("it was made by another generator (parameters or training config differ)")
  elif "generator.checkpoint_step" in gen:
    s, e = stored["generator"]["checkpoint_step"], expected["generator"]["checkpoint_step"]
    parts.append(f"it was made from another checkpoint (step {s}, this run {e})")
  elif gen:
    parts.append("its generator differs in " + ", ".join(d.split(".", 1)[1] for d in gen))
  rest = [d.split(".", 1)[1] if d.startswith("settings.") else d
          for d in diff if not d.startswith("generator.")]
  if rest:
    more = f" (+{len(rest) - limit} more)" if len(rest) > limit else ""
    parts.append("it was made with other settings: " + ", ".join(rest[:limit]) + more)
  return "; ".join(parts) or "its fingerprint differs"


def reuse_decision(what: str, path: str, stored: Any, expected: dict[str, Any], mode: str,
                   log: Callable[[str], None]) -> bool:
  """True when an artifact whose fingerprint is ``stored`` may be re-used.

  A mismatch logs one line and returns False (the caller recomputes), or with
  ``mode='error'`` raises ConfigError naming the file, what differs and the key.
  """
  if to_jsonable(stored) == to_jsonable(expected):
    log(f"{what}: re-using {path}")
    return True
  why = describe_differences(stored, expected)
  if mode == "error":
    raise ConfigError(f"{path}: {why} (config.cache_mismatch='error'); delete it, use "
                      "another --out, or set config.cache_mismatch='recompute'")
  log(f"{what}: not re-using {path}: {why}; recomputing")
  return False
