"""Word-overlap metrics for generated ECG reports: BLEU-1..4 (sacrebleu), ROUGE-L (rouge-score)
and METEOR (nltk).

All metrics score lists of hypothesis strings against references (one string, or several, per
hypothesis) and are deterministic. They come from the libraries that published figures use,
so the numbers are comparable with them:

- BLEU-n: sacrebleu's corpus BLEU (`sacrebleu.metrics.BLEU(max_ngram_order=n)`, every other
  argument its default: '13a' tokenization, mixed case, 'exp' smoothing, no effective order);
  the signature is `bleu_signature()` (BLEU-4: `nrefs:1|case:mixed|eff:no|tok:13a|
  smooth:exp|version:2.6.0`; sacrebleu's signature does not name the order). Per-record
  sufficient statistics (`bleu_statistics`, sacrebleu's own per-segment rows) summed over
  any multiset of records give exactly `corpus_score` on those records
  (`bleu_from_statistics`), which the bootstrap over records relies on.
- ROUGE-L: rouge-score's `RougeScorer(['rougeL'], use_stemmer=False)` F-measure per
  hypothesis (its best reference: `score_multi`), mean over the corpus. The tokenizer is
  rouge-score's default except that it keeps non-ASCII letters (`UnicodeWordTokenizer`): the
  default drops every character outside [a-z0-9], which splits most German words of PTB-XL
  ('unvollständiger' → 'unvollst', 'ndiger'). No stemming: the Porter stemmer is English and
  most PTB-XL reports are German.
- METEOR: nltk's `meteor_score` (exact, Porter-stem and WordNet-synonym matching) per
  hypothesis over `tokenize`'s lowercased word tokens, mean over the corpus. WordNet is read
  from local files only (`wordnet_reader`): nltk's own data if installed, else Debian's
  `wordnet-base` package (/usr/share/wordnet).

Clinical (SCP statement) F1 is in `metrics.clinical`; all metrics together, per-record
statistics and bootstrap intervals over records in `metrics.generation`.
"""

import functools
import importlib
import os
import pathlib
import re
import shutil
import tempfile
import warnings
from typing import Sequence

import numpy as np
from rouge_score import tokenizers as rouge_tokenizers

Refs = Sequence[str | Sequence[str]]

_WORD = re.compile(r"\w+", re.UNICODE)


def tokenize(text: str) -> list[str]:
  """Lowercased word tokens (punctuation dropped): METEOR's tokens."""
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

BLEU_MAX_N = 4


@functools.lru_cache(maxsize=None)
def _bleu(max_n: int):
  """sacrebleu's BLEU of order max_n with its default settings (one per order, reused)."""
  from sacrebleu.metrics import BLEU  # pylint: disable=g-import-not-at-top
  return BLEU(max_ngram_order=max_n)


def _reference_streams(refs_lists: Sequence[Sequence[str]]) -> list[list[str | None]]:
  """sacrebleu's layout: one stream per reference slot; None where a record has fewer."""
  width = max(len(r) for r in refs_lists)
  return [[r[k] if k < len(r) else None for r in refs_lists] for k in range(width)]


def bleu_statistics(hypotheses: Sequence[str], references: Refs) -> np.ndarray:
  """int64 (N, 2 + 2 * BLEU_MAX_N): sacrebleu's per-segment BLEU statistics, one row per
  hypothesis: [hypothesis length, closest reference length, matched 1..4-grams, 1..4-grams].

  Rows summed over any multiset of hypotheses are that corpus's sufficient statistics
  (`bleu_from_statistics`). An order n < 4 uses columns [0, 1, 2 .. 2+n, 6 .. 6+n]: the
  counts of one order do not depend on the highest order.
  """
  refs_lists = reference_lists(hypotheses, references)
  if not hypotheses:
    return np.zeros((0, 2 + 2 * BLEU_MAX_N), np.int64)
  # sacrebleu's own statistics extraction (what `corpus_score` sums), not a re-implementation.
  # pylint: disable-next=protected-access
  rows = _bleu(BLEU_MAX_N)._extract_corpus_statistics(list(hypotheses),
                                                      _reference_streams(refs_lists))
  return np.asarray(rows, np.int64).reshape(len(hypotheses), 2 + 2 * BLEU_MAX_N)


def bleu_from_statistics(sums: Sequence[int]) -> dict[str, float]:
  """BLEU-1..4 in [0, 1] from summed `bleu_statistics` rows: sacrebleu's score / 100."""
  sums = [int(x) for x in sums]
  hyp_len, ref_len = sums[:2]
  correct, total = sums[2:2 + BLEU_MAX_N], sums[2 + BLEU_MAX_N:]
  out = {}
  for n in range(1, BLEU_MAX_N + 1):
    # pylint: disable-next=protected-access
    score = _bleu(n)._compute_score_from_stats([hyp_len, ref_len] + correct[:n] + total[:n])
    out[f"bleu{n}"] = score.score / 100.0
  return out


def corpus_bleu(hypotheses: Sequence[str], references: Refs) -> dict[str, float]:
  """Corpus BLEU-1..4 (sacrebleu, default settings): {'bleu1', ..., 'bleu4'} in [0, 1]."""
  stats = bleu_statistics(hypotheses, references)
  return bleu_from_statistics(stats.sum(axis=0))


def bleu_signature(num_refs: int = 1) -> str:
  """sacrebleu's signature of the BLEU scores here (BLEU-4's; the other orders differ only in
  `max_ngram_order`, which the signature does not show)."""
  from sacrebleu.metrics import BLEU  # pylint: disable=g-import-not-at-top
  bleu = BLEU(max_ngram_order=BLEU_MAX_N)
  bleu.num_refs = num_refs  # Set by sacrebleu when it reads references; the signature shows it.
  return str(bleu.get_signature())


# ---------------------------------------------------------------------------------- ROUGE-L

ROUGE_USE_STEMMER = False
_ROUGE_WORD = re.compile(r"[^\W_]+")  # Unicode letters and digits; '_' separates, as [a-z0-9].


class UnicodeWordTokenizer(rouge_tokenizers.Tokenizer):
  """rouge-score's default tokenizer (lowercase, split at every non-alphanumeric character)
  with Unicode letters kept: the default's [a-z0-9] would cut 'unvollständiger' into
  'unvollst' + 'ndiger' and 'störung' into 'st' + 'rung'."""

  def tokenize(self, text):
    return _ROUGE_WORD.findall(text.lower())


@functools.lru_cache(maxsize=None)
def rouge_scorer():
  """The ROUGE-L scorer: rouge-score, no stemming, `UnicodeWordTokenizer`."""
  from rouge_score import rouge_scorer as rs  # pylint: disable=g-import-not-at-top
  return rs.RougeScorer(["rougeL"], use_stemmer=ROUGE_USE_STEMMER,
                        tokenizer=UnicodeWordTokenizer())


def rouge_l_scores(hypotheses: Sequence[str], references: Refs) -> list[float]:
  """Per hypothesis, rouge-score's ROUGE-L F-measure against its best reference."""
  refs_lists = reference_lists(hypotheses, references)
  scorer = rouge_scorer()
  return [float(scorer.score_multi(refs, hyp)["rougeL"].fmeasure)
          for hyp, refs in zip(hypotheses, refs_lists)]


def rouge_l(hypotheses: Sequence[str], references: Refs) -> float:
  """Mean over hypotheses of rouge-score's ROUGE-L F-measure (best reference each)."""
  scores = rouge_l_scores(hypotheses, references)
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
