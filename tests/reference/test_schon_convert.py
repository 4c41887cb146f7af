"""``python -m jaxlatent.convert schon-dcgan / schon-vae`` on checkpoints saved by our
PyTorch port of Schön et al.'s training scripts: the workdir analyze.py runs on, the
converted generator's images equal the port's, and bad files give one error line."""

from __future__ import annotations

import importlib.util
import json
import os

import jax
import numpy as np
import pytest
import torch

import schon_torch as ref
from cli_runs import run_convert_cli as _main
from jaxlatent.studies.generators import generator_in_space as build_generator
from jaxlatent.training.checkpoint import load_trained

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _gan_checkpoint(path, size=16, c4=16, nz=32):
  """What Training/TrainGAN.py saves after an epoch (with a tiny network)."""
  torch.manual_seed(0)
  g, d = ref.Generator(size, nz, c4), ref.Discriminator(size, c4)
  g.apply(ref.dcgan_weights_init)
  d.apply(ref.dcgan_weights_init)
  with torch.no_grad():
    for m in g.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.normal_(0.0, 0.1)
        m.running_var.uniform_(0.5, 2.0)
  opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
  torch.save({"epoch": 0, "modelG_state_dict": g.state_dict(),
              "modelD_state_dict": d.state_dict(), "optimizerG_state_dict": opt_g.state_dict(),
              "lossG": [0.7], "lossD": [1.3], "fid": [300.0]}, path)
  return g.eval()


def test_schon_dcgan_converts_and_analyze_runs(tmp_path, capsys):
  pt = tmp_path / "checkpoint.pt"
  g = _gan_checkpoint(pt)
  out = tmp_path / "run"
  code, stdout, _ = _main(["schon-dcgan", str(pt), f"--workdir={out}"], capsys)
  assert code == 0 and "configs/analyze_ct.py" in stdout
  config, trainer, state = load_trained(str(out))
  assert config.model.arch == "schon" and config.image_size == 16
  assert json.loads((out / "converted_from.json").read_text())["networks_converted"] == [
      "discriminator", "generator"]
  gen = build_generator(config, trainer, state, "z")
  z = np.random.default_rng(0).normal(size=(3, 32)).astype(np.float32)
  with torch.no_grad():
    want = g(torch.from_numpy(z)[:, :, None, None]).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(jax.jit(gen.apply_fn)(gen.params, z)), want,
                             atol=1e-5)

  spec = importlib.util.spec_from_file_location("analyze_cli", os.path.join(REPO, "analyze.py"))
  analyze = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(analyze)
  argv = ["analyze.py", "--config=" + os.path.join(REPO, "configs", "analyze_ct_tiny.py"),
          f"--workdir={out}", "--malloc=system", "--config.methods=('sefa',)",
          "--config.sefa_components=4", "--config.alignment.regressor_images=64",
          "--config.alignment.regressor_steps=5", "--config.alignment.num_latents=2",
          "--config.images.num_images=16", "--config.images.max_subjects=1",
          "--config.inversion.steps=5", "--config.inversion.restarts=1",
          "--config.traversal.alpha_num=5", "--config.traversal.directions_per_method=1",
          "--config.traversal.max_subjects=1", "--config.report.num_samples=4",
          "--config.report.grid_directions=4"]
  try:
    code = analyze.main(argv)
  except SystemExit as e:
    code = e.code
  assert code in (0, None)
  written = {p for _, _, files in os.walk(out) for p in files}
  assert "metrics.json" in written or any(p.endswith(".html") for p in written), written


def test_schon_vae_decoder_converts(tmp_path, capsys):
  torch.manual_seed(1)
  net = ref.VAE(16, 4, 8).eval()
  pt = tmp_path / "decoder.pt"
  torch.save({"state_dict": net.decoder.state_dict()}, pt)
  out = tmp_path / "vae"
  code, _, _ = _main(["schon-vae", str(pt), f"--workdir={out}"], capsys)
  assert code == 0
  config, trainer, state = load_trained(str(out))
  assert (config.model.arch, config.model.ch, config.model.latent_dim) == ("schon", 4, 8)
  gen = build_generator(config, trainer, state, "z")
  z = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)
  with torch.no_grad():
    want = net.decoder(torch.from_numpy(z)[:, :, None, None]).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(jax.jit(gen.apply_fn)(gen.params, z)), want,
                             atol=1e-5)


def _bn(c):
  return {"weight": torch.ones(c), "bias": torch.zeros(c), "running_mean": torch.zeros(c),
          "running_var": torch.ones(c)}


def _seq(layers):
  return {f"main.{i}.{k}": v for i, d in layers.items() for k, v in d.items()}


@pytest.mark.parametrize("fmt,content,message", [
    ("schon-dcgan", {"epoch": 0, "state_dict": {"x": torch.zeros(2)}},
     "no 'modelG_state_dict'"),
    ("schon-dcgan", {"modelG_state_dict": {"main.0.weight": torch.zeros(32, 16, 4, 4),
                                           "main.0.kernel": torch.zeros(3)}},
     "unexpected key 'main.0.kernel'"),
    ("schon-dcgan", {"modelG_state_dict": {f"main.{i}.weight": torch.zeros(8, 8, 3, 3)
                                           for i in (0, 3, 6)}},
     "main.0.weight has shape (8, 8, 3, 3): Schön's DCGAN has 4x4 kernels"),
    # The 8x8 layer takes 8 channels but the 4x4 stem makes 16.
    ("schon-dcgan", {"modelG_state_dict": _seq({
        0: {"weight": torch.zeros(32, 16, 4, 4)}, 1: _bn(16),
        3: {"weight": torch.zeros(8, 4, 4, 4)}, 4: _bn(4),
        6: {"weight": torch.zeros(4, 1, 4, 4)}})},
     "generator.params.norm8.bias: converted shape (4,) but the model built from the "
     "config has (8,)"),
    ("schon-vae", {"state_dict": {"conv1.conv1.weight": torch.zeros(2, 8, 3)}},
     "conv1.conv1.weight has shape (2, 8, 3)"),
])
def test_bad_checkpoints_exit_2_with_one_line_and_no_workdir(tmp_path, capsys, fmt, content,
                                                             message):
  pt = tmp_path / "bad.pt"
  torch.save(content, pt)
  out = tmp_path / "run"
  code, _, err = _main([fmt, str(pt), f"--workdir={out}"], capsys)
  assert code == 2 and err.startswith(f"error: {pt}: ") and err.count("\n") == 1, err
  assert message in err, err
  assert sorted(os.listdir(tmp_path)) == ["bad.pt"]
