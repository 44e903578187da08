"""Compares linear-probe weight-decay grids on the validation fold alone, by cross-fitting.

    python -m merit_jax.probe_grid_crossfit --config=configs/evaluate.py \
        --checkpoints=RUN_A,RUN_B [--config.baselines=random_init,random_conv] \
        --grids=0,1e-4,1e-3,1e-2,0.1 --grids=0,1e-4,1e-3,1e-2,0.1,0.3,1,3,10 \
        --output=results/probe_grid_crossfit.md

A grid that contains another can only raise the best validation score, so the validation
figure the probe chooses by cannot judge the grid itself, and the test fold must not. Here the
validation records are split in two halves (a fixed permutation, `--halves_seed`); the probe
runs its whole protocol (weight decay and early-stopping epoch per run, feature kind per label
fraction, exactly as `evaluators.linear_probe` does) with one half as its validation fold and
is scored on the other half, then the halves swap. A cell's figure is the held-out macro AUROC
averaged over the two directions and the label subsets. Every grid sees the same halves,
subsets and features. No test-fold feature or figure is computed, so the comparison can
drive a choice.

The evaluate config gives the tasks, label fractions, subset seeds, the probe's other settings
(`probe.*`, whose `weight_decays` each `--grids` entry replaces) and the baselines; features
are read from (or cached in) `<config.output_dir or first checkpoint/eval>/features`, the
cache `merit_jax.evaluate` fills. Writes `<output>` (per encoder, task and label fraction each
grid's held-out macro AUROC and its difference to the first grid; the means below and at 100 %
labels, and over every encoder per label fraction) and `<output minus .md>.json`.
`--combine=A.json,B.json --output=...` merges earlier runs' JSON files (one per pretraining
seed, say) into one page instead of running.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Sequence

from absl import app
from absl import flags
import numpy as np

from merit_jax import atomic_files
from merit_jax import cli
from merit_jax import config_validation
from merit_jax import evaluate
from merit_jax.encoder import Encoder
from merit_jax.evaluators import grid_crossfit
from merit_jax.evaluators import linear_probe
from merit_jax.evaluators import registry
from merit_jax.evaluators import tasks as tasks_lib

# The probe fits on train and chooses on (half of) validation; no test feature is computed.
_SPLITS = ("train", "validation")


def _encoder_label(encoder, checkpoint_dir) -> str:
  """'<parent>/<run>' for a checkpoint (seeds' runs share a name), the name for a baseline."""
  if checkpoint_dir is None:
    return encoder.name
  path = os.path.normpath(tasks_lib.expand(checkpoint_dir))
  return os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))


def run(config, checkpoints: Sequence[str], grids: Sequence[Sequence[float]],
        halves_seed: int = 0, progress: bool = True) -> dict:
  """Cross-fits every grid for each checkpoint's encoder and the config's baselines."""
  config_validation.validate_evaluate_config(config)
  if not checkpoints:
    raise ValueError("no checkpoint: pass --checkpoints=RUN_DIR[,RUN_DIR...] or "
                     "--config.checkpoint=RUN_DIR")
  if len(grids) < 2:
    raise ValueError(f"need at least two --grids to compare, got {len(grids)}")
  encoders = [(Encoder.from_checkpoint(c, config.step, config.batch_size), c)
              for c in checkpoints]
  run_config = encoders[0][0].config
  encoders += [(e, None) for e in evaluate.baseline_encoders(config, run_config,
                                                             encoders[0][0].tokenizer)]
  output_dir = config.output_dir or os.path.join(tasks_lib.expand(checkpoints[0]), "eval")
  data_cfg = evaluate.eval_data_config(run_config, config)
  store = evaluate.feature_store(data_cfg, config, output_dir, progress)
  context = registry.EvalContext(data_cfg=data_cfg, store=store, output_dir=output_dir)
  labelled = [(_encoder_label(e, c), e) for e, c in encoders]
  results = crossfit_encoders(labelled, context, config, grids, halves_seed, progress)
  results["meta"]["checkpoints"] = [tasks_lib.expand(c) for c in checkpoints]
  return results


def crossfit_encoders(labelled_encoders: Sequence, context, config,
                      grids: Sequence[Sequence[float]], halves_seed: int = 0,
                      progress: bool = False) -> dict:
  """{"meta", "encoders": {label: {task: [per grid {fraction: cell}]}}} for (label, encoder)
  pairs, on the context's store and tasks, with the config's tasks, fractions, seeds, probe."""
  tasks = tasks_lib.resolve_tasks(config.tasks)
  fractions = tasks_lib.parse_list(config.fractions, float)
  seeds = tasks_lib.parse_list(config.seeds, int)
  probe_kwargs = linear_probe.probe_kwargs(config.probe, n_bootstrap=0)
  results = {"meta": {"grids": [list(g) for g in grids], "tasks": tasks,
                      "fractions": fractions, "seeds": seeds, "halves_seed": halves_seed,
                      "probe": {k: v for k, v in probe_kwargs.items() if k != "grid"},
                      "records": {}},
             "encoders": {}}
  for label, encoder in labelled_encoders:
    kinds = linear_probe.offered_feature_kinds(config.probe.features, encoder, label)
    by_task = {}
    for task in tasks:
      data = context.task_data(task)
      data.prepare(encoder, kinds, splits=_SPLITS)
      features = {kind: {s: data.features(encoder, s, kind) for s in _SPLITS}
                  for kind in kinds}
      labels = {s: data.labels[s] for s in _SPLITS}
      results["meta"]["records"][task] = {s: int(len(y)) for s, y in labels.items()}
      per_grid = grid_crossfit.crossfit_grids(features, labels, grids, fractions, seeds,
                                              probe_kwargs, halves_seed)
      by_task[task] = [{str(f): cell for f, cell in g.items()} for g in per_grid]
      if progress:
        cells = " ".join(f"{f:g}: " + " / ".join(f"{100 * g[f]['held_out']:.1f}"
                                                  for g in per_grid) for f in fractions)
        print(f"probe_grid_crossfit: {label} {task} {cells}", file=sys.stderr, flush=True)
    results["encoders"][label] = by_task
  return results


_SAME_META = ("grids", "tasks", "fractions", "seeds", "halves_seed")


def merge_results(results: Sequence[dict], names: Sequence[str]) -> dict:
  """One result of several files of this program (say one per pretraining seed), which must
  share grids, tasks, fractions, subset seeds and halves; an encoder label may appear once."""
  merged = {"meta": dict(results[0]["meta"], sources=[]), "encoders": {}}
  for result, name in zip(results, names):
    meta = result.get("meta", {})
    for key in _SAME_META:
      if meta.get(key) != merged["meta"].get(key):
        raise ValueError(f"{name}: its {key} {meta.get(key)} differ from {names[0]}'s "
                         f"{merged['meta'].get(key)}")
    for label, by_task in result.get("encoders", {}).items():
      if label in merged["encoders"]:
        raise ValueError(f"{name}: encoder {label!r} is already in an earlier file")
      merged["encoders"][label] = by_task
    merged["meta"]["sources"].append(meta.get("command", name))
  return merged


def _means_cells(rows) -> str:
  """Each grid's mean over `rows` (one held-out value per grid each), then each later grid's
  mean minus the first's, as table cells."""
  means = np.mean(rows, axis=0)
  return " | ".join([f"{m:.2f}" for m in means] + [f"{m - means[0]:+.2f}" for m in means[1:]])


def page_markdown(results: dict, command: str) -> str:
  """Per encoder: task × fraction rows, each grid's held-out AUROC and its difference to the
  first grid, then its means below and at 100 % labels and over every cell, then every encoder
  together per label fraction."""
  meta = results["meta"]
  grids = meta["grids"]
  names = [f"grid {chr(65 + i)}" for i in range(len(grids))]
  out = ["# Probe weight-decay grids compared on held-out validation records", "",
         "Produced by:", "", "```", command, "```", "",
         f"The {len(grids)} grids: " + "; ".join(
             f"{n} = {', '.join(f'{v:g}' for v in g)}" for n, g in zip(names, grids)) + ".", "",
         "Each cell: macro AUROC (%) on the validation half the probe did not choose on "
         "(weight decay and epoch per run, feature kind per fraction), mean over both halves "
         f"(halves seed {meta['halves_seed']}) and the label subsets (seeds "
         f"{', '.join(str(s) for s in meta['seeds'])} below 100 %). Validation records per task: "
         + ", ".join(f"{t} {r['validation']}" for t, r in meta["records"].items())
         + ". No test-fold figure is computed.", ""]
  if meta.get("sources"):
    out += ["Merged from the files of:", "", "```", *meta["sources"], "```", ""]
  head = ["task", "fraction"] + names + [f"{n} − A" for n in names[1:]]
  summary, by_fraction = {}, {}
  for label, by_task in results["encoders"].items():
    out += [f"## {label}", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for task, per_grid in by_task.items():
      for fraction in per_grid[0]:
        values = [100 * g[fraction]["held_out"] for g in per_grid]
        kind = per_grid[0][fraction]["directions"][0]["kind"]
        out.append("| " + " | ".join(
            [task, f"{float(fraction):g} ({kind})"] + [f"{v:.1f}" for v in values]
            + [f"{v - values[0]:+.2f}" for v in values[1:]]) + " |")
        key = "below" if float(fraction) < 1 else "full"
        summary.setdefault(label, {}).setdefault(key, []).append(values)
        by_fraction.setdefault(f"{100 * float(fraction):g} %", []).append(values)
    out.append("")
  means_head = " | ".join(names + [f"{n} − A" for n in names[1:]])
  out += ["## Means over tasks", "", f"| encoder | labels | {means_head} |",
          "|---|---|" + "---|" * (2 * len(names) - 1)]
  for label, by_key in summary.items():
    by_key["every"] = by_key.get("below", []) + by_key.get("full", [])
    for key, text in (("below", "below 100 %"), ("full", "100 %"), ("every", "every cell")):
      if key not in by_key:
        continue
      out.append(f"| {label} | {text} | {_means_cells(by_key[key])} |")
  out += ["", f"## Every encoder together ({len(summary)})", "", f"| labels | {means_head} |",
          "|---|" + "---|" * (2 * len(names) - 1)]
  every = [v for values in by_fraction.values() for v in values]
  for text, values in [*by_fraction.items(), ("every cell", every)]:
    out.append(f"| {text} | {_means_cells(values)} |")
  out += ["", "The feature kind shown is the one the first grid's first half chose; each "
          "direction's choice is in the JSON, with every run's chosen weight decay."]
  return "\n".join(out) + "\n"


_CONFIG = None
_CHECKPOINTS = None
_GRIDS = None
_HALVES_SEED = None
_COMBINE = None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  program = "merit_jax.probe_grid_crossfit"
  command = f"python -m {program} " + " ".join(sys.argv[1:])
  try:
    if _COMBINE.value:
      inputs = [p for p in _COMBINE.value if p]
      results = merge_results(cli.read_json_inputs(inputs, program), inputs)
    else:
      config = _CONFIG.value
      if config is None or not _GRIDS.value:
        raise ValueError("pass --config=configs/evaluate.py and two or more --grids (or "
                         "--combine=A.json,B.json to merge earlier results)")
      grids = [grid_crossfit.parse_grid(g) for g in _GRIDS.value]
      checkpoints = list(_CHECKPOINTS.value
                         or ([config.checkpoint] if config.checkpoint else []))
      results = run(config, checkpoints, grids, _HALVES_SEED.value, bool(config.progress))
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"{program}: {e}")
  results["meta"]["command"] = command
  output = cli.write_page(flags.FLAGS.output, page_markdown(results, command))
  json_path = os.path.splitext(output)[0] + ".json"
  atomic_files.write_text(json_path, json.dumps(results, indent=1))
  print(f"wrote {output}, {json_path}")


def cli_main():
  """The `python -m merit_jax.probe_grid_crossfit` program."""
  global _CONFIG, _CHECKPOINTS, _GRIDS, _HALVES_SEED, _COMBINE
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Evaluation config, e.g. configs/evaluate.py.", lock_config=True)
  _CHECKPOINTS = flags.DEFINE_list("checkpoints", None, "Training run directories (default: "
                                   "--config.checkpoint).")
  _GRIDS = flags.DEFINE_multi_string("grids", None, "A weight-decay grid, comma-separated; "
                                     "give two or more.")
  _HALVES_SEED = flags.DEFINE_integer("halves_seed", 0, "Seed of the validation halves.")
  _COMBINE = flags.DEFINE_list("combine", None, "Instead of running: JSON files of earlier "
                               "runs of this program to merge into one page.")
  flags.DEFINE_string("output", None, "Markdown file to write.")
  flags.mark_flags_as_required(["output"])
  app.run(main, flags_parser=cli.make_flags_parser("merit_jax.probe_grid_crossfit"))


if __name__ == "__main__":
  cli_main()
