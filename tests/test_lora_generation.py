"""Tests for training the LLM side of report generation (issue 15, item 1): LoRA adapters on
Gemma 3's attention and MLP projections trained with the projector, saved and reloaded with it,
used in predict mode; training data from every report-bearing record of a mixture of builds;
the validation fold as the evaluation split.

Everything runs on the tiny random Gemma 3 (byte tokenizer) and the toy TFDS builds of
tests/toy_ecg_builder.py; never the 270M model.
"""

import csv
import importlib.util
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from merit_jax import config_validation
from merit_jax import generate
from merit_jax import parallel
from merit_jax.models.llm import conditioning
from merit_jax.report_gen import data as data_lib
from merit_jax.report_gen import decoding
from merit_jax.report_gen import projector as projector_lib
from merit_jax.report_gen import training
from tests import toy_ecg_builder as toy

REPO = pathlib.Path(__file__).resolve().parents[1]
ALL_PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate", "up", "down"}


def _generate_config(variant="test"):
  """configs/generate.py by its path, as `--config=` loads it."""
  spec = importlib.util.spec_from_file_location("generate_config_lora",
                                                REPO / "configs" / "generate.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def _separable_data(n=32, width=data_lib.NO_ECG_DIM):
  """Reports that depend on the feature sign, so conditioning and adapters can fit them."""
  rng = np.random.default_rng(0)
  sign = rng.integers(0, 2, n)
  feats = np.where(sign[:, None] == 1, 1.0, -1.0) + 0.1 * rng.standard_normal((n, width))
  return {"features": feats.astype(np.float32),
          "reports": ["sinus rhythm" if s else "atrial fib" for s in sign]}


def _toy_sources(tmp_path_factory):
  """Two toy builds as one mixture: '100hz' (24 training reports) and '250hz' (every 4th
  report empty: 18 of 24), plus an ECG-only build that must never be read."""
  root = tmp_path_factory.mktemp("toy_mixture")
  for name, config in (("a", "100hz"), ("b", "250hz"), ("c", "noreports")):
    toy.build(root / name, config)
  entry = lambda d, c, reports=True: dict(name="toy_ecg", config=c, data_dir=str(root / d),
                                          weight=1.0, reports=reports)
  return (entry("a", "100hz"), entry("b", "250hz"), entry("c", "noreports", reports=False))


@pytest.fixture(scope="module")
def toy_sources(tmp_path_factory):
  return _toy_sources(tmp_path_factory)


def _toy_data_config(sources):
  cfg = _generate_config()
  cfg.data.name, cfg.data.config, cfg.data.data_dir = "toy_ecg", "100hz", sources[0]["data_dir"]
  cfg.data.sources = tuple(sources)
  return cfg


def _expected_reports(split, pairs):
  """{ecg_id: report} of every non-empty report of `split` in the toy configs `pairs`."""
  out = {}
  for id_offset, empty_every in pairs:
    for i in range(toy.SPLIT_SIZES[split]):
      ecg_id = toy.toy_ecg_id(split, i, id_offset)
      report = toy.toy_report(ecg_id, empty_every)
      if report:
        out[ecg_id] = report
  return out


# ------------------------------------------------------------------------ (a) exact start

@pytest.mark.parametrize("targets", [("attn", "mlp"), ("mlp",)])
def test_zero_init_adapters_reproduce_frozen_logits_exactly(targets):
  model, params, _ = projector_lib.load_llm("tiny")
  lora = conditioning.init_lora(params, 4, jax.random.PRNGKey(1), targets)
  wanted = set(conditioning.lora_projections(targets))
  assert set(lora) == {f"layer_{i}" for i in range(model.config.num_layers)}
  assert all(set(block) == wanted for block in lora.values())
  for block in lora.values():
    for factors in block.values():
      assert not np.any(np.asarray(factors["b"])) and np.any(np.asarray(factors["a"]))
  tokens = jnp.array([[2, 10, 11, 12, 13, 14], [2, 20, 21, 22, 0, 0]])
  mask = tokens != 0
  prefix = jax.random.normal(jax.random.PRNGKey(2), (2, 3, model.config.d_model))

  def logits(p):
    return model.apply(p, tokens, input_mask=mask, prefix_embeddings=prefix)[0]

  frozen = np.asarray(logits(params))
  np.testing.assert_array_equal(np.asarray(logits(conditioning.apply_lora(params, lora, 16.0))),
                                frozen)
  # Jitted, as the train step and the decoder run it: still bit-identical.
  adapted = jax.jit(lambda p, l: logits(conditioning.apply_lora(p, l, 16.0)))
  np.testing.assert_array_equal(np.asarray(adapted(params, lora)),
                                np.asarray(jax.jit(logits)(params)))


def test_lora_targets_name_groups_or_projections():
  assert conditioning.lora_projections(("attn", "mlp")) == (
      "q_proj", "k_proj", "v_proj", "o_proj", "gate", "up", "down")
  assert conditioning.lora_projections(("mlp", "down")) == ("gate", "up", "down")
  with pytest.raises(ValueError, match="LoRA target 'ffn'"):
    conditioning.lora_projections(("ffn",))
  cfg = _generate_config()
  assert tuple(cfg.lora_targets) == ("attn", "mlp")
  cfg.lora_targets = ("attn", "ffn")
  with pytest.raises(config_validation.ConfigError,
                     match=r"config.lora_targets=\('attn', 'ffn'\) must be a non-empty tuple"):
    config_validation.validate_generate_config(cfg)


# ------------------------------------------------------- training: only adapters + projector

def test_gradients_reach_attention_and_mlp_adapters_only():
  cfg = _generate_config()
  cfg.lora_rank, cfg.lora_targets = 4, ("attn", "mlp")
  cfg.total_steps, cfg.log_every, cfg.num_prefix_tokens = 30, 10, 4
  cfg.optim.lr, cfg.optim.warmup_steps = 1e-2, 2
  gen = projector_lib.build_generator(cfg)
  data = _separable_data()
  trainable = projector_lib.init_trainable(gen, (data_lib.NO_ECG_DIM,), 4, 0, cfg.lora_targets)
  tokens, input_mask, loss_mask = data_lib.training_sequences(
      gen.tokenizer, gen.prompt, data["reports"][:8], int(cfg.max_report_tokens))
  # Jitted: op by op, the backward pass of the whole LLM dispatched ~30 s of tiny ops.
  grads, _ = jax.jit(jax.grad(gen.loss, has_aux=True))(
      trainable, gen.llm_params, data["features"][:8], tokens, input_mask, loss_mask)
  # B = 0 at init: the gradient reaches every B (A's is zero until B moves).
  for layer, block in grads["lora"].items():
    assert set(block) == ALL_PROJECTIONS, layer
    for name, g in block.items():
      assert float(jnp.abs(g["b"]).max()) > 0, (layer, name)
  before = jax.tree_util.tree_map(np.array, gen.llm_params)
  trained, history = training.train_projector(
      cfg, gen, data, parallel.make_mesh(cfg.mesh, jax.devices()[:2]), progress=False)
  assert set(trained) == {"projector", "lora"}
  assert history[-1]["loss"] < 0.6 * history[0]["loss"], history
  for name in ("q_proj", "gate", "down"):
    assert float(np.abs(trained["lora"]["layer_1"][name]["b"]).max()) > 0, name
  # The LLM's own params never change: only the trainable tree is updated.
  jax.tree_util.tree_map(np.testing.assert_array_equal, before, gen.llm_params)


# --------------------------------------------------------------- (b) save, reload, predict

def test_saved_projector_and_adapters_generate_the_same_text(tmp_path):
  cfg = _generate_config()
  cfg.lora_rank, cfg.lora_targets = 4, ("attn", "mlp")
  cfg.total_steps, cfg.log_every, cfg.num_prefix_tokens = 12, 6, 4
  cfg.optim.lr, cfg.optim.warmup_steps = 1e-2, 2
  gen = projector_lib.build_generator(cfg)
  data = _separable_data()
  trainable, _ = training.train_projector(
      cfg, gen, data, parallel.make_mesh(cfg.mesh, jax.devices()[:1]), progress=False)
  assert float(np.abs(trainable["lora"]["layer_0"]["up"]["b"]).max()) > 0  # Non-zero adapters.
  source = data_lib.FeatureSource("none", None, cfg.data.preprocess.to_dict())
  workdir = tmp_path / "run"
  projector_lib.save_projector(str(workdir), cfg, source, trainable, (data_lib.NO_ECG_DIM,))
  feats = data["features"][:10]
  before = decoding.generate_reports(cfg, gen, trainable, feats, False)

  run_cfg, loaded_source, loaded, meta = projector_lib.load_projector(str(workdir))
  assert loaded_source.source == "none" and meta["feature_shape"] == [data_lib.NO_ECG_DIM]
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(trainable), loaded)
  after = decoding.generate_reports(run_cfg, projector_lib.build_generator(run_cfg), loaded,
                                    feats, False)
  assert after == before
  # The adapters matter: the same projector without them writes other text.
  zeroed = {**trainable, "lora": jax.tree_util.tree_map(np.zeros_like, trainable["lora"])}
  assert decoding.generate_reports(cfg, gen, zeroed, feats, False) != before

  # Predict mode loads them: its reports are those of the trained model on the no-ECG arm's
  # (all-zero) features.
  inputs = tmp_path / "ecgs"
  inputs.mkdir()
  np.save(inputs / "batch.npy",
          np.random.default_rng(3).standard_normal((3, 1000, 12)).astype(np.float32))
  pcfg = _generate_config()
  pcfg.mode, pcfg.projector = "predict", str(workdir)
  pcfg.input, pcfg.output = str(inputs), str(tmp_path / "reports.csv")
  config_validation.validate_generate_config(pcfg)
  with open(generate.run_predict(pcfg), newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))[1:]
  expected = decoding.generate_reports(cfg, gen, trainable,
                                       np.zeros((3, data_lib.NO_ECG_DIM), np.float32), False)
  assert [r[1] for r in rows] == expected


# ---------------------------------------------------------------------- (c) mixture data

def test_mixture_yields_every_report_of_both_sources(toy_sources, tmp_path, capsys):
  cfg = _toy_data_config(toy_sources)
  assert [s.config for s in data_lib.report_sources(cfg.data)] == ["100hz", "250hz"]
  source = data_lib.FeatureSource("none", None, cfg.data.preprocess.to_dict())
  cfg.progress = False
  feats = data_lib.compute_features(str(tmp_path), cfg, source, "train", "pooled")
  expected = _expected_reports("train", [(0, 0), (500, 4)])
  assert len(expected) == 24 + 18
  assert dict(zip(feats["ecg_id"].tolist(), feats["reports"])) == expected
  assert len(feats["reports"]) == len(expected)  # Each record once.
  np.testing.assert_array_equal(feats["source"], [0] * 24 + [1] * 18)
  assert feats["features"].shape == (42, data_lib.NO_ECG_DIM)
  assert "train: 42 records with a report from 2 source(s)" in capsys.readouterr().out
  saved = np.load(tmp_path / "features_train.npz", allow_pickle=True)
  np.testing.assert_array_equal(saved["ecg_id"], feats["ecg_id"])
  # max_records counts over the concatenation; without sources, data.name alone is read.
  assert len(data_lib.split_features(cfg.data, "train", source, "pooled", 8, 30,
                                     False)["reports"]) == 30
  cfg.data.sources = None
  single = data_lib.split_features(cfg.data, "train", source, "pooled", 8, progress=False)
  assert dict(zip(single["ecg_id"].tolist(), single["reports"])) == _expected_reports(
      "train", [(0, 0)])


def test_default_config_reads_both_shared_folders():
  cfg = _generate_config("default")
  dirs = [os.path.basename(dict(s)["data_dir"]) for s in cfg.data.sources]
  assert dirs == ["ptbxl", "ptbxl_derived"]
  assert all(dict(s)["reports"] and dict(s)["config"] == "100hz" for s in cfg.data.sources)
  config_validation.validate_generate_config(cfg)
  cfg.data.sources = tuple(dict(s, reports=False) for s in cfg.data.sources)
  with pytest.raises(config_validation.ConfigError, match="every source is marked"):
    config_validation.validate_generate_config(cfg)


# ------------------------------------------------------- the recipe switch, on validation

def test_cli_trains_lora_recipe_and_evaluates_on_validation(toy_sources, tmp_path):
  """The lead's recipe keys from the command line; --config.eval.split=validation scores the
  validation fold of every source (loss and statement F1 printed and in summary.json)."""
  sources = tuple(toy_sources[:2])
  cmd = [sys.executable, "-m", "merit_jax.generate", "--config=configs/generate.py:test",
         f"--workdir={tmp_path / 'run'}", "--config.checkpoint=none",
         "--config.data.name=toy_ecg", f"--config.data.data_dir={sources[0]['data_dir']}",
         f"--config.data.sources={sources!r}", "--config.lora_rank=2",
         "--config.lora_targets=('attn', 'mlp')", "--config.num_prefix_tokens=3",
         "--config.optim.lr=0.005", "--config.total_steps=3", "--config.eval.split=validation",
         "--config.eval.max_records=12"]
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "train: 42 records with a report from 2 source(s)" in result.stdout
  # Validation: 7 + 5 non-empty reports (the 250hz build blanks ids 700 and 704).
  assert "validation: 12 records with a report from 2 source(s)" in result.stdout
  assert "validation: loss " in result.stdout and "statement F1 micro" in result.stdout
  import json  # pylint: disable=g-import-not-at-top
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["eval_split"] == "validation" and math.isfinite(summary["eval_loss"])
  assert summary["train_records"] == 42 and summary["metrics"]["num_records"] == 12
  meta = json.loads((tmp_path / "run" / projector_lib.CONFIG_FILE).read_text())
  c = meta["config"]
  assert (c["lora_rank"], c["lora_targets"], c["num_prefix_tokens"], c["optim"]["lr"],
          c["total_steps"]) == (2, ["attn", "mlp"], 3, 0.005, 3)
  _, _, trainable, _ = projector_lib.load_projector(str(tmp_path / "run"))
  assert set(trainable["lora"]["layer_0"]) == ALL_PROJECTIONS
