"""Multi-process start-up through JAX's own distributed runtime.

`initialize` is called once, before any other JAX call, by every entry point that can run on
several hosts. Cloud TPU pods and SLURM jobs are detected by `jax.distributed.initialize()`
itself; elsewhere (e.g. several local CPU processes) the coordinator address, process count and
process id are given explicitly. On CPU, cross-process collectives go through gloo.
"""

from __future__ import annotations

import os

import jax

_initialized = False


def initialize(mode: str = "off", coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None) -> None:
  """Joins the distributed runtime.

  Args:
    mode: 'off' (single process unless an explicit coordinator is given), 'auto' (let JAX
      detect Cloud TPU / SLURM / Kubernetes environments), or 'explicit'.
    coordinator_address: host:port of process 0's coordinator service ('explicit' mode).
    num_processes: total number of processes ('explicit' mode).
    process_id: this process's index in [0, num_processes) ('explicit' mode).
  """
  global _initialized
  if _initialized:
    return
  if coordinator_address and mode == "off":
    mode = "explicit"
  if mode == "off":
    return
  if mode == "explicit":
    missing = [name for name, value in (("coordinator_address", coordinator_address),
                                        ("num_processes", num_processes),
                                        ("process_id", process_id)) if value is None]
    if missing:
      raise ValueError(f"explicit distributed start-up needs --{', --'.join(missing)}")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id={process_id} must lie in [0, --num_processes={num_processes})")
  elif mode != "auto":
    raise ValueError(f"--distributed must be 'off', 'auto' or 'explicit', got {mode!r}")

  if jax.default_backend() == "cpu" or os.environ.get("JAX_PLATFORMS", "") == "cpu":
    # CPU processes need a cross-process collective implementation.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if mode == "auto":
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  _initialized = True


def is_main_process() -> bool:
  """True on the process that logs, shows progress and writes single-writer files."""
  return jax.process_index() == 0
