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


def _seeded(merit, contrastive, baseline=None, seed=0):
  """One pretraining seed's file: probe runs given as {label-subset seed: test AUROC}."""
  def entry(values):
    return {"runs": [{"seed": s, "test": {"macro_auroc": {"value": v}}}
                     for s, v in values.items()]}
  probe = {"MERIT": {"sub": {"0.1": entry(merit)}},
           "contrastive only": {"sub": {"0.1": entry(contrastive)}}}
  encoders = [{"name": "MERIT"}, {"name": "contrastive only"}]
  if baseline is not None:
    probe["random_conv"] = {"sub": {"0.1": entry(baseline)}}
    encoders.append({"name": "random_conv"})
  return {"meta": {"variants": {"MERIT": {}, "contrastive only": {}}, "tasks": ["sub"],
                   "fractions": [0.1], "encoders": encoders,
                   "command": f"python -m merit_jax.ablations --config.seed={seed}"},
          "linear_probe": probe}


def test_paired_differences_pair_by_subset_and_summarise_by_seed():
  # Seed 0: subset 0 MERIT 0.70 vs 0.65 (+5), subset 1 0.60 vs 0.70 (-10): mean -2.5 points.
  # Seed 1 lists its contrastive runs in the other order; pairing is by subset, not position:
  # +10 and +10, mean +10. Random conv (seed 0's file only) 0.50 / 0.55 against both seeds:
  # seed 0 (+20, +5) = +12.5, seed 1 (+30, +15) = +22.5.
  results = [_seeded({0: 0.70, 1: 0.60}, {0: 0.65, 1: 0.70}, {0: 0.50, 1: 0.55}, seed=0),
             _seeded({0: 0.80, 1: 0.70}, {1: 0.60, 0: 0.70}, seed=1)]
  diffs = seed_summary.paired_probe_differences(results, "MERIT", "contrastive only", "sub", "0.1")
  assert diffs == pytest.approx([-0.025, 0.10])
  diffs = seed_summary.paired_probe_differences(results, "MERIT", "random_conv", "sub", "0.1")
  assert diffs == pytest.approx([0.125, 0.225])
  md = seed_summary.summary_markdown(results, ["s0.json", "s1.json"])
  assert "| contrastive only | +3.8 [-2.5 … +10.0] 1/2 |" in md
  assert "| random_conv | +17.5 [+12.5 … +22.5] 2/2 |" in md


def test_paired_differences_pool_files_of_one_seed():
  """A seed split over two files (its subsets apart) gives one value, not two."""
  results = [_seeded({0: 0.70}, {0: 0.60}, seed=3), _seeded({1: 0.70}, {1: 0.80}, seed=3)]
  assert seed_summary.paired_probe_differences(
      results, "MERIT", "contrastive only", "sub", "0.1") == pytest.approx([0.0])


def test_a_pretrained_encoder_pairs_only_within_its_own_seed():
  """A seed's MERIT in a file without contrastive only pairs with that seed's contrastive only
  from its other file, never with another seed's (those are different encoders)."""
  seed1_merit_only = _seeded({0: 0.90}, {}, seed=1)
  del seed1_merit_only["linear_probe"]["contrastive only"]
  seed1_rest = _seeded({}, {0: 0.60}, seed=1)
  seed2_merit_only = _seeded({0: 0.80}, {}, seed=2)
  del seed2_merit_only["linear_probe"]["contrastive only"]
  results = [_seeded({0: 0.70}, {0: 0.50}, seed=0), seed1_merit_only, seed1_rest,
             seed2_merit_only]
  # Seed 0: +20; seed 1: 0.90 - 0.60 = +30; seed 2 has no contrastive only: no value.
  assert seed_summary.paired_probe_differences(
      results, "MERIT", "contrastive only", "sub", "0.1") == pytest.approx([0.20, 0.30])
