"""The page a person reads: `results/report_generation_samples.md`.

Twelve test records, the same ones every run (`select_records`: a fixed rule over the test
split's PTB-XL labels, spread over the superdiagnostic classes and two rhythm classes), each
with its reference and every arm's report side by side and the SCP statements
`metrics.clinical.ScpMatcher` finds in each; then, over all test records, which statements the
MERIT arm recovers, misses and invents (`statement_confusion`). Compare mode writes it
(`write_samples_page`) next to the comparison table.
"""

from __future__ import annotations

import collections
import html
import os
from typing import Iterable, Sequence

from merit_jax import atomic_files
from merit_jax.metrics import clinical
from merit_jax.report_gen import reporting

NUM_RECORDS = 12
# PTB-XL 1.0.3 scp_statements.csv: the diagnostic statements of each `diagnostic_class`, and
# the rhythm statements (`rhythm` = 1). Built in so the page's choice of records does not depend
# on which copy of the table a run reads (tests/test_report_gen_samples.py checks it against the
# real table when present).
SUPERCLASS_CODES = {
    "NORM": ("NORM",),
    "MI": ("IMI", "ASMI", "ILMI", "AMI", "ALMI", "INJAS", "LMI", "INJAL", "IPLMI", "IPMI",
           "INJIN", "INJLA", "PMI", "INJIL"),
    "STTC": ("NDT", "NST_", "DIG", "LNGQT", "ISC_", "ISCAL", "ISCIN", "ISCIL", "ISCAS", "ISCLA",
             "ANEUR", "EL", "ISCAN"),
    "CD": ("LAFB", "IRBBB", "1AVB", "IVCD", "CRBBB", "CLBBB", "LPFB", "WPW", "ILBBB", "3AVB",
           "2AVB"),
    "HYP": ("LVH", "LAO/LAE", "RVH", "RAO/RAE", "SEHYP"),
}
RHYTHM_CODES = ("SR", "AFIB", "STACH", "SARRH", "SBRAD", "PACE", "SVARR", "BIGU", "AFLT",
                "SVTAC", "PSVT", "TRIGU")
_SUPERCLASS_OF = {code: cls for cls, codes in SUPERCLASS_CODES.items() for code in codes}
# (slot, records): two of each superdiagnostic class, one atrial fibrillation, one other
# rhythm than sinus rhythm and atrial fibrillation.
SLOTS = (("NORM", 2), ("MI", 2), ("STTC", 2), ("CD", 2), ("HYP", 2), ("AFIB", 1),
         ("other rhythm", 1))
SELECTION_RULE = (
    "Records are chosen by a fixed rule over the test split's PTB-XL `scp_codes`, so every run "
    "shows the same ones: two records of each superdiagnostic class (NORM, MI, STTC, CD, HYP; "
    "class of a statement from PTB-XL's `scp_statements.csv`), one with atrial fibrillation "
    "(AFIB) and one with another rhythm than sinus rhythm and AFIB; for a class, records "
    "whose only superdiagnostic class it is come first, then any record with it, each group "
    "by ascending ecg_id; a record is used once. Slots no record fills go to the lowest "
    "remaining ecg_ids.")
# Rows of each record's table: (results key, title); arms not run are left out.
SAMPLE_ARMS = (("none", "no ECG"), ("random", "random encoder"),
               ("most_frequent", "most frequent report"), ("merit", "MERIT"))
TARGET_ARM = "merit"


def superclasses(codes: Iterable[str]) -> set[str]:
  """The superdiagnostic classes of a record's SCP codes."""
  return {_SUPERCLASS_OF[c] for c in codes if c in _SUPERCLASS_OF}


def _in_slot(slot: str, codes: Sequence[str]) -> bool:
  if slot == "AFIB":
    return "AFIB" in codes
  if slot == "other rhythm":
    return any(c in RHYTHM_CODES and c not in ("SR", "AFIB") for c in codes)
  return slot in superclasses(codes)


def select_records(ecg_ids: Sequence[int], codes: Sequence[Sequence[str]],
                   n: int = NUM_RECORDS) -> list[tuple[int, str]]:
  """[(row index, slot)] of the page's records, by `SELECTION_RULE` (in slot order)."""
  order = sorted(range(len(ecg_ids)), key=lambda i: int(ecg_ids[i]))
  chosen: list[tuple[int, str]] = []
  used = set()
  for slot, count in SLOTS:
    holders = [i for i in order if i not in used and _in_slot(slot, codes[i])]
    # Records of this superclass alone read most clearly; mixed ones only when too few.
    pure = [i for i in holders if superclasses(codes[i]) == {slot}]
    for i in (pure + [i for i in holders if i not in pure])[:count]:
      chosen.append((i, slot))
      used.add(i)
  for i in order:
    if len(chosen) >= n:
      break
    if i not in used:
      chosen.append((i, "other"))
      used.add(i)
  return chosen[:n]


def statement_confusion(generated: Sequence[str], labels: Sequence[Iterable[str]],
                        matcher: clinical.ScpMatcher | None = None) -> list[dict]:
  """Per SCP statement: recovered (labelled and found in the output), missed (labelled only),
  invented (found only), over all records; the statement-F1 counts of `clinical_f1` (same
  matcher, same labels), sorted by recovered + missed + invented, then code."""
  counts = collections.defaultdict(lambda: [0, 0, 0])
  for pred, true in clinical.clinical_records(generated, labels, matcher):
    for col, found in enumerate((pred & true, true - pred, pred - true)):
      for code in found:
        counts[code][col] += 1
  rows = [{"code": c, "recovered": r, "missed": m, "invented": v}
          for c, (r, m, v) in counts.items()]
  return sorted(rows, key=lambda d: (-(d["recovered"] + d["missed"] + d["invented"]), d["code"]))


def _cell(text: str) -> str:
  """A table cell: markup shown as text (an output's '<strong>' must not render), no pipes or
  line breaks."""
  text = " ".join(text.split())
  return html.escape(text, quote=False).replace("|", "\\|") if text else "*(empty)*"


def samples_markdown(results: dict, command: str = "", n: int = NUM_RECORDS,
                     split: str = "test") -> str:
  """The page, from compare mode's per-arm summaries (`generated`, `test` of each arm)."""
  matcher = clinical.ScpMatcher()
  first = next(iter(results.values()))
  test = first["test"]
  arms = [(k, t) for k, t in SAMPLE_ARMS if k in results]
  arms += [(k, k) for k in results if k not in dict(SAMPLE_ARMS)]
  lines = [f"# Report generation: {split} records side by side", ""]
  if command:
    lines += [f"Command: `{command}`", ""]
  lines += [f"{SELECTION_RULE.replace('test split', f'{split} split')} Outputs are the "
            f"compare run's {split}-split reports of each arm "
            "(`report_generation.json`); 'statements' are the SCP statements "
            "`metrics.clinical.ScpMatcher` finds in the text.", ""]
  for k, (i, slot) in enumerate(select_records(test["ecg_id"], test["codes"], n), 1):
    lines += [f"## {k}. ecg_id {test['ecg_id'][i]} ({slot})", "",
              f"PTB-XL labels: {' '.join(test['codes'][i]) or '–'}", "",
              "| source | report | statements |", "|---|---|---|"]
    rows = [("reference", test["reports"][i])]
    rows += [(title, results[key]["generated"][i]) for key, title in arms
             if results[key]["test"]["ecg_id"] == test["ecg_id"]]
    for title, text in rows:
      lines.append(f"| {title} | {_cell(text)} | {' '.join(sorted(matcher(text))) or '–'} |")
    lines.append("")
  target = TARGET_ARM if TARGET_ARM in results else list(results)[-1]
  r = results[target]
  confusion = statement_confusion(r["generated"], r["test"]["codes"], matcher)
  lines += [f"## Statements the `{target}` arm recovers, misses, invents "
            f"({len(r['generated'])} {split} records)", "",
            f"Per SCP statement over all {split} records: recovered = in the record's PTB-XL "
            "labels and found in the output, missed = in the labels only, invented = in the "
            "output only (the counts behind the table's statement F1). Most frequent first.",
            "", "| statement | recovered | missed | invented |", "|---|---|---|---|"]
  for row in confusion:
    lines.append(f"| {row['code']} | {row['recovered']} | {row['missed']} | "
                 f"{row['invented']} |")
  if not confusion:
    lines.append("| – | 0 | 0 | 0 |")
  return "\n".join(lines) + "\n"


def write_samples_page(config, results: dict, workdir: str, command: str = "") -> str:
  """workdir/report_generation_samples.md and `config.samples_path` (when set; `_<split>` added
  for a split other than test); returns the path of the latter (else of the former)."""
  page = samples_markdown(results, command, split=config.eval.split)
  out = os.path.join(workdir, "report_generation_samples.md")
  atomic_files.write_text(out, page)
  if config.samples_path:
    out = reporting.page_path_for_split(config.samples_path, config.eval.split)
    atomic_files.write_text(out, page)
  return out
