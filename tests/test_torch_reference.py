"""benchmarks/torch_reference.py: the harness's MAE shapes and FLOPs; its step runs where torch is."""

import json

import pytest

from benchmarks import torch_reference
from benchmarks import train_step as bench


def test_shapes_and_flops_are_the_harness_mae_step():
  assert torch_reference.shapes("base", 100) == dict(
      leads=12, samples=1000, patch=50, tokens=240, visible=60, width=768, depth=12, heads=12,
      mlp=3072, decoder=(256, 4, 4))
  assert torch_reference.shapes("small", 500)["patch"] == 250
  config = bench.make_config("base", 100, "mae", "masked", False, "float32", 32)
  flops = torch_reference.mae_flops_per_step("base", 100, 32)
  assert flops == bench.analytic_flops_per_step(config)
  assert flops == pytest.approx(1162.09e9, rel=1e-5)  # The count benchmarks/RESULTS.md quotes.


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
