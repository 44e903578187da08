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


def _drop_rows_after(path: str, step: int) -> None:
  """Rewrites a metrics.jsonl without the rows of steps > `step` (atomically)."""
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:
      continue  # The torn last line of a killed run: nothing readable is lost.
    if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] > step:
      continue
    kept.append(line if line.endswith("\n") else line + "\n")
  if len(kept) == len(lines):
    return
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(kept)
  os.replace(tmp, path)


class MetricWriter:
  """Writes scalar metrics to `workdir/metrics.jsonl` and TensorBoard event files."""

  def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True,
               resume_step: int | None = None):
    """`resume_step`: the step a run restarts from. Rows logged after it (by the run that
    died before its next checkpoint) are dropped, since the resumed run logs those steps
    again; without this, metrics.jsonl would hold them twice and curves would step back."""
    self._enabled = enabled
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    if resume_step is not None and os.path.exists(self.path):
      _drop_rows_after(self.path, int(resume_step))
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
