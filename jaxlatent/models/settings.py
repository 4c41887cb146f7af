"""``config.model`` from dataclass fields: each model's defaults are written once.

A model's settings are the fields of its Flax modules (and, for training-only keys,
of a small frozen dataclass next to them).  :func:`default_config` derives the
``config.model`` ConfigDict from those fields, and :func:`kwargs_for` picks a
module's keyword arguments out of ``config.model``, so ``Module(**kwargs_for(Module,
config.model))`` builds it with the defaults of any key the config leaves out.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import ml_collections

# Module fields that never come from config.model (set from config.image_size or by Flax).
NOT_SETTINGS = ("parent", "name", "image_size", "img_resolution")


def _setting_fields(cls: type, renames: Mapping[str, str], exclude: tuple[str, ...] = ()
                    ) -> list[tuple[str, dataclasses.Field]]:
  """``(config key, field)`` of ``cls``'s fields that have a default, in order."""
  out = []
  for f in dataclasses.fields(cls):
    if f.name in NOT_SETTINGS or f.name in exclude or f.default is dataclasses.MISSING:
      continue
    out.append((renames.get(f.name, f.name), f))
  return out


def _typed_none(f: dataclasses.Field) -> Any:
  """A ``None`` default as a typed FieldReference, so a command-line override parses."""
  annotation = str(f.type)
  for py_type in (float, int, str):
    if py_type.__name__ in annotation:
      return ml_collections.FieldReference(None, field_type=py_type)
  return None


def default_config(name: str, *classes: type, renames: Mapping[str, str] | None = None,
                   exclude: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  """``config.model`` with ``name`` and the defaults of ``classes``' fields (first wins).

  ``renames`` maps a field name to its config key where they differ; fields named in
  ``exclude`` are not settings (fixed by the model).
  """
  c = ml_collections.ConfigDict()
  c.name = name
  for cls in classes:
    for key, f in _setting_fields(cls, renames or {}, exclude):
      if key not in c:
        c[key] = _typed_none(f) if f.default is None else f.default
  return c


def kwargs_for(cls: type, model_config: Mapping[str, Any],
               renames: Mapping[str, str] | None = None,
               exclude: tuple[str, ...] = ()) -> dict[str, Any]:
  """The keyword arguments of ``cls`` that ``model_config`` sets (by config key)."""
  out = {}
  for key, f in _setting_fields(cls, renames or {}, exclude):
    if key in model_config:
      out[f.name] = model_config[key]
  return out
