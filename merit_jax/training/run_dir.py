"""Where a run's logs go, and its end-of-run summary.

A local run writes metrics.jsonl, TensorBoard events and plots into its directory. A remote
(`gs://`) run stages them in a local folder, seeded with the run's existing metrics.jsonl so a
resumed run appends to it, and copies them up at every checkpoint (`upload_logs`).
"""

from __future__ import annotations

import json
import tempfile
from typing import Any, Mapping

from etils import epath

from merit_jax import atomic_files

LOG_FILES = ("metrics.jsonl", "tensorboard", "plots")
SUMMARY_FILE = "summary.json"


def is_remote(path: str) -> bool:
  return "://" in path


def log_dir(workdir: str, main: bool) -> str:
  """The folder logs are written to with local file APIs (see module docstring)."""
  if not is_remote(workdir) or not main:
    return workdir
  staging = tempfile.mkdtemp(prefix="merit_jax_logs_")
  remote = epath.Path(workdir) / "metrics.jsonl"
  if remote.exists():
    remote.copy(epath.Path(staging) / "metrics.jsonl")
  return staging


def upload_logs(local_dir: str, workdir: str) -> None:
  """Copies staged logs to a remote run directory (no-op when they are the same folder)."""
  if local_dir == workdir:
    return
  local, remote = epath.Path(local_dir), epath.Path(workdir)
  for name in LOG_FILES:
    src = local / name
    files = [src] if src.is_file() else (list(src.rglob("*")) if src.is_dir() else [])
    for file in files:
      if file.is_file():
        target = remote / file.relative_to(local)
        target.parent.mkdir(parents=True, exist_ok=True)
        file.copy(target, overwrite=True)


def write_summary(workdir: str, summary: Mapping[str, Any]) -> None:
  atomic_files.write_text(epath.Path(workdir) / SUMMARY_FILE,
                          json.dumps(summary, indent=2, default=float))


def summary_lines(summary: Mapping[str, Any]) -> str:
  """A few human-readable lines of the run summary (summary.json has everything)."""
  def fmt(value):
    return "n/a" if value is None else f"{value:.4f}"

  lines = [f"finished step {summary['final_step']} in {summary['wall_time_s']:.0f} s; "
           f"logged training loss {fmt(summary['first_logged_loss'])} (first log) -> "
           f"{fmt(summary['last_logged_loss'])} (last log)"]
  # Validation losses on one line, then one line per evaluator ("<evaluator>/<metric>" keys).
  groups: dict[str, list[str]] = {}
  for key, value in summary["validation"].items():
    if not isinstance(value, float) or "median_rank" in key:
      continue
    if "/" in key:
      group, name = key.split("/", 1)
    elif key.endswith("loss"):
      group, name = "validation", key
    else:
      continue
    groups.setdefault(group, []).append(f"{name} {value:.4g}")
  lines += [f"{group}: " + ", ".join(items) for group, items in groups.items()]
  return "\n".join(lines)
