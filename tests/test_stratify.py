"""Tests for multi-label iterative stratification."""

import math

import numpy as np
import pytest

from merit_jax.metrics import stratify


def _skewed_labels(num=3000, num_classes=30, seed=0):
  rng = np.random.default_rng(seed)
  # Prevalences from 30 % down to a handful of positives, some classes co-occurring.
  prevalence = np.geomspace(0.3, 0.0015, num_classes)
  labels = rng.random((num, num_classes)) < prevalence
  labels[:, 5] |= labels[:, 20]  # correlated pair
  return labels.astype(np.uint8)


@pytest.mark.parametrize("fraction", [0.01, 0.1])
def test_subset_covers_every_class_with_enough_positives(fraction):
  labels = _skewed_labels()
  positives = labels.sum(axis=0)
  enough = positives >= math.ceil(1 / fraction)
  assert enough.sum() < labels.shape[1]  # the case includes classes below the bar
  for seed in range(3):
    idx = stratify.stratified_subset(labels, fraction, seed)
    assert idx.size == round(fraction * labels.shape[0])
    assert len(np.unique(idx)) == idx.size and np.all(np.diff(idx) > 0)
    sub = labels[idx].sum(axis=0)
    missing = np.flatnonzero(enough & (sub == 0))
    assert missing.size == 0, f"seed {seed}: classes {missing} have no positive"


def test_subset_follows_class_proportions_better_than_random():
  labels = _skewed_labels(seed=1)
  fraction = 0.1
  full = labels.mean(axis=0)
  idx = stratify.stratified_subset(labels, fraction, seed=0)
  strat_err = np.abs(labels[idx].mean(axis=0) - full).sum()
  rng = np.random.default_rng(0)
  rand_err = np.mean([np.abs(labels[rng.choice(len(labels), idx.size, replace=False)]
                             .mean(axis=0) - full).sum() for _ in range(5)])
  assert strat_err < 0.6 * rand_err


def test_seeded_and_cover_all():
  labels = _skewed_labels()
  a = stratify.stratified_subset(labels, 0.01, seed=4)
  b = stratify.stratified_subset(labels, 0.01, seed=4)
  c = stratify.stratified_subset(labels, 0.01, seed=5)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  full = stratify.stratified_subset(labels, 0.01, seed=4, cover_all=True)
  assert np.all(labels[full].sum(axis=0)[labels.sum(axis=0) > 0] > 0)
  np.testing.assert_array_equal(stratify.stratified_subset(labels, 1.0, 0),
                                np.arange(len(labels)))


@pytest.mark.parametrize("seed", [0, 1])
def test_iterative_stratification_splits_every_class_in_proportion(seed):
  labels = _skewed_labels(num=1000, seed=2 + seed)
  proportions = np.array([0.5, 0.3, 0.2])
  assignment = stratify.iterative_stratification(labels, proportions, seed=seed)
  assert assignment.shape == (1000,) and set(np.unique(assignment)) == {0, 1, 2}
  np.testing.assert_allclose(np.bincount(assignment) / 1000, proportions, atol=0.02)
  # Per fold and class, positives = proportion x the class's positives, up to one record.
  positives = np.stack([labels[assignment == k].sum(axis=0) for k in range(3)])
  target = proportions[:, None] * labels.sum(axis=0)[None]
  assert np.abs(positives - target).max() <= 1.0
  # A random split of the same sizes is far off for the common classes.
  random = np.random.default_rng(seed).permutation(assignment)
  random_positives = np.stack([labels[random == k].sum(axis=0) for k in range(3)])
  assert np.abs(random_positives - target).sum() > 4 * np.abs(positives - target).sum()


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5])
def test_subset_positives_per_class_follow_the_fraction(fraction):
  labels = _skewed_labels(seed=3)
  idx = stratify.stratified_subset(labels, fraction, seed=1)
  # Within 2 records of fraction x positives for every class (the coverage repair may move
  # a rare class by one record more than the rounding).
  deviation = np.abs(labels[idx].sum(axis=0) - fraction * labels.sum(axis=0))
  assert deviation.max() <= 2.0, deviation


def test_bad_input():
  with pytest.raises(ValueError, match="fraction"):
    stratify.stratified_subset(np.ones((4, 2)), 0.0, 0)
  with pytest.raises(ValueError, match="num_records, num_classes"):
    stratify.stratified_subset(np.ones(4), 0.5, 0)


@pytest.mark.parametrize("task", ["super_class", "sub_class", "form", "rhythm"])
def test_real_ptbxl_training_labels(ptbxl_dir, task):
  import pandas as pd
  table = pd.read_csv(ptbxl_dir / "labels_merl" / f"ptbxl_{task}_train.csv")
  labels = table.iloc[:, 6:].to_numpy().astype(np.uint8)  # class columns follow the metadata
  assert labels.shape[1] in (5, 23, 19, 12) and labels.shape[0] > 7000
  positives = labels.sum(axis=0)
  for fraction in (0.01, 0.1):
    idx = stratify.stratified_subset(labels, fraction, seed=0)
    sub = labels[idx].sum(axis=0)
    enough = positives >= math.ceil(1 / fraction)
    assert np.all(sub[enough] > 0), (task, fraction, np.flatnonzero(enough & (sub == 0)))
    # Class prevalences in the subset stay close to the full training set's (within 2 points,
    # or 3 records for tiny subsets).
    np.testing.assert_allclose(labels[idx].mean(axis=0), labels.mean(axis=0),
                               atol=max(0.02, 3 / idx.size))
  # Five equal folds: each class's positives split evenly, up to one record per fold.
  folds = stratify.iterative_stratification(labels, np.full(5, 0.2), seed=0)
  per_fold = np.stack([labels[folds == k].sum(axis=0) for k in range(5)])
  assert np.abs(per_fold - positives / 5).max() <= 1.0, task
