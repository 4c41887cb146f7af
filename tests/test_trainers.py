"""One real training step per model, and no retracing over several steps."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator
from jaxlatent.models import default_model_config
from jaxlatent.training.trainers import ModelTrainer, TrainState, make_trainer
from script_checks import assert_check_passed, run_script


def _config(name, size=16, **model):
  c = ml_collections.ConfigDict()
  c.model = default_model_config(name)
  c.model.update(**model)
  c.image_size = size
  return c


def _tiny(name):
  if name == "dcgan":
    return _config("dcgan", 16, gen_channels=16, disc_channels=16, max_channels=16)
  if name == "vae":
    return _config("vae", 16, ch=4, channels=16, max_channels=16, latent_dim=8)
  if name == "vae_elbo":
    return _config("vae", 16, ch=4, channels=16, max_channels=16, latent_dim=8, loss="elbo")
  if name == "stylegan2":  # intervals of 2: both lax.cond branches run in 3 steps
    return _config("stylegan2", 8, latent_dim=8, w_dim=8, num_mapping_layers=2,
                   channel_base=64, channel_max=8, r1_interval=2, pl_interval=2)
  raise ValueError(name)


def _batch(size, b=8, seed=0):
  return {"image": jnp.tanh(jax.random.normal(jax.random.key(seed), (b, size, size, 1)))}


def _changed(a, b):
  return any(not np.allclose(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _run_steps(trainer, config, n, state):
  step = jax.jit(chex.assert_max_traces(trainer.train_step, n=1))
  metrics = []
  for i in range(n):
    state, m = step(state, _batch(config.image_size, seed=i), jax.random.key(100 + i))
    metrics.append(m)
  return state, metrics


def _train(name, n, **model):
  """``n`` steps of a fresh tiny trainer: (config, trainer, state0, state, metrics)."""
  chex.clear_trace_counter()
  config = _tiny(name)
  config.model.update(**model)
  trainer = make_trainer(config)
  state0 = jax.jit(trainer.init)(jax.random.key(0))
  state, metrics = _run_steps(trainer, config, n, state0)
  return config, trainer, state0, state, metrics


@pytest.fixture(scope="module")
def dcgan_float32_run():
  """Three float32 DCGAN steps, compiled once for the tests below that need them."""
  return _train("dcgan", 3)


@pytest.mark.parametrize("name", ["dcgan", "vae"])
def test_train_steps_finite_change_params_and_trace_once(name, request):
  run = request.getfixturevalue("dcgan_float32_run") if name == "dcgan" else _train(name, 3)
  config, trainer, state0, state, metrics = run
  assert isinstance(trainer, ModelTrainer)
  assert isinstance(state0, TrainState) and state0.step.dtype == jnp.int32
  assert int(state.step) == 3
  for m in metrics:
    for k in trainer.loss_terms:
      assert np.isfinite(float(m[k])), (k, m)
    assert all(v.dtype == jnp.float32 and v.shape == () for v in m.values())
  assert _changed(state0.params, state.params)
  if name == "dcgan":  # BCE: -log D(x) - log(1 - D(G(z))), near 2 log 2 at init
    assert 0.5 < float(metrics[0]["d_loss"]) < 4.0
    assert 0.0 < float(metrics[0]["d_real"]) < 1.0 and 0.0 < float(metrics[0]["d_fake"]) < 1.0
  if name == "vae":
    assert {"loss", "recon", "kl"} <= set(metrics[0])
  gen = trainer.generator(state)
  assert isinstance(gen, Generator)
  x = gen(gen.sample_latents(jax.random.key(1), 2))
  assert x.shape == (2, config.image_size, config.image_size, 1)
  assert bool(jnp.all(jnp.abs(x) <= 1.0))


def test_dcgan_bfloat16_matmuls_train_like_float32(dcgan_float32_run):
  """model.matmul_dtype='bfloat16' (mixed precision 2x2 convs): float32 state and
  metrics, and the first steps' losses within bfloat16 rounding of float32's."""
  config, _, s0_32, _, m_32 = dcgan_float32_run
  assert config.model.get("matmul_dtype", "float32") == "float32"  # the reference run
  _, _, s0_16, s_16, m_16 = _train("dcgan", 2, matmul_dtype="bfloat16")
  chex.assert_trees_all_equal(s0_32.params, s0_16.params)  # same initial parameters
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(s_16.params))
  for a, b in zip(m_32, m_16):
    for k in ("d_loss", "g_loss", "d_real", "d_fake"):
      assert b[k].dtype == jnp.float32
      np.testing.assert_allclose(float(b[k]), float(a[k]), rtol=3e-2, atol=3e-2, err_msg=k)
  assert _changed(s0_16.params, s_16.params)


def test_make_trainer_rejects_unknown_model():
  c = ml_collections.ConfigDict({"model": {"name": "pixelcnn"}, "image_size": 16})
  with pytest.raises(ConfigError, match="model.name"):
    make_trainer(c)


_SHARDED_SCRIPT = r"""
import os, sys
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")  # keeps conftest's fast compile
                           + " --xla_force_host_platform_device_count=2")
import chex, jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
sys.path.insert(0, sys.argv[1])
from script_checks import report_checks
from test_trainers import _changed, _tiny
from jaxlatent.models import stylegan2
from jaxlatent.training import losses
from jaxlatent.training.trainers import make_trainer
assert jax.device_count() == 2
mesh = Mesh(np.array(jax.devices()), ("data",))
batch_sh, repl = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())

c = _tiny("stylegan2")
t = make_trainer(c)
state0 = jax.jit(t.init, out_shardings=repl)(jax.random.key(0))
step = jax.jit(chex.assert_max_traces(t.train_step, n=1))
state, metrics, batches = state0, [], []
for i in range(3):
  x = jnp.tanh(jax.random.normal(jax.random.key(10 + i), (8, c.image_size, c.image_size, 1)))
  batches.append({"image": jax.device_put(x, batch_sh)})
  state, m = step(state, batches[-1], jax.random.key(i))
  metrics.append(m)
  if i == 0:
    state1 = state


def sharded_steps():
  ms = [{k: float(v) for k, v in m.items()} for m in metrics]
  assert int(state.step) == 3
  for m in ms:
    assert all(np.isfinite(m[k]) for k in t.loss_terms), m
  # Step 0 ran both regularisers; step 1 carried their values; step 2 ran them again.
  assert ms[0]["r1"] > 0 and ms[0]["pl_mean"] > 0, ms
  assert ms[1]["r1"] == ms[0]["r1"] and ms[1]["pl_mean"] == ms[0]["pl_mean"]
  assert ms[2]["pl_mean"] != ms[1]["pl_mean"], ms
  assert ms[0]["ema_beta"] == 0.0 and 0 < ms[2]["ema_beta"] < 1, ms
  assert _changed(state0.params, state.params) and _changed(state0.ema_params, state.ema_params)
  assert _changed(state0.model_state["buffers"], state.model_state["buffers"])  # w_avg tracked
  gen = t.generator(state)
  img = gen(gen.sample_latents(jax.random.key(5), 2))
  assert img.shape == (2, c.image_size, c.image_size, 1) and bool(jnp.all(jnp.isfinite(img)))
  # R1 with MinibatchStd groups spanning both devices equals the unsharded value.
  d = stylegan2.build_discriminator(c)
  dv = d.init(jax.random.key(3), x)
  r1 = jax.jit(lambda v, x: losses.r1_penalty(lambda y: d.apply(v, y)[:, 0], x))
  np.testing.assert_allclose(np.asarray(r1(dv, x)),
                             np.asarray(r1(dv, jax.device_put(x, batch_sh))), rtol=1e-4)


def static_phases():
  # intervals of 2: step 0 runs PL + R1, step 1 neither
  assert [t.phase(i) for i in range(3)] == [(True, True), (False, False), (True, True)]
  b, mb = jax.jit(t.train_step, static_argnames=("phase",))(
      state0, batches[0], jax.random.key(0), phase=t.phase(0))
  ma = metrics[0]  # step 0 of the lax.cond program: both conds taken
  assert float(ma["r1"]) > 0 and float(ma["pl"]) > 0  # both regularisers ran
  chex.assert_trees_all_close(ma, mb, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(state1.params, b.params, rtol=1e-4, atol=1e-5)


report_checks([("sharded_steps", sharded_steps), ("static_phases", static_phases)])
"""


@pytest.fixture(scope="module")
def stylegan2_two_devices(tmp_path_factory):
  """One process with 2 host devices runs three lax.cond StyleGAN2 steps and the
  static-phase step, sharing its start, imports and the step-0 inputs between the two
  tests below: its stdout holds a ``PASS`` or ``FAIL`` line per check."""
  return run_script(_SHARDED_SCRIPT, tmp_path_factory.mktemp("sharded"))


def test_stylegan2_steps_with_the_batch_sharded_over_two_devices(stylegan2_two_devices):
  """Three StyleGAN2 steps (G main, lazy PL, D main, lazy R1 via lax.cond; intervals 2)
  with the batch sharded over 2 host devices: one trace, finite losses, regularisers
  run on even steps only, EMA and w_avg updated; R1 equals its unsharded value.

  Runs in a subprocess to get 2 host devices.
  """
  assert_check_passed(stylegan2_two_devices, "sharded_steps")


def test_stylegan2_static_phases_equal_the_lax_cond_step(stylegan2_two_devices):
  """trainer.phase(step) as a static argument (the loop's way, fast on CPU) runs the
  same computation as the one-program lax.cond step: step 0 (both conds taken) of the
  sharded run above, from the same state, batch and key."""
  assert_check_passed(stylegan2_two_devices, "static_phases")
