"""BLEU, ROUGE-L and METEOR against hand-worked values and the reference packages.

sacrebleu, nltk and rouge-score score whitespace-split text here, so the texts are lowercase
words separated by single spaces: every tokenizer splits them the same way.
"""

import math

import numpy as np
import pytest

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
  # Clipping: 'the' four times, at most twice in the reference: 1-gram precision 2/4;
  # corpus brevity: hypothesis 4 tokens, reference 3 -> no penalty.
  assert tm.corpus_bleu(["the the the the"], ["the cat the"], max_n=1)["bleu1"] == 0.5
  # Closest reference length, the shorter on a tie: 4 tokens against 3 and 5 -> r = 3, BP 1;
  # against 6 and 8 -> r = 6, BP = exp(1 - 6/4).
  assert tm.corpus_bleu(["a b c d"], [["a b c", "a b c d e"]], max_n=1)["bleu1"] == 1.0
  assert tm.corpus_bleu(["a b c d"], [["a b c d x y", "a b c d x y z w"]],
                        max_n=1)["bleu1"] == pytest.approx(math.exp(1 - 6 / 4))


@pytest.mark.parametrize("seed", [0, 1])
def test_bleu_matches_sacrebleu(seed):
  sacrebleu = pytest.importorskip("sacrebleu.metrics")
  hyps, refs = _random_corpus(seed)
  # sacrebleu takes reference streams; a record with fewer references gets None in the rest.
  streams = [[r[k] if k < len(r) else None for r in refs] for k in range(3)]
  ours = tm.corpus_bleu(hyps, refs)
  for n in range(1, 5):
    bleu = sacrebleu.BLEU(max_ngram_order=n, smooth_method="none", tokenize="none",
                          force=True)
    assert ours[f"bleu{n}"] == pytest.approx(bleu.corpus_score(hyps, streams).score / 100,
                                             abs=1e-12), n


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
  for n in range(1, 5):
    want = bleu_score.corpus_bleu([[r.split() for r in rs] for rs in refs],
                                  [h.split() for h in hyps], weights=tuple([1 / n] * n))
    assert ours[f"bleu{n}"] == pytest.approx(want, abs=1e-12), n


# ---------------------------------------------------------------------------------- ROUGE-L

def test_rouge_l_known_lcs():
  assert tm.lcs_length(list("abcde"), list("axcyez")) == 3
  # LCS(a b c d e, a x c y e z) = a c e: P = 3/5, R = 3/6.
  p, r = 3 / 5, 3 / 6
  assert tm.rouge_l(["a b c d e"], ["a x c y e z"]) == pytest.approx(2 * p * r / (p + r))
  assert tm.rouge_l(["same words here"], ["Same words, here."]) == pytest.approx(1.0)
  assert tm.rouge_l(["nothing shared"], ["other text"]) == 0.0
  # Best of several references; mean over hypotheses.
  assert tm.rouge_l(["a b", "c d"], [["x y", "a b"], "q r"]) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1])
def test_rouge_l_matches_rouge_score(seed):
  rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
  hyps, refs = _random_corpus(seed)
  scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
  # score_multi keeps the reference with the best F-measure, as rouge_l does.
  want = [scorer.score_multi(rs, h)["rougeL"].fmeasure for h, rs in zip(hyps, refs)]
  np.testing.assert_allclose(tm.rouge_l_scores(hyps, refs), want, rtol=0, atol=1e-12)
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
