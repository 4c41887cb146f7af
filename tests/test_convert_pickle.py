"""Reading stylegan2-ada-pytorch snapshots and torch state_dicts without executing them.

The snapshots are written here in the official byte format (tests/reference/
persistent_pickle.py) from tiny torch modules under the official tensor names; every
array read back must equal its torch tensor bit for bit, and no pickled code may run.
"""

from __future__ import annotations

import collections
import copy
import os
import pickle
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
from persistent_pickle import dump_network_pickle, official_modules  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxlatent.convert import NetworkRecord, read_network_pickle, read_state_dict  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxlatent.errors import CheckpointError  # pylint: disable=g-import-not-at-top,wrong-import-position


def _cls(name):
  return type(name, (torch.nn.Module,), {})


def _module(name, params=(), buffers=(), children=()):
  """A torch module of class ``name`` with the given params / buffers / submodules."""
  m = _cls(name)()
  for k, v in dict(params).items():
    setattr(m, k, None if v is None else torch.nn.Parameter(v, requires_grad=False))
  for k, v in dict(buffers).items():
    m.register_buffer(k, v)
  for k, v in dict(children).items():
    setattr(m, k, v)
  return m


def _fc(g, n_in, n_out):
  return _module("FullyConnectedLayer", {"weight": torch.randn(n_out, n_in, generator=g),
                                         "bias": torch.randn(n_out, generator=g)})


def tiny_generator(seed=0):
  """Official names and layouts at 4 px: mapping (2 FC + w_avg), one synthesis block."""
  g = torch.Generator().manual_seed(seed)
  conv_w = torch.randn(16, 16, 3, 3, generator=g).to(memory_format=torch.channels_last)
  conv1 = _module("SynthesisLayer",
                  {"weight": conv_w, "noise_strength": torch.randn((), generator=g),
                   "bias": torch.randn(16, generator=g)},
                  {"resample_filter": torch.rand(4, 4, generator=g),
                   "noise_const": torch.randn(4, 4, generator=g)},
                  {"affine": _fc(g, 8, 16)})
  torgb = _module("ToRGBLayer", {"weight": torch.randn(1, 16, 1, 1, generator=g),
                                 "bias": torch.randn(1, generator=g)}, (),
                  {"affine": _fc(g, 8, 16)})
  b4 = _module("SynthesisBlock", {"const": torch.randn(16, 4, 4, generator=g)},
               {"resample_filter": torch.rand(4, 4, generator=g)},
               {"conv1": conv1, "torgb": torgb})
  # A non-persistent buffer and a None parameter: both absent from state_dict().
  b4.register_buffer("scratch", torch.ones(3), persistent=False)
  b4.skip = None
  synthesis = _module("SynthesisNetwork", (), (), {"b4": b4})
  mapping = _module("MappingNetwork", (), {"w_avg": torch.randn(8, generator=g)},
                    {"fc0": _fc(g, 8, 8), "fc1": _fc(g, 8, 8)})
  return _module("Generator", (), (), {"synthesis": synthesis, "mapping": mapping})


def tiny_discriminator(seed=1):
  g = torch.Generator().manual_seed(seed)
  b4 = _module("DiscriminatorEpilogue", (), (), {
      "mbstd": _module("MinibatchStdLayer"),
      "conv": _module("Conv2dLayer", {"weight": torch.randn(8, 9, 3, 3, generator=g),
                                      "bias": torch.randn(8, generator=g)}),
      "fc": _fc(g, 128, 8), "out": _fc(g, 8, 1)})
  return _module("Discriminator", (), (), {"b4": b4})


G_KWARGS = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=4, img_channels=1)


def _snapshot(path, module_src=None, g_overrides=None, **extra):
  """Writes an official-format snapshot of the tiny networks; returns the torch modules.

  ``g_overrides`` changes the generators' init_kwargs; ``extra`` adds top-level entries.
  """
  G, D = tiny_generator(0), tiny_discriminator(1)
  G_ema = copy.deepcopy(G)
  with torch.no_grad():
    for p in G_ema.parameters():
      p.mul_(0.5)
  aug = _module("AugmentPipe", (), {"p": torch.tensor(0.25)})
  with official_modules() as easydict:
    g_kwargs = dict(G_KWARGS, mapping_kwargs=easydict(num_layers=2),
                    synthesis_kwargs=easydict(channel_base=64, channel_max=16, num_fp16_res=0,
                                              conv_clamp=None), **(g_overrides or {}))
    data = {"training_set_kwargs": dict(path="data.zip", resolution=4, use_labels=False),
            "G": G, "D": D, "G_ema": G_ema, "augment_pipe": aug, **extra}
    kw = {} if module_src is None else {"module_src": module_src}
    dump_network_pickle(path, data, {G: g_kwargs, G_ema: g_kwargs,
                                     D: dict(c_dim=0, img_resolution=4, img_channels=1)}, **kw)
  return {"G": G, "D": D, "G_ema": G_ema, "augment_pipe": aug}


def _assert_same(record_sd, module):
  expected = module.state_dict()
  assert list(record_sd) == list(expected)  # names and torch's order
  for k, t in expected.items():
    a = record_sd[k]
    assert a.dtype == t.numpy().dtype and a.shape == tuple(t.shape), k
    assert a.flags.c_contiguous, k
    assert a.tobytes() == np.ascontiguousarray(t.numpy()).tobytes(), k  # bit for bit


def test_official_snapshot_reads_bit_for_bit(tmp_path):
  path = tmp_path / "network-snapshot-000100.pkl"
  nets = _snapshot(path)
  records = read_network_pickle(path)
  assert set(records) == {"G", "D", "G_ema", "augment_pipe"}
  for name, module in nets.items():
    assert isinstance(records[name], NetworkRecord)
    assert records[name].class_name == type(module).__name__
    _assert_same(records[name].state_dict, module)
  g = records["G_ema"]
  assert "synthesis.b4.conv1.weight" in g.state_dict and "mapping.w_avg" in g.state_dict
  assert "synthesis.b4.scratch" not in g.state_dict
  assert g.init_kwargs == dict(G_KWARGS, mapping_kwargs={"num_layers": 2},
                               synthesis_kwargs={"channel_base": 64, "channel_max": 16,
                                                 "num_fp16_res": 0, "conv_clamp": None})
  assert type(g.init_kwargs["mapping_kwargs"]) is dict  # EasyDict -> a plain dict
  assert records["D"].init_kwargs["img_resolution"] == 4
  assert records["augment_pipe"].state_dict["p"] == np.float32(0.25)


def test_pickled_source_is_never_executed(tmp_path):
  marker = tmp_path / "executed.txt"
  src = f"open({str(marker)!r}, 'w').write('ran')\nraise SystemExit('module_src ran')\n"
  path = tmp_path / "trap.pkl"
  _snapshot(path, module_src=src)
  records = read_network_pickle(path)
  assert not marker.exists()
  assert set(records) >= {"G", "D", "G_ema"}


class _Evil:

  def __init__(self, fn, arg):
    self.fn, self.arg = fn, arg

  def __reduce__(self):
    return self.fn, (self.arg,)


@pytest.mark.parametrize("fn,qualname", [(os.system, f"{os.system.__module__}.system"),
                                          (eval, "builtins.eval")])
def test_refuses_globals_outside_the_allowlist(tmp_path, fn, qualname):
  marker = tmp_path / "pwned"
  arg = f"touch {marker}" if fn is os.system else f"open({str(marker)!r}, 'w')"
  path = tmp_path / "evil.pkl"
  with open(path, "wb") as f:
    pickle.dump({"G": _Evil(fn, arg)}, f)
  with pytest.raises(CheckpointError, match=rf"^{path}: refusing to load class {qualname}\b"):
    read_network_pickle(path)
  with pytest.raises(CheckpointError, match="refusing to load class"):
    read_state_dict(path)
  assert not marker.exists()


def test_refuses_an_unknown_torch_module_class(tmp_path):
  path = tmp_path / "plain_module.pkl"
  with open(path, "wb") as f:
    pickle.dump({"G": torch.nn.Linear(2, 2)}, f)  # not persistent: names a torch class
  with pytest.raises(CheckpointError, match="refusing to load class"):
    read_network_pickle(path)


def test_truncated_and_missing_files(tmp_path):
  full = tmp_path / "full.pkl"
  _snapshot(full)
  raw = full.read_bytes()
  for cut in (len(raw) // 3, len(raw) - 10):
    path = tmp_path / f"cut{cut}.pkl"
    path.write_bytes(raw[:cut])
    with pytest.raises(CheckpointError, match=rf"^{path}: .*truncated or corrupt"):
      read_network_pickle(path)
  with pytest.raises(CheckpointError, match="no such file"):
    read_network_pickle(tmp_path / "absent.pkl")
  not_pickle = tmp_path / "text.pkl"
  not_pickle.write_text("hello")
  with pytest.raises(CheckpointError, match=str(not_pickle)):
    read_network_pickle(not_pickle)


def _state_dict():
  g = torch.Generator().manual_seed(3)
  base = torch.randn(6, 5, generator=g)
  return collections.OrderedDict(
      weight=torch.randn(4, 3, 3, 3, generator=g).to(memory_format=torch.channels_last),
      transposed=base.t(),  # non-contiguous view
      view=base[2:4, 1:],  # offset into a shared storage
      half=torch.randn(7, generator=g).half(), bf16=torch.randn(3, generator=g).bfloat16(),
      steps=torch.arange(5, dtype=torch.int64), mask=torch.tensor([True, False]),
      scalar=torch.tensor(2.5))


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_save_state_dict(tmp_path, zip_format):
  sd = _state_dict()
  path = tmp_path / "model.pt"
  torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
  out = read_state_dict(path)
  assert list(out) == list(sd)
  for k, t in sd.items():
    want = t.float().numpy().view(np.uint32) if t.dtype == torch.bfloat16 else t.numpy()
    got = out[k].astype(np.float32).view(np.uint32) if t.dtype == torch.bfloat16 else out[k]
    assert got.shape == want.shape and got.dtype == want.dtype, k
    np.testing.assert_array_equal(got, want)


def test_training_checkpoint_dict_and_dict_of_state_dicts(tmp_path):
  sd = _state_dict()
  path = tmp_path / "ckpt.pt"
  torch.save({"epoch": 7, "generator": sd, "optim": {"lr": 0.1}}, path)
  out = read_state_dict(path)
  assert set(out) == {f"generator.{k}" for k in sd}  # 'epoch', 'optim.lr' are no tensors
  pkl = tmp_path / "nets.pkl"
  with open(pkl, "wb") as f:
    pickle.dump({"G_ema": dict(sd), "note": "x"}, f)
  records = read_network_pickle(pkl)
  assert set(records) == {"G_ema"} and records["G_ema"].class_name == ""
  np.testing.assert_array_equal(records["G_ema"].state_dict["view"], sd["view"].numpy())
  empty = tmp_path / "empty.pt"
  torch.save({"epoch": 1}, empty)
  with pytest.raises(CheckpointError, match="holds no tensors"):
    read_state_dict(empty)


def test_numpy_arrays_and_scalars(tmp_path):
  """NumPy values (e.g. kwargs or buffers kept as arrays) are rebuilt from their bytes."""
  fortran = np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4))
  net = _module("AugmentPipe", (), {"p": torch.tensor(0.5)})
  path = tmp_path / "np.pkl"
  with official_modules():
    dump_network_pickle(path, {"augment_pipe": net, "extra": {"w": fortran,
                                                              "b": np.int16([1, -2])}},
                        {net: {"taps": np.array([1, 3, 3, 1], np.float32),
                               "xflip": np.float32(0.25), "rotate": np.int64(3)}})
  records = read_network_pickle(path)
  kw = records["augment_pipe"].init_kwargs
  np.testing.assert_array_equal(kw["taps"], [1, 3, 3, 1])
  assert kw["taps"].dtype == np.float32
  assert kw["xflip"] == 0.25 and kw["rotate"] == 3 and type(kw["rotate"]) is int
  extra = records["extra"].state_dict
  np.testing.assert_array_equal(extra["w"], fortran)
  assert extra["b"].dtype == np.int16 and extra["b"].tolist() == [1, -2]

  objects = tmp_path / "objects.pkl"
  with open(objects, "wb") as f:
    pickle.dump({"G": {"w": np.array(["a", 1], dtype=object)}}, f)
  with pytest.raises(CheckpointError, match="arrays of Python objects are not read"):
    read_network_pickle(objects)
