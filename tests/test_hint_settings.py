"""Tests for choosing the statement-hint classifier's settings on validation
(merit_jax/report_gen/hint_settings.py): scores against a hand count on separable data, the
cached run files it reads, and the page it writes."""

import json
import subprocess
import sys

import numpy as np
import pytest

from merit_jax.report_gen import data as data_lib
from merit_jax.report_gen import hint_settings


def _records(rng, n):
  """Features whose first channel separates AFIB by a wide margin; SR on every record."""
  afib = rng.random(n) < 0.3
  x = rng.normal(scale=0.1, size=(n, 4))
  x[:, 0] += np.where(afib, 2.0, -2.0)
  return x.astype(np.float32), [["SR", "AFIB"] if a else ["SR"] for a in afib]


def test_scores_match_a_hand_count():
  rng = np.random.default_rng(0)
  xt, ct = _records(rng, 200)
  xv, cv = _records(rng, 60)
  rows = hint_settings.score_settings({"features": xt, "codes": ct}, {"features": xv, "codes": cv},
                                      [(0.3, 1.0), (1.01, 1.0)], folds=5, min_positives=5, seed=0)
  # Setting 1: AFIB is hinted exactly (SR, on every record, is never hinted), so the hints
  # get every AFIB right and miss SR on every record: micro 2a / (2a + n), macro (1 + 0) / 2.
  a, n = sum("AFIB" in c for c in cv), len(cv)
  assert rows[0]["statements"] == 1
  assert rows[0]["micro_f1"] == pytest.approx(2 * a / (2 * a + n))
  assert rows[0]["macro_f1"] == pytest.approx(0.5)
  # Setting 2: no statement reaches an out-of-fold F1 above 1, nothing is hinted.
  assert rows[1]["statements"] == 0 and rows[1]["micro_f1"] == 0.0
  assert hint_settings.best_setting(rows) == 0


def _fake_run(directory, rng, stats):
  directory.mkdir()
  for split, n in (("train", 200), ("validation", 60)):
    x, codes = _records(rng, n)
    data_lib.save_features(str(directory / f"features_{split}.npz"),
                           {"features": x, "codes": codes, "ecg_id": np.arange(n),
                            "source": np.zeros(n, np.int32), "reports": [""] * n})
  config = {"seed": 0, "statement_hints": {"folds": 5, "min_positives": 5}}
  (directory / "generate_config.json").write_text(
      json.dumps({"config": config, "feature_stats": stats}), encoding="utf-8")


def test_reads_the_runs_standardisation(tmp_path):
  stats = {"mean": [1.0, 0, 0, 0], "std": [2.0, 1, 1, 1]}
  _fake_run(tmp_path / "run", np.random.default_rng(1), stats)
  cached = np.load(tmp_path / "run" / "features_train.npz", allow_pickle=True)
  run = hint_settings.read_run(str(tmp_path / "run"), "validation")
  np.testing.assert_allclose(run["train"]["features"][:, 0],
                             (cached["features"][:, 0] - 1.0) / 2.0, rtol=1e-6)
  assert run["train"]["codes"][0] in (["SR"], ["SR", "AFIB"])
  assert len(run["split"]["codes"]) == 60
  assert (run["folds"], run["min_positives"], run["seed"]) == (5, 5, 0)
  with pytest.raises(FileNotFoundError, match="no features_test.npz"):
    hint_settings.read_run(str(tmp_path / "run"), "test")


def test_command_writes_the_page(tmp_path):
  _fake_run(tmp_path / "merit", np.random.default_rng(2), None)
  _fake_run(tmp_path / "random", np.random.default_rng(3), None)
  out = tmp_path / "page.md"
  done = subprocess.run(
      [sys.executable, "-m", "merit_jax.report_gen.hint_settings",
       f"--runs={tmp_path / 'merit'},{tmp_path / 'random'}", "--min_f1=0.3,1.01", "--l2=1",
       f"--output={out}"], capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr
  page = out.read_text(encoding="utf-8")
  rows = [line for line in page.splitlines() if line.startswith("| ") and "min_f1" not in line]
  assert len(rows) == 4
  assert rows[0].startswith("| **merit** |")  # The first run's pick, in bold.
  assert not any("**" in r for r in rows[1:])
  done = subprocess.run(
      [sys.executable, "-m", "merit_jax.report_gen.hint_settings", f"--runs={tmp_path / 'x'}",
       "--min_f1=a", f"--output={out}"], capture_output=True, text=True, check=False)
  assert done.returncode != 0 and "comma-separated numbers" in done.stderr
