"""Training-curve plot from a run's metrics.jsonl records, checked on its pixels."""

import json

import matplotlib.image
import numpy as np

from merit_jax import plots

BLUE = np.array([0x1f, 0x77, 0xb4]) / 255  # Matplotlib's first colour: the train L_rec line.


def _curve_pixels(png):
  """(rows, cols) of the train L_rec colour in the first ("losses") of the three panels."""
  image = matplotlib.image.imread(str(png))[..., :3]
  near = np.abs(image - BLUE).max(-1) < 0.08
  near[:, image.shape[1] // 3:] = False  # The retrieval panel uses the same first colour.
  return np.nonzero(near), image


def _write_run(root, name, rec_losses):
  run = root / name
  run.mkdir()
  metrics = [{"step": 10 * i, "loss": 1.0, "rec_loss": v} for i, v in enumerate(rec_losses)]
  metrics += [{"step": 50, "split": "validation", "val_rec_loss": 0.9, "val_nce_loss": 2.5,
               "ecg_to_report_R@1": 0.1, "chance_ecg_to_report_R@1": 0.01}]
  (run / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics))
  plots.main([str(run)])
  return run / "plots" / "training_curves.png"


def test_training_curves_show_the_loss_series(tmp_path):
  falling = _write_run(tmp_path, "falling", np.linspace(3.0, 1.0, 40))
  rising = _write_run(tmp_path, "rising", np.linspace(1.0, 3.0, 40))
  slopes = []
  for png in (falling, rising):
    (rows, cols), image = _curve_pixels(png)
    assert image.std() > 0.05  # Not a blank canvas.
    assert rows.size > 200, f"the train L_rec curve is not drawn in {png}"
    # Image rows grow downwards: a falling loss has its pixels lower (larger row) on the right.
    # Medians over the curve's first and last quarter outweigh the legend's short sample line.
    left, right = np.quantile(cols, [0.25, 0.75])
    slopes.append(np.median(rows[cols >= right]) - np.median(rows[cols <= left]))
  # The curve spans the panel's height (about 300 px): half of it separates the two quarters.
  assert slopes[0] > 150 and slopes[1] < -150, slopes
  a = matplotlib.image.imread(str(falling))
  b = matplotlib.image.imread(str(rising))
  assert a.shape == b.shape and np.abs(a - b).max() > 0.5


def test_retrieval_panel_reads_old_and_new_metric_names(tmp_path):
  recall = {10: (0.1, 0.05), 20: (0.3, 0.05), 30: (0.6, 0.05)}
  new = [{"step": s, "split": "validation", "retrieval/ecg_to_report/R@1": r,
          "retrieval/chance/ecg_to_report/R@1": c} for s, (r, c) in recall.items()]
  old = [{"step": s, "split": "validation", "ecg_to_report_R@1": r,
          "chance_ecg_to_report_R@1": c} for s, (r, c) in recall.items()]
  images = []
  for name, records in (("new", new), ("old", old)):
    png = plots.plot_training_curves(str(tmp_path / f"{name}.png"), records)
    image = matplotlib.image.imread(png)[..., :3]
    images.append(image[:, 2 * image.shape[1] // 3:])  # The retrieval panel.
  near = np.abs(images[0] - BLUE).max(-1) < 0.08
  assert near.sum() > 50  # The R@1 curve is drawn...
  np.testing.assert_array_equal(images[0], images[1])  # ...the same from either name.
