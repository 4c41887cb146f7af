"""End to end: an official-format snapshot -> ``python -m jaxlatent.convert`` -> workdir.

Tiny networks of our PyTorch port of the official code (sg2ada_torch.py) get random
weights and are pickled as stylegan2-ada-pytorch writes ``network-snapshot-*.pkl``
(persistent-class records, persistent_pickle.py).  The converter's workdir, loaded as
``analyze.py`` loads it, must render the port's ``G_ema(z, psi, noise_mode='const')``
and map the same ws, for psi 1 and 0.7, grey and RGB, 32 and 64 px; a bare
``state_dict`` (.pt) converts to the same network.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
import torch

import sg2ada_torch as ref
from persistent_pickle import dump_network_pickle, official_modules
from cli_runs import run_convert_cli
from test_stylegan2_ada import _max_err, _nchw, _randomize

from jaxlatent.convert.stylegan2_ada import load_stylegan2_ada
from jaxlatent.errors import DataError
from jaxlatent.models import stylegan2
from jaxlatent.training.checkpoint import load_trained

ATOL = 1e-4  # max abs error on [-1, 1] images and on ws

CASES = {
    "gray32": dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=1,
                   mapping_kwargs=dict(num_layers=2),
                   synthesis_kwargs=dict(channel_base=256, channel_max=16, num_fp16_res=4,
                                         conv_clamp=256)),
    "rgb64": dict(z_dim=8, c_dim=0, w_dim=16, img_resolution=64, img_channels=3,
                  mapping_kwargs=dict(num_layers=3),
                  synthesis_kwargs=dict(channel_base=256, channel_max=16, conv_clamp=0.5)),
}


def _easy(kwargs, easydict):
  return {k: easydict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}


def write_snapshot(path, g_kwargs, seed: int):
  """Writes an official-format snapshot {G, D, G_ema, augment_pipe, training_set_kwargs};
  returns (G_ema port module, its state_dict)."""
  torch.manual_seed(seed)
  g_ema = ref.Generator(**g_kwargs).eval()
  _randomize(g_ema, seed + 1)
  g = ref.Generator(**g_kwargs).eval()
  d_kwargs = dict(c_dim=0, img_resolution=g_kwargs["img_resolution"],
                  img_channels=g_kwargs["img_channels"], channel_base=256, channel_max=16,
                  conv_clamp=g_kwargs["synthesis_kwargs"].get("conv_clamp"),
                  block_kwargs={}, mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=4))
  d = ref.Discriminator(**d_kwargs).eval()
  with official_modules() as easydict:
    gk, dk = _easy(g_kwargs, easydict), _easy(d_kwargs, easydict)
    data = {"G": g, "D": d, "G_ema": g_ema, "augment_pipe": None,
            "training_set_kwargs": easydict(path="brains.zip", resolution=g_kwargs[
                "img_resolution"], use_labels=False)}
    dump_network_pickle(path, data, {g: gk, g_ema: gk, d: dk})
  return g_ema


def _convert(argv, capsys) -> str:
  """A conversion that must succeed; its stdout."""
  code, stdout, stderr = run_convert_cli(argv, capsys)
  assert code == 0, stderr
  return stdout


def _check_against_port(g_ema, config, variables, kwargs):
  """The converted network vs the port: images (psi 1, 0.7) and ws, const noise."""
  z = np.random.default_rng(5).normal(size=(3, kwargs["z_dim"])).astype(np.float32)
  gen1 = stylegan2.make_generator(variables, config, "z")
  gen07 = stylegan2.make_generator(variables, config, "z", truncation_psi=0.7)
  module = stylegan2.build_generator(config)
  mapped = jax.jit(lambda v, z: module.apply(v, z, None, 0.7, method="map"))(variables, z)
  render = jax.jit(lambda g, z: g.apply_fn(g.params, z))
  with torch.no_grad():
    zt = torch.from_numpy(z)
    for gen, psi in ((gen1, 1.0), (gen07, 0.7)):
      want = g_ema(zt, None, truncation_psi=psi, noise_mode="const").numpy()
      got = _nchw(render(gen, z))
      assert got.shape == want.shape
      assert _max_err(got, want) <= ATOL, psi
    assert _max_err(mapped, g_ema.mapping(zt, None, truncation_psi=0.7).numpy()) <= ATOL
  assert module.num_ws == g_ema.num_ws and gen07.image_shape[-1] == kwargs["img_channels"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_snapshot_to_workdir_matches_the_port(tmp_path, capsys, name):
  kwargs = CASES[name]
  pkl = tmp_path / "network-snapshot-000040.pkl"
  g_ema = write_snapshot(pkl, kwargs, seed=len(name))
  out = tmp_path / "run"
  stdout = _convert(["stylegan2-ada", str(pkl), f"--workdir={out}"], capsys)
  assert f"wrote {out}" in stdout
  config, trainer, state = load_trained(str(out))  # as analyze.py loads it
  assert config.model.name == "stylegan2" and config.image_size == kwargs["img_resolution"]
  assert config.model.img_channels == kwargs["img_channels"]
  assert config.model.discriminator.architecture == "resnet"
  variables = {"params": state.ema_params, "buffers": state.model_state["buffers"]}
  _check_against_port(g_ema, config, variables, kwargs)
  if kwargs["img_channels"] == 1:
    # analyze.py's path: the trainer's EMA generator is the same network.
    gen = trainer.generator(state)
    z = np.random.default_rng(5).normal(size=(3, kwargs["z_dim"])).astype(np.float32)
    with torch.no_grad():
      want = g_ema(torch.from_numpy(z), None, noise_mode="const").numpy()
    assert _max_err(_nchw(jax.jit(gen.apply_fn)(gen.params, z)), want) <= ATOL
  else:
    # An RGB network with jaxlatent's 1-channel slices: one clear error.
    with pytest.raises(DataError, match=r"model\.img_channels=3: this network makes 3-channel "
                       r"images but the data pipeline .* gives 1-channel slices"):
      trainer.generator(state)
    # The in-process loader has no data pipeline: it returns the network as is.
    direct = load_stylegan2_ada(pkl, truncation_psi=0.7)
    _check_against_port(g_ema, config, direct.params, kwargs)


def test_state_dict_file_converts_to_the_same_network(tmp_path, capsys):
  kwargs = CASES["gray32"]
  g_ema = write_snapshot(tmp_path / "unused.pkl", kwargs, seed=3)
  pt = tmp_path / "G_ema.pt"
  torch.save(g_ema.state_dict(), pt)
  out = tmp_path / "run"
  _convert(["stylegan2-ada", str(pt), f"--workdir={out}"], capsys)
  config, _, state = load_trained(str(out))
  m = config.model
  assert (m.latent_dim, m.w_dim, m.num_mapping_layers, m.channel_base, m.channel_max,
          m.conv_clamp, m.architecture) == (16, 16, 2, 256, 16, 256.0, "skip")
  variables = {"params": state.ema_params, "buffers": state.model_state["buffers"]}
  _check_against_port(g_ema, config, variables, kwargs)
  assert sorted(os.listdir(tmp_path)) == ["G_ema.pt", "run", "unused.pkl"]
