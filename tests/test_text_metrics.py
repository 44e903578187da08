"""BLEU (sacrebleu), ROUGE-L (rouge-score) and METEOR (nltk) of `metrics.text`, against the
libraries called directly and against hand-worked values.

The BLEU and ROUGE-L tests call sacrebleu and rouge-score themselves on hand examples, so a
change of library version or of our wrapper (reference layout, tokenizer, scaling) shows up.
"""

import math

import numpy as np
import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from merit_jax.metrics import text as tm

_VOCAB = ("sinus", "rhythm", "normal", "ecg", "left", "axis", "deviation", "block", "atrial",
          "fibrillation", "with", "the")


def _random_corpus(seed, n=30):
  """1-3 references of 3-15 words from a 12-word vocabulary (references of different
  lengths, repeated words) and hypotheses that copy the first one with some words replaced,
  dropped or added (so 4-grams match too)."""
  rng = np.random.default_rng(seed)
  refs = [[" ".join(rng.choice(_VOCAB, size=rng.integers(3, 16)))
           for _ in range(rng.integers(1, 4))] for _ in range(n)]
  hyps = []
  for rs in refs:
    words = [w if rng.random() < 0.8 else str(rng.choice(_VOCAB)) for w in rs[0].split()
             if rng.random() < 0.9]
    hyps.append(" ".join(words + list(rng.choice(_VOCAB, size=rng.integers(0, 3)))))
  return hyps, refs


_REPORTS = [  # PTB-XL-like: German with umlauts, punctuation, English, mixed case.
    ("Sinusrhythmus. Unvollständiger Rechtsschenkelblock. Sonst normales EKG.",
     "Sinusrhythmus. Unvollständiger Rechtsschenkelblock, sonst normales EKG."),
    ("Sinusrhythmus. Überdrehter Linkstyp. Linksanteriorer Hemiblock.",
     "Sinusrhythmus. Linkstyp. Linksanteriorer Hemiblock. Erregungsrückbildungsstörung."),
    ("sinus rhythm. normal ecg.", "Sinus rhythm, left axis deviation."),
    ("Vorhofflimmern.", "Vorhofflimmern mit schneller Überleitung. Periphere Niederspannung."),
    ("", "Sinusrhythmus. Normales EKG."),
]


def _meteor_reader():
  pytest.importorskip("nltk")
  try:
    return tm.wordnet_reader()
  except LookupError as e:
    pytest.skip(str(e))


def test_tokenize():
  assert tm.tokenize("Sinus rhythm. Normal ECG, QT-interval 0.4 s") == [
      "sinus", "rhythm", "normal", "ecg", "qt", "interval", "0", "4", "s"]


# ------------------------------------------------------------------------------------- BLEU

def test_bleu_equals_sacrebleu_corpus_score_on_reports():
  hyps = [h for h, _ in _REPORTS]
  refs = [r for _, r in _REPORTS]
  ours = tm.corpus_bleu(hyps, refs)
  for n in range(1, 5):
    want = BLEU(max_ngram_order=n).corpus_score(hyps, [refs]).score / 100
    assert ours[f"bleu{n}"] == want, n  # Exactly: the same library call underneath.
  assert 0 < ours["bleu4"] < ours["bleu1"] < 1


@pytest.mark.parametrize("seed", [0, 1])
def test_bleu_equals_sacrebleu_with_several_references(seed):
  hyps, refs = _random_corpus(seed)
  # sacrebleu takes reference streams; a record with fewer references gets None in the rest.
  streams = [[r[k] if k < len(r) else None for r in refs] for k in range(3)]
  ours = tm.corpus_bleu(hyps, refs)
  for n in range(1, 5):
    assert ours[f"bleu{n}"] == BLEU(max_ngram_order=n).corpus_score(hyps, streams).score / 100


def test_bleu_hand_worked():
  # hyp: the cat sat on the mat / ref: the cat is on the mat (equal length: BP = 1).
  # 13a keeps these words; clipped matches: 1-grams 5/6, 2-grams 3/5, 3-grams 1/4, 4-grams
  # 0/3, which sacrebleu's default 'exp' smoothing replaces by 1 / (2 * 3).
  scores = tm.corpus_bleu(["the cat sat on the mat"], ["the cat is on the mat"])
  assert scores["bleu1"] == pytest.approx(5 / 6)
  assert scores["bleu2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
  assert scores["bleu3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
  assert scores["bleu4"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** (1 / 4))
  # Brevity penalty: 2 tokens against 6: exp(1 - 6/2).
  assert tm.corpus_bleu(["the cat"], ["the cat sat on the mat"])["bleu1"] == pytest.approx(
      math.exp(-2))
  # Case counts (sacrebleu's default, case:mixed) and '13a' splits punctuation off.
  assert tm.corpus_bleu(["Sinus rhythm."], ["sinus rhythm."])["bleu1"] == pytest.approx(2 / 3)
  # No match at all: 0, not a smoothed value.
  assert tm.corpus_bleu(["x y z"], ["a b c"])["bleu4"] == 0.0


def test_bleu_statistics_are_sacrebleus_segment_rows():
  hyps = [h for h, _ in _REPORTS]
  refs = [r for _, r in _REPORTS]
  bleu = BLEU()
  # pylint: disable-next=protected-access
  want = bleu._extract_corpus_statistics(hyps, [refs])
  np.testing.assert_array_equal(tm.bleu_statistics(hyps, refs), want)
  # Sums of rows of any multiset of records give corpus_score on those records.
  pick = [4, 0, 0, 2, 3, 3, 3]
  sums = tm.bleu_statistics(hyps, refs)[pick].sum(axis=0)
  assert tm.bleu_from_statistics(sums)["bleu4"] == BLEU().corpus_score(
      [hyps[i] for i in pick], [[refs[i] for i in pick]]).score / 100


def test_bleu_signature():
  hyps = [h for h, _ in _REPORTS]
  refs = [r for _, r in _REPORTS]
  bleu = BLEU()
  bleu.corpus_score(hyps, [refs])
  assert tm.bleu_signature() == str(bleu.get_signature())
  assert tm.bleu_signature().startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|")


# ---------------------------------------------------------------------------------- ROUGE-L

def test_rouge_default_tokenizer_destroys_umlauts_ours_keeps_them():
  default = rouge_scorer.RougeScorer(["rougeL"])._tokenizer  # pylint: disable=protected-access
  assert default.tokenize("Unvollständiger Rechtsschenkelblock") == [
      "unvollst", "ndiger", "rechtsschenkelblock"]
  assert tm.UnicodeWordTokenizer().tokenize("Unvollständiger Rechtsschenkelblock, QT-Zeit") == [
      "unvollständiger", "rechtsschenkelblock", "qt", "zeit"]
  # On ASCII text both tokenizers agree (so English scores equal rouge-score's defaults).
  text = "Sinus rhythm. Left axis-deviation, QT 0.44 s; V1_V2"
  assert tm.UnicodeWordTokenizer().tokenize(text) == default.tokenize(text)


def test_rouge_l_equals_rouge_score_on_reports():
  hyps = [h for h, _ in _REPORTS]
  refs = [r for _, r in _REPORTS]
  scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False,
                                    tokenizer=tm.UnicodeWordTokenizer())
  want = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs)]
  assert tm.rouge_l_scores(hyps, refs) == want
  assert tm.rouge_l(hyps, refs) == pytest.approx(np.mean(want), abs=1e-15)
  # The first pair differs only in punctuation and case: 1. The second shares 4 of 5 and 5
  # words in order: F = 2·4 / (5 + 5). rouge-score's default tokenizer would cut
  # 'erregungsrückbildungsstörung' into 3 tokens: F = 2·4 / (5 + 7).
  assert want[0] == 1.0 and want[1] == pytest.approx(8 / 10) and want[4] == 0.0
  default = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
  assert default.score(refs[1], hyps[1])["rougeL"].fmeasure == pytest.approx(8 / 12)


def test_rouge_l_hand_worked():
  # LCS(a b c d e, a x c y e z) = a c e: P = 3/5, R = 3/6.
  p, r = 3 / 5, 3 / 6
  assert tm.rouge_l(["a b c d e"], ["a x c y e z"]) == pytest.approx(2 * p * r / (p + r))
  assert tm.rouge_l(["same words here"], ["Same words, here."]) == pytest.approx(1.0)
  assert tm.rouge_l(["nothing shared"], ["other text"]) == 0.0
  # Best of several references; mean over hypotheses.
  assert tm.rouge_l(["a b", "c d"], [["x y", "a b"], "q r"]) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1])
def test_rouge_l_matches_rouge_score_multi(seed):
  hyps, refs = _random_corpus(seed)
  scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
  # ASCII text: rouge-score's default tokenizer; score_multi keeps the best reference.
  want = [scorer.score_multi(rs, h)["rougeL"].fmeasure for h, rs in zip(hyps, refs)]
  np.testing.assert_allclose(tm.rouge_l_scores(hyps, refs), want, rtol=0, atol=0)
  assert tm.rouge_l(hyps, refs) == pytest.approx(np.mean(want), abs=1e-12)


# ----------------------------------------------------------------------------------- METEOR

def test_meteor_hand_worked():
  _meteor_reader()
  # nltk METEOR: Fmean = P R / (0.9 P + 0.1 R) = 10 P R / (R + 9 P); penalty 0.5 (chunks /
  # matches)^3; score Fmean (1 - penalty).
  assert tm.meteor(["the cat sat on the mat"], ["the cat sat on the mat"]) == (
      pytest.approx(1 - 0.5 / 6 ** 3))
  # 2 exact matches, P = 1, R = 2/3, Fmean = 20/29; one chunk: penalty 0.5 (1/2)^3.
  assert tm.meteor(["the cat"], ["the cat sat"]) == pytest.approx(20 / 29 * (1 - 0.0625))
  # 'the cat was sitting on the mat' / 'a cat sat on the mat': exact matches cat, on, the,
  # mat (Porter stems 'sit' and 'sat' differ; 'sat' is no WordNet lemma of 'sitting'):
  # P = 4/7, R = 4/6, Fmean = 80/122; chunks 'cat' and 'on the mat': penalty 0.5 (2/4)^3.
  assert tm.meteor(["the cat was sitting on the mat"], ["a cat sat on the mat"]) == (
      pytest.approx(80 / 122 * (1 - 0.0625), abs=1e-12))
  # Stem match: 'rhythms' ~ 'rhythm'; 3 matches in one chunk.
  assert tm.meteor(["sinus rhythms seen"], ["sinus rhythm seen"]) == (
      pytest.approx(1 - 0.5 / 27, abs=1e-12))
  # WordNet synonym match ('sick' ~ 'ill'); without WordNet this would be 3 of 4 words.
  assert tm.meteor(["the patient is sick"], ["the patient is ill"]) == (
      pytest.approx(1 - 0.5 / 64, abs=1e-12))
  # Mean over hypotheses.
  assert tm.meteor(["the cat", "the patient is sick"], ["the cat sat", "the patient is ill"]) == (
      pytest.approx((20 / 29 * (1 - 0.0625) + 1 - 0.5 / 64) / 2, abs=1e-12))


def test_meteor_matches_nltk_meteor_score():
  reader = _meteor_reader()
  from nltk.translate import meteor_score  # pylint: disable=g-import-not-at-top
  hyps, refs = _random_corpus(2, n=12)
  hyps[0], refs[0] = "the patient is sick with atrial fibrillation", ["the patient is ill"]
  want = [meteor_score.meteor_score([r.split() for r in rs], h.split(), wordnet=reader)
          for h, rs in zip(hyps, refs)]
  np.testing.assert_allclose(tm.meteor_scores(hyps, refs), want, rtol=0, atol=1e-12)
  assert tm.meteor(hyps, refs) == pytest.approx(np.mean(want), abs=1e-12)


def test_input_validation():
  with pytest.raises(ValueError, match="2 hypotheses but 1"):
    tm.corpus_bleu(["a", "b"], ["a"])
  with pytest.raises(ValueError, match="no reference"):
    tm.rouge_l(["a"], [[]])
  with pytest.raises(ValueError, match="no reference"):
    tm.corpus_bleu(["a"], [[]])
