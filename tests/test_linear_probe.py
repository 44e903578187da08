"""Tests for the linear probe protocol: choices are made on validation only."""

import numpy as np
import pytest

from merit_jax.evaluators import linear_probe
from merit_jax.metrics import classification as metrics

GRID = {"weight_decay": [0.0, 1e-2, 1.0], "learning_rate": [3e-2]}
FAST = dict(max_epochs=60, eval_every=10, patience=3, n_bootstrap=100)


def _features(num, rng, weights, noise=1.5):
  latent = rng.normal(size=(num, weights.shape[0]))
  labels = (latent @ weights + rng.normal(size=(num, weights.shape[1])) * noise > 1.0)
  features = np.concatenate([latent, rng.normal(size=(num, 8))], axis=1) * 3.0 + 5.0
  return features.astype(np.float32), labels.astype(np.uint8)


@pytest.fixture(scope="module")
def splits():
  rng = np.random.default_rng(0)
  weights = rng.normal(size=(16, 6))
  return tuple(_features(n, rng, weights) for n in (800, 300, 300))


@pytest.fixture(scope="module")
def probe(splits):
  train, val, test = splits
  return linear_probe.run_linear_probe(train, val, test, grid=GRID, seed=0, **FAST)


def test_probe_learns_and_reports_cis(probe, splits):
  test_auroc = probe.test_metrics["macro_auroc"]
  assert test_auroc["value"] > 0.8
  assert test_auroc["ci_low"] <= test_auroc["value"] <= test_auroc["ci_high"]
  assert probe.test_metrics["macro_f1"]["value"] > 0.4
  assert probe.hparams["weight_decay"] in GRID["weight_decay"]
  assert 10 <= probe.hparams["epochs"] <= FAST["max_epochs"]
  assert len(probe.grid_results) == 3
  best_val = max(r["val_auroc"] for r in probe.grid_results)
  assert probe.val_metrics["macro_auroc"]["value"] == pytest.approx(best_val)
  assert probe.thresholds.shape == (splits[0][1].shape[1],)
  assert probe.test_scores.shape == splits[2][1].shape


def test_thresholds_come_from_validation_and_head_is_reusable(probe, splits):
  _, (x_val, y_val), (x_test, y_test) = splits
  np.testing.assert_array_equal(probe.thresholds,
                                metrics.best_f1_thresholds(y_val, probe.val_scores))
  np.testing.assert_allclose(probe.predict(x_val), probe.val_scores, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(probe.predict(x_test), probe.test_scores, rtol=1e-5, atol=1e-5)
  again = probe.evaluate(x_test, y_test, n_bootstrap=0)
  assert again["macro_auroc"]["value"] == pytest.approx(
      probe.test_metrics["macro_auroc"]["value"], abs=1e-6)
  assert again["macro_f1"]["value"] == pytest.approx(probe.test_metrics["macro_f1"]["value"])
  # Noisier features (a shifted test set) score lower with the same head.
  rng = np.random.default_rng(3)
  noisy = x_test + rng.normal(size=x_test.shape).astype(np.float32) * 6.0
  assert probe.evaluate(noisy, y_test, n_bootstrap=0)["macro_auroc"]["value"] < (
      again["macro_auroc"]["value"] - 0.05)


def test_test_labels_change_no_choice(probe, splits):
  train, val, (x_test, y_test) = splits
  rng = np.random.default_rng(1)
  permuted = y_test[rng.permutation(len(y_test))]
  other = linear_probe.run_linear_probe(train, val, (x_test, permuted), grid=GRID, seed=0,
                                        **FAST)
  assert other.hparams == probe.hparams
  np.testing.assert_array_equal(other.thresholds, probe.thresholds)
  assert other.grid_results == probe.grid_results
  np.testing.assert_array_equal(other.test_scores, probe.test_scores)
  # The test numbers do move (they depend on the test labels, and only they do).
  permuted_auroc = other.test_metrics["macro_auroc"]["value"]
  assert permuted_auroc < probe.test_metrics["macro_auroc"]["value"] - 0.2


def test_validation_labels_drive_the_choice(splits):
  train, (x_val, y_val), test = splits
  # With noise-only validation labels the selection differs from the informative one.
  rng = np.random.default_rng(2)
  shuffled = y_val[rng.permutation(len(y_val))]
  result = linear_probe.run_linear_probe(train, (x_val, shuffled), test, grid=GRID, seed=0,
                                         **FAST)
  assert result.val_metrics["macro_auroc"]["value"] < 0.65


def test_mini_batch_and_label_fractions(splits):
  train, val, test = splits
  out = linear_probe.run_label_fractions(train, val, test, fractions=(0.1, 1.0), seeds=(0, 1),
                                         grid={"weight_decay": [1e-3]}, batch_size=64,
                                         max_epochs=20, eval_every=10, patience=2,
                                         n_bootstrap=0)
  assert out[0.1]["subset_sizes"] == [80, 80] and out[0.1]["seeds"] == [0, 1]
  assert len(out[1.0]["runs"]) == 1 and out[1.0]["subset_sizes"] == [800]
  assert out[1.0]["macro_auroc"]["mean"] > out[0.1]["macro_auroc"]["mean"] - 0.02
  # Each run's value is sklearn's macro AUROC of its own test scores; mean and sd (ddof=1)
  # over the seeds' runs.
  from sklearn.metrics import roc_auc_score  # pylint: disable=g-import-not-at-top
  expected = [roc_auc_score(test[1], r.test_scores, average="macro") for r in out[0.1]["runs"]]
  np.testing.assert_allclose(out[0.1]["macro_auroc"]["values"], expected, atol=1e-6)
  assert out[0.1]["macro_auroc"]["mean"] == pytest.approx(np.mean(expected), abs=1e-6)
  assert out[0.1]["macro_auroc"]["std"] == pytest.approx(np.std(expected, ddof=1), abs=1e-6)


def test_probe_matches_sklearn_logistic_regression(probe, splits):
  """An independent fit (sklearn's L2 logistic regression per class on standardised features)
  reaches the probe's test macro AUROC, and the reported AUROC is sklearn's on its scores."""
  # pylint: disable=g-import-not-at-top
  from sklearn.linear_model import LogisticRegression
  from sklearn.metrics import roc_auc_score
  from sklearn.preprocessing import StandardScaler
  # pylint: enable=g-import-not-at-top
  (x_train, y_train), _, (x_test, y_test) = splits
  assert probe.test_metrics["macro_auroc"]["value"] == pytest.approx(
      roc_auc_score(y_test, probe.test_scores, average="macro"), abs=1e-6)
  scaler = StandardScaler().fit(x_train)
  scores = np.stack([
      LogisticRegression(C=1.0, max_iter=5000).fit(scaler.transform(x_train), y_train[:, c])
      .decision_function(scaler.transform(x_test)) for c in range(y_train.shape[1])], axis=1)
  reference = roc_auc_score(y_test, scores, average="macro")
  assert reference > 0.8
  assert probe.test_metrics["macro_auroc"]["value"] == pytest.approx(reference, abs=0.02)


def test_bad_input(splits):
  train, val, test = splits
  with pytest.raises(ValueError, match="features"):
    linear_probe.run_linear_probe(train, (val[0][:, :3], val[1]), test)
  with pytest.raises(ValueError, match="unknown grid keys"):
    linear_probe.run_linear_probe(train, val, test, grid={"lr": [1.0]})


LBFGS_GRID = {"weight_decay": [1e-3, 1e-1, 10.0]}


@pytest.fixture(scope="module")
def lbfgs_probe(splits):
  train, val, test = splits
  return linear_probe.run_linear_probe(train, val, test, grid=LBFGS_GRID, solver="lbfgs",
                                       tol=1e-6, n_bootstrap=100)


def test_lbfgs_reaches_the_regularised_optimum_of_sklearn(lbfgs_probe, splits):
  """The L-BFGS head is the optimum an independent solver finds: sklearn's L2 logistic
  regression per class on the same standardised features, with its C matched to the probe's
  loss (mean BCE over records and classes + 0.5 * wd * |w|^2 => C = 1 / (wd * N * classes))."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  (x_train, y_train), _, _ = splits
  head = lbfgs_probe.head
  x = (x_train - head["feature_mean"]) / head["feature_std"]
  num, num_classes = y_train.shape
  weight_decay = lbfgs_probe.hparams["weight_decay"]
  for c in range(num_classes):
    reference = LogisticRegression(C=1.0 / (weight_decay * num * num_classes), tol=1e-10,
                                   max_iter=10_000).fit(x, y_train[:, c])
    np.testing.assert_allclose(head["w"][:, c], reference.coef_[0], rtol=0,
                               atol=1e-3 * np.abs(reference.coef_[0]).max())
    assert head["b"][c] == pytest.approx(reference.intercept_[0], abs=1e-3)
  assert lbfgs_probe.hparams["solver"] == "lbfgs"
  assert lbfgs_probe.test_metrics["macro_auroc"]["value"] > 0.8


def test_lbfgs_chooses_on_validation_only(lbfgs_probe, splits):
  train, (x_val, y_val), (x_test, y_test) = splits
  # Each grid point's validation AUROC is that of its own optimum; the best one is chosen.
  aucs = [g["val_auroc"] for g in lbfgs_probe.grid_results]
  assert [g["weight_decay"] for g in lbfgs_probe.grid_results] == LBFGS_GRID["weight_decay"]
  assert lbfgs_probe.hparams["weight_decay"] == LBFGS_GRID["weight_decay"][int(np.argmax(aucs))]
  assert lbfgs_probe.val_metrics["macro_auroc"]["value"] == pytest.approx(max(aucs))
  permuted = y_test[np.random.default_rng(1).permutation(len(y_test))]
  other = linear_probe.run_linear_probe(train, (x_val, y_val), (x_test, permuted),
                                        grid=LBFGS_GRID, solver="lbfgs", tol=1e-6,
                                        n_bootstrap=0)
  assert other.hparams == lbfgs_probe.hparams
  np.testing.assert_array_equal(other.test_scores, lbfgs_probe.test_scores)


def test_grid_edge_is_flagged(splits):
  """A grid whose only strong regularisation is its smallest value puts the choice at an
  edge; a grid around the optimum does not."""
  train, val, test = splits
  weak = linear_probe.run_linear_probe(train, val, test, grid={"weight_decay": [1e3, 1e4]},
                                       solver="lbfgs", n_bootstrap=0)
  assert weak.hparams["weight_decay"] == 1e3 and weak.hparams["at_grid_edge"]
  single = linear_probe.run_linear_probe(train, val, test, grid={"weight_decay": [1e-2]},
                                         solver="lbfgs", n_bootstrap=0)
  assert not single.hparams["at_grid_edge"]


def test_bad_solver_settings(splits):
  train, val, test = splits
  with pytest.raises(ValueError, match="solver 'sgd'"):
    linear_probe.run_linear_probe(train, val, test, solver="sgd")
  with pytest.raises(ValueError, match="full batch"):
    linear_probe.run_linear_probe(train, val, test, grid=LBFGS_GRID, solver="lbfgs",
                                  batch_size=32)
