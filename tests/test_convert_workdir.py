"""The converted-workdir writer: what it writes, ``load_trained`` reads back identically."""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import dcgan_tiny  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxlatent.convert.workdir import write_workdir  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxlatent.errors import CheckpointError, ConfigError  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxlatent.studies.generators import generator_in_space as build_generator  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxlatent.training.checkpoint import load_trained  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxlatent.training.trainers import make_trainer  # pylint: disable=g-import-not-at-top,wrong-import-position


def _config():
  c = dcgan_tiny.get_config()
  c.model.gen_channels = c.model.disc_channels = c.model.max_channels = 16
  c.image_size = 16
  return c


def _networks(config, seed):
  """Variables of a DCGAN initialised with another seed than the writer's own init."""
  state = make_trainer(config).init(jax.random.PRNGKey(seed))
  return {net: {"params": state.params[net], "batch_stats": state.model_state[net]}
          for net in ("generator", "discriminator")}


def _leaves_equal(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb) > 0
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_written_workdir_loads_back_identically(tmp_path):
  config = _config()
  nets = _networks(config, seed=7)
  out = tmp_path / "converted"
  path = write_workdir(str(out), config, nets, step=123, provenance={"source": "x.pt"})
  assert path == str(out)
  assert sorted(os.listdir(out)) == ["checkpoints", "config.json", "converted_from.json"]
  assert [p for p in os.listdir(tmp_path) if p != "converted"] == []  # no temp folder left
  assert json.loads((out / "converted_from.json").read_text()) == {"source": "x.pt"}

  loaded_config, trainer, state = load_trained(str(out))
  assert loaded_config.model.to_dict() == config.model.to_dict()
  assert int(state.step) == 123
  for net in ("generator", "discriminator"):
    _leaves_equal(state.params[net], nets[net]["params"])
    _leaves_equal(state.model_state[net], nets[net]["batch_stats"])
  # analyze.py's Generator renders with exactly these weights.
  gen = build_generator(loaded_config, trainer, state, "z")
  z = jax.random.normal(jax.random.PRNGKey(1), (2, *gen.latent_spec.shape))
  want = make_trainer(config).generator(
      state.replace(params={"generator": nets["generator"]["params"],
                            "discriminator": nets["discriminator"]["params"]}))(z)
  np.testing.assert_array_equal(np.asarray(gen(z)), np.asarray(want))


def test_refusals_leave_nothing_behind(tmp_path):
  config = _config()
  nets = _networks(config, seed=3)
  busy = tmp_path / "busy"
  busy.mkdir()
  (busy / "keep.txt").write_text("mine")
  with pytest.raises(ConfigError, match=f"{busy} exists and is not empty"):
    write_workdir(str(busy), config, nets, step=0)
  assert os.listdir(busy) == ["keep.txt"]

  bad = {"generator": dict(nets["generator"])}
  first = next(iter(bad["generator"]["params"]))
  bad["generator"]["params"] = {**bad["generator"]["params"],
                                first: jax.tree.map(lambda x: x[..., :1],
                                                    bad["generator"]["params"][first])}
  with pytest.raises(CheckpointError, match=r"^generator\.params\..* converted shape"):
    write_workdir(str(tmp_path / "out1"), config, bad, step=0)
  with pytest.raises(CheckpointError, match="collection 'stats' is not kept by model dcgan"):
    write_workdir(str(tmp_path / "out2"), config, {"generator": {"stats": {}}}, step=0)
  with pytest.raises(ConfigError, match="network 'G_ema'"):
    write_workdir(str(tmp_path / "out3"), config, {"G_ema": {}}, step=0)
  assert sorted(os.listdir(tmp_path)) == ["busy"]

  empty = tmp_path / "empty"
  empty.mkdir()
  write_workdir(str(empty), config, nets, step=0)  # an empty folder is fine
  assert (empty / "config.json").exists()
