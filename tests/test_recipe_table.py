"""Tests for merit_jax/report_gen/recipe_table.py: the validation page that picks a recipe."""

import csv
import json
import subprocess
import sys

import pytest

from merit_jax.report_gen import recipe_table


def _write_run(path, config, metrics, generated, final_loss=1.0, eval_loss=2.0, score_of=None,
               decoding=None):
  path.mkdir(parents=True)
  summary = {"eval_split": "validation", "eval_loss": eval_loss,
             "metrics": dict(metrics, num_records=len(generated))}
  if score_of is None:
    summary["final_loss"] = final_loss
    (path / "generate_config.json").write_text(json.dumps({"config": config}))
  else:
    summary.update(projector=str(score_of), decoding=decoding)
  (path / "summary.json").write_text(json.dumps(summary))
  with open(path / "samples.csv", "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["ecg_id", "reference", "generated", "scp_codes"])
    for i, g in enumerate(generated):
      w.writerow([i, "ref", g, "SR"])


def _metrics(micro, macro):
  return {"bleu4": 0.01, "rouge_l": 0.2, "meteor": 0.2, "clinical_micro_f1": micro,
          "clinical_macro_f1": macro, "degenerate_empty": 0, "degenerate_markup": 0,
          "degenerate_repeated_ngram": 1}


def test_rows_show_differing_keys_and_bold_the_best_mean_f1(tmp_path):
  base = {"lora_rank": 8, "optim": {"lr": 1e-3}, "total_steps": 240,
          "decoding": {"method": "greedy", "repetition_penalty": 1.2}}
  _write_run(tmp_path / "a", base, _metrics(0.40, 0.02), ["x", "x", "y"])
  _write_run(tmp_path / "b", dict(base, standardize_features=True), _metrics(0.30, 0.20),
             ["x", "y", "z"], final_loss=0.5)
  # A score run of b with other decoding: its decoding, b's training loss.
  _write_run(tmp_path / "b_rep1", None, _metrics(0.35, 0.05), ["x", "x", "x"],
             score_of=tmp_path / "b", decoding={"method": "greedy", "repetition_penalty": 1.0})
  runs = [recipe_table.read_run(str(tmp_path / n)) for n in ("a", "b", "b_rep1")]
  page = recipe_table.render(runs)
  rows = [line for line in page.splitlines() if line.startswith("| ")]
  head = [c.strip() for c in rows[0].strip("|").split("|")]
  # Only what differs gets a column (a: standardisation off, as before the key existed).
  assert "standardised features" in head and "rep. penalty" in head and "LoRA rank" not in head
  assert "LoRA rank 8" in page and "steps 240" in page
  cells = {r.split("|")[1].strip().strip("*"): [c.strip().strip("*") for c in r.split("|")[1:-1]]
           for r in rows[1:]}
  col = {name: i for i, name in enumerate(head)}
  assert cells["a"][col["standardised features"]] == "False"
  assert cells["b_rep1"][col["rep. penalty"]] == "1" and cells["b"][col["rep. penalty"]] == "1.2"
  assert cells["b_rep1"][col["final train loss"]] == "0.500"
  assert cells["a"][col["distinct reports"]] == "2 / 3"
  assert cells["b"][col["F1 macro"]] == "20.0"
  # Mean F1: a 0.21, b 0.25, b_rep1 0.20 → b, and only b, in bold.
  bold = [r for r in rows[1:] if r.split("|")[1].strip().startswith("**")]
  assert len(bold) == 1 and "**b**" in bold[0]


def test_cli_writes_the_page_and_names_a_missing_run(tmp_path):
  _write_run(tmp_path / "a", {"lora_rank": 8}, _metrics(0.4, 0.1), ["x"])
  out = tmp_path / "page.md"
  ok = subprocess.run([sys.executable, "-m", "merit_jax.report_gen.recipe_table",
                       f"--runs={tmp_path / 'a'}", f"--output={out}"],
                      capture_output=True, text=True, timeout=120)
  assert ok.returncode == 0, ok.stderr
  assert out.read_text().startswith("# Report generation: choosing the recipe")
  bad = subprocess.run([sys.executable, "-m", "merit_jax.report_gen.recipe_table",
                        f"--runs={tmp_path / 'nope'}", f"--output={out}"],
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode != 0 and "no summary.json" in bad.stderr


def _write_samples(path, rows):
  path.mkdir(parents=True, exist_ok=True)
  with open(path / "samples.csv", "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["ecg_id", "reference", "generated", "scp_codes"])
    w.writerows(rows)


def test_paired_difference_matches_records_by_id(tmp_path):
  labels = {0: "SR", 1: "SR", 2: "AFIB", 3: "AFIB"}
  text = {"SR": "sinus rhythm.", "AFIB": "atrial fibrillation."}
  # The run writes every record's statement: statement F1 micro 1.
  _write_samples(tmp_path / "run", [[i, text[c], text[c], c] for i, c in labels.items()])
  # The baseline, in reverse order, says SR, SR, SR, AFIB for records 0..3: by record, 3 true
  # positives, 1 false positive, 1 false negative, F1 micro 0.75. Matched by row position
  # instead, it would score 0.25.
  said = {0: "SR", 1: "SR", 2: "SR", 3: "AFIB"}
  _write_samples(tmp_path / "base", [[i, text[labels[i]], text[said[i]], labels[i]]
                                     for i in (3, 2, 1, 0)])
  paired = recipe_table.paired_against(str(tmp_path / "run"), str(tmp_path / "base"),
                                       n_bootstrap=200)
  micro = paired["clinical_micro_f1"]
  assert micro["value"] == 1.0 and abs(micro["diff"] - 0.25) < 1e-9
  assert micro["diff_ci_low"] <= micro["diff"] <= micro["diff_ci_high"]
  _write_samples(tmp_path / "other", [[9, "x", "x", "SR"]])
  with pytest.raises(ValueError, match="different records"):
    recipe_table.paired_against(str(tmp_path / "run"), str(tmp_path / "other"))


def test_page_shows_the_paired_table_against_a_baseline(tmp_path):
  _write_run(tmp_path / "a", {"lora_rank": 8}, _metrics(0.4, 0.1), ["sinus rhythm."] * 2)
  _write_samples(tmp_path / "mf", [[0, "ref", "atrial fibrillation.", "SR"],
                                   [1, "ref", "atrial fibrillation.", "SR"]])
  out = tmp_path / "page.md"
  ok = subprocess.run([sys.executable, "-m", "merit_jax.report_gen.recipe_table",
                       f"--runs={tmp_path / 'a'}", f"--baseline={tmp_path / 'mf'}",
                       f"--output={out}"], capture_output=True, text=True, timeout=120)
  assert ok.returncode == 0, ok.stderr
  page = out.read_text()
  # Two records, both SR: the run finds both (F1 micro 100), the baseline neither (0).
  assert "## Each run minus `mf` on the same validation records" in page
  assert "F1 micro 0.0" in page
  row = next(line for line in page.splitlines() if line.startswith("| a | "))
  assert "+100.0 [+100.0, +100.0]" in row
