"""Report-generation metrics together and their bootstrap over records.

The bootstrap's values and intervals are checked against `report_generation_metrics`
rescored from scratch on the records of each resample.
"""

import numpy as np
import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from merit_jax.metrics import clinical
from merit_jax.metrics import generation as gen
from merit_jax.metrics import text


def test_report_generation_metrics_combines_the_separate_metrics():
  generated = ["sinus rhythm. normal ecg", "atrial fibrillation with left bundle branch block"]
  refs = ["sinus rhythm, normal ecg.", ["atrial fibrillation", "left bundle branch block"]]
  labels = [{"SR", "NORM"}, {"AFIB", "CLBBB", "LVH"}]
  out = gen.report_generation_metrics(generated, refs, labels=labels, with_meteor=False)
  assert set(out) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "clinical_micro_f1",
                      "clinical_macro_f1"}
  # ROUGE-L: 1 for the first; the second's best reference is 'left bundle branch block'
  # (P = 4/7, R = 1); mean over the two.
  assert out["rouge_l"] == pytest.approx((1 + 2 * 4 / 7 / (4 / 7 + 1)) / 2)
  # Statements: 4 of 5 labels found, no false positive; macro over 5 codes, LVH scores 0.
  assert out["clinical_micro_f1"] == pytest.approx(8 / 9)
  assert out["clinical_macro_f1"] == pytest.approx(4 / 5)
  assert set(gen.report_generation_metrics(generated, refs, with_meteor=False)) == {
      "bleu1", "bleu2", "bleu3", "bleu4", "rouge_l"}
  # BLEU: sacrebleu itself (default settings), reference streams padded with None; / 100.
  streams = [["sinus rhythm, normal ecg.", "atrial fibrillation"],
             [None, "left bundle branch block"]]
  for n in (1, 4):
    assert out[f"bleu{n}"] == BLEU(max_ngram_order=n).corpus_score(generated, streams).score / 100
  # ROUGE-L: rouge-score itself, its best reference per record, mean over records.
  scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
  assert out["rouge_l"] == pytest.approx(np.mean(
      [scorer.score_multi(r if isinstance(r, list) else [r], h)["rougeL"].fmeasure
       for h, r in zip(generated, refs)]), abs=1e-15)


def test_resampled_bleu_equals_sacrebleu_corpus_score_of_the_resample():
  """Each resample's BLEU is sacrebleu's corpus_score on the resampled records, exactly."""
  good, _, refs, labels = _generation_case(n=30, seed=5)
  refs[3] = refs[3].replace("sinus", "Sinusrhythmus, unvollständiger")  # Non-ASCII, case.
  stats = gen.record_statistics(good, refs, labels, with_meteor=False)
  indices = gen.resample_indices(len(good), 20, seed=1, stats=stats)
  fast = gen.resampled_metrics(stats, indices)
  scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False,
                                    tokenizer=text.UnicodeWordTokenizer())
  for b, idx in enumerate(indices):
    hyps, rs = [good[i] for i in idx], [refs[i] for i in idx]
    for n in (1, 2, 3, 4):
      assert fast[f"bleu{n}"][b] == BLEU(max_ngram_order=n).corpus_score(
          hyps, [rs]).score / 100, (b, n)
    want = np.mean([scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, rs)])
    assert fast["rouge_l"][b] == pytest.approx(want, abs=1e-12), b


# ------------------------------------------------------------------------------- bootstrap

def _meteor_available() -> bool:
  try:
    pytest.importorskip("nltk")
    text.wordnet_reader()
  except (LookupError, pytest.skip.Exception):
    return False
  return True


_PHRASES = ("sinus rhythm", "normal ecg", "atrial fibrillation", "left bundle branch block",
            "incomplete right bundle branch block", "left ventricular hypertrophy",
            "inferior myocardial infarction", "st depression", "sinus bradycardia",
            "first degree av block", "left anterior fascicular block", "t wave inversion")


def _generation_case(n=40, seed=0):
  """PTB-XL-like references, labels from them, and two imperfect 'systems' (a good and a
  poor one) that copy, drop or swap phrases of the reference."""
  rng = np.random.default_rng(seed)
  refs, labels, good, poor = [], [], [], []
  matcher = clinical.ScpMatcher()
  for _ in range(n):
    phrases = list(rng.choice(_PHRASES, size=rng.integers(1, 4), replace=False))
    ref = ". ".join(phrases) + "."
    refs.append(ref)
    labels.append(matcher(ref))
    kept = [p if rng.random() < 0.8 else rng.choice(_PHRASES) for p in phrases]
    good.append(" ".join(kept))
    poor.append(" ".join(rng.choice(_PHRASES, size=rng.integers(1, 3))))
  return good, poor, refs, labels


def test_bootstrap_value_equals_report_generation_metrics():
  good, _, refs, labels = _generation_case()
  with_meteor = _meteor_available()
  want = gen.report_generation_metrics(good, refs, labels=labels, with_meteor=with_meteor)
  got = gen.bootstrap_generation_metrics(good, refs, labels, with_meteor=with_meteor,
                                         n_bootstrap=200)
  assert set(got) == set(want)
  assert set(gen.GENERATION_METRICS) - set(got) <= {"meteor"}
  for k, v in want.items():
    assert abs(got[k]["value"] - v) <= 1e-12, k
    assert set(got[k]) == {"value", "ci_low", "ci_high"}, k
  # Without labels (and METEOR) the clinical keys are left out, as in report_generation_metrics.
  plain = gen.bootstrap_generation_metrics(good, refs, with_meteor=False, n_bootstrap=10)
  assert set(plain) == set(gen.report_generation_metrics(good, refs, with_meteor=False))


def test_bootstrap_ci_contains_value_and_has_width():
  good, _, refs, labels = _generation_case()
  got = gen.bootstrap_generation_metrics(good, refs, labels, with_meteor=_meteor_available(),
                                         n_bootstrap=500)
  for k, s in got.items():
    assert 0.0 <= s["ci_low"] <= s["value"] <= s["ci_high"] <= 1.0, (k, s)
    assert s["ci_high"] - s["ci_low"] > 0.01, (k, s)  # 40 records: clearly not a point.


def test_resampled_metrics_equal_rescoring_the_resampled_records():
  """The sums-of-statistics shortcut against report_generation_metrics on each resample."""
  good, _, refs, labels = _generation_case(n=25, seed=1)
  with_meteor = _meteor_available()
  stats = gen.record_statistics(good, refs, labels, with_meteor)
  indices = gen.resample_indices(len(good), 6, seed=3)
  assert indices.shape == (6, 25)
  fast = gen.resampled_metrics(stats, indices)
  for b, idx in enumerate(indices):
    want = gen.report_generation_metrics([good[i] for i in idx], [refs[i] for i in idx],
                                         [labels[i] for i in idx], with_meteor)
    for k, v in want.items():
      assert fast[k][b] == pytest.approx(v, abs=1e-12), (b, k)


def test_bootstrap_paired_difference():
  good, poor, refs, labels = _generation_case()
  got = gen.bootstrap_generation_metrics(good, refs, labels, with_meteor=False, n_bootstrap=300,
                                         baseline_generated=poor)
  base = gen.report_generation_metrics(poor, refs, labels, with_meteor=False)
  for k, s in got.items():
    assert s["diff"] == pytest.approx(s["value"] - base[k], abs=1e-12), k
    assert s["diff_ci_low"] <= s["diff"] <= s["diff_ci_high"], (k, s)
  # The good system copies most reference phrases: clearly better than the poor one.
  assert got["rouge_l"]["diff_ci_low"] > 0 and got["clinical_micro_f1"]["diff_ci_low"] > 0

  same = gen.bootstrap_generation_metrics(good, refs, labels, with_meteor=_meteor_available(),
                                          n_bootstrap=100, baseline_generated=list(good))
  for k, s in same.items():
    assert (s["diff"], s["diff_ci_low"], s["diff_ci_high"]) == (0.0, 0.0, 0.0), k


def test_bootstrap_is_deterministic_per_seed():
  good, poor, refs, labels = _generation_case()
  kwargs = dict(labels=labels, with_meteor=False, n_bootstrap=100, baseline_generated=poor)
  a = gen.bootstrap_generation_metrics(good, refs, seed=7, **kwargs)
  assert a == gen.bootstrap_generation_metrics(good, refs, seed=7, **kwargs)
  b = gen.bootstrap_generation_metrics(good, refs, seed=8, **kwargs)
  assert any(a[k]["ci_low"] != b[k]["ci_low"] or a[k]["ci_high"] != b[k]["ci_high"]
             for k in a)
  # Resamples are drawn one by one, so memory chunking cannot change them.
  np.testing.assert_array_equal(gen.resample_indices(40, 5, seed=7),
                                gen.resample_indices(40, 9, seed=7)[:5])


def test_bootstrap_input_validation():
  good, poor, refs, labels = _generation_case(n=5)
  for bad in (0, -3, 2.5):
    with pytest.raises(ValueError, match="n_bootstrap must be a positive integer"):
      gen.bootstrap_generation_metrics(good, refs, with_meteor=False, n_bootstrap=bad)
  with pytest.raises(ValueError, match="5 hypotheses but 4"):
    gen.bootstrap_generation_metrics(good, refs[:4], with_meteor=False, n_bootstrap=10)
  with pytest.raises(ValueError, match="5 generated reports but 3 label sets"):
    gen.bootstrap_generation_metrics(good, refs, labels[:3], with_meteor=False, n_bootstrap=10)
  with pytest.raises(ValueError, match="5 generated reports but 4 baseline"):
    gen.bootstrap_generation_metrics(good, refs, with_meteor=False, n_bootstrap=10,
                                     baseline_generated=poor[:4])
  with pytest.raises(ValueError, match="at least one record"):
    gen.bootstrap_generation_metrics([], [], with_meteor=False, n_bootstrap=10)
  with pytest.raises(ValueError, match="alpha"):
    gen.bootstrap_generation_metrics(good, refs, with_meteor=False, alpha=1.5)
  stats = gen.record_statistics(good, refs, labels, with_meteor=False)
  with pytest.raises(ValueError, match="baseline metrics"):
    gen.bootstrap_from_statistics(stats, gen.record_statistics(poor, refs, None, False))
