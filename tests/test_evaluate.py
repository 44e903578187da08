"""End-to-end tests of merit_jax/evaluate.py and merit_jax/ablations.py on a tiny checkpoint.

One synthetic dataset (120 records) and one tiny checkpoint (configs/pretrain.py:test, 2 steps)
are built per module; the evaluation runs once with every evaluator and both baselines at
tiny settings, and its feature cache is reused by the other tests.
"""

import copy
import json
import pathlib

import ml_collections
import numpy as np
import pandas as pd
import pytest

from configs import evaluate as evaluate_config
from configs import pretrain as pretrain_config
from merit_jax import ablations
from merit_jax import config_validation
from merit_jax import evaluate
from merit_jax.encoder import Encoder
from merit_jax.evaluators import features
from merit_jax.evaluators import linear_probe
from merit_jax.evaluators import tasks as tasks_lib
from merit_jax.reporting import markdown
from merit_jax.reporting import writer

DATA_CONFIG = "n120_s0"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """A 2-step training run of the test config on 120 synthetic records."""
  from merit_jax import train  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("eval_ckpt")
  config = pretrain_config.get_config("test")
  config.data.config = DATA_CONFIG
  config.data.data_dir = str(root / "tfds")
  config.data.manual_dir = str(root / "manual")
  config.data.build_kwargs = {"tokenizer_vocab_size": 200}
  config.total_steps = 2
  config.checkpoint_every = 2
  config.eval_every = 2
  config.log_every = 1
  train.train_and_evaluate(config, str(root / "run"))
  return root / "run"


def _eval_config(checkpoint, output_dir):
  config = evaluate_config.get_config("quick")
  config.checkpoint = str(checkpoint)
  config.output_dir = str(output_dir)
  config.evaluators = ("linear_probe", "finetune", "zero_shot", "retrieval", "shift")
  config.baselines = ("random_init", "random_conv")
  config.tasks = ("super", "rhythm")
  config.fractions = (0.1, 1.0)
  config.seeds = (0, 1)
  config.n_bootstrap = 100
  config.batch_size = 32
  config.progress = False
  config.probe.weight_decays = (0.0, 1e-2)
  config.probe.max_epochs = 20
  config.probe.eval_every = 5
  config.probe.patience = 2
  config.finetune.learning_rates = (1e-3,)
  config.finetune.max_epochs = 1
  config.finetune.batch_size = 16
  config.shift.corruptions = ("gaussian_noise",)
  config.random_conv.num_kernels = 4  # Each (length, dilation) group of kernels compiles.
  return config


@pytest.fixture(scope="module")
def evaluated(checkpoint, tmp_path_factory):
  out = tmp_path_factory.mktemp("eval_out")
  config = _eval_config(checkpoint, out)
  return config, evaluate.run(config, command="python -m merit_jax.evaluate (test)")


def _single_run_metrics(results):
  """Every test-metric dict of every probe / fine-tuning run in the results."""
  for section in ("linear_probe", "finetune"):
    for per_task in results[section].values():
      for per_fraction in per_task.values():
        for entry in per_fraction.values():
          for run in entry["runs"]:
            yield section, run


def test_end_to_end_outputs(evaluated):
  _, results = evaluated
  names = [e["name"] for e in results["meta"]["encoders"]]
  assert names == ["run", "random_init", "random_conv"]
  for name in names:
    assert set(results["linear_probe"][name]) == {"superdiagnostic", "rhythm"}
    assert set(results["linear_probe"][name]["rhythm"]) == {"0.1", "1.0"}
    assert len(results["linear_probe"][name]["rhythm"]["0.1"]["runs"]) == 2
    assert set(results["shift"][name]) == {"superdiagnostic"}
  # Random convolutions have no text tower and are not a network to fine-tune.
  assert set(results["finetune"]) == {"run", "random_init", "random_conv"}
  assert results["finetune"]["random_conv"] == {}
  assert results["zero_shot"]["random_conv"] == {} and "random_conv" not in [
      k for k, v in results["retrieval"].items() if v]
  zs = results["zero_shot"]["run"]["superdiagnostic"]
  assert 0 <= zs["macro_auroc"]["value"] <= 1 and zs["prompts"]["NORM"]
  # Every test record falls in exactly one report-language group.
  by_language = zs["by_language"]
  assert set(by_language) <= {"de", "en", "sv", "unknown", "none"}
  assert sum(g["num_records"] for g in by_language.values()) == len(
      results["meta"]["test_labels"]["superdiagnostic"])
  assert results["retrieval"]["run"]["num_queries"] > 0
  curve = results["shift"]["run"]["superdiagnostic"][0]
  assert curve["corruption"] == "gaussian_noise" and len(curve["values"]) == 5

  paths = results["paths"]
  for key in ("md", "json", "fractions_png", "shift_png"):
    assert pathlib.Path(paths[key]).stat().st_size > 0
  md = pathlib.Path(paths["md"]).read_text()
  assert "## Linear probe: macro auroc" in md and "| random_conv |" in md
  assert "## Zero-shot" in md and "## Retrieval" in md and "## Distribution shift" in md
  assert "## Zero-shot by report language (test)" in md
  # The zero-shot diagnostics, in their own sections; none for the text-less random_conv.
  assert "## Prototype diagnostic (uses training labels — not zero-shot)" in md
  assert "## Text-only ceiling" in md and "## Classes scored per task" in md
  for section in ("prototype", "text_ceiling"):
    assert set(results[section]["run"]) == {"superdiagnostic", "rhythm"}
    assert results[section]["random_conv"] == {}
  assert zs["prompt_set"] in ("scp_en", "report_de", "knowledge", "all")
  assert set(zs["validation"]) == {"scp_en", "report_de", "knowledge", "all"}
  assert zs["softmax_scale_source"] == "model"
  saved = json.loads(pathlib.Path(paths["json"]).read_text())
  assert saved["meta"]["command"].startswith("python -m merit_jax.evaluate")
  # Features were cached per encoder / split / corruption.
  cache = pathlib.Path(paths["md"]).parents[1] / "features"
  assert len(list(cache.glob("*/train.npz"))) == 3
  assert len(list(cache.glob("*/test__gaussian_noise_*.npz"))) == 15


def test_probe_feature_is_chosen_on_validation(evaluated):
  _, results = evaluated
  for name, per_task in results["linear_probe"].items():
    for entry in per_task["superdiagnostic"].values():
      scores = entry["val_by_feature"]
      # MERIT encoders offer the three default kinds; random convolutions only their pooled
      # features.
      assert set(scores) == ({"pooled"} if name == "random_conv"
                             else {"pooled", "per_lead", "per_layer"})
      assert entry["feature"] == max(scores, key=scores.get)
      mean_val = np.mean([r["val"]["macro_auroc"]["value"] for r in entry["runs"]])
      assert scores[entry["feature"]] == pytest.approx(mean_val)
  md = pathlib.Path(results["paths"]["md"]).read_text()
  assert "## Probe features chosen on validation" in md


def test_paired_probe_difference_from_stored_scores(evaluated):
  _, results = evaluated
  diff = linear_probe.probe_paired_difference(results, "run", "random_init", "superdiagnostic",
                                          n_bootstrap=50)
  auroc = {n: results["linear_probe"][n]["superdiagnostic"]["1.0"]["macro_auroc"]["values"][0]
           for n in ("run", "random_init")}
  assert diff["macro_auroc"]["value"] == pytest.approx(auroc["run"] - auroc["random_init"],
                                                       abs=1e-4)  # Scores stored to 5 decimals.
  assert diff["macro_auroc"]["ci_low"] <= diff["macro_auroc"]["value"]
  assert "macro_f1" in diff


def test_ablation_pairing_needs_the_100_percent_probe(evaluated):
  """The MERIT − contrastive-only difference pairs 100 % probe scores; a run of the 1 % / 10 %
  probes alone has none, so it writes no pairing instead of failing after all its probes."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from merit_jax import ablations  # pylint: disable=g-import-not-at-top
  _, results = evaluated
  merit, contrastive = (ablations.resolve_variant(v)[0] for v in ("merit", "contrastive_only"))
  paired_input = {"meta": results["meta"], "linear_probe": {
      merit: results["linear_probe"]["run"], contrastive: results["linear_probe"]["random_init"]}}
  cfg = ml_collections.ConfigDict(dict(fractions="0.01,0.1", n_bootstrap=20, seed=0))
  assert ablations.paired_against_contrastive(
      paired_input, ["merit", "contrastive_only"], cfg) == {}
  cfg.fractions = "0.1,1.0"
  paired = ablations.paired_against_contrastive(paired_input, ["merit", "contrastive_only"], cfg)
  direct = linear_probe.probe_paired_difference(results, "run", "random_init",
                                                "superdiagnostic", n_bootstrap=20)
  assert paired[merit]["superdiagnostic"]["macro_auroc"]["value"] == pytest.approx(
      direct["macro_auroc"]["value"])


def test_per_lead_features_are_each_leads_token_mean(checkpoint):
  encoder = Encoder.from_checkpoint(str(checkpoint))
  samples = int(encoder.config.data.preprocess.num_samples)
  ecg = np.random.default_rng(0).normal(size=(3, 12, samples)).astype(np.float32)
  out = encoder.embed_ecg(ecg)
  tokens = np.asarray(encoder.model.apply({"params": encoder.params}, ecg, return_tokens=True,
                                          method=encoder.model.embed_ecg)["tokens"])
  width = out["pooled"].shape[1]
  patches = tokens.shape[1] // 12
  for lead in (0, 5, 11):
    expected = tokens[:, lead * patches:(lead + 1) * patches].mean(axis=1)
    np.testing.assert_allclose(out["per_lead"][:, lead * width:(lead + 1) * width], expected,
                               atol=1e-5)
  # Every lead has as many tokens, so the mean of the lead means is the pooled feature.
  np.testing.assert_allclose(out["per_lead"].reshape(3, 12, width).mean(axis=1), out["pooled"],
                             atol=1e-5)


def test_per_layer_features_are_every_blocks_per_lead_means(checkpoint):
  """`per_layer` against a forward rebuilt from the encoder's pieces (token embedding, then each
  block applied alone with its own parameters), not from captured intermediates."""
  from merit_jax.models import ecg_vit  # pylint: disable=g-import-not-at-top
  encoder = Encoder.from_checkpoint(str(checkpoint))
  model, params = encoder.model, encoder.params["encoder"]
  samples = int(encoder.config.data.preprocess.num_samples)
  ecg = np.random.default_rng(1).normal(size=(3, 12, samples)).astype(np.float32)
  out = encoder.embed_ecg(ecg)
  width = params["embed"]["patch_proj"]["kernel"].shape[1]
  max_patches = params["embed"]["time_embedding"].shape[0]
  blocks = sorted(params["transformer"], key=lambda n: (len(n), n))
  blocks = [n for n in blocks if n.startswith("block")]
  heads = encoder.config.model.heads or ecg_vit.SIZES[encoder.config.model.size][2]
  mlp_dim = params["transformer"]["block0"]["mlp"]["fc1"]["kernel"].shape[1]
  lead_ids, time_ids = ecg_vit.token_ids(12, model.num_patches)
  x = ecg_vit.TokenEmbedding(width, 12, max_patches).apply(
      {"params": params["embed"]}, ecg_vit.patchify(ecg, model.patch_size), lead_ids, time_ids)
  expected = []
  for name in blocks:
    x = ecg_vit.EncoderBlock(heads, mlp_dim).apply({"params": params["transformer"][name]}, x)
    tokens = np.asarray(x)
    patches = tokens.shape[1] // 12
    expected.append(np.concatenate([tokens[:, l * patches:(l + 1) * patches].mean(axis=1)
                                    for l in range(12)], axis=1))
  assert out["per_layer"].shape == (3, len(blocks) * 12 * width)
  np.testing.assert_allclose(out["per_layer"], np.concatenate(expected, axis=1), atol=1e-4)


def test_feature_cache_computes_only_the_kinds_asked_for(checkpoint, tmp_path):
  """Wide kinds are computed only when asked for; a cache entry lacking a kind gains it (the
  kinds it holds are not recomputed), and every kind equals a direct, uncached computation."""
  from merit_jax.evaluators import features as features_lib  # pylint: disable=g-import-not-at-top
  encoder = Encoder.from_checkpoint(str(checkpoint))
  calls = []
  embed = encoder.embed_ecg

  def counting_embed(ecg, leads=None, tokens=False, kinds=None):
    calls.append(tuple(kinds))
    return embed(ecg, leads=leads, tokens=tokens, kinds=kinds)

  encoder.embed_ecg = counting_embed
  store = features_lib.FeatureStore(encoder.config.data, str(tmp_path), batch_size=16,
                                    max_records=20, progress=False)
  first = store.features(encoder, "test", kinds=("projected",))
  # The kinds one forward pass yields anyway come along; no wide kind is computed.
  assert set(first) == {"pooled", "projected", "per_lead", "ecg_id"}
  assert set(calls) == {("pooled", "projected", "per_lead")}
  seen = len(calls)
  store.features(encoder, "test", kinds=("pooled",))
  assert len(calls) == seen  # Served from memory.

  # Another store over the same cache: the entry lacks per_layer, so only per_layer is run.
  again = features_lib.FeatureStore(encoder.config.data, str(tmp_path), batch_size=16,
                                    max_records=20, progress=False).features(
                                        encoder, "test", kinds=("per_layer", "pooled"))
  assert set(calls[seen:]) == {("per_layer",)}
  reference = embed(store.split("test").ecg)  # Every kind, in one direct call.
  for kind in ("pooled", "projected", "per_lead", "per_layer"):
    np.testing.assert_allclose(again[kind], reference[kind], atol=1e-5)
  with np.load(next(tmp_path.glob("*/test.npz"))) as cached:
    assert set(cached.files) == {"pooled", "projected", "per_lead", "per_layer", "ecg_id"}
  with pytest.raises(ValueError, match="no 'tokens' features"):
    store.features(encoder, "test", kinds=("tokens",))


def test_bootstrap_interval_covers_point_estimate(evaluated):
  _, results = evaluated
  checked = 0
  for _, run in _single_run_metrics(results):
    for metric in ("macro_auroc", "macro_auprc", "macro_f1"):
      m = run["test"][metric]
      if np.isfinite(m["value"]) and np.isfinite(m.get("ci_low", np.nan)):
        assert m["ci_low"] - 1e-9 <= m["value"] <= m["ci_high"] + 1e-9, (metric, m)
        checked += 1
  assert checked > 20


def test_test_labels_change_no_selected_hyperparameter(evaluated, checkpoint):
  config, results = evaluated
  config = copy.deepcopy(config)
  config.evaluators = ("linear_probe", "finetune")
  config.baselines = ("random_conv",)
  encoders, run_config = evaluate.build_encoders(config)
  data_cfg = evaluate.eval_data_config(run_config, config)
  output_dir = config.output_dir
  store = features.FeatureStore(data_cfg, str(pathlib.Path(output_dir) / "features"),
                                batch_size=config.batch_size, progress=False)
  test = store.split("test")
  flipped = features.SplitData(ecg=test.ecg, labels={t: 1 - y for t, y in test.labels.items()},
                               ecg_id=test.ecg_id, report=test.report, source=test.source)
  store.set_split("test", flipped)
  altered = evaluate.evaluate_encoders(encoders, data_cfg, config, output_dir, store=store)
  compared = 0
  for section in ("linear_probe", "finetune"):
    for encoder, per_task in altered[section].items():
      for task, per_fraction in per_task.items():
        for fraction, entry in per_fraction.items():
          original = results[section][encoder][task][fraction]["runs"]
          for run, before in zip(entry["runs"], original):
            assert run["hparams"] == before["hparams"], (section, encoder, task, fraction)
            assert run["grid"] == before["grid"]
            assert run["val"]["macro_auroc"] == before["val"]["macro_auroc"]
            compared += 1
  assert compared >= 8
  # The flipped labels did reach the test metric.
  a = altered["linear_probe"]["run"]["rhythm"]["1.0"]["runs"][0]["test"]["macro_auroc"]["value"]
  b = results["linear_probe"]["run"]["rhythm"]["1.0"]["runs"][0]["test"]["macro_auroc"]["value"]
  assert a == pytest.approx(1 - b, abs=1e-6)


def test_default_tasks_run_on_the_built_label_files(evaluated):
  """all (71 statements) and diagnostic (44) are default tasks and run on the TFDS labels."""
  config, _ = evaluated
  config = copy.deepcopy(config)
  config.tasks = evaluate_config.get_config().tasks
  config.evaluators = ("linear_probe", "zero_shot")
  config.baselines = ()
  config.fractions = (1.0,)
  config.probe.weight_decays = (0.0,)
  config.probe.max_epochs = 5
  encoders, run_config = evaluate.build_encoders(config)
  data_cfg = evaluate.eval_data_config(run_config, config)
  results = evaluate.evaluate_encoders(encoders, data_cfg, config, config.output_dir)
  tasks = ["superdiagnostic", "subdiagnostic", "form", "rhythm", "all", "diagnostic"]
  assert results["meta"]["tasks"] == tasks
  scoring = results["meta"]["class_scoring"]
  # The synthetic builds use their own (smaller) statements table in the PTB-XL layout.
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  label_names = pipeline.label_names(data_cfg)
  assert {t: scoring[t]["classes"] for t in tasks} == {t: len(label_names[t]) for t in tasks}
  assert len(label_names["all"]) > len(label_names["diagnostic"]) > 0
  for task in tasks:
    c = scoring[task]
    assert len(c["scored"]) + sum(map(len, c["left_out"].values())) == c["classes"]
    assert results["linear_probe"]["run"][task]["1.0"]["runs"][0]["test"]["num_evaluated"] == \
        len(c["scored"])
    for section in ("zero_shot", "prototype", "text_ceiling"):
      assert task in results[section]["run"], (section, task)
  md = markdown.results_markdown(results, "defaults")
  assert f"| all | {len(label_names['all'])} | {len(scoring['all']['scored'])} |" in md
  assert f"| diagnostic | {len(label_names['diagnostic'])} |" in md


def test_merl_splits_match_ids_and_label_columns(evaluated, tmp_path):
  config, _ = evaluated
  config = copy.deepcopy(config)
  encoders, run_config = evaluate.build_encoders(config)
  data_cfg = evaluate.eval_data_config(run_config, config)
  store = features.FeatureStore(data_cfg, str(pathlib.Path(config.output_dir) / "features"),
                                batch_size=config.batch_size, progress=False)
  # MERL-style files: a reordered class list and a few ids we do not hold.
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  names = pipeline.label_names(data_cfg)["superdiagnostic"]
  merl = tmp_path / "labels_merl"
  merl.mkdir()
  reordered = names[::-1]
  for split, stem in (("train", "train"), ("validation", "val"), ("test", "test")):
    data = store.split(split)
    y = data.labels["superdiagnostic"]
    table = pd.DataFrame({"ecg_id": np.r_[data.ecg_id, [99991, 99992]],
                          "patient_id": 0, "strat_fold": 0, "filename_lr": "",
                          "filename_hr": "", "super_class": ""})
    for c, name in enumerate(names):
      table[name] = np.r_[y[:, c], [0, 0]]
    table = table[list(table.columns[:6]) + reordered]
    table.to_csv(merl / f"ptbxl_super_class_{stem}.csv", index=False)
  config.merl_splits = True
  config.merl_dir = str(merl)
  data = tasks_lib.task_data(store, "superdiagnostic", {}, data_cfg, True, str(merl))
  assert data.coverage["test"] == {"listed": len(store.split("test")) + 2,
                                   "matched": len(store.split("test"))}
  # Same records and labels as the TFDS folds, columns in MERL's order.
  kept = [n for n in reordered if n in data.class_names]
  assert data.class_names == kept
  tfds_labels = store.split("test").labels["superdiagnostic"]
  for j, name in enumerate(data.class_names):
    np.testing.assert_array_equal(data.labels["test"][:, j], tfds_labels[:, names.index(name)])
  feats = data.features(encoders[0], "test")
  np.testing.assert_array_equal(feats, store.features(encoders[0], "test")["pooled"])
  with pytest.raises(ValueError, match="no split files for task"):
    tasks_lib.task_data(store, "all", {}, data_cfg, True, str(merl))


def test_config_errors_are_named():
  check = config_validation.validate_evaluate_config
  check(evaluate_config.get_config())
  for key, value, message in (
      ("evaluators", ("linear_probe,bogus",), "unknown evaluator 'bogus'"),
      ("tasks", ("super", "nonsense"), "unknown task 'nonsense'"),
      ("fractions", (0.0,), r"config.fractions=\(0.0,\) must be fractions in \(0, 1\]"),
      ("seeds", (), "config.seeds is empty")):
    config = evaluate_config.get_config()
    config[key] = value
    with pytest.raises(config_validation.ConfigError, match=message):
      check(config)
  config = evaluate_config.get_config()
  config.shift.reduced_leads_mode = "subset"
  with pytest.raises(ValueError, match="reduced_leads_mode='subset' must be one of"):
    check(config)
  with pytest.raises(ValueError, match="checkpoint is required"):
    evaluate.build_encoders(evaluate_config.get_config())
  for bad in ("random_init@3", "random_conv@x", "random_conv@0"):
    config = evaluate_config.get_config()
    config.baselines = ("random_conv", bad)
    with pytest.raises(ValueError, match="unknown baseline"):
      check(config)
  config = evaluate_config.get_config()
  config.probe.solver = "sgd"
  with pytest.raises(ValueError, match="probe.solver='sgd' must be one of"):
    check(config)
  config.probe.solver = "lbfgs"  # ... whose weight decays must all be > 0.
  with pytest.raises(ValueError, match=r"weight_decays=.*values > 0"):
    check(config)
  config.probe.weight_decays = (1e-3, 1.0)
  check(config)


def test_comma_lists_from_the_command_line_are_split():
  """`--config.tasks=super,rhythm` arrives as the one-string tuple ('super,rhythm',)."""
  assert tasks_lib.parse_list(("super,rhythm",)) == ["super", "rhythm"]
  assert tasks_lib.parse_list(("0,1,2",), int) == [0, 1, 2]
  assert tasks_lib.parse_list(("",)) == [] and tasks_lib.parse_list(()) == []
  assert tasks_lib.resolve_tasks(("super,sub", "super")) == ["superdiagnostic",
                                                           "subdiagnostic"]


def test_config_loads_from_another_directory(tmp_path, monkeypatch):
  """No `from configs import ...`: the file loads by path; prompt files resolve beside it."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(evaluate_config.__file__)
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(sys, "path",
                      [p for p in sys.path if p not in ("", ".", str(path.parents[1]))])
  spec = importlib.util.spec_from_file_location("evaluate_config_copy", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("quick")
  assert (pathlib.Path(config.zero_shot.prompt_dir) / "ptbxl_reports.yaml").is_file()
  # Sections reachable at the top level are the evals sections themselves; shared keys are
  # references.
  config.zero_shot.prompt_file = "x.yaml"
  config.tasks = ("rhythm",)
  assert config.evals.zero_shot.prompt_file == "x.yaml"
  assert config.evals.linear_probe.tasks == ("rhythm",) == config.evals.zero_shot.tasks
  assert config.evals.shift.probe.max_epochs == 200  # the quick variant's probe


def test_random_conv_at_a_matched_feature_count():
  config = evaluate_config.get_config()
  config.baselines = ("random_conv", "random_conv@32")
  config_validation.validate_evaluate_config(config)
  run_config = ml_collections.ConfigDict(dict(data=dict(preprocess=dict(num_samples=1000))))
  encoders = evaluate.baseline_encoders(config, run_config, None)
  assert [e.name for e in encoders] == ["random_conv", "random_conv@32"]
  ecg = np.random.default_rng(0).normal(size=(2, 12, 1000)).astype(np.float32)
  # 2 features (PPV, max) per kernel and lead: 32 kernels x 12 leads x 2 = 768 = 12 x 64.
  assert encoders[1].embed_ecg(ecg)["pooled"].shape == (2, 768)
  assert encoders[0].cache_key != encoders[1].cache_key


def test_ablation_variants_share_everything_but_the_objective():
  base = pretrain_config.get_config("test")
  configs = {v: ablations.variant_config(base, v, total_steps=7) for v in ablations.VARIANTS}
  assert configs["merit"].objective.lambda_nce == 1.0
  assert configs["merit"].objective.reconstruction
  assert configs["masked_only"].objective.lambda_nce == 0.0
  assert not configs["contrastive_only"].objective.reconstruction
  for config in configs.values():
    assert config.total_steps == 7 and "linear_probe" not in config.eval.evaluators
    assert config.model.to_dict() == base.model.to_dict()
  assert base.total_steps != 7  # the caller's config is not modified
  with pytest.raises(ValueError, match="unknown ablation variant"):
    ablations.variant_config(base, "bogus")
  weighted = ablations.variant_config(base, "merit@0.3")
  assert weighted.objective.lambda_nce == 0.3 and weighted.objective.reconstruction
  assert ablations.resolve_variant("merit@0.3")[0] == "MERIT (λ=0.3)"
  for bad in ("merit@0", "merit@-1", "merit@x"):
    with pytest.raises(ValueError, match="must be a number > 0"):
      ablations.resolve_variant(bad)


def test_lambda_is_selected_on_validation_only():
  """The λ choice follows validation AUROC below 100 % labels; test numbers never enter."""
  def runs(val, test):
    return {"runs": [{"val": {"macro_auroc": {"value": val}},
                      "test": {"macro_auroc": {"value": test}}}]}

  def encoder(val_low, test_low, val_full):
    return {"subdiagnostic": {"0.01": runs(val_low, test_low), "0.1": runs(val_low, test_low),
                              "1.0": runs(val_full, 0.99)}}

  results = {"linear_probe": {
      "MERIT (λ=1)": encoder(0.70, 0.90, 0.99),     # best test, best 100 % validation
      "MERIT (λ=0.3)": encoder(0.75, 0.60, 0.50),   # best validation below 100 %
      "masked only (λ=0)": encoder(0.95, 0.95, 0.95)}}  # not a MERIT variant
  selection = ablations.select_on_validation(results, ["merit", "merit@0.3", "masked_only"])
  assert selection["selected"] == "MERIT (λ=0.3)"
  assert selection["scores"] == pytest.approx({"MERIT (λ=1)": 0.70, "MERIT (λ=0.3)": 0.75})
  assert "(selected)" in markdown.selection_markdown(selection)
  assert ablations.select_on_validation(results, ["merit", "masked_only"]) is None


def test_ecg_only_sources_are_never_evaluated(monkeypatch):
  """Their zero label vectors mean 'unknown': scoring them as negatives would bias the tables."""
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from merit_jax.evaluators import features as features_lib  # pylint: disable=g-import-not-at-top
  paired = dict(name="ptbxl", config="100hz", data_dir="/a", weight=0.6)
  ecg_only = dict(name="ptbxl", config="100hz_ecg_only", data_dir="/a", weight=0.4,
                  reports=False)
  data_cfg = {"name": None, "config": None, "data_dir": None, "sources": [paired, ecg_only]}
  assert [s.config for s in features_lib.data_sources(data_cfg)] == ["100hz"]
  assert [s.config for s in features_lib.data_sources(data_cfg, False)] == ["100hz"]

  class _Builder:  # what open_builder returns for an ECG-only build
    class info:  # pylint: disable=invalid-name
      metadata = {"labels_known": False}
  monkeypatch.setattr(pipeline, "open_builder", lambda spec: _Builder)
  with pytest.raises(ValueError, match="ECG-only build"):
    features_lib.load_split(data_cfg, "test", sources=[pipeline.SourceSpec("ptbxl", "x", "/a")])


def test_results_json_round_trips_with_number_lists_on_one_line():
  results = {"meta": {"tasks": ["super", "sub"], "empty": {}, "none": []},
             "scores": np.asarray([[0.12345, -1.5], [float("nan"), 2.0]]),
             "runs": [{"seed": np.int64(1), "value": np.float32(0.5)}]}
  text = writer.results_json(results)
  back = json.loads(text)
  assert back["scores"][0] == [0.12345, -1.5] and np.isnan(back["scores"][1][0])
  assert back["runs"] == [{"seed": 1, "value": 0.5}] and back["meta"]["empty"] == {}
  assert '"tasks": ["super", "sub"]' in text and "[0.12345, -1.5]" in text
