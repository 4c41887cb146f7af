"""Data parallelism: 4 forced host devices reproduce the 1-device run; env detection."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import dcgan_tiny  # noqa: E402  pylint: disable=g-import-not-at-top
from jaxlatent.errors import ConfigError  # noqa: E402
from jaxlatent.training import train_and_evaluate  # noqa: E402
from jaxlatent.training.testing import toy_dataset  # noqa: E402
from jaxlatent.training.trainers import make_trainer  # noqa: E402
from jaxlatent.training import checkpoint as ckpt_lib  # noqa: E402
from jaxlatent.training.sharding import distributed_requested  # noqa: E402
from jaxlatent.training.validate import validate_config  # noqa: E402
from jaxlatent.training import complete_train_config  # noqa: E402

def tiny_dcgan_config():
  """A DCGAN with BatchNorm (statistics over the GLOBAL batch) for 16x16 toy images."""
  c = complete_train_config(dcgan_tiny.get_config())
  c.image_size, c.batch_size, c.steps = 16, 8, 3
  c.model.gen_channels = c.model.disc_channels = c.model.max_channels = 16
  c.log_every, c.ckpt_every, c.sample_every, c.fid_every = 1, 1, 0, 0
  c.distributed = "off"
  return c


RUN = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    import jax
    from test_training_distributed import tiny_dcgan_config
    from jaxlatent.training import train_and_evaluate
    from jaxlatent.training.testing import toy_dataset
    assert jax.device_count() == 4, jax.devices()
    train_and_evaluate(tiny_dcgan_config(), {workdir!r}, dataset=toy_dataset(64, 16))
""")


def test_four_devices_match_one_device_and_the_step_traces_once(tmp_path):
  env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "")  # conftest's fast compile
             + " --xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  script = RUN.format(root=ROOT, tests=os.path.dirname(__file__), workdir=str(tmp_path / "d4"))
  proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  # Meanwhile the same run here, on this process's device(s), counting traces of the
  # real DCGAN step.
  config = tiny_dcgan_config()
  trainer = make_trainer(config)
  traces = [0]

  def counting_step(state, batch, key):
    traces[0] += 1
    return trainer.train_step(state, batch, key)

  train_and_evaluate(config, str(tmp_path / "d1"), dataset=toy_dataset(64, 16),
                     trainer=dataclasses.replace(trainer, train_step=counting_step))
  assert traces[0] == 1
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out
  step1, one = ckpt_lib.load_state_tree(str(tmp_path / "d1"))
  step4, four = ckpt_lib.load_state_tree(str(tmp_path / "d4"))
  assert step1 == step4 == 3
  leaves1, leaves4 = jax.tree.leaves(one), jax.tree.leaves(four)
  assert len(leaves1) == len(leaves4) > 10
  for a, b in zip(leaves1, leaves4):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
  # The params moved between steps 1 and 3: the runs compare trained states.
  _, first = ckpt_lib.load_state_tree(str(tmp_path / "d1"), step=1)
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(first["params"]),
                                                    jax.tree.leaves(one["params"])))
  # A workdir gives back its trained Generator (config.json + latest checkpoint).
  saved_config, saved_trainer, state = ckpt_lib.load_trained(str(tmp_path / "d4"))
  assert saved_config.model.gen_channels == 16 and int(state.step) == 3
  gen = saved_trainer.generator(state)
  for a, b in zip(jax.tree.leaves(gen.params["params"]),
                  jax.tree.leaves(four["params"]["generator"]), strict=True):
    np.testing.assert_array_equal(a, b)
  images = gen(gen.sample_latents(jax.random.PRNGKey(0), 2))
  assert images.shape == (2, 16, 16, 1) and bool(jax.numpy.all(jax.numpy.abs(images) <= 1))


@pytest.mark.parametrize("env, expected", [
    ({}, False),
    ({"SLURM_NTASKS": "1", "SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "n1",
      "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}, False),  # one task: single process
    ({"SLURM_NTASKS": "4", "SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "n[1-4]",
      "SLURM_PROCID": "2", "SLURM_LOCALID": "0"}, True),
    ({"SLURM_NTASKS": "4"}, False),  # salloc shell without a job step
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
    ({"COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
    ({"TPU_WORKER_HOSTNAMES": "t1,t2,t3,t4"}, True),
    ({"TPU_WORKER_HOSTNAMES": "localhost"}, False),  # single-host TPU VM
])
def test_auto_detects_multi_process_environments(env, expected):
  assert distributed_requested("auto", env) is expected
  assert distributed_requested("off", env) is False
  assert distributed_requested("on", env) is True


def test_bad_distributed_mode_and_indivisible_batch_are_config_errors():
  with pytest.raises(ConfigError, match="distributed='yes'"):
    distributed_requested("yes", {})
  c = complete_train_config(dcgan_tiny.get_config())
  c.batch_size = 30
  with pytest.raises(ConfigError, match="batch_size=30 is not divisible by the 4 devices"):
    validate_config(c, device_count=4)
  validate_config(c, device_count=3)
