"""The statement-hint classifier's settings, chosen on validation without training an LLM.

  python -m merit_jax.report_gen.hint_settings --runs=DIR1,DIR2 --min_f1=0.3,0.4 --l2=1,10 \
      --output=FILE.md

Each DIR is the workdir of a `merit_jax.generate` train-mode run: its cached features of the
training split and of the scored split (`features_train.npz`, `features_<split>.npz`) and the
feature standardisation it trained with (`generate_config.json`). For every (min_f1, l2) the
hint classifier (`statement_hints.fit`, with the run's folds, min_positives and seed) is fitted
again on the training features and scored on the split by `statement_hints.hint_f1`: what a
report that writes exactly its hints (`decoding.write_hints` with no tokens after them)
scores. The selection rule of `recipe_table` (the highest mean of statement F1 micro and macro)
marks the first run's pick, the run the choice is made on; the others (e.g. the random-encoder
arm) show what the same settings do there.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Sequence

from absl import app
from absl import flags
import numpy as np

from merit_jax import cli
from merit_jax.report_gen import data as data_lib
from merit_jax.report_gen import projector as projector_lib
from merit_jax.report_gen import recipe_table
from merit_jax.report_gen import statement_hints


def read_run(run_dir: str, split: str) -> dict:
  """A train-mode run's cached training split and `split` ({'features' standardised as the run
  trained, 'codes' [[str]]} each, keys 'train' and 'split') and the `statement_hints.fit`
  settings it keeps: 'folds', 'min_positives', 'seed' (its generate_config.json)."""
  run_dir = os.path.abspath(os.path.expanduser(run_dir))
  with open(os.path.join(run_dir, projector_lib.CONFIG_FILE), encoding="utf-8") as f:
    meta = json.load(f)
  config = meta["config"]
  hints = config.get("statement_hints") or {}

  def cached(name: str) -> dict:
    path = data_lib.features_path(run_dir, name)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{run_dir}: no features_{name}.npz (a merit_jax.generate "
                              f"train-mode run caches the features of its splits there)")
    feats = data_lib.load_features(path)
    return {"features": data_lib.standardize_features(feats["features"],
                                                      meta.get("feature_stats")),
            "codes": feats["codes"]}

  return {"train": cached("train"), "split": cached(split),
          "folds": int(hints.get("folds", 5)), "min_positives": int(hints.get("min_positives", 5)),
          "seed": int(config.get("seed", 0))}


def score_settings(train: dict, split: dict, settings: Sequence[tuple[float, float]],
                   folds: int, min_positives: int, seed: int) -> list[dict]:
  """Per (min_f1, l2): {'min_f1', 'l2', 'statements', 'micro_f1', 'macro_f1'} of the hints a
  classifier fitted on `train` with those settings gives `split`."""
  from merit_jax.metrics import clinical  # pylint: disable=g-import-not-at-top
  rows = []
  for min_f1, l2 in settings:
    classifier, _ = statement_hints.fit(
        train["features"], train["codes"], clinical.ScpMatcher().codes, folds=folds,
        min_positives=min_positives, min_f1=min_f1, l2=l2, seed=seed)
    f1 = statement_hints.hint_f1(statement_hints.predict(classifier, split["features"]),
                                 split["codes"])
    rows.append({"min_f1": min_f1, "l2": l2, "statements": len(classifier["codes"]),
                 "micro_f1": f1["micro_f1"], "macro_f1": f1["macro_f1"]})
  return rows


def best_setting(rows: Sequence[dict]) -> int:
  """The index `recipe_table.selection_rule` picks (the first such row on a tie)."""
  scores = [recipe_table.selection_rule(r["micro_f1"], r["macro_f1"]) for r in rows]
  return int(np.argmax(scores))


def render(results: Sequence[tuple[str, int, list[dict]]], split: str, command: str) -> str:
  """The page: one table row per (run, setting), the first run's pick in bold."""
  lines = ["# Statement-hint classifier settings on the validation fold", "",
           f"Command: `{command}`", "",
           f"Scored split: `{split}`. Hint F1 = statement F1 of the hints themselves "
           "(`statement_hints.hint_f1`), which is what reports written from them with no tokens "
           "after the hints score. Selection rule, on the first run: the highest mean of micro and "
           "macro F1 (bold); the other runs show what the same settings do there.", "",
           "| run | records | min_f1 | l2 | statements hinted | hint F1 micro | hint F1 macro |",
           "|---|---|---|---|---|---|---|"]
  for k, (name, n, rows) in enumerate(results):
    best = best_setting(rows) if k == 0 else -1
    for i, r in enumerate(rows):
      cells = [name, str(n), f"{r['min_f1']:g}", f"{r['l2']:g}", str(r["statements"]),
               f"{100 * r['micro_f1']:.1f}", f"{100 * r['macro_f1']:.1f}"]
      if i == best:
        cells = [f"**{c}**" for c in cells]
      lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines + ["", "Scores in % (one fit each, no intervals)."])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  program = "merit_jax.report_gen.hint_settings"
  try:
    settings = [(float(m), float(l)) for m in flags.FLAGS.min_f1 for l in flags.FLAGS.l2]
  except ValueError as e:
    sys.exit(f"{program}: --min_f1 and --l2 take comma-separated numbers ({e})")
  results = []
  try:
    for run_dir in flags.FLAGS.runs:
      run = read_run(run_dir, flags.FLAGS.split)
      rows = score_settings(run["train"], run["split"], settings, run["folds"],
                            run["min_positives"], run["seed"])
      results.append((os.path.basename(os.path.normpath(run_dir)), len(run["split"]["codes"]),
                      rows))
      print(f"{run_dir}: done", flush=True)
  except (FileNotFoundError, KeyError, ValueError) as e:
    sys.exit(f"{program}: {e}")
  page = render(results, flags.FLAGS.split, f"python -m {program} " + " ".join(sys.argv[1:]))
  cli.write_page(flags.FLAGS.output, page)
  print(page)


def cli_main():
  """The `python -m merit_jax.report_gen.hint_settings` program."""
  cli.define_page_flags("runs", "Workdirs of merit_jax.generate train-mode runs.")
  flags.DEFINE_list("min_f1", ["0.3"], "statement_hints.min_f1 values to try.")
  flags.DEFINE_list("l2", ["1.0"], "statement_hints.l2 values to try.")
  flags.DEFINE_string("split", "validation", "The scored split (its features cached in each run).")
  app.run(main, flags_parser=cli.make_flags_parser("merit_jax.report_gen.hint_settings"))


if __name__ == "__main__":
  cli_main()
