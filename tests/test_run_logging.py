"""MetricWriter on resume: the steps a killed run logged past its checkpoint are not kept twice."""

import json

from merit_jax import run_logging


def _steps(path):
  with open(path, encoding="utf-8") as f:
    return [(row["step"], row.get("split", "train")) for row in map(json.loads, f)]


def test_resume_drops_rows_past_the_restored_step(tmp_path):
  writer = run_logging.MetricWriter(str(tmp_path), tensorboard=False)
  for step in (10, 20, 30, 40):
    writer.write(step, {"loss": 1.0 / step})
  writer.write(20, {"val_loss": 0.5}, split="validation")
  writer.close()
  with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
    f.write('{"step": 50, "lo')  # Killed mid-write.

  # Restored from the step-20 checkpoint: steps 30 and 40 will be logged again.
  writer = run_logging.MetricWriter(str(tmp_path), tensorboard=False, resume_step=20)
  for step in (30, 40):
    writer.write(step, {"loss": 0.1})
  writer.close()
  assert _steps(tmp_path / "metrics.jsonl") == [
      (10, "train"), (20, "train"), (20, "validation"), (30, "train"), (40, "train")]


def test_fresh_writer_appends(tmp_path):
  for _ in range(2):
    writer = run_logging.MetricWriter(str(tmp_path), tensorboard=False)
    writer.write(1, {"loss": 1.0})
    writer.close()
  assert _steps(tmp_path / "metrics.jsonl") == [(1, "train"), (1, "train")]
