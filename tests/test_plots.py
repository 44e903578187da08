"""Training-curve plot from a run's metrics.jsonl records."""

import json

from merit_jax import plots


def test_training_curves_png_from_metrics(tmp_path):
  metrics = [{"step": s, "loss": 3.0 - s / 100, "rec_loss": 1.0, "nce_loss": 2.0 - s / 100,
              "mi_signal_nats": 0.01 * s, "mi_text_nats": 0.02 * s} for s in range(0, 100, 10)]
  metrics += [{"step": 50, "split": "validation", "val_rec_loss": 0.9, "val_nce_loss": 2.5,
               "ecg_to_report_R@1": 0.1, "chance_ecg_to_report_R@1": 0.01}]
  run = tmp_path / "run"
  run.mkdir()
  (run / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics))
  plots.main([str(run)])
  png = run / "plots" / "training_curves.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
