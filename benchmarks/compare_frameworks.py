"""The MAE train step in JAX and in PyTorch, alternated in one process, with the ratio per pair.

    pip install torch                      # not a merit_jax requirement; the CPU build
    python -m benchmarks.compare_frameworks --size=base --batch_size=32 --pairs=3 --steps=3
    python -m benchmarks.compare_frameworks --size=tiny --batch_size=2 --pairs=2 --steps=1  # smoke

The JAX step is `benchmarks/train_step.py`'s MAE step (λ = 0, float32, remat off, with the
trainer's XLA flags); the PyTorch step is `benchmarks/torch_reference.py`'s, built from the same
config with the same shapes and FLOP count. Both are built and warmed up first (compilation is
not timed). Then come `--pairs` pairs: `--steps` JAX steps, `--steps` PyTorch steps, JAX,
PyTorch, ... Each half's median step time is printed with the ratio PyTorch / JAX of its pair
(above 1: the JAX step is faster), and after each half its library's float32 matmul peak is
measured on the same shapes (XLA's through `benchmarks/peak.py`, PyTorch's through `torch.mm`:
large squares and the step's MLP matmul), so each pair also shows what the two matmuls reach
under the same load.

Why one alternating run: the ratio is a property of the machine and of the moment, not of the
code. Two 2-core Xeon VMs of the same kind gave opposite answers for the base step (see
`benchmarks/RESULTS.md`), and the load of other tenants moves both steps. Only pairs taken side
by side compare the two; quote a ratio with the machine and date this prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import time
from typing import Callable

import numpy as np

from benchmarks import peak as peak_lib
from benchmarks import torch_reference
from benchmarks import train_step as bench

NO_TORCH = ("benchmarks.compare_frameworks: PyTorch is not installed (merit_jax does not need "
            "it), so nothing was compared; install the CPU build (pip install torch) to run it.")


@dataclasses.dataclass
class Side:
  """One framework's step and matmul peak, ready to time."""
  name: str
  step: Callable[[], float]    # runs one train step to completion, returns the loss
  peak: Callable[[], float]    # measures the library's matmul FLOP/s now


def run_pairs(first: Side, second: Side, pairs: int, steps: int, flops: float,
              clock: Callable[[], float] = time.perf_counter, pause_s: float = 0.5,
              report: Callable[[dict], None] | None = None) -> list[dict]:
  """Alternates `steps` steps of `first` and of `second`, `pairs` times; one record per pair.

  A record holds each side's median step time (`<name>_step_s`), its matmul peak measured right
  after its half (`<name>_peak_flops_per_s`), its fraction of that peak, and
  `ratio` = second's step time / first's.
  """
  records = []
  for pair in range(1, pairs + 1):
    record = {"pair": pair}
    for side in (first, second):
      # Lets the other library's idle worker threads (OpenMP's spin) stop before timing.
      time.sleep(pause_s)
      times = []
      for _ in range(steps):
        start = clock()
        loss = side.step()
        times.append(clock() - start)
      step_s = float(np.median(times))
      peak = float(side.peak())
      record.update({f"{side.name}_step_s": step_s, f"{side.name}_step_min_s": min(times),
                     f"{side.name}_peak_flops_per_s": peak,
                     f"{side.name}_fraction_of_peak": flops / step_s / peak,
                     f"{side.name}_loss_finite": bool(np.isfinite(loss))})
    record["ratio"] = record[f"{second.name}_step_s"] / record[f"{first.name}_step_s"]
    record["load_average_1m"] = (peak_lib.load_average() or (float("nan"),))[0]
    records.append(record)
    if report:
      report(record)
  return records


def machine() -> dict:
  """The CPU, its core count and matrix extensions, the host, the UTC time: a ratio's context."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          model = value.strip()
        elif key.strip() == "flags":
          flags = set(value.split())
  except OSError:
    pass
  extensions = [name for flag, name in (("avx512f", "AVX-512"), ("amx_tile", "AMX"))
                if flag in flags]
  return {"cpu": model, "cpus": os.cpu_count(), "extensions": extensions,
          "host": platform.node(),
          "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")}


def jax_side(config) -> Side:
  """The harness's compiled JAX step on one device, and XLA's matmul peak on its shapes."""
  import jax  # pylint: disable=import-outside-toplevel
  devices = jax.devices()[:1]
  _, state, train_step, batch, rng = bench.setup_step(config, devices)
  compiled = train_step.jitted.lower(state, batch, rng).compile()
  meter = peak_lib.PeakMeter(config.model.dtype, bench.step_matmul_shapes(config),
                             device=devices[0])
  current = {"state": state}

  def step() -> float:
    current["state"], metrics = compiled(current["state"], batch, rng)  # State is donated.
    jax.block_until_ready((current["state"], metrics))
    return float(metrics["loss"])

  for _ in range(2):  # Warm-up: first-call allocations.
    step()
  return Side("jax", step, lambda: meter.measure(3)["peak_flops_per_s"])


def torch_side(config, size: str, rate: int) -> Side:
  """benchmarks/torch_reference's step and PyTorch's matmul peak on the same shapes."""
  step, _ = torch_reference.build_step(size, rate, config.batch_size)
  for _ in range(2):  # Warm-up: allocator, oneDNN primitive caches.
    step()
  shapes = bench.step_matmul_shapes(config)
  return Side("pytorch", step, lambda: torch_reference.matmul_peak(shapes, repeats=3))


def _print_pair(r: dict) -> None:
  print(f"pair {r['pair']}: JAX {r['jax_step_s']:.3f} s "
        f"({100 * r['jax_fraction_of_peak']:.0f} % of XLA's "
        f"{r['jax_peak_flops_per_s'] / 1e9:.0f} GFLOP/s matmul)  "
        f"PyTorch {r['pytorch_step_s']:.3f} s ({100 * r['pytorch_fraction_of_peak']:.0f} % of "
        f"PyTorch's {r['pytorch_peak_flops_per_s'] / 1e9:.0f} GFLOP/s matmul)  "
        f"PyTorch / JAX {r['ratio']:.2f}  load {r['load_average_1m']:.1f}", flush=True)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  p.add_argument("--size", default="base", help="encoder size: tiny, small or base")
  p.add_argument("--rate", type=int, default=100, help="sample rate (patch = rate // 2)")
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--pairs", type=int, default=3, help="JAX-then-PyTorch pairs")
  p.add_argument("--steps", type=int, default=3, help="timed steps per half (median kept)")
  p.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
  p.add_argument("--no_xla_defaults", action="store_true",
                 help="do not add merit_jax/xla_defaults.py's flags")
  args = p.parse_args(argv)
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise SystemExit(NO_TORCH) from None
  if args.pairs < 1 or args.steps < 1:
    raise SystemExit(f"--pairs and --steps must be at least 1, got {args.pairs}, {args.steps}")
  try:
    config = torch_reference.mae_config(args.size, args.rate, args.batch_size)
  except ValueError as e:
    raise SystemExit(f"--size: {e}") from None
  if not args.no_xla_defaults:
    from merit_jax import xla_defaults  # pylint: disable=import-outside-toplevel
    xla_defaults.apply()  # As the trainer does; before JAX starts its CPU backend below.
  import jax  # pylint: disable=import-outside-toplevel

  flops = bench.analytic_flops_per_step(config)
  header = dict(machine(), jax_version=jax.__version__, torch_version=torch.__version__,
                torch_threads=torch.get_num_threads(),
                commit=bench._git_commit(),  # pylint: disable=protected-access
                model=args.size, variant="mae", sample_rate=args.rate, dtype="float32",
                batch_size=args.batch_size, steps=args.steps, flops_per_step=flops,
                xla_flags=os.environ.get("XLA_FLAGS", ""))
  if not args.json:
    print(f"{header['date_utc']} UTC, {header['cpu']} ({header['cpus']} CPUs"
          f"{''.join(', ' + e for e in header['extensions'])}), JAX {jax.__version__}, PyTorch "
          f"{torch.__version__} ({header['torch_threads']} threads), commit {header['commit']}: "
          f"{args.size} MAE step, {args.rate} Hz, batch {args.batch_size}, "
          f"{flops / 1e9:.1f} GFLOP", flush=True)
  first, second = jax_side(config), torch_side(config, args.size, args.rate)
  records = run_pairs(first, second, args.pairs, args.steps, flops,
                      report=None if args.json else _print_pair)
  ratios = [r["ratio"] for r in records]
  result = dict(header, pairs=records, ratio_median=float(np.median(ratios)),
                ratio_min=min(ratios), ratio_max=max(ratios))
  if args.json:
    print(json.dumps(result, indent=1))
  else:
    print(f"PyTorch / JAX step time over {len(ratios)} pairs: {min(ratios):.2f}-"
          f"{max(ratios):.2f} (median {result['ratio_median']:.2f}) on this machine, "
          f"{header['date_utc']} UTC", flush=True)
  return result


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  main()
