"""Collects the records a build left out, with reasons, into `skipped_records.csv`."""

import collections
import csv
import os
import threading
from typing import Optional

from merit_jax import atomic_files

SKIPPED_RECORDS_CSV = "skipped_records.csv"


class SkipLog:
  """Records skipped while building a dataset.

  Usage: `add(record_id, path, reason)` for every record left out; after the build,
  `write(dataset_dir)` writes `skipped_records.csv` (columns split, record_id, path, reason)
  atomically, and `summary()` tells how many were used and why others were not.
  """

  def __init__(self):
    self._rows = []
    self._used = collections.Counter()
    self._lock = threading.Lock()

  def add(self, record_id, path, reason: str, split: str = "") -> None:
    with self._lock:
      self._rows.append({"split": split, "record_id": str(record_id),
                         "path": os.fspath(path) if path is not None else "",
                         "reason": str(reason)})

  def count_used(self, split: str = "", n: int = 1) -> None:
    with self._lock:
      self._used[split] += n

  @property
  def rows(self) -> list:
    return list(self._rows)

  @property
  def num_used(self) -> int:
    return sum(self._used.values())

  def __len__(self) -> int:
    return len(self._rows)

  @staticmethod
  def reason_category(reason: str) -> str:
    """The reason without record-specific detail (text before the first ':')."""
    return reason.split(":", 1)[0].strip()

  def counts(self) -> collections.Counter:
    return collections.Counter(self.reason_category(r["reason"]) for r in self._rows)

  def write(self, directory, filename: str = SKIPPED_RECORDS_CSV) -> str:
    """Writes the CSV into `directory` whole or not at all; returns its path."""
    path = os.path.join(os.fspath(directory), filename)
    with atomic_files.replacing(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
      writer = csv.DictWriter(f, fieldnames=["split", "record_id", "path", "reason"])
      writer.writeheader()
      for row in sorted(self._rows, key=lambda r: (r["split"], r["record_id"])):
        writer.writerow(row)
    return path

  def summary(self, name: Optional[str] = None) -> str:
    head = f"{name}: " if name else ""
    used = ", ".join(f"{k or 'all'} {v}" for k, v in sorted(self._used.items()))
    lines = [f"{head}{self.num_used} records used ({used or 'none'}), "
             f"{len(self._rows)} left out"]
    for reason, n in self.counts().most_common():
      lines.append(f"  {n:6d}  {reason}")
    return "\n".join(lines)

  def print_summary(self, name: Optional[str] = None) -> None:
    print(self.summary(name), flush=True)
