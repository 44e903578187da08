"""merit_jax.reporting: the markdown of checked-in results and the pixels of the figures."""

import json
import pathlib

import matplotlib.image
import numpy as np
import pytest

from merit_jax.reporting import markdown
from merit_jax.reporting import plots
from merit_jax.reporting import writer

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
# Result files written by the current markdown writer (older ones predate its last sections).
CURRENT = ("ablations_minilm_seed0", "ablations_minilm_seed1", "ablations_minilm_patch25_seed0",
           "capacity_w192_d6", "merit_gemma_l9_zero_shot", "ablations_minilm_lambda3_paired_seed0",
           "ablations_minilm_lambda3_paired_seed1")
ABLATIONS_TITLE = "Ablations: MERIT vs its ablations vs baselines"
C0, C1 = np.array([0x1f, 0x77, 0xb4]) / 255, np.array([0xff, 0x7f, 0x0e]) / 255


@pytest.mark.parametrize("name", CURRENT)
def test_markdown_regenerates_the_checked_in_tables(name):
  results = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
  command = results["meta"]["command"]
  ablation = command.startswith("python -m merit_jax.ablations")
  extra = ""
  if "paired_vs_contrastive_only" in results:
    extra += markdown.paired_markdown(results["paired_vs_contrastive_only"])
  if "lambda_selection" in results["meta"]:
    extra += markdown.selection_markdown(results["meta"]["lambda_selection"])
  text = markdown.results_markdown(results, ABLATIONS_TITLE if ablation else name, command)
  assert text + extra == (RESULTS / f"{name}.md").read_text(encoding="utf-8")


def test_zero_shot_per_class_table_counts_test_positives_and_marks_unscored_classes():
  # 4 test records: A has 3 positives, B one, C none (so it has no AUROC).
  labels = [[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0]]
  wide = [f"K{i}" for i in range(markdown.PER_CLASS_MAX_CLASSES + 1)]
  results = {"meta": {"tasks": ["rhythm", "all"],
                      "classes": {"rhythm": ["A", "B", "C"], "all": wide},
                      "test_labels": {"rhythm": labels, "all": [[0] * len(wide)] * 4}},
             "zero_shot": {"enc": {
                 "rhythm": {"macro_auroc": {"value": 0.6}, "per_class_auroc": [0.75, 0.125,
                                                                                 float("nan")]},
                 "all": {"macro_auroc": {"value": 0.5}, "per_class_auroc": [0.5] * len(wide)}}}}
  lines = markdown._per_class_markdown(results["zero_shot"], results["meta"], ["rhythm", "all"])
  assert "| encoder | A (n=3) | B (n=1) | C (n=0) |" in lines
  assert "| enc | 75.0 | 12.5 | – |" in lines
  # A task wider than the limit stays in the JSON only.
  assert "rhythm:" in lines and "all:" not in lines and not any("K0" in x for x in lines)
  assert markdown._per_class_markdown({"enc": {"all": {}}}, results["meta"], ["all"]) == []


def _pixels(path, colour):
  image = matplotlib.image.imread(str(path))[..., :3]
  return np.all(np.abs(image - colour) < 0.08, axis=-1)


def _probe_entry(values):
  return {f: {"macro_auroc": {"mean": v, "std": 0.0}} for f, v in values.items()}


def test_fraction_plot_draws_each_encoder_at_its_auroc(tmp_path):
  results = {"meta": {"tasks": ["rhythm"]}, "linear_probe": {
      "high": {"rhythm": _probe_entry({"0.01": 0.80, "0.1": 0.85, "1.0": 0.90})},
      "low": {"rhythm": _probe_entry({"0.01": 0.55, "0.1": 0.60, "1.0": 0.65})}}}
  path = plots.plot_fractions(results, tmp_path / "f.png")
  high, low = _pixels(path, C0), _pixels(path, C1)
  assert high.sum() > 50 and low.sum() > 50
  # Image rows grow downwards: the higher AUROC is drawn above, and both lines rise.
  assert np.flatnonzero(high.any(1)).mean() < np.flatnonzero(low.any(1)).mean()
  cols = np.flatnonzero(high.any(0))
  assert np.flatnonzero(high[:, cols[:4]].any(1)).mean() > \
      np.flatnonzero(high[:, cols[-4:]].any(1)).mean()
  assert plots.plot_fractions({"meta": {"tasks": []}}, tmp_path / "none.png") is None


def test_results_json_keeps_number_lists_on_one_line():
  text = writer.results_json({"a": {"b": [1, 2.5, float("nan")], "c": [{"d": 1}]}})
  assert "\"b\": [1, 2.5, NaN]" in text and json.loads(text)["a"]["c"] == [{"d": 1}]


def test_grid_edge_table_counts_runs_at_either_end_of_their_grid():
  def run(chosen, grid=(0.0, 1e-3, 1e-1)):
    return {"hparams": {"weight_decay": chosen}, "grid": [{"weight_decay": g} for g in grid]}
  section = {"enc": {"sub": {"0.01": {"runs": [run(1e-1), run(1e-1), run(1e-3), run(0.0)]},
                             "1.0": {"runs": [run(1e-1, grid=(1e-2,))]}}}}
  # Four runs with a grid of two non-zero values (the single-value grid has no edge): two at
  # the largest, one at the smallest non-zero; the unregularised choice is at neither.
  assert markdown._grid_edge_markdown(section)[4] == "| enc | 4 | 2 | 1 |"
  assert markdown._grid_edge_markdown({"enc": {"sub": {"1.0": {"runs": [
      run(1e-2, grid=(1e-2,))]}}}}) == []

