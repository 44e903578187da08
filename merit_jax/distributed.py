"""Multi-process start-up through JAX's own distributed runtime.

`initialize` is called once, before any other JAX call, by every entry point that can run on
several hosts. Cloud TPU pods and SLURM jobs are detected by `jax.distributed.initialize()`
itself ('auto'); elsewhere (e.g. several local CPU processes) the coordinator address, process
count and process id are given explicitly ('explicit'). On CPU, cross-process collectives go
through gloo.

The coordination service also watches the processes: when one stops sending heartbeats (killed,
crashed, its host lost) for `heartbeat_timeout_s`, every other process is terminated instead of
waiting forever inside a collective. It also delivers preemption notices (SIGTERM) to all
processes; see merit_jax/preemption.py.
"""

from __future__ import annotations

import jax

MODES = ("off", "auto", "explicit")

_initialized = False


def initialize(mode: str = "off", coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None,
               heartbeat_timeout_s: int | None = None,
               initialization_timeout_s: int | None = None) -> None:
  """Joins the distributed runtime (a no-op for mode 'off' without a coordinator).

  Must run before anything initialises a JAX backend (`jax.devices()`, any computation):
  this function itself touches no backend.

  Args:
    mode: 'off' (single process unless an explicit coordinator is given), 'auto' (let JAX
      detect Cloud TPU / SLURM / Kubernetes environments), or 'explicit'.
    coordinator_address: host:port of process 0's coordinator service ('explicit' mode).
    num_processes: total number of processes ('explicit' mode).
    process_id: this process's index in [0, num_processes) ('explicit' mode).
    heartbeat_timeout_s: seconds without heartbeats after which a process counts as dead and
      the others are terminated (None = JAX's default, 100 s).
    initialization_timeout_s: seconds to wait for every process to connect (None = JAX's
      default, 300 s).

  Raises:
    ValueError: for an unknown mode or missing / inconsistent explicit settings.
  """
  global _initialized
  if _initialized:
    return
  if mode not in MODES:
    raise ValueError(f"--distributed must be one of {', '.join(MODES)}, got {mode!r}")
  if coordinator_address and mode == "off":
    mode = "explicit"
  if mode == "off":
    return
  if mode == "explicit":
    missing = [name for name, value in (("coordinator_address", coordinator_address),
                                        ("num_processes", num_processes),
                                        ("process_id", process_id)) if value is None]
    if missing:
      raise ValueError(f"--distributed=explicit needs --{', --'.join(missing)}")
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id={process_id} must lie in [0, --num_processes="
                       f"{num_processes})")

  # CPU processes need a cross-process collective implementation. The option only affects the
  # CPU client, so it is harmless on GPU/TPU hosts, and setting it initialises no backend
  # (asking jax.default_backend() here would, and jax.distributed.initialize would then fail).
  if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if heartbeat_timeout_s is not None:
    kwargs["heartbeat_timeout_seconds"] = int(heartbeat_timeout_s)
  if initialization_timeout_s is not None:
    kwargs["initialization_timeout"] = int(initialization_timeout_s)
  if mode == "auto":
    jax.distributed.initialize(**kwargs)
  else:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id, **kwargs)
  _initialized = True


def is_main_process() -> bool:
  """True on the process that logs, shows progress and writes single-writer files."""
  return jax.process_index() == 0
