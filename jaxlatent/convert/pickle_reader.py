"""Reads PyTorch network files without executing anything they contain.

An official stylegan2-ada-pytorch ``network-snapshot.pkl`` is a plain ``pickle`` of
``{'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}``.  Each network is a
``torch_utils.persistence`` object: it pickles as a call of
``_reconstruct_persistent_obj(meta)`` whose ``meta`` holds the *source code* of its
Python module, the class name and the module's ``__dict__`` (``_parameters``,
``_buffers``, ``_modules``, ``_init_kwargs``).  Loading it with ``pickle.load``
would ``exec`` that source.  Here every global a pickle names goes through an
explicit allowlist and resolves to OUR function: a persistent object becomes a
:class:`NetworkRecord` (class name, constructor kwargs, flattened state_dict), a
tensor becomes a NumPy array parsed from the storage bytes, and anything else
(``os.system``, ``builtins.eval``, an unknown class) raises
:class:`~jaxlatent.errors.CheckpointError`.  The source code is kept as a string
only and never run; torch itself is not needed.

Tensor storages are read from both torch serialisation formats: the zip archive
(``<name>/data.pkl`` + ``<name>/data/<key>``; ``torch.save`` since 1.6) and the
legacy stream (magic number, protocol, sys info, pickle, storage keys, raw data:
what a storage's ``__reduce__`` embeds inside a plain pickle).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Callable

import numpy as np

from jaxlatent.errors import CheckpointError

# torch's legacy serialisation header (torch/serialization.py).
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def _bfloat16():
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  return np.dtype(ml_dtypes.bfloat16)


# torch.<Name>Storage -> element dtype (little-endian unless the file says otherwise).
_STORAGE_DTYPES: dict[str, Callable[[], np.dtype]] = {
    "FloatStorage": lambda: np.dtype("<f4"),
    "DoubleStorage": lambda: np.dtype("<f8"),
    "HalfStorage": lambda: np.dtype("<f2"),
    "BFloat16Storage": _bfloat16,
    "LongStorage": lambda: np.dtype("<i8"),
    "IntStorage": lambda: np.dtype("<i4"),
    "ShortStorage": lambda: np.dtype("<i2"),
    "CharStorage": lambda: np.dtype("i1"),
    "ByteStorage": lambda: np.dtype("u1"),
    "BoolStorage": lambda: np.dtype("?"),
    "ComplexFloatStorage": lambda: np.dtype("<c8"),
    "ComplexDoubleStorage": lambda: np.dtype("<c16"),
    "UntypedStorage": lambda: np.dtype("u1"),
}


@dataclasses.dataclass(frozen=True)
class NetworkRecord:
  """One network of a PyTorch pickle, as data.

  Attributes:
    class_name: the class the network was an instance of (e.g. 'Generator'); '' when
      the file held a bare state_dict.
    init_kwargs: the constructor's keyword arguments (plain dicts, lists, numbers).
    state_dict: ``'a.b.weight' -> array``, the names and order of torch's ``state_dict()``.
    init_args: the constructor's positional arguments (empty for the official networks).
  """

  class_name: str
  init_kwargs: dict
  state_dict: dict[str, np.ndarray]
  init_args: tuple = ()


# ----------------------------------------------------------------------------- stand-ins


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """What ``torch.<Name>Storage`` resolves to: a name and its element dtype."""

  name: str

  @property
  def dtype(self) -> np.dtype:
    return _STORAGE_DTYPES[self.name]()


class _Storage:
  """A flat storage; ``data`` (1-D array) is filled when its bytes have been read."""

  def __init__(self, dtype: np.dtype, numel: int):
    self.dtype, self.numel = dtype, numel
    self.data: np.ndarray | None = None


class _TypeMarker:
  """What ``torch.Tensor`` / ``torch.nn.Parameter`` resolve to (only ever compared)."""

  def __init__(self, name: str):
    self.name = name


class _PersistentModule:
  """A ``torch_utils.persistence`` object: its class name and ``__dict__``, no code."""

  def __init__(self, class_name: str, state: dict):
    self.class_name, self.state = class_name, state

  def record(self) -> NetworkRecord:
    kwargs = self.state.get("_init_kwargs") or {}
    args = self.state.get("_init_args") or ()
    return NetworkRecord(self.class_name, _plain(kwargs), _module_state_dict(self, ""),
                         tuple(_plain(list(args))))


class _NumpyArray:
  """``numpy.core.multiarray._reconstruct`` result; ``__setstate__`` builds the array."""

  def __init__(self):
    self.array: np.ndarray | None = None

  def __setstate__(self, state):
    # ndarray.__reduce__ state: (version, shape, dtype, is_fortran, raw bytes).
    if not (isinstance(state, tuple) and len(state) == 5):
      raise ValueError("unexpected numpy array state")
    _, shape, dtype, fortran, raw = state
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(raw, (bytes, bytearray)):
      raise ValueError("numpy arrays of Python objects are not read")
    self.array = np.frombuffer(bytes(raw), dtype).reshape(shape, order="F" if fortran else "C").copy()


def _tensor_from_storage(storage, offset, size, stride, requires_grad=False, hooks=None,
                         metadata=None) -> np.ndarray:
  """``torch._utils._rebuild_tensor_v2`` -> a C-contiguous array copied from ``storage``."""
  del requires_grad, hooks
  if not isinstance(storage, _Storage):
    raise ValueError("a tensor refers to something that is not a storage")
  if storage.data is None:  # legacy torch.save: the bytes follow the pickle
    return _LazyTensor(storage, offset, size, stride, metadata)
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  if len(size) != len(stride) or any(s < 0 for s in size + stride) or offset < 0:
    raise ValueError(f"invalid tensor geometry size={size} stride={stride} offset={offset}")
  if 0 in size:
    return np.zeros(size, storage.data.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= storage.data.size:  # never read past the buffer (as_strided does not check)
    raise ValueError(f"tensor of size {size} stride {stride} offset {offset} exceeds its "
                     f"storage of {storage.data.size} elements")
  item = storage.data.itemsize
  out = np.lib.stride_tricks.as_strided(storage.data[offset:], size,
                                        tuple(s * item for s in stride)).copy()
  if metadata:
    if metadata.get("conj"):
      out = np.conj(out)
    if metadata.get("neg"):
      out = -out
  return out


class _LazyTensor:
  """A tensor whose storage bytes come later in the stream; see :func:`_resolve`."""

  def __init__(self, *args):
    self.args = args

  def array(self) -> np.ndarray:
    out = _tensor_from_storage(self.args[0], *self.args[1:4], metadata=self.args[4])
    if isinstance(out, _LazyTensor):
      raise ValueError("a tensor refers to a storage whose bytes are missing")
    return out


def _resolve(x: Any) -> Any:
  """Replaces every :class:`_LazyTensor` in containers / persistent modules by its array."""
  if isinstance(x, _LazyTensor):
    return x.array()
  if isinstance(x, _PersistentModule):
    x.state = _resolve(x.state)
    return x
  if isinstance(x, dict):
    for k in list(x):
      x[k] = _resolve(x[k])
    return x
  if isinstance(x, list):
    return [_resolve(v) for v in x]
  if isinstance(x, tuple):
    return tuple(_resolve(v) for v in x)
  return x


def _tensor_from_storage_v1(storage, offset, size, stride):
  return _tensor_from_storage(storage, offset, size, stride)


def _parameter(data, requires_grad=False, hooks=None, state=None):
  """``torch._utils._rebuild_parameter[_with_state]``: a parameter is its data."""
  del requires_grad, hooks, state
  if not isinstance(data, (np.ndarray, _LazyTensor)):
    raise ValueError("a parameter's data is not a tensor")
  return data


def _from_type(func, new_type, args, state):
  """``torch._tensor._rebuild_from_type_v2``: only plain tensors and parameters."""
  del state
  if not isinstance(new_type, _TypeMarker) or func not in (_tensor_from_storage, _parameter):
    raise ValueError("a tensor subclass that is not torch.Tensor / Parameter")
  return func(*args)


def _numpy_reconstruct(cls, shape, dtype_code):
  del shape, dtype_code
  if not (isinstance(cls, _TypeMarker) and cls.name == "ndarray"):
    raise ValueError("numpy reconstruction of a type that is not ndarray")
  return _NumpyArray()


def _numpy_scalar(dtype, raw=None):
  if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(raw, bytes):
    raise ValueError("numpy scalars of Python objects are not read")
  return np.frombuffer(raw, dtype)[0]


# ----------------------------------------------------------------------------- unpicklers


def _reconstruct_persistent_obj(meta) -> _PersistentModule:
  """Stand-in of ``torch_utils.persistence._reconstruct_persistent_obj``: keeps data only.

  ``meta['module_src']`` (the pickled source code) is deliberately ignored.
  """
  if not isinstance(meta, dict) or meta.get("type") != "class":
    raise ValueError("a persistent object that is not a class instance")
  name, state = meta.get("class_name"), meta.get("state")
  if not isinstance(name, str) or not isinstance(state, dict):
    raise ValueError("a persistent object without class_name / state")
  return _PersistentModule(name, state)


def _allowlist() -> dict[tuple[str, str], Any]:
  numpy_globals = {}
  for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    numpy_globals[(mod, "_reconstruct")] = _numpy_reconstruct
    numpy_globals[(mod, "scalar")] = _numpy_scalar
  return {
      ("collections", "OrderedDict"): collections.OrderedDict,
      ("builtins", "set"): set,
      ("builtins", "frozenset"): frozenset,
      ("builtins", "complex"): complex,
      ("builtins", "bytearray"): bytearray,
      ("builtins", "slice"): slice,
      ("dnnlib.util", "EasyDict"): dict,
      ("dnnlib", "EasyDict"): dict,
      ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
      ("torch._utils", "_rebuild_tensor_v2"): _tensor_from_storage,
      ("torch._utils", "_rebuild_tensor"): _tensor_from_storage_v1,
      ("torch._utils", "_rebuild_parameter"): _parameter,
      ("torch._utils", "_rebuild_parameter_with_state"): _parameter,
      ("torch._tensor", "_rebuild_from_type_v2"): _from_type,
      ("torch", "Tensor"): _TypeMarker("Tensor"),
      ("torch.nn.parameter", "Parameter"): _TypeMarker("Parameter"),
      ("numpy", "ndarray"): _TypeMarker("ndarray"),
      ("numpy", "dtype"): np.dtype,
      **numpy_globals,
  }


class _RestrictedUnpickler(pickle.Unpickler):
  """``find_class`` answers from the allowlist only; storages load through ``path``."""

  def __init__(self, f, path: str, extra: dict[tuple[str, str], Any] | None = None):
    super().__init__(f)
    self._path = path
    self._globals = {**_allowlist(), ("torch.storage", "_load_from_bytes"): self._storage_bytes,
                     **(extra or {})}

  def find_class(self, module, name):
    found = self._globals.get((module, name))
    if found is None:
      hint = ""
      if module == "dnnlib.tflib.network":
        hint = " (a TensorFlow StyleGAN pickle: convert it with stylegan2-ada-pytorch first)"
      raise CheckpointError(f"{self._path}: refusing to load class {module}.{name}: it is not "
                            f"a tensor, a plain container or a persistent network{hint}")
    return found

  def _storage_bytes(self, raw) -> _Storage:
    """``torch.storage._load_from_bytes``: one storage serialised by ``torch.save``."""
    if not isinstance(raw, (bytes, bytearray)):
      raise ValueError("storage data is not bytes")
    obj = _load_torch_file(io.BytesIO(bytes(raw)), self._path)
    if not isinstance(obj, _Storage):
      raise ValueError("embedded torch data is not a storage")
    return obj


class _StorageUnpickler(_RestrictedUnpickler):
  """Reads a ``torch.save`` pickle: storages are persistent ids filled in afterwards."""

  def __init__(self, f, path: str, storages: dict[str, _Storage],
               read_bytes: Callable[[str, _Storage], np.ndarray] | None = None):
    super().__init__(f, path, {("torch", n): _StorageType(n) for n in _STORAGE_DTYPES})
    self.storages = storages
    self._read_bytes = read_bytes

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
      raise ValueError(f"unknown persistent id {str(pid)[:80]}")
    storage_type, key, _, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
      raise ValueError("a storage of unknown type")
    key = key.decode() if isinstance(key, bytes) else str(key)
    if key not in self.storages:
      self.storages[key] = _Storage(storage_type.dtype, int(numel))
      if self._read_bytes is not None:
        self.storages[key].data = self._read_bytes(key, self.storages[key])
    return self.storages[key]


# ----------------------------------------------------------------------------- torch files


def _read_zip(f, path: str) -> Any:
  """A ``torch.save`` zip archive: ``<prefix>/data.pkl`` + ``<prefix>/data/<key>``."""
  with zipfile.ZipFile(f) as z:
    names = z.namelist()
    pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pkl) != 1:
      raise ValueError("zip archive without exactly one data.pkl")
    prefix = pkl[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
      byteorder = z.read(prefix + "byteorder").decode().strip()


    def read_bytes(key: str, s: _Storage) -> np.ndarray:
      dtype = s.dtype.newbyteorder(">" if byteorder == "big" else "<") if s.dtype.itemsize > 1 \
          else s.dtype
      raw = z.read(f"{prefix}data/{key}")
      if len(raw) < s.numel * dtype.itemsize:
        raise ValueError(f"storage {key} holds {len(raw)} bytes, expected "
                         f"{s.numel * dtype.itemsize}")
      return np.frombuffer(raw, dtype, count=s.numel).astype(dtype.newbyteorder("="), copy=False)

    return _StorageUnpickler(io.BytesIO(z.read(pkl[0])), path, {}, read_bytes).load()


def _read_legacy(f, path: str) -> Any:
  """The pre-zip stream: magic, protocol, sys info, pickle, keys, ``[numel][bytes]`` each."""
  plain = lambda: _RestrictedUnpickler(f, path).load()
  if plain() != _LEGACY_MAGIC:
    raise ValueError("not a torch file (bad magic number)")
  if plain() != _LEGACY_PROTOCOL:
    raise ValueError("unsupported torch legacy protocol")
  sys_info = plain()
  little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
  storages: dict[str, _Storage] = {}
  obj = _StorageUnpickler(f, path, storages).load()
  keys = plain()
  for key in keys:
    s = storages[str(key)]
    (numel,) = struct.unpack("<q" if little else ">q", f.read(8))
    dtype = s.dtype.newbyteorder("<" if little else ">") if s.dtype.itemsize > 1 else s.dtype
    raw = f.read(numel * dtype.itemsize)
    if len(raw) != numel * dtype.itemsize:
      raise EOFError("storage data was truncated")
    s.data = np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="), copy=False)
  return _resolve(obj)


def _load_torch_file(f, path: str) -> Any:
  head = f.read(4)
  f.seek(0)
  if head == b"PK\x03\x04":
    return _read_zip(f, path)
  return _read_legacy(f, path)


def _load_any(path: str) -> Any:
  """The object in ``path``: a torch.save file (zip or legacy) or a plain pickle."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise CheckpointError(f"{path}: no such file")
  try:
    with open(path, "rb") as f:
      head = f.read(4)
      f.seek(0)
      if head == b"PK\x03\x04":
        return _read_zip(f, path)
      obj = _RestrictedUnpickler(f, path).load()
      if obj == _LEGACY_MAGIC:
        f.seek(0)
        return _read_legacy(f, path)
      return obj
  except CheckpointError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    msg = " ".join(f"{type(e).__name__}: {e}".split())[:200]
    raise CheckpointError(f"{path}: not a readable PyTorch network or state_dict file (truncated "
                          f"or corrupt?): {msg}") from None


# ----------------------------------------------------------------------------- to plain data


def _plain(x: Any) -> Any:
  """Containers of the init kwargs -> dicts/lists/numbers (arrays stay arrays)."""
  if isinstance(x, dict):
    return {k: _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  if isinstance(x, _NumpyArray):
    return x.array
  if isinstance(x, np.generic):
    return x.item()
  return x


def _module_state_dict(module: _PersistentModule, prefix: str) -> dict[str, np.ndarray]:
  """torch ``state_dict()`` of a persistent module: own params, own buffers, children."""
  st = module.state
  out: dict[str, np.ndarray] = {}
  skip = set(st.get("_non_persistent_buffers_set") or ())
  for group in ("_parameters", "_buffers"):
    for name, value in (st.get(group) or {}).items():
      if value is None or (group == "_buffers" and name in skip):
        continue
      if isinstance(value, _NumpyArray):
        value = value.array
      if not isinstance(value, np.ndarray):
        raise ValueError(f"{prefix}{name} is not a tensor")
      out[prefix + name] = value
  for name, child in (st.get("_modules") or {}).items():
    if child is None:
      continue
    if not isinstance(child, _PersistentModule):
      raise ValueError(f"submodule {prefix}{name} is not a persistent network")
    out.update(_module_state_dict(child, f"{prefix}{name}."))
  return out


def _flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
  """Nested dicts of arrays -> ``'a.b' -> array``; leaves that are not arrays are dropped."""
  out: dict[str, np.ndarray] = {}
  if isinstance(tree, _PersistentModule):
    return {prefix + k: v for k, v in tree.record().state_dict.items()}
  if isinstance(tree, dict):
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  if isinstance(tree, _NumpyArray):
    tree = tree.array
  if isinstance(tree, np.ndarray):
    out[prefix[:-1]] = tree
  return out


# ----------------------------------------------------------------------------- public API


def read_network_pickle(path: str | os.PathLike) -> dict[str, NetworkRecord]:
  """The networks of a stylegan2-ada-pytorch pickle (or a pickled dict of state_dicts).

  Nothing in the file is executed: see the module docstring.

  Args:
    path: ``network-snapshot-*.pkl`` (``{'G', 'D', 'G_ema', ...}`` of persistent
      networks), or a pickle / ``torch.save`` file of ``{name: state_dict}``.

  Returns:
    ``{'G': NetworkRecord, 'D': ..., 'G_ema': ...}`` for each network the file holds
    (also ``'augment_pipe'`` when present); a bare state_dict's record has
    ``class_name=''`` and empty ``init_kwargs``.

  Raises:
    CheckpointError: the file is missing, truncated or corrupt, names a class outside
      the allowlist, or holds no network.
  """
  path = os.fspath(path)
  obj = _load_any(path)
  if not isinstance(obj, dict):
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a dict of networks")
  out: dict[str, NetworkRecord] = {}
  try:
    for name, value in obj.items():
      if isinstance(value, _PersistentModule):
        out[str(name)] = value.record()
      elif isinstance(value, dict) and value:
        sd = _flatten(value)
        if sd:
          out[str(name)] = NetworkRecord("", {}, sd)
  except ValueError as e:
    raise CheckpointError(f"{path}: {e}") from None
  if not out:
    raise CheckpointError(f"{path}: holds no network (keys: {sorted(map(str, obj))[:10]})")
  return out


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """``'a.b.weight' -> array`` of a ``torch.save``d state_dict, read without torch.

  Accepts a zip or legacy ``torch.save`` file or a plain pickle holding a state_dict
  (nested dicts are flattened with '.'; entries that are not tensors, such as an
  ``'epoch'`` number, are left out) or one persistent network.

  Raises:
    CheckpointError: missing/corrupt file, a refused class, or no tensor in it.
  """
  path = os.fspath(path)
  obj = _load_any(path)
  try:
    sd = _flatten(obj)
  except ValueError as e:
    raise CheckpointError(f"{path}: {e}") from None
  if not sd:
    raise CheckpointError(f"{path}: holds no tensors (a {type(obj).__name__})")
  return sd


def file_sha256(path: str | os.PathLike) -> str:
  """sha256 of a file's bytes: the provenance record of a converted checkpoint."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()
