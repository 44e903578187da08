"""Figures of evaluation results: test AUROC against label fraction, degradation curves, and
validation differences between pretraining runs. Each PNG is written whole or not at all."""

from __future__ import annotations

import pathlib
from typing import Optional

from merit_jax import atomic_files


def _save(fig, path) -> pathlib.Path:
  """Writes `fig` as a PNG at `path` and closes it."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  with atomic_files.replacing(path, suffix=".png") as tmp:
    fig.savefig(tmp, dpi=100)
  plt.close(fig)
  return path


def _save_auroc_figure(fig, axes, path) -> pathlib.Path:
  """Labels a grid of test-AUROC subplots, writes it as a PNG and closes the figure."""
  axes[0][0].set_ylabel("test macro AUROC (%)")
  axes[0][-1].legend(fontsize=7)
  fig.tight_layout()
  return _save(fig, path)


def plot_fractions(results: dict, path) -> Optional[pathlib.Path]:
  """AUROC against label fraction, one subplot per task, one line per encoder."""
  if "linear_probe" not in results:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  tasks = results["meta"]["tasks"]
  fig, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks), 3.2), squeeze=False)
  for ax, task in zip(axes[0], tasks):
    for encoder, per_task in results["linear_probe"].items():
      entry = per_task.get(task)
      if not entry:
        continue
      fractions = sorted(entry, key=float)
      means = [100 * entry[f]["macro_auroc"]["mean"] for f in fractions]
      stds = [100 * entry[f]["macro_auroc"]["std"] for f in fractions]
      ax.errorbar([100 * float(f) for f in fractions], means, yerr=stds, marker="o",
                  capsize=3, label=encoder)
    ax.set_xscale("log")
    ax.set_xlabel("label fraction (%)")
    ax.set_title(task, fontsize=9)
  return _save_auroc_figure(fig, axes, path)


def plot_shift(results: dict, path) -> Optional[pathlib.Path]:
  """Degradation curves: one row per task, one subplot per corruption, a line per encoder."""
  if "shift" not in results or not any(results["shift"].values()):
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  tasks = sorted({t for per_task in results["shift"].values() for t in per_task})
  names = [c["corruption"] for c in next(
      per_task[t] for per_task in results["shift"].values() for t in per_task)]
  fig, axes = plt.subplots(len(tasks), len(names), figsize=(3 * len(names), 2.8 * len(tasks)),
                           squeeze=False)
  for row, task in enumerate(tasks):
    for col, name in enumerate(names):
      ax = axes[row][col]
      for encoder, per_task in results["shift"].items():
        for curve in per_task.get(task, []):
          if curve["corruption"] != name:
            continue
          ys = [100 * curve["clean"]["macro_auroc"]] + [100 * v["macro_auroc"]
                                                        for v in curve["values"]]
          ax.plot(range(len(ys)), ys, marker="o", label=encoder)
          ax.set_xticks(range(len(ys)))
          ax.set_xticklabels(["clean"] + [str(s) for s in curve["severities"]], fontsize=7)
          ax.set_xlabel(curve["unit"], fontsize=8)
      ax.set_title(f"{task}: {name}", fontsize=8)
  return _save_auroc_figure(fig, axes, path)


def plot_validation_differences(labels: list, differences: list, path) -> pathlib.Path:
  """One line per run (`labels`): a small dot per cell of `differences` (row minus the first
  row, AUROC points) and a large one at their mean; the first row is the zero line."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(labels) + 1.4))
  for y, cells in enumerate(differences):
    values = list(cells.values())
    ax.scatter(values, [y] * len(values), s=14, color="0.55", zorder=2)
    ax.scatter([sum(values) / len(values)], [y], s=70, color="C0", zorder=3)
  ax.axvline(0.0, color="0.3", linewidth=0.8)
  ax.set_yticks(range(len(labels)))
  ax.set_yticklabels(labels, fontsize=7)
  ax.invert_yaxis()
  ax.set_xlabel("validation macro AUROC minus the first row's (points)", fontsize=8)
  # Two lines: long run labels push the axes right, and a one-line title then runs off the
  # figure's right edge.
  ax.set_title("grey: each cell below 100 % labels\nblue: their mean (the rule's difference)",
               fontsize=8)
  fig.tight_layout()
  return _save(fig, path)
