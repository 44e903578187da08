"""Cross-fitting on the validation fold: how a probe setting does on records it did not choose on.

The validation records are split in two fixed halves; the linear probe's whole protocol
(`linear_probe.run_label_fractions`: weight decay and epoch per run, feature kind per label
fraction by the mean over subsets) runs with one half as its validation fold and is scored on
the other, then the halves swap. A setting whose choices generalise scores higher on the held-out
half; one that only fits the validation records better (a superset grid can only raise the best
validation score) does not. `merit_jax.probe_grid_crossfit` compares weight-decay grids with it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from merit_jax.evaluators import linear_probe


def parse_grid(text: str) -> list[float]:
  """'0,1e-4,0.1' -> [0.0, 0.0001, 0.1]; ValueError naming the entry that is not a weight decay."""
  values = []
  for item in (s.strip() for s in str(text).split(",")):
    try:
      value = float(item)
    except ValueError:
      raise ValueError(f"grid {text!r}: {item!r} is not a number") from None
    if not np.isfinite(value) or value < 0:
      raise ValueError(f"grid {text!r}: weight decay {item} must be finite and >= 0")
    values.append(value)
  if len(set(values)) != len(values):
    raise ValueError(f"grid {text!r} repeats a value")
  return values


def validation_halves(num_records: int, seed: int = 0) -> np.ndarray:
  """A boolean mask of `num_records // 2` records (a seeded permutation): one half."""
  if num_records < 4:
    raise ValueError(f"cross-fitting needs at least 4 validation records, got {num_records}")
  return np.random.default_rng(seed).permutation(num_records) < num_records // 2


def crossfit_direction(features: dict, labels: dict, choose: np.ndarray, fractions,
                       seeds, probe_kwargs: dict) -> dict:
  """The probe protocol with validation records `choose` as its validation fold, scored on the
  other validation records.

  features: {kind: {"train": (N, D), "validation": (M, D)}}; labels: {"train", "validation"}.
  Returns {fraction: {"kind": the kind the choice half prefers (mean over subsets, as the
  evaluator picks), "held_out": mean held-out macro AUROC of that kind's runs,
  "weight_decays": each run's chosen weight decay}}. The held-out records' labels reach
  nothing but the scores.
  """
  y_val = labels["validation"]
  val_choose = lambda x: (x[choose], y_val[choose])
  val_score = lambda x: (x[~choose], y_val[~choose])
  runs_by_kind = {
      kind: linear_probe.run_label_fractions(
          (x["train"], labels["train"]), val_choose(x["validation"]), val_score(x["validation"]),
          fractions=fractions, seeds=seeds, **probe_kwargs)
      for kind, x in features.items()}
  out = {}
  for fraction in fractions:
    by_kind = {kind: runs[fraction]["runs"] for kind, runs in runs_by_kind.items()}
    chosen, _ = linear_probe.preferred_kind(by_kind)
    runs = by_kind[chosen]
    out[fraction] = {"kind": chosen,
                     "held_out": float(np.mean([r.test_metrics["macro_auroc"]["value"]
                                                for r in runs])),
                     "weight_decays": [r.hparams["weight_decay"] for r in runs]}
  return out


def crossfit_grids(features: dict, labels: dict, grids: Sequence[Sequence[float]], fractions,
                   seeds, probe_kwargs: dict, halves_seed: int = 0) -> list:
  """For each grid: {fraction: {"held_out": mean of both directions, "directions": [...]}}."""
  half = validation_halves(len(labels["validation"]), halves_seed)
  out = []
  for grid in grids:
    kwargs = dict(probe_kwargs, n_bootstrap=0,
                  grid=dict(probe_kwargs.get("grid") or {}, weight_decay=list(grid)))
    directions = [crossfit_direction(features, labels, choose, fractions, seeds, kwargs)
                  for choose in (half, ~half)]
    out.append({fraction: {"held_out": float(np.mean([d[fraction]["held_out"]
                                                      for d in directions])),
                           "directions": [d[fraction] for d in directions]}
                for fraction in fractions})
  return out
