"""Hinted statements written out: each SCP statement as the phrase the training reports use.

With `config.decoding.write_hints` a record's report starts with the phrases of its hinted
statements (`statement_hints`), written for the LLM, which then continues the report from
there. The LLM, told "Statements: SR NORM.", still drops about 40 % of what it is told within
a short report; a report that starts with the hinted statements cannot drop them, and the LLM
adds what follows them.

A statement's phrase is the word n-gram (1 to `MAX_WORDS` words) that occurs in the most
training reports labelled with it among the n-grams in which the report matcher
(`metrics.clinical.ScpMatcher`) finds that statement and no other: "sinusrhythmus" for SR,
"normales ekg" for NORM, in the reports' own language and spelling. Phrases are written in the
order the statements usually take in a report (their mean relative position there).

The table is fitted on the training split's reports when the projector is trained and saved
beside it (`PHRASES_FILE`), so score and predict mode write the same phrases.
"""

from __future__ import annotations

import collections
import json
import os
import re
from typing import Sequence

from merit_jax import atomic_files
from merit_jax.report_gen import GenerateError

PHRASES_FILE = "statement_phrases.json"
MAX_WORDS = 5
_EDGE_PUNCTUATION = " ,.;:"


def _ngrams(words: Sequence[str]):
  """(start index, n-gram text) of every 1..MAX_WORDS word n-gram, trimmed of punctuation."""
  for n in range(1, MAX_WORDS + 1):
    for i in range(len(words) - n + 1):
      text = " ".join(words[i:i + n]).strip(_EDGE_PUNCTUATION)
      if text:
        yield i, text


def fit(reports: Sequence[str], codes: Sequence[Sequence[str]], matcher=None) -> dict:
  """The phrase table of the training reports and their records' SCP codes.

  Returns {'phrases': {code: phrase}, 'position': {code: mean relative position}} for every
  statement that some labelled report names in an n-gram of its own.
  """
  from merit_jax.metrics import clinical  # pylint: disable=g-import-not-at-top
  if len(reports) != len(codes):
    raise GenerateError(f"statement phrases: {len(reports)} reports but {len(codes)} label sets")
  matcher = matcher or clinical.ScpMatcher()
  counts = collections.defaultdict(collections.Counter)
  positions = collections.defaultdict(list)
  for report, labels in zip(reports, codes):
    if isinstance(labels, str):  # A set of a string would be its characters.
      raise GenerateError(f"statement phrases: labels {labels!r} must be a list of SCP codes")
    words = re.sub(r"\s+", " ", str(report)).strip().split(" ")
    labels = set(labels)
    seen = set()  # Each n-gram counts once a report: the phrase most reports use wins.
    for start, text in _ngrams(words):
      if text in seen:
        continue
      seen.add(text)
      found = matcher(text)
      if len(found) != 1:
        continue
      code = next(iter(found))
      if code in labels:
        counts[code][text] += 1
        positions[code].append(start / len(words))
  # Ties go to the shorter, then the alphabetically first phrase: the table is deterministic.
  phrases = {code: min(c.items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0]))[0]
             for code, c in sorted(counts.items())}
  position = {code: sum(positions[code]) / len(positions[code]) for code in phrases}
  return {"phrases": phrases, "position": position}


def render(table: dict, hinted: Sequence[str]) -> str:
  """The phrases of `hinted` in report order ('' when none has a phrase)."""
  known = [c for c in hinted if c in table["phrases"]]
  known.sort(key=lambda c: (table["position"][c], c))
  return " ".join(table["phrases"][c] for c in known)


def save(directory: str, table: dict) -> None:
  """Writes the table atomically (a crash leaves the old file or none)."""
  path = os.path.join(directory, PHRASES_FILE)
  atomic_files.write_text(path, json.dumps(table, ensure_ascii=False, indent=1, sort_keys=True))


def load(directory: str) -> dict | None:
  """The saved table, or None when the run saved none (trained before phrases existed)."""
  path = os.path.join(directory, PHRASES_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      table = json.load(f)
  except (OSError, ValueError) as e:
    raise GenerateError(f"{path}: cannot read the statement phrase table ({e})") from e
  if set(table) != {"phrases", "position"} or set(table["phrases"]) != set(table["position"]):
    raise GenerateError(f"{path}: not a statement phrase table (keys 'phrases', 'position' "
                        "over the same statements)")
  return table
