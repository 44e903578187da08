"""Tests for data/report_language.py and the zero-shot breakdown by report language."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from merit_jax.data import report_language
from merit_jax.evaluators import zero_shot


@pytest.mark.parametrize("text, language", [
    # PTB-XL's reports as stored: upper-cased once, so umlauts come back as Ä / Ö.
    ("sinusrhythmus lagetyp normal normales ekg 4.46   unbestÄtigter bericht", "de"),
    ("vorhofflimmern/-flattern linkstyp linksschenkelblock linkshypertrophie mÖglich", "de"),
    ("sinus arrhythmie sonst normales ekg", "de"),
    ("sinus rhythm. left axis deviation. q waves in v2, old anteroseptal infarct", "en"),
    ("sinus rhythm. normal ecg.", "en"),
    ("trace only requested.", "en"),
    ("sinusrytm vÄnster el-axel normalt ekg", "sv"),
    ("sinusrytm avvikande qrs(t) fÖrlopp    inferior infarkt     Ålder ej bestÄmmbar", "sv"),
    ("pacemaker ekg", "unknown"),   # No marker word: no guess.
    ("4.46", "unknown"),
    ("", "none"),
    ("   ", "none"),
    (None, "none"),
])
def test_report_language(text, language):
  assert report_language.report_language(text) == language


def test_scores_by_group_matches_sklearn_within_each_group():
  rng = np.random.default_rng(0)
  n, classes = 60, ["A", "B", "C"]
  labels = (rng.random((n, 3)) < 0.4).astype(int)
  groups = np.array(["de"] * 30 + ["en"] * 24 + ["sv"] * 6)
  labels[30:54, 2] = 0  # Class C has no positive among the English records.
  scores = labels + rng.normal(0, 1.0, (n, 3))
  out = zero_shot.scores_by_group(labels, scores, groups, classes, min_records=10,
                                  n_bootstrap=50)
  assert out["sv"] == {"num_records": 6}  # Too few to score: counted only.
  for group, idx in (("de", slice(0, 30)), ("en", slice(30, 54))):
    y, s = labels[idx], scores[idx]
    scorable = [c for c in range(3) if 0 < y[:, c].sum() < len(y)]
    per_class = {classes[c]: sk_metrics.roc_auc_score(y[:, c], s[:, c]) for c in scorable}
    entry = out[group]
    assert entry["num_records"] == len(y)
    assert entry["macro_auroc"]["value"] == pytest.approx(np.mean(list(per_class.values())))
    assert entry["macro_auroc"]["ci_low"] <= entry["macro_auroc"]["value"] <= (
        entry["macro_auroc"]["ci_high"])
    for c in classes:
      assert entry["per_class_auroc"][c] == (pytest.approx(per_class[c]) if c in per_class
                                             else None)
  assert out["en"]["per_class_auroc"]["C"] is None
