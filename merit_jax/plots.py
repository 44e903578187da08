"""Training plots: reconstructions of validation ECGs, and a run's training curves.

`plot_reconstructions` draws original vs reconstructed leads for a few validation ECGs, a
visual check that the masked-modelling branch learns morphology rather than the mean: masked
patches are shaded, so one sees whether the model fills gaps it could not see.
"""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # Files only; never needs a display.
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top

LEAD_NAMES = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def plot_reconstructions(path: str, originals: np.ndarray, reconstructions: np.ndarray,
                         patch_mask: np.ndarray | None = None, patch_size: int | None = None,
                         sample_rate: float = 100.0, titles: Sequence[str] | None = None,
                         lead_names: Sequence[str] = LEAD_NAMES) -> str:
  """Writes a PNG grid: one column per ECG, one row per lead.

  Args:
    path: output PNG path (parent folders are created).
    originals: (n, leads, samples) model inputs (preprocessed).
    reconstructions: (n, leads, samples) decoder output in the same units as `originals`.
    patch_mask: optional (n, leads, patches) with 1 where a patch was masked (hidden).
    patch_size: samples per patch (needed with `patch_mask`).
    sample_rate: Hz, for the time axis.
    titles: optional column titles.
    lead_names: row labels.

  Returns:
    The written path.
  """
  originals = np.asarray(originals, np.float32)
  reconstructions = np.asarray(reconstructions, np.float32)
  if originals.shape != reconstructions.shape or originals.ndim != 3:
    raise ValueError(f"originals {originals.shape} and reconstructions {reconstructions.shape} "
                     "must both be (n, leads, samples)")
  n, leads, samples = originals.shape
  t = np.arange(samples) / float(sample_rate)
  fig, axes = plt.subplots(leads, n, figsize=(4.0 * n, 0.9 * leads), sharex=True,
                           squeeze=False)
  for j in range(n):
    for i in range(leads):
      ax = axes[i, j]
      if patch_mask is not None and patch_size:
        for p in np.flatnonzero(np.asarray(patch_mask)[j, i]):
          ax.axvspan(p * patch_size / sample_rate, (p + 1) * patch_size / sample_rate,
                     color="0.9", lw=0)
      ax.plot(t, originals[j, i], color="k", lw=0.6, label="original")
      ax.plot(t, reconstructions[j, i], color="tab:red", lw=0.6, alpha=0.8,
              label="reconstruction")
      ax.set_yticks([])
      if j == 0:
        ax.set_ylabel(lead_names[i] if i < len(lead_names) else str(i), rotation=0,
                      labelpad=14, fontsize=7)
    if titles is not None:
      axes[0, j].set_title(titles[j], fontsize=8)
  axes[-1, 0].set_xlabel("time (s); shaded = masked patches")
  axes[0, -1].legend(loc="upper right", fontsize=6)
  fig.tight_layout(h_pad=0.1)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


# Panels of the training-curve figure: (title, [(metrics.jsonl keys, label)], y label). A
# series reads the first of its keys a record has: the retrieval evaluator's scalars, or the
# names that runs logged before evaluators were plug-ins.
_CURVE_PANELS = (
    ("losses", [(("rec_loss",), "train L_rec"), (("val_rec_loss",), "val L_rec"),
                (("nce_loss",), "train L_NCE"), (("val_nce_loss",), "val L_NCE")], "loss"),
    ("MI lower bounds", [(("mi_signal_nats",), "signal: -1/2 log MSE"),
                         (("mi_text_nats",), "text: log N - L_NCE")], "nats"),
    ("validation retrieval",
     [(("retrieval/ecg_to_report/R@1", "ecg_to_report_R@1"), "ECG->report R@1"),
      (("retrieval/chance/ecg_to_report/R@1", "chance_ecg_to_report_R@1"), "chance R@1"),
      (("retrieval/ecg_to_report/R@5", "ecg_to_report_R@5"), "ECG->report R@5"),
      (("retrieval/chance/ecg_to_report/R@5", "chance_ecg_to_report_R@5"), "chance R@5")],
     "recall"),
)


def _series(metrics: Sequence[dict], keys: Sequence[str]) -> list[tuple[int, float]]:
  points = []
  for m in metrics:
    key = next((k for k in keys if m.get(k) is not None), None)
    if key is not None:
      points.append((m["step"], m[key]))
  return points


def plot_training_curves(path: str, metrics: Sequence[dict]) -> str:
  """Writes a PNG of both losses, both MI bounds and validation retrieval against steps.

  Args:
    path: output PNG path (its folder is created).
    metrics: the records of a run's metrics.jsonl (train and validation lines).

  Returns:
    `path`.
  """
  fig, axes = plt.subplots(1, len(_CURVE_PANELS), figsize=(5.5 * len(_CURVE_PANELS), 4))
  for ax, (title, series, ylabel) in zip(axes, _CURVE_PANELS):
    for keys, label in series:
      points = _series(metrics, keys)
      if points:
        steps, values = zip(*points)
        style = "--" if label.startswith("chance") else ("-o" if len(points) < 30 else "-")
        ax.plot(steps, values, style, label=label, markersize=3)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def main(argv: Sequence[str] | None = None) -> None:
  """`python -m merit_jax.plots WORKDIR [OUT.png]`: training curves of a run."""
  import sys  # pylint: disable=g-import-not-at-top
  from merit_jax import run_logging  # pylint: disable=g-import-not-at-top
  args = list(sys.argv[1:] if argv is None else argv)
  if not args or len(args) > 2:
    raise SystemExit("usage: python -m merit_jax.plots WORKDIR [OUT.png]")
  workdir = args[0]
  out = args[1] if len(args) == 2 else os.path.join(workdir, "plots", "training_curves.png")
  print(plot_training_curves(out, run_logging.read_metrics(workdir)))


if __name__ == "__main__":
  main()
