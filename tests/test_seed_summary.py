"""seed_summary pools pretrained variants over seed files and takes baselines once."""

import numpy as np
import pytest

from merit_jax import seed_summary


def _results(offset):
  def entry(values):
    return {"runs": [{"test": {"macro_auroc": {"value": v}, "macro_f1": {"value": v / 2}}}
                     for v in values]}
  return {
      "meta": {"variants": {"MERIT": {}}, "tasks": ["rhythm"], "fractions": [0.1, 1.0],
               "encoders": [{"name": "MERIT"}, {"name": "random_init"}]},
      "linear_probe": {
          "MERIT": {"rhythm": {"0.1": entry([0.6 + offset, 0.7 + offset]),
                               "1.0": entry([0.8 + offset])}},
          "random_init": {"rhythm": {"0.1": entry([0.5, 0.55]), "1.0": entry([0.6])}}},
      "zero_shot": {"MERIT": {"rhythm": {"macro_auroc": {"value": 0.7 + offset,
                                                         "ci_low": 0.6, "ci_high": 0.8}}},
                    "random_init": {"rhythm": {"macro_auroc": {"value": 0.5}}}},
  }


def test_variants_pool_over_seeds_baselines_do_not():
  results = [_results(0.0), _results(0.1)]
  merit = seed_summary.pooled_probe(results, "MERIT", "rhythm", "0.1", "macro_auroc")
  assert sorted(merit) == pytest.approx([0.6, 0.7, 0.7, 0.8])
  md = seed_summary.summary_markdown(results, ["s0.json", "s1.json"])
  values = [0.6, 0.7, 0.7, 0.8]
  assert f"{100 * np.mean(values):.1f} ± {100 * np.std(values, ddof=1):.1f} (n=4)" in md
  assert "| random_init | 52.5 ± 3.5 (n=2)" in md  # From the first file only.
  assert "| 60.0 (n=1) |" in md  # random_init at 100 %: one run, no spread.
  assert md.count("| MERIT | s") == 2 and md.count("| random_init | s0.json") == 1


def test_header_counts_seeds_not_files():
  """A seed split over two files (its 100 % and its 1 % / 10 % probes) is one seed."""
  results = [_results(0.0), _results(0.1), _results(0.2)]
  for r, command in zip(results, ("python -m merit_jax.ablations --config.seed=0",
                                  "python -m merit_jax.ablations --config.seed=1 --x=1",
                                  "python -m merit_jax.ablations --config.seed=1")):
    r["meta"]["command"] = command
  md = seed_summary.summary_markdown(results, ["a/s0.json", "s1.json", "s1_low.json"])
  assert ("2 pretraining seed(s) in 3 file(s) (s0.json: seed 0, s1.json: seed 1, "
          "s1_low.json: seed 1).") in md
  del results[2]["meta"]["command"]
  assert "3 result files (s0.json, s1.json, s1_low.json)." in seed_summary.summary_markdown(
      results, ["s0.json", "s1.json", "s1_low.json"])

