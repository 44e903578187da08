"""Label-free report-generation baselines: arms that write reports without training.

`most_frequent`: every test record gets the training fold's most common report text (exact
string after whitespace normalisation; ties broken by the alphabetically first text, so the
choice does not depend on the order records are read in). It sees no ECG, no label and no
model: a system that cannot beat it has learned nothing from the ECG. `run_most_frequent`
gives it the summary of a trained arm (`generate.run_train`), so compare mode tables, scores
and pairs it like the others.
"""

from __future__ import annotations

import collections
import json
import os
import time
from typing import Sequence

from merit_jax import provision
from merit_jax.report_gen import GenerateError
from merit_jax.report_gen import data as data_lib

MOST_FREQUENT = "most_frequent"


def normalise_whitespace(text: str) -> str:
  """Runs of whitespace to one space, ends stripped: reports that differ only there count as
  the same report."""
  return " ".join(text.split())


def most_frequent_report(reports: Sequence[str]) -> tuple[str, int]:
  """(the most common non-empty report after whitespace normalisation, its count).

  Raises:
    GenerateError: when no report is non-empty.
  """
  counts = collections.Counter(t for t in map(normalise_whitespace, reports) if t)
  if not counts:
    raise GenerateError("most_frequent baseline: the training split has no non-empty report")
  # Highest count first; among equal counts the alphabetically first text (order-free).
  text, count = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
  return text, count


def run_most_frequent(config, workdir: str) -> dict:
  """The most-frequent-report arm: reads the splits, writes, scores; no features, no training.

  The training reports and the test records come from the same `data_lib.compute_features`
  call a trained arm makes (with the no-ECG source, whose features are zeros and cost
  nothing), so the arm sees the same training reports and is scored on the same test records
  in the same order (its differences from the other arms are paired).

  Returns:
    `generate.run_train`'s summary: {encoder, train_records, steps 0, batch_size 0,
    train_seconds, first_loss None, final_loss None, trainable_params 0, metrics,
    eval_seconds, generated, test} plus 'report' (the text) and 'report_count'.
  """
  from merit_jax.metrics import generation  # pylint: disable=g-import-not-at-top
  from merit_jax.report_gen import reporting  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  provision.ensure_datasets(config.data)
  source = data_lib.load_feature_source(None, None, int(config.seed),
                                        config.data.preprocess.to_dict(),
                                        int(config.feature_batch_size))
  t0 = time.time()
  train = data_lib.compute_features(workdir, config, source, config.train_split, "pooled")
  report, count = most_frequent_report(train["reports"])
  train_s = time.time() - t0
  test = data_lib.compute_features(workdir, config, source, config.eval.split, "pooled",
                                   config.eval.max_records)
  t0 = time.time()
  generated = [report] * len(test["reports"])
  metrics = generation.report_generation_metrics(
      generated, test["reports"], labels=test["codes"], with_meteor=bool(config.eval.meteor))
  metrics["num_records"] = len(generated)
  metrics["empty_generations"] = 0
  summary = {"encoder": "none (most frequent training report)",
             "train_records": len(train["reports"]), "steps": 0, "batch_size": 0,
             "train_seconds": train_s, "first_loss": None, "final_loss": None,
             "trainable_params": 0, "report": report, "report_count": count,
             "metrics": metrics, "eval_seconds": time.time() - t0}
  reporting.write_samples(os.path.join(workdir, "samples.csv"), test, generated)
  with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  summary["generated"] = generated
  summary["test"] = {"reports": test["reports"], "ecg_id": test["ecg_id"].tolist(),
                     "codes": test["codes"]}
  return summary
