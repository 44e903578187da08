"""Tests for report generation (merit_jax/generate.py, merit_jax/report_gen/): report-only loss,
training, saving and loading, the predict CLI, the comparison table, config validation.

Everything runs on the tiny random Gemma 3 (`gemma3.tiny_config`, byte tokenizer) and the tiny
MERIT run of tests/test_checkpoint.py; never the 270M model.
"""

import csv
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from merit_jax import config_validation
from merit_jax import generate
from merit_jax import parallel
from merit_jax.report_gen import GenerateError
from merit_jax.report_gen import data as data_lib
from merit_jax.report_gen import projector as projector_lib
from merit_jax.report_gen import reporting
from merit_jax.report_gen import training
from tests.test_checkpoint import make_fake_run

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load_config_module():
  """configs/generate.py by its path, as `--config=` loads it (no repository on sys.path)."""
  spec = importlib.util.spec_from_file_location("generate_config",
                                                REPO / "configs" / "generate.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


generate_config = _load_config_module()


def real_records_config(tmp, ptbxl_dir):
  """The `test` config over a fake MERIT run (made in tmp) and the real PTB-XL folder."""
  merit_run = tmp / "merit_run"
  make_fake_run(merit_run, seed=1)
  cfg = generate_config.get_config("test")
  cfg.data.data_dir = str(tmp / "tfds")
  cfg.data.manual_dir = str(ptbxl_dir)
  cfg.data.sources = None
  cfg.checkpoint = str(merit_run)
  return cfg


def tiny_generator(num_features: int = 6):
  """(the `test` config, its tiny byte-tokenizer generator, untrained projector params for
  `num_features` feature channels, no LoRA)."""
  cfg = generate_config.get_config("test")
  gen = projector_lib.build_generator(cfg)
  return cfg, gen, projector_lib.init_trainable(gen, (num_features,), lora_rank=0, seed=0)


def assert_score_mode_reproduces(cfg, run_dir, score_dir, summary: dict):
  """Score mode on the run in `run_dir` (trained with `cfg`, which returned `summary`) gives
  its eval loss and its generated reports again; returns the score-mode config."""
  score_cfg = generate_config.get_config("test")
  score_cfg.data = cfg.data
  score_cfg.mode, score_cfg.projector = "score", str(run_dir)
  scored = generate.run_score(score_cfg, str(score_dir))
  np.testing.assert_allclose(scored["eval_loss"], summary["eval_loss"], rtol=1e-5)
  with open(pathlib.Path(score_dir) / "samples.csv", newline="", encoding="utf-8") as f:
    assert [row["generated"] for row in csv.DictReader(f)] == summary["generated"]
  return score_cfg


@pytest.fixture(scope="module")
def config():
  return generate_config.get_config("test")


@pytest.fixture(scope="module")
def gen(config):
  return projector_lib.build_generator(config)


@pytest.fixture(scope="module")
def merit_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("merit_run")
  make_fake_run(workdir, seed=1)
  return str(workdir)


def test_sequences_mask_exactly_the_report_tokens(gen):
  tok = gen.tokenizer
  tokens, input_mask, loss_mask = data_lib.training_sequences(
      tok, gen.prompt, ["ab", "a much longer report than fits"], max_report_tokens=6)
  p = len(gen.prompt)
  assert tokens.shape == (2, p + 6)
  np.testing.assert_array_equal(tokens[:, :p], [gen.prompt, gen.prompt])
  assert not loss_mask[:, :p].any()  # The prompt (BOS included) is never a target.
  # 'ab' + EOS: three targets, then padding that is neither input nor target.
  np.testing.assert_array_equal(loss_mask[0, p:], [1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(input_mask[0], [1] * (p + 3) + [0] * 3)
  assert tokens[0, p + 2] == tok.eos_id
  # Truncated report: still ends with EOS, all 6 slots scored.
  assert loss_mask[1, p:].all() and tokens[1, -1] == tok.eos_id
  with pytest.raises(ValueError, match="max_report_tokens"):
    data_lib.training_sequences(tok, gen.prompt, ["x"], max_report_tokens=1)


def test_loss_ignores_prompt_targets():
  rng = np.random.default_rng(0)
  k, t, v = 2, 7, 11
  logits = jnp.asarray(rng.standard_normal((3, k + t, v)), jnp.float32)
  tokens = rng.integers(0, v, (3, t))
  loss_mask = np.zeros((3, t), bool)
  loss_mask[:, 3:6] = True
  base, count = projector_lib.next_token_loss(logits, tokens, loss_mask, k)
  assert float(count) == 9
  other = tokens.copy()
  other[:, :3] = (other[:, :3] + 1) % v  # Prompt targets changed.
  other[:, 6:] = (other[:, 6:] + 5) % v  # Padding targets changed.
  same, _ = projector_lib.next_token_loss(logits, other, loss_mask, k)
  assert float(same) == pytest.approx(float(base), abs=1e-7)
  changed = tokens.copy()
  changed[0, 4] = (changed[0, 4] + 1) % v
  assert float(projector_lib.next_token_loss(logits, changed, loss_mask, k)[0]) != pytest.approx(
      float(base), abs=1e-6)
  # Alignment: logits column k - 1 + t predicts token t.
  manual = -np.mean([jax.nn.log_softmax(logits[b, k - 1 + s])[tokens[b, s]]
                     for b in range(3) for s in range(3, 6)])
  assert float(base) == pytest.approx(float(manual), rel=1e-5)


def test_model_loss_independent_of_prompt_targets_gradient_reaches_projector(gen, config):
  feats = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
  trainable = projector_lib.init_trainable(gen, (6,), 0, 0)
  tokens, input_mask, loss_mask = data_lib.training_sequences(
      gen.tokenizer, gen.prompt, ["sinus rhythm", "afib", "normal ecg", "lvh"],
      config.max_report_tokens)
  grads = jax.jit(jax.grad(lambda tr: gen.loss(tr, gen.llm_params, feats, tokens, input_mask,
                                                loss_mask)[0]))(trainable)
  assert grads["lora"] == {}  # Frozen LLM: nothing else is trainable.
  for leaf in jax.tree_util.tree_leaves(grads["projector"]):
    assert float(jnp.abs(leaf).max()) > 0


def _separable_data(n=32):
  """Reports that depend on the ECG feature sign, so conditioning can lower the loss."""
  rng = np.random.default_rng(0)
  sign = rng.integers(0, 2, n)
  feats = (np.where(sign[:, None] == 1, 1.0, -1.0) + 0.1 * rng.standard_normal((n, 6)))
  reports = ["sinus rhythm" if s else "atrial fib" for s in sign]
  return {"features": feats.astype(np.float32), "reports": reports}


def test_train_loop_lowers_loss_sharded(gen):
  # The tiny LLM is random: soft prompts alone barely steer it, LoRA (rank 4) can fit.
  cfg = generate_config.get_config("test")
  cfg.total_steps, cfg.log_every, cfg.num_prefix_tokens, cfg.lora_rank = 40, 10, 4, 4
  cfg.optim.lr, cfg.optim.warmup_steps = 1e-2, 2
  gen = projector_lib.build_generator(cfg, (gen.llm, gen.llm_params, gen.tokenizer))
  mesh = parallel.make_mesh(cfg.mesh)  # 8 simulated devices: batch 8 over ('data', 'fsdp').
  assert parallel.num_batch_shards(mesh) == jax.device_count() == 8
  before = jax.tree_util.tree_map(np.array, gen.llm_params)
  trainable, history = training.train_projector(cfg, gen, _separable_data(), mesh,
                                                progress=False)
  assert history[-1]["loss"] < 0.6 * history[0]["loss"], history
  b = trainable["lora"]["layer_0"]["q_proj"]["b"]
  assert b.shape[0] == 4 and float(np.abs(b).max()) > 0  # B left its zero init.
  # The base LLM params are untouched: adapters live in their own tree.
  jax.tree_util.tree_map(np.testing.assert_array_equal, before, gen.llm_params)
  cfg.batch_size = 5
  with pytest.raises(ValueError, match="batch_size"):
    training.train_projector(cfg, gen, _separable_data(), mesh, progress=False)


def test_frozen_llm_trains_projector_only(gen):
  cfg = generate_config.get_config("test")
  cfg.total_steps, cfg.log_every = 20, 10
  cfg.optim.lr, cfg.optim.warmup_steps = 1e-2, 2
  trainable, history = training.train_projector(
      cfg, gen, _separable_data(), parallel.make_mesh(cfg.mesh, jax.devices()[:2]),
      progress=False)
  assert set(trainable) == {"projector", "lora"} and trainable["lora"] == {}
  assert history[-1]["loss"] < history[0]["loss"] - 0.2, history


def _tiny_ecgs(n=8, seed=2):
  return np.random.default_rng(seed).standard_normal((n, 12, 1000)).astype(np.float32)


@pytest.fixture(scope="module")
def projector_dir(tmp_path_factory, gen, config, merit_run):
  """A saved projector over the tiny MERIT run's encoder (trained 2 steps)."""
  workdir = tmp_path_factory.mktemp("projector")
  source = data_lib.load_feature_source(merit_run, None, 0, config.data.preprocess.to_dict(),
                                        config.feature_batch_size)
  feats = source.features(_tiny_ecgs(), "pooled")
  cfg = generate_config.get_config("test")
  cfg.total_steps = 2
  trainable, _ = training.train_projector(
      cfg, gen, {"features": feats, "reports": ["sinus rhythm"] * 8},
      parallel.make_mesh(cfg.mesh, jax.devices()[:1]), progress=False)
  projector_lib.save_projector(str(workdir), cfg, source, trainable, feats.shape[1:])
  return workdir


def test_save_load_roundtrip(projector_dir, merit_run, config):
  cfg, source, trainable, meta = projector_lib.load_projector(str(projector_dir / "projector"),
                                                              config.feature_batch_size)
  assert source.source == os.path.abspath(merit_run)
  assert meta["feature_kind"] == "pooled" and cfg.llm == "tiny"
  assert set(trainable) == {"projector", "lora"}
  # The reloaded encoder embeds as the one the projector was trained on.
  trained_on = data_lib.load_feature_source(merit_run, None, 0, {}, config.feature_batch_size)
  np.testing.assert_array_equal(source.features(_tiny_ecgs(), "pooled"),
                                trained_on.features(_tiny_ecgs(), "pooled"))


def _cache(n):
  return {"features": np.arange(n * 3, dtype=np.float32).reshape(n, 3), "ecg_id": np.arange(n),
          "source": np.zeros(n, np.int32), "reports": [f"r{i}" for i in range(n)],
          "codes": [["SR"], ["AFIB", "PVC"], []][:n]}


def test_features_cache_roundtrip_and_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
  path = str(tmp_path / "features_train.npz")
  data_lib.save_features(path, _cache(3))
  loaded = data_lib.load_features(path)
  np.testing.assert_array_equal(loaded["features"], _cache(3)["features"])
  assert loaded["reports"] == ["r0", "r1", "r2"]
  assert loaded["codes"] == [["SR"], ["AFIB", "PVC"], []]

  real_savez = np.savez

  def savez_then_crash(file, **arrays):  # Half a file on disk, then the process dies.
    real_savez(file, features=arrays["features"])
    raise KeyboardInterrupt

  monkeypatch.setattr(np, "savez", savez_then_crash)
  with pytest.raises(KeyboardInterrupt):
    data_lib.save_features(path, _cache(2))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["features_train.npz"]
  assert data_lib.load_features(path)["reports"] == ["r0", "r1", "r2"]


def test_feature_standardisation_matches_sklearn_and_keeps_constant_channels_finite():
  from sklearn import preprocessing  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  train = rng.normal(3.0, 0.5, (40, 6)).astype(np.float32)
  train[:, 2] = 7.0  # A constant channel (the no-ECG arm's are all constant).
  other = rng.normal(3.0, 0.5, (5, 6)).astype(np.float32)
  stats = data_lib.fit_feature_stats(train)
  json.dumps(stats)  # Saved in generate_config.json.
  scaler = preprocessing.StandardScaler().fit(train.astype(np.float64))
  np.testing.assert_allclose(data_lib.standardize_features(other, stats),
                             scaler.transform(other.astype(np.float64)), atol=1e-5)
  assert np.all(data_lib.standardize_features(train, stats)[:, 2] == 0)
  # Token features (N, T, D): per channel over records and tokens together.
  tokens = rng.normal(size=(4, 3, 6)).astype(np.float32)
  flat = preprocessing.StandardScaler().fit_transform(tokens.reshape(-1, 6).astype(np.float64))
  np.testing.assert_allclose(
      data_lib.standardize_features(tokens, data_lib.fit_feature_stats(tokens)),
      flat.reshape(4, 3, 6), atol=1e-5)
  np.testing.assert_array_equal(data_lib.standardize_features(other, None), other)
  with pytest.raises(GenerateError, match="another encoder"):
    data_lib.standardize_features(rng.normal(size=(2, 5)), stats)


def test_predict_applies_the_saved_feature_stats(tmp_path, gen, merit_run):
  """A projector trained on standardised features: predict mode standardises new ECGs with
  the training stats saved beside it, so it writes what the trained model generates."""
  from merit_jax.report_gen import decoding  # pylint: disable=g-import-not-at-top
  cfg = generate_config.get_config("test")
  cfg.total_steps = 2
  cfg.standardize_features = True
  source = data_lib.load_feature_source(merit_run, None, 0, cfg.data.preprocess.to_dict(),
                                        cfg.feature_batch_size)
  raw = source.features(_tiny_ecgs(), "pooled")
  stats = data_lib.fit_feature_stats(raw)
  trainable, _ = training.train_projector(
      cfg, gen, {"features": data_lib.standardize_features(raw, stats),
                 "reports": ["sinus rhythm"] * 8},
      parallel.make_mesh(cfg.mesh, jax.devices()[:1]), progress=False)
  projector_lib.save_projector(str(tmp_path / "run"), cfg, source, trainable, raw.shape[1:],
                               feature_stats=stats)
  _, _, _, meta = projector_lib.load_projector(str(tmp_path / "run"))
  assert meta["feature_stats"] == stats
  inputs = tmp_path / "ecgs"
  inputs.mkdir()
  signals = np.random.default_rng(5).standard_normal((3, 1000, 12)).astype(np.float32)
  np.save(inputs / "three.npy", signals)
  predict = generate_config.get_config("test")
  predict.mode = "predict"
  predict.projector, predict.input = str(tmp_path / "run"), str(inputs)
  predict.output = str(tmp_path / "reports.csv")
  with open(generate.run_predict(predict), newline="", encoding="utf-8") as f:
    written = [row[1] for row in list(csv.reader(f))[1:]]
  _, records = data_lib.read_inputs(str(inputs), None)
  expected = decoding.generate_reports(
      cfg, gen, trainable,
      data_lib.standardize_features(data_lib.record_features(source, records, "pooled", 8),
                                    stats), False)
  assert written == expected


def test_features_of_each_source(merit_run, config):
  """No ECG: zeros of the no-ECG width; a MERIT run: the pooled mean of its token features."""
  ecg = _tiny_ecgs(5)
  none = data_lib.load_feature_source(None, None, 0, config.data.preprocess.to_dict(), 8)
  assert none.source == "none" and none.encoder is None
  np.testing.assert_array_equal(none.features(ecg, "pooled"), np.zeros((5, data_lib.NO_ECG_DIM)))
  assert none.features(ecg, "tokens").shape == (5, 1, data_lib.NO_ECG_DIM)
  merit = data_lib.load_feature_source(merit_run, None, 0, {}, 4)  # Batch 4: 5 ECGs pad to 8.
  pooled, tokens = merit.features(ecg, "pooled"), merit.features(ecg, "tokens")
  assert tokens.ndim == 3 and tokens.shape[0] == 5 and tokens.shape[2] == pooled.shape[1]
  # MERIT pools the final token features by their mean (models/merit.py).
  np.testing.assert_allclose(pooled, tokens.mean(axis=1), atol=1e-5, rtol=1e-5)
  with pytest.raises(GenerateError, match="encoder_like"):
    data_lib.load_feature_source("random", None, 0, {}, 4)


def test_random_arm_projector_saved_before_still_loads(tmp_path, config, merit_run, gen):
  """Projectors written before kept the random encoder's params boxed (Flax partitioning
  metadata, {'value': array} on disk); they load and embed as the unboxed params do."""
  source = data_lib.load_feature_source("random", merit_run, 3, {}, 8)
  model = source.encoder.model
  boxed = model.init(jax.random.PRNGKey(3), jnp.zeros((1, 12, 1000)),
                     method=model.embed_ecg)["params"]
  assert any(isinstance(x, nn.Partitioned) for x in jax.tree_util.tree_leaves(
      boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned)))
  width = source.features(_tiny_ecgs(1), "pooled").shape[1]
  trainable = projector_lib.init_trainable(gen, (width,), 0, 0)
  projector_lib.save_projector(str(tmp_path), config, source, trainable, (width,))
  tree = ocp.PyTreeCheckpointer().restore(str(tmp_path / "projector"))
  ocp.PyTreeCheckpointer().save(str(tmp_path / "projector"),
                                dict(tree, encoder=jax.device_get(boxed)), force=True)
  _, loaded, _, meta = projector_lib.load_projector(str(tmp_path), 8)
  assert loaded.source == "random" and meta["encoder_source"] == "random"
  np.testing.assert_array_equal(loaded.features(_tiny_ecgs(), "pooled"),
                                source.features(_tiny_ecgs(), "pooled"))


def test_predict_cli_writes_one_row_per_input(projector_dir, tmp_path):
  inputs = tmp_path / "ecgs"
  inputs.mkdir()
  rng = np.random.default_rng(3)
  np.save(inputs / "one.npy", rng.standard_normal((1000, 12)).astype(np.float32))
  np.save(inputs / "batch.npy", rng.standard_normal((2, 1000, 12)).astype(np.float32))
  out = tmp_path / "reports.csv"
  cmd = [sys.executable, "-m", "merit_jax.generate", "--config=configs/generate.py:test",
         "--config.mode=predict", f"--config.projector={projector_dir}",
         f"--config.input={inputs}", f"--config.output={out}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(out, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["id", "report"]
  assert [r[0] for r in rows[1:]] == ["batch:0", "batch:1", "one"]
  assert all(len(r) == 2 for r in rows[1:])

  # Bad input: a clear one-line error, non-zero exit.
  (tmp_path / "empty").mkdir()
  bad = subprocess.run(cmd[:-2] + [f"--config.input={tmp_path / 'empty'}",
                                   f"--config.output={out}"],
                       cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
  assert bad.returncode != 0 and "expected a folder of WFDB records" in bad.stderr


@pytest.mark.parametrize("override, expected", [
    ("--config.mode=tran", "config.mode='tran' must be one of 'train', 'predict', 'score', 'compare'"),
    ("--config.decoding.methd=beam", "unknown config key"),
    ("--config.decoding.method=topk",
     "config.decoding.method='topk' must be one of 'greedy', 'beam', 'nucleus'"),
])
def test_cli_config_mistakes_are_one_line(override, expected, tmp_path):
  cmd = [sys.executable, "-m", "merit_jax.generate", "--config=configs/generate.py:test",
         override, f"--workdir={tmp_path}"]
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode != 0 and expected in result.stderr, result.stderr[-2000:]
  assert "Traceback" not in result.stderr


def test_validate_generate_config_names_key_value_and_allowed():
  for variant in generate_config.VARIANTS:
    cfg = generate_config.get_config(variant)
    if cfg.mode == "compare":
      cfg.merit_checkpoint = "RUN_DIR"
    config_validation.validate_generate_config(cfg)
  cfg = generate_config.get_config("test")
  cfg.projector_kind, cfg.eval.n_bootstrap, cfg.max_report_tokens = "linear", 0, 1
  with pytest.raises(config_validation.ConfigError) as e:
    config_validation.validate_generate_config(cfg)
  message = str(e.value)
  assert "config.projector_kind='linear' must be one of 'mlp', 'resampler'" in message
  assert "config.eval.n_bootstrap=0 must be an integer >= 1" in message
  assert "config.max_report_tokens=1 must be an integer >= 2" in message
  cfg = generate_config.get_config("test")
  cfg.decoding.min_new_tokens, cfg.decoding.max_new_tokens = 4, 2
  with pytest.raises(config_validation.ConfigError,
                     match=r"min_new_tokens=4 must be an integer in \[0, "
                     r"decoding.max_new_tokens=2\]"):
    config_validation.validate_generate_config(cfg)
  cfg = generate_config.get_config("compare")
  cfg.arms = ("none", "encoder")
  with pytest.raises(config_validation.ConfigError, match="config.arms=.*'none', 'random', "
                     "'merit'") as e:
    config_validation.validate_generate_config(cfg)
  assert "config.merit_checkpoint=None" not in str(e.value)  # No merit/random arm: not needed.
  cfg.arms = ("none", "merit")
  with pytest.raises(config_validation.ConfigError, match="config.merit_checkpoint=None"):
    config_validation.validate_generate_config(cfg)
  cfg.merit_checkpoint, cfg.rescore_from = "RUN_DIR", "/nonexistent/compare_run"
  with pytest.raises(config_validation.ConfigError,
                     match="rescore_from='/nonexistent/compare_run': no trained arm folder for "
                     "none, merit"):
    config_validation.validate_generate_config(cfg)
  cfg = generate_config.get_config("test")
  cfg.mode = "predict"
  with pytest.raises(config_validation.ConfigError, match="predict mode needs --config.input"):
    config_validation.validate_generate_config(cfg)


def test_read_inputs_errors(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    data_lib.read_inputs(str(tmp_path / "missing"), None)
  np.save(tmp_path / "leads_major.npy", np.zeros((2, 12, 1000), np.float32))
  with pytest.raises(ValueError, match="leads-major"):
    data_lib.read_inputs(str(tmp_path / "leads_major.npy"), None)


def test_train_on_ptbxl_records(ptbxl_dir, tmp_path, merit_run):
  """End to end on real PTB-XL reports: build, features, train, evaluate, save, reload."""
  cfg = generate_config.get_config("test")
  cfg.data.data_dir = str(tmp_path / "tfds")
  cfg.data.manual_dir = str(ptbxl_dir)
  cfg.data.sources = None  # This one build, not the default mixture of both shared folders.
  cfg.checkpoint = "random"
  cfg.encoder_like = merit_run
  summary = generate.run_train(cfg, str(tmp_path / "run"))
  assert summary["train_records"] > 100 and summary["encoder"] == "random"
  m = summary["metrics"]
  assert m["num_records"] == 8 and {"bleu4", "rouge_l", "clinical_micro_f1"} <= set(m)
  for name in ("summary.json", "samples.csv", "metrics.jsonl", "generate_config.json"):
    assert (tmp_path / "run" / name).is_file(), name
  with open(tmp_path / "run" / "metrics.jsonl", encoding="utf-8") as f:
    steps = [json.loads(line)["step"] for line in f]
  assert steps == [1, 2, 4]  # log_every=2 of 4 steps, and the first.
  _, source, _, meta = projector_lib.load_projector(str(tmp_path / "run"))
  assert source.source == "random" and meta["feature_shape"] == [32]
  # The saved features are those of the reloaded random encoder.
  saved = np.load(tmp_path / "run" / "features_test.npz", allow_pickle=True)
  assert saved["features"].shape == (8, 32)

  # Score mode on the saved run with the run's own decoding: the same loss and reports as the
  # evaluation at the end of training (reloaded projector, recomputed features).
  score_cfg = generate_config.get_config("test")
  score_cfg.data = cfg.data
  score_cfg.mode, score_cfg.projector = "score", str(tmp_path / "run")
  scored = generate.run_score(score_cfg, str(tmp_path / "score"))
  assert scored["eval_split"] == "test"
  np.testing.assert_allclose(scored["eval_loss"], summary["eval_loss"], rtol=1e-5)
  with open(tmp_path / "score" / "samples.csv", newline="", encoding="utf-8") as f:
    rescored = [row["generated"] for row in csv.DictReader(f)]
  assert rescored == summary["generated"]
  # A shorter decoding limit (a decoding setting, not the training truncation): greedy is
  # prefix-consistent, so each report is the start of the full-length one.
  score_cfg.decoding.max_new_tokens = 3
  short = generate.run_score(score_cfg, str(tmp_path / "score_short"))
  with open(tmp_path / "score_short" / "samples.csv", newline="", encoding="utf-8") as f:
    shortened = [row["generated"] for row in csv.DictReader(f)]
  assert short["decoding"]["max_new_tokens"] == 3
  assert all(full.startswith(part.strip()) for part, full in zip(shortened, rescored))
  assert sum(map(len, shortened)) < sum(map(len, rescored))


def _fake_compare_results(arms=("none", "random", "merit")):
  """run_compare's per-arm summaries without training: fixed outputs of three 'systems'."""
  from merit_jax.metrics import clinical  # pylint: disable=g-import-not-at-top
  from merit_jax.metrics import generation  # pylint: disable=g-import-not-at-top
  refs = ["sinus rhythm. normal ecg.", "atrial fibrillation.", "sinus rhythm. left ventricular "
          "hypertrophy.", "sinus bradycardia. normal ecg.", "sinus rhythm. st depression.",
          "atrial fibrillation. left bundle branch block.", "sinus rhythm. normal ecg.",
          "sinus rhythm. inferior myocardial infarction."] * 2
  codes = [sorted(clinical.ScpMatcher()(r)) for r in refs]
  outputs = {"none": ["sinus rhythm normal ecg"] * len(refs),
             "random": ["sinus rhythm"] * len(refs),
             "merit": [r.replace(".", "") for r in refs[:12]] + ["normal ecg"] * 4}
  test = {"reports": refs, "ecg_id": list(range(100, 100 + len(refs))), "codes": codes}
  results = {}
  for arm in arms:
    metrics = generation.report_generation_metrics(outputs[arm], refs, codes,
                                                   with_meteor=False)
    metrics["num_records"] = len(refs)
    results[arm] = {"encoder": arm, "train_records": 100, "final_loss": 1.5,
                    "train_seconds": 3.0, "metrics": metrics, "generated": outputs[arm],
                    "test": test}
  return results


def test_comparison_table_shows_bootstrap_cis_and_paired_differences(config, tmp_path):
  results = _fake_compare_results()
  boot = reporting.bootstrap_arms(config, results)
  assert "diff" not in boot["none"]["bleu4"]  # The baseline arm itself.
  for arm in ("random", "merit"):
    for key, stat in boot[arm].items():
      assert stat["value"] == pytest.approx(results[arm]["metrics"][key], abs=1e-12)
      assert stat["diff"] == pytest.approx(
          results[arm]["metrics"][key] - results["none"]["metrics"][key], abs=1e-12)
  for arm, ci in boot.items():
    results[arm]["bootstrap"] = ci
  md = reporting.comparison_markdown(config, results, "python -m merit_jax.generate ...")
  assert "no confidence intervals" not in md
  assert f"{config.eval.n_bootstrap} resamples" in md and "drawn with replacement" in md
  assert "## Difference from the no-ECG arm (paired bootstrap, 95 % CI)" in md
  rouge = boot["merit"]["rouge_l"]
  cell = (f"{100 * rouge['value']:.1f} [{100 * rouge['ci_low']:.1f}, "
          f"{100 * rouge['ci_high']:.1f}]")
  diff = (f"{100 * rouge['diff']:+.1f} [{100 * rouge['diff_ci_low']:+.1f}, "
          f"{100 * rouge['diff_ci_high']:+.1f}]")
  merit_rows = [line for line in md.splitlines() if line.startswith("| MERIT encoder |")]
  assert len(merit_rows) == 2 and cell in merit_rows[0] and diff in merit_rows[1]
  # The no-ECG arm has a CI row but no difference row; METEOR is off in the test config.
  assert sum(line.startswith("| no ECG") for line in md.splitlines()) == 1
  assert "| – |" in merit_rows[0] and "| – |" in merit_rows[1]
  # The files: the same table in both places, every generated report in the JSON.
  cfg = generate_config.get_config("test")
  cfg.results_path = str(tmp_path / "results" / "table.md")
  table = reporting.write_comparison(cfg, results, str(tmp_path), "python -m ...")
  assert (tmp_path / "results" / "table.md").read_text() == table
  assert (tmp_path / "report_generation.md").read_text() == table
  payload = json.loads((tmp_path / "report_generation.json").read_text())
  assert payload["arms"]["merit"]["generated"] == results["merit"]["generated"]
  assert payload["references"]["ecg_id"] == list(range(100, 116))
  assert payload["bootstrap"]["baseline_arm"] == "none"


def test_bootstrap_rejects_bad_n_bootstrap(config):
  cfg = generate_config.get_config("test")
  cfg.eval.n_bootstrap = 0
  with pytest.raises(ValueError, match="n_bootstrap"):
    reporting.bootstrap_arms(cfg, _fake_compare_results())
