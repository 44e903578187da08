"""merit_jax.metrics.classification against scikit-learn, hand counts and a plain bootstrap."""

import numpy as np
import pytest

from merit_jax.metrics import classification as metrics

sk = pytest.importorskip("sklearn.metrics")


def _multilabel(seed, num=200, num_classes=8):
  """0/1 labels with an all-negative, an all-positive and a single-positive class; scores
  rounded to one decimal, so many records tie (within and across labels)."""
  rng = np.random.default_rng(seed)
  y = (rng.random((num, num_classes)) < rng.uniform(0.1, 0.5, num_classes)).astype(int)
  y[:, 0] = 0
  y[:, 1] = 1
  y[:, 2] = 0
  y[rng.integers(num), 2] = 1
  s = np.round(rng.normal(size=y.shape) + rng.uniform(0, 2, num_classes) * y, 1)
  return y, s


def _evaluated(y):
  """The classes with positives and negatives: the ones the macro means average."""
  return np.flatnonzero((y.sum(axis=0) > 0) & (y.sum(axis=0) < len(y)))


# ------------------------------------------------------------------------ point estimates

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_auroc_and_ap_match_sklearn_with_ties(seed):
  y, s = _multilabel(seed)
  valid = _evaluated(y)
  auroc = metrics.auroc(y, s)
  ap = metrics.average_precision(y, s)
  np.testing.assert_allclose(auroc[valid], [sk.roc_auc_score(y[:, c], s[:, c]) for c in valid],
                             rtol=0, atol=1e-12)
  np.testing.assert_allclose(ap[valid],
                             [sk.average_precision_score(y[:, c], s[:, c]) for c in valid],
                             rtol=0, atol=1e-12)
  # Undefined without positives or without negatives (sklearn raises or warns there).
  assert np.all(np.isnan(auroc[[0, 1]])) and np.all(np.isnan(ap[[0, 1]]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_metrics_match_sklearn_over_the_evaluated_classes(seed):
  y, s = _multilabel(seed)
  thresholds = np.quantile(s, 0.6, axis=0)
  out = metrics.evaluate_multilabel(y, s, thresholds, n_bootstrap=0)
  valid = _evaluated(y)
  assert out["excluded_classes"] == [0, 1]
  assert out["num_evaluated"] == len(valid) and out["num_classes"] == y.shape[1]
  yv, sv = y[:, valid], s[:, valid]
  assert out["macro_auroc"] == {"value": pytest.approx(sk.roc_auc_score(yv, sv,
                                                                        average="macro"))}
  assert out["macro_auprc"]["value"] == pytest.approx(
      sk.average_precision_score(yv, sv, average="macro"), abs=1e-12)
  assert out["macro_f1"]["value"] == pytest.approx(
      sk.f1_score(yv, sv >= thresholds[valid], average="macro"), abs=1e-12)
  np.testing.assert_allclose(np.array(out["per_class"]["f1"])[valid],
                             sk.f1_score(yv, sv >= thresholds[valid], average=None),
                             rtol=0, atol=1e-12)
  assert np.all(np.isnan(np.array(out["per_class"]["f1"])[[0, 1]]))
  assert metrics.macro_auroc(y, s) == pytest.approx(out["macro_auroc"]["value"], abs=1e-12)


def test_f1_at_thresholds_matches_sklearn():
  y, s = _multilabel(3)
  thresholds = np.quantile(s, 0.7, axis=0)
  valid = _evaluated(y)
  np.testing.assert_allclose(metrics.f1_at_thresholds(y, s, thresholds)[valid],
                             sk.f1_score(y[:, valid], s[:, valid] >= thresholds[valid],
                                         average=None), rtol=0, atol=1e-12)


def test_best_f1_thresholds_reach_the_best_f1_of_any_cut():
  y, s = _multilabel(4)
  thresholds = metrics.best_f1_thresholds(y, s)
  for c in np.flatnonzero(y.sum(axis=0) > 0):
    # Every distinct score as the cut, scored by sklearn.
    best = max(sk.f1_score(y[:, c], s[:, c] >= t) for t in np.unique(s[:, c]))
    assert sk.f1_score(y[:, c], s[:, c] >= thresholds[c]) == pytest.approx(best, abs=1e-12)
    # A midpoint between two distinct scores, or the lowest score when all are predicted.
    assert thresholds[c] not in s[:, c] or thresholds[c] == s[:, c].min()
  assert np.isinf(metrics.best_f1_thresholds(np.zeros((3, 1)), np.ones((3, 1))))[0]


def test_small_hand_cases():
  # positives 0.8, 0.4; negatives 0.5, 0.1 -> pairs won: (0.8>0.5, 0.8>0.1, 0.4>0.1) = 3/4
  assert metrics.auroc([1, 0, 1, 0], [0.8, 0.5, 0.4, 0.1])[0] == pytest.approx(0.75)
  # Ranked: 0.9(+), 0.8(-), 0.7(+), 0.1(-): AP = 0.5*1 + 0.5*(2/3) = 5/6
  assert metrics.average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])[0] == pytest.approx(5 / 6)
  # A tie between a positive and a negative at the top counts as one threshold: P = 1/2.
  assert metrics.average_precision([1, 0, 0], [0.9, 0.9, 0.1])[0] == pytest.approx(0.5)
  # Cutting below 0.6: tp=3, fp=1 -> F1 = 6/7, the best; threshold = (0.6+0.2)/2.
  y = np.array([[1], [1], [0], [1], [0], [0]])
  s = np.array([[0.9], [0.8], [0.7], [0.6], [0.2], [0.1]])
  assert metrics.best_f1_thresholds(y, s)[0] == pytest.approx(0.4)
  assert metrics.f1_at_thresholds(y, s, [0.4])[0] == pytest.approx(6 / 7)


# ------------------------------------------------------------------------------ bootstrap

def _percentiles(values, alpha=0.05):
  return np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])


def test_bootstrap_intervals_equal_a_plain_numpy_bootstrap_on_the_same_indices():
  """evaluate_multilabel's CIs = percentiles of sklearn's macro metrics on the records of each
  resample (the resamples `resample_indices` draws for the same seed, keeping a positive and a
  negative of each evaluated class)."""
  y, s = _multilabel(5, num=150)
  thresholds = np.quantile(s, 0.6, axis=0)
  n, seed = 120, 7
  out = metrics.evaluate_multilabel(y, s, thresholds, n_bootstrap=n, seed=seed)
  valid = _evaluated(y)
  cover = np.concatenate([y[:, valid] == 1, y[:, valid] == 0], axis=1)
  idx = metrics.resample_indices(len(y), n, seed=seed, cover=cover)
  yv, sv = y[:, valid], s[:, valid]
  per_resample = {"macro_auroc": [], "macro_auprc": [], "macro_f1": []}
  for rows in idx:
    per_resample["macro_auroc"].append(sk.roc_auc_score(yv[rows], sv[rows], average="macro"))
    per_resample["macro_auprc"].append(
        sk.average_precision_score(yv[rows], sv[rows], average="macro"))
    per_resample["macro_f1"].append(
        sk.f1_score(yv[rows], sv[rows] >= thresholds[valid], average="macro"))
  for name, values in per_resample.items():
    low, high = _percentiles(values)
    assert out[name]["ci_low"] == pytest.approx(low, abs=1e-12), name
    assert out[name]["ci_high"] == pytest.approx(high, abs=1e-12), name
  # Seeded: the same seed gives the same intervals, another seed other ones.
  again = metrics.evaluate_multilabel(y, s, thresholds, n_bootstrap=n, seed=seed)
  assert all(again[name] == out[name] for name in per_resample)
  other = metrics.evaluate_multilabel(y, s, thresholds, n_bootstrap=n, seed=seed + 1)
  assert other["macro_auroc"]["ci_low"] != out["macro_auroc"]["ci_low"]


def test_paired_difference_equals_a_plain_numpy_bootstrap_on_the_same_indices():
  y, a = _multilabel(6, num=160)
  b = a + np.round(np.random.default_rng(0).normal(0, 1.0, a.shape), 1)
  ta, tb = np.full(y.shape[1], 0.5), np.full(y.shape[1], 0.8)
  n, seed = 100, 2
  diff = metrics.paired_difference(y, a, b, ta, tb, n_bootstrap=n, seed=seed)
  valid = _evaluated(y)
  yv = y[:, valid]
  cover = np.concatenate([yv == 1, yv == 0], axis=1)
  idx = metrics.resample_indices(len(y), n, seed=seed, cover=cover)

  def macros(rows):
    return {"macro_auroc": sk.roc_auc_score(yv[rows], a[rows][:, valid])
                           - sk.roc_auc_score(yv[rows], b[rows][:, valid]),
            "macro_f1": sk.f1_score(yv[rows], a[rows][:, valid] >= 0.5, average="macro")
                        - sk.f1_score(yv[rows], b[rows][:, valid] >= 0.8, average="macro")}

  point = macros(np.arange(len(y)))
  samples = [macros(rows) for rows in idx]
  for key in ("macro_auroc", "macro_f1"):
    low, high = _percentiles([r[key] for r in samples])
    assert diff[key]["value"] == pytest.approx(point[key], abs=1e-12), key
    assert diff[key]["ci_low"] == pytest.approx(low, abs=1e-12), key
    assert diff[key]["ci_high"] == pytest.approx(high, abs=1e-12), key


def test_generic_bootstrap_ci():
  rng = np.random.default_rng(2)
  x = rng.normal(size=400)
  out = metrics.bootstrap_ci(np.mean, [x], n_bootstrap=500, seed=0)
  assert out["value"] == pytest.approx(x.mean())
  # The same resamples by hand.
  means = [x[rows].mean() for rows in metrics.resample_indices(len(x), 500, seed=0)]
  np.testing.assert_allclose([out["ci_low"], out["ci_high"]], _percentiles(means), atol=1e-12)
  # Width of a 95 % interval of a mean: about 2 * 1.96 * sd / sqrt(n).
  assert out["ci_high"] - out["ci_low"] == pytest.approx(2 * 1.96 * x.std() / 20, rel=0.2)
  with pytest.raises(ValueError, match="same number of rows"):
    metrics.bootstrap_ci(np.mean, [x, x[:3]])


def test_plain_resamples_are_uniform_draws_with_replacement():
  # Without a cover: each record's multiplicity is Binomial(N, 1/N): mean 1, variance 1 - 1/N,
  # P(absent) = (1 - 1/N)^N.
  num = 50
  idx = metrics.resample_indices(num, 4000, seed=1)
  assert idx.shape == (4000, num) and idx.min() >= 0 and idx.max() < num
  counts = np.stack([np.bincount(row, minlength=num) for row in idx])
  assert counts.mean() == pytest.approx(1.0)
  assert counts.var() == pytest.approx(1 - 1 / num, rel=0.03)
  assert np.mean(counts == 0) == pytest.approx((1 - 1 / num) ** num, rel=0.03)


def test_bad_input_is_reported():
  with pytest.raises(ValueError, match="must both be"):
    metrics.evaluate_multilabel(np.zeros((3, 2)), np.zeros((3, 3)))
  with pytest.raises(ValueError, match="0/1"):
    metrics.auroc(np.full((3, 1), 2), np.zeros((3, 1)))
  with pytest.raises(ValueError, match="NaN or inf"):
    metrics.auroc(np.ones((3, 1)), np.full((3, 1), np.nan))
  with pytest.raises(ValueError, match="no class has both"):
    metrics.paired_difference(np.ones((3, 1)), np.zeros((3, 1)), np.zeros((3, 1)))
