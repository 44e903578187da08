"""Tests of cross-dataset transfer (merit_jax/evaluators/transfer.py and its evaluate wiring).

Source: synthetic_ecg (240 records, PTB-XL SCP codes in its `all` task). Targets: tiny
PhysioNet/CinC 2021 builds (csn, cpsc2018) written with the WFDB/.mat fixture writer of
tests/test_physionet2021.py. Encoder: random convolutions (no training, fast).
"""

import json

import numpy as np
import pytest

from configs import evaluate as evaluate_config
from merit_jax import config_validation
from merit_jax import evaluate
from merit_jax.encoder import Encoder
from merit_jax.data import build
from merit_jax.data import pipeline
from merit_jax.data import preprocess
from merit_jax.data import snomed_maps
from merit_jax.evaluators import features
from merit_jax.metrics import classification as metrics
from merit_jax.evaluators import transfer
from merit_jax.reporting import markdown
from merit_jax.reporting import writer
from tests.test_physionet2021 import write_record

MIN_POSITIVES = 2
PROBE = dict(grid={"weight_decay": [0.0, 1e-2], "learning_rate": [1e-2]}, max_epochs=20,
             eval_every=5, patience=2)
# Chapman-Shaoxing-like records: Dx combinations giving every mapped class positives and
# negatives; 284470004 (PAC) has no twin in the synthetic statements, 6374002 (BBB) none at all.
CSN_DX = ["426783006", "164889003", "426177001", "427084000", "426783006,59118001",
          "164889003,59931005", "426783006,270492004", "426177001,445118002",
          "426783006,164917005", "427084000,59931005", "426783006,284470004", "6374002,426783006"]
CPSC_DX = ["426783006", "164889003", "164889003,59118001", "426783006,270492004",
           "426783006", "164884008,429622005"]


def _spec(dx):
  return (10, dx, "60", "Female", 1000, 0, None, "ok")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """A FeatureStore over synthetic_ecg/n240_s0 at 100 Hz, 10 s, z-scored."""
  root = tmp_path_factory.mktemp("transfer_src")
  build.build("synthetic_ecg", manual_dir=str(root / "manual"), data_dir=str(root / "tfds"),
              config="n240_s0", tokenizer_vocab_size=None)
  # Every data key at its configs/pretrain.py default, as in a run's saved config.
  from configs import pretrain as pretrain_config  # pylint: disable=g-import-not-at-top
  data_cfg = pretrain_config.get_config("test").data
  data_cfg.update(dict(name="synthetic_ecg", config="n240_s0", data_dir=str(root / "tfds"),
                       max_text_len=16))
  data_cfg.preprocess.update(dict(sample_rate=100, num_samples=1000, bandpass=None,
                                  normalize="zscore"))
  return features.FeatureStore(data_cfg, str(root / "features"), batch_size=32, progress=False)


@pytest.fixture(scope="module")
def targets_dir(tmp_path_factory):
  """A TFDS data_dir holding physionet2021/csn (24 records) and physionet2021/cpsc2018 (6)."""
  root = tmp_path_factory.mktemp("transfer_tgt")
  for i, dx in enumerate(CSN_DX * 2):
    write_record(str(root / "manual" / "training" / "chapman_shaoxing" / "g1"),
                 f"JS{i + 1:05d}", _spec(dx))
  for i, dx in enumerate(CPSC_DX):
    write_record(str(root / "manual" / "training" / "cpsc_2018" / "g1"), f"A{i + 1:04d}",
                 _spec(dx))
  for config in ("csn", "cpsc2018"):
    build.build("physionet2021", str(root / "manual"), str(root / "tfds"), config=config,
                tokenizer_vocab_size=None)
  return root / "tfds"


@pytest.fixture(scope="module")
def encoder():
  return Encoder.random_conv(num_kernels=20, seed=0, num_samples=1000)


@pytest.fixture(scope="module")
def csn(source, targets_dir, tmp_path_factory):
  target = transfer.Target("physionet2021", "csn", str(targets_dir))
  return transfer.prepare_transfer(source, target, min_positives=MIN_POSITIVES,
                                   cache_dir=str(tmp_path_factory.mktemp("tgt_features")))


def test_shared_class_mapping(csn, source):
  assert csn.target_task == "challenge"  # csn stores only the Challenge's classes
  scp = pipeline.label_names(source.data_cfg)["all"]
  train = dict(zip(scp, source.split("train").labels["all"].sum(0)))
  val = dict(zip(scp, source.split("validation").labels["all"].sum(0)))
  # Expected from the maps and PTB-XL train/validation counts alone.
  twins = snomed_maps.PTBXL_EQUIVALENTS["challenge"]
  expected = [twins[c] for c in snomed_maps.TASKS["challenge"]
              if twins.get(c) in train and min(train[twins[c]], val[twins[c]]) >= MIN_POSITIVES]
  assert csn.class_names == expected
  mapping = {c["ptbxl"]: c["target"] for c in csn.classes}
  assert mapping["AFIB"] == ["AF"] and mapping["SR"] == ["NSR"]
  assert mapping["CRBBB"] == ["RBBB"] and mapping["LAFB"] == ["LAnFB"]
  for c in csn.classes:
    assert c["positives"] == {"train": train[c["ptbxl"]], "validation": val[c["ptbxl"]]}
  # synthetic_ecg/n240_s0 has no sinus arrhythmia in validation: the twin is dropped.
  dropped = {d["ptbxl"]: d for d in csn.dropped}
  assert "SARRH" in dropped and "validation positives" in dropped["SARRH"]["reason"]
  unmatched = {u["target"]: u["ptbxl"] for u in csn.unmatched}
  assert unmatched["PAC"] == "PAC" and unmatched["BBB"] is None  # no PAC statement here
  # Target columns are the builder's class columns, in the mapping's order.
  y = csn.target_labels()
  raw = csn.target_store.split("test").labels["challenge"]
  challenge = list(snomed_maps.TASKS["challenge"])
  for k, c in enumerate(csn.classes):
    np.testing.assert_array_equal(y[:, k], raw[:, challenge.index(c["target"][0])])
  assert y.shape == (len(CSN_DX) * 2, len(expected))


def test_cpsc2018_uses_its_own_classes_unless_told(source, targets_dir):
  task = transfer.prepare_transfer(source, transfer.Target("physionet2021", "cpsc2018",
                                                           str(targets_dir)),
                                   min_positives=MIN_POSITIVES)
  assert task.target_task == "cpsc"
  assert {c["ptbxl"]: c["target"] for c in task.classes}["NORM"] == ["NSR"]
  assert task.target_splits == ["test"]
  named = transfer.parse_targets("physionet2021/cpsc2018:challenge", str(targets_dir))[0]
  task = transfer.prepare_transfer(source, named, min_positives=MIN_POSITIVES)
  assert task.target_task == "challenge"
  assert {c["ptbxl"]: c["target"] for c in task.classes}["SR"] == ["NSR"]


def test_target_preprocessed_like_the_source(csn, source):
  data = csn.target_store.split("test")
  assert data.ecg.shape == (len(CSN_DX) * 2, 12, 1000)  # 500 Hz, 10 s -> 100 Hz, 1000
  raw = transfer.open_target(csn.target).as_data_source("test")[0]
  np.testing.assert_allclose(
      data.ecg[0], preprocess.preprocess(raw["signal"], int(raw["sample_rate"]),
                                         source.data_cfg.preprocess), atol=1e-5)


def test_run_transfer_scores_the_target_with_the_source_head(csn, encoder):
  result = transfer.run_transfer(encoder, csn, n_bootstrap=50, **PROBE)
  names = csn.class_names
  json.dumps(result, allow_nan=True)  # JSON-ready
  assert result["target"] == "physionet2021/csn" and result["target_task"] == "challenge"
  assert result["records"]["target"] == len(CSN_DX) * 2
  assert result["records"]["train"] > result["records"]["validation"] > 0
  assert [c["ptbxl"] for c in result["classes"]] == names
  for part in ("target_metrics", "in_domain"):
    m = result[part]
    assert set(m["per_class_auroc"]) == set(names)
    for metric in ("macro_auroc", "macro_auprc", "macro_f1"):
      v = m[metric]
      assert 0 <= v["value"] <= 1 and v["ci_low"] - 1e-9 <= v["value"] <= v["ci_high"] + 1e-9
  # The same probe, refitted independently, predicts the target's per-class AUROC.
  probe = transfer.fit_source_probe(encoder, csn, n_bootstrap=0, **PROBE)
  assert probe.hparams == result["hparams"]
  expected = metrics.auroc(csn.target_labels(), probe.predict(csn.target_features(encoder)))
  got = np.array([result["target_metrics"]["per_class_auroc"][n] for n in names])
  np.testing.assert_allclose(got, expected, equal_nan=True)
  gap = result["gap"]
  common = gap["classes"]
  assert common and set(common) <= set(names)
  t = np.mean([result["target_metrics"]["per_class_auroc"][n] for n in common])
  d = np.mean([result["in_domain"]["per_class_auroc"][n] for n in common])
  assert gap["delta"] == pytest.approx(t - d)
  # Classes without target positives are listed, not averaged.
  positives = {c["ptbxl"]: c["positives"]["target"] for c in result["classes"]}
  assert set(result["target_metrics"]["excluded_classes"]) == {
      n for n, p in positives.items() if p in (0, result["records"]["target"])}


def test_target_labels_change_no_choice(csn, encoder):
  before = transfer.run_transfer(encoder, csn, n_bootstrap=0, **PROBE)
  store = csn.target_store
  original = store.split("test")
  flipped = features.SplitData(ecg=original.ecg,
                               labels={t: 1 - y for t, y in original.labels.items()},
                               ecg_id=original.ecg_id, report=original.report,
                               source=original.source)
  store.set_split("test", flipped)
  try:
    after = transfer.run_transfer(encoder, csn, n_bootstrap=0, **PROBE)
  finally:
    store.set_split("test", original)
  for key in ("hparams", "grid", "val", "in_domain", "dropped", "unmatched"):
    assert after[key] == before[key], key
  assert [c["ptbxl"] for c in after["classes"]] == [c["ptbxl"] for c in before["classes"]]
  # The flipped labels did reach the target metrics: every AUROC becomes 1 - AUROC.
  for name, a in before["target_metrics"]["per_class_auroc"].items():
    b = after["target_metrics"]["per_class_auroc"][name]
    if np.isfinite(a):
      assert b == pytest.approx(1 - a, abs=1e-9)


def test_missing_target_and_no_shared_class(source, targets_dir):
  missing = transfer.Target("physionet2021", "georgia", str(targets_dir))
  with pytest.raises(transfer.TargetNotBuilt) as e:
    transfer.prepare_transfer(source, missing)
  message = str(e.value)
  assert "physionet2021/georgia is not built" in message and str(targets_dir) in message
  assert "python -m merit_jax.data.build physionet2021 --config=georgia" in message
  assert isinstance(e.value, FileNotFoundError)
  with pytest.raises(transfer.NoSharedClasses, match=r"PTB-XL labels: 1AVB, AFIB.*"
                     r"Target classes \(-> PTB-XL twin\): AF->AFIB.*too few"):
    transfer.prepare_transfer(source, transfer.Target("physionet2021", "csn", str(targets_dir)),
                              min_positives=10_000)
  with pytest.raises(transfer.NoSharedClasses, match="PTB-XL labels: NORM, SR.*X->-"):
    transfer.shared_classes(["NORM", "SR"], np.ones((4, 2)), np.ones((2, 2)), ["X"], {}, 1)
  with pytest.raises(ValueError, match="expected name/config"):
    transfer.parse_targets("physionet2021/csn/extra", ".")
  with pytest.raises(ValueError, match="no task 'bogus'"):
    transfer.choose_task({"challenge": []}, "bogus")


def _transfer_config(targets_dir, targets):
  config = evaluate_config.get_config("quick")
  config.evaluators = ("transfer",)
  config.tasks = ("super",)
  config.n_bootstrap = 20
  config.progress = False
  config.probe.weight_decays = (0.0, 1e-2)
  config.probe.max_epochs = 20
  config.probe.eval_every = 5
  config.probe.patience = 2
  config.transfer.targets = targets
  config.transfer.data_dir = str(targets_dir)
  config.transfer.min_positives = MIN_POSITIVES
  return config


def test_evaluate_runs_built_targets_and_skips_absent_ones(source, targets_dir, encoder,
                                                          tmp_path, capsys):
  # As `--config.transfer.targets=physionet2021/csn,physionet2021/georgia` gives it.
  config = _transfer_config(targets_dir, ("physionet2021/csn,physionet2021/georgia",))
  results = evaluate.evaluate_encoders([encoder], source.data_cfg, config, str(tmp_path),
                                       store=source)
  assert "skipping physionet2021/georgia" in capsys.readouterr().out
  assert list(results["transfer"]["random_conv"]) == ["physionet2021/csn"]
  assert results["meta"]["transfer"]["targets"] == ["physionet2021/csn",
                                                    "physionet2021/georgia"]
  assert "--config=georgia" in results["meta"]["transfer"]["skipped"]["physionet2021/georgia"]
  r = results["transfer"]["random_conv"]["physionet2021/csn"]
  assert r["records"]["target"] == len(CSN_DX) * 2
  # The target's features are cached beside the source's.
  assert list((tmp_path / "features" / "transfer").glob("physionet2021-csn/*/test.npz"))
  md = markdown.results_markdown(results, "t")
  assert "## Cross-dataset transfer" in md
  assert "| random_conv | physionet2021/csn (challenge) | 24 |" in md
  assert "AFIB=AF" in md and "Not built, skipped: physionet2021/georgia" in md
  paths = writer.write_results(results, str(tmp_path / "results"), "t")
  assert json.loads(open(paths["json"]).read())["transfer"]["random_conv"]


def test_transfer_config_is_checked():
  config = evaluate_config.get_config()
  assert "transfer" in config.evaluators
  config_validation.validate_evaluate_config(config)
  config.transfer.targets = ()
  with pytest.raises(ValueError, match="config.transfer.targets is empty"):
    config_validation.validate_evaluate_config(config)
