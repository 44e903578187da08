"""Multi-label classification metrics with bootstrap confidence intervals (numpy only).

Public API (all arrays are numpy; `labels` is (N, C) in {0, 1}, `scores` is (N, C) real):

- `auroc(labels, scores) -> (C,)`: per-class ROC AUC, the Mann–Whitney statistic
  P(score_pos > score_neg) + 0.5 P(tie); NaN for a class without positives or negatives.
- `average_precision(labels, scores) -> (C,)`: per-class AP = sum_n (R_n - R_{n-1}) P_n over the
  distinct score thresholds (same definition as scikit-learn's `average_precision_score`).
- `best_f1_thresholds(labels, scores) -> (C,)`: per class, the threshold that maximises F1 on
  the given (validation) set. A record is predicted positive when `score >= threshold`. The
  threshold is the midpoint between the chosen score and the next lower distinct score; a class
  without positives gets +inf (never predicted).
- `f1_at_thresholds(labels, scores, thresholds) -> (C,)`.
- `macro_auroc(labels, scores) -> float`; `bootstrap_ci(statistic, arrays, n_bootstrap, seed)
  -> {"value", "ci_low", "ci_high"}` for any other per-record statistic (loop, not vectorised).
- `evaluate_multilabel(labels, scores, thresholds=None, n_bootstrap=1000, seed=0)
  -> dict`: macro AUROC / AUPRC (and macro F1 when thresholds are given) with percentile
  bootstrap 95 % CIs. Result layout:
  `{"macro_auroc": {"value", "ci_low", "ci_high"}, "macro_auprc": {...}, "macro_f1": {...},
    "num_classes", "num_evaluated", "excluded_classes": [indices],
    "per_class": {"auroc": [...], "auprc": [...], "f1": [...]}}` (no CI keys when
  `n_bootstrap=0`; no F1 without thresholds).

Classes with no positives or no negatives in the evaluated set are excluded from every macro
average (AUROC/AP are undefined there) and listed in `excluded_classes`. In each bootstrap
resample a class that happens to lose all its positives (or negatives) is left out of that
resample's macro mean only.

The bootstrap resamples records with replacement (seeded). It is vectorised by turning each
resample into a vector of multiplicities (weights), so one sort per class serves all resamples.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

# Upper bound on resamples × records held in memory at once by the bootstrap.
_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000


def _check_inputs(labels, scores, where: str):
  labels = np.asarray(labels)
  scores = np.asarray(scores, dtype=np.float64)
  if labels.ndim == 1:
    labels = labels[:, None]
  if scores.ndim == 1:
    scores = scores[:, None]
  if labels.ndim != 2 or labels.shape != scores.shape:
    raise ValueError(f"{where}: labels {labels.shape} and scores {scores.shape} must both be "
                     "(num_records, num_classes)")
  if labels.shape[0] == 0:
    raise ValueError(f"{where}: no records to evaluate")
  if not np.all((labels == 0) | (labels == 1)):
    raise ValueError(f"{where}: labels must be 0/1 multi-hot")
  if not np.all(np.isfinite(scores)):
    raise ValueError(f"{where}: scores contain NaN or inf")
  return labels.astype(np.float64), scores


def _weighted_auroc_one(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """Weighted Mann–Whitney AUROC of one class for each row of `weights` (B, N) -> (B,)."""
  order = np.argsort(s, kind="stable")
  s_sorted, y_sorted = s[order], y[order]
  starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
  w = weights[:, order]
  pos = np.add.reduceat(w * y_sorted, starts, axis=1)
  neg = np.add.reduceat(w * (1.0 - y_sorted), starts, axis=1)
  neg_below = np.cumsum(neg, axis=1) - neg
  numerator = np.sum(pos * (neg_below + 0.5 * neg), axis=1)
  denominator = pos.sum(axis=1) * neg.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def _weighted_ap_one(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """Weighted average precision of one class for each row of `weights` (B, N) -> (B,)."""
  order = np.argsort(-s, kind="stable")
  s_sorted, y_sorted = s[order], y[order]
  starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
  w = weights[:, order]
  tp = np.add.reduceat(w * y_sorted, starts, axis=1)
  fp = np.add.reduceat(w * (1.0 - y_sorted), starts, axis=1)
  cum_tp, cum_fp = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
  total_pos = tp.sum(axis=1)
  total_neg = fp.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    precision = np.where(cum_tp + cum_fp > 0, cum_tp / np.maximum(cum_tp + cum_fp, 1e-300), 0.0)
    ap = np.sum(tp * precision, axis=1) / total_pos
  # AP needs positives; negatives-free classes are excluded for consistency with AUROC.
  return np.where((total_pos > 0) & (total_neg > 0), ap, np.nan)


def _weighted_f1(labels, scores, thresholds, weights) -> np.ndarray:
  """F1 per class for each row of `weights` (B, N) -> (B, C)."""
  pred = (scores >= thresholds[None, :]).astype(np.float64)
  tp = weights @ (labels * pred)
  fp = weights @ ((1.0 - labels) * pred)
  fn = weights @ (labels * (1.0 - pred))
  denominator = 2 * tp + fp + fn
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), np.nan)


def auroc(labels, scores) -> np.ndarray:
  """Per-class ROC AUC (C,); NaN where a class lacks positives or negatives."""
  labels, scores = _check_inputs(labels, scores, "auroc")
  ones = np.ones((1, labels.shape[0]))
  return np.array([_weighted_auroc_one(labels[:, c], scores[:, c], ones)[0]
                   for c in range(labels.shape[1])])


def average_precision(labels, scores) -> np.ndarray:
  """Per-class average precision (C,); NaN where a class lacks positives or negatives."""
  labels, scores = _check_inputs(labels, scores, "average_precision")
  ones = np.ones((1, labels.shape[0]))
  return np.array([_weighted_ap_one(labels[:, c], scores[:, c], ones)[0]
                   for c in range(labels.shape[1])])


def f1_at_thresholds(labels, scores, thresholds) -> np.ndarray:
  """Per-class F1 (C,) predicting `score >= threshold`; NaN when no positives and no predictions."""
  labels, scores = _check_inputs(labels, scores, "f1_at_thresholds")
  thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
  if thresholds.shape[0] != labels.shape[1]:
    raise ValueError(f"f1_at_thresholds: {thresholds.shape[0]} thresholds for "
                     f"{labels.shape[1]} classes")
  return _weighted_f1(labels, scores, thresholds, np.ones((1, labels.shape[0])))[0]


def best_f1_thresholds(labels, scores) -> np.ndarray:
  """Per-class thresholds (C,) that maximise F1 on this (validation) set.

  Ties between thresholds are broken towards the highest threshold (fewest positives), so the
  choice is deterministic. Classes without positives get +inf.
  """
  labels, scores = _check_inputs(labels, scores, "best_f1_thresholds")
  thresholds = np.full(labels.shape[1], np.inf)
  for c in range(labels.shape[1]):
    y, s = labels[:, c], scores[:, c]
    total_pos = y.sum()
    if total_pos == 0:
      continue
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    tp = np.cumsum(np.add.reduceat(y_sorted, starts))
    predicted = np.cumsum(np.diff(np.r_[starts, len(s_sorted)]))
    f1 = 2 * tp / (total_pos + predicted)
    best = int(np.argmax(f1))
    distinct = s_sorted[starts]
    if best + 1 < len(distinct):
      thresholds[c] = 0.5 * (distinct[best] + distinct[best + 1])
    else:
      thresholds[c] = distinct[best]
  return thresholds


def _bootstrap_weights(num_records: int, n: int, rng: np.random.Generator) -> np.ndarray:
  """Multiplicities (n, num_records) of records drawn with replacement."""
  idx = rng.integers(0, num_records, size=(n, num_records))
  flat = (idx + np.arange(n)[:, None] * num_records).ravel()
  return np.bincount(flat, minlength=n * num_records).reshape(n, num_records).astype(np.float64)


def _summary(value: float, samples: Optional[np.ndarray], alpha: float) -> dict:
  out = {"value": float(value)}
  if samples is not None:
    finite = samples[np.isfinite(samples)]
    if finite.size:
      out["ci_low"] = float(np.percentile(finite, 100 * alpha / 2))
      out["ci_high"] = float(np.percentile(finite, 100 * (1 - alpha / 2)))
    else:
      out["ci_low"] = out["ci_high"] = float("nan")
  return out


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
  counts = np.sum(np.isfinite(x), axis=1)
  sums = np.nansum(x, axis=1)
  return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def evaluate_multilabel(labels, scores, thresholds=None, n_bootstrap: int = 1000, seed: int = 0,
                        alpha: float = 0.05) -> dict:
  """Macro AUROC / AUPRC / F1 with percentile bootstrap CIs (see module docstring).

  Args:
    labels: (N, C) 0/1.
    scores: (N, C) real scores (logits, probabilities or cosines).
    thresholds: optional (C,) F1 thresholds, fixed beforehand on validation data.
    n_bootstrap: number of resamples; 0 disables the CIs.
    seed: resampling seed.
    alpha: 0.05 gives 95 % intervals.
  """
  labels, scores = _check_inputs(labels, scores, "evaluate_multilabel")
  num_records, num_classes = labels.shape
  positives = labels.sum(axis=0)
  valid = (positives > 0) & (positives < num_records)
  valid_idx = np.flatnonzero(valid)
  if thresholds is not None:
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thresholds.shape[0] != num_classes:
      raise ValueError(f"evaluate_multilabel: {thresholds.shape[0]} thresholds for "
                       f"{num_classes} classes")

  per_class_auroc = np.full(num_classes, np.nan)
  per_class_ap = np.full(num_classes, np.nan)
  ones = np.ones((1, num_records))
  for c in valid_idx:
    per_class_auroc[c] = _weighted_auroc_one(labels[:, c], scores[:, c], ones)[0]
    per_class_ap[c] = _weighted_ap_one(labels[:, c], scores[:, c], ones)[0]
  per_class_f1 = None
  if thresholds is not None:
    per_class_f1 = _weighted_f1(labels, scores, thresholds, ones)[0]
    per_class_f1[~valid] = np.nan

  boot = {"auroc": None, "auprc": None, "f1": None}
  if n_bootstrap > 0 and valid_idx.size:
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // num_records)
    parts = {"auroc": [], "auprc": [], "f1": []}
    done = 0
    while done < n_bootstrap:
      b = min(chunk, n_bootstrap - done)
      weights = _bootstrap_weights(num_records, b, rng)
      au = np.stack([_weighted_auroc_one(labels[:, c], scores[:, c], weights)
                     for c in valid_idx], axis=1)
      ap = np.stack([_weighted_ap_one(labels[:, c], scores[:, c], weights)
                     for c in valid_idx], axis=1)
      parts["auroc"].append(_nanmean_rows(au))
      parts["auprc"].append(_nanmean_rows(ap))
      if thresholds is not None:
        f1 = _weighted_f1(labels[:, valid_idx], scores[:, valid_idx], thresholds[valid_idx],
                          weights)
        # A resample without positives of a class leaves that class out, as for AUROC.
        f1 = np.where(weights @ labels[:, valid_idx] > 0, f1, np.nan)
        parts["f1"].append(_nanmean_rows(f1))
      done += b
    boot = {k: (np.concatenate(v) if v else None) for k, v in parts.items()}

  def macro(x):
    return float(np.nanmean(x[valid])) if valid_idx.size else float("nan")

  result = {
      "macro_auroc": _summary(macro(per_class_auroc), boot["auroc"], alpha),
      "macro_auprc": _summary(macro(per_class_ap), boot["auprc"], alpha),
      "num_classes": int(num_classes),
      "num_evaluated": int(valid_idx.size),
      "excluded_classes": [int(c) for c in np.flatnonzero(~valid)],
      "per_class": {"auroc": per_class_auroc.tolist(), "auprc": per_class_ap.tolist()},
  }
  if thresholds is not None:
    result["macro_f1"] = _summary(macro(per_class_f1), boot["f1"], alpha)
    result["per_class"]["f1"] = per_class_f1.tolist()
  return result


def bootstrap_ci(statistic, arrays: Sequence, n_bootstrap: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> dict:
  """Percentile bootstrap CI of any `statistic(*arrays) -> float` by resampling rows.

  The generic (loop) version for metrics without a vectorised form, e.g. retrieval recall or
  text-generation scores. All arrays share their first axis (records). Returns
  `{"value", "ci_low", "ci_high"}`; resamples where the statistic is NaN are ignored.
  """
  arrays = [np.asarray(a) for a in arrays]
  if not arrays or any(a.shape[0] != arrays[0].shape[0] for a in arrays):
    raise ValueError("bootstrap_ci: pass one or more arrays with the same number of rows")
  num = arrays[0].shape[0]
  rng = np.random.default_rng(seed)
  samples = np.array([statistic(*[a[idx] for a in arrays])
                      for idx in rng.integers(0, num, size=(n_bootstrap, num))], dtype=np.float64)
  return _summary(statistic(*arrays), samples if n_bootstrap > 0 else None, alpha)


def macro_auroc(labels, scores) -> float:
  """Macro AUROC over classes with positives and negatives (NaN when there are none)."""
  per_class = auroc(labels, scores)
  return float(np.nanmean(per_class)) if np.any(np.isfinite(per_class)) else float("nan")
