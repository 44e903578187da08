"""The class-keeping bootstrap shared by every interval of merit_jax.

`metrics.iter_resample_indices` draws the resamples of `metrics.evaluate_multilabel`,
`metrics.bootstrap_ci` and `generation.bootstrap_from_statistics` (and its paired
differences). These tests check its promise on the drawn indices themselves (every resample
holds a positive and a negative of every scored class), the consequence it exists for (macro
point estimates inside their own intervals when rare classes are badly scored), and that the
vectorised statistics over the resamples equal the metrics recomputed from scratch on the
resampled records.
"""

import ast
import itertools

import numpy as np
import pytest

from merit_jax.metrics import classification as metrics
from merit_jax.metrics import clinical
from merit_jax.metrics import generation as gen

_MACROS = ("macro_auroc", "macro_auprc", "macro_f1")


# ------------------------------------------------------------------------- synthetic folds

def _fold(seed: int, num_records: int = 180, num_classes: int = 9, singles: int = 3,
          rare_negatives: bool = True):
  """Multi-hot labels with `singles` single-positive classes (one record each, two of them
  sharing a record when possible), a class with 2 positives, a class with only 2 negatives
  and common classes of 5-40 % prevalence."""
  rng = np.random.default_rng(seed)
  y = np.zeros((num_records, num_classes), np.int64)
  for c in range(num_classes):
    y[rng.random(num_records) < rng.uniform(0.05, 0.4), c] = 1
  holders = rng.choice(num_records, size=singles, replace=False)
  if singles >= 3:
    holders[2] = holders[1]  # Two single-positive classes on the same record.
  for c in range(singles):
    y[:, c] = 0
    y[holders[c], c] = 1
  y[:, singles] = 0
  y[rng.choice(num_records, 2, replace=False), singles] = 1
  if rare_negatives:
    y[:, singles + 1] = 1
    y[rng.choice(num_records, 2, replace=False), singles + 1] = 0
  return y


def _scores(seed: int, y, separation=None):
  rng = np.random.default_rng(seed + 10_000)
  separation = rng.uniform(0.0, 2.5, size=y.shape[1]) if separation is None else separation
  return rng.normal(size=y.shape) + separation * y


def _cover(y):
  """What evaluate_multilabel must keep: positives and negatives of the scored classes."""
  pos = y.sum(axis=0)
  valid = (pos > 0) & (pos < y.shape[0])
  return np.concatenate([y[:, valid], 1 - y[:, valid]], axis=1).astype(bool)


# ---------------------------------------------------------------------- reference metrics

def _auroc_pairs(y, s):
  """Mann–Whitney AUROC by comparing every positive with every negative."""
  pos, neg = s[y == 1], s[y == 0]
  diff = pos[:, None] - neg[None, :]
  return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def _ap_thresholds(y, s):
  """AP = sum over distinct thresholds t (high to low) of (R(t) - R(prev)) * P(t)."""
  ap, prev_recall = 0.0, 0.0
  for t in np.unique(s)[::-1]:
    predicted = s >= t
    tp = np.sum(predicted & (y == 1))
    recall = tp / np.sum(y == 1)
    ap += (recall - prev_recall) * tp / np.sum(predicted)
    prev_recall = recall
  return float(ap)


def _f1(y, s, threshold):
  pred = s >= threshold
  tp, fp, fn = np.sum(pred & (y == 1)), np.sum(pred & (y == 0)), np.sum(~pred & (y == 1))
  return 2 * tp / (2 * tp + fp + fn)


def _macros_recomputed(y, s, thresholds, idx):
  """Macro AUROC / AUPRC / F1 of the resampled records y[idx], s[idx], from scratch."""
  yb, sb = y[idx], s[idx]
  valid = np.flatnonzero((y.sum(axis=0) > 0) & (y.sum(axis=0) < len(y)))
  return {"macro_auroc": np.mean([_auroc_pairs(yb[:, c], sb[:, c]) for c in valid]),
          "macro_auprc": np.mean([_ap_thresholds(yb[:, c], sb[:, c]) for c in valid]),
          "macro_f1": np.mean([_f1(yb[:, c], sb[:, c], thresholds[c]) for c in valid])}


# ------------------------------------------------------------------------ (a) the indices

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_resample_holds_a_positive_and_a_negative_of_every_class(seed):
  y = _fold(seed)
  pos = y.sum(axis=0)
  assert np.sum(pos == 1) == 3 and np.sum(pos == len(y) - 2) == 1  # The rare cases exist.
  idx = metrics.resample_indices(len(y), 1000, seed=seed, cover=_cover(y))
  assert idx.shape == (1000, len(y))
  assert idx.min() >= 0 and idx.max() < len(y)
  drawn = y[idx]                                      # (resamples, records, classes)
  assert np.all(drawn.max(axis=1) == 1), "a resample lost every positive of a class"
  assert np.all(drawn.min(axis=1) == 0), "a resample lost every negative of a class"
  # A single positive is neither lost nor duplicated: it sits in its own stratum.
  for c in np.flatnonzero(pos == 1):
    holder = np.flatnonzero(y[:, c])[0]
    np.testing.assert_array_equal(np.sum(idx == holder, axis=1), 1)
  # The resamples still vary: not every record is drawn once.
  assert np.mean(np.sum(idx[:, :, None] == np.arange(len(y)), axis=1) == 0) > 0.3


def test_strata_hold_their_size_and_common_classes_are_resampled_plainly():
  y = _fold(5, num_records=400)
  cover = _cover(y)
  stratum = metrics.bootstrap_strata(cover)
  sizes = np.bincount(stratum)
  assert 1 < sizes.size <= cover.shape[1] + 1
  idx = metrics.resample_indices(len(y), 2000, seed=1, cover=cover)
  weights = metrics.resample_weights(idx, len(y))
  np.testing.assert_array_equal(weights.sum(axis=1), len(y))
  for s, size in enumerate(sizes):  # Each stratum is drawn exactly its own size.
    np.testing.assert_array_equal(weights[:, stratum == s].sum(axis=1), size)
  # Records of the big stratum are resampled as in the plain bootstrap: multiplicity mean 1,
  # variance 1 - 1/m (multinomial over the stratum's m records).
  big = int(np.argmax(sizes))
  m = sizes[big]
  w_big = weights[:, stratum == big]
  assert w_big.mean() == pytest.approx(1.0, abs=0.01)
  assert w_big.var() == pytest.approx(1 - 1 / m, rel=0.05)
  # Without rare classes the scheme is the plain bootstrap: one stratum.
  common = np.random.default_rng(0).random((300, 4)) < 0.3
  assert np.all(metrics.bootstrap_strata(np.concatenate([common, ~common], axis=1)) == 0)


def test_classes_left_to_the_plain_draw_are_kept_by_redrawing():
  # 12 records, a class on 4 of them: a plain resample misses it with probability
  # (2/3)^12 ≈ 0.8 %, under the 1 % threshold, so no stratum holds it and the resamples that
  # miss it must be drawn again.
  cover = np.zeros((12, 1), bool)
  cover[[0, 3, 6, 9], 0] = True
  assert np.all(metrics.bootstrap_strata(cover) == 0)
  idx = metrics.resample_indices(12, 3000, seed=0, cover=cover)
  assert np.all(cover[idx, 0].any(axis=1))
  plain = metrics.resample_indices(12, 3000, seed=0)
  missed = ~cover[plain, 0].any(axis=1)
  assert 5 <= missed.sum() <= 60  # The plain draws do miss it (expected about 23).
  # Resample b uses the same generator either way: only the missed resamples change.
  np.testing.assert_array_equal(idx[~missed], plain[~missed])


def test_draws_do_not_depend_on_chunking():
  y = _fold(7)
  cover = _cover(y)
  whole = metrics.resample_indices(len(y), 50, seed=4, cover=cover)
  chunks = list(metrics.iter_resample_indices(len(y), 50, seed=4, cover=cover,
                                              max_elements=7 * len(y)))
  assert len(chunks) == 8
  np.testing.assert_array_equal(np.concatenate(chunks), whole)
  np.testing.assert_array_equal(metrics.resample_indices(len(y), 20, seed=4, cover=cover),
                                whole[:20])
  assert not np.array_equal(metrics.resample_indices(len(y), 50, seed=5, cover=cover), whole)


def test_bad_cover_is_reported():
  with pytest.raises(ValueError, match="mark no record"):
    metrics.resample_indices(3, 5, cover=np.array([[1, 0], [1, 0], [0, 0]]))
  with pytest.raises(ValueError, match="rows for 4 records"):
    metrics.resample_indices(4, 5, cover=np.ones((3, 1)))
  with pytest.raises(ValueError, match="non-negative integer"):
    metrics.resample_indices(4, -1)


# ------------------------------------------------------ (b) point estimates inside the CI

def _hard_rare_fold(seed: int, num_records: int = 200, num_classes: int = 12, singles: int = 6):
  """Six single-positive classes whose positive is scored low (they drag the macro means
  down), six common classes scored well: a resample that dropped the rare classes would
  shift the macro means up, past the point estimate."""
  rng = np.random.default_rng(seed)
  y = np.zeros((num_records, num_classes), np.int64)
  for c in range(num_classes):
    if c < singles:
      y[rng.integers(num_records), c] = 1
    else:
      y[rng.random(num_records) < rng.uniform(0.1, 0.4), c] = 1
  s = rng.normal(size=y.shape) + rng.uniform(0, 2.5, size=num_classes) * y
  for c in range(singles):
    s[np.flatnonzero(y[:, c])[0], c] = rng.uniform(-3, 1)
  return y, s, np.full(num_classes, 0.8)


@pytest.mark.parametrize("seed", range(8))
def test_macro_point_estimates_lie_inside_their_intervals(seed):
  cases = [_hard_rare_fold(seed)]
  for fold_seed, separation in ((seed, None), (seed + 100, np.zeros(9)), (seed + 200, 1.0)):
    y = _fold(fold_seed)
    s = _scores(fold_seed, y, separation)
    # F1 thresholds fixed on an independent "validation" fold, as in the probes.
    y_val = _fold(fold_seed + 1000)
    cases.append((y, s, metrics.best_f1_thresholds(y_val, _scores(fold_seed + 1000, y_val,
                                                                   separation))))
  for y, s, thresholds in cases:
    out = metrics.evaluate_multilabel(y, s, thresholds, n_bootstrap=1000, seed=seed)
    assert out["num_evaluated"] == y.shape[1]
    for name in _MACROS:
      m = out[name]
      assert m["ci_low"] <= m["value"] <= m["ci_high"], (name, m)
      assert m["ci_high"] > m["ci_low"], (name, m)


def test_real_ptbxl_rhythm_labels(ptbxl_dir):
  """PTB-XL fold 10 rhythm labels (single-positive classes included), random scores."""
  pd = pytest.importorskip("pandas")
  db = pd.read_csv(ptbxl_dir / "ptbxl_database.csv", usecols=["scp_codes", "strat_fold"])
  statements = pd.read_csv(ptbxl_dir / "scp_statements.csv", index_col=0)
  rhythm = sorted(statements.index[statements["rhythm"] == 1])
  codes = [set(ast.literal_eval(c)) for c in db.loc[db["strat_fold"] == 10, "scp_codes"]]
  y = np.array([[code in record for code in rhythm] for record in codes], np.int64)
  y = y[:, y.sum(axis=0) > 0]
  if not np.any(y.sum(axis=0) <= 2):
    pytest.skip("this copy of PTB-XL has no rare rhythm class in fold 10")
  cover = _cover(y)
  idx = metrics.resample_indices(len(y), 500, seed=0, cover=cover)
  assert np.all(y[idx].max(axis=1) == 1) and np.all(y[idx].min(axis=1) == 0)
  for seed in range(3):
    s = _scores(seed, y, 1.0)
    out = metrics.evaluate_multilabel(y, s, np.full(y.shape[1], 1.0), n_bootstrap=1000,
                                      seed=seed)
    for name in _MACROS:
      m = out[name]
      assert m["ci_low"] <= m["value"] <= m["ci_high"], (name, m)


# --------------------------------------- (c) the vectorised bootstrap against recomputation

def test_evaluate_multilabel_intervals_equal_recomputed_resamples():
  """The CI of evaluate_multilabel = percentiles of the macros recomputed from scratch on the
  records of each resample that `resample_indices` draws for the same seed."""
  y = _fold(11, num_records=120)
  s = np.round(_scores(11, y), 1)  # Ties between records, and duplicates from resampling.
  thresholds = np.full(y.shape[1], 0.5)
  n, seed = 150, 3
  out = metrics.evaluate_multilabel(y, s, thresholds, n_bootstrap=n, seed=seed)
  idx = metrics.resample_indices(len(y), n, seed=seed, cover=_cover(y))
  per_resample = [_macros_recomputed(y, s, thresholds, row) for row in idx]
  point = _macros_recomputed(y, s, thresholds, np.arange(len(y)))
  for name in _MACROS:
    values = np.array([r[name] for r in per_resample])
    assert out[name]["value"] == pytest.approx(point[name], abs=1e-12), name
    assert out[name]["ci_low"] == pytest.approx(np.percentile(values, 2.5), abs=1e-12), name
    assert out[name]["ci_high"] == pytest.approx(np.percentile(values, 97.5), abs=1e-12), name


def test_resampled_auroc_and_ap_match_sklearn():
  sklearn_metrics = pytest.importorskip("sklearn.metrics")
  y = _fold(12)
  s = _scores(12, y)
  idx = metrics.resample_indices(len(y), 5, seed=0, cover=_cover(y))
  for row in idx:
    np.testing.assert_allclose(metrics.auroc(y[row], s[row]),
                               [sklearn_metrics.roc_auc_score(y[row, c], s[row, c])
                                for c in range(y.shape[1])], rtol=1e-12)
    np.testing.assert_allclose(metrics.average_precision(y[row], s[row]),
                               [sklearn_metrics.average_precision_score(y[row, c], s[row, c])
                                for c in range(y.shape[1])], rtol=1e-12)


def test_bootstrap_ci_uses_the_shared_resamples():
  y = _fold(13)
  seen = []

  def statistic(rows):
    seen.append(np.array(rows))
    return float(np.mean(y[rows, 0]))  # Prevalence of a single-positive class.

  out = metrics.bootstrap_ci(statistic, [np.arange(len(y))], n_bootstrap=40, seed=2,
                             cover=y.astype(bool))
  np.testing.assert_array_equal(np.stack(seen[:40]),
                                metrics.resample_indices(len(y), 40, seed=2, cover=y))
  # The single positive is in every resample once: the prevalence never moves.
  assert out["ci_low"] == out["value"] == out["ci_high"] == pytest.approx(1 / len(y))


# ------------------------------------------------------ report generation (generation)

_COMMON = ("sinus rhythm", "normal ecg", "atrial fibrillation", "left bundle branch block",
           "left ventricular hypertrophy", "st depression", "t wave inversion")
_RARE = ("sinus bradycardia", "sinus tachycardia", "atrial flutter", "pacemaker rhythm",
         "supraventricular tachycardia", "wolff-parkinson-white syndrome")


def _rare_code_generation_case(seed: int, n: int = 80):
  """References from common phrases, six records with one rare statement each that the
  systems never write (statement F1 0 for those codes): a good and a poor system."""
  rng = np.random.default_rng(seed)
  matcher = clinical.ScpMatcher()
  refs, labels, good, poor = [], [], [], []
  rare_rows = rng.choice(n, size=len(_RARE), replace=False)
  for i in range(n):
    phrases = list(rng.choice(_COMMON, size=rng.integers(1, 4), replace=False))
    kept = [p if rng.random() < 0.85 else rng.choice(_COMMON) for p in phrases]
    if i in rare_rows:
      phrases.append(_RARE[list(rare_rows).index(i)])
    refs.append(". ".join(phrases) + ".")
    labels.append(matcher(refs[-1]))
    good.append(" ".join(kept))
    poor.append(" ".join(rng.choice(_COMMON, size=rng.integers(1, 3))))
  return good, poor, refs, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_statement_f1_resamples_keep_every_labelled_code(seed):
  good, poor, refs, labels = _rare_code_generation_case(seed)
  stats = gen.record_statistics(good, refs, labels, with_meteor=False)
  base = gen.record_statistics(poor, refs, labels, with_meteor=False)
  idx = gen.resample_indices(len(good), 500, seed=seed, stats=stats)
  for code in set().union(*labels):
    holders = np.array([code in record for record in labels])
    assert np.all(holders[idx].any(axis=1)), code
  # Paired: the same resamples with a baseline (same labels), so arms can be compared.
  np.testing.assert_array_equal(gen.resample_indices(len(good), 500, seed, stats, base), idx)
  np.testing.assert_array_equal(gen.resample_indices(len(good), 500, seed, base), idx)

  got = gen.bootstrap_from_statistics(stats, base, n_bootstrap=1000, seed=seed)
  for key in ("clinical_macro_f1", "clinical_micro_f1", "bleu4", "rouge_l"):
    s = got[key]
    assert s["ci_low"] <= s["value"] <= s["ci_high"], (key, s)
    assert s["diff_ci_low"] <= s["diff"] <= s["diff_ci_high"], (key, s)
  # Not lopsided: resamples that dropped the six zero-F1 codes put the macro F1 point at the
  # bottom edge of a wide interval (about 3 % of the way up); kept, it sits near the middle.
  s = got["clinical_macro_f1"]
  assert 0.2 < (s["value"] - s["ci_low"]) / (s["ci_high"] - s["ci_low"]) < 0.8, s


def test_statement_f1_intervals_equal_rescored_resamples():
  """bootstrap_from_statistics = percentiles of report_generation_metrics rescored on the
  records of each resample (and of the paired difference), for the same seed."""
  good, poor, refs, labels = _rare_code_generation_case(4, n=40)
  n, seed = 60, 9
  got = gen.bootstrap_generation_metrics(good, refs, labels, with_meteor=False, n_bootstrap=n,
                                         seed=seed, baseline_generated=poor)
  stats = gen.record_statistics(good, refs, labels, with_meteor=False)
  idx = gen.resample_indices(len(good), n, seed, stats)
  own, other = [], []
  for row in idx:
    pick = lambda seq: [seq[i] for i in row]  # pylint: disable=cell-var-from-loop
    own.append(gen.report_generation_metrics(pick(good), pick(refs), pick(labels), False))
    other.append(gen.report_generation_metrics(pick(poor), pick(refs), pick(labels), False))
    # Every labelled code is scored in every resample's macro mean.
    assert (clinical.clinical_f1(pick(good), pick(labels))["num_codes"]
            == clinical.clinical_f1(good, labels)["num_codes"])
  for key, s in got.items():
    values = np.array([r[key] for r in own])
    diffs = values - np.array([r[key] for r in other])
    assert s["ci_low"] == pytest.approx(np.percentile(values, 2.5), abs=1e-9), key
    assert s["ci_high"] == pytest.approx(np.percentile(values, 97.5), abs=1e-9), key
    assert s["diff_ci_low"] == pytest.approx(np.percentile(diffs, 2.5), abs=1e-9), key
    assert s["diff_ci_high"] == pytest.approx(np.percentile(diffs, 97.5), abs=1e-9), key


def test_text_resample_indices_without_labels_is_the_plain_bootstrap():
  """generation.resample_indices without labels is the plain bootstrap."""
  for num, n, seed in itertools.product((1, 7, 40), (1, 5), (0, 3)):
    np.testing.assert_array_equal(gen.resample_indices(num, n, seed),
                                  metrics.resample_indices(num, n, seed))
