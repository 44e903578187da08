"""Statement hints from the nearest training ECGs, appended to an arm's features.

With `config.neighbour_statements = k > 0`, each record's (standardised) pooled feature gets
C more channels: for each of the C SCP statements the report matcher knows
(`metrics.clinical.ScpMatcher`), the share of the record's k nearest training ECGs (cosine on
the standardised features) whose *report* names that statement. The projector then sees which
statements ECGs like this one were reported with, a signal it would otherwise have to learn
from the LLM loss on ~1,000 reports. Only training-fold reports are used (no labels), and a
training record never counts itself: its hints are computed leave-one-out, as a new record's
are. An all-zero feature row (the no-ECG arm) has no neighbours: its hints are all zero.

The bank (unit-norm training features and their statement matrix) is saved beside the
projector so score and predict mode compute the same hints. Decoding uses the same bank to
choose among candidate reports (`neighbour_statement_sets`, `report_gen/reranking.py`).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from merit_jax import atomic_files
from merit_jax.report_gen import GenerateError

BANK_FILE = "neighbour_bank.npz"


def _unit_rows(features: np.ndarray) -> np.ndarray:
  x = np.asarray(features, np.float64)
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  return np.where(norm > 0, x / np.where(norm > 0, norm, 1.0), 0.0)


def build_bank(train_features: np.ndarray, train_reports: Sequence[str], matcher=None) -> dict:
  """{'features': unit-norm (N, D), 'statements': float32 (N, C) 0/1, 'codes': [C]}."""
  from merit_jax.metrics import clinical  # pylint: disable=g-import-not-at-top
  features = np.asarray(train_features)
  if features.ndim != 2:
    raise GenerateError("neighbour_statements needs pooled (N, D) features (projector_kind="
                        f"'mlp'), got shape {features.shape}")
  if len(train_reports) != features.shape[0]:
    raise GenerateError(f"neighbour bank: {features.shape[0]} feature rows but "
                        f"{len(train_reports)} reports")
  matcher = matcher or clinical.ScpMatcher()
  codes = list(matcher.codes)
  column = {c: i for i, c in enumerate(codes)}
  statements = np.zeros((len(train_reports), len(codes)), np.float32)
  for row, report in enumerate(train_reports):
    for code in matcher(report):
      statements[row, column[code]] = 1.0
  return {"features": _unit_rows(features).astype(np.float32), "statements": statements,
          "codes": codes}


def nearest(bank: dict, features: np.ndarray, k: int, leave_one_out: bool = False,
            key: str = "config.neighbour_statements") -> tuple[np.ndarray, np.ndarray]:
  """(indices (M, k) of each row's k nearest bank rows by cosine, in no particular order;
  has_ecg (M,) bool: False for an all-zero row, which has no neighbours).

  Only the bank's D leading channels of `features` are compared (hints appended after them
  are not part of the neighbour search). leave_one_out: `features` are the bank's own rows
  in order; row i never counts itself. `key` names the setting in error messages.
  """
  n, d = bank["features"].shape
  if k < 1 or k > n - int(leave_one_out):
    raise GenerateError(f"{key}={k} must be in [1, {n - int(leave_one_out)}] (the training "
                        "records with a report)")
  features = np.asarray(features)
  if features.ndim != 2 or features.shape[1] < d:
    raise GenerateError(f"neighbour search: features of shape {features.shape} but the bank "
                        f"was built on {d} channels")
  query = _unit_rows(features[:, :d])
  if leave_one_out and query.shape[0] != n:
    raise GenerateError("leave-one-out hints need the bank's own rows")
  sims = query @ bank["features"].T.astype(np.float64)
  if leave_one_out:
    np.fill_diagonal(sims, -np.inf)
  return np.argpartition(-sims, k - 1, axis=1)[:, :k], np.any(query != 0, axis=1)


def statement_shares(bank: dict, features: np.ndarray, k: int,
                     leave_one_out: bool = False) -> np.ndarray:
  """(M, C) share of each row's k nearest bank rows whose report names each statement.

  leave_one_out: `features` are the bank's own rows in order; row i never counts itself.
  """
  indices, has_ecg = nearest(bank, features, k, leave_one_out)
  shares = bank["statements"][indices].mean(axis=1)
  shares[~has_ecg] = 0.0  # No ECG, no neighbours.
  return shares.astype(np.float32)


def neighbour_statement_sets(bank: dict, features: np.ndarray, k: int,
                             key: str = "config.decoding.rerank_neighbours"
                             ) -> list[list[frozenset]]:
  """Per row, the statement set of each of its k nearest training reports ([] without an
  ECG)."""
  indices, has_ecg = nearest(bank, features, k, key=key)
  codes = np.asarray(bank["codes"], dtype=object)
  per_report = [frozenset(codes[row > 0]) for row in bank["statements"]]
  return [[per_report[j] for j in row] if ecg else [] for row, ecg in zip(indices, has_ecg)]


def with_hints(bank: dict, features: np.ndarray, k: int,
               leave_one_out: bool = False) -> np.ndarray:
  """Features with their `statement_shares` appended as extra channels."""
  shares = statement_shares(bank, features, k, leave_one_out)
  return np.concatenate([np.asarray(features, np.float32), shares], axis=1)


def save_bank(directory: str, bank: dict) -> None:
  """Writes the bank atomically (a crash leaves the old file or none, never half of one)."""
  path = os.path.join(directory, BANK_FILE)
  with atomic_files.replacing(path, suffix=".npz") as tmp:
    np.savez(tmp, features=bank["features"], statements=bank["statements"],
             codes=np.asarray(bank["codes"], dtype=object))


def load_bank(directory: str) -> dict:
  path = os.path.join(directory, BANK_FILE)
  if not os.path.isfile(path):
    raise GenerateError(f"{directory}: {BANK_FILE} is missing there (the training reports' "
                        "neighbour bank, which the statement hints and decoding.rerank_samples "
                        "read); retrain the projector with this version")
  with np.load(path, allow_pickle=True) as f:
    return {"features": f["features"], "statements": f["statements"],
            "codes": [str(c) for c in f["codes"]]}
