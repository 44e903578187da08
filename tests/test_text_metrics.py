"""Report-generation metrics against hand-computed values and nltk."""

import math

import numpy as np
import pytest

from merit_jax.metrics import text as tm


def test_bleu_identical_is_one():
  scores = tm.corpus_bleu(["sinus rhythm, normal ecg."], ["Sinus rhythm. Normal ECG"])
  assert all(math.isclose(v, 1.0) for v in scores.values()), scores


def test_bleu_hand_worked():
  # hyp: the cat sat on the mat / ref: the cat is on the mat (equal length: BP = 1).
  # clipped matches: 1-grams 5/6, 2-grams 3/5 (the cat, on the, the mat), 3-grams 1/4, 4-grams 0.
  scores = tm.corpus_bleu(["the cat sat on the mat"], ["the cat is on the mat"])
  assert scores["bleu1"] == pytest.approx(5 / 6)
  assert scores["bleu2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
  assert scores["bleu3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
  assert scores["bleu4"] == 0.0
  # Brevity penalty: 2 tokens against 6: exp(1 - 6/2).
  short = tm.corpus_bleu(["the cat"], ["the cat sat on the mat"], max_n=2)
  assert short["bleu2"] == pytest.approx(math.exp(-2))


def test_bleu_matches_nltk_corpus_bleu():
  bleu_score = pytest.importorskip("nltk.translate.bleu_score")
  hyps = ["sinus rhythm with left axis deviation and left anterior fascicular block",
          "atrial fibrillation with rapid ventricular response",
          "sinus bradycardia otherwise normal ecg"]
  refs = [["sinus rhythm left axis deviation left anterior fascicular block",
           "sinus rhythm with left anterior fascicular block"],
          ["atrial fibrillation with a rapid ventricular response noted"],
          ["sinus bradycardia otherwise normal ecg"]]
  ours = tm.corpus_bleu(hyps, refs)
  tok_refs = [[tm.tokenize(r) for r in rs] for rs in refs]
  tok_hyps = [tm.tokenize(h) for h in hyps]
  for n in range(1, 5):
    want = bleu_score.corpus_bleu(tok_refs, tok_hyps, weights=tuple([1 / n] * n))
    assert ours[f"bleu{n}"] == pytest.approx(want, abs=1e-12), n


def test_rouge_l_known_lcs():
  assert tm.lcs_length(list("abcde"), list("axcyez")) == 3
  # LCS(a b c d e, a x c y e z) = a c e: P = 3/5, R = 3/6.
  p, r = 3 / 5, 3 / 6
  assert tm.rouge_l(["a b c d e"], ["a x c y e z"]) == pytest.approx(2 * p * r / (p + r))
  assert tm.rouge_l(["same words here"], ["Same words, here."]) == pytest.approx(1.0)
  assert tm.rouge_l(["nothing shared"], ["other text"]) == 0.0
  # Best of several references; mean over hypotheses.
  assert tm.rouge_l(["a b", "c d"], [["x y", "a b"], "q r"]) == pytest.approx(0.5)


def test_meteor_identical_and_known_values():
  pytest.importorskip("nltk")
  try:
    tm.wordnet_reader()
  except LookupError as e:
    pytest.skip(str(e))
  assert tm.meteor(["the cat sat on the mat"], ["the cat sat on the mat"]) > 0.99
  # Hand-worked: 2 exact matches, P = 1, R = 2/3, Fmean = 10PR/(R + 9P) = 20/29,
  # one chunk: penalty 0.5 * (1/2)^3.
  assert tm.meteor(["the cat"], ["the cat sat"]) == pytest.approx(20 / 29 * (1 - 0.0625))
  # Value from nltk's own meteor_score (stem + WordNet synonym 'sitting' ~ 'sat').
  assert tm.meteor(["the cat was sitting on the mat"], ["a cat sat on the mat"]) == (
      pytest.approx(0.6147540983606558, abs=1e-9))


def test_input_validation():
  with pytest.raises(ValueError, match="2 hypotheses but 1"):
    tm.corpus_bleu(["a", "b"], ["a"])
  with pytest.raises(ValueError, match="no reference"):
    tm.rouge_l(["a"], [[]])


def test_scp_matcher_english_and_german():
  match = tm.ScpMatcher()
  assert match("Sinusrhythmus. Vorhofflimmern.") >= {"SR", "AFIB"}
  assert "CLBBB" in match("sinus rhythm. complete left bundle branch block.")
  assert "CLBBB" in match("sinusrhythmus linksschenkelblock")
  german_irbbb = match("sinusrhythmus unvollstÄndiger rechtsschenkelblock sonst normales ekg")
  assert german_irbbb == {"SR", "IRBBB", "NORM"}
  assert "CRBBB" not in match("incomplete right bundle branch block")
  assert match("sinusbradykardie, ventrikulÄre extrasystole(n)") == {"SBRAD", "PVC"}
  assert match("abnormal qrs") == {"ABQRS"}
  assert "NORM" not in match("abnormal ecg")
  # Located ischaemia replaces the unlocated code.
  assert match("st & t abnormal, wahrscheinlich anteriore ischÄmie") & {"ISCAN", "ISC_"} == {
      "ISCAN"}


def test_clinical_f1_hand_computed():
  generated = ["sinus rhythm. normal ecg.", "atrial fibrillation. left bundle branch block.",
               "sinus rhythm"]
  labels = [{"SR", "NORM"}, {"AFIB", "IRBBB"}, {"SR", "LVH"}]
  got = tm.clinical_f1(generated, labels)
  # Predicted: {SR, NORM}, {AFIB, CLBBB}, {SR}. TP = 4 (SR×2, NORM, AFIB), FP = 1 (CLBBB),
  # FN = 2 (IRBBB, LVH).
  assert got["micro_precision"] == pytest.approx(4 / 5)
  assert got["micro_recall"] == pytest.approx(4 / 6)
  assert got["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))
  # Codes with label support: SR 1, NORM 1, AFIB 1, IRBBB 0, LVH 0 → macro 3/5.
  assert got["num_codes"] == 5
  assert got["macro_f1"] == pytest.approx(3 / 5)
  assert "CLBBB" not in got["per_code"]  # No support: not in the macro average.
  restricted = tm.clinical_f1(generated, labels, codes=["SR", "AFIB"])
  assert restricted["micro_f1"] == pytest.approx(1.0)


def test_report_generation_metrics_keys():
  out = tm.report_generation_metrics(["sinus rhythm"], ["sinus rhythm"], labels=[{"SR"}],
                                     with_meteor=False)
  assert set(out) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "clinical_micro_f1",
                      "clinical_macro_f1"}
  assert out["rouge_l"] == 1.0 and out["clinical_micro_f1"] == 1.0


def test_matcher_recovers_ptbxl_labels_from_reference_reports(ptbxl_dir):
  pd = pytest.importorskip("pandas")
  import ast  # pylint: disable=g-import-not-at-top
  db = pd.read_csv(ptbxl_dir / "ptbxl_database.csv", usecols=["report", "scp_codes"])
  db = db.head(2000)
  labels = [set(ast.literal_eval(s)) for s in db["scp_codes"]]
  got = tm.clinical_f1(list(db["report"]), labels)
  # The ceiling a perfect generator could reach with this matcher (reports vs labels).
  print(f"matcher on reference reports: micro F1 {got['micro_f1']:.3f}, "
        f"macro F1 {got['macro_f1']:.3f} over {got['num_codes']} codes")
  assert got["per_code"]["SR"]["f1"] > 0.95
  assert got["per_code"]["AFIB"]["f1"] > 0.9
  assert got["micro_f1"] > 0.6


# ------------------------------------------------------------------------------- bootstrap

def _meteor_available() -> bool:
  try:
    pytest.importorskip("nltk")
    tm.wordnet_reader()
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
  matcher = tm.ScpMatcher()
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
  want = tm.report_generation_metrics(good, refs, labels=labels, with_meteor=with_meteor)
  got = tm.bootstrap_generation_metrics(good, refs, labels, with_meteor=with_meteor,
                                        n_bootstrap=200)
  assert set(got) == set(want)
  assert set(tm.GENERATION_METRICS) - set(got) <= {"meteor"}
  for k, v in want.items():
    assert abs(got[k]["value"] - v) <= 1e-12, k
    assert set(got[k]) == {"value", "ci_low", "ci_high"}, k
  # Without labels (and METEOR) the clinical keys are left out, as in report_generation_metrics.
  plain = tm.bootstrap_generation_metrics(good, refs, with_meteor=False, n_bootstrap=10)
  assert set(plain) == set(tm.report_generation_metrics(good, refs, with_meteor=False))


def test_bootstrap_ci_contains_value_and_has_width():
  good, _, refs, labels = _generation_case()
  got = tm.bootstrap_generation_metrics(good, refs, labels, with_meteor=_meteor_available(),
                                        n_bootstrap=500)
  for k, s in got.items():
    assert 0.0 <= s["ci_low"] <= s["value"] <= s["ci_high"] <= 1.0, (k, s)
    assert s["ci_high"] - s["ci_low"] > 0.01, (k, s)  # 40 records: clearly not a point.


def test_resampled_metrics_equal_rescoring_the_resampled_records():
  """The sums-of-statistics shortcut against report_generation_metrics on each resample."""
  good, _, refs, labels = _generation_case(n=25, seed=1)
  with_meteor = _meteor_available()
  stats = tm.record_statistics(good, refs, labels, with_meteor)
  indices = tm.resample_indices(len(good), 6, seed=3)
  assert indices.shape == (6, 25)
  fast = tm.resampled_metrics(stats, indices)
  for b, idx in enumerate(indices):
    want = tm.report_generation_metrics([good[i] for i in idx], [refs[i] for i in idx],
                                        [labels[i] for i in idx], with_meteor)
    for k, v in want.items():
      assert fast[k][b] == pytest.approx(v, abs=1e-12), (b, k)


def test_bootstrap_paired_difference():
  good, poor, refs, labels = _generation_case()
  got = tm.bootstrap_generation_metrics(good, refs, labels, with_meteor=False, n_bootstrap=300,
                                        baseline_generated=poor)
  base = tm.report_generation_metrics(poor, refs, labels, with_meteor=False)
  for k, s in got.items():
    assert s["diff"] == pytest.approx(s["value"] - base[k], abs=1e-12), k
    assert s["diff_ci_low"] <= s["diff"] <= s["diff_ci_high"], (k, s)
  # The good system copies most reference phrases: clearly better than the poor one.
  assert got["rouge_l"]["diff_ci_low"] > 0 and got["clinical_micro_f1"]["diff_ci_low"] > 0

  same = tm.bootstrap_generation_metrics(good, refs, labels, with_meteor=_meteor_available(),
                                         n_bootstrap=100, baseline_generated=list(good))
  for k, s in same.items():
    assert (s["diff"], s["diff_ci_low"], s["diff_ci_high"]) == (0.0, 0.0, 0.0), k


def test_bootstrap_is_deterministic_per_seed():
  good, poor, refs, labels = _generation_case()
  kwargs = dict(labels=labels, with_meteor=False, n_bootstrap=100, baseline_generated=poor)
  a = tm.bootstrap_generation_metrics(good, refs, seed=7, **kwargs)
  assert a == tm.bootstrap_generation_metrics(good, refs, seed=7, **kwargs)
  b = tm.bootstrap_generation_metrics(good, refs, seed=8, **kwargs)
  assert any(a[k]["ci_low"] != b[k]["ci_low"] or a[k]["ci_high"] != b[k]["ci_high"]
             for k in a)
  # Resamples are drawn one by one, so memory chunking cannot change them.
  np.testing.assert_array_equal(tm.resample_indices(40, 5, seed=7),
                                tm.resample_indices(40, 9, seed=7)[:5])


def test_bootstrap_input_validation():
  good, poor, refs, labels = _generation_case(n=5)
  for bad in (0, -3, 2.5):
    with pytest.raises(ValueError, match="n_bootstrap must be a positive integer"):
      tm.bootstrap_generation_metrics(good, refs, with_meteor=False, n_bootstrap=bad)
  with pytest.raises(ValueError, match="5 hypotheses but 4"):
    tm.bootstrap_generation_metrics(good, refs[:4], with_meteor=False, n_bootstrap=10)
  with pytest.raises(ValueError, match="5 generated reports but 3 label sets"):
    tm.bootstrap_generation_metrics(good, refs, labels[:3], with_meteor=False, n_bootstrap=10)
  with pytest.raises(ValueError, match="5 generated reports but 4 baseline"):
    tm.bootstrap_generation_metrics(good, refs, with_meteor=False, n_bootstrap=10,
                                    baseline_generated=poor[:4])
  with pytest.raises(ValueError, match="at least one record"):
    tm.bootstrap_generation_metrics([], [], with_meteor=False, n_bootstrap=10)
  with pytest.raises(ValueError, match="alpha"):
    tm.bootstrap_generation_metrics(good, refs, with_meteor=False, alpha=1.5)
  stats = tm.record_statistics(good, refs, labels, with_meteor=False)
  with pytest.raises(ValueError, match="baseline metrics"):
    tm.bootstrap_from_statistics(stats, tm.record_statistics(poor, refs, None, False))
