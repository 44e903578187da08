"""Tests for choosing one report among several decodes (merit_jax/report_gen/reranking.py,
`config.decoding.rerank_samples`): expected statement F1 against hand-computed values, the
neighbour statement sets against scikit-learn's neighbour search, the wiring in
`decoding.generate_reports`, and score mode with the saved bank or one rebuilt from the
training split.
"""

import csv

import numpy as np
import pytest

from merit_jax import config_validation
from merit_jax import generate
from merit_jax.metrics import clinical
from merit_jax.report_gen import GenerateError
from merit_jax.report_gen import decoding
from merit_jax.report_gen import neighbours
from merit_jax.report_gen import projector as projector_lib
from merit_jax.report_gen import reranking
from tests.test_generate import generate_config
from tests.test_generate import real_records_config

SR, AFIB, CLBBB = frozenset({"SR"}), frozenset({"AFIB"}), frozenset({"CLBBB"})


def test_expected_f1_by_hand():
  # Candidates {SR}, {AFIB}, {SR, CLBBB} against neighbours {AFIB}, {AFIB}, {SR}:
  # SR: (0 + 0 + 1) / 3; AFIB: (1 + 1 + 0) / 3; SR+CLBBB: (0 + 0 + 2·1/(2+1)) / 3.
  utility = reranking.expected_statement_f1([SR, AFIB, SR | CLBBB], [AFIB, AFIB, SR])
  np.testing.assert_allclose(utility, [1 / 3, 2 / 3, 2 / 9])
  assert reranking.statement_f1(frozenset(), frozenset()) == 1.0
  assert reranking.statement_f1(SR, frozenset()) == 0.0
  np.testing.assert_array_equal(reranking.expected_statement_f1([SR, AFIB], []), [0, 0])


def test_pick_follows_the_neighbours_and_keeps_the_first_on_ties():
  matcher = clinical.ScpMatcher()
  texts = ["sinus rhythm", "atrial fibrillation", "sinus rhythm. left bundle branch block"]
  assert [frozenset(matcher(t)) for t in texts] == [SR, AFIB, SR | CLBBB]
  picked = reranking.pick_reports(
      [texts, texts, texts, texts],
      [[AFIB, AFIB, SR], [SR | CLBBB], [], [frozenset({"PVC"})]])
  # AFIB wins the first record, the bundle-branch block the second; without neighbours, or
  # when every candidate scores 0, the first (the `method` decode) is kept.
  assert picked == [texts[1], texts[2], texts[0], texts[0]]
  with pytest.raises(ValueError, match="2 records of candidates but 1"):
    reranking.pick_reports([texts, texts], [[SR]])


def test_neighbour_statement_sets_match_sklearn():
  from sklearn import neighbors  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  pool = ("sinus rhythm. normal ecg", "atrial fibrillation", "sinus bradycardia",
          "sinus rhythm. left bundle branch block", "")
  train = rng.normal(size=(40, 5))
  reports = [pool[i] for i in rng.integers(0, len(pool), 40)]
  query = np.concatenate([rng.normal(size=(6, 5)), np.zeros((1, 5))])
  # Extra channels after the bank's (the statement hints) are not part of the search.
  query = np.concatenate([query, rng.normal(size=(7, 3))], axis=1)
  bank = neighbours.build_bank(train, reports)
  got = neighbours.neighbour_statement_sets(bank, query, 4)
  matcher = clinical.ScpMatcher()
  search = neighbors.NearestNeighbors(n_neighbors=4, metric="cosine",
                                      algorithm="brute").fit(train)
  _, idx = search.kneighbors(query[:6, :5])
  for row, found in enumerate(idx):
    expected = sorted(sorted(matcher(reports[j])) for j in found)
    assert sorted(sorted(s) for s in got[row]) == expected
  assert got[6] == []  # No ECG, no neighbours.
  with pytest.raises(GenerateError, match="rerank_neighbours=41 must be in"):
    neighbours.neighbour_statement_sets(bank, query, 41)


def test_generate_reports_picks_among_the_decodes_it_drew():
  config = generate_config.get_config("test")
  config.decoding.update(temperature=2.0, top_p=1.0)  # Diverse samples from the tiny model.
  gen = projector_lib.build_generator(config)
  trainable = projector_lib.init_trainable(gen, (8,), 0, 0)
  rng = np.random.default_rng(0)
  features = rng.normal(size=(5, 8)).astype(np.float32)
  bank = neighbours.build_bank(rng.normal(size=(12, 8)), ["sinus rhythm"] * 6
                               + ["atrial fibrillation"] * 6)
  greedy = decoding.generate_reports(config, gen, trainable, features, progress=False)
  # The candidates through the public API: the samples are nucleus decodes at seed + 1, + 2.
  samples = []
  for offset in (1, 2):
    sample_cfg = generate_config.get_config("test")
    sample_cfg.decoding.update(method="nucleus", temperature=2.0, top_p=1.0)
    sample_cfg.seed = config.seed + offset
    samples.append(decoding.generate_reports(sample_cfg, gen, trainable, features,
                                             progress=False))
  assert samples[0] != samples[1]
  config.decoding.update(rerank_samples=2, rerank_neighbours=3)
  with pytest.raises(GenerateError, match="rerank_samples needs the training reports"):
    decoding.generate_reports(config, gen, trainable, features, progress=False)
  picked = decoding.generate_reports(config, gen, trainable, features, progress=False,
                                     bank=bank)
  candidates = [list(c) for c in zip(greedy, *samples)]
  assert picked == reranking.pick_reports(
      candidates, neighbours.neighbour_statement_sets(bank, features, 3))
  assert all(p in c for p, c in zip(picked, candidates))


def test_bad_rerank_settings_are_refused():
  cfg = generate_config.get_config("test")
  cfg.decoding.rerank_samples = -1
  with pytest.raises(ValueError, match=r"decoding.rerank_samples=-1 must be an integer >= 0"):
    config_validation.validate_generate_config(cfg)
  cfg.decoding.rerank_samples, cfg.decoding.rerank_neighbours = 2, 0
  with pytest.raises(ValueError, match=r"decoding.rerank_neighbours=0 must be an integer >= 1"):
    config_validation.validate_generate_config(cfg)
  cfg.decoding.rerank_neighbours, cfg.projector_kind = 3, "resampler"
  with pytest.raises(ValueError, match="rerank_samples=2 needs projector_kind='mlp'"):
    config_validation.validate_generate_config(cfg)


def test_score_mode_reranks_with_the_saved_or_a_rebuilt_bank(ptbxl_dir, tmp_path_factory):
  """On real PTB-XL reports: a trained run saves its bank; score mode reranks with it, and
  with the bank deleted (a projector of an older version) rebuilds the same one from the
  training split; predict mode without it is refused clearly."""
  tmp = tmp_path_factory.mktemp("rerank")
  cfg = real_records_config(tmp, ptbxl_dir)
  cfg.eval.max_records = 8
  generate.run_train(cfg, str(tmp / "run"), evaluate_after=False)
  assert (tmp / "run" / neighbours.BANK_FILE).is_file()

  score_cfg = generate_config.get_config("test")
  score_cfg.data = cfg.data
  score_cfg.eval.max_records = 8
  score_cfg.mode, score_cfg.projector = "score", str(tmp / "run")
  score_cfg.decoding.update(rerank_samples=1, rerank_neighbours=5)

  def reports(folder):
    with open(tmp / folder / "samples.csv", newline="", encoding="utf-8") as f:
      return [row["generated"] for row in csv.DictReader(f)]

  generate.run_score(score_cfg, str(tmp / "with_bank"))
  (tmp / "run" / neighbours.BANK_FILE).unlink()
  generate.run_score(score_cfg, str(tmp / "rebuilt"))
  assert reports("rebuilt") == reports("with_bank") and len(reports("rebuilt")) == 8

  inputs = tmp / "ecgs"
  inputs.mkdir()
  np.save(inputs / "one.npy", np.random.default_rng(3).standard_normal((1000, 12)))
  predict_cfg = generate_config.get_config("test")
  predict_cfg.decoding.update(rerank_samples=1)
  predict_cfg.update(mode="predict", projector=str(tmp / "run"), input=str(inputs),
                     output=str(tmp / "reports.csv"))
  with pytest.raises(GenerateError, match="neighbour_bank.npz is missing"):
    generate.run_predict(predict_cfg)
