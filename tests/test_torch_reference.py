"""benchmarks/torch_reference.py and compare_frameworks.py: the MAE step's shapes and FLOPs (hand
counted), the JAX/PyTorch pairing and its ratio; the PyTorch step itself runs where torch is."""

import json
import sys
import types

import pytest

from benchmarks import compare_frameworks
from benchmarks import torch_reference


def hand_counted_mae_flops(width: int, depth: int, batch: int) -> float:
  """FLOPs of one MAE train step, matmul by matmul: 2 * m * k * n each, backward = 2x forward.

  100 Hz: 12 leads x 1,000 samples in 50-sample patches = 240 tokens, 60 of them visible
  (75 % masked). Encoder blocks see the 60 visible tokens (MLP 4x wide); the decoder (256 wide,
  4 blocks, MLP 1,024) sees all 240. Attention: Q K^T and weights x V over all heads together
  (heads x head_dim = width).
  """
  mm = lambda m, k, n: 2 * m * k * n  # noqa: E731
  encoder_block = (4 * mm(60, width, width)                      # q, k, v, out projections
                   + mm(60, width, 60) + mm(60, 60, width)       # Q K^T, weights x V
                   + mm(60, width, 4 * width) + mm(60, 4 * width, width))  # MLP
  decoder_block = (4 * mm(240, 256, 256)
                   + mm(240, 256, 240) + mm(240, 240, 256)
                   + mm(240, 256, 1024) + mm(240, 1024, 256))
  forward = (mm(60, 50, width)          # patch embedding of the visible patches
             + depth * encoder_block
             + mm(60, width, 256)       # encoder width -> decoder width
             + 4 * decoder_block
             + mm(240, 256, 50))        # the prediction head, on every token
  return 3.0 * forward * batch


def test_shapes_are_the_harness_mae_step():
  assert torch_reference.shapes("base", 100) == dict(
      leads=12, samples=1000, patch=50, tokens=240, visible=60, width=768, depth=12, heads=12,
      mlp=3072, decoder=(256, 4, 4))
  assert torch_reference.shapes("tiny", 100) == dict(
      leads=12, samples=1000, patch=50, tokens=240, visible=60, width=192, depth=12, heads=3,
      mlp=768, decoder=(256, 4, 4))
  assert torch_reference.shapes("small", 500)["patch"] == 250


@pytest.mark.parametrize("size,width,batch", [("tiny", 192, 2), ("small", 384, 8),
                                              ("base", 768, 32)])
def test_flops_per_step_match_a_hand_count(size, width, batch):
  expected = hand_counted_mae_flops(width, depth=12, batch=batch)
  assert torch_reference.mae_flops_per_step(size, 100, batch) == pytest.approx(expected,
                                                                              rel=1e-12)


def test_base_hand_count_is_the_figure_results_quotes():
  # benchmarks/RESULTS.md quotes 1,162 GFLOP for the base MAE step at batch 32.
  assert hand_counted_mae_flops(768, 12, 32) == pytest.approx(1162.09e9, rel=1e-5)


def test_unknown_size_is_named():
  with pytest.raises(ValueError, match="huge"):
    torch_reference.shapes("huge", 100)


class FakeClock:
  """A clock that the fake steps advance by their own step time."""

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now

  def side(self, name, step_times, peak):
    times = iter(step_times)

    def step():
      self.now += next(times)
      return 0.5
    return compare_frameworks.Side(name, step, lambda: peak)


def test_pairs_alternate_and_give_the_ratio_of_medians():
  clock = FakeClock()
  # Three timed steps per half; medians: JAX 2.0 then 4.0 s, PyTorch 3.0 then 3.0 s.
  jax_side = clock.side("jax", [2.0, 1.0, 9.0, 4.0, 4.0, 5.0], peak=100.0)
  torch_side = clock.side("pytorch", [3.0, 3.0, 3.0, 1.0, 3.0, 8.0], peak=50.0)
  seen = []
  records = compare_frameworks.run_pairs(jax_side, torch_side, pairs=2, steps=3, flops=60.0,
                                         clock=clock, pause_s=0.0, report=seen.append)
  assert seen == records and [r["pair"] for r in records] == [1, 2]
  assert [(r["jax_step_s"], r["pytorch_step_s"]) for r in records] == [(2.0, 3.0), (4.0, 3.0)]
  assert [r["ratio"] for r in records] == [1.5, 0.75]
  assert records[0]["jax_step_min_s"] == 1.0 and records[1]["pytorch_step_min_s"] == 1.0
  # 60 FLOPs in 2 s = 30 FLOP/s of a 100 FLOP/s peak; in 3 s = 20 of 50.
  assert records[0]["jax_fraction_of_peak"] == pytest.approx(0.3)
  assert records[0]["pytorch_fraction_of_peak"] == pytest.approx(0.4)
  assert records[0]["jax_loss_finite"] and records[0]["pytorch_loss_finite"]


def test_without_torch_the_comparison_exits_with_one_line(monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError.
  with pytest.raises(SystemExit) as exit_info:
    compare_frameworks.main(["--size=tiny", "--batch_size=2", "--pairs=1", "--steps=1"])
  message = str(exit_info.value.code)
  assert "\n" not in message and "PyTorch is not installed" in message
  assert "pip install torch" in message
  assert capsys.readouterr().out == ""  # Nothing measured, nothing printed.


def test_comparison_runs_the_real_jax_step_against_a_stand_in(monkeypatch, capsys):
  # Where torch is absent, a stand-in module and step let the JAX half run end to end.
  if "torch" not in sys.modules:
    try:
      import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
      monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(
          __version__="stand-in", get_num_threads=lambda: 1))
  monkeypatch.setattr(compare_frameworks, "torch_side", lambda config, size, rate: (
      compare_frameworks.Side("pytorch", lambda: 1.0, lambda: 1e9)))
  result = compare_frameworks.main(["--size=tiny", "--batch_size=2", "--pairs=2", "--steps=1",
                                    "--json", "--no_xla_defaults"])
  assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))
  assert result["model"] == "tiny" and len(result["pairs"]) == 2
  assert result["flops_per_step"] == pytest.approx(hand_counted_mae_flops(192, 12, 2))
  assert result["cpus"] >= 1 and result["date_utc"]
  for r in result["pairs"]:
    assert r["jax_loss_finite"] and r["jax_step_s"] > 0 and r["jax_peak_flops_per_s"] > 1e8
    assert r["ratio"] == pytest.approx(r["pytorch_step_s"] / r["jax_step_s"])


def test_tiny_pytorch_step_gives_well_formed_numbers(capsys):
  pytest.importorskip("torch")
  torch_reference.main(["--sizes=tiny", "--batch_sizes=2", "--steps=1", "--json"])
  (record,) = json.loads(capsys.readouterr().out)
  assert record["framework"] == "pytorch" and record["model"] == "tiny"
  assert record["loss_finite"]
  assert record["step_time_s"] > 0 and record["peak_flops_per_s"] > 0
  assert record["fraction_of_peak"] == pytest.approx(
      record["flops_per_step"] / record["step_time_s"] / record["peak_flops_per_s"])


def test_tiny_comparison_with_pytorch(capsys):
  pytest.importorskip("torch")
  result = compare_frameworks.main(["--size=tiny", "--batch_size=2", "--pairs=2", "--steps=1",
                                    "--no_xla_defaults"])
  out = capsys.readouterr().out
  assert out.count("PyTorch / JAX") == 2 and "over 2 pairs" in out
  for r in result["pairs"]:
    assert r["jax_loss_finite"] and r["pytorch_loss_finite"]
    assert r["pytorch_peak_flops_per_s"] > 1e8 and r["jax_peak_flops_per_s"] > 1e8
