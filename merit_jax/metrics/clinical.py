"""Clinical accuracy of generated ECG reports: SCP-ECG statements found in the text.

`ScpMatcher` recovers SCP-ECG statement codes from a report with keyword patterns (English,
German and the Swedish phrases of PTB-XL reports); `clinical_f1` scores the codes found in
generated reports against each record's labels: micro and macro F1 (the macro mean over the
codes that occur in the labels).
"""

import collections
import os
import re
from typing import Iterable, Mapping, Sequence

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
  return records_f1(clinical_records(generated, labels, matcher, codes))


def records_f1(records: Iterable[tuple[set[str], set[str]]]) -> dict:
  """`clinical_f1`'s result from per-record (predicted codes, true codes) sets, already
  restricted to the scored codes (`clinical_records`)."""
  tp, fp, fn = collections.Counter(), collections.Counter(), collections.Counter()
  for pred, true in records:
    for c in pred & true:
      tp[c] += 1
    for c in pred - true:
      fp[c] += 1
    for c in true - pred:
      fn[c] += 1
  return clinical_summary(tp, fp, fn)


def clinical_records(generated: Sequence[str], labels: Sequence[Iterable[str]],
                     matcher: ScpMatcher | None = None,
                     codes: Sequence[str] | None = None) -> list[tuple[set[str], set[str]]]:
  """Per record, (predicted codes, true codes), both restricted to the scored codes."""
  if len(generated) != len(labels):
    raise ValueError(f"{len(generated)} generated reports but {len(labels)} label sets")
  matcher = matcher or ScpMatcher()
  scored = set(matcher.codes if codes is None else codes)
  return [(matcher(text) & scored, set(record_labels) & scored)
          for text, record_labels in zip(generated, labels)]


def _f1(t, p, n):
  return 0.0 if t == 0 else 2 * t / (2 * t + p + n)


def clinical_summary(tp: Mapping[str, int], fp: Mapping[str, int],
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
