"""Compares pretraining runs on the validation fold: the probe figure that choices are made by.

    python -m merit_jax.validation_table --inputs=results/a.json,/tmp/b.json \
        --output=results/probe_levers_validation.md

Each input is a JSON written by `merit_jax.evaluate` or `merit_jax.ablations` with the linear
probe. Every encoder in every file becomes a row; a cell is the validation macro AUROC of a
(task, label fraction), averaged over label subsets, for the feature kind that validation
prefers in that cell (the kind the probe then scores on test). Two summary columns: the mean
over cells below 100 % labels (the grid's rule for λ) and over every cell. No test figure is
read or written, so the table can drive a choice.

Beside the page, `<output>.png`: each row's validation AUROC minus the first row's in every
cell below 100 % labels, and their mean (the rule's difference), so a reader sees whether a
lever's gain is broad or rests on a few cells.

When a run's directory (an evaluate file's checkpoint, an ablations file's variant workdir) still
holds its `config.json`, the table lists the pretraining config keys in which each run differs
from the first such run; and where files were written by the same program with different
evaluation settings (say the probe's solver), it lists those flags of each file's command too.
"""

from __future__ import annotations

import os
import shlex
import sys

from absl import app
from absl import flags
from flax import traverse_util
import numpy as np

from merit_jax import checkpoint
from merit_jax import cli
from merit_jax.reporting import plots


def validation_cells(entry_by_task: dict) -> dict:
  """{(task, fraction): mean validation macro AUROC of the preferred feature kind}."""
  cells = {}
  for task, by_fraction in entry_by_task.items():
    for fraction, entry in by_fraction.items():
      by_feature = entry.get("val_by_feature")
      if by_feature:
        cells[(task, fraction)] = max(by_feature.values())
      else:  # Files written before feature kinds were offered: one kind, its own runs.
        vals = [r["val"]["macro_auroc"]["value"] for r in entry["runs"]
                if "macro_auroc" in r.get("val", {})]
        if vals:
          cells[(task, fraction)] = float(np.mean(vals))
  return cells


def _run_config(result: dict, encoder: str):
  """The flattened pretraining config of `encoder`'s run (an evaluate file's checkpoint, an
  ablations file's variant workdir), or None for baselines and runs no longer on disk."""
  meta = result.get("meta", {})
  if meta.get("variants") is not None:  # An ablations file: its baselines have no run.
    run_dir = (meta["variants"].get(encoder) or {}).get("workdir")
  else:
    run_dir = meta.get("checkpoint")
  config = checkpoint.read_run_config(run_dir) if run_dir and os.path.isdir(run_dir) else None
  return None if config is None else traverse_util.flatten_dict(config, sep=".")


# Keys that name where a run lives or how it is monitored, not what it trains.
_IGNORED_LEAVES = ("workdir", "log_every", "eval_every", "checkpoint_every", "progress",
                   "manual_dir", "data_dir", "num_threads", "worker_count")
_IGNORED_SECTIONS = ("eval.", "evals.")


def _comparable(key: str, value):
  """A config value as compared and shown: `data.sources` as its builds and weights (their
  folders move between hosts; a source without `reports` is a paired one)."""
  if key == "data.sources" and isinstance(value, list):
    return ", ".join(
        f"{s.get('config')}×{s.get('weight')}" + ("" if s.get("reports", True) else " (ECG only)")
        for s in value)
  return value


def config_differences(reference: dict, other: dict) -> list:
  """'key=value' for every pretraining key of both configs in which `other` differs from
  `reference` (`checkpoint.read_run_config` gives a key a run did not record today's default)."""
  out = []
  for key in sorted(set(reference) & set(other)):
    if key.split(".")[-1] in _IGNORED_LEAVES or key.startswith(_IGNORED_SECTIONS):
      continue
    value = _comparable(key, other[key])
    if _comparable(key, reference[key]) != value:
      out.append(f"{key}={value}")
  return out


# Evaluation flags that say where a run or its outputs live, not how it is evaluated.
_LOCATION_FLAGS = ("checkpoint", "output_dir", "results_dir", "name", "workdir", "progress")


def _evaluation_flags(command: str) -> tuple[str, dict]:
  """(program, {flag: value}) of the evaluation settings on an evaluate or ablations command
  line: `--config.*` for evaluate, `--eval_config.*` for ablations (whose `--config.*` flags
  are the pretraining config, which the run's config.json already shows)."""
  words = shlex.split(command)
  program = " ".join(words[:3])
  prefix = "--eval_config" if program.endswith("ablations") else "--config"
  settings = {}
  for word in words[3:]:
    key, _, value = word.partition("=")
    if (key == prefix or key.startswith(prefix + ".")) and (
        key.rsplit(".", 1)[-1] not in _LOCATION_FLAGS):
      settings[key] = value
  return program, settings


def evaluation_differences(reference: dict, other: dict) -> list:
  """'flag=value' for every evaluation flag in which `other`'s command differs from
  `reference`'s ('flag unset' where only the reference sets it); [] when either file has no
  command or the two come from different programs."""
  commands = [r.get("meta", {}).get("command") for r in (reference, other)]
  if not all(commands):
    return []
  (program_a, flags_a), (program_b, flags_b) = (_evaluation_flags(c) for c in commands)
  if program_a != program_b:
    return []
  return [f"{key}={flags_b[key]}" if key in flags_b else f"{key} unset"
          for key in sorted(set(flags_a) | set(flags_b)) if flags_a.get(key) != flags_b.get(key)]


def _rows(results: list, inputs: list) -> tuple[list, list, list]:
  """([(label, cells, result, encoder)] one per encoder of each input, every (task, fraction)
  cell key, the keys every row has); ValueError when there is nothing to compare. Reads no
  run directory: only the page's config section needs those."""
  rows = []
  for result, path in zip(results, inputs):
    for encoder, by_task in result.get("linear_probe", {}).items():
      rows.append((f"{os.path.basename(path)}: {encoder}", validation_cells(by_task), result,
                   encoder))
  if not rows:
    raise ValueError("no linear-probe results in the inputs")
  keys = sorted({k for _, cells, _, _ in rows for k in cells}, key=lambda k: (k[0], float(k[1])))
  # The means average the cells every row has, so rows from runs evaluated on more tasks or
  # fractions stay comparable.
  common = [k for k in keys if all(k in cells for _, cells, _, _ in rows)]
  if not common:
    raise ValueError("the inputs share no (task, label fraction) cell")
  return rows, keys, common


def differences_below_full_labels(results: list, inputs: list) -> tuple[list, list]:
  """(row labels, [per row: {cell: points}]): each row's validation AUROC minus the first
  row's, in AUROC points, on the common cells below 100 % labels (the cells the rule
  averages). Shows whether a gain in the rule is broad or rests on a few cells."""
  rows, _, common = _rows(results, inputs)
  low = [k for k in common if float(k[1]) < 1.0]
  reference = rows[0][1]
  return ([label for label, _, _, _ in rows],
          [{k: 100 * (cells[k] - reference[k]) for k in low} for _, cells, _, _ in rows])


def table_markdown(results: list, inputs: list) -> str:
  rows, keys, common = _rows(results, inputs)
  head = [f"{t} {float(f):g}" for t, f in keys]
  out = ["# Pretraining runs compared on the validation fold", "", "Produced by:", "", "```",
         "python -m merit_jax.validation_table --inputs=" + ",".join(inputs), "```", "",
         "Validation macro AUROC (%) of the linear probe: each cell the mean over label subsets "
         "of the feature kind validation prefers in that cell. `mean < 100 %`: the mean over "
         "the cells below 100 % labels (the grid's rule for λ); `mean`: over every cell; both "
         f"over the {len(common)} cells that every row has"
         + ("" if len(common) == len(keys) else " (" + ", ".join(
             f"{t} {float(f):g}" for t, f in common) + ")")
         + ". No test-fold figure is used.", "",
         "| run: encoder | " + " | ".join(head) + " | mean < 100 % | mean |",
         "|---|" + "---|" * (len(head) + 2)]
  for label, cells, _, _ in rows:
    low = [cells[k] for k in common if float(k[1]) < 1.0]
    values = [f"{100 * cells[k]:.1f}" if k in cells else "–" for k in keys]
    values.append(f"{100 * np.mean(low):.2f}" if low else "–")
    values.append(f"{100 * np.mean([cells[k] for k in common]):.2f}")
    out.append(f"| {label} | " + " | ".join(values) + " |")
  configs = [(label, _run_config(result, encoder)) for label, _, result, encoder in rows]
  configs = [(label, config) for label, config in configs if config is not None]
  if len(configs) > 1:
    ref_label, ref = configs[0]
    out += ["", f"Pretraining config of each run, as it differs from `{ref_label}`'s:", ""]
    for label, config in configs[1:]:
      diff = config_differences(ref, config)
      out.append(f"- `{label}`: " + (", ".join(f"`{d}`" for d in diff) if diff else "the same"))
  evaluated = [(os.path.basename(path), evaluation_differences(results[0], result))
               for result, path in zip(results[1:], inputs[1:])]
  evaluated = [(name, diff) for name, diff in evaluated if diff]
  if evaluated:
    out += ["", f"Evaluation settings of each file, as they differ from "
            f"`{os.path.basename(inputs[0])}`'s command:", ""]
    out += [f"- `{name}`: " + ", ".join(f"`{d}`" for d in diff) for name, diff in evaluated]
  return "\n".join(out) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  inputs = [p for p in flags.FLAGS.inputs if p]
  results = cli.read_json_inputs(inputs, "merit_jax.validation_table")
  try:
    text = table_markdown(results, inputs)
  except ValueError as e:
    sys.exit(f"merit_jax.validation_table: {e}")
  output = cli.write_page(flags.FLAGS.output, text)
  print(f"wrote {output}")
  labels, differences = differences_below_full_labels(results, inputs)
  if len(labels) > 1 and differences[0]:
    png = plots.plot_validation_differences(labels, differences,
                                            os.path.splitext(output)[0] + ".png")
    print(f"wrote {png}")


def cli_main():
  """The `python -m merit_jax.validation_table` program."""
  cli.define_page_flags("inputs", "evaluate / ablations JSON files with the linear probe")
  app.run(main, flags_parser=cli.make_flags_parser("merit_jax.validation_table"))


if __name__ == "__main__":
  cli_main()
