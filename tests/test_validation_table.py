"""validation_table: the preferred feature kind per cell, the means, the config differences."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from merit_jax import validation_table

REPO = pathlib.Path(__file__).resolve().parents[1]


def _entry(by_feature, test_value=0.99):
  # The test figure is there to show that the table never reads it.
  return {"val_by_feature": by_feature,
          "runs": [{"val": {"macro_auroc": {"value": 0.0}},
                    "test": {"macro_auroc": {"value": test_value}}}]}


def _result(checkpoint=None, variants=None):
  result = {
      "meta": {"checkpoint": checkpoint} if checkpoint else {"variants": variants or {}},
      "linear_probe": {"run": {
          "form": {"0.1": _entry({"pooled": 0.70, "per_lead": 0.74}),
                   "1.0": _entry({"pooled": 0.80})},
          "all": {"0.01": _entry({"pooled": 0.61, "per_layer": 0.60})}}}}
  return result


def test_cells_take_the_validation_preferred_kind_and_never_the_test_figure():
  cells = validation_table.validation_cells(_result("x")["linear_probe"]["run"])
  assert cells == {("form", "0.1"): 0.74, ("form", "1.0"): 0.80, ("all", "0.01"): 0.61}
  md = validation_table.table_markdown([_result()], ["a.json"])
  row = next(line for line in md.splitlines() if line.startswith("| a.json: run"))
  # Columns sorted by task then fraction: all 0.01, form 0.1, form 1; then the two means.
  assert row == (f"| a.json: run | 61.0 | 74.0 | 80.0 | {100 * (0.61 + 0.74) / 2:.2f} | "
                 f"{100 * (0.61 + 0.74 + 0.80) / 3:.2f} |")
  assert "99.0" not in md


def test_means_cover_only_the_cells_every_row_has():
  wider = _result()
  wider["linear_probe"]["run"]["rhythm"] = {"0.1": _entry({"pooled": 0.10})}
  md = validation_table.table_markdown([_result(), wider], ["a.json", "b.json"])
  row = next(line for line in md.splitlines() if line.startswith("| b.json: run"))
  assert row.endswith(f"| 10.0 | {100 * (0.61 + 0.74) / 2:.2f} | "
                      f"{100 * (0.61 + 0.74 + 0.80) / 3:.2f} |")
  assert "over the 3 cells that every row has (all 0.01, form 0.1, form 1)" in md


def test_files_without_feature_kinds_average_their_runs():
  entry = {"runs": [{"val": {"macro_auroc": {"value": v}}} for v in (0.6, 0.7, 0.8)]}
  assert validation_table.validation_cells({"rhythm": {"0.1": entry}}) == {
      ("rhythm", "0.1"): pytest.approx(0.7)}


def test_config_differences_name_what_a_run_trains_differently(tmp_path):
  def run_dir(name, **overrides):
    config = {"seed": 0, "workdir": f"/runs/{name}", "log_every": 50,
              "objective": {"lambda_nce": 0.3},
              "data": {"augment": {"enabled": False},
                       "sources": [{"config": "100hz", "weight": 0.6,
                                    "manual_dir": f"/host/{name}"}]},
              "eval": {"batch_size": 128}}
    for dotted, value in overrides.items():
      node = config
      *parents, leaf = dotted.split("__")
      for part in parents:
        node = node[part]
      node[leaf] = value
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    return str(path)

  reference = run_dir("ref")
  lever = run_dir("aug", data__augment__enabled=True, log_every=10, eval__batch_size=64)
  md = validation_table.table_markdown(
      [_result(checkpoint=reference), _result(checkpoint=lever),
       _result(variants={"run": {"workdir": run_dir("same")}})],
      ["ref.json", "aug.json", "grid.json"])
  # Only the augmentation differs: folders, logging and evaluation settings are not training.
  assert "- `aug.json: run`: `data.augment.enabled=True`\n" in md
  assert "- `grid.json: run`: the same" in md


def test_evaluation_settings_that_differ_are_named():
  base = ("python -m merit_jax.evaluate --config=configs/evaluate.py --config.checkpoint={} "
          "--config.seeds=0,1 --config.output_dir=/tmp/{} --config.name={}")
  reference, lbfgs, grid = _result(), _result(), _result(variants={})
  reference["meta"]["command"] = base.format("/runs/a", "a", "a")
  # Another checkpoint and output folder are not an evaluation setting; the solver is.
  lbfgs["meta"]["command"] = (base.format("/runs/b", "b", "b")
                              + " --config.probe.solver=lbfgs").replace(" --config.seeds=0,1", "")
  # An ablations command is another program: its flags are not compared with evaluate's.
  grid["meta"]["command"] = "python -m merit_jax.ablations --eval_config.seeds=0"
  md = validation_table.table_markdown([reference, lbfgs, grid], ["a.json", "b.json", "g.json"])
  assert ("Evaluation settings of each file, as they differ from `a.json`'s command:\n\n"
          "- `b.json`: `--config.probe.solver=lbfgs`, `--config.seeds unset`\n") in md
  assert "g.json`: `" not in md
  same = validation_table.table_markdown([reference, reference], ["a.json", "a2.json"])
  assert "Evaluation settings" not in same


def test_no_probe_results_is_an_error():
  with pytest.raises(ValueError, match="no linear-probe results"):
    validation_table.table_markdown([{"meta": {}}], ["empty.json"])
  other = {"meta": {}, "linear_probe": {"x": {"rhythm": {"1.0": _entry({"pooled": 0.5})}}}}
  with pytest.raises(ValueError, match="share no"):
    validation_table.table_markdown([_result(), other], ["a.json", "b.json"])


def test_command_reports_a_bad_input_and_writes_no_half_page(tmp_path):
  from merit_jax import cli
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(SystemExit, match="bad.json is not valid JSON"):
    cli.read_json_inputs([str(bad)], "merit_jax.validation_table")
  with pytest.raises(SystemExit, match="missing.json does not exist"):
    cli.read_json_inputs([str(tmp_path / "missing.json")], "merit_jax.validation_table")
  page = tmp_path / "out" / "table.md"
  assert cli.write_page(str(page), "text\n") == str(page)
  assert page.read_text() == "text\n" and os.listdir(tmp_path / "out") == ["table.md"]


def test_differences_are_each_cell_below_full_labels_against_the_first_row():
  better = _result()
  better["linear_probe"]["run"]["form"]["0.1"] = _entry({"pooled": 0.77})   # 0.74 -> 0.77
  better["linear_probe"]["run"]["all"]["0.01"] = _entry({"pooled": 0.59})   # 0.61 -> 0.59
  labels, differences = validation_table.differences_below_full_labels(
      [_result(), better], ["a.json", "b.json"])
  assert labels == ["a.json: run", "b.json: run"]
  assert differences[0] == {("all", "0.01"): 0.0, ("form", "0.1"): 0.0}
  assert differences[1] == pytest.approx({("all", "0.01"): -2.0, ("form", "0.1"): 3.0})


def test_command_writes_the_page_and_the_difference_plot(tmp_path):
  for name in ("a", "b"):
    (tmp_path / f"{name}.json").write_text(json.dumps(_result()))
  out = tmp_path / "pages" / "levers.md"
  result = subprocess.run(
      [sys.executable, "-m", "merit_jax.validation_table",
       f"--inputs={tmp_path / 'a.json'},{tmp_path / 'b.json'}", f"--output={out}"],
      capture_output=True, text=True, timeout=300, cwd=REPO)
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(out.parent)) == ["levers.md", "levers.png"]
  assert (out.parent / "levers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
