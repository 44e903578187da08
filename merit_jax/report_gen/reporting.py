"""What report generation writes: the comparison table (markdown, JSON), samples, predictions.

The comparison table has one row per arm with each metric's 95 % percentile bootstrap CI over
the test records, for arms after the first the paired bootstrap difference from the first
arm (`bootstrap_arms`, `config.eval.n_bootstrap` resamples; `metrics.generation` does the
scoring and resampling), the MERIT arm's paired difference from every other arm
(`versus_arms`), and each arm's count of degenerate outputs (`metrics.degeneracy`).
`score_arms` computes all three for compare mode. The samples page is `report_gen.samples`.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import os
from typing import Sequence

import jax

from merit_jax import atomic_files
from merit_jax.report_gen import decoding
from merit_jax.report_gen import projector as projector_lib

ARM_TITLES = {"none": "no ECG (LLM prior, same training)",
              "random": "randomly initialised encoder",
              "merit": "MERIT encoder",
              "most_frequent": "most frequent training report (no ECG, no training)"}
# The arm every other arm is compared with in `versus_arms` (when it ran).
TARGET_ARM = "merit"
# (metrics key, column title) of the comparison tables, scores in %.
TABLE_COLUMNS = (("bleu1", "BLEU-1"), ("bleu4", "BLEU-4"), ("rouge_l", "ROUGE-L"),
                 ("meteor", "METEOR"), ("clinical_micro_f1", "statement F1 micro"),
                 ("clinical_macro_f1", "statement F1 macro"))
CONFIDENCE = 0.95  # Of the bootstrap intervals in the comparison table.


def _cell(stat: dict | None, value: float | None) -> str:
  """'12.3 [10.1, 14.5]' (%) from a bootstrap entry; the bare value (or –) without one."""
  if stat is None:
    return "–" if value is None else f"{100 * value:.1f}"
  return f"{100 * stat['value']:.1f} [{100 * stat['ci_low']:.1f}, {100 * stat['ci_high']:.1f}]"


def _diff_cell(stat: dict | None) -> str:
  """'+1.2 [-0.5, +2.9]' in percentage points."""
  if stat is None or "diff" not in stat:
    return "–"
  return (f"{100 * stat['diff']:+.1f} [{100 * stat['diff_ci_low']:+.1f}, "
          f"{100 * stat['diff_ci_high']:+.1f}]")


def arm_statistics(config, results: dict) -> dict:
  """Per arm, `generation.record_statistics` of its test records (each scored once, METEOR
  included; every bootstrap below only re-sums these rows)."""
  from merit_jax.metrics import generation  # pylint: disable=g-import-not-at-top
  return {arm: generation.record_statistics(r["generated"], r["test"]["reports"],
                                            labels=r["test"]["codes"],
                                            with_meteor=bool(config.eval.meteor))
          for arm, r in results.items()}


def bootstrap_arms(config, results: dict, stats: dict | None = None) -> dict:
  """Per arm, `generation.bootstrap_from_statistics` over its test records.

  Every arm is resampled with the same seed, so resample b holds the same records for all arms;
  arms after the first also get the paired difference from the first arm (the no-ECG arm in
  the default `config.arms`). An arm scored on other records than the first gets no
  difference (it cannot be paired). `stats`: `arm_statistics`, computed here when None.
  """
  from merit_jax.metrics import generation  # pylint: disable=g-import-not-at-top
  arms = list(results)
  stats = arm_statistics(config, results) if stats is None else stats
  base = arms[0]
  out = {}
  for arm in arms:
    paired = arm != base and results[arm]["test"]["ecg_id"] == results[base]["test"]["ecg_id"]
    if arm != base and not paired:
      print(f"    {arm}: test records differ from arm {base}'s; no paired difference",
            flush=True)
    out[arm] = generation.bootstrap_from_statistics(
        stats[arm], stats[base] if paired else None, n_bootstrap=int(config.eval.n_bootstrap),
        seed=int(config.seed), alpha=1.0 - CONFIDENCE)
  return out


def versus_arms(config, results: dict, stats: dict | None = None,
                target: str = TARGET_ARM) -> dict:
  """{other arm: {metric: {diff, diff_ci_low, diff_ci_high}}}: `target` minus each other arm.

  Paired bootstrap differences on the same resamples as `bootstrap_arms` (same seed, same
  records), so "MERIT beats arm X" is read from one interval per metric. Arms scored on other
  records than `target` are left out; {} when `target` did not run.
  """
  from merit_jax.metrics import generation  # pylint: disable=g-import-not-at-top
  if target not in results:
    return {}
  stats = arm_statistics(config, results) if stats is None else stats
  out = {}
  for arm, r in results.items():
    if arm == target or r["test"]["ecg_id"] != results[target]["test"]["ecg_id"]:
      continue
    boot = generation.bootstrap_from_statistics(
        stats[target], stats[arm], n_bootstrap=int(config.eval.n_bootstrap),
        seed=int(config.seed), alpha=1.0 - CONFIDENCE)
    out[arm] = {k: {d: v[d] for d in ("diff", "diff_ci_low", "diff_ci_high")}
                for k, v in boot.items()}
  return out


def degeneracy_of(generated: Sequence[str]) -> dict | None:
  """`metrics.degeneracy.degeneracy_counts(generated)`; None while that module is missing."""
  name = "merit_jax.metrics.degeneracy"
  if importlib.util.find_spec(name) is None:
    return None
  return dict(importlib.import_module(name).degeneracy_counts(list(generated)))


def score_arms(config, results: dict) -> dict:
  """Adds to each arm's summary 'bootstrap' (`bootstrap_arms`) and 'degeneracy'
  (`degeneracy_of`), and to the MERIT arm's 'versus' (`versus_arms`); returns `results`."""
  stats = arm_statistics(config, results)
  for arm, ci in bootstrap_arms(config, results, stats).items():
    results[arm]["bootstrap"] = ci
  versus = versus_arms(config, results, stats)
  if versus:
    results[TARGET_ARM]["versus"] = versus
  for r in results.values():
    r["degeneracy"] = degeneracy_of(r["generated"])
  return results


def _metric_settings() -> str:
  from merit_jax.metrics import text  # pylint: disable=g-import-not-at-top
  return (f"BLEU: sacrebleu corpus BLEU, signature `{text.bleu_signature()}` (BLEU-1: the same "
          "with max_ngram_order=1). ROUGE-L: rouge-score `RougeScorer(['rougeL'], "
          f"use_stemmer={text.ROUGE_USE_STEMMER})` F-measure with a tokenizer that keeps "
          "non-ASCII letters (`metrics.text.UnicodeWordTokenizer`: the default drops "
          "umlauts), mean over records. METEOR: nltk `meteor_score`, mean over records.")


def _loss_cell(value) -> str:
  return "–" if value is None else f"{value:.3f}"


def _versus_lines(results: dict, pct: str, n_bootstrap: int, split: str) -> list[str]:
  versus = results.get(TARGET_ARM, {}).get("versus") or {}
  if not versus:
    return []
  target = ARM_TITLES[TARGET_ARM]
  lines = ["", f"## {target} minus each other arm (paired bootstrap, {pct} CI)", "",
           "| comparison | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
           "|---|" + "---|" * len(TABLE_COLUMNS)]
  for arm, ci in versus.items():
    # Row label "MERIT − <arm key>": arm titles stay unique to the main table's rows.
    lines.append(f"| MERIT − `{arm}` | "
                 + " | ".join(_diff_cell(ci.get(key)) for key, _ in TABLE_COLUMNS) + " |")
  lines += ["", f"Percentage points, {target} minus the arm named, on the same {n_bootstrap} "
            f"resamples of the {split} records: an interval above 0 is a win beyond record "
            "sampling noise."]
  return lines


def _degeneracy_lines(results: dict, split: str) -> list[str]:
  rows = {arm: r.get("degeneracy") for arm, r in results.items()}
  if not any(rows.values()):
    return []
  keys = list(next(d for d in rows.values() if d))
  lines = ["", f"## Degenerate outputs ({split} records)", "",
           "| arm | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
           "|---|" + "---|" * len(keys)]
  for arm, counts in rows.items():
    # Arm keys, not titles: each title names exactly one row of the score table.
    lines.append(f"| `{arm}` | "
                 + " | ".join(str(counts.get(k, "–")) if counts else "–" for k in keys) + " |")
  lines += ["", "Outputs breaking each rule (`metrics.degeneracy.degeneracy_counts`): empty, "
            "holding markup, repeating a word n-gram (n ≥ 4) more than twice; total = "
            "outputs scored. Every rule should count 0."]
  return lines


def comparison_markdown(config, results: dict, command: str) -> str:
  """The comparison table (with bootstrap CIs), the paired differences, a few examples."""
  lines = ["# ECG-conditioned report generation on PTB-XL", "",
           f"Command: `{command}`", ""]
  first = next(iter(results.values()))
  base_arm = next(iter(results))
  num_records = first["metrics"]["num_records"]
  folders = ([src["manual_dir"] for src in config.data.sources] if config.data.sources
             else [config.data.manual_dir])
  lines += [
      f"Data: {config.data.name} ({config.data.config}) from "
      + " and ".join(f"`{folder}`" for folder in folders) + "; "
      f"trained on split `{config.train_split}` ({first['train_records']} records with a "
      f"report), scored on split `{config.eval.split}` ({num_records} "
      "records). LLM: " + ("Gemma 3 270M (Q4_K_M GGUF, dequantised), frozen"
                           if config.llm == "gemma3_270m" else f"{config.llm}")
      + (f" + LoRA rank {config.lora_rank}" if config.lora_rank else "") + "; projector "
      f"`{config.projector_kind}` → {config.num_prefix_tokens} soft tokens; prompt "
      f"`{config.prompt}`; {config.decoding.method} decoding, max "
      f"{decoding.max_new_tokens(config)} tokens.",
      f"Budget: **{config.total_steps} steps × batch {config.batch_size}** per arm, AdamW lr "
      f"{config.optim.lr}, on {jax.devices()[0].platform.upper()} "
      f"({jax.device_count()} device(s)) — a small budget: absolute scores are low. One "
      "training run per arm: the intervals below cover the sampling of "
      f"{config.eval.split} records, not the variation between training runs."
      + (f" The arms were not trained here: their projectors, trained by the compare run in "
         f"`{config.rescore_from}`, were decoded again with these settings (train s and "
         "losses are that run's)." if config.get("rescore_from") else ""), "",
      "| arm | encoder | " + " | ".join(title for _, title in TABLE_COLUMNS)
      + " | final train loss | train s |",
      "|---|---|" + "---|" * len(TABLE_COLUMNS) + "---|---|"]
  for arm, r in results.items():
    m, ci = r["metrics"], r.get("bootstrap") or {}
    cells = [_cell(ci.get(key), m.get(key)) for key, _ in TABLE_COLUMNS]
    lines.append(f"| {ARM_TITLES.get(arm, arm)} | `{r['encoder']}` | " + " | ".join(cells)
                 + f" | {_loss_cell(r['final_loss'])} | {r['train_seconds']:.0f} |")
  n_bootstrap = config.eval.n_bootstrap
  pct = f"{100 * CONFIDENCE:g} %"
  lines += ["", f"Scores in %, as `value [low, high]`: the {pct} percentile bootstrap "
            f"confidence interval over the {num_records} {config.eval.split} records "
            f"({n_bootstrap} resamples of the {num_records} records drawn with replacement, "
            "each keeping a record of every labelled statement (`metrics.classification."
            f"iter_resample_indices`), seed {config.seed}; low and high are the "
            f"{50 * (1 - CONFIDENCE):g}th and "
            f"{100 - 50 * (1 - CONFIDENCE):g}th percentiles of the metric over the "
            "resamples). Statement F1: SCP statements recovered from the generated text "
            "by `metrics.clinical.ScpMatcher` against each record's PTB-XL `scp_codes`. "
            + _metric_settings()]
  others = list(results.items())[1:]
  if others:
    base = "no-ECG arm" if base_arm == "none" else f"`{base_arm}` arm"
    lines += ["", f"## Difference from the {base} (paired bootstrap, {pct} CI)", "",
              "| arm | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
              "|---|" + "---|" * len(TABLE_COLUMNS)]
    for arm, r in others:
      ci = r.get("bootstrap") or {}
      lines.append(f"| {ARM_TITLES.get(arm, arm)} | "
                   + " | ".join(_diff_cell(ci.get(key)) for key, _ in TABLE_COLUMNS) + " |")
    lines += ["", f"Percentage points, arm minus {base}: `difference [low, high]`. Paired: "
              f"each resample draws the same {config.eval.split} records for both arms and "
              "the difference "
              f"is taken within it; low and high are its {50 * (1 - CONFIDENCE):g}th and "
              f"{100 - 50 * (1 - CONFIDENCE):g}th percentiles over the {n_bootstrap} "
              "resamples. An interval that excludes 0 is a difference beyond record "
              "sampling noise."]
  lines += _versus_lines(results, pct, n_bootstrap, config.eval.split)
  lines += _degeneracy_lines(results, config.eval.split)
  lines += ["", "## Examples", ""]
  test = first["test"]
  for i in range(min(int(config.eval.num_examples), len(test["reports"]))):
    lines.append(f"**ecg_id {test['ecg_id'][i]}** (labels: {' '.join(test['codes'][i])})")
    lines.append("")
    lines.append(f"- reference: {test['reports'][i]}")
    for arm, r in results.items():
      lines.append(f"- {arm}: {r['generated'][i] or '(empty)'}")
    lines.append("")
  return "\n".join(lines) + "\n"


def page_path_for_split(path: str, split: str) -> str:
  """`path` for a test-fold page; for another split, its name with `_<split>` added unless it
  already names the split, so that a validation run never overwrites the test fold's page."""
  path = os.path.abspath(os.path.expanduser(path))
  stem, suffix = os.path.splitext(path)
  if split == "test" or f"_{split}" in os.path.basename(stem):
    return path
  return f"{stem}_{split}{suffix}"


def write_comparison(config, results: dict, workdir: str, command: str) -> str:
  """workdir/report_generation.{md,json} (and config.results_path, `_<split>` added for a
  split other than test); returns the markdown.

  The JSON holds every arm's summary and generated reports, the references once, and the
  bootstrap's settings; `results[arm]['bootstrap']` must be set (`bootstrap_arms`).
  """
  arms = list(results)
  table = comparison_markdown(config, results, command)
  with open(os.path.join(workdir, "report_generation.md"), "w", encoding="utf-8") as f:
    f.write(table)
  payload = {"config": projector_lib.config_json(config), "command": command,
             "device": f"{jax.devices()[0].platform} x{jax.device_count()}",
             "arms": {arm: {k: v for k, v in r.items() if k != "test"}
                      for arm, r in results.items()},
             "references": results[arms[0]]["test"],
             # Each arm's "bootstrap": {metric: {value, ci_low, ci_high[, diff, diff_ci_low,
             # diff_ci_high]}}, differences against `baseline_arm`.
             "bootstrap": {"n_bootstrap": int(config.eval.n_bootstrap),
                           "seed": int(config.seed), "confidence": CONFIDENCE,
                           "baseline_arm": arms[0],
                           "method": (f"percentile bootstrap over {config.eval.split} "
                                      "records, resampled with replacement keeping a record "
                                      "of every labelled statement (metrics.classification."
                                      "iter_resample_indices); paired (same resamples) for "
                                      "differences"),
                           # Each arm's "versus" (the MERIT arm): MERIT minus that arm.
                           "versus_arm": TARGET_ARM},
             "metric_settings": _metric_settings()}
  atomic_files.write_text(os.path.join(workdir, "report_generation.json"),
                          json.dumps(payload, indent=2, default=str))
  if config.results_path:
    out = page_path_for_split(config.results_path, config.eval.split)
    atomic_files.write_text(out, table)
  return table


def write_samples(path: str, test: dict, generated: Sequence[str]) -> None:
  """CSV (ecg_id, reference, generated, scp_codes) of a scored split."""
  with atomic_files.replacing(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["ecg_id", "reference", "generated", "scp_codes"])
    for i, g in enumerate(generated):
      w.writerow([int(test["ecg_id"][i]), test["reports"][i], g, " ".join(test["codes"][i])])


def write_predictions(path: str, ids: Sequence[str], reports: Sequence[str]) -> str:
  """CSV (id, report) of predict mode; returns its absolute path."""
  out = os.path.abspath(os.path.expanduser(path))
  with atomic_files.replacing(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["id", "report"])
    w.writerows(zip(ids, reports))
  return out
