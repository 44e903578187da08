"""The ceiling under the train step: what XLA reaches on the step's own pieces, alone.

    python -m benchmarks.ceiling --size=base --batch_size=32          # float32, 100 Hz
    python -m benchmarks.ceiling --size=tiny --batch_size=4 --json    # CI smoke

`benchmarks/train_step.py` times the whole step; this times pieces of it at the step's shapes,
each jitted on its own, forward + backward (gradients for the weights and the input, as inside
the network), and divides their analytic matmul FLOPs (3 × forward, the MFU convention) by the
median time and by the matmul peak measured in the same process (`benchmarks/peak.py`):

  matmul_chain   x + (x @ W1) @ W2 on the encoder's MLP shapes: the two matmuls and a
                 residual, nothing else. The most matmul-dense work the step contains, so
                 its fraction is what XLA's generated code can reach on this device at best.
  mlp_block      x + MLP(LayerNorm(x)) with the model's own modules (bias, exact GELU).
  encoder_block  one encoder block of the model (attention + MLP) on the visible tokens.
  decoder_block  one MAE-decoder block on all tokens at the decoder's width.
  encoder        the whole encoder stack on the visible tokens (`--parts` to include it).

If a piece alone stays below a target fraction, the whole step (which adds the optimizer, the
embeddings and the losses) cannot reach it either: the gap is in the compiler's code for these
shapes, not in how the model is written.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import peak as peak_lib
from benchmarks import train_step as bench
from merit_jax import xla_defaults
from merit_jax.models import ecg_vit

PARTS = ("matmul_chain", "mlp_block", "encoder_block", "decoder_block", "encoder")
DEFAULT_PARTS = PARTS[:4]


class _ResidualMlp(nn.Module):
  """x + MLP(LayerNorm(x)): the second half of an encoder block."""
  mlp_dim: int
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x):
    return x + ecg_vit.MlpBlock(self.mlp_dim, self.dtype)(ecg_vit.layer_norm("ln", self.dtype)(x))


def _loss(outputs):
  return jnp.mean(jnp.square(outputs.astype(jnp.float32)))


def check_parts(parts) -> None:
  """Raises ValueError naming any of `parts` that is not in PARTS."""
  unknown = sorted(set(parts) - set(PARTS))
  if unknown:
    raise ValueError(f"unknown parts {unknown}; expected some of {list(PARTS)}")


def make_parts(config, parts, seed: int = 0) -> dict:
  """{name: (grad_fn, args, model FLOPs of one fwd + bwd)} for the config's shapes."""
  check_parts(parts)
  m = config.model
  dtype = jnp.dtype(m.dtype)
  width, depth, mlp = bench.encoder_dims(config)
  heads = bench.encoder_heads(config)
  num_tokens, visible = bench.token_counts(config)
  batch = config.batch_size
  dec = m.decoder
  keys = iter(jax.random.split(jax.random.PRNGKey(seed), 16))
  mlp_flops = 3 * 2 * 2 * batch * visible * width * mlp  # fwd + bwd of the MLP's two matmuls.

  def tokens(t, d):
    return jax.random.normal(next(keys), (batch, t, d), dtype)

  def module_part(module, x):
    params = module.init(next(keys), x)
    grad = jax.jit(jax.grad(lambda p, x: _loss(module.apply(p, x)), argnums=(0, 1)))
    return grad, (params, x)

  out = {}
  for name in parts:
    if name == "matmul_chain":
      x = tokens(visible, width).reshape(batch * visible, width)
      w1 = (jax.random.normal(next(keys), (width, mlp)) / np.sqrt(width)).astype(dtype)
      w2 = (jax.random.normal(next(keys), (mlp, width)) / np.sqrt(mlp)).astype(dtype)
      grad = jax.jit(jax.grad(lambda x, w1, w2: _loss(x + (x @ w1) @ w2), argnums=(0, 1, 2)))
      out[name] = (grad, (x, w1, w2), mlp_flops)
    elif name == "mlp_block":
      grad, args = module_part(_ResidualMlp(mlp, dtype), tokens(visible, width))
      out[name] = (grad, args, mlp_flops)
    elif name == "encoder_block":
      grad, args = module_part(ecg_vit.EncoderBlock(heads, mlp, dtype), tokens(visible, width))
      out[name] = (grad, args, 3 * batch * bench.transformer_fwd_flops(visible, width, 1, mlp))
    elif name == "decoder_block":
      grad, args = module_part(ecg_vit.EncoderBlock(dec.heads, 4 * dec.width, dtype),
                               tokens(num_tokens, dec.width))
      out[name] = (grad, args, 3 * batch * bench.transformer_fwd_flops(
          num_tokens, dec.width, 1, 4 * dec.width))
    elif name == "encoder":
      grad, args = module_part(ecg_vit.Transformer(depth, heads, mlp, dtype),
                               tokens(visible, width))
      out[name] = (grad, args, 3 * batch * bench.transformer_fwd_flops(visible, width, depth,
                                                                       mlp))
  return out


def time_part(grad, args, repeats: int) -> list[float]:
  """Wall seconds of `repeats` synced calls after a compile + warm-up call."""
  jax.block_until_ready(grad(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(grad(*args))
    times.append(time.perf_counter() - start)
  return times


def run(size: str, rate: int, dtype: str, batch_size: int, parts, repeats: int,
        peak_repeats: int) -> list[dict]:
  """One record per part; the peak is measured before and after every part."""
  config = bench.make_config(size, rate, "mae", "masked", False, dtype, batch_size)
  meter = peak_lib.PeakMeter(dtype, bench.step_matmul_shapes(config))
  records = []
  for name, (grad, args, flops) in make_parts(config, parts).items():
    meter.measure(peak_repeats)
    times = time_part(grad, args, repeats)
    meter.measure(peak_repeats)
    step = float(np.median(times))
    peak = meter.best["peak_flops_per_s"]
    records.append({
        "part": name, "model": size, "sample_rate": rate, "dtype": dtype,
        "batch_size": batch_size, "time_s": step, "time_min_s": float(min(times)),
        "flops": float(flops), "achieved_flops_per_s": flops / step,
        "peak_flops_per_s": float(peak), "peak_shape": meter.best["peak_shape"],
        "fraction_of_peak": flops / step / peak,
        "fraction_of_peak_best": flops / min(times) / peak,
        "device": str(jax.devices()[0].device_kind),
        "load_average": peak_lib.load_average(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    })
  return records


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  p.add_argument("--size", default="base")
  p.add_argument("--rate", type=int, default=100)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                 help=f"comma-separated, from {','.join(PARTS)}")
  p.add_argument("--repeats", type=int, default=10, help="timed calls per part (median)")
  p.add_argument("--peak_repeats", type=int, default=3)
  p.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
  p.add_argument("--no_xla_defaults", action="store_true",
                 help="leave XLA_FLAGS as it is (merit_jax/xla_defaults.py is applied otherwise)")
  args = p.parse_args(argv)
  parts = [s for s in args.parts.split(",") if s]
  if not parts:
    p.error(f"--parts must name some of {','.join(PARTS)}")
  try:
    check_parts(parts)
  except ValueError as e:
    p.error(f"--parts: {e}")
  if args.repeats < 1 or args.peak_repeats < 1:
    p.error("--repeats and --peak_repeats must be at least 1")
  if not args.no_xla_defaults:
    xla_defaults.apply()  # Read when JAX creates its CPU backend, i.e. at the first op.

  records = run(args.size, args.rate, args.dtype, args.batch_size, parts, args.repeats,
                args.peak_repeats)
  if args.json:
    print(json.dumps(records, indent=1))
    return
  print(f"{args.size} {args.rate} Hz {args.dtype} batch {args.batch_size} on "
        f"{records[0]['device']} (XLA_FLAGS={records[0]['xla_flags'] or 'none'})")
  for r in records:
    print(f"  {r['part']:14s} {r['time_s'] * 1e3:9.1f} ms  {r['flops'] / 1e9:8.1f} GFLOP  "
          f"{r['achieved_flops_per_s'] / 1e9:7.1f} / {r['peak_flops_per_s'] / 1e9:6.1f} GFLOP/s "
          f"= {100 * r['fraction_of_peak']:5.1f} % of peak (best call "
          f"{100 * r['fraction_of_peak_best']:5.1f} %)")


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  main()
