"""Measured matmul peak of a device: the denominator of every fraction-of-peak figure.

The peak is measured, not taken from a datasheet: matrix multiplies in the requested dtype are
timed on the same device, in the same process, right beside the step being benchmarked.

Why several shapes and best-of-many: on a shared CPU a single large square matmul under-states
the peak whenever a neighbour steals a core for a moment (one such run reported a tiny step at
> 100 % of "peak"), and small matmuls that fit in cache can run faster per FLOP than a large
square one. So `PeakMeter` times a set of shapes (large squares plus the step's own matmul
shapes), keeps the best of many short repeats per shape, and takes the best over shapes; the
train-step benchmark measures it again between its timed steps, so every step time has a peak
taken under the same load next to it.

Process CPU time is recorded too: FLOPs per CPU-second is what the code does with the core time
it actually got, so on a CPU shared with other jobs it stays put while wall-clock rates swing
(seen here: 2048^3 f32 at 206-217 GFLOP per CPU-second while the wall rate went 38-53 GFLOP/s
at load 12, on a Zen 5 core whose 2 x 512-bit FMA pipes allow ~64 FLOP/cycle).

API:
  PeakMeter(dtype, shapes=None, device=None, min_call_s=None)
    .measure(repeats) -> dict (one measurement: best wall FLOP/s and best FLOP per CPU-second
      over shapes, load average)
    .best -> dict (best over every measurement so far)
  measure_matmul_peak(dtype, shapes=None, repeats=5, device=None) -> dict (one-shot)
  default_shapes(platform) -> list of (m, k, n)
  load_average() -> (1, 5, 15 min) or None
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def default_shapes(platform: str) -> list[tuple[int, int, int]]:
  if platform in ("gpu", "tpu"):
    return [(8192, 8192, 8192), (16384, 4096, 4096)]
  return [(1024, 1024, 1024), (2048, 2048, 2048)]


def load_average() -> tuple[float, float, float] | None:
  try:
    return tuple(round(x, 2) for x in os.getloadavg())
  except OSError:
    return None


class _Probe:
  """One jitted loop of `x <- (x @ w1) @ w2` on shapes (m, k) @ (k, n) @ (n, k)."""

  def __init__(self, m, k, n, dtype, device, min_call_s):
    self.shape = (m, k, n)
    key_a, key_b, key_c = jax.random.split(jax.random.PRNGKey(0), 3)
    self.x = jax.device_put(jax.random.normal(key_a, (m, k), dtype), device)
    self.w1 = jax.device_put((jax.random.normal(key_b, (k, n)) / np.sqrt(k)).astype(dtype),
                             device)
    self.w2 = jax.device_put((jax.random.normal(key_c, (n, k)) / np.sqrt(n)).astype(dtype),
                             device)

    def loop(x, w1, w2, iters):
      def body(_, x):
        # The barrier stops XLA from re-associating (x @ w1) @ w2 into x @ (w1 @ w2) and
        # hoisting w1 @ w2 out of the loop, which would fake a peak far above the hardware's.
        h = jax.lax.optimization_barrier((x @ w1).astype(dtype))
        return jax.lax.optimization_barrier((h @ w2).astype(dtype))
      return jax.lax.fori_loop(0, iters, body, x)

    self._fn = jax.jit(loop, static_argnums=3)
    flops_per_iter = 4.0 * m * k * n
    # Calibrate the iteration count so one call lasts about `min_call_s` (amortises dispatch).
    self.iters = 1
    self._call()  # Compile; the timed call below must not include it.
    t = self._call()[0]
    self.iters = max(1, int(np.ceil(min_call_s / max(t, 1e-6))))
    self._call()  # Compile the calibrated loop.
    self.flops = flops_per_iter * self.iters

  def _call(self) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    start, start_cpu = time.perf_counter(), time.process_time()
    self._fn(self.x, self.w1, self.w2, self.iters).block_until_ready()
    return time.perf_counter() - start, time.process_time() - start_cpu


class PeakMeter:
  """Best matmul FLOP/s over several shapes and every `measure()` call so far."""

  def __init__(self, dtype=jnp.float32, shapes=None, device=None, min_call_s=None):
    self.device = device or jax.devices()[0]
    self.dtype = jnp.dtype(dtype)
    gpu = self.device.platform in ("gpu", "tpu")
    if min_call_s is None:
      min_call_s = 0.02 if gpu else 0.05
    shapes = list(default_shapes(self.device.platform)) + list(shapes or [])
    shapes = sorted(set(tuple(int(v) for v in s) for s in shapes))
    self.probes = [_Probe(*s, self.dtype, self.device, min_call_s) for s in shapes]
    self.best = None

  def measure(self, repeats: int = 5) -> dict:
    per_shape, per_shape_cpu = {}, {}
    for probe in self.probes:
      walls, cpus = zip(*(probe._call() for _ in range(repeats)))  # pylint: disable=protected-access
      name = "x".join(map(str, probe.shape))
      per_shape[name] = probe.flops / min(walls)
      per_shape_cpu[name] = probe.flops / max(min(cpus), 1e-9)
    best_shape = max(per_shape, key=per_shape.get)
    result = {
        "dtype": self.dtype.name,
        "device": str(self.device.device_kind),
        "peak_flops_per_s": per_shape[best_shape],
        "peak_shape": best_shape,
        "peak_flops_per_cpu_s": max(per_shape_cpu.values()),
        "per_shape_flops_per_s": per_shape,
        "per_shape_flops_per_cpu_s": per_shape_cpu,
        "load_average": load_average(),
    }
    best = dict(self.best or result)
    if result["peak_flops_per_s"] >= best["peak_flops_per_s"]:
      best.update({k: result[k] for k in ("peak_flops_per_s", "peak_shape",
                                          "per_shape_flops_per_s", "load_average")})
    best["peak_flops_per_cpu_s"] = max(best["peak_flops_per_cpu_s"],
                                       result["peak_flops_per_cpu_s"])
    self.best = best
    return result


def measure_matmul_peak(dtype=jnp.float32, shapes=None, repeats: int = 5, device=None) -> dict:
  """One-shot peak: best FLOP/s over the default shapes (+ `shapes`), best of `repeats`."""
  meter = PeakMeter(dtype, shapes, device)
  meter.measure(repeats)
  return meter.best


if __name__ == "__main__":
  for dt in (jnp.float32, jnp.bfloat16):
    r = measure_matmul_peak(dt)
    shapes = "  ".join(f"{k}: {v / 1e9:.1f}" for k, v in r["per_shape_flops_per_s"].items())
    print(f"{r['dtype']:>9}: peak {r['peak_flops_per_s'] / 1e9:8.1f} GFLOP/s at {r['peak_shape']}"
          f" ({r['peak_flops_per_cpu_s'] / 1e9:.1f} GFLOP per CPU-second) on {r['device']}, "
          f"load {r['load_average']}  [{shapes}]")
