"""Tests for the nearest-neighbour statement hints of report generation
(merit_jax/report_gen/neighbours.py, `config.neighbour_statements`): the shares against
scikit-learn's neighbour search, leave-one-out on the training rows, no hints without an ECG,
and a trained run whose score mode recomputes the same hints from the saved bank.
"""

import numpy as np
import pytest

from merit_jax import config_validation
from merit_jax import generate
from merit_jax.metrics import clinical
from merit_jax.report_gen import GenerateError
from merit_jax.report_gen import neighbours
from merit_jax.report_gen import projector as projector_lib
from tests.test_generate import assert_score_mode_reproduces
from tests.test_generate import generate_config
from tests.test_generate import real_records_config

_REPORTS = ("sinus rhythm. normal ecg", "atrial fibrillation", "sinus rhythm. left bundle "
            "branch block", "sinus tachycardia", "", "sinus bradycardia. left axis deviation")


def _bank_data(n=60, d=7, seed=0):
  rng = np.random.default_rng(seed)
  features = rng.normal(size=(n, d))
  reports = [_REPORTS[i] for i in rng.integers(0, len(_REPORTS), n)]
  return features, reports


def _sklearn_shares(train, reports, query, k, leave_one_out):
  """The same shares from sklearn's cosine neighbour search and the matcher, row by row."""
  from sklearn import neighbors  # pylint: disable=g-import-not-at-top
  matcher = clinical.ScpMatcher()
  codes = list(matcher.codes)
  search = neighbors.NearestNeighbors(n_neighbors=k + int(leave_one_out), metric="cosine",
                                      algorithm="brute").fit(train)
  _, idx = search.kneighbors(query)
  out = np.zeros((len(query), len(codes)))
  for row, found in enumerate(idx):
    found = [j for j in found if not (leave_one_out and j == row)][:k]
    for j in found:
      for code in matcher(reports[j]):
        out[row, codes.index(code)] += 1.0 / k
  return out


@pytest.mark.parametrize("k", [1, 5])
def test_shares_match_sklearn_neighbours(k):
  train, reports = _bank_data()
  query = np.random.default_rng(1).normal(size=(9, train.shape[1]))
  bank = neighbours.build_bank(train, reports)
  np.testing.assert_allclose(neighbours.statement_shares(bank, query, k),
                             _sklearn_shares(train, reports, query, k, False), atol=1e-6)
  # Leave-one-out on the training rows: a record is never its own neighbour.
  np.testing.assert_allclose(neighbours.statement_shares(bank, train, k, leave_one_out=True),
                             _sklearn_shares(train, reports, train, k, True), atol=1e-6)


def test_a_unique_report_is_not_its_own_hint():
  # Two tight clusters; the one AFIB record sits among sinus-rhythm records, so left out of
  # its own neighbourhood it gets no AFIB hint, while a copy of it as a new record does.
  rng = np.random.default_rng(0)
  train = np.concatenate([rng.normal(0, 0.01, (10, 3)) + [1, 0, 0],
                          rng.normal(0, 0.01, (10, 3)) + [0, 1, 0]])
  reports = ["atrial fibrillation"] + ["sinus rhythm"] * 19
  bank = neighbours.build_bank(train, reports)
  afib = bank["codes"].index("AFIB")
  assert neighbours.statement_shares(bank, train, 3, leave_one_out=True)[0, afib] == 0
  assert neighbours.statement_shares(bank, train[:1], 3)[0, afib] == pytest.approx(1 / 3)


def test_no_ecg_rows_get_no_hints_and_widths_add_up():
  train, reports = _bank_data()
  bank = neighbours.build_bank(train, reports)
  shares = neighbours.statement_shares(bank, np.zeros((4, train.shape[1])), 3)
  assert shares.shape == (4, len(clinical.ScpMatcher().codes)) and not shares.any()
  hinted = neighbours.with_hints(bank, train[:4], 3)
  assert hinted.shape == (4, train.shape[1] + shares.shape[1]) and hinted.dtype == np.float32
  np.testing.assert_array_equal(hinted[:, train.shape[1]:],
                                neighbours.statement_shares(bank, train[:4], 3))


def test_bad_k_and_shapes_are_refused():
  train, reports = _bank_data(n=6)
  bank = neighbours.build_bank(train, reports)
  with pytest.raises(GenerateError, match="neighbour_statements=6 must be in"):
    neighbours.statement_shares(bank, train, 6, leave_one_out=True)
  with pytest.raises(GenerateError, match=r"pooled \(N, D\)"):
    neighbours.build_bank(np.zeros((6, 2, 3)), reports)
  cfg = generate_config.get_config("test")
  cfg.neighbour_statements = -1
  with pytest.raises(ValueError, match="neighbour_statements=-1"):
    config_validation.validate_generate_config(cfg)
  cfg.neighbour_statements, cfg.projector_kind = 3, "resampler"
  with pytest.raises(ValueError, match="needs projector_kind='mlp'"):
    config_validation.validate_generate_config(cfg)


def test_trained_run_with_hints_scores_the_same_after_reload(ptbxl_dir, tmp_path_factory):
  """End to end on real PTB-XL reports: the hints widen the features the projector trains
  on, the bank is saved beside it, and score mode reproduces the run's loss and reports."""
  tmp = tmp_path_factory.mktemp("hints")
  cfg = real_records_config(tmp, ptbxl_dir)
  cfg.neighbour_statements = 3
  summary = generate.run_train(cfg, str(tmp / "run"))
  _, _, _, meta = projector_lib.load_projector(str(tmp / "run"))
  assert meta["feature_shape"] == [32 + len(clinical.ScpMatcher().codes)]
  assert (tmp / "run" / neighbours.BANK_FILE).is_file()

  score_cfg = assert_score_mode_reproduces(cfg, tmp / "run", tmp / "score", summary)
  # Without its bank the run cannot compute the features it was trained on: a clear error.
  (tmp / "run" / neighbours.BANK_FILE).unlink()
  with pytest.raises(GenerateError, match="neighbour_bank.npz is missing"):
    generate.run_score(score_cfg, str(tmp / "score2"))
