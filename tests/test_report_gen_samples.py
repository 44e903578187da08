"""The most-frequent-report arm, the samples page and the comparison's MERIT-versus and
degeneracy sections (merit_jax/report_gen/{baselines,samples,reporting}.py), and compare mode
wired end to end on fake splits (tiny random LLM, no dataset)."""

import importlib.util
import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from merit_jax import generate
from merit_jax.metrics import clinical
from merit_jax.metrics import generation
from merit_jax.report_gen import GenerateError
from merit_jax.report_gen import baselines
from merit_jax.report_gen import reporting
from merit_jax.report_gen import samples
from tests.test_generate import generate_config

_REFS = ["Sinusrhythmus. Normales EKG.", "Vorhofflimmern. Linksschenkelblock.",
         "sinus rhythm. left ventricular hypertrophy.", "sinus rhythm. normal ecg.",
         "sinus rhythm. inferior myocardial infarction.", "sinus tachycardia. st depression.",
         "sinus rhythm. anterior myocardial infarction.", "sinus bradycardia. normal ecg.",
         "sinus rhythm. incomplete right bundle branch block.", "sinus rhythm. normal ecg.",
         "atrial fibrillation. t wave inversion.", "sinus rhythm. left anterior hemiblock.",
         "sinus rhythm. st depression, anterior ischaemia.", "sinus rhythm. lvh.",
         "sinus rhythm. normal ecg.", "sinus rhythm. non-specific t wave changes."]
# PTB-XL-like labels of the references (ids descending, so selection must sort them).
_CODES = [["NORM", "SR"], ["AFIB", "CLBBB"], ["LVH", "SR"], ["NORM", "SR"], ["IMI", "SR"],
          ["STACH", "STD_", "NDT"], ["AMI", "SR"], ["NORM", "SBRAD"], ["IRBBB", "SR"],
          ["NORM", "SR"], ["AFIB", "INVT"], ["LAFB", "SR"], ["ISCAN", "SR", "STD_"],
          ["LVH", "SR"], ["NORM", "SR"], ["NT_", "NST_", "SR"]]
_IDS = list(range(1016, 1000, -1))


def _results(arms=("none", "random", "merit", "most_frequent")):
  test = {"reports": _REFS, "ecg_id": _IDS, "codes": _CODES}
  outputs = {"none": ["sinus rhythm. normal ecg."] * 16,
             "random": ["sinus rhythm."] * 16,
             "merit": [r.lower() for r in _REFS[:12]] + ["<strong>v</strong> | x", "", "lvh",
                                                        "afib"],
             "most_frequent": ["sinus rhythm. normal ecg."] * 16}
  out = {}
  for arm in arms:
    metrics = generation.report_generation_metrics(outputs[arm], _REFS, _CODES,
                                                   with_meteor=False)
    metrics["num_records"] = 16
    out[arm] = {"encoder": arm, "train_records": 20, "final_loss": None if arm ==
                "most_frequent" else 1.0, "train_seconds": 1.0, "metrics": metrics,
                "generated": outputs[arm], "test": test}
  return out


# ------------------------------------------------------------------------------ baseline

def test_most_frequent_report_normalises_whitespace_and_breaks_ties_by_text():
  reports = ["Sinus  rhythm.\n", "sinus rhythm.", " Sinus rhythm. ", "", "   ",
             "sinus rhythm."]
  assert baselines.most_frequent_report(reports) == ("Sinus rhythm.", 2)
  # A tie (2 and 2) goes to the alphabetically first text, whatever the order.
  tie = ["b", "a", "b", "a", "c"]
  assert baselines.most_frequent_report(tie) == ("a", 2)
  assert baselines.most_frequent_report(tie[::-1]) == ("a", 2)
  with pytest.raises(GenerateError, match="no non-empty report"):
    baselines.most_frequent_report(["", " \n"])


def _fake_split(n_train=20):
  """compute_features stand-in: the splits of a tiny dataset, no TFDS build."""

  def compute(workdir, config, source, split, kind, max_records=None):
    del workdir, config
    if split == "train":
      reports = ["sinus rhythm. normal ecg."] * 6 + ["sinus  rhythm.  normal ecg. "] * 2 + [
          f"report {i}" for i in range(n_train - 8)]
      ids, codes = list(range(n_train)), [["SR"]] * n_train
    else:
      reports, ids, codes = list(_REFS), list(_IDS), [list(c) for c in _CODES]
    n = min(len(reports), max_records or len(reports))
    ecg = np.zeros((n, 12, 1000), np.float32)
    return {"features": source.features(ecg, kind), "reports": reports[:n],
            "codes": codes[:n], "ecg_id": np.asarray(ids[:n], np.int64)}

  return compute


def test_run_most_frequent_writes_the_training_mode_for_every_test_record(tmp_path,
                                                                           monkeypatch):
  monkeypatch.setattr(baselines.data_lib, "compute_features", _fake_split())
  monkeypatch.setattr(baselines.provision, "ensure_datasets", lambda data_cfg: None)
  cfg = generate_config.get_config("test")
  cfg.eval.max_records = None
  summary = baselines.run_most_frequent(cfg, str(tmp_path / "mf"))
  assert summary["report"] == "sinus rhythm. normal ecg." and summary["report_count"] == 8
  assert summary["generated"] == ["sinus rhythm. normal ecg."] * 16
  want = generation.report_generation_metrics(summary["generated"], _REFS, _CODES, False)
  for k, v in want.items():
    assert summary["metrics"][k] == v, k
  assert summary["train_records"] == 20 and summary["final_loss"] is None
  assert summary["test"]["ecg_id"] == _IDS
  saved = json.loads((tmp_path / "mf" / "summary.json").read_text())
  assert saved["report"] == summary["report"] and "generated" not in saved
  assert (tmp_path / "mf" / "samples.csv").is_file()


# ------------------------------------------------------------------------- samples page

def test_superclass_table_matches_ptbxl_statements(ptbxl_dir):
  table = pd.read_csv(pathlib.Path(ptbxl_dir) / "scp_statements.csv", index_col=0)
  diagnostic = table[table["diagnostic"] == 1]
  for cls, codes in samples.SUPERCLASS_CODES.items():
    assert set(codes) == set(diagnostic.index[diagnostic["diagnostic_class"] == cls]), cls
  assert set(samples.RHYTHM_CODES) == set(table.index[table["rhythm"] == 1])


def test_select_records_spreads_over_classes_and_is_fixed():
  chosen = samples.select_records(_IDS, _CODES)
  assert len(chosen) == 12 and len({i for i, _ in chosen}) == 12
  slots = [s for _, s in chosen]
  assert slots[:10] == ["NORM"] * 2 + ["MI"] * 2 + ["STTC"] * 2 + ["CD"] * 2 + ["HYP"] * 2
  assert slots[10:] == ["AFIB", "other rhythm"]
  by_slot = {}
  for i, slot in chosen:
    by_slot.setdefault(slot, []).append(_IDS[i])
  # Lowest ecg_ids first among records of that class alone: NORM alone are 1002, 1007, 1009
  # (NORM with SBRAD: rhythm codes have no superclass), 1013, 1016.
  assert by_slot["NORM"] == [1002, 1007]
  assert by_slot["CD"] == [1005, 1008]  # LAFB, IRBBB; 1015 (CLBBB with AFIB) is CD alone too.
  assert by_slot["MI"] == [1010, 1012]  # AMI (row 6), IMI (row 4).
  # STTC alone: rows 15 (NT_ NST_), 12 (ISCAN), 5 (NDT): ids 1001, 1004, 1011.
  assert by_slot["STTC"] == [1001, 1004]
  assert by_slot["HYP"] == [1003, 1014]
  assert by_slot["AFIB"] == [1006]  # 1006 (row 10, AFIB + INVT) before 1015 (row 1).
  assert by_slot["other rhythm"] == [1009]  # SBRAD (row 7) before STACH (row 5, id 1011).
  # The same records in any order of the input rows.
  perm = np.random.default_rng(0).permutation(16)
  again = samples.select_records([_IDS[i] for i in perm], [_CODES[i] for i in perm])
  assert [_IDS[perm[i]] for i, _ in again] == [_IDS[i] for i, _ in chosen]
  # Fewer records than slots: every record once; too few of a class: lowest ids fill in.
  assert len(samples.select_records(_IDS[:5], _CODES[:5])) == 5
  filled = samples.select_records([1, 2, 3, 4], [["SR"]] * 4, n=3)
  assert filled == [(0, "other"), (1, "other"), (2, "other")]


def test_statement_confusion_counts():
  generated = ["sinus rhythm. normal ecg.", "sinus rhythm. left bundle branch block.",
               "atrial fibrillation."]
  labels = [["SR", "NORM"], ["SR", "LVH"], ["SR", "AFIB", "PVC"]]
  rows = samples.statement_confusion(generated, labels)
  table = {r["code"]: (r["recovered"], r["missed"], r["invented"]) for r in rows}
  assert table == {"SR": (2, 1, 0), "NORM": (1, 0, 0), "LVH": (0, 1, 0),
                   "CLBBB": (0, 0, 1), "AFIB": (1, 0, 0), "PVC": (0, 1, 0)}
  assert rows[0]["code"] == "SR"  # Most frequent first, then by code.
  assert [r["code"] for r in rows[1:]] == ["AFIB", "CLBBB", "LVH", "NORM", "PVC"]
  # The counts behind statement F1: micro F1 = 2 TP / (2 TP + FP + FN).
  tp, fn, fp = (sum(r[k] for r in rows) for k in ("recovered", "missed", "invented"))
  assert clinical.clinical_f1(generated, labels)["micro_f1"] == pytest.approx(
      2 * tp / (2 * tp + fp + fn))


def test_samples_page(tmp_path):
  results = _results()
  page = samples.samples_markdown(results, "python -m merit_jax.generate ...")
  sections = [line for line in page.splitlines() if line.startswith("## ")]
  assert len(sections) == 13 and sections[-1].startswith("## Statements the `merit` arm")
  assert sections[0] == "## 1. ecg_id 1002 (NORM)"
  # One row per source in each record's table, in a fixed order.
  first = page.split("## 1.")[1].split("## 2.")[0]
  titles = [line.split("|")[1].strip() for line in first.splitlines()
            if line.startswith("| ") and not line.startswith("| source")]
  assert titles == ["reference", "no ECG", "random encoder", "most frequent report", "MERIT"]
  assert "| reference | sinus rhythm. normal ecg. | NORM SR |" in first
  # Markup is shown as text and pipes escaped; empty outputs are marked (ids 1004, 1003).
  assert "| MERIT | &lt;strong&gt;v&lt;/strong&gt; \\| x |" in page
  assert "| MERIT | *(empty)* | – |" in page
  one = samples.samples_markdown({"merit": dict(results["merit"], generated=[
      "<b>x</b> | y"] * 16)}, n=1)
  assert "| MERIT | &lt;b&gt;x&lt;/b&gt; \\| y |" in one
  assert "*(empty)*" in samples.samples_markdown(
      {"merit": dict(results["merit"], generated=[""] * 16)}, n=1)
  # The confusion table is MERIT's, over all 16 records.
  confusion = samples.statement_confusion(results["merit"]["generated"], _CODES)
  assert f"| {confusion[0]['code']} | {confusion[0]['recovered']} |" in page
  cfg = generate_config.get_config("test")
  cfg.samples_path = str(tmp_path / "results" / "samples.md")
  path = samples.write_samples_page(cfg, results, str(tmp_path), "cmd")
  assert path == cfg.samples_path
  assert (tmp_path / "results" / "samples.md").read_text() == (
      tmp_path / "report_generation_samples.md").read_text()
  # A validation run writes beside the test page, never over it.
  test_page = (tmp_path / "results" / "samples.md").read_text()
  cfg.eval.split = "validation"
  path = samples.write_samples_page(cfg, results, str(tmp_path), "cmd")
  assert path == str(tmp_path / "results" / "samples_validation.md")
  assert (tmp_path / "results" / "samples.md").read_text() == test_page
  assert (tmp_path / "results" / "samples_validation.md").read_text() == (
      tmp_path / "report_generation_samples.md").read_text() != test_page
  cfg.results_path = str(tmp_path / "results" / "report_validation_x.md")
  assert reporting.page_path_for_split(cfg.results_path, "validation") == cfg.results_path


# ------------------------------------------------------------------- comparison sections

def test_versus_arms_pairs_merit_with_every_other_arm():
  cfg = generate_config.get_config("test")
  results = _results()
  versus = reporting.versus_arms(cfg, results)
  assert set(versus) == {"none", "random", "most_frequent"}
  for arm, ci in versus.items():
    for key, d in ci.items():
      want = results["merit"]["metrics"][key] - results[arm]["metrics"][key]
      assert d["diff"] == pytest.approx(want, abs=1e-12), (arm, key)
      assert d["diff_ci_low"] <= d["diff"] <= d["diff_ci_high"], (arm, key)
  # MERIT minus no ECG equals the first table's difference (same resamples).
  boot = reporting.bootstrap_arms(cfg, results)
  for key, d in versus["none"].items():
    assert d["diff_ci_low"] == boot["merit"][key]["diff_ci_low"], key
  assert reporting.versus_arms(cfg, {k: v for k, v in results.items() if k != "merit"}) == {}


def test_score_arms_and_comparison_markdown(tmp_path):
  cfg = generate_config.get_config("test")
  results = reporting.score_arms(cfg, _results())
  assert "versus" in results["merit"] and "versus" not in results["none"]
  md = reporting.comparison_markdown(cfg, results, "cmd")
  assert "## MERIT encoder minus each other arm (paired bootstrap, 95 % CI)" in md
  row = [line for line in md.splitlines() if line.startswith("| MERIT − `most_frequent` |")]
  rouge = results["merit"]["versus"]["most_frequent"]["rouge_l"]
  assert len(row) == 1 and f"{100 * rouge['diff']:+.1f} [" in row[0]
  mf = [line for line in md.splitlines() if line.startswith("| most frequent training report")]
  # Its row of scores (no training loss) and of differences from the no-ECG arm.
  assert len(mf) == 2 and mf[0].endswith("| – | 1 |")
  assert "sacrebleu corpus BLEU, signature `nrefs:1|case:mixed|eff:no|tok:13a|" in md
  cfg.results_path = str(tmp_path / "table.md")  # Never the repository's results/.
  reporting.write_comparison(cfg, results, str(tmp_path), "cmd")
  payload = json.loads((tmp_path / "report_generation.json").read_text())
  assert payload["arms"]["merit"]["versus"]["most_frequent"]["rouge_l"]["diff"] == (
      pytest.approx(rouge["diff"]))
  assert "tok:13a" in payload["metric_settings"]


@pytest.mark.skipif(importlib.util.find_spec("merit_jax.metrics.degeneracy") is None,
                    reason="merit_jax/metrics/degeneracy.py not there yet")
def test_degeneracy_counts_in_comparison():
  from merit_jax.metrics import degeneracy  # pylint: disable=g-import-not-at-top
  cfg = generate_config.get_config("test")
  results = reporting.score_arms(cfg, _results())
  for arm, r in results.items():
    assert r["degeneracy"] == dict(degeneracy.degeneracy_counts(r["generated"])), arm
  assert results["merit"]["degeneracy"]["empty"] == 1
  md = reporting.comparison_markdown(cfg, results, "cmd")
  assert "## Degenerate outputs (test records)" in md
  row = [line for line in md.splitlines() if line.startswith("| `merit` |")]
  assert row == ["| `merit` | 1 | 1 | 0 | 16 |"]  # empty, markup, repeated n-gram, total.


def test_degeneracy_missing_module_leaves_it_out(monkeypatch):
  monkeypatch.setattr(reporting.importlib.util, "find_spec", lambda name: None)
  cfg = generate_config.get_config("test")
  results = reporting.score_arms(cfg, _results(("none", "merit")))
  assert results["merit"]["degeneracy"] is None
  assert "Degenerate outputs" not in reporting.comparison_markdown(cfg, results, "cmd")


# ---------------------------------------------------------------------- compare, wired

def test_run_compare_with_the_most_frequent_arm(tmp_path, monkeypatch):
  """compare mode end to end on fake splits: the no-ECG arm trains the tiny LLM, the
  most-frequent arm writes; the table, its JSON and the samples page come out."""
  monkeypatch.setattr(generate.data_lib, "compute_features", _fake_split(n_train=16))
  monkeypatch.setattr(generate.provision, "ensure_datasets", lambda data_cfg: None)
  cfg = generate_config.get_config("test")
  cfg.mode, cfg.arms, cfg.eval.max_records = "compare", ("none", "most_frequent"), None
  cfg.results_path = str(tmp_path / "results" / "table.md")
  cfg.samples_path = str(tmp_path / "results" / "samples.md")
  results = generate.run_compare(cfg, str(tmp_path / "work"), "cmd")
  assert list(results) == ["none", "most_frequent"]
  assert results["most_frequent"]["generated"] == ["sinus rhythm. normal ecg."] * 16
  assert "diff" in results["most_frequent"]["bootstrap"]["rouge_l"]  # Paired with no ECG.
  page = (tmp_path / "results" / "samples.md").read_text()
  assert page == (tmp_path / "work" / "report_generation_samples.md").read_text()
  assert "| most frequent report | sinus rhythm. normal ecg. |" in page
  assert "## Statements the `most_frequent` arm" in page  # No MERIT arm: the last one's.
  table = (tmp_path / "results" / "table.md").read_text()
  assert "| most frequent training report (no ECG, no training) |" in table
  # The same arms re-scored with another decoding, not trained again: the reports are those
  # of the trained projector decoded anew (greedy at 2 tokens: the start of each report),
  # the training figures those of the first run.
  cfg.rescore_from = str(tmp_path / "work")
  cfg.decoding.max_new_tokens = 2
  cfg.results_path = str(tmp_path / "results" / "rescored.md")
  again = generate.run_compare(cfg, str(tmp_path / "rescored"), "cmd")
  trained = results["none"]
  assert again["none"]["train_seconds"] == trained["train_seconds"]
  assert again["none"]["final_loss"] == trained["final_loss"]
  assert again["none"]["eval_loss"] == pytest.approx(trained["eval_loss"], rel=1e-5)
  assert all(full.startswith(part.strip())
             for part, full in zip(again["none"]["generated"], trained["generated"]))
  assert again["most_frequent"]["generated"] == results["most_frequent"]["generated"]
  assert "were decoded again with these settings" in (
      tmp_path / "results" / "rescored.md").read_text()
  assert not (tmp_path / "rescored" / "none" / "projector").exists()  # Nothing retrained.
  # A config that states another recipe than the arms were trained with is refused.
  cfg.total_steps += 1
  with pytest.raises(generate.GenerateError, match="total_steps: trained"):
    generate.run_compare(cfg, str(tmp_path / "rescored2"), "cmd")
