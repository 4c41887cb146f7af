"""IFcVAE-GAN and semi-supervised denoising AAE: steps, factorisation, labels, editing.

Planted truth: a brain-phantom set whose binary attribute is a strong, visible
change (HC-like: small ventricles, no atrophy or lesions; MS-like: large ventricles,
atrophy, lesions), other factors (slice position, rotation, noise) random, 16 px.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxlatent.analysis import attribute_edit as ae
from jaxlatent.errors import ConfigError
from jaxlatent.generator import Generator, LatentSpec
from jaxlatent.models import ifcvae_gan as ifc
from jaxlatent.models import ssdaae as ssd
from jaxlatent.studies import label_fraction as lf
from jaxlatent.training import complete_train_config
from jaxlatent.training.trainers import ModelTrainer, TrainState
from jaxlatent.training.trainers.ifcvae_gan import make_ifcvae_gan_trainer
from jaxlatent.training.trainers.ssdaae import make_ssdaae_trainer


S = 16
B = 32
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Compile fast (the suite's cost is XLA compiles of tiny models, not their steps).
FAST = {"compiler_options": {"xla_backend_optimization_level": 0}}


def _planted(n: int, seed: int, size: int = S):
  """n images [n, size, size, 1] in [-1, 1] and labels (alternating 0/1)."""
  from jaxlatent.phantoms import render, sample_factors
  y = np.arange(n) % 2
  f = sample_factors("brain", jax.random.PRNGKey(seed), n)
  f["ventricle_size"] = jnp.where(y == 1, 1.9, 0.7)
  f["atrophy"] = jnp.where(y == 1, 0.8, 0.0)
  f["lesion_load"] = jnp.where(y == 1, 1.0, 0.0)
  f["slice_position"] = 0.35 + 0.3 * f["slice_position"]
  img = np.asarray(render("brain", f, size, jax.random.PRNGKey(seed + 1)))
  img = np.clip(img / 0.45 - 1.0, -1.0, 1.0)[..., None].astype(np.float32)
  return img, y.astype(np.int32)


@pytest.fixture(scope="module")
def data():
  x, y = _planted(768, 0)  # one render call (one compile)
  return {"train": (x[:512], y[:512]), "test": (x[512:], y[512:])}


def _config(name: str, **model):
  c = ml_collections.ConfigDict()
  c.model = ifc.default_config() if name == "ifcvae_gan" else ssd.default_config()
  c.model.update(channels=16, max_channels=16, num_res_blocks=0, z_dim=8)
  if name == "ifcvae_gan":
    c.model.update(disc_channels=16, aux_hidden=(32,))
  else:
    c.model.update(disc_hidden=(32,))
  c.model.update(**model)
  c.image_size = S
  c.batch_size = B
  c.seed = 0
  c.optim = ml_collections.ConfigDict({"lr": 2e-3})
  return c


def _changed(a, b):
  return any(not np.allclose(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _batches(x, y, n_steps, seed=0, with_index=False):
  rng = np.random.default_rng(seed)
  for _ in range(n_steps):
    idx = rng.choice(len(x), B, replace=False)
    batch = {"image": x[idx], "label": y[idx]}
    if with_index:
      batch["index"] = idx.astype(np.int32)
    yield batch


@pytest.fixture(scope="module")
def subjects():
  return ae.phantom_edit_subjects("brain", n=4, size=S, seed=5)


@pytest.fixture(scope="module")
def ifc_run():
  """The factorising IFcVAE-GAN (aux_weight 1): trainer and its once-traced jitted step."""
  chex.clear_trace_counter()
  config = _config("ifcvae_gan", aux_weight=1.0)
  trainer = make_ifcvae_gan_trainer(config)
  return config, trainer, jax.jit(chex.assert_max_traces(trainer.train_step, n=1), **FAST)


def _check_step_contract(trainer, step, batches, config):
  state0 = jax.jit(trainer.init, **FAST)(jax.random.PRNGKey(0))
  assert isinstance(state0, TrainState) and state0.step.dtype == jnp.int32
  state, metrics = state0, []
  for i, batch in enumerate(batches):
    state, m = step(state, batch, jax.random.PRNGKey(100 + i))
    metrics.append(m)
  assert int(state.step) == len(metrics) == 3
  for m in metrics:
    for k in trainer.loss_terms:
      assert np.isfinite(float(m[k])), (k, m)
    assert all(v.dtype == jnp.float32 and v.shape == () for v in m.values())
  assert _changed(state0.params, state.params)
  assert isinstance(trainer.generator(state), Generator)
  sample = lambda st, key: (lambda g: g(g.sample_latents(key, 2)))(trainer.generator(st))
  x = jax.jit(sample, **FAST)(state, jax.random.PRNGKey(1))
  assert x.shape == (2, S, S, 1) and bool(jnp.all(jnp.abs(x) <= 1.0))
  return state, metrics


def test_ifcvae_gan_steps_finite_change_params_trace_once(ifc_run, data):
  config, trainer, step = ifc_run
  assert isinstance(trainer, ModelTrainer)
  state, metrics = _check_step_contract(trainer, step, _batches(*data["train"], 3), config)
  assert set(state.params) == {"encoder", "decoder", "aux", "discriminator"}
  # BCE terms of a freshly initialised binary model are near log 2.
  assert 0.3 < float(metrics[0]["aux_loss"]) < 1.5
  gen = trainer.generator(state)
  assert gen.latent_spec.shape == (config.model.z_dim + 1,)  # concat(z, y) with scalar y
  codes = gen.sample_latents(jax.random.PRNGKey(2), 64)
  assert set(np.unique(np.asarray(codes[:, -1])).tolist()) == {0.0, 1.0}


def _mean_aux_acc(step, trainer, x, y, n_steps, last):
  state = jax.jit(trainer.init, **FAST)(jax.random.PRNGKey(0))
  accs = []
  for i, batch in enumerate(_batches(x, y, n_steps, seed=1)):
    state, m = step(state, batch, jax.random.PRNGKey(i))
    accs.append(float(m["aux_acc"]))
  return float(np.mean(accs[-last:]))


def test_adversarial_factorisation_lowers_aux_accuracy(ifc_run, data):
  config, trainer, step = ifc_run
  x, y = data["train"]
  adv = _mean_aux_acc(step, trainer, x, y, 150, 30)
  t0 = make_ifcvae_gan_trainer(_config("ifcvae_gan", aux_weight=0.0, mean_gap_weight=0.0))
  free = _mean_aux_acc(jax.jit(t0.train_step, **FAST), t0, x, y, 150, 30)
  assert free > 0.8, free  # without the factorisation terms z carries the attribute
  assert adv < free - 0.1, (adv, free)


def test_probe_attribute_reads_planted_codes_and_not_noise():
  rng = np.random.default_rng(0)
  y, yt = rng.integers(0, 2, 400), rng.integers(0, 2, 400)
  z, zt = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
  z[:, 3] += 4.0 * y
  zt[:, 3] += 4.0 * yt
  probe = jax.jit(lf.probe_attribute, static_argnames=("num_classes", "steps"))
  assert float(probe(z, y, zt, yt, jax.random.PRNGKey(0))) > 0.95
  # Scale and offset of the codes do not matter (features are standardised).
  assert float(probe(100.0 * z + 7.0, y, 100.0 * zt + 7.0, yt, jax.random.PRNGKey(0))) > 0.95
  noise, noise_t = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
  assert abs(float(probe(noise, y, noise_t, yt, jax.random.PRNGKey(0))) - 0.5) < 0.1
  # Vmappable over keys (or stacked runs): one accuracy per key.
  accs = jax.vmap(lf.probe_attribute, (None, None, None, None, 0))(
      z, y, zt, yt, jax.random.split(jax.random.PRNGKey(1), 3))
  assert accs.shape == (3,) and bool(jnp.all(accs > 0.95))
  # Three classes, each shifting its own dim.
  y3, y3t = rng.integers(0, 3, 600), rng.integers(0, 3, 600)
  z3 = rng.normal(size=(600, 6)) + 4.0 * np.eye(6)[y3]
  z3t = rng.normal(size=(600, 6)) + 4.0 * np.eye(6)[y3t]
  assert float(probe(z3, y3, z3t, y3t, jax.random.PRNGKey(0), num_classes=3)) > 0.95
  assert lf.majority_rate(np.array([0, 1, 1, 1])) == 0.75


def test_class_explained_variance_is_the_class_r2_of_each_dim():
  rng = np.random.default_rng(0)
  y = np.arange(64) % 2
  z = rng.normal(size=(64, 3)).astype(np.float32)
  z[:, 0] += 3.0 * y
  z[:, 1:] -= np.stack([z[y == c, 1:].mean(0) for c in (0, 1)])[y]  # equal class means
  value = float(ifc.class_explained_variance(jnp.asarray(z), jnp.asarray(y), 2))
  r2_dim0 = np.corrcoef(z[:, 0], y)[0, 1] ** 2  # R^2 of dim 0 on the class indicator
  np.testing.assert_allclose(value, r2_dim0, rtol=1e-4)
  np.testing.assert_allclose(float(ifc.class_explained_variance(jnp.asarray(5.0 * z), y, 2)),
                             value, rtol=1e-4)


def _vae_loss_grads(data, term: str, **model):
  """Gradients of the IFcVAE-GAN's phase-1 loss with only the weight ``term`` at 1."""
  from jaxlatent.training.trainers import ifcvae_gan as ifc_trainer
  weights = {w: 0.0 for w in ("recon_weight", "kl_weight", "class_weight", "aux_weight",
                              "gan_weight", "mean_gap_weight")}
  config = _config("ifcvae_gan", **{**weights, term: 1.0}, **model)
  parts = ifc_trainer.IFcVAEGANParts(ifc.build(config), ifc.model_settings(config),
                                     None, None, None)  # vae_loss uses no optimizer
  state = make_ifcvae_gan_trainer(config).init(jax.random.PRNGKey(0))
  vae = {"encoder": state.params["encoder"], "decoder": state.params["decoder"]}
  x, y = data["train"]
  grads, (terms, _) = jax.grad(ifc_trainer.vae_loss, has_aux=True)(
      vae, parts, state.params, jnp.asarray(x[:B]), jnp.asarray(y[:B]),
      jax.random.split(jax.random.PRNGKey(1)))
  sq_norm = lambda tree: float(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(tree)))
  norms = {k: sq_norm(v) for k, v in grads["encoder"].items()}
  norms["decoder"] = sq_norm(grads["decoder"])
  return norms, terms


@pytest.mark.parametrize("scope", ["head", "encoder"])
def test_mean_gap_scope_decides_what_the_term_trains(data, scope):
  """The mean-gap term's gradient reaches the posterior head always and the trunk only
  with mean_gap_scope='encoder'; the class head and the decoder never."""
  norms, terms = _vae_loss_grads(data, "mean_gap_weight", mean_gap_scope=scope)
  assert float(terms["mean_gap"]) > 0.0
  assert norms["posterior"] > 0.0
  assert norms["attribute"] == 0.0 and norms["decoder"] == 0.0
  assert (norms["trunk"] > 0.0) == (scope == "encoder")


@pytest.mark.parametrize("head_input", ["features", "detached"])
def test_class_head_input_decides_whether_the_class_loss_trains_the_trunk(data, head_input):
  """'detached' is the reference's read-out (encY on detached features)."""
  norms, _ = _vae_loss_grads(data, "class_weight", class_head_input=head_input)
  assert norms["attribute"] > 0.0 and norms["posterior"] == 0.0
  assert (norms["trunk"] > 0.0) == (head_input == "features")


def _probe_after_training(x, y, xt, yt, steps: int, **model) -> tuple[float, float]:
  """(fresh-probe held-out accuracy on posterior means, mean held-out MSE) after a run."""
  config = _config("ifcvae_gan", **model)
  config.image_size = x.shape[1]
  trainer = make_ifcvae_gan_trainer(config)
  step = jax.jit(trainer.train_step, **FAST)
  state = jax.jit(trainer.init, **FAST)(jax.random.PRNGKey(0))
  for i, batch in enumerate(_batches(x, y, steps, seed=1)):
    state, _ = step(state, batch, jax.random.PRNGKey(i))
  encode = jax.jit(lambda p, im: ifc.encode(p, im, config)[0], **FAST)
  z, zt = encode(state.params, x), encode(state.params, xt)
  rec = jax.jit(lambda p, z, c: ifc.decode(p, z, c, config), **FAST)(
      state.params, zt, ifc.y_code(jnp.asarray(yt), 2))
  acc = float(lf.probe_attribute(z, y, zt, yt, jax.random.PRNGKey(0)))
  return acc, float(jnp.mean(jnp.square(rec - xt)))


def test_factorisation_lowers_a_fresh_linear_probe_on_z():
  """A probe fitted afresh on z (not the model's own adversary) after 100 steps on 32 px
  planted phantoms: the default factorisation terms against both weights at 0
  (measured: 0.52 vs 1.0)."""
  x, y = _planted(640, 3, size=32)
  train, test = (x[:512], y[:512]), (x[512:], y[512:])
  m = ifc.default_config()
  assert m.aux_weight > 0 and m.mean_gap_weight > 0 and m.aux_input == "mean"
  factorised, mse_f = _probe_after_training(*train, *test, 100)
  free, mse_0 = _probe_after_training(*train, *test, 100, aux_weight=0.0, mean_gap_weight=0.0)
  chance = lf.majority_rate(test[1])
  assert chance == 0.5
  assert free > 0.9, free  # without the terms z carries the attribute
  assert factorised < free - 0.2, (factorised, free)
  assert mse_f < 1.5 * mse_0, (mse_f, mse_0)  # at little cost to reconstruction


def test_ssdaae_steps_finite_change_params_trace_once(data):
  chex.clear_trace_counter()
  config = _config("ssdaae", labelled_fraction=0.25, label_seed=3)
  trainer = make_ssdaae_trainer(config)
  step = jax.jit(chex.assert_max_traces(trainer.train_step, n=1), **FAST)
  batches = list(_batches(*data["train"], 3, with_index=True))
  state, metrics = _check_step_contract(trainer, step, batches, config)
  assert set(state.params) == {"encoder", "decoder", "disc_z", "disc_y"}
  mask = ssd.labelled_mask(512, 0.25, 3)
  for batch, m in zip(batches, metrics):  # the labelled subset is fixed per example index
    np.testing.assert_allclose(float(m["labelled_frac"]), mask[batch["index"]].mean(), atol=1e-6)
  gen = trainer.generator(state)
  codes = np.asarray(gen.sample_latents(jax.random.PRNGKey(0), 16))
  assert codes.shape == (16, config.model.z_dim + 2)
  np.testing.assert_array_equal(codes[:, -2:].sum(-1), 1.0)  # one-hot y


def test_labelled_subset_is_deterministic_per_example():
  mask = ssd.labelled_mask(4000, 0.1, 7)
  assert abs(mask.mean() - 0.1) < 0.02
  assert not np.array_equal(mask, ssd.labelled_mask(4000, 0.1, 8))
  idx = np.array([5, 3999, 17, 5])
  np.testing.assert_array_equal(np.asarray(ssd.labelled_from_index(idx, 0.1, 7)), mask[idx])
  # Without an index: a function of the image content, whatever the batch order.
  x = jax.random.normal(jax.random.PRNGKey(0), (2000, 8, 8, 1))
  from_image = jax.jit(lambda imgs: ssd.labelled_from_image(imgs, 0.3, 1))
  flags = np.asarray(from_image(x))
  assert abs(flags.mean() - 0.3) < 0.05
  perm = np.random.default_rng(0).permutation(2000)
  np.testing.assert_array_equal(np.asarray(from_image(x[perm])), flags[perm])


def test_semi_supervised_head_beats_chance_with_10_percent_labels(data):
  config = _config("ssdaae")
  # The SS-DAAE's own head only; the supervised baseline has its tests in
  # test_label_fraction.py.
  config.supervised = ml_collections.ConfigDict({"enabled": False})
  rows = lf.accuracy_vs_label_fraction(config, *data["train"], *data["test"],
                                       fractions=(0.1,), steps=100, jit_options=FAST)
  assert [r["fraction"] for r in rows] == [0.1]
  assert 0.05 * 512 < rows[0]["num_labelled"] < 0.15 * 512
  assert rows[0]["chance"] == 0.5
  assert rows[0]["accuracy"] > 0.75, rows


def test_attribute_traversal_shapes_and_endpoints(ifc_run, data, subjects):
  config, trainer, _ = ifc_run
  state = jax.jit(trainer.init, **FAST)(jax.random.PRNGKey(0))
  gen = trainer.generator(state)
  z = jax.random.normal(jax.random.PRNGKey(1), (4, config.model.z_dim))
  images = ae.attribute_traversal(gen, z, 0.0, 1.0, 4)
  assert images.shape == (4, 4, S, S, 1)
  decode = jax.jit(lambda g, codes: g(codes), **FAST)
  np.testing.assert_allclose(images[:, 0], decode(gen, ae.attribute_latents(z, 0.0)), atol=1e-5)
  np.testing.assert_allclose(images[:, -1], decode(gen, ae.attribute_latents(z, 1.0)), atol=1e-5)
  np.testing.assert_allclose(images[:, 2], decode(gen, ae.attribute_latents(z, 2.0 / 3.0)),
                             atol=1e-5)
  # The model's own edit of real images: encode, set y, decode.
  x = jnp.asarray(data["test"][0][:2])
  edited = jax.jit(lambda p, x: ifc.edit(p, x, 1.0, config), **FAST)(state.params, x)
  g2, start, direction = ae.encoder_edit_path("ifcvae_gan", state.params, config, x, 0.0, 1.0)
  np.testing.assert_allclose(decode(g2, start + direction), edited, atol=1e-5)
  # Scored like any other model's edit (same subjects, same function); the eigen-analysis
  # (component 2) runs on the attribute traversal with y's schedule 0..1 as alpha.
  scores = ae.score_encoder_edits("ifcvae_gan", state.params, config, subjects, 0.0, 1.0, 4)
  assert scores.images.shape == (4, 4, S, S, 1)
  for v in (scores.edit_corr, scores.component2_corr):
    assert np.all(np.isfinite(v)) and np.all(np.abs(v) <= 1.0 + 1e-6)


def test_edit_score_of_the_true_difference_is_one(subjects):
  subj = subjects
  assert subj.images.shape == (4, S, S, 1) and np.abs(subj.images).max() <= 1.0
  assert np.all(subj.changed["lesion_load"] > subj.factors["lesion_load"])
  m = subj.masks
  assert all(np.abs(d[k]).max() > 0 for d, k in zip(subj.true_difference, m))
  true = jnp.asarray(subj.true_difference)
  # A generator whose edit y 0 -> 1 is exactly the true change (times 3, plus an offset).
  base = jnp.asarray(subj.images[..., 0])

  def apply_fn(params, latents):  # latents [N, 2] = (subject id, y)
    i = latents[:, 0].astype(jnp.int32)
    return (params["base"][i] + latents[:, 1:2, None] * 3.0 * params["true"][i])[..., None]

  gen = Generator(params={"base": base, "true": true}, apply_fn=apply_fn,
                  latent_spec=LatentSpec((2,), "z", "none"), image_shape=(S, S, 1), name="toy")
  start = jnp.stack([jnp.arange(4.0), jnp.zeros(4)], -1)
  scores = ae.score_edits(gen, start, jnp.array([0.0, 1.0]), jnp.linspace(0.0, 1.0, 5),
                          subj.true_difference, m)
  np.testing.assert_allclose(scores.edit_corr, 1.0, atol=1e-5)
  assert np.all(scores.component2_corr > 0.9)  # component 2 ~ the linear change
  assert scores.images.shape == (4, 5, S, S, 1)
  np.testing.assert_allclose(ae.difference_scores(-true, true, m), -1.0, atol=1e-5)
  wrong = ae.difference_scores(jnp.roll(true, 5, axis=2), true, m)
  assert float(jnp.max(wrong)) < 0.9


def test_config_errors():
  c = _config("ifcvae_gan")
  c.data = ml_collections.ConfigDict({"label_column": ""})
  with pytest.raises(ConfigError, match="label_column"):
    make_ifcvae_gan_trainer(c)
  with pytest.raises(ConfigError, match="num_classes"):
    make_ifcvae_gan_trainer(_config("ifcvae_gan", num_classes=1))
  for key in ("mean_gap_scope", "class_head_input"):
    with pytest.raises(ConfigError, match=key):
      make_ifcvae_gan_trainer(_config("ifcvae_gan", **{key: "trunk"}))
  with pytest.raises(ConfigError, match="labelled_fraction"):
    make_ssdaae_trainer(_config("ssdaae", labelled_fraction=1.5))


def test_train_py_runs_ifcvae_gan_tiny(tmp_path):
  workdir = str(tmp_path / "run")
  cmd = ["train.py",
         "--config=" + os.path.join(ROOT, "configs", "ifcvae_brain_tiny.py"),
         f"--workdir={workdir}", "--config.steps=2", "--config.image_size=16",
         "--config.batch_size=8", "--config.data.num_images=32", "--config.fid_every=0",
         "--config.log_every=1", "--config.ckpt_every=2", "--config.sample_every=2",
         "--config.model.channels=16", "--config.model.max_channels=16",
         "--config.model.disc_channels=16", "--config.model.num_res_blocks=0",
         "--malloc=system"]  # 'retain' would outlive the test in this process
  # train.py's main in-process: tests/test_train_cli.py covers the real process.
  spec = importlib.util.spec_from_file_location("train_cli", os.path.join(ROOT, "train.py"))
  train_py = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(train_py)
  assert train_py.main(cmd) == 0
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
  assert [r["step"] for r in records] == [1, 2]
  assert all(np.isfinite(r[k]) for r in records for k in ("loss", "aux_loss", "d_loss"))
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))


# ----------------------------------------------------------------------------- the loop's index


class _LabelledSlices:
  """Images and int labels: what the training loop reads from a dataset."""

  def __init__(self, images, labels):
    self.images, self._labels = images, np.asarray(labels, np.int32)

  def __len__(self):
    return len(self.images)

  def label_ids(self, column):
    del column
    return self._labels, [0, 1]


def _loop_ssdaae_config(steps: int):
  sys.path.insert(0, ROOT)
  from configs import ssdaae_brain_tiny  # pylint: disable=g-import-not-at-top
  c = complete_train_config(ssdaae_brain_tiny.get_config())
  c.image_size, c.batch_size, c.steps = S, 16, steps
  c.model.update(channels=16, max_channels=16, num_res_blocks=0, z_dim=8, disc_hidden=(32,),
                 labelled_fraction=0.3, label_seed=5)
  c.log_every, c.ckpt_every, c.sample_every = 1, 2, 0
  c.fid_every, c.fid_num_samples = 100, 16  # FD at the last step only; 16 images held out
  c.distributed = "off"
  return c


def test_training_loop_passes_dataset_indices_to_the_ssdaae_step(tmp_path, data):
  """Through train_and_evaluate (FD hold-out on, then a resume), each step's labelled
  examples are exactly the per-index draw ``labelled_mask`` of the DATASET indices."""
  from jaxlatent.data import batch_indices  # pylint: disable=g-import-not-at-top
  from jaxlatent.training import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from jaxlatent.training.loop import split_holdout, train_and_evaluate  # pylint: disable=g-import-not-at-top
  x, y = data["train"]
  dataset = _LabelledSlices(x, y)
  assert make_ssdaae_trainer(_loop_ssdaae_config(4)).needs_index
  assert not make_ifcvae_gan_trainer(_config("ifcvae_gan")).needs_index
  workdir = str(tmp_path / "run")
  train_and_evaluate(_loop_ssdaae_config(2), workdir, dataset=dataset)
  train_and_evaluate(_loop_ssdaae_config(4), workdir, dataset=dataset)  # resumes at step 2
  records = metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  c = _loop_ssdaae_config(4)
  train_idx, held = split_holdout(len(x), c.fid_num_samples, c.seed)
  assert len(held) == 16
  batches = [train_idx[batch_indices(len(train_idx), c.batch_size, c.seed, t)] for t in range(4)]
  mask = ssd.labelled_mask(len(x), 0.3, 5)
  expected = [int(mask[idx].sum()) for idx in batches]
  assert [r["num_labelled"] for r in records] == expected
  # The alternatives the test must tell apart give other counts: the content-hash
  # fallback, and positions in train_idx instead of dataset indices.
  by_image = [int(np.sum(ssd.labelled_from_image(jnp.asarray(x[idx]), 0.3, 5))) for idx in batches]
  by_position = [int(mask[batch_indices(len(train_idx), c.batch_size, c.seed, t)].sum())
                 for t in range(4)]
  assert by_image != expected and by_position != expected


SHARDED_INDEX = """
import sys, types
sys.path.insert(0, {root!r})
import jax, jax.numpy as jnp, numpy as np
from configs import dcgan_tiny
from jaxlatent.training import metrics as metrics_lib
from jaxlatent.training.loop import train_and_evaluate
from jaxlatent.training.testing import ToyDataset, toy_trainer
assert jax.device_count() == 2, jax.devices()
n, s = 64, 16
# Image i is constant (i / n) * 2 - 1, so a step can check that each row's index is its own.
images = np.broadcast_to((np.arange(n) / n * 2 - 1)[:, None, None, None], (n, s, s, 1))
toy = toy_trainer(s)

def indexed_step(state, batch, key):
  state, m = toy.train_step(state, batch, key)
  row_index = (batch["image"][:, 0, 0, 0] + 1) / 2 * n  # [B]
  m["mismatch"] = jnp.max(jnp.abs(row_index - batch["index"]))
  m["index_sum"] = jnp.sum(batch["index"]).astype(jnp.float32)
  return state, m

trainer = types.SimpleNamespace(init=toy.init, train_step=indexed_step, generator=toy.generator,
                                loss_terms=("loss",), name="toy", phase=None, needs_index=True)

c = dcgan_tiny.get_config()
c.image_size, c.batch_size, c.steps, c.log_every, c.ckpt_every = s, 8, 3, 1, 3
c.sample_every, c.fid_every, c.distributed = 0, 0, "off"
train_and_evaluate(c, {workdir!r}, trainer=trainer, dataset=ToyDataset(images.astype(np.float32)))
for r in metrics_lib.read_metrics({workdir!r} + "/metrics.jsonl"):
  print("RECORD", r["step"], r["mismatch"], r["index_sum"])
"""


def test_index_is_sharded_like_the_images_on_two_devices(tmp_path):
  """On a 2-device mesh every row's 'index' is the dataset index of that row's image."""
  from jaxlatent.data import batch_indices  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2")
  script = SHARDED_INDEX.format(root=ROOT, workdir=str(tmp_path / "run"))
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300, cwd=ROOT, env=env)
  assert out.returncode == 0, out.stdout + out.stderr
  rows = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("RECORD")]
  assert [int(r[0]) for r in rows] == [1, 2, 3]
  assert all(float(r[1]) < 1e-3 for r in rows), rows
  expected = [float(batch_indices(64, 8, 0, t).sum()) for t in range(3)]
  assert [float(r[2]) for r in rows] == expected
