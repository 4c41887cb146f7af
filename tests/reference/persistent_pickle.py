"""Writes torch modules in the pickle format of stylegan2-ada-pytorch's snapshots.

The official ``torch_utils.persistence.persistent_class`` makes every network pickle
as ``_reconstruct_persistent_obj(meta)`` with ``meta = dict(type='class', version=6,
module_src=<its module's source>, class_name=..., state=<the module's __dict__>)``,
where the state holds ``_parameters``, ``_buffers``, ``_modules``, ``_init_args`` and
``_init_kwargs`` (``dnnlib.util.EasyDict`` for nested kwargs).  This helper gives any
torch module tree (e.g. a port of the official networks) that same byte format, so
tests can feed real-format snapshots to ``jaxlatent.convert``:

  with official_modules() as easydict:
    kwargs = dict(z_dim=512, mapping_kwargs=easydict(num_layers=8), ...)
    dump_network_pickle(path, {'G': G, 'D': D, 'G_ema': G_ema,
                               'training_set_kwargs': {...}},
                        init_kwargs={G: kwargs, G_ema: kwargs, D: d_kwargs})

The stand-in ``torch_utils`` / ``dnnlib`` modules exist only inside the ``with``; their
``_reconstruct_persistent_obj`` raises, so such a pickle cannot be loaded by plain
``pickle`` in the tests by accident.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from typing import Any, Iterator

import torch

_NAMES = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")
DEFAULT_SOURCE = "# the networks' module source would be here; a reader must never run it\n"


def _reconstruct_persistent_obj(meta):  # the official name; never called here
  raise RuntimeError("the test stand-in of torch_utils.persistence was asked to load a pickle")


@contextlib.contextmanager
def official_modules() -> Iterator[type]:
  """Registers stand-ins of ``torch_utils.persistence`` and ``dnnlib.util`` in sys.modules.

  Yields the stand-in ``EasyDict`` class (a dict pickled as ``dnnlib.util.EasyDict``).
  """
  saved = {n: sys.modules.get(n) for n in _NAMES}
  mods = {n: types.ModuleType(n) for n in _NAMES}
  easydict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
  reconstruct = types.FunctionType(_reconstruct_persistent_obj.__code__, {},
                                   "_reconstruct_persistent_obj")
  reconstruct.__module__ = "torch_utils.persistence"
  reconstruct.__qualname__ = "_reconstruct_persistent_obj"
  mods["torch_utils.persistence"]._reconstruct_persistent_obj = reconstruct
  mods["torch_utils"].persistence = mods["torch_utils.persistence"]
  mods["dnnlib.util"].EasyDict = easydict
  mods["dnnlib"].util = mods["dnnlib.util"]
  mods["dnnlib"].EasyDict = easydict
  sys.modules.update(mods)
  try:
    yield easydict
  finally:
    for n, m in saved.items():
      if m is None:
        sys.modules.pop(n, None)
      else:
        sys.modules[n] = m


def dump_network_pickle(path, data: Any, init_kwargs: dict | None = None,
                        module_src: str = DEFAULT_SOURCE) -> None:
  """``pickle.dump(data)`` with every torch module pickled as a persistent object.

  Must run inside :func:`official_modules`.

  Args:
    path: output file.
    data: e.g. ``{'G': G, 'D': D, 'G_ema': G_ema, 'augment_pipe': None,
      'training_set_kwargs': {...}}``.
    init_kwargs: ``{module: kwargs}`` recorded as the module's ``_init_kwargs``
      (others: ``{}``).
    module_src: the source string stored in each object's ``meta``.
  """
  reconstruct = sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj
  kwargs_of = {id(m): kw for m, kw in (init_kwargs or {}).items()}

  class Pickler(pickle.Pickler):

    def reducer_override(self, obj):
      if not isinstance(obj, torch.nn.Module):
        return NotImplemented
      state = dict(obj.__dict__)
      state.setdefault("_init_args", ())
      state.setdefault("_init_kwargs", kwargs_of.get(id(obj), {}))
      meta = dict(type="class", version=6, module_src=module_src,
                  class_name=type(obj).__name__, state=state)
      return reconstruct, (meta,)

  with open(path, "wb") as f:
    Pickler(f, protocol=4).dump(data)
