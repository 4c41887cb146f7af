"""``python -m jaxlatent.convert export``: a run's analysed networks as a small folder.

Source workdirs hold a tiny model's train state (random values in trainer.init's
structure) saved as a checkpoint, exactly as ``train.py`` writes it; the export must give the same images, encoder
outputs and fingerprint, refuse damaged files by name, and not be resumable.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cli_runs import run_analyze, run_convert_cli
from jaxlatent.convert.export import export_generator, exported_networks
from jaxlatent.errors import CheckpointError, ConfigError
from jaxlatent.models import default_model_config
from jaxlatent.studies.generators import generator_fingerprint, load_generator
from jaxlatent.training import complete_train_config
from jaxlatent.training.checkpoint import (CHECKPOINT_DIR, Checkpointer, load_trained,
                                           save_run_config)
from jaxlatent.training.trainers import make_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = 5


def _source(path: str, config, seed: int = 3) -> str:
  """A train.py-layout workdir whose checkpoint ``STEP`` holds random values.

  The state has trainer.init's structure (without compiling init); every float differs
  from the zeros a loaded export starts from, and the running statistics stay positive.
  """
  rng = np.random.default_rng(seed)

  def fill(tree, positive=False):
    def leaf(s):
      if not jnp.issubdtype(s.dtype, jnp.floating):
        return jnp.zeros(s.shape, s.dtype)
      x = 0.5 + rng.random(s.shape) if positive else rng.normal(0.0, 0.1, s.shape)
      return jnp.asarray(x, s.dtype)
    return jax.tree.map(leaf, tree)

  shapes = jax.eval_shape(make_trainer(config).init, jax.random.PRNGKey(0))
  state = shapes.replace(step=jnp.asarray(STEP, jnp.int32), params=fill(shapes.params),
                         opt_state=fill(shapes.opt_state),
                         model_state=fill(shapes.model_state, positive=True),
                         ema_params=fill(shapes.ema_params))
  os.makedirs(path)
  save_run_config(path, config)
  ckpt = Checkpointer(os.path.join(path, CHECKPOINT_DIR), keep=1)
  ckpt.save(STEP, state)
  ckpt.wait()
  ckpt.close()
  return path


def _dcgan_config():
  sys.path.insert(0, REPO)
  from configs import dcgan_tiny  # pylint: disable=g-import-not-at-top
  c = complete_train_config(dcgan_tiny.get_config())
  c.image_size, c.batch_size, c.data.num_images = 16, 8, 16
  c.model.gen_channels = c.model.disc_channels = c.model.max_channels = 8
  return c


def _model_config(name, size=16, **model):
  c = complete_train_config(_dcgan_config())
  c.model = default_model_config(name)
  c.model.update(**model)
  c.image_size = size
  return c


@pytest.fixture(scope="module")
def dcgan(tmp_path_factory):
  """(source workdir, its export written by the CLI)."""
  root = tmp_path_factory.mktemp("export_dcgan")
  src = _source(str(root / "run"), _dcgan_config())
  return src, str(root / "exported")


def _export_cli(src, out, capsys, *extra):
  code, stdout, err = run_convert_cli(["export", f"--workdir={src}", f"--out={out}", *extra],
                                      capsys)
  assert code == 0, err
  assert f"wrote {out}" in stdout
  return out


def _same_generator(src, out, space="z"):
  a, b = load_generator(src, space), load_generator(out, space)
  z = a.generator.sample_latents(jax.random.key(1), 4)
  img_a, img_b = np.asarray(a.generator(z)), np.asarray(b.generator(z))
  assert img_a.shape[0] == 4 and np.array_equal(img_a, img_b)
  assert a.step == b.step == STEP
  assert generator_fingerprint(a) == generator_fingerprint(b)
  return a, b


def test_dcgan_export_files_images_and_fingerprint(dcgan, capsys):
  src, out = dcgan
  _export_cli(src, out, capsys)
  assert sorted(os.listdir(out)) == ["config.json", "export.json", "generator.npz"]
  with open(os.path.join(src, "config.json"), "rb") as f, \
      open(os.path.join(out, "config.json"), "rb") as g:
    assert f.read() == g.read()
  meta = json.load(open(os.path.join(out, "export.json")))
  assert meta["format_version"] == 1 and meta["model"] == "dcgan" and meta["step"] == STEP
  assert meta["source_workdir"] == os.path.abspath(src)
  assert meta["networks"] == {"generator": ["batch_stats", "params"]}
  with open(os.path.join(out, "generator.npz"), "rb") as f:
    assert meta["generator_npz_sha256"] == hashlib.sha256(f.read()).hexdigest()
  with np.load(os.path.join(out, "generator.npz")) as z:
    keys = z.files
    assert all(z[k].dtype == np.float32 for k in keys)
  assert {k.split("/")[1] for k in keys} == {"params", "batch_stats"}
  assert all(k.startswith("generator/") for k in keys) and meta["num_arrays"] == len(keys)
  _same_generator(src, out)


@pytest.mark.parametrize("name", ["vae", "stylegan2"])
def test_vae_and_stylegan2_exports_give_the_same_networks(name, tmp_path, capsys):
  if name == "vae":
    config = _model_config("vae", 16, ch=4, channels=16, max_channels=16, latent_dim=8)
  else:
    config = _model_config("stylegan2", 16, latent_dim=8, w_dim=8, num_mapping_layers=2,
                           channel_base=64, channel_max=8)
  src = _source(str(tmp_path / "run"), config)
  out = export_generator(src, str(tmp_path / "exported"))
  meta = json.load(open(os.path.join(out, "export.json")))
  if name == "vae":
    assert sorted(meta["networks"]) == ["decoder", "encoder"]
    a, b = _same_generator(src, out)
    x = jnp.tanh(jax.random.normal(jax.random.key(2), (3, 16, 16, 1)))
    for u, v in zip(a.encode_fn(x), b.encode_fn(x)):  # the inversion's (mean, logvar)
      assert np.array_equal(np.asarray(u), np.asarray(v))
  else:
    assert meta["networks"] == {"generator_ema": ["buffers", "params"]}
    _same_generator(src, out, "w")


def _rewrite(out, arrays, fix_hash=True):
  """Replaces ``out/generator.npz`` (and its hash in export.json)."""
  npz = os.path.join(out, "generator.npz")
  np.savez_compressed(npz, **arrays)
  if fix_hash:
    meta_path = os.path.join(out, "export.json")
    meta = json.load(open(meta_path))
    with open(npz, "rb") as f:
      meta["generator_npz_sha256"] = hashlib.sha256(f.read()).hexdigest()
    json.dump(meta, open(meta_path, "w"))


def test_damaged_exports_are_refused_naming_file_and_key(dcgan, tmp_path, capsys):
  src, _ = dcgan
  out = export_generator(src, str(tmp_path / "e"))
  npz = os.path.join(out, "generator.npz")
  with np.load(npz) as z:
    arrays = {k: z[k] for k in z.files}
  key = sorted(k for k in arrays if k.endswith("kernel"))[0]

  with open(npz, "r+b") as f:  # one byte changed: the hash no longer matches
    f.seek(100)
    byte = f.read(1)
    f.seek(100)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(CheckpointError, match=r"generator\.npz: sha256 .* differs"):
    load_generator(out)

  _rewrite(out, {k: v for k, v in arrays.items() if k != key})
  with pytest.raises(CheckpointError, match=f"generator.npz: key '{key}' is missing"):
    load_generator(out)
  _rewrite(out, {**arrays, key: arrays[key][..., :1]})
  with pytest.raises(CheckpointError, match=f"key '{key}' has shape"):
    load_generator(out)
  _rewrite(out, {**arrays, "generator/params/extra": np.zeros(2, np.float32)})
  with pytest.raises(CheckpointError, match="unexpected key 'generator/params/extra'"):
    load_generator(out)
  _rewrite(out, arrays)
  assert load_generator(out).step == STEP
  with pytest.raises(CheckpointError, match=f"export of step {STEP}, not step 4"):
    load_trained(out, step=4)

  # The CLI: an existing non-empty --out, and a missing step, are one error line each.
  for argv, message in (
      ([f"--workdir={src}", f"--out={out}"], f"error: --out {out} exists and is not empty"),
      ([f"--workdir={src}", f"--out={tmp_path / 'f'}", "--step=3"],
       "error: no checkpoint of step 3"),
      ([f"--workdir={tmp_path / 'nothing'}", f"--out={tmp_path / 'g'}"], "error: "),
  ):
    code, _, err = run_convert_cli(["export", *argv], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith(message), err
  assert not os.path.exists(tmp_path / "f") and not os.path.exists(tmp_path / "g")
  assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []  # no temp folder left
  with pytest.raises(ConfigError, match="not exportable"):
    exported_networks("pixelcnn")


def _train_cli(argv) -> int:
  spec = importlib.util.spec_from_file_location("train_cli", os.path.join(REPO, "train.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  try:
    return module.main(["train.py"] + list(argv))
  except SystemExit as e:
    return e.code


def test_train_refuses_an_export_and_analyze_reads_it(dcgan, tmp_path, capsys):
  src, out = dcgan
  if not os.path.isdir(out):
    _export_cli(src, out, capsys)
  before = sorted(os.listdir(out))
  for extra in ([], ["--restart"]):
    capsys.readouterr()
    assert _train_cli([f"--config={os.path.join(REPO, 'configs', 'dcgan_tiny.py')}",
                       f"--workdir={out}", "--malloc=system", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an exported generator" in err, err
    assert "cannot be resumed" in err
  assert sorted(os.listdir(out)) == before

  # analyze.py reads the export like a workdir (the fingerprint, hence the re-use of
  # artifacts computed on the source run, is checked above).
  report = tmp_path / "report"
  tiny = [f"--config={os.path.join(REPO, 'configs', 'analyze_ct_tiny.py')}", f"--out={report}",
          "--config.methods=('sefa',)", "--config.sefa_components=4",
          "--config.alignment.enabled=False", "--config.images.num_images=16",
          "--config.images.max_subjects=1", "--config.inversion.steps=3",
          "--config.inversion.restarts=1", "--config.traversal.alpha_num=5",
          "--config.traversal.directions_per_method=1", "--config.traversal.max_subjects=1",
          "--config.report.num_samples=4", "--config.report.grid_directions=2",
          "--malloc=system"]
  assert run_analyze([f"--workdir={out}"] + tiny) == 0, capsys.readouterr().err
  log = capsys.readouterr().out
  assert f"step {STEP}" in log, log
  assert os.path.isfile(report / "index.html")
  metrics = json.load(open(report / "metrics.json"))
  assert metrics["inversion"]["num_images"] > 0


@pytest.mark.parametrize("name,networks", [
    ("stylegan2_simple", {"generator_ema": ["noise_const", "params", "stats"]}),
    ("ifcvae_gan", {"decoder": ["params"], "encoder": ["params"]}),
    ("ssdaae", {"decoder": ["params"], "encoder": ["params"]}),
])
def test_other_models_export_what_their_analysis_reads(name, networks):
  from jaxlatent.convert.export import collect_variables, flat_arrays  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  if name == "stylegan2_simple":
    config = _model_config(name, 16, latent_dim=8, w_dim=8, num_mapping_layers=2)
  else:
    module = importlib.import_module(f"configs.{name.replace('_gan', '')}_brain_tiny")
    config = complete_train_config(module.get_config())
  state = jax.eval_shape(make_trainer(config).init, jax.random.PRNGKey(0))
  variables = collect_variables(state, name)
  assert {net: sorted(c) for net, c in variables.items()} == networks
  assert all(k.split("/")[0] in networks for k in flat_arrays(variables))
