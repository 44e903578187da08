"""Degenerate generated reports: empty, holding markup, or looping on a word n-gram.

The three rules a generated report must pass (issue 15, "Decoding that cannot degenerate"):

  - empty: nothing but whitespace;
  - markup: an HTML/XML tag (`<b>`, `</p>`, `<br/>`, `<!-- -->`, also one cut off at the end such
    as `<strong`) or a character entity (`&lt;`, `&amp;`, `&#60;`, `&#x3c;`). A bare `<` or `>`
    between numbers ("QRS < 120 ms") is ordinary clinical text and does not count;
  - repeated_ngram: some n-gram of whitespace-separated words (n >= 4) occurs more than twice
    (overlapping occurrences count). Checking n = 4 suffices: an n-gram of n > 4 that occurs
    three times carries a 4-gram that does.

`degeneracy_counts` gives the per-rule counts a run prints and writes; `degeneracy_flags` and
`offenders` name the texts that broke each rule.
"""

from __future__ import annotations

import collections
import re
from typing import Sequence

RULES = ("empty", "markup", "repeated_ngram")
NGRAM = 4  # Smallest n whose repetition counts as a loop.
MAX_OCCURRENCES = 2  # An n-gram may occur this often; once more is a loop.

# '<' directly followed by a letter, '/', '!' or '?' opens a tag (closed or cut off); entities
# are named (&lt;), decimal (&#60;) or hexadecimal (&#x3c;).
_MARKUP = re.compile(r"<[A-Za-z/!?]|&(?:[A-Za-z][A-Za-z0-9]*|#[0-9]+|#[xX][0-9A-Fa-f]+);")


def has_markup(text: str) -> bool:
  return _MARKUP.search(text) is not None


def repeated_ngrams(text: str, n: int = NGRAM,
                    max_occurrences: int = MAX_OCCURRENCES) -> list[tuple[str, int]]:
  """Word n-grams of `text` occurring more than `max_occurrences` times: [(ngram, count)]."""
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}")
  words = text.split()
  counts = collections.Counter(
      tuple(words[i:i + n]) for i in range(len(words) - n + 1))
  return [(" ".join(g), c) for g, c in counts.items() if c > max_occurrences]


def degeneracy_flags(text: str, n: int = NGRAM,
                     max_occurrences: int = MAX_OCCURRENCES) -> dict[str, bool]:
  """{rule: broken} for one text (RULES)."""
  return {"empty": not text.strip(), "markup": has_markup(text),
          "repeated_ngram": bool(repeated_ngrams(text, n, max_occurrences))}


def degeneracy_counts(texts: Sequence[str], n: int = NGRAM,
                      max_occurrences: int = MAX_OCCURRENCES) -> dict[str, int]:
  """{"empty", "markup", "repeated_ngram": texts breaking that rule, "total": len(texts)}."""
  counts = dict.fromkeys(RULES, 0)
  for text in texts:
    for rule, broken in degeneracy_flags(text, n, max_occurrences).items():
      counts[rule] += int(broken)
  counts["total"] = len(texts)
  return counts


def offenders(texts: Sequence[str], n: int = NGRAM,
              max_occurrences: int = MAX_OCCURRENCES) -> dict[str, list[int]]:
  """{rule: indices of the texts breaking it}, for listing them beside the counts."""
  out: dict[str, list[int]] = {rule: [] for rule in RULES}
  for i, text in enumerate(texts):
    for rule, broken in degeneracy_flags(text, n, max_occurrences).items():
      if broken:
        out[rule].append(i)
  return out
