"""MetricWriter: resume drops replayed rows; scalars reach metrics.jsonl and TensorBoard."""

import json

from merit_jax import run_logging


def _steps(path):
  with open(path, encoding="utf-8") as f:
    return [(row["step"], row.get("split", "train")) for row in map(json.loads, f)]


def test_resume_drops_rows_past_the_restored_step(tmp_path):
  writer = run_logging.MetricWriter(str(tmp_path), tensorboard=False)
  for step in (10, 20, 30, 40):
    writer.write_scalars(step, {"loss": 1.0 / step})
  writer.write_scalars(20, {"val_loss": 0.5}, split="validation")
  writer.close()
  with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
    f.write('{"step": 50, "lo')  # Killed mid-write.

  # Restored from the step-20 checkpoint: steps 30 and 40 will be logged again.
  writer = run_logging.MetricWriter(str(tmp_path), tensorboard=False, resume_step=20)
  for step in (30, 40):
    writer.write_scalars(step, {"loss": 0.1})
  writer.close()
  assert _steps(tmp_path / "metrics.jsonl") == [
      (10, "train"), (20, "train"), (20, "validation"), (30, "train"), (40, "train")]


def test_fresh_writer_appends(tmp_path):
  for _ in range(2):
    writer = run_logging.MetricWriter(str(tmp_path), tensorboard=False)
    writer.write_scalars(1, {"loss": 1.0})
    writer.close()
  assert _steps(tmp_path / "metrics.jsonl") == [(1, "train"), (1, "train")]


def test_tensorboard_events_hold_the_scalars(tmp_path):
  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util
  writer = run_logging.MetricWriter(str(tmp_path))
  writer.write_scalars(2, {"loss": 1.5, "note": "text", "bad": float("nan")})
  writer.write_scalars(4, {"loss": 0.25})
  writer.write_scalars(4, {"val_loss": 0.75}, split="validation")
  writer.close()
  events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
  events.Reload()
  # clu writes TF2 summaries: scalars arrive as 0-d tensors.
  assert sorted(events.Tags()["tensors"]) == ["train/loss", "validation/val_loss"]

  def series(tag):
    return [(p.step, float(tensor_util.make_ndarray(p.tensor_proto))) for p in events.Tensors(tag)]

  assert series("train/loss") == [(2, 1.5), (4, 0.25)]
  assert series("validation/val_loss") == [(4, 0.75)]
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl", encoding="utf-8")]
  assert rows[0] == {"step": 2, "loss": 1.5, "note": "text", "bad": None}


def test_disabled_writer_writes_no_file(tmp_path):
  writer = run_logging.MetricWriter(str(tmp_path / "run"), enabled=False)
  entry = writer.write_scalars(3, {"loss": 2.0})
  writer.close()
  assert entry == {"step": 3, "loss": 2.0}
  assert not (tmp_path / "run").exists()
