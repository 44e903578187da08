"""The ceiling benchmark runs at tiny size, counts FLOPs right and produces well-formed numbers."""

import contextlib
import io
import json
import math

import pytest

from benchmarks import ceiling
from benchmarks import train_step


@pytest.fixture(scope="module")
def records():
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    ceiling.main(["--size=tiny", "--batch_size=2", "--repeats=2", "--peak_repeats=1",
                  "--parts=matmul_chain,encoder_block,decoder_block", "--json",
                  "--no_xla_defaults"])  # JAX already runs in this process.
  return json.loads(out.getvalue())


def test_records_are_well_formed(records):
  assert [r["part"] for r in records] == ["matmul_chain", "encoder_block", "decoder_block"]
  for r in records:
    for key in ("time_s", "flops", "achieved_flops_per_s", "peak_flops_per_s",
                "fraction_of_peak", "fraction_of_peak_best"):
      assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (key, r)
    assert r["fraction_of_peak"] == pytest.approx(
        r["flops"] / r["time_s"] / r["peak_flops_per_s"])
    assert r["fraction_of_peak_best"] >= r["fraction_of_peak"]


def test_flops_match_a_hand_count():
  config = train_step.make_config("tiny", 100, "mae", "masked", False, "float32", 2)
  parts = ceiling.make_parts(config, ["matmul_chain", "encoder_block", "decoder_block"])
  # tiny: width 192, MLP 768; 240 tokens of which 60 visible; decoder 256 wide, 4 heads.
  rows = 2 * 60
  assert parts["matmul_chain"][2] == 3 * 2 * (2 * rows * 192 * 768)
  block = 2 * 60 * (4 * 192 * 192 + 2 * 192 * 768) + 4 * 60 * 60 * 192
  assert parts["encoder_block"][2] == 3 * 2 * block
  dec = 2 * 240 * (4 * 256 * 256 + 2 * 256 * 1024) + 4 * 240 * 240 * 256
  assert parts["decoder_block"][2] == 3 * 2 * dec


def test_parts_take_the_gradient_of_weights_and_input():
  config = train_step.make_config("tiny", 100, "mae", "masked", False, "float32", 2)
  grad, args, _ = ceiling.make_parts(config, ["matmul_chain"])["matmul_chain"]
  grads = grad(*args)
  assert [g.shape for g in grads] == [a.shape for a in args]


def test_unknown_part_is_refused():
  config = train_step.make_config("tiny", 100, "mae", "masked", False, "float32", 2)
  with pytest.raises(ValueError, match="unknown parts"):
    ceiling.make_parts(config, ["attention_only"])
  with pytest.raises(SystemExit):
    ceiling.main(["--parts=nope", "--no_xla_defaults"])
