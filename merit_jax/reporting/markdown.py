"""Markdown tables of evaluation results (the `<name>.md` beside `<name>.json`).

`results_markdown(results, title, command)` renders every section an evaluation holds: the
records and classes scored per task, linear probe and fine-tuning (headline table, then one
table per metric over tasks and label fractions), zero-shot (with its per-class AUROC) and its
two diagnostics, retrieval, distribution shift and cross-dataset transfer. Cells are
percentages; a single run shows value [95 % bootstrap CI], several seeds mean ± sd (n).
`paired_markdown` and `selection_markdown` are the ablation grid's extra sections.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from merit_jax.evaluators import linear_probe
from merit_jax.evaluators import tasks as tasks_lib
from merit_jax.evaluators import zero_shot


def pct(x) -> str:
  return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def ci_cell(m: Optional[dict]) -> str:
  if not m:
    return "–"
  cell = pct(m.get("value"))
  if "ci_low" in m and np.isfinite(m["ci_low"]):
    cell += f" [{pct(m['ci_low'])}, {pct(m['ci_high'])}]"
  return cell


def _fraction_cell(entry: Optional[dict], metric: str) -> str:
  """Single run: value [95 % CI]; several seeds: mean ± sd (n)."""
  if not entry:
    return "–"
  runs = entry["runs"]
  if len(runs) == 1:
    return ci_cell(runs[0]["test"].get(metric))
  summary = entry[metric]
  return f"{pct(summary['mean'])} ± {100 * summary['std']:.1f} (n={len(runs)})"


def _fraction_table(section: dict, tasks, fractions, metric: str) -> list[str]:
  header = ["encoder"] + [f"{t} {f:g}" for t in tasks for f in fractions]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for encoder, per_task in section.items():
    if not per_task:
      continue
    cells = [_fraction_cell(per_task.get(t, {}).get(str(f)), metric)
             for t in tasks for f in fractions]
    lines.append("| " + " | ".join([encoder] + cells) + " |")
  return lines


def results_markdown(results: dict, title: str, command: Optional[str] = None) -> str:
  meta = results["meta"]
  tasks, fractions = meta["tasks"], meta["fractions"]
  out = [f"# {title}", ""]
  if command:
    out += ["Produced by:", "", "```", command, "```", ""]
  splits = "MERL's published split files" if meta["merl_splits"] else \
      "TFDS splits (PTB-XL folds 1–8 / 9 / 10)"
  out += [f"Splits: {splits}. Every choice on validation; test scored once. Values in %; "
          f"single runs show value [95 % bootstrap CI, {meta['n_bootstrap']} resamples], "
          "several seeds show mean ± sd over seeds (per-run CIs in the JSON).", ""]
  out += ["Records (train / validation / test) and classes evaluated (positives in train and "
          "validation) per task: " + "; ".join(
              f"{t}: {r['train']} / {r['validation']} / {r['test']}, "
              f"{len(meta['classes'][t])} classes" for t, r in meta["records"].items()) + ".", ""]
  if meta.get("skipped_tasks"):
    out += ["Tasks not evaluated: " + "; ".join(
        f"{t} ({why})" for t, why in meta["skipped_tasks"].items()) + ".", ""]
  out += _class_scoring_markdown(meta)
  for key, label in (("linear_probe", "Linear probe"), ("finetune", "Fine-tuning")):
    if key not in results:
      continue
    key_fractions = fractions if key == "linear_probe" else sorted(
        {float(f) for e in results[key].values() for t in e.values() for f in t})
    if not key_fractions:
      continue
    out += _headline_table(results[key], label, tasks, max(key_fractions))
    # Macro F1 right after macro AUROC: the two headline metrics, then AUPRC.
    for metric in ("macro_auroc", "macro_f1", "macro_auprc"):
      note = " (per-class thresholds fixed on validation)" if metric == "macro_f1" else ""
      out += [f"## {label}: {metric.replace('_', ' ')}{note} (task, label fraction)", ""]
      out += _fraction_table(results[key], tasks, key_fractions, metric)
      out.append("")
    out += _probe_feature_markdown(results[key], tasks, key_fractions)
    if key == "linear_probe":
      out += _grid_edge_markdown(results[key])
  out += _zero_shot_markdown(results, tasks)
  if "retrieval" in results and any(results["retrieval"].values()):
    out += ["## Retrieval (test, records with a report): Recall@K % (chance in brackets)", ""]
    some = next(v for v in results["retrieval"].values() if v)
    ks = sorted(int(k.split("@")[1]) for k in some if k.startswith("ecg_to_report/R@"))
    cols = [f"{d} R@{k}" for d in ("ecg→report", "report→ecg") for k in ks]
    out += ["| encoder | N | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for encoder, r in results["retrieval"].items():
      if not r or "error" in r:
        continue
      cells = [f"{pct(r[f'{d}/R@{k}'])} ({pct(r[f'chance/{d}/R@{k}'])})"
               for d in ("ecg_to_report", "report_to_ecg") for k in ks]
      out.append("| " + " | ".join([encoder, str(r["num_queries"])] + cells) + " |")
    out.append("")
  out += _shift_markdown(results)
  out += _transfer_markdown(results)
  return "\n".join(out) + "\n"


def _probe_feature_markdown(section: dict, tasks, fractions) -> list[str]:
  """Which probe feature validation chose per (task, fraction), where there was a choice."""
  rows = []
  for encoder, per_task in section.items():
    cells = []
    for task in tasks:
      for fraction in fractions:
        entry = (per_task.get(task) or {}).get(str(float(fraction))) or {}
        cells.append(entry.get("feature", "–"))
    if any(len((e or {}).get("val_by_feature", {})) > 1 for t in per_task.values()
           for e in (t or {}).values()):
      rows.append(row([encoder] + cells))
  if not rows:
    return []
  head = [f"{t} {f:g}" for t in tasks for f in fractions]
  return (["## Probe features chosen on validation (mean validation macro AUROC over seeds)",
           "", row(["encoder"] + head), "|" + "---|" * (len(head) + 1)] + rows + [""])


def _grid_edge_markdown(section: dict) -> list[str]:
  """How many probe runs chose the largest, or the smallest non-zero, weight decay of their
  grid: many at one edge mean the grid may stop short of the validation optimum."""
  rows = []
  for encoder, per_task in section.items():
    counts = {"largest": 0, "smallest": 0, "runs": 0}
    for entry in (e for t in (per_task or {}).values() for e in (t or {}).values()):
      for run in entry.get("runs", []):
        grid = [g["weight_decay"] for g in run.get("grid", [])]
        if sum(1 for wd in set(grid) if wd > 0) < 2:
          continue
        counts["runs"] += 1
        edge = linear_probe.grid_edge(grid, run["hparams"]["weight_decay"])
        if edge is not None:
          counts[edge] += 1
    if counts["runs"]:
      rows.append(row([encoder, counts["runs"], counts["largest"], counts["smallest"]]))
  if not rows:
    return []
  return (["## Probe weight decay chosen at the edge of its grid (runs)", "",
           row(["encoder", "runs", "largest weight decay", "smallest non-zero weight decay"]),
           "|---|---|---|---|"] + rows + [""])


def row(cells) -> str:
  return "| " + " | ".join(str(c) for c in cells) + " |"


def _task_table_head(first: str, tasks) -> list[str]:
  return [row([first] + list(tasks)), "|" + "---|" * (len(tasks) + 1)]


def _class_scoring_markdown(meta: dict) -> list[str]:
  """The 'Classes scored per task' table (+ the names left out), from meta['class_scoring']."""
  scoring = {t: c for t, c in (meta.get("class_scoring") or {}).items() if c}
  if not scoring:
    return []
  out = ["## Classes scored per task", "",
         "A class is evaluated when it has positives in train and validation (and is not "
         "positive in every validation record); of those, classes without a test positive (or "
         "negative) have no AUROC and are left out of every macro mean. Each left-out class is "
         "counted under its first reason.", "",
         row(["task", "classes in the task", "scored", "no train positive",
               "no validation positive", "no test positive",
               "no validation / test negative"]), "|" + "---|" * 7]
  for task, c in scoring.items():
    lo = c["left_out"]
    out.append(row([task, c["classes"], len(c["scored"]), len(lo["no_train_positive"]),
                     len(lo["no_validation_positive"]), len(lo["no_test_positive"]),
                     len(lo["no_validation_negative"]) + len(lo["no_test_negative"])]))
  out.append("")
  names = []
  for task, c in scoring.items():
    parts = [f"{tasks_lib.LEFT_OUT_REASONS[r]}: {', '.join(v)}"
             for r, v in c["left_out"].items() if v]
    if parts:
      names.append(f"- {task}: " + "; ".join(parts))
  if names:
    out += ["Left out:", ""] + names + [""]
  return out


def _headline_table(section: dict, label: str, tasks, fraction: float) -> list[str]:
  """Macro AUROC / macro F1 per task at one label fraction (the largest)."""
  rows = [(encoder, per_task) for encoder, per_task in section.items() if per_task]
  if not rows:
    return []
  out = [f"## {label} (test, {100 * fraction:g} % labels): macro AUROC / macro F1 (thresholds "
         "fixed on validation)", ""] + _task_table_head("encoder", tasks)
  for encoder, per_task in rows:
    cells = []
    for t in tasks:
      entry = per_task.get(t, {}).get(str(fraction))
      cells.append("–" if not entry else
                   f"{_fraction_cell(entry, 'macro_auroc')} / {_fraction_cell(entry, 'macro_f1')}")
    out.append(row([encoder] + cells))
  return out + [""]


def _auroc_f1_cell(entry: Optional[dict], suffix: str = "") -> str:
  if not entry:
    return "–"
  cell = ci_cell(entry.get("macro_auroc"))
  if entry.get("macro_f1"):
    cell += f" / {ci_cell(entry['macro_f1'])}"
  return cell + suffix


def _by_language_markdown(zs: dict, tasks) -> list[str]:
  """Zero-shot test macro AUROC within each report language (`by_language` entries)."""
  languages = sorted({lang for per_task in zs.values() for t in tasks
                      for lang in (per_task.get(t) or {}).get("by_language", {})})
  if not languages:
    return []
  out = ["## Zero-shot by report language (test): macro AUROC", "",
         "The chosen prompts and normalisation, scored within the test records of each report "
         "language (`data.report_language`: de / en / sv by marker words; none = no report). "
         "An encoder that scores a record by its report's language rather than its ECG is "
         "far from chance inside a language only in the direction of that bias. Groups under "
         f"{zero_shot.MIN_GROUP_RECORDS} records are counted, not scored (n in brackets).", ""]
  out += _task_table_head("encoder / language", tasks)
  for encoder, per_task in zs.items():
    for lang in languages:
      cells = []
      for t in tasks:
        entry = (per_task.get(t) or {}).get("by_language", {}).get(lang)
        if entry is None:
          cells.append("–")
        else:
          value = ci_cell(entry["macro_auroc"]) if entry.get("macro_auroc") else "–"
          cells.append(f"{value} (n={entry['num_records']})")
      out.append(row([f"{encoder} / {lang}"] + cells))
  out.append("")
  return out


# Tasks with more classes than this keep their per-class AUROC in the JSON only: a table 50
# columns wide is unreadable, and the narrow tasks are where one class moves the macro mean most.
PER_CLASS_MAX_CLASSES = 20


def _per_class_markdown(zs: dict, meta: dict, tasks) -> list[str]:
  """Zero-shot test AUROC of each class, with its number of test positives: a macro mean over
  a few classes can be carried (or sunk) by a class with one or two positives."""
  shown = [t for t in tasks if len(meta.get("classes", {}).get(t, [])) <= PER_CLASS_MAX_CLASSES
           and t in meta.get("test_labels", {})
           and any((per_task.get(t) or {}).get("per_class_auroc") for per_task in zs.values())]
  if not shown:
    return []
  out = ["## Zero-shot per class (test): AUROC", "",
         "The chosen prompts and normalisation; the header gives each class's test positives "
         "(n). – = not scored (no positive in train, validation or test; see the classes "
         f"table). Tasks over {PER_CLASS_MAX_CLASSES} classes: per-class values in the JSON.", ""]
  for t in shown:
    classes = meta["classes"][t]
    positives = np.asarray(meta["test_labels"][t]).sum(axis=0)
    out += [f"{t}:", "", row(["encoder"] + [f"{c} (n={int(n)})" for c, n in
                                            zip(classes, positives)]),
            "|" + "---|" * (len(classes) + 1)]
    for encoder, per_task in zs.items():
      values = (per_task.get(t) or {}).get("per_class_auroc") or [None] * len(classes)
      out.append(row([encoder] + [pct(v) for v in values]))
    out.append("")
  return out


def _zero_shot_markdown(results: dict, tasks) -> list[str]:
  """Zero-shot (chosen on validation), then its two diagnostics, each in its own section."""
  out = []
  zs = {e: v for e, v in (results.get("zero_shot") or {}).items() if v}
  if zs:
    out += ["## Zero-shot (test): macro AUROC / macro F1 (thresholds from validation)", "",
            "Per task, the prompt set (zero_shot.prompt_sets) and the per-record score "
            "normalisation (zero_shot.normalizations: raw cosine; centered = minus the "
            "record's mean over the task's class prompts; softmax over the task's classes) "
            "with the best validation macro AUROC; only that pair is scored on test.", ""]
    out += _task_table_head("encoder", tasks)
    for encoder, per_task in zs.items():
      out.append(row([encoder] + [_auroc_f1_cell(per_task.get(t)) for t in tasks]))
    out += ["", "Chosen on validation: prompt set / normalisation (validation macro AUROC)", ""]
    out += _task_table_head("encoder", tasks)
    for encoder, per_task in zs.items():
      out.append(row([encoder] + [
          f"{per_task[t].get('prompt_set', '–')} / {per_task[t].get('normalization', 'raw')} "
          f"({pct(per_task[t].get('val_macro_auroc'))})" if t in per_task else "–"
          for t in tasks]))
    out.append("")
    scales = []
    for encoder, per_task in zs.items():
      some = next(iter(per_task.values()))
      if "softmax_scale" in some:
        source = ("the model's logit scale" if some.get("softmax_scale_source") == "model"
                  else "fixed; the model's is unknown")
        scales.append(f"{encoder} {some['softmax_scale']:.3g} ({source})")
    if scales:
      out += ["softmax multiplies the cosines by: " + "; ".join(scales) + ".", ""]
    for encoder, per_task in zs.items():
      options = []
      for t in tasks:
        for prompt_set, by_norm in (per_task.get(t, {}).get("validation") or {}).items():
          for norm in by_norm:
            if (prompt_set, norm) not in options:
              options.append((prompt_set, norm))
      if not options:
        continue
      out += [f"Validation macro AUROC of every option, {encoder} (* = chosen):", ""]
      out += _task_table_head("prompt set / normalisation", tasks)
      for prompt_set, norm in options:
        cells = []
        for t in tasks:
          entry = per_task.get(t, {})
          value = (entry.get("validation") or {}).get(prompt_set, {}).get(norm)
          mark = "*" if (entry.get("prompt_set"), entry.get("normalization")) == (
              prompt_set, norm) else ""
          cells.append("–" if value is None else f"{pct(value)}{mark}")
        out.append(row([f"{prompt_set} / {norm}"] + cells))
      out.append("")
  out += _per_class_markdown(zs, results["meta"], tasks)
  out += _by_language_markdown(zs, tasks)
  proto = {e: v for e, v in (results.get("prototype") or {}).items() if v}
  if proto:
    out += ["## Prototype diagnostic (uses training labels — not zero-shot): test macro AUROC / "
            "macro F1", "",
            "Class embedding = the mean of the L2-normalised text embeddings of the training "
            "reports that carry the class; cosine to the test ECG embeddings, normalisation "
            "(in brackets) chosen on validation. Prototypes good and prompts bad → the prompts "
            "are the problem; both bad → the ECG–text alignment is.", ""]
    out += _task_table_head("encoder", tasks)
    for encoder, per_task in proto.items():
      out.append(row([encoder] + [
          _auroc_f1_cell(per_task.get(t), f" ({per_task[t]['normalization']})")
          if t in per_task else "–" for t in tasks]))
    out.append("")
    missing = sorted({f"{t}: {', '.join(v['no_prototype'])}" for per_task in proto.values()
                      for t, v in per_task.items() if v.get("no_prototype")})
    if missing:
      out += ["Classes without a training report (no prototype, left out): "
              + "; ".join(missing) + ".", ""]
  ceiling = {e: v for e, v in (results.get("text_ceiling") or {}).items() if v}
  if ceiling:
    out += ["## Text-only ceiling (test reports against the chosen prompts, cosine; no ECG): "
            "macro AUROC", "",
            "Each encoder's text tower alone: the test reports' own embeddings scored against "
            "the class prompts chosen for zero-shot (prompt set in brackets). Roughly the "
            "ceiling an ECG encoder aligned to that text space can approach.", ""]
    out += _task_table_head("encoder", tasks)
    for encoder, per_task in ceiling.items():
      out.append(row([encoder] + [
          f"{ci_cell(per_task[t].get('macro_auroc'))} ({per_task[t].get('prompt_set', '–')})"
          if t in per_task else "–" for t in tasks]))
    out.append("")
    counts = {}
    for per_task in ceiling.values():
      for t, v in per_task.items():
        counts.setdefault(t, (v["num_records"], v["num_left_out"]))
    out += ["Test records scored (empty reports left out): " + "; ".join(
        f"{t}: {n} ({left} left out)" for t, (n, left) in counts.items()) + ".", ""]
  return out


_REDUCED_LEADS_WORDS = {"native": "native lead subset", "zeros": "zero-filled"}


def _shift_markdown(results: dict) -> list[str]:
  """The 'Distribution shift' section: a table per encoder and task, then how leads were cut."""
  if "shift" not in results or not any(results["shift"].values()):
    return []
  out = ["## Distribution shift (test): macro AUROC % of the fixed 100 % probe", ""]
  modes: dict[str, list] = {}
  for encoder, per_task in results["shift"].items():
    for task, curves in per_task.items():
      out += [f"**{encoder} / {task}** (clean "
              f"{pct(curves[0]['clean']['macro_auroc']) if curves else '–'})", ""]
      out += ["| corruption | unit | AUROC at each severity (weakest first) |", "|---|---|---|"]
      for c in curves:
        values = ", ".join(f"{s}: {pct(v['macro_auroc'])}"
                           for s, v in zip(c["severities"], c["values"]))
        out.append(f"| {c['corruption']} | {c['unit']} | {values} |")
        # Results written before the switch existed were all zero-filled.
        if c["corruption"] == "reduced_leads":
          mode = c.get("reduced_leads_mode", "zeros")
          if encoder not in modes.setdefault(mode, []):
            modes[mode].append(encoder)
      out.append("")
  if modes:
    out += ["reduced_leads: " + "; ".join(
        f"{_REDUCED_LEADS_WORDS.get(mode, mode)} for {', '.join(encoders)}"
        for mode, encoders in sorted(modes.items())) + ".", ""]
  return out


def _transfer_markdown(results: dict) -> list[str]:
  """The 'Cross-dataset transfer' section: one row per encoder and target, then the maps."""
  if "transfer" not in results:
    return []
  out = ["## Cross-dataset transfer: probe trained on PTB-XL, target scored once", "",
         "Shared classes: PTB-XL statements with a SNOMED twin in the target. Choices on "
         "PTB-XL validation; gap = target − PTB-XL test macro AUROC over the classes scored on "
         "both.", ""]
  rows = [(e, t, r) for e, per_target in results["transfer"].items()
          for t, r in per_target.items()]
  if rows:
    out += ["| encoder | target (task) | N | classes | AUROC | AUPRC | F1 | PTB-XL test AUROC "
            "| gap |", "|" + "---|" * 9]
    for encoder, target, r in rows:
      m, gap = r["target_metrics"], r["gap"]
      delta = "–" if gap["delta"] is None else f"{100 * gap['delta']:+.1f}"
      out.append(f"| {encoder} | {target} ({r['target_task']}) | {r['records']['target']} | "
                 f"{m['num_evaluated']}/{len(r['classes'])} | {ci_cell(m.get('macro_auroc'))} "
                 f"| {ci_cell(m.get('macro_auprc'))} | {ci_cell(m.get('macro_f1'))} | "
                 f"{ci_cell(r['in_domain'].get('macro_auroc'))} | {delta} |")
    out.append("")
    mapped = {}
    for _, target, r in rows:
      mapped.setdefault(target, r)
    for target, r in mapped.items():
      pairs = ", ".join(f"{c['ptbxl']}={'+'.join(c['target'])} ({c['positives']['target']})"
                        for c in r["classes"])
      out += [f"{target}: PTB-XL=target (target positives): {pairs}."
              + (f" Too rare in PTB-XL: {', '.join(d['ptbxl'] for d in r['dropped'])}."
                 if r["dropped"] else ""), ""]
  skipped = results["meta"].get("transfer", {}).get("skipped", {})
  if skipped:
    out += ["Not built, skipped: " + ", ".join(skipped) + " (see the JSON for the build "
            "command).", ""]
  return out


def paired_markdown(paired: dict) -> str:
  """The ablation grid's 'MERIT minus contrastive only' section ({variant: {task: diff}})."""
  tasks = list(next(iter(paired.values())))
  lines = ["", "## MERIT minus contrastive only (linear probe, 100 % labels, test): paired "
           "difference, percentage points [95 % paired bootstrap CI]", "",
           "| variant | metric | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
  for title, per_task in paired.items():
    for metric in ("macro_auroc", "macro_f1"):
      cells = []
      for task in tasks:
        m = per_task[task].get(metric)
        cells.append("–" if m is None else f"{100 * m['value']:+.1f} "
                     f"[{100 * m['ci_low']:+.1f}, {100 * m['ci_high']:+.1f}]")
      lines.append(f"| {title} | {metric.replace('_', ' ')} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def selection_markdown(selection: dict) -> str:
  """The ablation grid's 'λ chosen on validation' section (`ablations.select_on_validation`)."""
  lines = ["", "## MERIT text weight λ chosen on validation", "",
           f"Criterion: {selection['criterion']}.", "",
           "| variant | validation macro AUROC % |", "|---|---|"]
  for title, score in sorted(selection["scores"].items(), key=lambda kv: -kv[1]):
    mark = " (selected)" if title == selection["selected"] else ""
    lines.append(f"| {title}{mark} | {100 * score:.2f} |")
  return "\n".join(lines) + "\n"
