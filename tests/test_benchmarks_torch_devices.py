"""The PyTorch references keep their networks, batches and noise on the device asked for.

Tiny DCGAN, discovery and StyleGAN2 steps built with ``device=...``: every parameter
and buffer is there, one step runs and returns a finite float.  On 'cpu' everywhere
torch is installed; on 'cuda' only where torch sees a GPU.  Skipped without torch
(the optional bench extra).
"""

from __future__ import annotations

import importlib.util
import math
import pathlib

import ml_collections
import pytest

torch = pytest.importorskip("torch")

from jaxlatent.models import default_model_config  # noqa: E402
from jaxlatent.training import default_optim_config  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _module(name):
  spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


tr = _module("torch_refs")
ts = _module("torch_stylegan")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _on(device: str, *modules) -> bool:
  want = torch.device(device).type
  return all(t.device.type == want for m in modules
             for t in [*m.parameters(), *m.buffers()])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_dcgan_step_on_device(device, channels_last):
  step = tr.DCGANStep(16, 8, [16, 8], [8, 16], batch=4, channels_last=channels_last,
                      project="dense", head="dense", device=device)
  assert _on(device, step.g, step.d) and step.real.device.type == device
  assert math.isfinite(step())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("freeze", [True, False])
def test_discovery_step_on_device(device, freeze):
  g = tr.DCGANGenerator(8, [16, 8], 1, project="dense")
  step = tr.DiscoveryStep(g, 8, k=5, batch=4, image_size=16, freeze_generator=freeze,
                          device=device)
  assert _on(device, step.g, step.a, step.r)
  assert math.isfinite(step())


@pytest.mark.parametrize("device", DEVICES)
def test_stylegan_step_on_device(device):
  c = ml_collections.ConfigDict()
  c.image_size = 16
  c.model = default_model_config("stylegan2")
  c.model.latent_dim, c.model.w_dim = 8, 6
  c.model.num_mapping_layers = 2
  c.model.channel_base, c.model.channel_max = 64, 8
  c.optim = default_optim_config("stylegan2")
  step = ts.StyleGAN2Step.from_config(c, 4, device=device)
  assert _on(device, step.g, step.d)
  assert step.real.device.type == device and step.pl_mean.device.type == device
  for _ in range(2):  # step 0 runs R1 and path length, step 1 neither
    assert math.isfinite(step())
  assert all(e.device.type == device for e in step.g_ema)
