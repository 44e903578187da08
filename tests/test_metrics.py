"""Tests for merit_jax.metrics.classification against hand-computed values."""

import itertools

import numpy as np
import pytest

from merit_jax.metrics import classification as metrics


def _mann_whitney(y, s):
  pos, neg = s[y == 1], s[y == 0]
  wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
  return np.mean(wins)


def test_auroc_matches_mann_whitney_with_ties():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, size=(40, 3))
  s = np.round(rng.normal(size=(40, 3)) + y, 1)  # rounding makes ties
  got = metrics.auroc(y, s)
  want = [_mann_whitney(y[:, c], s[:, c]) for c in range(3)]
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_auroc_small_hand_case():
  # positives 0.8, 0.4; negatives 0.5, 0.1 -> pairs won: (0.8>0.5, 0.8>0.1, 0.4>0.1) = 3/4
  assert metrics.auroc([1, 0, 1, 0], [0.8, 0.5, 0.4, 0.1])[0] == pytest.approx(0.75)


def test_average_precision_hand_case():
  # Ranked: 0.9(+), 0.8(-), 0.7(+), 0.1(-): AP = 0.5*1 + 0.5*(2/3) = 5/6
  ap = metrics.average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])[0]
  assert ap == pytest.approx(5 / 6)
  # A tie between a positive and a negative at the top counts as one threshold: P = 1/2.
  ap = metrics.average_precision([1, 0, 0], [0.9, 0.9, 0.1])[0]
  assert ap == pytest.approx(0.5)


def test_best_f1_threshold_and_f1():
  y = np.array([[1], [1], [0], [1], [0], [0]])
  s = np.array([[0.9], [0.8], [0.7], [0.6], [0.2], [0.1]])
  # Cutting below 0.6: tp=3, fp=1 -> F1 = 6/7, the best; threshold = (0.6+0.2)/2.
  thr = metrics.best_f1_thresholds(y, s)
  assert thr[0] == pytest.approx(0.4)
  assert metrics.f1_at_thresholds(y, s, thr)[0] == pytest.approx(6 / 7)
  # A class without positives is never predicted.
  assert np.isinf(metrics.best_f1_thresholds(np.zeros((3, 1)), np.ones((3, 1))))[0]


def test_classes_without_positives_or_negatives_are_excluded_and_counted():
  y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
  s = np.array([[0.9, 0.1, 0.3], [0.1, 0.2, 0.4], [0.8, 0.3, 0.5], [0.2, 0.4, 0.6]])
  out = metrics.evaluate_multilabel(y, s, thresholds=[0.5, 0.5, 0.5], n_bootstrap=50)
  assert out["excluded_classes"] == [1, 2]
  assert out["num_evaluated"] == 1 and out["num_classes"] == 3
  assert out["macro_auroc"]["value"] == pytest.approx(1.0)
  assert out["macro_f1"]["value"] == pytest.approx(1.0)


def test_bootstrap_interval_covers_point_estimate_and_is_seeded():
  rng = np.random.default_rng(1)
  y = rng.integers(0, 2, size=(300, 5))
  s = rng.normal(size=(300, 5)) + 0.8 * y
  thr = metrics.best_f1_thresholds(y, s)
  a = metrics.evaluate_multilabel(y, s, thr, n_bootstrap=300, seed=3)
  b = metrics.evaluate_multilabel(y, s, thr, n_bootstrap=300, seed=3)
  for name in ("macro_auroc", "macro_auprc", "macro_f1"):
    m = a[name]
    assert m["ci_low"] <= m["value"] <= m["ci_high"], (name, m)
    assert m["ci_high"] - m["ci_low"] > 0.005
    assert m == b[name]
  # The vectorised resampling equals a plain index-resampling loop on the same draws.
  idx = metrics.resample_indices(300, 5, seed=3, cover=np.concatenate([y, 1 - y], axis=1))
  weights = metrics.resample_weights(idx, 300)
  for row in range(5):
    want = np.nanmean(metrics.auroc(y[idx[row]], s[idx[row]]))
    got = np.mean([metrics._weighted_auroc_one(y[:, c].astype(float), s[:, c],
                                               weights[row:row + 1])[0] for c in range(5)])
    assert got == pytest.approx(want, rel=1e-12)


def test_generic_bootstrap_matches_normal_theory():
  rng = np.random.default_rng(2)
  x = rng.normal(size=400)
  out = metrics.bootstrap_ci(np.mean, [x], n_bootstrap=500, seed=0)
  assert out["value"] == pytest.approx(x.mean())
  assert out["ci_low"] <= out["value"] <= out["ci_high"]
  # Width of a 95 % interval of a mean: about 2 * 1.96 * sd / sqrt(n).
  assert out["ci_high"] - out["ci_low"] == pytest.approx(2 * 1.96 * x.std() / 20, rel=0.2)
  with pytest.raises(ValueError, match="same number of rows"):
    metrics.bootstrap_ci(np.mean, [x, x[:3]])


def test_bad_input_is_reported():
  with pytest.raises(ValueError, match="must both be"):
    metrics.evaluate_multilabel(np.zeros((3, 2)), np.zeros((3, 3)))
  with pytest.raises(ValueError, match="0/1"):
    metrics.auroc(np.full((3, 1), 2), np.zeros((3, 1)))


def test_paired_difference_is_the_difference_of_the_separate_metrics():
  rng = np.random.default_rng(3)
  y = (rng.random((160, 7)) < 0.25).astype(int)
  y[:, 6] = 0
  y[5, 6] = 1  # A single-positive class: kept in every resample.
  a, b = y + rng.normal(0, 1.0, y.shape), y + rng.normal(0, 1.6, y.shape)
  ta, tb = np.full(7, 0.5), np.full(7, 0.6)
  diff = metrics.paired_difference(y, a, b, ta, tb, n_bootstrap=300, seed=1)
  sep_a = metrics.evaluate_multilabel(y, a, ta, n_bootstrap=0)
  sep_b = metrics.evaluate_multilabel(y, b, tb, n_bootstrap=0)
  for key in ("macro_auroc", "macro_f1"):
    expected = sep_a[key]["value"] - sep_b[key]["value"]
    assert diff[key]["value"] == pytest.approx(expected, abs=1e-12)
    assert diff[key]["ci_low"] <= diff[key]["value"] <= diff[key]["ci_high"]
  same = metrics.paired_difference(y, a, a, ta, ta, n_bootstrap=50)
  assert all(same[k][q] == 0 for k in same for q in ("value", "ci_low", "ci_high"))
