"""Validation runs of report generation side by side: what each run set, what it scored.

  python -m merit_jax.report_gen.recipe_table --runs=DIR1,DIR2,... --output=FILE.md

Each DIR is the workdir of a `merit_jax.generate` run in train mode (its summary.json and
generate_config.json) or in score mode (its summary.json names the trained projector whose
config it reads; the decoding is the score run's). A row shows the recipe fields that differ
between the runs, the final training loss, the validation loss and metrics, the number of
distinct reports (an ECG that steers the model gives many), the degenerate-output counts, and
which row the selection rule picks: the highest mean of statement F1 micro and macro on the
scored split, the figures the recipe is chosen by (validation loss is shown beside it).

With `--baseline=DIR` (any run scored on the same records, e.g. the most-frequent-report arm of
`generate --config=configs/generate.py:compare --config.arms=most_frequent`), a second table
gives each run minus that baseline as a paired bootstrap difference with its 95 % interval:
whether a recipe's lead is more than the noise of one split.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from typing import Sequence

from absl import app
from absl import flags

from merit_jax import cli

# (dotted config key, column title) of the recipe; only keys whose values differ are shown.
RECIPE_KEYS = (("lora_rank", "LoRA rank"), ("lora_targets", "LoRA on"), ("optim.lr", "lr"),
               ("total_steps", "steps"), ("batch_size", "batch"),
               ("num_prefix_tokens", "prefix tokens"), ("projector_kind", "projector"),
               ("standardize_features", "standardised features"),
               ("neighbour_statements", "neighbour statement hints (k)"),
               ("statement_hints.enabled", "statement hints in the prompt"),
               ("statement_hints.train_on", "training hints"),
               ("checkpoint", "encoder"),
               ("decoding.method", "decoding"), ("decoding.repetition_penalty", "rep. penalty"),
               ("decoding.no_repeat_ngram", "no-repeat n"),
               ("decoding.min_new_tokens", "min tokens"),
               ("decoding.max_new_tokens", "max tokens"),
               ("decoding.write_hints", "hints written"),
               ("decoding.tokens_after_hints", "tokens after hints"),
               ("decoding.rerank_samples", "reranked samples"),
               ("decoding.rerank_neighbours", "rerank neighbours (k)"),
               ("decoding.temperature", "sample temperature"),
               ("decoding.top_p", "sample top-p"))
METRIC_COLUMNS = (("bleu4", "BLEU-4"), ("rouge_l", "ROUGE-L"), ("meteor", "METEOR"),
                  ("clinical_micro_f1", "F1 micro"), ("clinical_macro_f1", "F1 macro"))


# Resamples of the paired bootstrap against --baseline.
PAIRED_BOOTSTRAP = 1000

# Keys that runs saved before they existed did not write, and what those runs did.
_OLD_RUN_VALUES = {"standardize_features": False, "neighbour_statements": 0,
                   "decoding.rerank_samples": 0, "statement_hints.enabled": False,
                   "statement_hints.train_on": "out_of_fold", "decoding.write_hints": False}


def recipe_value(tree: dict, dotted: str):
  """A run config's (JSON dict) value at a dotted key, or what runs saved before it did."""
  for key in dotted.split("."):
    if not isinstance(tree, dict) or key not in tree:
      return _OLD_RUN_VALUES.get(dotted)
    tree = tree[key]
  return tree


def read_samples(run_dir: str) -> dict[int, dict]:
  """{ecg_id: samples.csv row} of a run."""
  path = os.path.join(os.path.abspath(os.path.expanduser(run_dir)), "samples.csv")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{run_dir}: no samples.csv (not a scored merit_jax.generate run)")
  with open(path, newline="", encoding="utf-8") as f:
    return {int(row["ecg_id"]): row for row in csv.DictReader(f)}


def read_run(run_dir: str) -> dict:
  """{'name', 'config' (the recipe, decoding as scored), 'summary', 'distinct'} of a run."""
  run_dir = os.path.abspath(os.path.expanduser(run_dir))
  summary_path = os.path.join(run_dir, "summary.json")
  if not os.path.isfile(summary_path):
    raise FileNotFoundError(f"{run_dir}: no summary.json (not a finished merit_jax.generate "
                            "run)")
  with open(summary_path, encoding="utf-8") as f:
    summary = json.load(f)
  if "metrics" not in summary:
    raise ValueError(f"{run_dir}: summary.json has no metrics (trained without evaluation)")
  trained_dir = summary.get("projector", run_dir)  # A score run points at its trained run.
  with open(os.path.join(trained_dir, "generate_config.json"), encoding="utf-8") as f:
    config = json.load(f)["config"]
  if "decoding" in summary:  # Score mode: the decoding it was scored with.
    config = dict(config, decoding=summary["decoding"])
  decoding = config.get("decoding") or {}
  if decoding.get("max_new_tokens") is None:  # Decoded up to the training length.
    config = dict(config, decoding=dict(decoding,
                                        max_new_tokens=config.get("max_report_tokens")))
  if trained_dir != run_dir:
    with open(os.path.join(trained_dir, "summary.json"), encoding="utf-8") as f:
      summary = dict(summary, final_loss=json.load(f).get("final_loss"))
  distinct = len({row["generated"] for row in read_samples(run_dir).values()})
  return {"name": os.path.basename(run_dir), "config": config, "summary": summary,
          "distinct": distinct}


def paired_against(run_dir: str, baseline_dir: str, n_bootstrap: int = PAIRED_BOOTSTRAP,
                   seed: int = 0) -> dict[str, dict[str, float]]:
  """Run minus baseline on the same records, paired bootstrap: {metric: {'value', 'diff',
  'diff_ci_low', 'diff_ci_high'}} (`generation.bootstrap_generation_metrics`). Records are
  matched by ecg_id; the two runs must have scored the same records."""
  from merit_jax.metrics import generation  # pylint: disable=g-import-not-at-top
  run, base = read_samples(run_dir), read_samples(baseline_dir)
  if set(run) != set(base):
    raise ValueError(f"{run_dir} and the baseline {baseline_dir} scored different records "
                     f"({len(set(run) - set(base))} only in the run, "
                     f"{len(set(base) - set(run))} only in the baseline)")
  ids = sorted(run)
  return generation.bootstrap_generation_metrics(
      [run[i]["generated"] for i in ids], [run[i]["reference"] for i in ids],
      [run[i]["scp_codes"].split() for i in ids], with_meteor=True, n_bootstrap=n_bootstrap,
      seed=seed, baseline_generated=[base[i]["generated"] for i in ids])


def selection_rule(micro_f1: float, macro_f1: float) -> float:
  """What a recipe is chosen by: the mean of statement F1 micro and macro (highest wins)."""
  return (micro_f1 + macro_f1) / 2


def selection_score(run: dict) -> float:
  m = run["summary"]["metrics"]
  return selection_rule(m["clinical_micro_f1"], m["clinical_macro_f1"])


def _fmt(value) -> str:
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, (list, tuple)):
    return "+".join(map(str, value))
  return "–" if value is None else str(value)


def render(runs: Sequence[dict], command: str = "", baseline: dict | None = None) -> str:
  """The markdown page: one row per run, the rule's pick in bold; with `baseline`
  ({'name', 'paired': [paired_against of each run]}) the paired-difference table."""
  keys = [(k, t) for k, t in RECIPE_KEYS
          if len({json.dumps(recipe_value(r["config"], k)) for r in runs}) > 1]
  common = [(k, t) for k, t in RECIPE_KEYS if (k, t) not in keys]
  best = max(range(len(runs)), key=lambda i: selection_score(runs[i]))
  split = runs[0]["summary"].get("eval_split", "?")
  n = runs[0]["summary"]["metrics"].get("num_records")
  lines = ["# Report generation: choosing the recipe on the validation fold", ""]
  if command:
    lines += [f"Command: `{command}`", ""]
  lines += [f"Scored split: `{split}` ({n} records). Shared by every run: " + ", ".join(
      f"{t} {_fmt(recipe_value(runs[0]['config'], k))}" for k, t in common) + ".", ""]
  head = (["run"] + [t for _, t in keys] + ["final train loss", f"{split} loss"]
          + [t for _, t in METRIC_COLUMNS] + ["distinct reports", "empty / markup / repeats"])
  lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for i, run in enumerate(runs):
    s, m = run["summary"], run["summary"]["metrics"]
    cells = ([run["name"]] + [_fmt(recipe_value(run["config"], k)) for k, _ in keys]
             + [f"{s['final_loss']:.3f}" if s.get("final_loss") is not None else "–",
                f"{s['eval_loss']:.3f}"]
             + [f"{100 * m[k]:.1f}" if k in m else "–" for k, _ in METRIC_COLUMNS]
             + [f"{run['distinct']} / {m.get('num_records')}",
                f"{m.get('degenerate_empty')} / {m.get('degenerate_markup')} / "
                f"{m.get('degenerate_repeated_ngram')}"])
    if i == best:
      cells = [f"**{c}**" for c in cells]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "Scores in % on the scored split (one training run each, no intervals). "
            "Selection rule: the highest mean of statement F1 micro and macro (bold); the loss "
            "is the teacher-forced report-token cross-entropy. Distinct reports: how many "
            "different texts the run wrote over the split's records.", ""]
  if baseline:
    lines += _paired_table(runs, baseline, split)
  return "\n".join(lines)


def _paired_table(runs: Sequence[dict], baseline: dict, split: str) -> list[str]:
  first = baseline["paired"][0]
  lines = [f"## Each run minus `{baseline['name']}` on the same {split} records", "",
           f"`{baseline['name']}` scores " + ", ".join(
               f"{t} {100 * (first[k]['value'] - first[k]['diff']):.1f}"
               for k, t in METRIC_COLUMNS) + ". Paired bootstrap difference, percentage "
           f"points [95 % CI, {PAIRED_BOOTSTRAP} resamples over records].", "",
           "| run | " + " | ".join(t for _, t in METRIC_COLUMNS) + " |",
           "|" + "---|" * (len(METRIC_COLUMNS) + 1)]
  for run, paired in zip(runs, baseline["paired"]):
    lines.append("| " + " | ".join([run["name"]] + [
        f"{100 * paired[k]['diff']:+.1f} [{100 * paired[k]['diff_ci_low']:+.1f}, "
        f"{100 * paired[k]['diff_ci_high']:+.1f}]" for k, _ in METRIC_COLUMNS]) + " |")
  return lines + [""]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    runs = [read_run(d) for d in flags.FLAGS.runs]
    baseline = None
    if flags.FLAGS.baseline:
      baseline = {"name": os.path.basename(os.path.normpath(flags.FLAGS.baseline)),
                  "paired": [paired_against(d, flags.FLAGS.baseline) for d in flags.FLAGS.runs]}
  except (FileNotFoundError, ValueError, KeyError) as e:
    sys.exit(f"merit_jax.report_gen.recipe_table: {e}")
  page = render(runs, "python -m merit_jax.report_gen.recipe_table " + " ".join(sys.argv[1:]),
                baseline)
  cli.write_page(flags.FLAGS.output, page)
  print(page)


def cli_main():
  """The `python -m merit_jax.report_gen.recipe_table` program."""
  cli.define_page_flags("runs", "Workdirs of merit_jax.generate train / score runs.")
  flags.DEFINE_string("baseline", None, "Optional: a scored run (e.g. a most_frequent arm) "
                      "that every run is compared with, paired, on the same records.")
  app.run(main, flags_parser=cli.make_flags_parser("merit_jax.report_gen.recipe_table"))


if __name__ == "__main__":
  cli_main()
