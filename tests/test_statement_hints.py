"""Tests for the statement hints of report generation (merit_jax/report_gen/statement_hints.py,
`config.statement_hints`): thresholds against an exhaustive search, out-of-fold hints, prompts of
different lengths decoded and scored as if each were alone, and a trained run whose score and
predict modes write the prompts it was trained with (and, with decoding.write_hints, the hints'
phrases).
"""

import csv

import numpy as np
import pytest

from merit_jax import config_validation
from merit_jax import generate
from merit_jax.report_gen import GenerateError
from merit_jax.report_gen import data as data_lib
from merit_jax.report_gen import decoding
from merit_jax.report_gen import projector as projector_lib
from merit_jax.report_gen import statement_hints
from merit_jax.report_gen import statement_phrases
from tests.test_generate import assert_score_mode_reproduces
from tests.test_generate import generate_config
from tests.test_generate import tiny_generator
from tests.test_generate import real_records_config


def test_best_threshold_matches_an_exhaustive_search():
  from sklearn import metrics  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for _ in range(20):
    y = rng.integers(0, 2, 40)
    scores = np.round(rng.normal(size=40) + y, 1)  # Ties on purpose.
    threshold, f1 = statement_hints._best_threshold(scores, y)  # pylint: disable=protected-access
    exhaustive = max(metrics.f1_score(y, scores >= t, zero_division=0) for t in np.unique(scores))
    assert f1 == pytest.approx(exhaustive)
    assert metrics.f1_score(y, scores >= threshold) == pytest.approx(f1)


def test_fit_hints_a_learnable_statement_and_drops_the_rest():
  rng = np.random.default_rng(0)
  n = 200
  x = rng.normal(size=(n, 5))
  codes = []
  for row in range(n):
    own = ["SR"]
    if x[row, 0] > 0.5:  # AFIB is a linear function of the features: learnable.
      own.append("AFIB")
    if rng.random() < 0.3:  # LVH is noise: no out-of-fold skill.
      own.append("LVH")
    if row < 3:  # LBBB has 3 positives: below min_positives.
      own.append("LBBB")
    codes.append(own)
  classifier, train_hints = statement_hints.fit(
      x, codes, ["SR", "AFIB", "LVH", "LBBB", "RBBB"], folds=5, min_positives=5, min_f1=0.6)
  # SR is on every record (nothing to learn), LBBB too rare, RBBB absent, LVH unlearnable.
  assert classifier["codes"] == ["AFIB"]
  assert classifier["oof_f1"][0] > 0.9
  afib = np.array(["AFIB" in c for c in codes])
  oof = np.array(["AFIB" in h for h in train_hints])
  assert (oof == afib).mean() > 0.95
  # New records: the fitted classifier, by its threshold.
  predicted = statement_hints.predict(classifier, np.array([[2.0, 0, 0, 0, 0],
                                                           [-2.0, 0, 0, 0, 0]]))
  assert predicted == [["AFIB"], []]
  with pytest.raises(GenerateError, match="fitted on 5 channels"):
    statement_hints.predict(classifier, np.zeros((2, 4)))


def test_training_hints_are_out_of_fold():
  # Random features, one positive per 10 records: a classifier fitted on all rows could
  # memorise them, but out-of-fold predictions cannot, so the code's out-of-fold F1 is low.
  rng = np.random.default_rng(1)
  x = rng.normal(size=(100, 40))
  codes = [["AFIB"] if i % 10 == 0 else [] for i in range(100)]
  classifier, _ = statement_hints.fit(x, codes, ["AFIB"], min_positives=5, min_f1=0.0, l2=1e-3)
  in_sample = (x @ classifier["coef"].T + classifier["intercept"])[:, 0]
  y = np.array([bool(c) for c in codes])
  assert in_sample[y].min() > in_sample[~y].max()  # Memorised in sample ...
  assert classifier["oof_f1"][0] < 0.6  # ... but not out of fold.


def test_label_hints_keep_the_hinted_statements_in_order():
  classifier = {"codes": ["NORM", "SR", "AFIB"]}
  assert statement_hints.label_hints(classifier, [["SR", "NORM", "LVH"], ["LVH"], []]) == [
      ["NORM", "SR"], [], []]


def test_prompt_text_and_config_checks():
  assert statement_hints.prompt_text(["SR", "NORM"], "ECG:") == "Statements: SR NORM.\nECG:"
  assert statement_hints.prompt_text([], "ECG:") == "Statements: none.\nECG:"
  cfg = generate_config.get_config("test")
  cfg.statement_hints.folds = 1
  cfg.statement_hints.min_f1 = 1.5
  cfg.statement_hints.train_on = "oracle"
  with pytest.raises(ValueError, match=r"folds=1 must be an integer >= 2[\s\S]*min_f1=1.5"
                                       r"[\s\S]*train_on='oracle'"):
    config_validation.validate_generate_config(cfg)
  cfg = generate_config.get_config("test")
  cfg.statement_hints.enabled, cfg.projector_kind = True, "resampler"
  with pytest.raises(ValueError, match="needs projector_kind='mlp'"):
    config_validation.validate_generate_config(cfg)


@pytest.fixture(scope="module")
def tiny():
  return tiny_generator()


def test_left_padded_prompts_score_and_decode_as_if_alone(tiny):
  """Rows with prompts of different lengths in one batch: each row's teacher-forced loss and
  greedy report equal those of the row alone, unpadded."""
  cfg, gen, trainable = tiny
  tok = gen.tokenizer
  prompts = [tok.encode(t, add_bos=True) for t in ("Statements: SR.\nECG:", "ECG:",
                                                   "Statements: none at all here.\nECG:")]
  reports = ["sinus rhythm", "afib", "lbbb and more"]
  features = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
  batch = data_lib.training_sequences(tok, prompts, reports, max_report_tokens=8)
  assert not batch[1][1, :len(prompts[0]) - len(prompts[1])].any()  # Left pads: not input.
  for row in range(3):
    alone = data_lib.training_sequences(tok, prompts[row], reports[row:row + 1], 8)
    loss_alone, _ = gen.loss(trainable, gen.llm_params, features[row:row + 1], *alone)
    loss_batch, _ = gen.loss(trainable, gen.llm_params, features[row:row + 1],
                             *(a[row:row + 1] for a in batch))
    np.testing.assert_allclose(float(loss_batch), float(loss_alone), rtol=1e-5)
  cfg = generate_config.get_config("test")
  cfg.eval.batch_size = 4
  together = decoding.generate_reports(cfg, gen, trainable, features, progress=False,
                                       prompts=prompts)
  for row in range(3):
    assert decoding.generate_reports(cfg, gen, trainable, features[row:row + 1], progress=False,
                                     prompts=prompts[row:row + 1]) == together[row:row + 1]
  with pytest.raises(GenerateError, match="2 prompts for 3 records"):
    data_lib.training_sequences(tok, prompts[:2], reports, 8)


def test_trained_run_with_hints_scores_and_predicts_with_its_prompts(ptbxl_dir, tmp_path_factory):
  """End to end on real PTB-XL records: the classifier is saved beside the projector, score
  mode reproduces the run's loss and reports, and without the file a clear error."""
  tmp = tmp_path_factory.mktemp("statement_hints")
  cfg = real_records_config(tmp, ptbxl_dir)
  cfg.standardize_features = True
  cfg.statement_hints.enabled = True
  cfg.statement_hints.min_f1 = 0.0
  summary = generate.run_train(cfg, str(tmp / "run"))
  classifier = statement_hints.load(str(tmp / "run"))
  assert classifier["codes"]  # Sinus rhythm at least has positives and negatives here.
  assert 0 < summary["hint_f1"]["micro_f1"] <= 1  # The hints alone, scored on the eval split.

  score_cfg = assert_score_mode_reproduces(cfg, tmp / "run", tmp / "score", summary)
  # The prompts matter: scored with the run's one plain prompt instead, the loss changes.
  _, _, trainable, meta = projector_lib.load_projector(str(tmp / "run"))
  test = np.load(tmp / "score" / "features_test.npz", allow_pickle=True)
  split = {"features": data_lib.standardize_features(test["features"], meta["feature_stats"]),
           "reports": [str(r) for r in test["reports"]]}
  gen = projector_lib.build_generator(cfg)
  plain = generate.training.eval_loss(cfg, gen, trainable, split)["loss"]
  assert abs(plain - summary["eval_loss"]) > 1e-4

  # Written hints (decoding.write_hints): with no tokens after them, a record's report is its
  # hints' phrases from the table saved beside the projector; a record without one decodes
  # as before.
  table = statement_phrases.load(str(tmp / "run"))
  assert table is not None and "SR" in table["phrases"]
  score_cfg.decoding.write_hints, score_cfg.decoding.tokens_after_hints = True, 0
  generate.run_score(score_cfg, str(tmp / "written"))
  with open(tmp / "written" / "samples.csv", newline="", encoding="utf-8") as f:
    written = [row["generated"] for row in csv.DictReader(f)]
  hints = statement_hints.predict(classifier, split["features"])
  for text, hinted, free in zip(written, hints, summary["generated"]):
    assert text == (statement_phrases.render(table, hinted) or free)
  assert any(statement_phrases.render(table, h) for h in hints)
  # Predict mode writes them too, for new ECGs.
  inputs = tmp / "ecgs"
  inputs.mkdir()
  np.save(inputs / "four.npy",
          np.random.default_rng(3).standard_normal((4, 1000, 12)).astype(np.float32))
  predict_cfg = generate_config.get_config("test")
  predict_cfg.mode, predict_cfg.projector = "predict", str(tmp / "run")
  predict_cfg.input, predict_cfg.output = str(inputs), str(tmp / "reports.csv")
  predict_cfg.decoding.write_hints, predict_cfg.decoding.tokens_after_hints = True, 0
  with open(generate.run_predict(predict_cfg), newline="", encoding="utf-8") as f:
    predicted = [row["report"] for row in csv.DictReader(f)]
  _, records = data_lib.read_inputs(str(inputs), None)
  _, source, _, _ = projector_lib.load_projector(str(tmp / "run"))
  new_hints = statement_hints.predict(classifier, data_lib.standardize_features(
      data_lib.record_features(source, records, "pooled", 8), meta["feature_stats"]))
  assert len(predicted) == 4 and all(predicted)
  assert any(statement_phrases.render(table, h) for h in new_hints)
  for text, hinted in zip(predicted, new_hints):
    assert statement_phrases.render(table, hinted) in ("", text)
  # A run trained before the table was saved: it is fitted again on the training reports.
  (tmp / "run" / statement_phrases.PHRASES_FILE).unlink()
  generate.run_score(score_cfg, str(tmp / "refit"))
  with open(tmp / "refit" / "samples.csv", newline="", encoding="utf-8") as f:
    assert [row["generated"] for row in csv.DictReader(f)] == written
  score_cfg.decoding.write_hints = False
  (tmp / "run" / statement_hints.HINTS_FILE).unlink()
  with pytest.raises(GenerateError, match="statement_hints.npz is missing"):
    generate.run_score(score_cfg, str(tmp / "score2"))


def test_hint_f1_counts_like_the_report_scorer():
  from merit_jax.metrics import clinical  # pylint: disable=g-import-not-at-top
  hints = [["SR", "NORM"], ["AFIB"], [], ["SR", "LVH"]]
  labels = [["SR", "NORM"], ["SR"], ["SR"], ["SR", "IMI"]]
  # The same statements written as text and scored by the report scorer.
  texts = ["sinus rhythm. normal ecg", "atrial fibrillation", "",
           "sinus rhythm. left ventricular hypertrophy"]
  assert [clinical.ScpMatcher()(t) for t in texts] == [set(h) for h in hints]
  expected = clinical.clinical_f1(texts, labels)
  got = statement_hints.hint_f1(hints, labels)
  assert got["micro_f1"] == pytest.approx(expected["micro_f1"])  # tp 3, fp 2, fn 3: 6 / 11.
  assert got["micro_f1"] == pytest.approx(6 / 11)
  assert got["macro_f1"] == pytest.approx(expected["macro_f1"])


def test_saved_classifier_gives_the_hinted_statements(tiny, tmp_path):
  """`_saved_hints` (score and predict mode) gives the classifier's own prediction for new
  features, and the prompts that write them."""
  _, gen, _ = tiny
  classifier = {"codes": ["AFIB"], "coef": np.array([[1.0, 0, 0, 0, 0, 0]]),
                "intercept": np.zeros(1), "threshold": np.zeros(1), "oof_f1": np.ones(1)}
  statement_hints.save(str(tmp_path), classifier)
  run_cfg = generate_config.get_config("test")
  run_cfg.statement_hints.enabled = True
  features = np.array([[1.0, 0, 0, 0, 0, 0], [-1.0, 0, 0, 0, 0, 0]])
  hints = generate._saved_hints(run_cfg, str(tmp_path), features)  # pylint: disable=protected-access
  assert hints == [["AFIB"], []]
  prompts = statement_hints.prompt_ids(gen.tokenizer, hints, run_cfg.prompt)
  assert [gen.tokenizer.decode(p) for p in prompts] == [
      "Statements: AFIB.\nECG:", "Statements: none.\nECG:"]
  run_cfg.statement_hints.enabled = False
  assert generate._saved_hints(  # pylint: disable=protected-access
      run_cfg, str(tmp_path), features) is None
