"""Tests for merit_jax/generate.py: report-only loss, training, saving, the predict CLI.

Everything runs on the tiny random Gemma 3 (`gemma3.tiny_config`, byte tokenizer) and the tiny
MERIT run of tests/test_checkpoint.py; never the 270M model.
"""

import csv
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import generate as generate_config
from merit_jax import generate
from merit_jax import parallel
from tests.test_checkpoint import make_fake_run

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config():
  return generate_config.get_config("test")


@pytest.fixture(scope="module")
def gen(config):
  return generate.build_generator(config)


@pytest.fixture(scope="module")
def merit_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("merit_run")
  make_fake_run(workdir, seed=1)
  return str(workdir)


def test_sequences_mask_exactly_the_report_tokens(gen):
  tok = gen.tokenizer
  tokens, input_mask, loss_mask = generate.training_sequences(
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
    generate.training_sequences(tok, gen.prompt, ["x"], max_report_tokens=1)


def test_loss_ignores_prompt_targets():
  rng = np.random.default_rng(0)
  k, t, v = 2, 7, 11
  logits = jnp.asarray(rng.standard_normal((3, k + t, v)), jnp.float32)
  tokens = rng.integers(0, v, (3, t))
  loss_mask = np.zeros((3, t), bool)
  loss_mask[:, 3:6] = True
  base, count = generate.next_token_loss(logits, tokens, loss_mask, k)
  assert float(count) == 9
  other = tokens.copy()
  other[:, :3] = (other[:, :3] + 1) % v  # Prompt targets changed.
  other[:, 6:] = (other[:, 6:] + 5) % v  # Padding targets changed.
  same, _ = generate.next_token_loss(logits, other, loss_mask, k)
  assert float(same) == pytest.approx(float(base), abs=1e-7)
  changed = tokens.copy()
  changed[0, 4] = (changed[0, 4] + 1) % v
  assert float(generate.next_token_loss(logits, changed, loss_mask, k)[0]) != pytest.approx(
      float(base), abs=1e-6)
  # Alignment: logits column k - 1 + t predicts token t.
  manual = -np.mean([jax.nn.log_softmax(logits[b, k - 1 + s])[tokens[b, s]]
                     for b in range(3) for s in range(3, 6)])
  assert float(base) == pytest.approx(float(manual), rel=1e-5)


def test_model_loss_independent_of_prompt_targets_gradient_reaches_projector(gen, config):
  feats = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
  trainable = generate.init_trainable(gen, (6,), 0, 0)
  tokens, input_mask, loss_mask = generate.training_sequences(
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
  gen = generate.build_generator(cfg, (gen.llm, gen.llm_params, gen.tokenizer))
  mesh = parallel.make_mesh(cfg.mesh)  # 8 simulated devices: batch 8 over ('data', 'fsdp').
  assert parallel.num_batch_shards(mesh) == jax.device_count() == 8
  before = jax.tree_util.tree_map(np.array, gen.llm_params)
  trainable, history = generate.train_projector(cfg, gen, _separable_data(), mesh,
                                                progress=False)
  assert history[-1]["loss"] < 0.6 * history[0]["loss"], history
  b = trainable["lora"]["layer_0"]["q_proj"]["b"]
  assert b.shape[0] == 4 and float(np.abs(b).max()) > 0  # B left its zero init.
  # The base LLM params are untouched: adapters live in their own tree.
  jax.tree_util.tree_map(np.testing.assert_array_equal, before, gen.llm_params)
  cfg.batch_size = 5
  with pytest.raises(ValueError, match="batch_size"):
    generate.train_projector(cfg, gen, _separable_data(), mesh, progress=False)


def test_frozen_llm_trains_projector_only(gen):
  cfg = generate_config.get_config("test")
  cfg.total_steps, cfg.log_every = 20, 10
  cfg.optim.lr, cfg.optim.warmup_steps = 1e-2, 2
  trainable, history = generate.train_projector(
      cfg, gen, _separable_data(), parallel.make_mesh(cfg.mesh, jax.devices()[:2]),
      progress=False)
  assert set(trainable) == {"projector", "lora"} and trainable["lora"] == {}
  assert history[-1]["loss"] < history[0]["loss"] - 0.2, history


@pytest.fixture(scope="module")
def projector_dir(tmp_path_factory, gen, config, merit_run):
  """A saved projector over the tiny MERIT run's encoder (trained 2 steps)."""
  workdir = tmp_path_factory.mktemp("projector")
  encoder = generate.load_encoder(merit_run, None, 0, config.data.preprocess.to_dict())
  rng = np.random.default_rng(2)
  ecg = rng.standard_normal((8, 12, 1000)).astype(np.float32)
  feats = generate._features_of_batch(encoder, encoder.feature_fn("pooled"), ecg, "pooled")  # pylint: disable=protected-access
  cfg = generate_config.get_config("test")
  cfg.total_steps = 2
  trainable, _ = generate.train_projector(
      cfg, gen, {"features": feats, "reports": ["sinus rhythm"] * 8},
      parallel.make_mesh(cfg.mesh, jax.devices()[:1]), progress=False)
  generate.save_projector(str(workdir), cfg, encoder, trainable, feats.shape[1:])
  return workdir


def test_save_load_roundtrip(projector_dir, merit_run):
  cfg, encoder, trainable, meta = generate.load_projector(str(projector_dir / "projector"))
  assert encoder.source == os.path.abspath(merit_run)
  assert meta["feature_kind"] == "pooled" and cfg.llm == "tiny"
  assert set(trainable) == {"projector", "lora"}


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


def test_read_inputs_errors(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    generate.read_inputs(str(tmp_path / "missing"), None)
  np.save(tmp_path / "leads_major.npy", np.zeros((2, 12, 1000), np.float32))
  with pytest.raises(ValueError, match="leads-major"):
    generate.read_inputs(str(tmp_path / "leads_major.npy"), None)


def test_train_on_ptbxl_records(ptbxl_dir, tmp_path, merit_run):
  """End to end on real PTB-XL reports: build, features, train, evaluate, save, reload."""
  cfg = generate_config.get_config("test")
  cfg.data.data_dir = str(tmp_path / "tfds")
  cfg.data.manual_dir = str(ptbxl_dir)
  cfg.checkpoint = "random"
  cfg.encoder_like = merit_run
  summary = generate.run_train(cfg, str(tmp_path / "run"))
  assert summary["train_records"] > 100 and summary["encoder"] == "random"
  m = summary["metrics"]
  assert m["num_records"] == 8 and {"bleu4", "rouge_l", "clinical_micro_f1"} <= set(m)
  for name in ("summary.json", "samples.csv", "metrics.jsonl", "generate_config.json"):
    assert (tmp_path / "run" / name).is_file(), name
  _, encoder, _, meta = generate.load_projector(str(tmp_path / "run"))
  assert encoder.source == "random" and meta["feature_shape"] == [32]


def _fake_compare_results(arms=("none", "random", "merit")):
  """run_compare's per-arm summaries without training: fixed outputs of three 'systems'."""
  from merit_jax.metrics import text as text_metrics  # pylint: disable=g-import-not-at-top
  refs = ["sinus rhythm. normal ecg.", "atrial fibrillation.", "sinus rhythm. left ventricular "
          "hypertrophy.", "sinus bradycardia. normal ecg.", "sinus rhythm. st depression.",
          "atrial fibrillation. left bundle branch block.", "sinus rhythm. normal ecg.",
          "sinus rhythm. inferior myocardial infarction."] * 2
  codes = [sorted(text_metrics.ScpMatcher()(r)) for r in refs]
  outputs = {"none": ["sinus rhythm normal ecg"] * len(refs),
             "random": ["sinus rhythm"] * len(refs),
             "merit": [r.replace(".", "") for r in refs[:12]] + ["normal ecg"] * 4}
  test = {"reports": refs, "ecg_id": list(range(100, 100 + len(refs))), "codes": codes}
  results = {}
  for arm in arms:
    metrics = text_metrics.report_generation_metrics(outputs[arm], refs, codes,
                                                     with_meteor=False)
    metrics["num_records"] = len(refs)
    results[arm] = {"encoder": arm, "train_records": 100, "final_loss": 1.5,
                    "train_seconds": 3.0, "metrics": metrics, "generated": outputs[arm],
                    "test": test}
  return results


def test_comparison_table_shows_bootstrap_cis_and_paired_differences(config):
  results = _fake_compare_results()
  boot = generate.bootstrap_arms(config, results)
  assert "diff" not in boot["none"]["bleu4"]  # The baseline arm itself.
  for arm in ("random", "merit"):
    for key, stat in boot[arm].items():
      assert stat["value"] == pytest.approx(results[arm]["metrics"][key], abs=1e-12)
      assert stat["diff"] == pytest.approx(
          results[arm]["metrics"][key] - results["none"]["metrics"][key], abs=1e-12)
  for arm, ci in boot.items():
    results[arm]["bootstrap"] = ci
  md = generate.comparison_markdown(config, results, "python -m merit_jax.generate ...")
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


def test_compare_rejects_bad_n_bootstrap_before_training(tmp_path):
  cfg = generate_config.get_config("test")
  cfg.arms = ("none",)
  cfg.eval.n_bootstrap = 0
  with pytest.raises(generate.GenerateError, match="n_bootstrap must be a positive integer"):
    generate.run_compare(cfg, str(tmp_path))
  with pytest.raises(generate.GenerateError, match="n_bootstrap"):
    generate.bootstrap_arms(cfg, _fake_compare_results())
