"""benchmarks/torch_reference.py: its FLOP count is the harness's; its step runs where torch is."""

import json

import pytest

from benchmarks import torch_reference
from benchmarks import train_step as bench


@pytest.mark.parametrize("size,rate,batch", [("tiny", 100, 4), ("small", 500, 8),
                                             ("base", 100, 32)])
def test_flops_equal_the_harness_count_for_the_mae_step(size, rate, batch):
  config = bench.make_config(size, rate, "mae", "masked", False, "float32", batch)
  assert torch_reference.mae_flops_per_step(size, rate, batch) == pytest.approx(
      bench.analytic_flops_per_step(config), rel=1e-12)
  num_tokens, visible = bench.token_counts(config)
  shapes = torch_reference.shapes(size, rate)
  assert (shapes["tokens"], shapes["visible"]) == (num_tokens, visible)
  assert (shapes["width"], shapes["depth"], shapes["mlp"]) == bench.encoder_dims(config)
  decoder = config.model.decoder
  assert torch_reference.DECODER == (decoder.width, decoder.depth, decoder.heads)


def test_unknown_size_is_named():
  with pytest.raises(ValueError, match="huge"):
    torch_reference.shapes("huge", 100)


def test_tiny_pytorch_step_gives_well_formed_numbers(capsys):
  pytest.importorskip("torch")
  torch_reference.main(["--sizes=tiny", "--batch_sizes=2", "--steps=1", "--json"])
  (record,) = json.loads(capsys.readouterr().out)
  assert record["framework"] == "pytorch" and record["model"] == "tiny"
  assert record["loss_finite"]
  assert record["step_time_s"] > 0 and record["peak_flops_per_s"] > 0
  assert record["fraction_of_peak"] == pytest.approx(
      record["flops_per_step"] / record["step_time_s"] / record["peak_flops_per_s"])
