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
- `macro_auroc(labels, scores) -> float`; `bootstrap_ci(statistic, arrays, n_bootstrap, seed,
  alpha, cover=None) -> {"value", "ci_low", "ci_high"}` for any other per-record statistic
  (loop, not vectorised).
- `evaluate_multilabel(labels, scores, thresholds=None, n_bootstrap=1000, seed=0)
  -> dict`: macro AUROC / AUPRC (and macro F1 when thresholds are given) with percentile
  bootstrap 95 % CIs. Result layout:
  `{"macro_auroc": {"value", "ci_low", "ci_high"}, "macro_auprc": {...}, "macro_f1": {...},
    "num_classes", "num_evaluated", "excluded_classes": [indices],
    "per_class": {"auroc": [...], "auprc": [...], "f1": [...]}}` (no CI keys when
  `n_bootstrap=0`; no F1 without thresholds).
- The resampler shared by every bootstrap of the package (this module's, and
  `generation.bootstrap_from_statistics` with its paired differences):
  `iter_resample_indices(num_records, n_bootstrap, seed, cover)` -> int64 (b, N) chunks,
  `resample_indices(...)` -> (n_bootstrap, N), `resample_weights(indices, N)` -> multiplicities,
  `bootstrap_strata(cover)` -> the strata.

Classes with no positives or no negatives in the evaluated set are excluded from every macro
average (AUROC/AP are undefined there) and listed in `excluded_classes`.

The bootstrap keeps every class. A macro mean over a resample must average the same classes as
the point estimate: a resample that misses every positive of a class (a plain bootstrap does
so with probability (1 - n/N)^N ≈ e^-n for n positives among N records: 37 % for PTB-XL's
single-positive SBRAD, SVTAC, PACE) would have to drop it, so that resample's macro mean
averages fewer classes and is a different statistic; rare classes, often the worst scored,
then pull the resampled means away from the point estimate, even outside its interval. So
every resample keeps at least one positive and one negative of every evaluated class (`cover`
= the positive and the negative records of each class; for generated-report statement F1, the
records labelled with each code). The scheme (`bootstrap_strata`, `iter_resample_indices`):

1. Strata where the plain bootstrap could lose a class. Starting from one stratum, each class
   side (its positives, or its negatives) that a resample would miss with probability above
   `MAX_MISS_PROBABILITY` = 1 % (4 or fewer records) splits its records off the stratum it
   overlaps most. A resample draws from each stratum as many records as the stratum holds,
   uniformly with replacement among its members: the standard stratified bootstrap (Davison &
   Hinkley 1997, ch. 3; pROC's stratified bootstrap of an AUC keeps the numbers of cases and
   controls the same way). It holds the rare classes' counts at (or near) their test-fold
   values, as PTB-XL's label-stratified folds (`strat_fold`) do by design: a single positive
   is in every resample exactly once, and a class with 3 positives draws 3 times among them.
2. Everywhere else the plain bootstrap, conditioned on keeping every class: a resample that
   still misses a class side (probability <= 1 % per side, <= 50 % in all, by construction;
   e^-10 ≈ 5e-5 for a class with 10 positives) is drawn again. Where no class is rare there
   is a single stratum: the plain bootstrap, but for those redraws.

Paired comparisons use the same resamples for both systems. Resample b draws from its own
generator `default_rng([seed, b])` (independent of chunking). The statistics are vectorised by
turning each resample into a vector of multiplicities (weights), so one sort per class serves
all resamples.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

# Upper bound on resamples × records held in memory at once by the bootstrap.
BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000
# The bootstrap stratifies a class (column of `cover`) when a resample drawn without it would
# miss all of the class's records with a probability above this (e^-n for n records of N: a
# class with 4 or fewer positives, or negatives); rarer misses are redrawn. See the docstring.
MAX_MISS_PROBABILITY = 0.01
_MAX_REDRAWS = 1000


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


def _as_cover(cover, num_records: Optional[int] = None) -> Optional[np.ndarray]:
  if cover is None:
    return None
  cover = np.asarray(cover)
  if cover.ndim == 1:
    cover = cover[:, None]
  if cover.ndim != 2:
    raise ValueError(f"cover must be (num_records, columns), got shape {cover.shape}")
  if num_records is not None and cover.shape[0] != num_records:
    raise ValueError(f"cover has {cover.shape[0]} rows for {num_records} records")
  cover = cover.astype(bool)
  empty = np.flatnonzero(~cover.any(axis=0))
  if empty.size:
    raise ValueError(f"cover columns {empty.tolist()} mark no record, so no resample could "
                     "keep them")
  if cover.shape[1] > 1:  # A repeated column is the same constraint: keep its first copy.
    _, first = np.unique(cover, axis=1, return_index=True)
    cover = cover[:, np.sort(first)]
  return cover


def _log_miss(sizes: np.ndarray, overlap: np.ndarray) -> np.ndarray:
  """log P(a stratified resample draws no record of column k), (K,): sum over strata s of
  size_s * log(1 - overlap_sk / size_s); -inf when a stratum lies inside the column."""
  with np.errstate(divide="ignore"):
    return np.sum(sizes[:, None] * np.log1p(-overlap / sizes[:, None]), axis=0)


def bootstrap_strata(cover, max_miss: float = MAX_MISS_PROBABILITY) -> np.ndarray:
  """Strata (int64 (N,), ids 0..S-1) of the class-keeping bootstrap (module docstring).

  `cover` is bool (N, K): every resample must hold at least one record of each column (a
  scored class's positives; its negatives where AUROC/AP need them). Starting from one stratum
  (the plain bootstrap), while the column most likely to be missed by a resample drawn within
  the strata has a miss probability above `max_miss` (or the miss probabilities sum above
  1/2), the stratum that overlaps that column most is split into (stratum ∩ column) and
  (stratum \\ column). That column is then kept by every resample (a stratum inside it is drawn
  from in every resample), and no other column's miss probability grows: m log(1 - a/m) is the
  perspective of a concave function, hence superadditive in (m, a). At most K splits;
  deterministic. `max_miss=0` stratifies until every column is kept by construction.

  Raises:
    ValueError: when a column marks no record (it could never be kept).
  """
  cover = _as_cover(cover)
  num_records = cover.shape[0]
  stratum = np.zeros(num_records, np.int64)
  sizes = [num_records]
  overlap = [cover.sum(axis=0)]
  while True:
    miss = np.exp(_log_miss(np.asarray(sizes, np.float64), np.asarray(overlap, np.float64)))
    k = int(np.argmax(miss))
    if miss[k] <= max_miss and miss.sum() <= 0.5:
      return stratum
    split = int(np.argmax(np.asarray(overlap)[:, k]))
    moved = cover[:, k] & (stratum == split)
    stratum[moved] = len(sizes)
    moved_overlap = cover[moved].sum(axis=0)
    overlap[split] = overlap[split] - moved_overlap
    overlap.append(moved_overlap)
    sizes[split] -= int(moved.sum())
    sizes.append(int(moved.sum()))


def iter_resample_indices(num_records: int, n_bootstrap: int, seed: int = 0, cover=None,
                          max_elements: int = BOOTSTRAP_CHUNK_ELEMENTS,
                          max_miss: float = MAX_MISS_PROBABILITY):
  """Yields the resamples' record indices in chunks, int64 (b, num_records), b resamples each.

  THE resampling of every bootstrap in merit_jax (`evaluate_multilabel`, `bootstrap_ci`,
  `generation.bootstrap_from_statistics` and the paired differences built on it). A resample
  draws num_records records with replacement: from each stratum of `bootstrap_strata(cover)` as
  many records as it holds, uniformly among its members (without `cover`: one stratum, the
  plain bootstrap). A resample that misses a column of `cover` anyway (a column the strata do
  not keep by construction; probability <= max_miss each, <= 1/2 together) is drawn again:
  the resamples follow the stratified bootstrap conditioned on keeping every column.

  Resample b draws from its own generator `np.random.default_rng([seed, b])`, so the draws do
  not depend on the chunking (`max_elements` bounds b × num_records) and a shorter run is a
  prefix of a longer one. Within a resample the indices are grouped by stratum, not shuffled
  (metrics of a multiset of records do not depend on the order).
  """
  if isinstance(n_bootstrap, bool) or int(n_bootstrap) != n_bootstrap or n_bootstrap < 0:
    raise ValueError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap!r}")
  if num_records < 1:
    raise ValueError("bootstrap needs at least one record to resample")
  n_bootstrap = int(n_bootstrap)
  cover = _as_cover(cover, num_records)
  if cover is None or cover.shape[1] == 0:
    stratum, check = np.zeros(num_records, np.int64), None
  else:
    stratum = bootstrap_strata(cover, max_miss)
    sizes = np.bincount(stratum).astype(np.float64)
    overlap = np.zeros((sizes.size, cover.shape[1]))
    np.add.at(overlap, stratum, cover.astype(np.float64))
    unkept = np.isfinite(_log_miss(sizes, overlap))  # Columns no stratum lies inside.
    check = cover[:, unkept].astype(np.float32) if unkept.any() else None
  members = np.argsort(stratum, kind="stable")           # records grouped by stratum
  sizes = np.bincount(stratum)
  slot_start = np.repeat(np.cumsum(sizes) - sizes, sizes)  # per draw: its stratum's first
  slot_size = np.repeat(sizes, sizes).astype(np.float64)   # member and the stratum's size
  slot_top = slot_start + np.repeat(sizes - 1, sizes)

  def draw(u):  # uniforms (..., N) -> record indices (..., N)
    return members[np.minimum(slot_start + (u * slot_size).astype(np.int64), slot_top)]

  def missing(indices):  # (b, N) -> bool (b,): a resample without some column's record
    if check is None:
      return np.zeros(indices.shape[0], bool)
    return np.any(resample_weights(indices, num_records).astype(np.float32) @ check == 0,
                  axis=1)

  chunk = max(1, int(max_elements) // num_records)
  for start in range(0, n_bootstrap, chunk):
    rngs = [np.random.default_rng([int(seed), b])
            for b in range(start, min(start + chunk, n_bootstrap))]
    indices = draw(np.stack([rng.random(num_records) for rng in rngs]))
    for row in np.flatnonzero(missing(indices)):
      for _ in range(_MAX_REDRAWS):
        indices[row] = draw(rngs[row].random(num_records))
        if not missing(indices[row:row + 1])[0]:
          break
      else:  # Unreachable in practice: each draw keeps every column with probability >= 1/2.
        raise RuntimeError(f"bootstrap: resample {start + row} missed a class "
                           f"{_MAX_REDRAWS} times")
    yield indices


def resample_indices(num_records: int, n_bootstrap: int, seed: int = 0, cover=None,
                     max_miss: float = MAX_MISS_PROBABILITY) -> np.ndarray:
  """int64 (n_bootstrap, num_records): all resamples of `iter_resample_indices` at once."""
  parts = list(iter_resample_indices(num_records, n_bootstrap, seed, cover, max_miss=max_miss))
  return np.concatenate(parts) if parts else np.zeros((0, num_records), np.int64)


def resample_weights(indices, num_records: int) -> np.ndarray:
  """Multiplicities float64 (B, num_records) of each record in each resample (B, n) of indices.

  Metrics written as weighted sums over records evaluate all B resamples at once with them.
  """
  indices = np.asarray(indices, dtype=np.int64)
  b = indices.shape[0]
  flat = (indices + np.arange(b)[:, None] * num_records).ravel()
  return np.bincount(flat, minlength=b * num_records).reshape(b, num_records).astype(np.float64)


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


def _weighted_macros(y, s, thresholds, weights, with_ap: bool) -> dict:
  """Macro AUROC (and AUPRC, and F1 with thresholds) over the columns of y / s, one value per
  row of `weights` (B, N): every resample of a bootstrap at once."""
  out = {"auroc": np.stack([_weighted_auroc_one(y[:, c], s[:, c], weights)
                            for c in range(y.shape[1])], axis=1).mean(axis=1)}
  if with_ap:
    out["auprc"] = np.stack([_weighted_ap_one(y[:, c], s[:, c], weights)
                             for c in range(y.shape[1])], axis=1).mean(axis=1)
  if thresholds is not None:
    out["f1"] = _weighted_f1(y, s, thresholds, weights).mean(axis=1)
  return out


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
    # Every resample keeps a positive and a negative of every evaluated class, so each
    # resample's macro mean runs over the same classes as the point estimate.
    cover = np.concatenate([labels[:, valid_idx], 1.0 - labels[:, valid_idx]], axis=1) > 0
    parts = {"auroc": [], "auprc": [], "f1": []}
    thr = None if thresholds is None else thresholds[valid_idx]
    for indices in iter_resample_indices(num_records, n_bootstrap, seed, cover):
      macros = _weighted_macros(labels[:, valid_idx], scores[:, valid_idx], thr,
                                resample_weights(indices, num_records), with_ap=True)
      for k, v in macros.items():
        parts[k].append(v)
    boot = {k: (np.concatenate(v) if v else None) for k, v in parts.items()}
    for k, v in boot.items():
      if v is not None and not np.all(np.isfinite(v)):  # The strata rule this out.
        raise AssertionError(f"evaluate_multilabel: a resample lost a class ({k})")

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
                 alpha: float = 0.05, cover=None) -> dict:
  """Percentile bootstrap CI of any `statistic(*arrays) -> float` by resampling rows.

  The generic (loop) version for metrics without a vectorised form, e.g. retrieval recall or
  text-generation scores. All arrays share their first axis (records). Rows are drawn by
  `iter_resample_indices` (the same seed gives the same rows as the other bootstraps here);
  `cover` (bool (N, K), e.g. 0/1 labels) makes every resample keep at least one row of each
  column. Returns `{"value", "ci_low", "ci_high"}`; resamples where the statistic is NaN are
  ignored.
  """
  arrays = [np.asarray(a) for a in arrays]
  if not arrays or any(a.shape[0] != arrays[0].shape[0] for a in arrays):
    raise ValueError("bootstrap_ci: pass one or more arrays with the same number of rows")
  num = arrays[0].shape[0]
  samples = None
  if n_bootstrap > 0:
    samples = np.array([statistic(*[a[idx] for a in arrays])
                        for chunk in iter_resample_indices(num, n_bootstrap, seed, cover)
                        for idx in chunk], dtype=np.float64)
  return _summary(statistic(*arrays), samples, alpha)


def macro_auroc(labels, scores) -> float:
  """Macro AUROC over classes with positives and negatives (NaN when there are none)."""
  per_class = auroc(labels, scores)
  return float(np.nanmean(per_class)) if np.any(np.isfinite(per_class)) else float("nan")


def paired_difference(labels, scores_a, scores_b, thresholds_a=None, thresholds_b=None,
                      n_bootstrap: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
  """System A minus system B on the same records: macro AUROC (and macro F1 when both have
  validation thresholds), each with a paired percentile bootstrap CI.

  Both systems are scored on the same resamples (`iter_resample_indices`, every evaluated class
  kept), so the interval is that of the difference itself, narrower than two separate
  intervals would suggest when the systems err on the same records. Classes are those with
  positives and negatives in `labels`, as in `evaluate_multilabel`.
  Returns {"macro_auroc": {"value", "ci_low", "ci_high"}[, "macro_f1": ...]}.
  """
  labels, scores_a = _check_inputs(labels, scores_a, "paired_difference")
  _, scores_b = _check_inputs(labels, scores_b, "paired_difference")
  with_f1 = thresholds_a is not None and thresholds_b is not None
  num_records = labels.shape[0]
  positives = labels.sum(axis=0)
  valid_idx = np.flatnonzero((positives > 0) & (positives < num_records))
  if not valid_idx.size:
    raise ValueError("paired_difference: no class has both positives and negatives")
  y = labels[:, valid_idx]
  systems = [(np.asarray(s, np.float64)[:, valid_idx],
              None if t is None else np.asarray(t, np.float64).reshape(-1)[valid_idx])
             for s, t in ((scores_a, thresholds_a), (scores_b, thresholds_b))]

  def macro(weights):
    a, b = (_weighted_macros(y, scores, thresholds if with_f1 else None, weights,
                             with_ap=False) for scores, thresholds in systems)
    return {f"macro_{k}": a[k] - b[k] for k in a}

  point = macro(np.ones((1, num_records)))
  samples = {k: [] for k in point}
  if n_bootstrap > 0:
    cover = np.concatenate([y, 1.0 - y], axis=1) > 0
    for indices in iter_resample_indices(num_records, n_bootstrap, seed, cover):
      for k, v in macro(resample_weights(indices, num_records)).items():
        samples[k].append(v)
  return {k: _summary(float(point[k][0]), np.concatenate(samples[k]) if samples[k] else None,
                      alpha) for k in point}
