"""``python -m jaxlatent.convert stylegan2-ada``: the workdir analyze reads, and user errors.

The JAX architecture (``jaxlatent.models.stylegan2_ada``) is replaced here by a
stand-in with its documented interface that maps the snapshot onto the existing
StyleGAN2 model (``mapping.w_avg`` carried over), so these tests check the reading,
validation, workdir writing and error reporting of the converter itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

pytest.importorskip("torch")

from test_convert_pickle import _snapshot  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxlatent.convert import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxlatent.convert import stylegan2_ada as convert_sg  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxlatent.errors import CheckpointError  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxlatent.models import stylegan2  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxlatent.studies.generators import generator_in_space as build_generator  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxlatent.training.checkpoint import load_trained  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES8 = {"img_resolution": 8}  # the existing StyleGAN2 model starts at 8 px


def _standin_arch() -> types.ModuleType:
  """The interface of jaxlatent.models.stylegan2_ada over the existing StyleGAN2 model."""
  mod = types.ModuleType(convert_sg.ARCH_MODULE)

  def generator_config_from_kwargs(kw):
    return dict(latent_dim=kw["z_dim"], w_dim=kw["w_dim"], output_tanh=False,
                num_mapping_layers=kw["mapping_kwargs"]["num_layers"],
                channel_base=kw["synthesis_kwargs"]["channel_base"],
                channel_max=kw["synthesis_kwargs"]["channel_max"],
                img_resolution=kw["img_resolution"])

  def generator_variables_from_state_dict(sd, fields):
    if "mapping.w_avg" not in sd:
      raise CheckpointError("missing tensor mapping.w_avg")
    if sd["mapping.w_avg"].shape != (fields["w_dim"],):
      raise CheckpointError(f"mapping.w_avg: shape {sd['mapping.w_avg'].shape} in the file, "
                            f"({fields['w_dim']},) in the model")
    config = convert_sg.train_config_for(fields, fields["img_resolution"])
    v = jax.jit(lambda k: stylegan2.init_generator(config, k))(jax.random.PRNGKey(0))
    v["stats"] = {"mapping": {"w_avg": sd["mapping.w_avg"]}}
    return v

  mod.generator_config_from_kwargs = generator_config_from_kwargs
  mod.generator_variables_from_state_dict = generator_variables_from_state_dict
  mod.make_generator = lambda v, fields, space: stylegan2.make_generator(
      v, convert_sg.train_config_for(fields, fields["img_resolution"]), space)
  return mod


@pytest.fixture
def arch(monkeypatch):
  monkeypatch.setitem(sys.modules, convert_sg.ARCH_MODULE, _standin_arch())


def _main(argv, capsys):
  """cli.main in-process -> (exit status, stdout, stderr)."""
  try:
    code = cli.main(argv)
  except SystemExit as e:
    code = e.code
  out = capsys.readouterr()
  return code, out.out, out.err


def test_converts_a_snapshot_into_a_workdir_analyze_reads(tmp_path, arch, capsys):
  pkl = tmp_path / "network-snapshot-000120.pkl"
  nets = _snapshot(pkl, g_overrides=RES8)
  out = tmp_path / "run"
  code, stdout, _ = _main(["stylegan2-ada", str(pkl), f"--workdir={out}"], capsys)
  assert code == 0 and f"wrote {out}" in stdout
  config, trainer, state = load_trained(str(out))
  assert config.model.name == "stylegan2" and config.image_size == 8
  assert config.model.latent_dim == 8 and config.model.num_mapping_layers == 2
  np.testing.assert_array_equal(np.asarray(state.model_state["stats"]["mapping"]["w_avg"]),
                                nets["G_ema"].mapping.w_avg.numpy())
  prov = json.loads((out / "converted_from.json").read_text())
  assert prov["network"] == "G_ema" and prov["snapshot_kimg"] == 120
  assert len(prov["sha256"]) == 64 and prov["init_kwargs"]["G_ema"]["img_resolution"] == 8
  assert prov["notes"] == ["D not converted: the architecture module has no discriminator "
                           "conversion"]
  # analyze.py's Generator and the in-process loader render the same images.
  gen = build_generator(config, trainer, state, "z")
  direct = convert_sg.load_stylegan2_ada(pkl)
  z = jax.random.normal(jax.random.PRNGKey(2), (2, 8))
  images = np.asarray(jax.jit(gen.apply_fn)(gen.params, z))
  assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()
  np.testing.assert_allclose(images, np.asarray(jax.jit(direct.apply_fn)(direct.params, z)),
                             atol=1e-6)


@pytest.mark.parametrize("overrides,message", [
    ({"c_dim": 3}, r"network G_ema is conditional \(c_dim=3\)"),
    ({"img_channels": 3}, "network G_ema makes 3-channel images"),
    ({"img_resolution": 12}, "img_resolution=12, not a power of 2"),
])
def test_refused_networks_exit_2_with_one_line(tmp_path, arch, capsys, overrides, message):
  pkl = tmp_path / "snap.pkl"
  _snapshot(pkl, g_overrides={**RES8, **overrides})
  out = tmp_path / "run"
  code, _, err = _main(["stylegan2-ada", str(pkl), "--workdir", str(out)], capsys)
  assert code == 2
  assert err.count("\n") == 1 and err.startswith(f"error: {pkl}: ")
  assert __import__("re").search(message, err), err
  assert not out.exists() and sorted(os.listdir(tmp_path)) == ["snap.pkl"]


def test_missing_tensor_and_bad_shape(tmp_path, arch, capsys):
  # G_ema without w_avg, G with a w_avg of another size.
  import torch  # pylint: disable=g-import-not-at-top
  from test_convert_pickle import tiny_generator  # pylint: disable=g-import-not-at-top
  g_ema, g = tiny_generator(0), tiny_generator(1)
  del g_ema.mapping._buffers["w_avg"]
  g.mapping.w_avg = torch.zeros(5)
  pkl2 = tmp_path / "broken.pkl"
  sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
  from persistent_pickle import dump_network_pickle, official_modules  # pylint: disable=g-import-not-at-top
  with official_modules() as easydict:
    kw = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=1,
              mapping_kwargs=easydict(num_layers=2),
              synthesis_kwargs=easydict(channel_base=64, channel_max=16))
    dump_network_pickle(pkl2, {"G_ema": g_ema, "G": g}, {g_ema: kw, g: kw})
  code, _, err = _main(["stylegan2-ada", str(pkl2), f"--workdir={tmp_path / 'b'}"], capsys)
  assert code == 2 and err == f"error: {pkl2}: network G_ema: missing tensor mapping.w_avg\n"
  code, _, err = _main(["stylegan2-ada", str(pkl2), f"--workdir={tmp_path / 'c'}",
                        "--network=G"], capsys)
  assert code == 2 and err.startswith(f"error: {pkl2}: network G: mapping.w_avg: shape (5,)")
  assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_user_errors(tmp_path, arch, capsys):
  pkl = tmp_path / "snap.pkl"
  _snapshot(pkl, g_overrides=RES8)
  busy = tmp_path / "busy"
  busy.mkdir()
  (busy / "x").write_text("")
  cases = [
      (["stylegan2-ada", str(pkl), f"--workdir={busy}"], "exists and is not empty"),
      (["stylegan2-ada", str(tmp_path / "none.pkl"), "--workdir=o"], "none.pkl: no such file"),
      (["stylegan2-ada", str(pkl)], "the following arguments are required: --workdir"),
      (["stylegan2-ada", str(pkl), "--workdir=o", "--network=D"], "invalid choice: 'D'"),
      (["schon-xyz", str(pkl), "--workdir=o"], "invalid choice: 'schon-xyz'"),
      ([], "no format given"),
  ]
  for argv, message in cases:
    code, _, err = _main(argv, capsys)
    assert code == 2 and err.startswith("error: ") and message in err, (argv, err)
    assert err.count("\n") == 1


def test_architecture_module_absent(tmp_path, monkeypatch, capsys):
  pkl = tmp_path / "snap.pkl"
  _snapshot(pkl, g_overrides=RES8)
  monkeypatch.setitem(sys.modules, convert_sg.ARCH_MODULE, None)  # import fails
  code, _, err = _main(["stylegan2-ada", str(pkl), f"--workdir={tmp_path / 'o'}"], capsys)
  assert code == 2 and "jaxlatent.models.stylegan2_ada is not part of this installation" in err


def test_module_entry_refuses_a_malicious_pickle(tmp_path):
  marker = tmp_path / "pwned"
  pkl = tmp_path / "evil.pkl"
  pkl.write_bytes(b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR.")
  proc = subprocess.run([sys.executable, "-m", "jaxlatent.convert", "stylegan2-ada", str(pkl),
                         f"--workdir={tmp_path / 'o'}"], capture_output=True, text=True,
                        cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr == f"error: {pkl}: refusing to load class os.system: it is not a tensor, " \
      "a plain container or a persistent network\n"
  assert not marker.exists() and not (tmp_path / "o").exists()


def test_wrong_class_and_resolution_mismatch(tmp_path, arch, monkeypatch, capsys):
  from persistent_pickle import dump_network_pickle, official_modules  # pylint: disable=g-import-not-at-top
  from test_convert_pickle import tiny_discriminator  # pylint: disable=g-import-not-at-top
  pkl = tmp_path / "d_as_g.pkl"
  d = tiny_discriminator()
  with official_modules():
    dump_network_pickle(pkl, {"G_ema": d}, {d: dict(c_dim=0, img_resolution=8, img_channels=1)})
  code, _, err = _main(["stylegan2-ada", str(pkl), f"--workdir={tmp_path / 'a'}"], capsys)
  assert code == 2
  assert err == f"error: {pkl}: network G_ema is a Discriminator, not a stylegan2-ada Generator\n"

  # G at 8 px, D at 4 px (the snapshot helper's D), with a D conversion available.
  monkeypatch.setattr(sys.modules[convert_sg.ARCH_MODULE], "discriminator_config_from_kwargs",
                      dict, raising=False)
  snap = tmp_path / "snap.pkl"
  _snapshot(snap, g_overrides=RES8)
  code, _, err = _main(["stylegan2-ada", str(snap), f"--workdir={tmp_path / 'b'}"], capsys)
  assert code == 2 and err == f"error: {snap}: D has img_resolution=4 but G_ema has 8\n"
  assert sorted(os.listdir(tmp_path)) == ["d_as_g.pkl", "snap.pkl"]
