"""XLA flags this project sets by default, because benchmarks/train_step.py measured a gain.

XLA reads `XLA_FLAGS` once, when JAX creates its first backend, so `apply()` must run before
any JAX computation or device query (`jax` itself may already be imported). The entry points
that run the train step call it first thing in `main`. A setting the user already put in
`XLA_FLAGS` is never overridden, so any default can be switched off from the shell, e.g.
`XLA_FLAGS=--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED`.

Defaults (the flags only affect the backend they name):
  xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED: XLA:CPU's default schedule is
    the concurrency-optimised one, which orders ops so that more independent ones can run side
    by side; on a few cores two matmuls then share the threads and the cache, and more buffers
    stay alive. The memory-optimised schedule made the base-size float32 steps 11-14 % faster
    on the 2-core CI CPU (MAE 4.71 -> 4.20 s, MERIT 6.10 -> 5.27 s at batch 32, medians of
    three runs; small MERIT unchanged) and cut their memory by 0.5-1.2 GiB: see
    benchmarks/RESULTS.md. (The deprecated boolean
    `xla_cpu_enable_concurrency_optimized_scheduler=false` compiles to the same program.)
"""

from __future__ import annotations

import os
from typing import MutableMapping, Optional

DEFAULT_FLAGS = {
    "xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",
}
# Other flags that set the same thing: if the user gave one of them, the default is not added.
SAME_SETTING = {
    "xla_cpu_scheduler_type": ("xla_cpu_enable_concurrency_optimized_scheduler",),
}


def _flag_names(xla_flags: str) -> set[str]:
  names = set()
  for token in xla_flags.split():
    name = token.lstrip("-").split("=", 1)[0]
    if name:
      names.add(name)
  return names


def apply(environ: Optional[MutableMapping[str, str]] = None) -> list[str]:
  """Appends each default whose setting `XLA_FLAGS` lacks; returns the flags it added."""
  environ = os.environ if environ is None else environ
  current = environ.get("XLA_FLAGS", "")
  present = _flag_names(current)
  added = [f"--{name}={value}" for name, value in DEFAULT_FLAGS.items()
           if not present & {name, *SAME_SETTING.get(name, ())}]
  if added:
    environ["XLA_FLAGS"] = " ".join([current.strip()] + added).strip()
  return added
