"""Pools ablation-grid results of several pretraining seeds into one summary table.

    python -m merit_jax.seed_summary --inputs=results/grid_seed0.json,results/grid_seed1.json \
        --output=results/grid_seeds.md

Each input is the JSON that `merit_jax.ablations` writes for one pretraining seed (same data,
same evaluation config). Pretrained variants (the encoders listed in `meta.variants`) are pooled
over the files: a linear-probe cell is the mean ± sd over every (pretraining seed, label subset)
run. Baselines do not depend on the pretraining seed, so they are taken from the first file
only (pooling identical copies would shrink their spread). A second probe table gives each MERIT
variant minus every other encoder, paired by label subset and summarised seed by seed, so a
gap can be set against its spread over pretraining seeds. Zero-shot and the paired 100 %
differences (with bootstrap intervals) are single runs per seed and are listed per seed.
"""

from __future__ import annotations

import os
import re
import sys

from absl import app
from absl import flags
import numpy as np

from merit_jax import cli
from merit_jax.reporting import markdown

_METRICS = (("macro_auroc", "macro AUROC"), ("macro_f1", "macro F1"))


def _ci(m) -> str:
  if not m:
    return "–"
  if "ci_low" not in m:
    return markdown.pct(m["value"])
  return f"{markdown.pct(m['value'])} [{markdown.pct(m['ci_low'])}, {markdown.pct(m['ci_high'])}]"


def _probe_entry(result: dict, encoder: str, task: str, fraction: str) -> dict:
  """One file's linear-probe entry at one cell ({} when the file has none)."""
  return result.get("linear_probe", {}).get(encoder, {}).get(task, {}).get(fraction) or {}


def pooled_probe(results: list, encoder: str, task: str, fraction: str, metric: str):
  """Test values of every run of `encoder` (all files holding it) at one cell."""
  return [run["test"][metric]["value"] for r in results
          for run in _probe_entry(r, encoder, task, fraction).get("runs", [])
          if metric in run["test"]]


def _runs_by_subset(results: list, encoder: str, task: str, fraction: str,
                    metric: str) -> dict:
  """{label-subset seed: test value} of the probe runs at one cell, over the given files."""
  return {run.get("seed", i): run["test"][metric]["value"] for r in results
          for i, run in enumerate(_probe_entry(r, encoder, task, fraction).get("runs", []))
          if metric in run["test"]}


def paired_probe_differences(results: list, reference: str, other: str, task: str,
                             fraction: str, metric: str = "macro_auroc") -> list:
  """`reference` minus `other`, one value per pretraining seed: the mean over label subsets of
  the difference between the two probes trained on the same subset (the subset is drawn from
  the labels and the subset seed alone, so both encoders saw the same labelled records).

  Files of one pretraining seed (a seed split over files) are read together; files without a
  recorded command count as a seed each. A pretrained `other` (in some file's `meta.variants`)
  is paired only within its own pretraining seed; a baseline (evaluated once, it does not
  depend on the pretraining seed) is taken from the first file that holds it.
  """
  pretrained = any(other in r.get("meta", {}).get("variants", {}) for r in results)
  baseline = [] if pretrained else [
      next((r for r in results if r.get("linear_probe", {}).get(other)), {})]
  by_seed: dict = {}
  for i, r in enumerate(results):
    seed = pretraining_seed(r)
    by_seed.setdefault(("file", i) if seed is None else seed, []).append(r)
  out = []
  for files in by_seed.values():
    mine = _runs_by_subset(files, reference, task, fraction, metric)
    theirs = _runs_by_subset(files if pretrained else baseline, other, task, fraction, metric)
    differences = [mine[s] - theirs[s] for s in mine if s in theirs]
    if differences:
      out.append(float(np.mean(differences)))
  return out


def _paired_markdown(results: list, variants: list, baselines: list, tasks: list,
                     fractions: list) -> list:
  """The section on how far each MERIT variant is ahead of every other encoder, seed by seed."""
  merits = [v for v in variants if v.startswith("MERIT")]
  if not merits:
    return []
  head = [f"{t} {float(f):g}" for t in tasks for f in fractions]
  out = ["## Linear probe: MERIT minus each other encoder, paired by label subset (macro AUROC)",
         "",
         "Each cell: the mean over pretraining seeds of the per-seed difference (itself the mean "
         "over label subsets of MERIT's test AUROC minus the other encoder's on the same subset), "
         "then [lowest … highest per-seed difference] and in how many seeds MERIT is ahead. "
         "Pretrained encoders are paired within a pretraining seed; baselines (one evaluation) "
         "against every seed. Points of AUROC.", ""]
  for merit in merits:
    out += [f"### {merit}", "", "| minus | " + " | ".join(head) + " |",
            "|---|" + "---|" * len(head)]
    for other in [e for e in variants + baselines if e != merit]:
      cells = []
      for task in tasks:
        for fraction in fractions:
          d = 100 * np.asarray(paired_probe_differences(results, merit, other, task, fraction))
          cells.append("–" if not d.size else
                       f"{d.mean():+.1f} [{d.min():+.1f} … {d.max():+.1f}] "
                       f"{int((d > 0).sum())}/{d.size}")
      out.append(f"| {other} | " + " | ".join(cells) + " |")
    out.append("")
  return out


def _encoders(results: list) -> tuple[list, list]:
  variants = list(results[0]["meta"].get("variants", {}))
  baselines = [e["name"] for e in results[0]["meta"]["encoders"] if e["name"] not in variants]
  return variants, baselines


def _inputs_sentence(results: list, inputs: list) -> str:
  """'2 pretraining seeds in 3 files (a.json: seed 0, ...).' — files, not seeds, when a file
  records no command (a seed may be split over files, e.g. its 1 % / 10 % probes apart)."""
  seeds = [pretraining_seed(r) for r in results]
  names = [os.path.basename(p) for p in inputs]
  if any(s is None for s in seeds):
    return f"{len(results)} result files ({', '.join(names)})."
  return (f"{len(set(seeds))} pretraining seed(s) in {len(results)} file(s) ("
          + ", ".join(f"{n}: seed {s}" for n, s in zip(names, seeds)) + ").")


def pretraining_seed(result: dict):
  """The pretraining seed of an ablations JSON (`--config.seed=N` in its command; 0 when the
  command sets none, the config's default), or None without a recorded command."""
  command = result.get("meta", {}).get("command")
  if not command:
    return None
  found = re.search(r"--config\.seed=(\d+)", command)
  return int(found.group(1)) if found else 0


def summary_markdown(results: list, inputs: list) -> str:
  variants, baselines = _encoders(results)
  meta = results[0]["meta"]
  tasks, fractions = meta["tasks"], [str(float(f)) for f in meta["fractions"]]
  out = ["# Ablation grid pooled over pretraining seeds", "",
         "Produced by:", "", "```",
         "python -m merit_jax.seed_summary --inputs=" + ",".join(inputs), "```", "",
         _inputs_sentence(results, inputs) + " "
         "Linear probe: test value, mean ± sd over every (pretraining seed, label subset) run "
         "(n); baselines from the first file (they do not depend on the pretraining seed). "
         "Zero-shot and paired differences: one row per seed, value [95 % bootstrap CI]. "
         "Values in %.", ""]
  for metric, label in _METRICS:
    head = [f"{t} {float(f):g}" for t in tasks for f in fractions]
    out += [f"## Linear probe: {label} (task, label fraction)", "",
            "| encoder | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for encoder in variants + baselines:
      pool = results if encoder in variants else results[:1]
      cells = []
      for task in tasks:
        for fraction in fractions:
          v = pooled_probe(pool, encoder, task, fraction, metric)
          if len(v) < 2:
            cells.append(markdown.pct(v[0]) + " (n=1)" if v else "–")
          else:
            cells.append(f"{markdown.pct(np.mean(v))} ± {100 * np.std(v, ddof=1):.1f} (n={len(v)})")
      out.append(f"| {encoder} | " + " | ".join(cells) + " |")
    out.append("")
  out += _paired_markdown(results, variants, baselines, tasks, fractions)
  out += ["## Zero-shot (test): macro AUROC, per pretraining seed", "",
          "| encoder | seed file | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
  for encoder in variants + baselines:
    for r, path in (zip(results, inputs) if encoder in variants else [(results[0], inputs[0])]):
      per_task = r.get("zero_shot", {}).get(encoder) or {}
      if per_task:
        out.append(f"| {encoder} | {os.path.basename(path)} | " + " | ".join(
            _ci((per_task.get(t) or {}).get("macro_auroc")) for t in tasks) + " |")
  out.append("")
  if any(r.get("paired_vs_contrastive_only") for r in results):
    out += ["## MERIT minus contrastive only (100 % probe, test), per pretraining seed", "",
            "| variant | seed file | metric | " + " | ".join(tasks) + " |",
            "|---|---|---|" + "---|" * len(tasks)]
    for r, path in zip(results, inputs):
      for title, per_task in (r.get("paired_vs_contrastive_only") or {}).items():
        for metric, label in _METRICS:
          cells = []
          for t in tasks:
            m = (per_task.get(t) or {}).get(metric)
            cells.append("–" if not m else f"{100 * m['value']:+.1f} "
                         f"[{100 * m['ci_low']:+.1f}, {100 * m['ci_high']:+.1f}]")
          out.append(f"| {title} | {os.path.basename(path)} | {label} | " + " | ".join(cells)
                     + " |")
    out.append("")
  return "\n".join(out) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  inputs = [p for p in flags.FLAGS.inputs if p]
  results = cli.read_json_inputs(inputs, "merit_jax.seed_summary")
  tasks = {tuple(r["meta"]["tasks"]) for r in results}
  if len(tasks) > 1:
    sys.exit(f"merit_jax.seed_summary: the inputs evaluate different tasks: {sorted(tasks)}")
  output = cli.write_page(flags.FLAGS.output, summary_markdown(results, inputs))
  print(f"wrote {output}")


def cli_main():
  """The `python -m merit_jax.seed_summary` program."""
  cli.define_page_flags("inputs", "ablations JSON files, one per pretraining seed")
  app.run(main, flags_parser=cli.make_flags_parser("merit_jax.seed_summary"))


if __name__ == "__main__":
  cli_main()
