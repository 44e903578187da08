"""Statement hints as text: a linear classifier's SCP statements, written into the prompt.

With `config.statement_hints.enabled`, one logistic regression per SCP statement is fitted on
the training split's (standardised) pooled features against the records' labels (their SCP
codes), and each record's prompt becomes

    "Statements: SR NORM.\n" + config.prompt

(the codes the classifier predicts for that record, "none" when it predicts none). The LLM can
then copy a statement it is told instead of having to read it out of the soft prefix, which on
~1,000 training reports it does for the most frequent report only. The training records' own
hints are out-of-fold predictions (`folds`-fold cross-fitting), so the LLM learns how far to
trust hints exactly as reliable as a new record's. With `train_on='labels'` the training
records' hints are instead their own labels (among the hinted statements): the LLM then learns
to copy hints, and a new record's report is as right as its classifier's hints.

Only statements the report matcher scores (`metrics.clinical.ScpMatcher`) and with at least
`min_positives` training positives are hinted; each one's threshold maximises its out-of-fold
F1 on the training split, and a statement whose best out-of-fold F1 is below `min_f1` is never
hinted. An all-zero feature row (the no-ECG arm) gets the same hints for every record.

The fitted classifier is saved beside the projector (`HINTS_FILE`) so score and predict mode
write the same prompts.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from merit_jax import atomic_files
from merit_jax.report_gen import GenerateError

HINTS_FILE = "statement_hints.npz"


def enabled(config) -> bool:
  """config.statement_hints.enabled (absent from an older run's config: off)."""
  hints = config.get("statement_hints")
  return bool(hints and hints.get("enabled", False))


def _fit_one(x: np.ndarray, y: np.ndarray, l2: float, seed: int):
  from sklearn import linear_model  # pylint: disable=g-import-not-at-top
  model = linear_model.LogisticRegression(C=1.0 / l2, max_iter=2000, random_state=seed)
  model.fit(x, y)
  return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def _best_threshold(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """(threshold, F1) maximising F1 of `scores >= threshold` against 0/1 `y`."""
  order = np.argsort(-scores, kind="stable")
  s, t = scores[order], y[order]
  tp = np.cumsum(t)
  fp = np.cumsum(1 - t)
  f1 = 2 * tp / (2 * tp + fp + (t.sum() - tp))
  # Only cut between distinct scores, so that the threshold separates what it claims to.
  last_of_run = np.r_[s[1:] != s[:-1], True]
  f1 = np.where(last_of_run, f1, -1.0)
  best = int(np.argmax(f1))
  return float(s[best]), float(max(f1[best], 0.0))


def fit(features: np.ndarray, codes: Sequence[Sequence[str]], scored_codes: Sequence[str],
        folds: int = 5, min_positives: int = 5, min_f1: float = 0.3, l2: float = 1.0,
        seed: int = 0) -> tuple[dict, list[list[str]]]:
  """Fits the hint classifier on training features and their records' SCP codes.

  Returns (classifier {'codes' [C], 'coef' (C, D), 'intercept' (C,), 'threshold' (C,),
  'oof_f1' (C,)}, out-of-fold hints of every training row).
  """
  x = np.asarray(features, np.float64)
  if x.ndim != 2:
    raise GenerateError("statement_hints needs pooled (N, D) features (projector_kind='mlp'), "
                        f"got shape {x.shape}")
  if len(codes) != x.shape[0]:
    raise GenerateError(f"statement_hints: {x.shape[0]} feature rows but {len(codes)} label "
                        "sets")
  if folds < 2:
    raise GenerateError(f"config.statement_hints.folds={folds} must be at least 2")
  fold = np.random.default_rng(seed).permutation(x.shape[0]) % folds
  kept, coefs, intercepts, thresholds, f1s, oof_cols = [], [], [], [], [], []
  for code in scored_codes:
    y = np.array([code in c for c in codes], np.int64)
    if y.sum() < min_positives or y.sum() == len(y):
      continue
    oof = np.zeros(len(y))
    for f in range(folds):
      train, held = fold != f, fold == f
      if y[train].min() == y[train].max():  # A fold without positives: no fit, no hint.
        oof[held] = -np.inf
        continue
      w, b = _fit_one(x[train], y[train], l2, seed)
      oof[held] = x[held] @ w + b
    threshold, f1 = _best_threshold(oof, y)
    if f1 < min_f1:
      continue
    w, b = _fit_one(x, y, l2, seed)
    kept.append(code)
    coefs.append(w)
    intercepts.append(b)
    thresholds.append(threshold)
    f1s.append(f1)
    oof_cols.append(oof >= threshold)
  d = x.shape[1]
  classifier = {"codes": kept, "coef": np.asarray(coefs, np.float64).reshape(len(kept), d),
                "intercept": np.asarray(intercepts, np.float64),
                "threshold": np.asarray(thresholds, np.float64),
                "oof_f1": np.asarray(f1s, np.float64)}
  hits = np.stack(oof_cols, axis=1) if oof_cols else np.zeros((x.shape[0], 0), bool)
  return classifier, [[kept[j] for j in np.flatnonzero(row)] for row in hits]


def predict(classifier: dict, features: np.ndarray) -> list[list[str]]:
  """The hinted codes of each feature row."""
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or x.shape[1] != classifier["coef"].shape[1]:
    raise GenerateError(f"statement hints: features of shape {x.shape} but the classifier was "
                        f"fitted on {classifier['coef'].shape[1]} channels")
  hits = (x @ classifier["coef"].T + classifier["intercept"]) >= classifier["threshold"]
  return [[classifier["codes"][j] for j in np.flatnonzero(row)] for row in hits]


def label_hints(classifier: dict, codes: Sequence[Sequence[str]]) -> list[list[str]]:
  """Each record's own labels among the statements the classifier hints, in its order: the
  training hints of `train_on='labels'` (the LLM learns to trust hints and copy them)."""
  return [[c for c in classifier["codes"] if c in own_set]
          for own_set in map(set, codes)]


def hint_f1(hints: Sequence[Sequence[str]], codes: Sequence[Sequence[str]]) -> dict:
  """Statement F1 of the hints themselves against each record's labels, scored as a report's
  statements are (`metrics.clinical`, the matcher's codes): what a report that wrote exactly
  its hints would score, so the gap to the generated reports is what the LLM loses."""
  from merit_jax.metrics import clinical  # pylint: disable=g-import-not-at-top
  scored = set(clinical.ScpMatcher().codes)
  return clinical.records_f1((set(hinted) & scored, set(own) & scored)
                             for hinted, own in zip(hints, codes))


def prompt_text(hinted: Sequence[str], prompt: str) -> str:
  """The prompt of one record: its hinted statements, then the run's prompt."""
  return f"Statements: {' '.join(hinted) if hinted else 'none'}.\n{prompt}"


def prompt_ids(tokenizer, hints: Sequence[Sequence[str]], prompt: str) -> list[list[int]]:
  """BOS + `prompt_text` token ids of every record."""
  return [tokenizer.encode(prompt_text(h, prompt), add_bos=True) for h in hints]


def save(directory: str, classifier: dict) -> None:
  """Writes the classifier atomically (a crash leaves the old file or none)."""
  path = os.path.join(directory, HINTS_FILE)
  with atomic_files.replacing(path, suffix=".npz") as tmp:
    np.savez(tmp, codes=np.asarray(classifier["codes"], dtype=object), coef=classifier["coef"],
             intercept=classifier["intercept"], threshold=classifier["threshold"],
             oof_f1=classifier["oof_f1"])


def load(directory: str) -> dict:
  path = os.path.join(directory, HINTS_FILE)
  if not os.path.isfile(path):
    raise GenerateError(f"{directory}: {HINTS_FILE} is missing there (the statement-hint "
                        "classifier of a run trained with statement_hints.enabled)")
  with np.load(path, allow_pickle=True) as f:
    return {"codes": [str(c) for c in f["codes"]], "coef": f["coef"],
            "intercept": f["intercept"], "threshold": f["threshold"], "oof_f1": f["oof_f1"]}
