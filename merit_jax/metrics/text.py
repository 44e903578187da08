"""Word-overlap metrics for generated ECG reports: BLEU-1..4, ROUGE-L and METEOR.

All metrics score lists of hypothesis strings against references (one string, or several, per
hypothesis) and are deterministic. Text is lowercased and split into word tokens (`tokenize`).

- BLEU-n: corpus-level (Papineni et al. 2002): clipped n-gram counts summed over the corpus,
  uniform weights over 1..n, brevity penalty exp(1 - r/c) with r the summed closest reference
  lengths (ties: the shorter). No smoothing: a zero n-gram precision gives 0 (as nltk).
- ROUGE-L: per hypothesis, LCS-based F-measure (β = 1 by default, as Google's rouge-score;
  pycocoevalcap uses β = 1.2); max over its references; mean over the corpus.
- METEOR: nltk's `meteor_score` (exact, Porter-stem and WordNet-synonym matching) per
  hypothesis, mean over the corpus. WordNet is read from local files only (`wordnet_reader`):
  nltk's own data if installed, else Debian's `wordnet-base` package (/usr/share/wordnet).

Clinical (SCP statement) F1 is in `metrics.clinical`; all metrics together, per-record
statistics and bootstrap intervals over records in `metrics.generation`.
"""

import collections
import importlib
import math
import os
import pathlib
import re
import shutil
import tempfile
import warnings
from typing import Sequence

Refs = Sequence[str | Sequence[str]]

_WORD = re.compile(r"\w+", re.UNICODE)


def tokenize(text: str) -> list[str]:
  """Lowercased word tokens (punctuation dropped)."""
  return _WORD.findall(text.lower())


def reference_lists(hypotheses: Sequence[str], references: Refs) -> list[list[str]]:
  """Each hypothesis's references as a non-empty list; ValueError on a count mismatch."""
  if len(hypotheses) != len(references):
    raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference entries")
  out = []
  for i, refs in enumerate(references):
    refs = [refs] if isinstance(refs, str) else list(refs)
    if not refs:
      raise ValueError(f"hypothesis {i} has no reference")
    out.append(refs)
  return out


# ------------------------------------------------------------------------------------- BLEU

def _ngrams(tokens: Sequence[str], n: int) -> collections.Counter:
  return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu_statistics(hypothesis: str, references: Sequence[str],
                    max_n: int) -> tuple[list[int], list[int], int, int]:
  """One hypothesis's BLEU sufficient statistics; corpus BLEU sums them over hypotheses.

  Returns:
    (clipped matches per n, n-gram counts per n, hypothesis length, closest reference length).
  """
  h = tokenize(hypothesis)
  rs = [tokenize(r) for r in references]
  # Closest reference length; on a tie the shorter one (as nltk and sacrebleu).
  ref_len = min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
  matched, total = [], []
  for n in range(1, max_n + 1):
    counts = _ngrams(h, n)
    max_ref = collections.Counter()
    for r in rs:
      max_ref |= _ngrams(r, n)
    matched.append(sum(min(c, max_ref[g]) for g, c in counts.items()))
    total.append(max(len(h) - n + 1, 0))
  return matched, total, len(h), ref_len


def bleu_from_statistics(matched: Sequence[int], total: Sequence[int], hyp_len: int,
                         ref_len: int, max_n: int) -> dict[str, float]:
  """BLEU-1..max_n from corpus sums of `bleu_statistics`."""
  if hyp_len == 0:
    return {f"bleu{n}": 0.0 for n in range(1, max_n + 1)}
  bp = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
  scores = {}
  log_sum = 0.0
  for n in range(1, max_n + 1):
    if matched[n - 1] == 0 or total[n - 1] == 0:
      log_sum = -math.inf
    else:
      log_sum += math.log(matched[n - 1] / total[n - 1])
    scores[f"bleu{n}"] = 0.0 if log_sum == -math.inf else bp * math.exp(log_sum / n)
  return scores


def corpus_bleu(hypotheses: Sequence[str], references: Refs, max_n: int = 4) -> dict[str, float]:
  """Corpus BLEU-1..max_n: {'bleu1': ..., ..., 'bleu{max_n}': ...} in [0, 1]."""
  refs_lists = reference_lists(hypotheses, references)
  matched = [0] * max_n
  total = [0] * max_n
  hyp_len = ref_len = 0
  for hyp, refs in zip(hypotheses, refs_lists):
    m, t, h, r = bleu_statistics(hyp, refs, max_n)
    matched = [a + b for a, b in zip(matched, m)]
    total = [a + b for a, b in zip(total, t)]
    hyp_len += h
    ref_len += r
  return bleu_from_statistics(matched, total, hyp_len, ref_len, max_n)


# ---------------------------------------------------------------------------------- ROUGE-L

def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
  """Length of the longest common subsequence (O(len(a)·len(b)) dynamic programme)."""
  if len(a) < len(b):
    a, b = b, a
  prev = [0] * (len(b) + 1)
  for x in a:
    cur = [0]
    for j, y in enumerate(b):
      cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
    prev = cur
  return prev[-1]


def rouge_l_pair(hypothesis: str, reference: str, beta: float = 1.0) -> float:
  h, r = tokenize(hypothesis), tokenize(reference)
  lcs = lcs_length(h, r)
  if lcs == 0:
    return 0.0
  precision, recall = lcs / len(h), lcs / len(r)
  return (1 + beta ** 2) * precision * recall / (recall + beta ** 2 * precision)


def rouge_l_scores(hypotheses: Sequence[str], references: Refs,
                   beta: float = 1.0) -> list[float]:
  """Per hypothesis, the best LCS F-measure against its references."""
  refs_lists = reference_lists(hypotheses, references)
  return [max(rouge_l_pair(h, r, beta) for r in refs) for h, refs in zip(hypotheses, refs_lists)]


def rouge_l(hypotheses: Sequence[str], references: Refs, beta: float = 1.0) -> float:
  """Mean over hypotheses of the best LCS F-measure against its references."""
  scores = rouge_l_scores(hypotheses, references, beta)
  return sum(scores) / len(scores) if scores else 0.0


# ----------------------------------------------------------------------------------- METEOR

# WordNet 3.0's lexicographer files (the `lexnames` file nltk's reader needs and Debian's
# wordnet-base package does not ship).
_LEXNAMES = (
    "adj.all 3", "adj.pert 3", "adv.all 4", "noun.Tops 1", "noun.act 1", "noun.animal 1",
    "noun.artifact 1", "noun.attribute 1", "noun.body 1", "noun.cognition 1",
    "noun.communication 1", "noun.event 1", "noun.feeling 1", "noun.food 1", "noun.group 1",
    "noun.location 1", "noun.motive 1", "noun.object 1", "noun.person 1",
    "noun.phenomenon 1", "noun.plant 1", "noun.possession 1", "noun.process 1",
    "noun.quantity 1", "noun.relation 1", "noun.shape 1", "noun.state 1",
    "noun.substance 1", "noun.time 1", "verb.body 2", "verb.change 2", "verb.cognition 2",
    "verb.communication 2", "verb.competition 2", "verb.consumption 2", "verb.contact 2",
    "verb.creation 2", "verb.emotion 2", "verb.motion 2", "verb.perception 2",
    "verb.possession 2", "verb.social 2", "verb.stative 2", "verb.weather 2", "adj.ppl 3")
DEBIAN_WORDNET_DIR = pathlib.Path("/usr/share/wordnet")
_WORDNET_FILES = ("data.adj", "data.adv", "data.noun", "data.verb", "index.adj", "index.adv",
                  "index.noun", "index.verb", "adj.exc", "adv.exc", "noun.exc", "verb.exc")
_wordnet = None


def _nltk_data_from_dict_dir(src: pathlib.Path) -> pathlib.Path:
  """An nltk_data folder whose corpora/wordnet holds `src`'s files plus a `lexnames` file.

  Files are copied (~28 MB, once): nltk >= 3.9 refuses symlinks that leave the corpus root
  and hard-linked files. The folder must be named corpora/wordnet because nltk's reader
  looks up the 'wordnet' corpus by name while it initialises (its WordNet-version map).
  """
  cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
  base = cache / "merit_jax" / "nltk_data"
  target = base / "corpora" / "wordnet"
  if (target / "lexnames").exists():
    return base
  missing = [n for n in _WORDNET_FILES if not (src / n).exists()]
  if missing:
    raise LookupError(f"WordNet dict directory {src} lacks {missing}")
  target.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix="wordnet_", dir=target.parent))
  for name in _WORDNET_FILES + ("cntlist.rev", "index.sense"):
    if (src / name).exists():
      shutil.copyfile(src / name, staging / name)
    else:
      (staging / name).write_text("")  # Sense keys: only the OMW version map reads them.
  if not (src / "lexnames").exists():
    (staging / "lexnames").write_text("".join(
        f"{i:02d}\t{e.split()[0]}\t{e.split()[1]}\n" for i, e in enumerate(_LEXNAMES)))
  else:
    shutil.copyfile(src / "lexnames", staging / "lexnames")
  try:
    os.rename(staging, target)  # Atomic; if another process won the race, use its copy.
  except OSError:
    shutil.rmtree(staging, ignore_errors=True)
  return base


def wordnet_reader():
  """nltk's WordNet reader over local files (never downloads).

  Uses nltk's own 'corpora/wordnet' when installed; otherwise copies the WordNet dict files
  of $MERIT_WORDNET_DIR, default Debian's wordnet-base (/usr/share/wordnet), into
  ~/.cache/merit_jax/nltk_data/corpora/wordnet (adding the `lexnames` file Debian lacks) and
  appends that nltk_data folder to `nltk.data.path`.

  Raises:
    LookupError: when no WordNet is installed, saying how to install one.
  """
  global _wordnet
  if _wordnet is not None:
    return _wordnet
  from nltk.corpus.reader import wordnet as wn  # pylint: disable=g-import-not-at-top
  import nltk.data  # pylint: disable=g-import-not-at-top
  try:
    root = pathlib.Path(str(nltk.data.find("corpora/wordnet")))
  except LookupError:
    src = pathlib.Path(os.environ.get("MERIT_WORDNET_DIR", DEBIAN_WORDNET_DIR))
    if not (src / "data.noun").exists():
      raise LookupError(
          f"METEOR needs WordNet and none is installed (no nltk 'corpora/wordnet', no "
          f"{src}/data.noun). Install Debian's package: apt-get install -y wordnet-base "
          "(→ /usr/share/wordnet), or set MERIT_WORDNET_DIR to a WordNet 3.0 dict "
          "directory.") from None
    base = _nltk_data_from_dict_dir(src)
    # nltk >= 3.9 reads corpora only below nltk.data.path.
    if str(base) not in nltk.data.path:
      nltk.data.path.append(str(base))
    root = base / "corpora" / "wordnet"
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "multilingual functions are not available".
    _wordnet = wn.WordNetCorpusReader(str(root), None)
  return _wordnet


def meteor_scores(hypotheses: Sequence[str], references: Refs) -> list[float]:
  """Per hypothesis, nltk METEOR (alpha 0.9, beta 3, gamma 0.5) against its references."""
  from nltk.translate import meteor_score  # pylint: disable=g-import-not-at-top
  refs_lists = reference_lists(hypotheses, references)
  if not hypotheses:
    return []
  reader = wordnet_reader()
  return [meteor_score.meteor_score([tokenize(r) for r in refs], tokenize(hyp), wordnet=reader)
          for hyp, refs in zip(hypotheses, refs_lists)]


def meteor(hypotheses: Sequence[str], references: Refs) -> float:
  """Mean nltk METEOR (alpha 0.9, beta 3, gamma 0.5) over hypotheses, in [0, 1]."""
  scores = meteor_scores(hypotheses, references)
  # Summed left to right from 0.0, as before the per-hypothesis split.
  total = 0.0
  for score in scores:
    total += score
  return total / len(scores) if scores else 0.0


# Names that moved to `metrics.clinical` and `metrics.generation`: importable from here until
# every caller imports them from their modules. Resolved lazily, because `generation` imports
# this module.
_MOVED = {
    **{name: "clinical" for name in (
        "SCP_PATTERNS", "ScpMatcher", "clinical_f1", "normalize_report")},
    **{name: "generation" for name in (
        "GENERATION_METRICS", "RecordStatistics", "bootstrap_from_statistics",
        "bootstrap_generation_metrics", "metrics_from_statistics", "record_statistics",
        "report_generation_metrics", "resample_indices", "resampled_metrics")},
}


def __getattr__(name):
  if name in _MOVED:
    return getattr(importlib.import_module(f"merit_jax.metrics.{_MOVED[name]}"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
