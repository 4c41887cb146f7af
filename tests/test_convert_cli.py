"""``python -m jaxlatent.convert stylegan2-ada``: the workdir analyze reads, and user errors.

Snapshots are written in the official format from our PyTorch port of the official
networks (tests/reference); the end-to-end numerical match with the port is
tests/reference/test_stylegan2_ada_convert.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

pytest.importorskip("torch")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))

from cli_runs import run_convert_cli as _main  # pylint: disable=g-import-not-at-top,wrong-import-position
from test_convert_pickle import _snapshot  # pylint: disable=g-import-not-at-top,wrong-import-position
from test_stylegan2_ada_convert import write_snapshot  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxlatent.convert import stylegan2_ada as convert_sg  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxlatent.studies.generators import generator_in_space as build_generator  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxlatent.training.checkpoint import load_trained  # pylint: disable=g-import-not-at-top,wrong-import-position

RES8 = {"img_resolution": 8}
# A tiny official generator (the port's arguments, as its init_kwargs).
G8 = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=1,
          mapping_kwargs=dict(num_layers=2),
          synthesis_kwargs=dict(channel_base=64, channel_max=8, conv_clamp=256))


def test_converts_a_snapshot_into_a_workdir_analyze_reads(tmp_path, capsys):
  pkl = tmp_path / "network-snapshot-000120.pkl"
  g_ema = write_snapshot(pkl, G8, seed=0)
  out = tmp_path / "run"
  code, stdout, _ = _main(["stylegan2-ada", str(pkl), f"--workdir={out}"], capsys)
  assert code == 0 and f"wrote {out}" in stdout
  config, trainer, state = load_trained(str(out))
  assert config.model.name == "stylegan2" and config.image_size == 8
  assert config.model.latent_dim == 8 and config.model.num_mapping_layers == 2
  assert config.model.conv_clamp == 256 and config.model.mbstd_group_size == 4
  np.testing.assert_array_equal(
      np.asarray(state.model_state["buffers"]["mapping"]["w_avg"]),
      g_ema.mapping.w_avg.numpy())
  prov = json.loads((out / "converted_from.json").read_text())
  assert prov["network"] == "G_ema" and prov["snapshot_kimg"] == 120
  assert prov["networks_converted"] == ["D", "G", "G_ema"] and prov["notes"] == []
  assert len(prov["sha256"]) == 64 and prov["init_kwargs"]["G_ema"]["img_resolution"] == 8
  # analyze.py's Generator and the in-process loader render the same images.
  gen = build_generator(config, trainer, state, "z")
  direct = convert_sg.load_stylegan2_ada(pkl)
  z = jax.random.normal(jax.random.PRNGKey(2), (2, 8))
  images = np.asarray(jax.jit(gen.apply_fn)(gen.params, z))
  assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()
  np.testing.assert_allclose(images, np.asarray(jax.jit(direct.apply_fn)(direct.params, z)),
                             atol=1e-6)
  # W / W+ spaces of the analysis: the official num_ws.
  assert build_generator(config, trainer, state, "w+").latent_spec.shape == (g_ema.num_ws, 8)


@pytest.mark.parametrize("overrides,message", [
    ({"c_dim": 3}, r"network G_ema is conditional \(c_dim=3\); only unconditional"),
    ({"img_resolution": 12}, "img_resolution=12, not a power of 2"),
])
def test_refused_networks_exit_2_with_one_line(tmp_path, capsys, overrides, message):
  pkl = tmp_path / "snap.pkl"
  _snapshot(pkl, g_overrides={**RES8, **overrides})
  out = tmp_path / "run"
  code, _, err = _main(["stylegan2-ada", str(pkl), "--workdir", str(out)], capsys)
  assert code == 2
  assert err.count("\n") == 1 and err.startswith(f"error: {pkl}: ")
  assert __import__("re").search(message, err), err
  assert not out.exists() and sorted(os.listdir(tmp_path)) == ["snap.pkl"]


def test_missing_tensor_bad_shape_and_truncated_file(tmp_path, capsys):
  import torch  # pylint: disable=g-import-not-at-top
  from persistent_pickle import dump_network_pickle, official_modules  # pylint: disable=g-import-not-at-top
  import sg2ada_torch as ref  # pylint: disable=g-import-not-at-top
  # G_ema without w_avg, G with a w_avg of another size.
  g_ema, g = ref.Generator(**G8), ref.Generator(**G8)
  del g_ema.mapping._buffers["w_avg"]
  g.mapping.w_avg = torch.zeros(5)
  pkl = tmp_path / "broken.pkl"
  with official_modules() as easydict:
    kw = {k: easydict(v) if isinstance(v, dict) else v for k, v in G8.items()}
    dump_network_pickle(pkl, {"G_ema": g_ema, "G": g}, {g_ema: kw, g: kw})
  code, _, err = _main(["stylegan2-ada", str(pkl), f"--workdir={tmp_path / 'b'}"], capsys)
  assert code == 2 and err == (f"error: {pkl}: network G_ema: generator: 1 tensor(s) missing "
                               "from the checkpoint: mapping.w_avg\n")
  code, _, err = _main(["stylegan2-ada", str(pkl), f"--workdir={tmp_path / 'c'}",
                        "--network=G"], capsys)
  assert code == 2 and err.startswith(f"error: {pkl}: network G: generator tensor "
                                      "'mapping.w_avg': shape [5] in the checkpoint, [8] expected")
  # A snapshot cut short (an interrupted copy).
  good = tmp_path / "snap.pkl"
  write_snapshot(good, G8, seed=1)
  cut = tmp_path / "cut.pkl"
  cut.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
  code, _, err = _main(["stylegan2-ada", str(cut), f"--workdir={tmp_path / 'd'}"], capsys)
  assert code == 2 and err.startswith(f"error: {cut}: ") and err.count("\n") == 1, err
  assert sorted(os.listdir(tmp_path)) == ["broken.pkl", "cut.pkl", "snap.pkl"]


def test_user_errors(tmp_path, capsys):
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


def test_wrong_class_and_resolution_mismatch(tmp_path, capsys):
  from persistent_pickle import dump_network_pickle, official_modules  # pylint: disable=g-import-not-at-top
  from test_convert_pickle import tiny_discriminator  # pylint: disable=g-import-not-at-top
  pkl = tmp_path / "d_as_g.pkl"
  d = tiny_discriminator()
  with official_modules():
    dump_network_pickle(pkl, {"G_ema": d}, {d: dict(c_dim=0, img_resolution=8, img_channels=1)})
  code, _, err = _main(["stylegan2-ada", str(pkl), f"--workdir={tmp_path / 'a'}"], capsys)
  assert code == 2
  assert err == f"error: {pkl}: network G_ema is a Discriminator, not a stylegan2-ada Generator\n"

  # G at 8 px, D at 4 px (the snapshot helper's D).
  snap = tmp_path / "snap.pkl"
  _snapshot(snap, g_overrides=RES8)
  code, _, err = _main(["stylegan2-ada", str(snap), f"--workdir={tmp_path / 'b'}"], capsys)
  assert code == 2 and err == f"error: {snap}: D has img_resolution=4 but G_ema has 8\n"
  assert sorted(os.listdir(tmp_path)) == ["d_as_g.pkl", "snap.pkl"]
