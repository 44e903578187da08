"""Cross-fitted comparison of probe weight-decay grids on the validation fold alone."""

import json
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from configs import evaluate as evaluate_config
from merit_jax import probe_grid_crossfit as crossfit
from merit_jax.evaluators import grid_crossfit
from merit_jax.evaluators import linear_probe
from merit_jax.evaluators import registry
from tests import test_evaluate_zero_shot as toy

REPO = pathlib.Path(__file__).resolve().parents[1]
PROBE = dict(grid={"weight_decay": [0.0, 1e-2], "learning_rate": [1e-2]}, max_epochs=40,
             eval_every=10, patience=2, n_bootstrap=0)


def _splits(seed=0):
  """Two feature kinds: 'signal' carries the three labels, 'noise' does not."""
  rng = np.random.default_rng(seed)
  weights = rng.normal(size=(6, 3))
  out = {}
  for split, n in (("train", 240), ("validation", 120)):
    latent = rng.normal(size=(n, 6))
    labels = (latent @ weights + rng.normal(size=(n, 3)) > 0.8).astype(np.float32)
    out[split] = (latent + 0.5 * rng.normal(size=latent.shape), rng.normal(size=(n, 6)), labels)
  features = {"signal": {s: v[0] for s, v in out.items()},
              "noise": {s: v[1] for s, v in out.items()}}
  return features, {s: v[2] for s, v in out.items()}


def test_grids_parse_and_bad_entries_are_named():
  assert grid_crossfit.parse_grid("0, 1e-4,0.1") == [0.0, 1e-4, 0.1]
  for bad, word in (("0,abc", "'abc' is not a number"), ("0,-1", "must be finite"),
                    ("0.1,0.1", "repeats")):
    with pytest.raises(ValueError, match=word):
      grid_crossfit.parse_grid(bad)


def test_halves_split_the_records_in_two_fixed_disjoint_parts():
  half = grid_crossfit.validation_halves(11, seed=3)
  assert half.dtype == bool and half.sum() == 5
  np.testing.assert_array_equal(half, grid_crossfit.validation_halves(11, seed=3))
  assert not np.array_equal(half, grid_crossfit.validation_halves(11, seed=4))
  with pytest.raises(ValueError, match="at least 4"):
    grid_crossfit.validation_halves(3)


def test_held_out_score_is_the_probe_chosen_on_one_half_scored_on_the_other():
  features, labels = _splits()
  half = grid_crossfit.validation_halves(len(labels["validation"]))
  out = grid_crossfit.crossfit_direction({"signal": features["signal"]}, labels, half,
                                         (1.0,), (0,), PROBE)
  # By hand: the probe with the choice half as validation, its head applied to the other
  # half, macro AUROC by sklearn over the classes that half can score.
  x_val, y_val = features["signal"]["validation"], labels["validation"]
  probe = linear_probe.run_linear_probe(
      (features["signal"]["train"], labels["train"]), (x_val[half], y_val[half]),
      (x_val[half], y_val[half]), **PROBE)
  scores, y = probe.predict(x_val[~half]), y_val[~half]
  scorable = [c for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
  expected = np.mean([sk_metrics.roc_auc_score(y[:, c], scores[:, c]) for c in scorable])
  assert out[1.0]["held_out"] == pytest.approx(expected, abs=1e-6)
  assert out[1.0]["weight_decays"] == [probe.hparams["weight_decay"]]
  assert out[1.0]["kind"] == "signal"


def test_held_out_labels_reach_no_choice():
  features, labels = _splits(1)
  half = grid_crossfit.validation_halves(len(labels["validation"]), seed=2)
  fractions, seeds = (0.25, 1.0), (0, 1)
  before = grid_crossfit.crossfit_direction(features, labels, half, fractions, seeds, PROBE)
  shuffled = dict(labels, validation=labels["validation"].copy())
  held_out = np.flatnonzero(~half)
  shuffled["validation"][held_out] = shuffled["validation"][
      np.random.default_rng(0).permutation(held_out)]
  after = grid_crossfit.crossfit_direction(features, shuffled, half, fractions, seeds, PROBE)
  for fraction in fractions:
    assert after[fraction]["kind"] == before[fraction]["kind"] == "signal"
    assert after[fraction]["weight_decays"] == before[fraction]["weight_decays"]
  # Shuffled held-out labels are scored near chance: only the score used them.
  assert before[1.0]["held_out"] > 0.8 and abs(after[1.0]["held_out"] - 0.5) < 0.15


def test_every_grid_sees_the_same_halves_and_both_directions_count():
  features, labels = _splits(2)
  probe = dict(PROBE, grid={"learning_rate": [1e-2]})
  out = grid_crossfit.crossfit_grids(features, labels, ([0.0], [1.0], [0.0, 1.0]), (1.0,),
                                     (0,), probe, halves_seed=5)
  assert len(out) == 3
  for cell in (g[1.0] for g in out):
    assert len(cell["directions"]) == 2
    assert cell["held_out"] == pytest.approx(np.mean([d["held_out"]
                                                      for d in cell["directions"]]))
  # Here the two-value grid chooses 1.0 on both halves, so it must score exactly what the
  # grid of 1.0 alone scores: the same halves, subset and features reach every grid.
  both = out[2][1.0]["directions"]
  assert [d["weight_decays"] for d in both] == [[1.0], [1.0]]
  for alone, chosen in zip(out[1][1.0]["directions"], both):
    assert chosen["held_out"] == pytest.approx(alone["held_out"], abs=1e-6)
  assert out[0][1.0]["held_out"] != pytest.approx(out[1][1.0]["held_out"], abs=1e-3)


@pytest.fixture()
def toy_context(monkeypatch):
  monkeypatch.setattr(toy.pipeline, "label_names", lambda data_cfg: toy.TASKS)
  return registry.EvalContext(data_cfg={}, store=toy.FakeStore())


def _config():
  config = evaluate_config.get_config("quick")
  config.tasks = ("rhythm", "superdiagnostic")
  config.fractions = (0.5, 1.0)
  config.seeds = (0, 1)
  config.probe.max_epochs = 20
  config.probe.eval_every = 5
  config.probe.features = ("pooled", "projected")
  return config


def test_encoders_are_cross_fitted_per_task_and_the_page_shows_every_cell(toy_context):
  encoder = types.SimpleNamespace(
      name="toy", cache_key="toy", embed_ecg=toy._embed_ecg,  # pylint: disable=protected-access
      feature_kinds=("pooled", "projected"))
  grids = ([0.0, 1e-2], [0.0, 1e-2, 1.0])
  results = crossfit.crossfit_encoders([("runs/toy", encoder)], toy_context, _config(), grids)
  cells = results["encoders"]["runs/toy"]
  assert set(cells) == {"rhythm", "superdiagnostic"}
  assert results["meta"]["records"]["rhythm"] == {"train": 80, "validation": 50}
  for per_grid in cells.values():
    assert len(per_grid) == 2 and set(per_grid[0]) == {"0.5", "1.0"}
    for cell in per_grid[1].values():
      assert 0.0 <= cell["held_out"] <= 1.0
      assert all(wd in grids[1] for d in cell["directions"] for wd in d["weight_decays"])
  page = crossfit.page_markdown(results, "python -m merit_jax.probe_grid_crossfit (test)")
  held = 100 * cells["rhythm"][1]["1.0"]["held_out"]
  assert f"{held:.1f}" in page and "grid B − A" in page
  assert "| runs/toy | below 100 % |" in page and "| runs/toy | 100 % |" in page
  json.dumps(results)  # What the command writes beside the page.


def test_command_names_a_bad_grid_and_writes_nothing(tmp_path):
  output = tmp_path / "page.md"
  proc = subprocess.run(
      [sys.executable, "-m", "merit_jax.probe_grid_crossfit", "--config=configs/evaluate.py",
       f"--checkpoints={tmp_path}", "--grids=0,0.1", "--grids=0,x", f"--output={output}"],
      capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
  assert proc.returncode != 0
  assert "merit_jax.probe_grid_crossfit: grid '0,x': 'x' is not a number" in proc.stderr
  assert not output.exists()


def _result(label, held_out, grids=([0.0], [0.0, 1.0]), command="run"):
  """A file of this program with one encoder, one task, fractions 0.1 and 1 (held_out[g][f])."""
  cells = [{f: {"held_out": h, "directions": [{"kind": "pooled"}]}
            for f, h in zip(("0.1", "1.0"), per_grid)} for per_grid in held_out]
  return {"meta": {"grids": [list(g) for g in grids], "tasks": ["rhythm"],
                   "fractions": [0.1, 1.0], "seeds": [0], "halves_seed": 0,
                   "records": {"rhythm": {"train": 9, "validation": 8}}, "command": command},
          "encoders": {label: {"rhythm": cells}}}


def test_files_merge_into_one_page_with_every_encoder_together():
  a = _result("seed0/merit", [[0.70, 0.80], [0.74, 0.78]], command="run seed 0")
  b = _result("seed1/merit", [[0.60, 0.90], [0.61, 0.95]], command="run seed 1")
  merged = crossfit.merge_results([a, b], ["a.json", "b.json"])
  assert list(merged["encoders"]) == ["seed0/merit", "seed1/merit"]
  page = crossfit.page_markdown(merged, "combine")
  assert "run seed 0\nrun seed 1" in page
  # Every encoder together: 10 % (0.70, 0.60) -> (0.74, 0.61); every cell: four values each.
  assert "| 10 % | 65.00 | 67.50 | +2.50 |" in page
  assert "| every cell | 75.00 | 77.00 | +2.00 |" in page
  # Each encoder over its own cells: seed 0 (0.70, 0.80) -> (0.74, 0.78).
  assert "| seed0/merit | every cell | 75.00 | 76.00 | +1.00 |" in page
  with pytest.raises(ValueError, match="b.json: its grids"):
    crossfit.merge_results([a, _result("x", [[0.5, 0.5]] * 2, grids=([0.0], [1.0]))],
                           ["a.json", "b.json"])
  with pytest.raises(ValueError, match="'seed0/merit' is already"):
    crossfit.merge_results([a, a], ["a.json", "a2.json"])
