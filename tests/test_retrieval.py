"""Tests for ECG↔report Recall@K."""

import numpy as np
import pytest

from merit_jax.evaluators import retrieval


def test_constructed_case_both_directions():
  # 4 paired items on axes; ECG 3 is closest to report 0 instead of its own report 3
  # (its own report is second), report 2 is closest to ECG 1 (its own ECG second).
  text = np.eye(4)
  ecg = np.eye(4)
  ecg[3] = [0.9, 0.0, 0.0, 0.5]
  text[2] = [0.0, 0.9, 0.5, 0.0]
  out = retrieval.recall_at_k(ecg, text, ks=(1, 2, 4))
  # ECG→report: ECG 0, 1 top-1; ECG 2 ranks report 2 (0.5/|t2|) vs report 1 (0) -> top-1;
  # ECG 3: report 0 scores 0.9/|e3| > report 3 0.5/|e3| -> rank 2.
  assert out["ecg_to_report/R@1"] == pytest.approx(3 / 4)
  assert out["ecg_to_report/R@2"] == pytest.approx(1.0)
  # Report→ECG: report 2 is closer to ECG 1 -> rank 2; report 0 is closer to ECG 0 (1.0 vs
  # 0.87) -> rank 1; report 3 -> ECG 3 only.
  assert out["report_to_ecg/R@1"] == pytest.approx(3 / 4)
  assert out["report_to_ecg/R@4"] == pytest.approx(1.0)
  assert out["chance/ecg_to_report/R@1"] == pytest.approx(1 / 4)
  assert out["chance/ecg_to_report/R@2"] == pytest.approx(2 / 4)
  assert out["ecg_to_report/median_rank"] == pytest.approx(1.0)


def test_duplicate_reports_count_as_correct():
  rng = np.random.default_rng(0)
  ecg = rng.normal(size=(6, 8))
  ecg[1] = ecg[0] + 0.05 * rng.normal(size=8)  # two ECGs with the same finding
  text = ecg.copy()
  # Records 0 and 1 share a report text; their report embeddings are identical, so whichever
  # ranks first, both ECGs should find "their" report.
  text[1] = text[0]
  texts = ["sinus rhythm. normal ecg.", "sinus  rhythm. normal ecg. ", "a", "b", "c", "d"]
  without = retrieval.recall_at_k(ecg, text, ks=(1,))
  with_groups = retrieval.recall_at_k(ecg, text, ks=(1,), texts=texts)
  assert without["ecg_to_report/R@1"] < 1.0  # ties count against the query
  assert with_groups["ecg_to_report/R@1"] == pytest.approx(1.0)
  assert with_groups["report_to_ecg/R@1"] == pytest.approx(1.0)
  # Chance with a group of 2 among 6: those two queries have 2 correct items.
  want = (2 * (2 / 6) + 4 * (1 / 6)) / 6
  assert with_groups["chance/ecg_to_report/R@1"] == pytest.approx(want)
  same = retrieval.recall_at_k(ecg, text, ks=(1,), group_ids=[7, 7, 1, 2, 3, 4])
  assert same["ecg_to_report/R@1"] == with_groups["ecg_to_report/R@1"]


def test_random_embeddings_near_chance_and_constant_embeddings_at_chance():
  rng = np.random.default_rng(1)
  out = retrieval.recall_at_k(rng.normal(size=(500, 16)), rng.normal(size=(500, 16)),
                              ks=(1, 5, 10))
  assert out["ecg_to_report/R@10"] == pytest.approx(10 / 500, abs=0.02)
  const = retrieval.recall_at_k(np.ones((50, 4)), np.ones((50, 4)), ks=(1,))
  assert const["ecg_to_report/R@1"] == 0.0


def test_bad_input():
  with pytest.raises(ValueError, match="paired"):
    retrieval.recall_at_k(np.ones((3, 4)), np.ones((4, 4)))
  with pytest.raises(ValueError, match="widths differ"):
    retrieval.recall_at_k(np.ones((3, 4)), np.ones((3, 5)))
