"""Direction methods against their reference code, numerically.

* Voynov & Babenko / Schön et al.: a PyTorch port (written for this test) of
  GANLatentDiscovery's ``LatentDeformator`` (linear, proj, ortho) and of
  ``LeNetShiftPredictor`` / ``LatentShiftPredictor`` (ResNet-18), loaded with our
  weights, gives our outputs; two steps of the reference's training loop (same G, z,
  shifts, Adam) give our loss and our updated deformator / predictor parameters.
* InterFaceGAN: our exact linear C-SVM vs ``sklearn.svm.SVC(kernel='linear')`` on
  raw, correlated, differently scaled codes; ``train_boundary``'s sample selection.
* SeFa: the closed form of the reference's ``factorize_weight`` on the same weights,
  and the w+ edit as the reference's per-layer addition.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlatent.directions import VoynovConfig, init_state, make_train_step, sample_shifts
from jaxlatent.directions.networks import Deformator, make_reconstructor
from jaxlatent.directions.sefa import sefa, sefa_directions, sefa_edit
from jaxlatent.directions.supervised import fit_boundary, train_boundary
from jaxlatent.directions.svm import fit_linear_svc, select_by_score
from jaxlatent.generator import Generator, LatentSpec

torch = pytest.importorskip("torch")
svm = pytest.importorskip("sklearn.svm")
nn, F = torch.nn, torch.nn.functional

# ---------------------------------------------------------------------------------------
# PyTorch port of the reference modules.


class TorchDeformator(nn.Module):
  """``LatentDeformator`` for LINEAR, PROJECTIVE and ORTHO (K = D for ORTHO)."""

  def __init__(self, kind, k, d):
    super().__init__()
    self.kind = kind
    if kind in ("linear", "proj"):
      self.linear = nn.Linear(k, d, bias=True)
    else:
      self.log_mat_half = nn.Parameter(torch.zeros(d, d))

  def forward(self, x):
    if self.kind == "linear":
      return self.linear(x)
    if self.kind == "proj":
      out = self.linear(x)
      return (torch.norm(x, dim=1, keepdim=True) / torch.norm(out, dim=1, keepdim=True)) * out
    mat = torch.linalg.matrix_exp(self.log_mat_half - self.log_mat_half.T)
    return F.linear(x, mat)


class TorchLeNet(nn.Module):
  """``LeNetShiftPredictor(dim=k, channels=c, width=w)``."""

  def __init__(self, k, c, w):
    super().__init__()
    self.convnet = nn.Sequential(
        nn.Conv2d(2 * c, 3 * w, 5), nn.BatchNorm2d(3 * w), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(3 * w, 8 * w, 5), nn.BatchNorm2d(8 * w), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(8 * w, 60 * w, 5), nn.BatchNorm2d(60 * w), nn.ReLU())
    self.fc_logits = nn.Sequential(nn.Linear(60 * w, 42 * w), nn.BatchNorm1d(42 * w),
                                   nn.ReLU(), nn.Linear(42 * w, k))
    self.fc_shift = nn.Sequential(nn.Linear(60 * w, 42 * w), nn.BatchNorm1d(42 * w),
                                  nn.ReLU(), nn.Linear(42 * w, 1))

  def forward(self, x1, x2):
    f = self.convnet(torch.cat([x1, x2], dim=1)).mean(dim=[-1, -2])
    return self.fc_logits(f), self.fc_shift(f).squeeze()


class TorchBlock(nn.Module):
  """torchvision's ``BasicBlock``."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.down = None
    if stride != 1 or cin != cout:
      self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                nn.BatchNorm2d(cout))

  def forward(self, x):
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu((x if self.down is None else self.down(x)) + y)


class TorchResNet(nn.Module):
  """``LatentShiftPredictor``: ResNet-18 (stem ``width``) on 2C channels, two heads."""

  def __init__(self, k, c, width):
    super().__init__()
    self.conv1 = nn.Conv2d(2 * c, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    blocks, cin = [], width
    for i in range(4):
      for j in range(2):
        blocks.append(TorchBlock(cin, width * 2**i, 2 if (i > 0 and j == 0) else 1))
        cin = width * 2**i
    self.blocks = nn.ModuleList(blocks)
    self.type_estimator = nn.Linear(cin, k)
    self.shift_estimator = nn.Linear(cin, 1)

  def forward(self, x1, x2):
    x = F.max_pool2d(F.relu(self.bn1(self.conv1(torch.cat([x1, x2], dim=1)))), 3, 2, 1)
    for b in self.blocks:
      x = b(x)
    f = F.adaptive_avg_pool2d(x, 1).flatten(1)
    return self.type_estimator(f), self.shift_estimator(f).squeeze()


# ---------------------------------------------------------------------------------------
# Weight transfer (ours -> torch) and comparison (torch -> ours).


def _t(x):
  return torch.tensor(np.asarray(x, np.float32))


def _conv(tm, p):
  tm.weight.data = _t(np.transpose(p["conv"]["kernel"], (3, 2, 0, 1)))
  if tm.bias is not None:
    tm.bias.data = _t(p["conv"]["bias"])


def _linear(tm, p):
  tm.weight.data = _t(np.asarray(p["dense"]["kernel"]).T)
  tm.bias.data = _t(p["dense"]["bias"])


def _bn(tm, p, s):
  tm.weight.data, tm.bias.data = _t(p["scale"]), _t(p["bias"])
  tm.running_mean.data, tm.running_var.data = _t(s["mean"]), _t(s["var"])


def _pairs_lenet(tm):
  """(torch module, our name, kind) in the LeNet."""
  c = tm.convnet
  out = [(c[0], "conv0", "conv"), (c[1], "bn0", "bn"), (c[4], "conv1", "conv"),
         (c[5], "bn1", "bn"), (c[8], "conv2", "conv"), (c[9], "bn2", "bn")]
  for head in ("fc_logits", "fc_shift"):
    seq = getattr(tm, head)
    out += [(seq[0], f"{head}_0", "linear"), (seq[1], f"{head}_bn", "bn"),
            (seq[3], f"{head}_1", "linear")]
  return out


def _pairs_resnet(tm):
  out = [(tm.conv1, ("conv1",), "conv"), (tm.bn1, ("bn1",), "bn")]
  for n, b in enumerate(tm.blocks):
    name = f"layer{n // 2 + 1}_{n % 2}"
    out += [(b.conv1, (name, "conv1"), "conv"), (b.bn1, (name, "bn1"), "bn"),
            (b.conv2, (name, "conv2"), "conv"), (b.bn2, (name, "bn2"), "bn")]
    if b.down is not None:
      out += [(b.down[0], (name, "downsample_conv"), "conv"),
              (b.down[1], (name, "downsample_bn"), "bn")]
  out += [(tm.type_estimator, ("type_estimator",), "linear"),
          (tm.shift_estimator, ("shift_estimator",), "linear")]
  return out


def _get(tree, path):
  path = (path,) if isinstance(path, str) else path
  for p in path:
    tree = tree[p]
  return tree


def _load(tm, variables, pairs):
  for mod, name, kind in pairs:
    p = _get(variables["params"], name)
    if kind == "conv":
      _conv(mod, p)
    elif kind == "linear":
      _linear(mod, p)
    else:
      _bn(mod, p, _get(variables["batch_stats"], name))


def _assert_same(tm, variables, pairs, rtol, atol, mean_atol=None):
  """Every torch parameter and BatchNorm buffer equals ours (running means to
  ``mean_atol`` when given)."""
  for mod, name, kind in pairs:
    p = _get(variables["params"], name)
    if kind == "conv":
      ours = {"weight": np.transpose(p["conv"]["kernel"], (3, 2, 0, 1))}
      if mod.bias is not None:
        ours["bias"] = p["conv"]["bias"]
    elif kind == "linear":
      ours = {"weight": np.asarray(p["dense"]["kernel"]).T, "bias": p["dense"]["bias"]}
    else:
      s = _get(variables["batch_stats"], name)
      ours = {"weight": p["scale"], "bias": p["bias"], "running_mean": s["mean"],
              "running_var": s["var"]}
    for attr, value in ours.items():
      tol = mean_atol if (attr == "running_mean" and mean_atol is not None) else atol
      np.testing.assert_allclose(np.asarray(value), getattr(mod, attr).detach().numpy(),
                                 rtol=rtol, atol=tol, err_msg=f"{name}.{attr}")


def _nchw(x):
  return torch.tensor(np.transpose(np.asarray(x), (0, 3, 1, 2)).copy())


# ---------------------------------------------------------------------------------------
# Voynov & Babenko: modules.


@pytest.mark.parametrize("kind", ["linear", "proj", "ortho"])
def test_deformator_matches_reference(kind):
  k = d = 6
  module = Deformator(kind, k, d, random_init=True)
  params = module.init(jax.random.key(0), jnp.zeros((1, k)))
  tm = TorchDeformator(kind, k, d)
  if kind == "ortho":
    tm.log_mat_half.data = _t(params["params"]["log_mat_half"])
  else:
    tm.linear.weight.data = _t(params["params"]["A"])
    tm.linear.bias.data = _t(params["params"]["b"])
  rng = np.random.default_rng(0)
  codes = np.concatenate([np.eye(k) * rng.uniform(-6, 6, size=(k, 1)),  # eps * e_k
                          rng.normal(size=(3, k))]).astype(np.float32)
  ours = np.asarray(module.apply(params, jnp.asarray(codes)))
  ref = tm(_t(codes)).detach().numpy()
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_deformator_reference_init():
  """The reference's start: 0.1 * randn weights (random_init), a bias U(+-1/sqrt(K))."""
  k, d = 200, 300
  p = Deformator("proj", k, d).init(jax.random.key(1), jnp.zeros((1, k)))["params"]
  assert np.std(np.asarray(p["A"])) == pytest.approx(0.1, rel=0.02)
  b = np.asarray(p["b"])
  assert np.abs(b).max() <= 1 / np.sqrt(k) and np.std(b) == pytest.approx(
      1 / np.sqrt(3 * k), rel=0.15)
  eye = Deformator("linear", 4, 6, random_init=False).init(jax.random.key(1),
                                                           jnp.zeros((1, 4)))["params"]["A"]
  np.testing.assert_array_equal(np.asarray(eye), np.eye(6, 4))


@pytest.mark.parametrize("kind,width", [("lenet", 1), ("resnet", 4)])
def test_shift_predictor_matches_reference_train_and_eval(kind, width):
  k, c, size, b = 5, 1, 32, 6
  module = make_reconstructor(kind, k, width)
  rng = np.random.default_rng(1)
  x = rng.normal(size=(b, size, size, 2 * c)).astype(np.float32)
  variables = jax.jit(module.init)(jax.random.key(2), jnp.asarray(x[:1]))
  tm = TorchLeNet(k, c, width) if kind == "lenet" else TorchResNet(k, c, width)
  pairs = _pairs_lenet(tm) if kind == "lenet" else _pairs_resnet(tm)
  _load(tm, variables, pairs)
  x1, x2 = _nchw(x[..., :c]), _nchw(x[..., c:])
  # Train mode: batch statistics, running averages updated.
  train_fn = jax.jit(lambda v, xx: module.apply(v, xx, train=True, mutable=["batch_stats"]))
  (logits, eps), upd = train_fn(variables, jnp.asarray(x))
  tm.train()
  t_logits, t_eps = tm(x1, x2)
  np.testing.assert_allclose(np.asarray(logits), t_logits.detach().numpy(), rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(np.asarray(eps), t_eps.detach().numpy(), rtol=1e-4, atol=1e-4)
  variables = {"params": variables["params"], "batch_stats": upd["batch_stats"]}
  _assert_same(tm, variables, pairs, rtol=1e-4, atol=1e-5)
  # Eval mode: the running averages normalise.
  tm.eval()
  e_logits, e_eps = jax.jit(lambda v, xx: module.apply(v, xx, train=False))(
      variables, jnp.asarray(x[::-1]))
  t_logits, t_eps = tm(x1.flip(0), x2.flip(0))
  np.testing.assert_allclose(np.asarray(e_logits), t_logits.detach().numpy(), rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(np.asarray(e_eps), t_eps.detach().numpy(), rtol=1e-4,
                             atol=1e-4)


# ---------------------------------------------------------------------------------------
# Voynov & Babenko: the training step.

D, SIZE = 6, 32


def _generator(seed=0):
  rng = np.random.default_rng(seed)
  w = (rng.normal(size=(D, SIZE * SIZE)) / np.sqrt(D)).astype(np.float32)
  b = (0.1 * rng.normal(size=(SIZE * SIZE,))).astype(np.float32)

  def apply_fn(params, z):
    return jnp.tanh(z @ params["w"] + params["b"]).reshape(z.shape[0], SIZE, SIZE, 1)

  gen = Generator(params={"w": jnp.asarray(w), "b": jnp.asarray(b)}, apply_fn=apply_fn,
                  latent_spec=LatentSpec((D,)), image_shape=(SIZE, SIZE, 1), name="toy")

  def torch_g(z):
    return torch.tanh(z @ _t(w) + _t(b)).view(-1, 1, SIZE, SIZE)

  return gen, torch_g


# Biases of layers followed by BatchNorm: their exact gradient is zero (BatchNorm takes
# the mean out), so both frameworks compute rounding noise and Adam's first steps turn
# it into steps of up to the learning rate in either direction.  The outputs do not see
# them (BatchNorm removes them again) but the next BatchNorm's running mean does, by
# momentum 0.1 times the bias difference.
PRE_BATCHNORM_BIASES = {("conv0", "bias"), ("conv1", "bias"), ("conv2", "bias"),
                        ("fc_logits_0", "bias"), ("fc_shift_0", "bias")}


def test_discovery_steps_match_reference():
  """Two steps of Schön's setting (proj + LeNet, Adam for both) from the same start."""
  k, batch, lr = 4, 8, 1e-3
  cfg = VoynovConfig(num_directions=k, deformator="proj", reconstructor="lenet",
                     reconstructor_width=1, steps=2, batch_size=batch, learning_rate=lr,
                     eval_every=1, eval_batches=1)
  gen, torch_g = _generator()
  state = jax.jit(init_state, static_argnames=("config",))(gen, jax.random.key(3), config=cfg)
  a_vars, r_vars = state.params["deformator"], state.params["reconstructor"]
  deformator = TorchDeformator("proj", k, D)
  deformator.linear.weight.data = _t(a_vars["params"]["A"])
  deformator.linear.bias.data = _t(a_vars["params"]["b"])
  predictor = TorchLeNet(k, 1, 1)
  pairs = _pairs_lenet(predictor)
  _load(predictor, r_vars, pairs)
  deformator.train()
  predictor.train()
  opt_a = torch.optim.Adam(deformator.parameters(), lr=lr)
  opt_r = torch.optim.Adam(predictor.parameters(), lr=lr)
  jax_step = make_train_step(gen, cfg)
  for step in range(2):
    key = jax.random.fold_in(jax.random.key(4), step)
    # The batch train_step draws from this key (see voynov._forward).
    z_key, s_key = jax.random.split(key)
    target, shifts = sample_shifts(s_key, batch, k, cfg.shift_scale, cfg.min_shift)
    z = gen.sample_latents(z_key, batch)
    state, metrics = jax_step(state, key)
    # The reference's Trainer.train body.
    target_t, shifts_t, z_t = (torch.tensor(np.asarray(target), dtype=torch.long),
                               _t(shifts), _t(z))
    basis_shift = torch.zeros(batch, k)
    basis_shift[torch.arange(batch), target_t] = shifts_t
    opt_a.zero_grad()
    opt_r.zero_grad()
    shift = deformator(basis_shift)
    logits, shift_pred = predictor(torch_g(z_t), torch_g(z_t + shift))
    loss = (1.0 * F.cross_entropy(logits, target_t)
            + 0.25 * torch.mean(torch.abs(shift_pred - shifts_t)))
    loss.backward()
    opt_a.step()
    opt_r.step()
    assert float(metrics["loss"]) == pytest.approx(loss.item(), rel=1e-5)
    a = state.params["deformator"]["params"]
    np.testing.assert_allclose(np.asarray(a["A"]), deformator.linear.weight.detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(a["b"]), deformator.linear.bias.detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    r = state.params["reconstructor"]
    strict = [(m, n, kd) for m, n, kd in pairs if kd != "conv" and not n.endswith("_0")]
    _assert_same(predictor, r, strict, rtol=1e-4, atol=1e-6,
                 mean_atol=0.1 * 2 * (step + 1) * lr * 1.01)
    # Layers with a pre-BatchNorm bias: weights strictly, the bias within 2 steps of lr.
    for mod, name, kd in pairs:
      if (name, "bias") not in PRE_BATCHNORM_BIASES:
        continue
      p = _get(r["params"], name)["conv" if kd == "conv" else "dense"]
      kernel = np.asarray(p["kernel"])
      kernel = np.transpose(kernel, (3, 2, 0, 1)) if kd == "conv" else kernel.T
      np.testing.assert_allclose(kernel, mod.weight.detach().numpy(), rtol=1e-4, atol=1e-6,
                                 err_msg=name)
      np.testing.assert_allclose(np.asarray(p["bias"]), mod.bias.detach().numpy(), rtol=0,
                                 atol=2 * (step + 1) * lr * 1.01, err_msg=name)
  # The steps changed the parameters: not a comparison of two unchanged starts.
  assert np.abs(np.asarray(state.params["deformator"]["params"]["A"])
                - np.asarray(a_vars["params"]["A"])).max() > 0.5 * lr


# ---------------------------------------------------------------------------------------
# InterFaceGAN.


def _codes(seed, n=240, d=10):
  """Correlated codes with feature scales from 0.3 to 3, labels from a noisy plane."""
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(d, d)) / np.sqrt(d) + np.eye(d)
  x = (rng.normal(size=(n, d)) @ mix) * np.geomspace(0.3, 3.0, d)
  score = x @ rng.normal(size=d) + 0.5 * rng.normal(size=n)
  return x.astype(np.float32), score


def test_svm_matches_sklearn_svc():
  x, score = _codes(0)
  y = (score > np.median(score)).astype(int)
  ours = fit_linear_svc(x, y)
  ref = svm.SVC(kernel="linear").fit(x, y)  # the reference's classifier, C = 1
  coef = ref.coef_[0]
  cos = coef @ ours.coef / np.linalg.norm(coef) / np.linalg.norm(ours.coef)
  assert ours.converged and cos >= 0.999
  # Tighter libsvm, tighter agreement: ours is the optimum, not an approximation.
  tight = svm.SVC(kernel="linear", tol=1e-7).fit(x, y)
  np.testing.assert_allclose(ours.coef, tight.coef_[0], rtol=1e-3, atol=1e-4)
  assert ours.intercept == pytest.approx(tight.intercept_[0], abs=1e-3)
  # fit_boundary's default is the same SVM on the raw codes, the normal unit-norm.
  b = fit_boundary(x, y, jax.random.key(0), val_fraction=0.0)
  np.testing.assert_allclose(b.normal, coef / np.linalg.norm(coef), atol=2e-3)


def test_train_boundary_selection_and_svc():
  """InterFaceGAN's ``train_boundary``: top / bottom 20 % by score, 70 % to train."""
  x, score = _codes(1, n=400)
  seed = 5
  tx, ty, vx, vy = select_by_score(x, score, np.random.default_rng(seed),
                                   chosen_num_or_ratio=0.2, split_ratio=0.7)
  order = np.argsort(score)[::-1]
  assert len(ty) == 2 * int(80 * 0.7) and len(vy) == 2 * (80 - int(80 * 0.7))
  top, bottom = {tuple(r) for r in x[order[:80]]}, {tuple(r) for r in x[order[-80:]]}
  assert all(tuple(r) in top for r in tx[ty == 1]) and all(tuple(r) in bottom
                                                          for r in tx[ty == 0])
  assert all(tuple(r) in top for r in vx[vy == 1])
  b = train_boundary(x, score, seed, chosen_num_or_ratio=0.2, split_ratio=0.7)
  coef = svm.SVC(kernel="linear").fit(tx, ty).coef_[0]
  assert abs(float(b.normal @ coef) / np.linalg.norm(coef)) >= 0.999
  assert float(b.normal @ coef) > 0  # oriented low -> high score


# ---------------------------------------------------------------------------------------
# SeFa.


def test_sefa_matches_reference_closed_form():
  """``factorize_weight``: columns normalised, eigenvectors of W W^T (rows)."""
  rng = np.random.default_rng(2)
  kernels = [rng.normal(size=(8, f)) * rng.uniform(0.2, 2.0, size=f) for f in (5, 7, 4)]
  ours, evals = sefa(kernels)
  weight = np.concatenate(kernels, axis=1).astype(np.float32)  # [w_dim, sum F]
  weight = weight / np.linalg.norm(weight, axis=0, keepdims=True)
  ref_vals, ref_vecs = np.linalg.eig(weight.dot(weight.T))
  order = np.argsort(-ref_vals.real)
  np.testing.assert_allclose(np.asarray(evals), ref_vals.real[order], rtol=1e-4)
  cos = np.abs(np.sum(np.asarray(ours) * ref_vecs.T.real[order], axis=1))
  np.testing.assert_allclose(cos, 1.0, atol=1e-4)


def test_sefa_wplus_edit_is_the_reference_per_layer_addition():
  num_ws, w_dim, layers = 5, 8, [0, 2, 3]
  rng = np.random.default_rng(3)
  kernels = [rng.normal(size=(w_dim, 6)) for _ in range(num_ws - 1)]
  params = {"synthesis": {f"b{4 * 2**i}": {"conv0": {"affine": {"kernel": k}}}
                          for i, k in enumerate(kernels)}}

  def apply_fn(p, w):
    return jnp.zeros((w.shape[0], 4, 4, 1))

  gen = Generator(params=params, apply_fn=apply_fn, latent_spec=LatentSpec((num_ws, w_dim),
                                                                           space="w+"),
                  image_shape=(4, 4, 1), name="toy")
  dirs = sefa_directions(gen, num_components=3, layers=layers)
  boundary, _ = sefa([kernels[i] for i in layers], 3)
  codes = rng.normal(size=(2, num_ws, w_dim)).astype(np.float32)
  distance = 2.5
  ref = codes.copy()
  ref[:, layers, :] += np.asarray(boundary)[1:2] * distance  # sefa.py's edit
  np.testing.assert_allclose(np.asarray(sefa_edit(codes, boundary[1], distance, layers)),
                             ref, rtol=1e-6, atol=1e-6)
  # The stored unit direction reaches the same code at distance * distance_scale.
  scale = dirs.meta["distance_scale"]
  assert scale == pytest.approx(np.sqrt(len(layers)))
  np.testing.assert_allclose(codes + dirs.vectors[1] * distance * scale, ref, atol=1e-5)


# ---------------------------------------------------------------------------------------
# GANSpace.


def test_ganspace_feature_mode_matches_reference_regression():
  """``decomposition.py``: PCA of the activations (sklearn, as its 'pca' estimator),
  then ``lstsq(coords / stdev, Z)`` on raw codes, rows normalised."""
  from sklearn.decomposition import PCA  # pylint: disable=g-import-not-at-top
  from jaxlatent.directions.ganspace import ganspace  # pylint: disable=g-import-not-at-top
  gen, _ = _generator()
  rng = np.random.default_rng(6)
  w1 = rng.normal(size=(D, 40)).astype(np.float32) * np.geomspace(0.3, 3, 40)
  z = rng.normal(size=(3000, D)).astype(np.float32)

  def features(latents):
    return jnp.tanh(jnp.asarray(latents) @ w1)

  c = 4
  ours = ganspace(gen, jax.random.key(0), c, latents=jnp.asarray(z), features_fn=features)
  acts = np.asarray(features(z), np.float64)
  pca_ref = PCA(n_components=c, svd_solver="full").fit(acts)
  coords = (acts - pca_ref.mean_) @ pca_ref.components_.T / np.sqrt(
      pca_ref.explained_variance_)
  m_t = np.linalg.lstsq(coords, z, rcond=None)[0]  # [C, D]
  ref = m_t / np.linalg.norm(m_t, axis=-1, keepdims=True)
  cos = np.abs(np.sum(ours.vectors * ref, axis=1))
  np.testing.assert_allclose(cos, 1.0, atol=1e-3)
  np.testing.assert_allclose(ours.scores["explained_variance_ratio"],
                             pca_ref.explained_variance_ratio_, rtol=1e-3)
