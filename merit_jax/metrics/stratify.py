"""Multi-label iterative stratification for label-fraction subsets (Sechidis et al., 2011).

Public API:

- `stratified_subset(labels, fraction, seed, cover_all=False) -> indices`: sorted int64 indices
  of about `round(fraction * N)` records (at least 1) whose per-class positive counts follow the
  full set's proportions. Every class with at least `ceil(1 / fraction)` positives (enough for
  one expected positive) is guaranteed at least one positive in the subset; with
  `cover_all=True` every class with any positive is, as far as the subset size allows.
  `fraction == 1` returns all indices. Deterministic for a given seed.
- `iterative_stratification(labels, proportions, seed) -> (N,) subset id per record`: the
  general k-way algorithm it is built on.

Algorithm (Sechidis, Tsoumakas & Vlahavas, ECML-PKDD 2011): repeatedly take the label with the
fewest remaining examples, and hand each of its examples to the subset that most wants that
label (ties: the subset that wants the most examples, then random). After that a small repair
swaps in a positive for any guaranteed class the subset still misses, swapping out a record
whose classes stay covered, so the subset size does not change.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _check_labels(labels) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 2:
    raise ValueError(f"stratify: labels must be (num_records, num_classes), got {labels.shape}")
  if labels.shape[0] == 0:
    raise ValueError("stratify: no records")
  if not np.all((labels == 0) | (labels == 1)):
    raise ValueError("stratify: labels must be 0/1 multi-hot")
  return labels.astype(bool)


def iterative_stratification(labels, proportions: Sequence[float], seed: int) -> np.ndarray:
  """Assigns each record to one of `len(proportions)` subsets; returns (N,) subset ids."""
  labels = _check_labels(labels)
  proportions = np.asarray(proportions, dtype=np.float64)
  if proportions.ndim != 1 or np.any(proportions < 0) or not np.isclose(proportions.sum(), 1):
    raise ValueError(f"stratify: proportions must be non-negative and sum to 1, got {proportions}")
  rng = np.random.default_rng(seed)
  num_records, _ = labels.shape
  want_records = proportions * num_records                       # (K,)
  want_labels = proportions[:, None] * labels.sum(axis=0)[None]  # (K, C)
  assignment = np.full(num_records, -1, dtype=np.int64)
  remaining = np.ones(num_records, dtype=bool)
  labels_f = labels.astype(np.float64)

  def assign(i, wanted_for_label):
    best = np.flatnonzero(wanted_for_label == wanted_for_label.max())
    if best.size > 1:
      by_size = want_records[best]
      best = best[by_size == by_size.max()]
    k = int(best[rng.integers(best.size)]) if best.size > 1 else int(best[0])
    assignment[i] = k
    remaining[i] = False
    want_records[k] -= 1
    want_labels[k] -= labels_f[i]

  while True:
    counts = labels[remaining].sum(axis=0)
    present = np.flatnonzero(counts > 0)
    if present.size == 0:
      break
    rarest = present[counts[present] == counts[present].min()]
    label = int(rarest[rng.integers(rarest.size)])
    members = np.flatnonzero(remaining & labels[:, label])
    for i in rng.permutation(members):
      assign(i, want_labels[:, label])
  # Records without any label follow the record-count targets only.
  for i in rng.permutation(np.flatnonzero(remaining)):
    assign(i, want_records.copy())
  return assignment


def _repair_coverage(labels: np.ndarray, chosen: np.ndarray, required: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
  """Swaps records so that every class in `required` has a positive in `chosen`."""
  chosen = chosen.copy()
  for c in rng.permutation(np.flatnonzero(required)):
    if np.any(labels[chosen, c]):
      continue
    candidates = np.flatnonzero(labels[:, c] & ~chosen)
    # Prefer the candidate that brings in the most other still-missing required classes.
    missing = required & ~labels[chosen].any(axis=0)
    gain = labels[candidates][:, missing].sum(axis=1)
    incoming = int(candidates[np.argmax(gain)])
    counts = labels[chosen].sum(axis=0)
    # A record can leave when every required class it carries stays covered without it.
    members = np.flatnonzero(chosen)
    removable = [i for i in rng.permutation(members)
                 if not np.any(labels[i] & required & (counts <= 1))]
    chosen[incoming] = True
    if removable:
      chosen[removable[0]] = False
  return chosen


def stratified_subset(labels, fraction: float, seed: int, cover_all: bool = False) -> np.ndarray:
  """Sorted indices of a multi-label stratified subset of about `fraction` of the records."""
  labels = _check_labels(labels)
  if not 0 < fraction <= 1:
    raise ValueError(f"stratified_subset: fraction must be in (0, 1], got {fraction}")
  num_records = labels.shape[0]
  if fraction == 1:
    return np.arange(num_records, dtype=np.int64)
  size = max(1, int(round(fraction * num_records)))
  assignment = iterative_stratification(labels, [size / num_records, 1 - size / num_records],
                                        seed)
  chosen = assignment == 0
  # The greedy pass gives proportional, not exact, sizes; trim or fill at random to `size`.
  rng = np.random.default_rng([seed, 1])
  if chosen.sum() > size:
    counts = labels[chosen].sum(axis=0)
    members = rng.permutation(np.flatnonzero(chosen))
    for i in members:
      if chosen.sum() == size:
        break
      if not np.any(labels[i] & (counts <= 1)):
        chosen[i] = False
        counts -= labels[i]
  elif chosen.sum() < size:
    extra = rng.permutation(np.flatnonzero(~chosen))[:size - chosen.sum()]
    chosen[extra] = True
  positives = labels.sum(axis=0)
  required = positives >= math.ceil(1 / fraction - 1e-9)
  if cover_all:
    required = positives > 0
  chosen = _repair_coverage(labels, chosen, required, rng)
  return np.flatnonzero(chosen).astype(np.int64)
