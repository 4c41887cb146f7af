"""Imports networks trained elsewhere into jaxlatent workdirs, without running their code.

``python -m jaxlatent.convert stylegan2-ada network-snapshot.pkl --workdir=OUT`` turns an
official stylegan2-ada-pytorch snapshot into a workdir (``schon-dcgan`` / ``schon-vae``:
Schön et al.'s PyTorch checkpoints, :mod:`jaxlatent.convert.schon`) that ``analyze.py`` reads like
one written by ``train.py``; :func:`load_stylegan2_ada` gives the same network as a
:class:`~jaxlatent.Generator` in-process.  :mod:`jaxlatent.convert.pickle_reader`
reads the PyTorch files through an allowlist (no pickled code is ever executed, torch
is not needed); :mod:`jaxlatent.convert.workdir` writes the workdir atomically.
"""

from __future__ import annotations

from jaxlatent.convert.pickle_reader import NetworkRecord, read_network_pickle, read_state_dict


def __getattr__(name):
  # The model-side functions import jax/flax: loaded on first use only.
  if name in ("load_stylegan2_ada", "convert_stylegan2_ada", "stylegan2_ada_workdir_parts"):
    from jaxlatent.convert import stylegan2_ada  # pylint: disable=g-import-not-at-top
    return getattr(stylegan2_ada, name)
  if name in ("convert_schon_dcgan", "convert_schon_vae"):
    from jaxlatent.convert import schon  # pylint: disable=g-import-not-at-top
    return getattr(schon, name)
  if name == "write_workdir":
    from jaxlatent.convert.workdir import write_workdir  # pylint: disable=g-import-not-at-top
    return write_workdir
  raise AttributeError(f"module 'jaxlatent.convert' has no attribute {name!r}")


__all__ = ["NetworkRecord", "convert_schon_dcgan", "convert_schon_vae", "convert_stylegan2_ada", "load_stylegan2_ada", "read_network_pickle", "read_state_dict",
           "write_workdir"]
