"""Run-directory logging: metrics.jsonl, TensorBoard event files and a progress bar.

Only the first process writes; the others get no-op writers, so callers never branch on the
process index. `metrics.jsonl` holds one JSON object per logged step with at least `step` and,
for training entries, `loss`; validation entries carry `"split": "validation"` so the two
streams can be told apart in one file. A restarted run appends to the same file.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Mapping

import numpy as np


def _to_python(value: Any) -> Any:
  """Converts numpy / jax scalars to JSON-friendly floats (NaN/inf become None)."""
  if isinstance(value, (str, bool)) or value is None:
    return value
  if isinstance(value, (int, np.integer)):
    return int(value)
  try:
    value = float(np.asarray(value))
  except (TypeError, ValueError):
    return str(value)
  return value if math.isfinite(value) else None


class MetricWriter:
  """Writes scalar metrics to `workdir/metrics.jsonl` and TensorBoard event files."""

  def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
    self._enabled = enabled
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._jsonl = open(self.path, "a", encoding="utf-8")
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, Any], split: str = "train") -> dict:
    """Appends one entry; returns it as written (python scalars)."""
    entry = {"step": int(step)}
    if split != "train":
      entry["split"] = split
    entry.update({k: _to_python(v) for k, v in metrics.items()})
    if not self._enabled:
      return entry
    self._jsonl.write(json.dumps(entry) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for key, value in entry.items():
        if key in ("step", "split") or not isinstance(value, (int, float)):
          continue
        self._tb.add_scalar(f"{split}/{key}", value, int(step))
      self._tb.flush()
    return entry

  def close(self):
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_metrics(workdir: str) -> list[dict]:
  """Reads back `workdir/metrics.jsonl` (for tests and summaries)."""
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


class ProgressBar:
  """A tqdm bar with ETA over training steps; silent on non-main processes."""

  def __init__(self, total: int, initial: int = 0, enabled: bool = True, desc: str = "train"):
    self._bar = None
    if enabled:
      from tqdm import auto as tqdm_auto  # pylint: disable=g-import-not-at-top
      self._bar = tqdm_auto.tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                                 file=sys.stderr, smoothing=0.1)

  def update(self, n: int = 1, **postfix):
    if self._bar is None:
      return
    if postfix:
      self._bar.set_postfix(postfix, refresh=False)
    self._bar.update(n)

  def write(self, message: str):
    if self._bar is not None:
      self._bar.write(message)

  def close(self):
    if self._bar is not None:
      self._bar.close()
      self._bar = None
