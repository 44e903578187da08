"""One report per record out of several decodes, chosen by what ECGs like it were reported with.

With `config.decoding.rerank_samples = n > 0`, decoding writes n + 1 candidates per record:
the `decoding.method` decode first, then n nucleus samples (`decoding.temperature`,
`decoding.top_p`). Each candidate's SCP statements (`metrics.clinical.ScpMatcher`) are
compared with those of the reports of the record's k nearest training ECGs
(`decoding.rerank_neighbours`, the bank of `report_gen/neighbours.py`): the candidate with the
highest mean statement F1 against them is kept, the first on a tie. This is minimum-Bayes-risk
selection with the neighbours' reports standing in for the unknown reference. Single decodes
either drop a frequent statement or invent an unsupported one; the neighbours' reports
arbitrate between the candidates without any label (training-fold reports only). A record
without an ECG (the no-ECG arm's zero features) has no neighbours and keeps its first
candidate.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def statement_f1(predicted: frozenset, reference: frozenset) -> float:
  """F1 of two statement sets; two empty sets agree fully (1.0)."""
  if not predicted and not reference:
    return 1.0
  return 2.0 * len(predicted & reference) / (len(predicted) + len(reference))


def expected_statement_f1(candidate_sets: Sequence[frozenset],
                          neighbour_sets: Sequence[frozenset]) -> np.ndarray:
  """(num_candidates,) mean statement F1 of each candidate against the neighbours' sets
  (zeros without neighbours)."""
  if not neighbour_sets:
    return np.zeros(len(candidate_sets))
  return np.asarray([np.mean([statement_f1(c, n) for n in neighbour_sets])
                     for c in candidate_sets])


def pick_reports(candidates: Sequence[Sequence[str]],
                 neighbour_sets: Sequence[Sequence[frozenset]], matcher=None) -> list[str]:
  """Per record, the candidate whose statements agree best with its neighbours' reports.

  Args:
    candidates: per record, its candidate reports (the first wins ties).
    neighbour_sets: per record, the statement sets of its nearest training reports ([]: no
      neighbours, the first candidate is kept).
    matcher: the report → statements matcher (default `clinical.ScpMatcher()`).
  """
  from merit_jax.metrics import clinical  # pylint: disable=g-import-not-at-top
  if len(candidates) != len(neighbour_sets):
    raise ValueError(f"{len(candidates)} records of candidates but {len(neighbour_sets)} of "
                     "neighbours")
  matcher = matcher or clinical.ScpMatcher()
  picked = []
  for texts, neighbours in zip(candidates, neighbour_sets):
    utility = expected_statement_f1([frozenset(matcher(t)) for t in texts], neighbours)
    picked.append(texts[int(np.argmax(utility))])  # argmax: the first of equal maxima.
  return picked
