"""Config files load, and every bad config fails early with a ConfigError naming the key."""

from __future__ import annotations

import glob
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxlatent.config_cli import config_from_file, parse_config_flags  # noqa: E402
from jaxlatent.errors import ConfigError, DataError  # noqa: E402
from jaxlatent.training import complete_train_config  # noqa: E402
from jaxlatent.training.validate import REQUIRED_KEYS, validate_config  # noqa: E402

CONFIGS = ("dcgan_ct", "dcgan_tiny", "vae_ct", "vae_tiny", "stylegan_brain", "stylegan_tiny",
           "validate_dcgan_ct", "validate_vae_ct", "validate_stylegan_brain")


def parse(name, *overrides):
  argv = ["train.py", f"--config={ROOT}/configs/{name}.py", "--workdir=/tmp/unused", *overrides]
  config, flag_values = parse_config_flags(argv, [("workdir", None, "output")],
                                           complete=complete_train_config)
  return config, flag_values


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_are_valid_and_documented(name):
  config, flag_values = parse(name)
  validate_config(config, device_count=1)
  assert flag_values["workdir"].value == "/tmp/unused"
  assert set(REQUIRED_KEYS) <= set(config.keys())
  module_doc = open(os.path.join(ROOT, "configs", f"{name}.py")).read()
  assert f"python train.py --config=configs/{name}.py" in module_doc  # the exact command
  size = config.image_size
  assert size & (size - 1) == 0


def test_paper_settings():
  dcgan, _ = parse("dcgan_ct")
  assert (dcgan.image_size, dcgan.model.latent_dim, dcgan.batch_size) == (128, 32, 128)
  assert (dcgan.optim.lr, dcgan.optim.b1) == (2e-4, 0.5)
  assert dcgan.data.modality == "ct" and tuple(dcgan.data.ct_window) == (-1000.0, 2000.0)
  assert dcgan.steps == 50 * ((dcgan.data.num_images - dcgan.fid_num_samples) // 128)
  style, _ = parse("stylegan_brain")
  assert style.image_size == 256 and style.data.modality == "mr"
  assert (style.optim.b1, style.optim.b2, style.model.r1_interval, style.model.pl_interval) \
      == (0.0, 0.99, 16, 4)
  tiny, _ = parse("stylegan_tiny")
  assert tiny.model.num_mapping_layers == 2 and tiny.image_size == 32


def test_override_changes_the_value_and_keeps_types():
  config, _ = parse("dcgan_tiny", "--config.steps=7", "--config.data.source=phantom_brain",
                    "--config.optim.lr=0.001")
  assert (config.steps, config.data.source, config.optim.lr) == (7, "phantom_brain", 0.001)


@pytest.mark.parametrize("overrides, match", [
    (["--config.foo=1"], r"unknown config key 'foo'"),
    (["--config.model.nme=x"], r"'model.nme'.*did you mean 'model.name'"),
    (["--config.steps=many"], r"--config.steps=many"),
    (["--bogus=1"], r"unknown flag.*bogus"),
])
def test_command_line_errors_name_the_flag(overrides, match):
  with pytest.raises(ConfigError, match=match) as info:
    parse("dcgan_tiny", *overrides)
  assert "\n" not in str(info.value)


def test_missing_or_broken_config_file(tmp_path):
  with pytest.raises(ConfigError, match="does not exist"):
    parse_config_flags(["t", f"--config={tmp_path}/nope.py"])
  with pytest.raises(ConfigError, match="no config given"):
    parse_config_flags(["t"])
  broken = tmp_path / "broken.py"
  broken.write_text("def get_config():\n  raise RuntimeError('boom')\n")
  with pytest.raises(ConfigError, match=r"broken.py.*failed to load.*RuntimeError: boom"):
    parse_config_flags(["t", f"--config={broken}"])


def test_config_from_file_any_cwd_and_errors(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # configs doing `from configs import ...` load from anywhere
  tiny = config_from_file(os.path.join(ROOT, "configs", "analyze_ct_tiny.py"))
  assert tiny.voynov.num_directions == 8 and tiny.inversion.steps == 150
  tiny.voynov.steps = 1  # unlocked: callers adjust it
  with pytest.raises(ConfigError, match="nope.py' does not exist"):
    config_from_file(tmp_path / "nope.py")
  none = tmp_path / "none.py"
  none.write_text("def get_config():\n  return None\n")
  with pytest.raises(ConfigError, match="returned None"):
    config_from_file(none)


@pytest.mark.parametrize("overrides, error, match", [
    (["--config.image_size=48"], ConfigError, r"image_size=48 must be a power of 2"),
    (["--config.image_size=8"], ConfigError, r"image_size=8 must be >= 16"),
    (["--config.steps=0"], ConfigError, r"steps=0 must be >= 1"),
    (["--config.batch_size=0"], ConfigError, r"batch_size=0"),
    (["--config.keep_checkpoints=0"], ConfigError, r"keep_checkpoints=0"),
    (["--config.fid_num_samples=1"], ConfigError, r"fid_num_samples=1 must be >= 2"),
    (["--config.distributed=maybe"], ConfigError, r"distributed='maybe'"),
    (["--config.model.name=gan"], ConfigError, r"model.name='gan'"),
    (["--config.optim.lr=-1.0"], ConfigError, r"optim.lr=-1.0"),
    (["--config.data.source=nifti"], ConfigError, r"data.path is empty"),
    (["--config.data.source=nifti", "--config.data.path=/no/such/dir"], DataError,
     r"data.path='/no/such/dir' does not exist"),
    (["--config.data.source=nifti", "--config.data.path=/no/such/*.nii.gz"], DataError,
     r"matches no file"),
])
def test_bad_values_are_refused_before_compute(overrides, error, match):
  config, _ = parse("dcgan_tiny", *overrides)
  with pytest.raises(error, match=match):
    validate_config(config, device_count=1)


def test_batch_must_divide_over_devices_and_processes():
  config, _ = parse("dcgan_tiny", "--config.batch_size=6")
  with pytest.raises(ConfigError, match="batch_size=6 is not divisible by the 4 devices"):
    validate_config(config, device_count=4)
  with pytest.raises(ConfigError, match="batch_size=6 is not divisible by the 4 processes"):
    validate_config(config, process_count=4)


def test_missing_field_is_named():
  config, _ = parse("dcgan_tiny")
  with config.unlocked():
    del config["ckpt_every"]
  with pytest.raises(ConfigError, match="ckpt_every"):
    validate_config(config)


def test_config_files_import_only_ml_collections_and_each_other():
  import ast  # pylint: disable=g-import-not-at-top
  for path in glob.glob(os.path.join(ROOT, "configs", "*.py")):
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, ast.ImportFrom):
        assert node.module.split(".")[0] in ("__future__", "configs", "ml_collections"), path
      elif isinstance(node, ast.Import):
        assert all(a.name.split(".")[0] == "ml_collections" for a in node.names), path


def test_completion_runs_before_the_overrides(tmp_path):
  partial = tmp_path / "partial.py"
  partial.write_text("import ml_collections\n\ndef get_config():\n"
                     "  return ml_collections.ConfigDict({'model': {'name': 'vae'}, 'steps': 3})\n")
  argv = ["t", f"--config={partial}", "--config.keep_checkpoints=5", "--config.optim.b2=0.9"]
  config, _ = parse_config_flags(argv, complete=complete_train_config)
  # A field the file leaves out takes the library default and stays overridable.
  assert (config.steps, config.keep_checkpoints, config.optim.b2) == (3, 5, 0.9)
  assert config.data.source == "phantom_thorax" and config.model.latent_dim > 0
  validate_config(config, device_count=1)
  with pytest.raises(ConfigError, match="did you mean 'keep_checkpoints'"):
    parse_config_flags(["t", f"--config={partial}", "--config.keep_checkpoint=5"],
                       complete=complete_train_config)
  with pytest.raises(ConfigError, match="model.name=None"):
    parse_config_flags(["t", f"--config={broken_model(tmp_path)}"],
                       complete=complete_train_config)


def broken_model(tmp_path):
  path = tmp_path / "no_model.py"
  path.write_text("import ml_collections\n\ndef get_config():\n"
                  "  return ml_collections.ConfigDict({'steps': 3})\n")
  return path
