"""Metrics for generated ECG reports: BLEU-1..4, ROUGE-L, METEOR and clinical (SCP) F1.

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
- Clinical F1: SCP-ECG statements recovered from the generated text by a keyword matcher
  (English, German and the Swedish phrases of PTB-XL reports) against each record's labels;
  micro and macro F1.

`report_generation_metrics` gives all of them as one flat dict. Confidence intervals:
`bootstrap_generation_metrics(generated, references, labels, with_meteor, n_bootstrap, seed,
alpha, baseline_generated)` -> {metric: {'value', 'ci_low', 'ci_high'[, 'diff', 'diff_ci_low',
'diff_ci_high']}}: percentile bootstrap over records (drawn with replacement by the package's
one resampler, `metrics.iter_resample_indices`, which keeps a record of every labelled SCP code
in every resample, so the resamples' macro F1 averages the same codes as the point estimate),
and with a baseline the paired difference on the same resampled records. Each record is
scored once (`record_statistics`: BLEU n-gram counts and lengths, ROUGE-L and METEOR scores,
per-code clinical tp/fp/fn); a resample only re-sums those rows (`bootstrap_from_statistics`,
`resampled_metrics`, `resample_indices`).
"""

import collections
import dataclasses
import math
import os
import pathlib
import re
import shutil
import tempfile
import warnings
from typing import Iterable, Mapping, Sequence

import numpy as np

from merit_jax.metrics import classification as metrics

Refs = Sequence[str | Sequence[str]]

_WORD = re.compile(r"\w+", re.UNICODE)


def tokenize(text: str) -> list[str]:
  """Lowercased word tokens (punctuation dropped)."""
  return _WORD.findall(text.lower())


def _as_ref_lists(hypotheses: Sequence[str], references: Refs) -> list[list[str]]:
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


def _bleu_record(hypothesis: str, references: Sequence[str],
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


def _bleu_from_sums(matched: Sequence[int], total: Sequence[int], hyp_len: int, ref_len: int,
                    max_n: int) -> dict[str, float]:
  """BLEU-1..max_n from corpus sums of `_bleu_record`'s statistics."""
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
  refs_lists = _as_ref_lists(hypotheses, references)
  matched = [0] * max_n
  total = [0] * max_n
  hyp_len = ref_len = 0
  for hyp, refs in zip(hypotheses, refs_lists):
    m, t, h, r = _bleu_record(hyp, refs, max_n)
    matched = [a + b for a, b in zip(matched, m)]
    total = [a + b for a, b in zip(total, t)]
    hyp_len += h
    ref_len += r
  return _bleu_from_sums(matched, total, hyp_len, ref_len, max_n)


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
  refs_lists = _as_ref_lists(hypotheses, references)
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
  refs_lists = _as_ref_lists(hypotheses, references)
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


# ------------------------------------------------------------------------ clinical accuracy

def normalize_report(text: str) -> str:
  """Lowercase, umlauts spelt out, PTB-XL's '#' (a lost 'ü') repaired, spaces collapsed."""
  text = text.lower()
  for a, b in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("#", "ue"), ("ß", "ss"), ("å", "a")):
    text = text.replace(a, b)
  return re.sub(r"\s+", " ", text)


_INFARCT = r"(?:myocardial )?(?:infar\w*|mi\b|myokardschaden|infarkt)"
_ISCH = r"\bisch\w*"
# SCP code → regex on `normalize_report` text. English (PTB-XL's English reports and SCP
# descriptions), German and the Swedish phrases that occur in PTB-XL.
SCP_PATTERNS: dict[str, str] = {
    "NORM": r"\bnormal(?:es)? (?:ecg|ekg)",
    "SR": r"\bsinus ?(?:rhythm|rhythmus|rytm)",
    "AFIB": r"atrial fibrillation|vorhofflimmern|foermaksflimmer",
    "AFLT": r"atrial flutter|vorhofflattern|foermaksfladder",
    "STACH": r"sinus ?(?:tachycardia|tachykardie|takykardi)",
    "SBRAD": r"sinus ?(?:bradycardia|bradykardie|bradykardi)",
    "SARRH": r"sinus ?(?:arrhythmia|arrhythmie|arytmi)",
    "SVTAC": r"(?<!paroxysmal )supraventri\w* (?:tachycardia|tachykardie)",
    "PSVT": r"paroxysmal\w* supraventri\w* (?:tachycardia|tachykardie)",
    "SVARR": r"supraventri\w* (?:arrhythmia|arrhythmie)",
    "BIGU": r"bigemin",
    "TRIGU": r"trigemin",
    "PACE": r"pacemaker|schrittmacher",
    "PVC": (r"premature ventricular|ventricular premature|ventrikulaere? extrasystol"
            r"|ventrikulaera extraslag|\bpvcs?\b|\bvpcs?\b"),
    "PAC": (r"premature atrial|atrial premature|(?:supraventrikulaere?|atriale?) extrasystol"
            r"|supraventrikulaera extraslag|\bpacs?\b"),
    "CLBBB": (r"(?<!incomplete )(?<!unvollstaendiger )\b(?:complete )?left bundle branch block"
              r"|(?<!unvollstaendiger )(?<!inkompletter )linksschenkelblock"
              r"|vaenstersidigt skaenkelblock|(?<!incomplete )\blbbb\b"),
    "CRBBB": (r"(?<!incomplete )(?<!unvollstaendiger )\b(?:complete )?right bundle branch block"
              r"|(?<!unvollstaendiger )(?<!inkompletter )rechtsschenkelblock"
              r"|(?<!inkomplett )hoegersidigt skaenkelblock|(?<!incomplete )\brbbb\b"),
    "IRBBB": (r"incomplete right bundle branch block|(?:unvollstaendiger|inkompletter) "
              r"rechtsschenkelblock|inkomplett hoegersidigt skaenkelblock|incomplete rbbb"),
    "ILBBB": (r"incomplete left bundle branch block|(?:unvollstaendiger|inkompletter) "
              r"linksschenkelblock|incomplete lbbb"),
    "LAFB": (r"left anterior (?:fascicular block|hemiblock)|linksanteriorer hemiblock"
             r"|vaenster fraemre hemiblock|\blafb\b"),
    "LPFB": (r"left posterior (?:fascicular block|hemiblock)|linksposteriorer hemiblock"
             r"|\blpfb\b"),
    "IVCD": (r"intraventricular (?:conduction )?(?:delay|disturbance|block)"
             r"|intraventrikulaere\w* (?:leitungsstoerung|block)|ospecifikt skaenkelblock"),
    "WPW": r"\bwpw\b|wolff?[- ]parkinson[- ]white",
    "1AVB": (r"first[- ]degree (?:a-?v|atrioventricular) block|(?:1st|1\.) degree av"
             r"|\ba-?v[- ]block (?:i|1)\b(?! ?i)|av-block i\b"),
    "2AVB": (r"second[- ]degree (?:a-?v|atrioventricular) block|\ba-?v[- ]block (?:ii|2)\b"
             r"(?! ?i)|wenckebach|mobitz"),
    "3AVB": (r"third[- ]degree (?:a-?v|atrioventricular) block|complete (?:a-?v|heart) block"
             r"|\ba-?v[- ]block (?:iii|3)\b|totaler av[- ]block"),
    "LPR": r"prolonged pr|pr[- ]verlaengerung|long pr\b|pr interval is prolonged",
    "LNGQT": r"long qt|prolonged qt|qt[- ]verlaengerung|qt[- ]prolong",
    "LVH": (r"left ventricular hypertrophy|(?<!kriterien fuer )linkshypertrophie"
            r"|vaenster kammarhypertrofi|(?<!suggesting )\blvh\b"),
    "VCLVH": (r"voltage criteria\w* (?:\(qrs\) )?for (?:left ventricular hypertrophy|lvh)"
              r"|kriterien fuer linkshypertrophie|suggesting lvh|amplitudkrit"),
    "RVH": r"right ventricular hypertrophy|rechtshypertrophie|hoeger kammarhypertrofi|\brvh\b",
    "SEHYP": r"septal hypertrophy|septumhypertrophie",
    "LAO/LAE": (r"left atrial (?:enlargement|overload|abnormality)|vorhofsueberlastung links"
                r"|linksatriale|p[- ]sinistrocardiale"),
    "RAO/RAE": (r"right atrial (?:enlargement|overload|abnormality)"
                r"|vorhofsueberlastung rechts|rechtsatriale|p[- ]dextrocardiale"),
    "IMI": rf"\binferior(?:er|en)? (?:wall )?{_INFARCT}",
    "ILMI": rf"\binferolateral(?:er|en)? {_INFARCT}",
    "IPMI": rf"\binferoposterior(?:er|en)? {_INFARCT}",
    "IPLMI": rf"\binferoposterolateral(?:er|en)? {_INFARCT}",
    "ASMI": rf"\b(?:antero)?septal(?:er|en)? {_INFARCT}",
    "AMI": rf"\banterior(?:er|en)? (?:wall )?{_INFARCT}",
    "ALMI": rf"\banterolateral(?:er|en)? {_INFARCT}",
    "LMI": rf"\blateral(?:er|en)? (?:wall )?{_INFARCT}",
    "PMI": rf"\bposterior(?:er|en)? (?:wall )?{_INFARCT}",
    "ISCAL": rf"\banterolateral\w* {_ISCH}|{_ISCH} in anterolateral",
    "ISCAN": rf"\banterior\w* {_ISCH}|{_ISCH} in anterior",
    "ISCAS": rf"\banteroseptal\w* {_ISCH}|{_ISCH} in anteroseptal",
    "ISCIN": rf"\binferior\w* {_ISCH}|{_ISCH} in inferior",
    "ISCIL": rf"\binferolateral\w* {_ISCH}|{_ISCH} in inferolateral",
    "ISCLA": rf"\blateral\w* {_ISCH}|{_ISCH} in lateral",
    "ISC_": rf"{_ISCH}",  # Only kept when no located ischaemia code matched (see below).
    "ANEUR": r"aneurysm",
    "DIG": r"digitalis",
    "EL": r"electrolyte|elektrolyt",
    "LVOLT": r"low (?:qrs )?voltage|niederspannung|laga qrs amplituder",
    "HVOLT": r"high (?:qrs )?voltage|voltages are high",
    "QWAVE": r"\bq[- ]?waves?\b|q[- ]zacke",
    "INVT": (r"inverted t|t[- ]wave inversion|t inversion|negative t|t[- ]negativ"
             r"|t[- ]waves? (?:are |is )?[^.]*inverted"),
    "LOWT": (r"low (?:amplitude )?t[- ]?waves?|flat t|abgeflacht\w* t|t[- ]abflachung"
             r"|t[- ]waves? (?:are |is )?(?:low|flat)"),
    "NDT": r"unspezifisch\w* abnorm\w* t\b|non-?diagnostic t",
    "NT_": r"non-?specific t[- ]wave|unspezifisch\w* t[- ]",
    "NST_": (r"non-?specific st(?:-t)?\b(?! segment)|unspezifisch\w* st\b(?!-senkung)"
             r"|st & t abnorm"),
    "STD_": r"st[- ]depression|st segments? (?:are |is )?depressed|st[- ]senkung|st[- ]saenkning",
    "STE_": r"st[- ]elevation|st segments? (?:are |is )?elevated|st[- ]hebung|st[- ]hoejning",
    "ABQRS": r"abnormal qrs|qrs\(t\) abnorm|qrs abnorm|avvikande qrs",
    "TAB_": r"t[- ]wave abnormal|abnormal t[- ]wave",
    "PRC(S)": r"premature complex",
}
_LOCATED_ISCHAEMIA = ("ISCAL", "ISCAN", "ISCAS", "ISCIN", "ISCIL", "ISCLA")


class ScpMatcher:
  """Finds SCP-ECG statement codes mentioned in a report."""

  def __init__(self, patterns: Mapping[str, str] | None = None):
    patterns = SCP_PATTERNS if patterns is None else patterns
    self.patterns = {code: re.compile(p) for code, p in patterns.items()}

  @classmethod
  def with_statement_descriptions(cls, statements_csv: str | os.PathLike) -> "ScpMatcher":
    """Default patterns plus each statement's English `description` from scp_statements.csv."""
    import pandas as pd  # pylint: disable=g-import-not-at-top
    table = pd.read_csv(statements_csv, index_col=0)
    if "description" not in table.columns:
      raise ValueError(f"{statements_csv}: no 'description' column")
    patterns = dict(SCP_PATTERNS)
    for code, desc in table["description"].items():
      desc = normalize_report(str(desc)).split(" (")[0].strip()
      phrase = re.escape(desc)
      patterns[code] = f"{patterns[code]}|{phrase}" if code in patterns else phrase
    return cls(patterns)

  @property
  def codes(self) -> list[str]:
    return list(self.patterns)

  def __call__(self, text: str) -> set[str]:
    norm = normalize_report(text)
    found = {code for code, pattern in self.patterns.items() if pattern.search(norm)}
    if "ISC_" in found and found & set(_LOCATED_ISCHAEMIA):
      found.discard("ISC_")
    return found


def clinical_f1(
    generated: Sequence[str],
    labels: Sequence[Iterable[str]],
    matcher: ScpMatcher | None = None,
    codes: Sequence[str] | None = None,
) -> dict:
  """F1 of SCP statements recovered from generated reports against each record's labels.

  Args:
    generated: generated report texts.
    labels: per record, its SCP codes (e.g. the keys of PTB-XL's `scp_codes`), or codes
      extracted from the reference report with the same matcher.
    matcher: the code extractor (default: `ScpMatcher()`).
    codes: codes to score (default: all codes the matcher knows). Labels outside are ignored.

  Returns:
    {'micro_f1', 'micro_precision', 'micro_recall', 'macro_f1', 'num_codes', 'per_code'}:
    macro F1 averages the codes that occur in the labels at least once (`num_codes` of them);
    per_code maps each such code to {'f1', 'support'}.
  """
  tp, fp, fn = collections.Counter(), collections.Counter(), collections.Counter()
  for pred, true in _clinical_records(generated, labels, matcher, codes):
    for c in pred & true:
      tp[c] += 1
    for c in pred - true:
      fp[c] += 1
    for c in true - pred:
      fn[c] += 1
  return _clinical_summary(tp, fp, fn)


def _clinical_records(generated: Sequence[str], labels: Sequence[Iterable[str]],
                      matcher: ScpMatcher | None,
                      codes: Sequence[str] | None) -> list[tuple[set[str], set[str]]]:
  """Per record, (predicted codes, true codes), both restricted to the scored codes."""
  if len(generated) != len(labels):
    raise ValueError(f"{len(generated)} generated reports but {len(labels)} label sets")
  matcher = matcher or ScpMatcher()
  scored = set(matcher.codes if codes is None else codes)
  return [(matcher(text) & scored, set(record_labels) & scored)
          for text, record_labels in zip(generated, labels)]


def _f1(t, p, n):
  return 0.0 if t == 0 else 2 * t / (2 * t + p + n)


def _clinical_summary(tp: Mapping[str, int], fp: Mapping[str, int],
                      fn: Mapping[str, int]) -> dict:
  """`clinical_f1`'s result from per-code true/false positive and false negative counts."""
  # A code counts in the macro average only when it occurs in the labels (tp + fn > 0).
  present = sorted(c for c in set(tp) | set(fn) if tp.get(c, 0) + fn.get(c, 0) > 0)
  per_code = {c: {"f1": _f1(tp.get(c, 0), fp.get(c, 0), fn.get(c, 0)),
                  "support": tp.get(c, 0) + fn.get(c, 0)} for c in present}
  t, p, n = sum(tp.values()), sum(fp.values()), sum(fn.values())
  return {
      "micro_f1": _f1(t, p, n),
      "micro_precision": t / (t + p) if t + p else 0.0,
      "micro_recall": t / (t + n) if t + n else 0.0,
      "macro_f1": (sum(v["f1"] for v in per_code.values()) / len(per_code)
                   if per_code else 0.0),
      "num_codes": len(per_code),
      "per_code": per_code,
  }


def report_generation_metrics(
    generated: Sequence[str],
    references: Refs,
    labels: Sequence[Iterable[str]] | None = None,
    with_meteor: bool = True,
) -> dict[str, float]:
  """BLEU-1..4, ROUGE-L, METEOR and (given labels) clinical micro/macro F1, flat dict."""
  out = dict(corpus_bleu(generated, references))
  out["rouge_l"] = rouge_l(generated, references)
  if with_meteor:
    out["meteor"] = meteor(generated, references)
  if labels is not None:
    clinical = clinical_f1(generated, labels)
    out["clinical_micro_f1"] = clinical["micro_f1"]
    out["clinical_macro_f1"] = clinical["macro_f1"]
  return out


# -------------------------------------------------------------------------------- bootstrap

GENERATION_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "meteor",
                      "clinical_micro_f1", "clinical_macro_f1")
_BLEU_MAX_N = 4
# Upper bound on resamples × records of multiplicities held in memory at once.
_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000


@dataclasses.dataclass(frozen=True)
class RecordStatistics:
  """Per-record sufficient statistics of `report_generation_metrics` for one system.

  Each metric of any multiset of records is a function of sums (BLEU, clinical F1) or means
  (ROUGE-L, METEOR) of these rows, so a bootstrap resample re-sums rows and never re-scores
  text (METEOR, the slow one, runs once per record).

  Attributes:
    bleu_matched: int64 (N, 4), clipped n-gram matches for n = 1..4.
    bleu_total: int64 (N, 4), the hypothesis's n-gram counts.
    hyp_len: int64 (N,), hypothesis tokens.
    ref_len: int64 (N,), closest reference length.
    rouge_l: float64 (N,), per-record ROUGE-L.
    meteor: float64 (N,), per-record METEOR; None when not computed.
    codes: the SCP codes predicted or labelled in at least one record (sorted); None without
      labels. Other codes have no true positive nor false negative in any resample, so they
      never enter the macro average.
    tp, fp, fn: int64 (N, len(codes)) per record and code; None without labels.
  """
  bleu_matched: np.ndarray
  bleu_total: np.ndarray
  hyp_len: np.ndarray
  ref_len: np.ndarray
  rouge_l: np.ndarray
  meteor: np.ndarray | None = None
  codes: tuple[str, ...] | None = None
  tp: np.ndarray | None = None
  fp: np.ndarray | None = None
  fn: np.ndarray | None = None

  @property
  def num_records(self) -> int:
    return int(self.hyp_len.shape[0])

  @property
  def metric_names(self) -> tuple[str, ...]:
    """The metrics these statistics give, in `GENERATION_METRICS` order."""
    names = [f"bleu{n}" for n in range(1, _BLEU_MAX_N + 1)] + ["rouge_l"]
    if self.meteor is not None:
      names.append("meteor")
    if self.codes is not None:
      names += ["clinical_micro_f1", "clinical_macro_f1"]
    return tuple(names)


def record_statistics(
    generated: Sequence[str],
    references: Refs,
    labels: Sequence[Iterable[str]] | None = None,
    with_meteor: bool = True,
) -> RecordStatistics:
  """Scores every record once: the statistics `report_generation_metrics` aggregates.

  Args:
    generated: generated report texts (N).
    references: per record, one reference text or several.
    labels: per record, its SCP codes; None leaves clinical F1 out.
    with_meteor: whether to score METEOR (needs nltk and WordNet).

  Raises:
    ValueError: when `references` or `labels` do not have one entry per generated report.
  """
  refs_lists = _as_ref_lists(generated, references)
  clinical = None if labels is None else _clinical_records(generated, labels, None, None)
  bleu = [_bleu_record(h, refs, _BLEU_MAX_N) for h, refs in zip(generated, refs_lists)]
  n = len(generated)
  stats = dict(
      bleu_matched=np.asarray([b[0] for b in bleu], np.int64).reshape(n, _BLEU_MAX_N),
      bleu_total=np.asarray([b[1] for b in bleu], np.int64).reshape(n, _BLEU_MAX_N),
      hyp_len=np.asarray([b[2] for b in bleu], np.int64).reshape(n),
      ref_len=np.asarray([b[3] for b in bleu], np.int64).reshape(n),
      rouge_l=np.asarray(rouge_l_scores(generated, refs_lists), np.float64).reshape(n))
  if with_meteor:
    stats["meteor"] = np.asarray(meteor_scores(generated, refs_lists), np.float64).reshape(n)
  if clinical is not None:
    codes = tuple(sorted(set().union(*(pred | true for pred, true in clinical))))
    col = {c: j for j, c in enumerate(codes)}
    tp, fp, fn = (np.zeros((n, len(codes)), np.int64) for _ in range(3))
    for i, (pred, true) in enumerate(clinical):
      for array, found in ((tp, pred & true), (fp, pred - true), (fn, true - pred)):
        array[i, [col[c] for c in found]] = 1
    stats.update(codes=codes, tp=tp, fp=fp, fn=fn)
  return RecordStatistics(**stats)


def metrics_from_statistics(stats: RecordStatistics) -> dict[str, float]:
  """The metrics of all records: exactly `report_generation_metrics` on the same inputs."""
  # Same scalar arithmetic, in the same order, as corpus_bleu / rouge_l / meteor / clinical_f1
  # (integer sums are exact), so the values agree to the last bit, not just closely.
  out = _bleu_from_sums([int(x) for x in stats.bleu_matched.sum(axis=0)],
                        [int(x) for x in stats.bleu_total.sum(axis=0)],
                        int(stats.hyp_len.sum()), int(stats.ref_len.sum()), _BLEU_MAX_N)
  rouge = stats.rouge_l.tolist()
  out["rouge_l"] = sum(rouge) / len(rouge) if rouge else 0.0
  if stats.meteor is not None:
    total = 0.0
    for score in stats.meteor.tolist():
      total += score
    out["meteor"] = total / stats.num_records if stats.num_records else 0.0
  if stats.codes is not None:
    sums = [dict(zip(stats.codes, (int(x) for x in a.sum(axis=0))))
            for a in (stats.tp, stats.fp, stats.fn)]
    clinical = _clinical_summary(*sums)
    out["clinical_micro_f1"] = clinical["micro_f1"]
    out["clinical_macro_f1"] = clinical["macro_f1"]
  return out


def _label_cover(*all_stats: RecordStatistics | None) -> np.ndarray | None:
  """bool (N, codes): for each code in some record's labels, the records labelled with it.

  The bootstrap keeps one of them in every resample (`metrics.iter_resample_indices`), so each
  resample's clinical macro F1 averages the same codes as the point estimate. None without
  labels (then the bootstrap is the plain one).
  """
  columns = [(s.tp + s.fn) > 0 for s in all_stats if s is not None and s.codes is not None]
  if not columns:
    return None
  cover = np.concatenate(columns, axis=1)
  return cover[:, cover.any(axis=0)]


def resample_indices(num_records: int, n_bootstrap: int, seed: int = 0,
                     stats: RecordStatistics | None = None,
                     baseline: RecordStatistics | None = None) -> np.ndarray:
  """int64 (n_bootstrap, num_records): each resample's records, as `bootstrap_from_statistics`
  draws them for the same seed, `stats` and `baseline` (with replacement, keeping a record of
  every labelled code: `metrics.iter_resample_indices`). Without `stats`, the plain bootstrap."""
  _check_bootstrap_args(num_records, n_bootstrap)
  return metrics.resample_indices(num_records, int(n_bootstrap), seed,
                                  _label_cover(stats, baseline))


def _metrics_of_weights(stats: RecordStatistics, w: np.ndarray) -> dict[str, np.ndarray]:
  """Every metric (B,) of B weighted record multisets (rows of w, each summing to N)."""
  m = w @ stats.bleu_matched.astype(np.float64)
  t = w @ stats.bleu_total.astype(np.float64)
  h = w @ stats.hyp_len.astype(np.float64)
  r = w @ stats.ref_len.astype(np.float64)
  # corpus_bleu vectorised: a zero precision at n zeroes BLEU-n and every higher order.
  bp = np.where(h > r, 1.0, np.exp(1.0 - r / np.maximum(h, 1.0)))
  ok = (m > 0) & (t > 0)
  log_p = np.where(ok, np.log(np.where(ok, m, 1.0) / np.maximum(t, 1.0)), -np.inf)
  log_sum = np.cumsum(log_p, axis=1)
  out = {}
  for n in range(1, _BLEU_MAX_N + 1):
    finite = np.isfinite(log_sum[:, n - 1]) & (h > 0)
    out[f"bleu{n}"] = np.where(finite, bp * np.exp(np.where(finite, log_sum[:, n - 1], 0.0) / n),
                               0.0)
  num = stats.num_records
  out["rouge_l"] = w @ stats.rouge_l / num
  if stats.meteor is not None:
    out["meteor"] = w @ stats.meteor / num
  if stats.codes is not None:
    tp, fp, fn = (w @ a.astype(np.float64) for a in (stats.tp, stats.fp, stats.fn))

    def f1(t_, p_, n_):
      return np.where(t_ > 0, 2 * t_ / np.maximum(2 * t_ + p_ + n_, 1.0), 0.0)

    out["clinical_micro_f1"] = f1(tp.sum(axis=1), fp.sum(axis=1), fn.sum(axis=1))
    # As clinical_f1: the macro mean runs over the codes present in this resample's labels
    # (from `resample_indices`/`bootstrap_from_statistics`: every code of the full labels).
    present = (tp + fn) > 0
    count = present.sum(axis=1)
    out["clinical_macro_f1"] = np.where(
        count > 0, np.sum(f1(tp, fp, fn) * present, axis=1) / np.maximum(count, 1), 0.0)
  return out


def resampled_metrics(stats: RecordStatistics, indices: np.ndarray) -> dict[str, np.ndarray]:
  """Each metric (B,) on each resample; `indices` (B, N) as from `resample_indices`."""
  indices = np.asarray(indices)
  if indices.ndim != 2 or indices.shape[1] != stats.num_records:
    raise ValueError(f"indices must be (B, {stats.num_records}), got {indices.shape}")
  chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // max(stats.num_records, 1))
  parts = [_metrics_of_weights(stats, metrics.resample_weights(indices[s:s + chunk],
                                                               stats.num_records))
           for s in range(0, indices.shape[0], chunk)]
  return {k: np.concatenate([p[k] for p in parts]) for k in stats.metric_names}


def _check_bootstrap_args(num_records: int, n_bootstrap, alpha: float = 0.05) -> None:
  if isinstance(n_bootstrap, bool) or int(n_bootstrap) != n_bootstrap or n_bootstrap < 1:
    raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}")
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must be in (0, 1) (0.05 gives 95 % intervals), got {alpha!r}")
  if num_records < 1:
    raise ValueError("bootstrap needs at least one record to resample")


def bootstrap_from_statistics(
    stats: RecordStatistics,
    baseline: RecordStatistics | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, dict[str, float]]:
  """Percentile bootstrap intervals over records from precomputed `record_statistics`.

  Args:
    stats: the system's per-record statistics.
    baseline: another system's statistics on the same records in the same order (same
      references and labels); adds paired differences stats − baseline.
    n_bootstrap: number of resamples (N records drawn with replacement per resample, keeping
      at least one record of every code in the labels: see `metrics.iter_resample_indices`).
    seed: resampling seed; the same seed gives the same resamples.
    alpha: 0.05 gives 95 % intervals (the alpha/2 and 1 − alpha/2 percentiles).

  Returns:
    {metric: {'value', 'ci_low', 'ci_high'}} for each metric of `stats.metric_names`, plus
    'diff', 'diff_ci_low', 'diff_ci_high' with a baseline: the difference is taken within
    each resample (the same records for both systems), so record-to-record variation that
    both systems share cancels out.

  Raises:
    ValueError: for n_bootstrap < 1, alpha outside (0, 1), no records, or a baseline with
      other records or metrics.
  """
  num = stats.num_records
  _check_bootstrap_args(num, n_bootstrap, alpha)
  names = stats.metric_names
  if baseline is not None:
    if baseline.num_records != num:
      raise ValueError(f"baseline has {baseline.num_records} records, the system {num}")
    if baseline.metric_names != names:
      raise ValueError(f"baseline metrics {baseline.metric_names} differ from {names}")
  samples = {k: [] for k in names}
  diffs = {k: [] for k in names}
  # One set of resamples for both systems (paired), each keeping a record of every labelled
  # code (`_label_cover`), drawn by the shared `metrics.iter_resample_indices`.
  for indices in metrics.iter_resample_indices(num, int(n_bootstrap), seed,
                                               _label_cover(stats, baseline),
                                               max_elements=_BOOTSTRAP_CHUNK_ELEMENTS):
    w = metrics.resample_weights(indices, num)
    own = _metrics_of_weights(stats, w)
    base = None if baseline is None else _metrics_of_weights(baseline, w)
    for k in names:
      samples[k].append(own[k])
      if base is not None:
        diffs[k].append(own[k] - base[k])
  value = metrics_from_statistics(stats)
  base_value = None if baseline is None else metrics_from_statistics(baseline)
  q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
  out = {}
  for k in names:
    low, high = np.percentile(np.concatenate(samples[k]), q)
    out[k] = {"value": value[k], "ci_low": float(low), "ci_high": float(high)}
    if base_value is not None:
      d_low, d_high = np.percentile(np.concatenate(diffs[k]), q)
      out[k].update(diff=value[k] - base_value[k], diff_ci_low=float(d_low),
                    diff_ci_high=float(d_high))
  return out


def bootstrap_generation_metrics(
    generated: Sequence[str],
    references: Refs,
    labels: Sequence[Iterable[str]] | None = None,
    with_meteor: bool = True,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    baseline_generated: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
  """`report_generation_metrics` with percentile bootstrap CIs over records.

  Args:
    generated: generated report texts (N).
    references: per record, one reference text or several.
    labels: per record, its SCP codes; None leaves clinical F1 out.
    with_meteor: whether to score METEOR.
    n_bootstrap: number of resamples.
    seed: resampling seed.
    alpha: 0.05 gives 95 % intervals.
    baseline_generated: another system's reports for the same N records; adds the paired
      bootstrap difference generated − baseline.

  Returns:
    See `bootstrap_from_statistics`; 'value' equals `report_generation_metrics` exactly.
  """
  n = len(generated)
  _check_bootstrap_args(n, n_bootstrap, alpha)
  if baseline_generated is not None and len(baseline_generated) != n:
    raise ValueError(f"{n} generated reports but {len(baseline_generated)} baseline reports")
  stats = record_statistics(generated, references, labels, with_meteor)
  baseline = (None if baseline_generated is None else
              record_statistics(baseline_generated, references, labels, with_meteor))
  return bootstrap_from_statistics(stats, baseline, n_bootstrap, seed, alpha)
