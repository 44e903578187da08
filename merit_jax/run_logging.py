"""Run-directory logging: metrics.jsonl, TensorBoard event files and a progress bar.

`MetricWriter` is the one writer of training, evaluation and generation: TensorBoard and the
console through clu's metric writers, and `metrics.jsonl`, the plain-text record, with one JSON
object per logged step holding at least `step` (and `loss` for training entries); validation
entries carry `"split": "validation"` so the two streams can be told apart in one file. A
restarted run appends to the same file. Only the first process writes files; the others get
writers that only log, so callers never branch on the process index.
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
  """Writes scalars to `workdir/metrics.jsonl`, TensorBoard (`workdir/tensorboard`) and the log.

  TensorBoard and the console go through clu's default writer; metrics.jsonl is the plain-text
  record that tools and tests read back. A disabled writer (any process but the first) only
  logs to its own console.
  """

  def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True,
               resume_step: int | None = None):
    """`resume_step`: the step a run restarts from. Rows logged after it (by the run that
    died before its next checkpoint) are dropped, since the resumed run logs those steps
    again; without this, metrics.jsonl would hold them twice and curves would step back."""
    self._enabled = enabled
    self._jsonl = None
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    tb_dir = os.path.join(workdir, "tensorboard") if enabled and tensorboard else None
    self._clu = metric_writers.create_default_writer(
        tb_dir, just_logging=tb_dir is None, asynchronous=False)
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    if resume_step is not None and os.path.exists(self.path):
      _drop_rows_after(self.path, int(resume_step))
    self._jsonl = open(self.path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, Any], split: str = "train") -> dict:
    """Appends one entry (TensorBoard tags `<split>/<key>`); returns it as written."""
    entry = {"step": int(step)}
    if split != "train":
      entry["split"] = split
    entry.update({k: _to_python(v) for k, v in scalars.items()})
    if self._jsonl is not None:
      self._jsonl.write(json.dumps(entry) + "\n")
      self._jsonl.flush()
    numbers = {f"{split}/{k}": v for k, v in entry.items()
               if k not in ("step", "split") and isinstance(v, (int, float))
               and not isinstance(v, bool)}
    if numbers:
      self._clu.write_scalars(int(step), numbers)
      self._clu.flush()
    return entry

  def close(self):
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._clu is not None:
      self._clu.close()
      self._clu = None


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
