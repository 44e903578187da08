"""Helpers for tests that run `python -m merit_jax.train` in subprocesses (one or several).

Every child gets a bounded life: `Job.wait` has a timeout and `Job.kill` (always called by the
tests' `finally`) SIGKILLs whatever is left, so a failing test never leaves processes behind.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA_CONFIG = "n64_s0"  # 64 synthetic ECG-report records.


def build_synthetic(root: pathlib.Path) -> pathlib.Path:
  """Builds the tiny synthetic dataset (+ tokenizer) under `root` once; returns root."""
  from merit_jax.data import build  # pylint: disable=g-import-not-at-top
  build.build("synthetic_ecg", manual_dir=str(root / "manual"), data_dir=str(root / "tfds"),
              config=DATA_CONFIG, tokenizer_vocab_size=300)
  return root


def child_env(cache_dir: pathlib.Path, devices: int, **extra) -> dict:
  """Environment of a training child: CPU, `devices` devices, a shared compilation cache."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", PYTHONUNBUFFERED="1")
  env.update({k: str(v) for k, v in extra.items()})
  return env


def train_flags(workdir, data_root, *extra) -> list[str]:
  return ["--config=configs/pretrain.py:test", f"--workdir={workdir}",
          "--config.data.name=synthetic_ecg", f"--config.data.config={DATA_CONFIG}",
          f"--config.data.data_dir={data_root / 'tfds'}",
          f"--config.data.manual_dir={data_root / 'manual'}", *extra]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Job:
  """N processes of one training run (explicit jax.distributed on 127.0.0.1 when N > 1)."""

  def __init__(self, flags, env, log_dir: pathlib.Path, name: str, num_processes: int = 1,
               heartbeat_timeout_s: int = 10):
    self.logs = [log_dir / f"{name}.p{i}.log" for i in range(num_processes)]
    self.procs = []
    port = free_port()
    for i in range(num_processes):
      cmd = [sys.executable, "-m", "merit_jax.train", *flags]
      if num_processes > 1:
        cmd += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
                f"--process_id={i}", f"--heartbeat_timeout_s={heartbeat_timeout_s}"]
      with open(self.logs[i], "w") as log:
        self.procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log,
                                           stderr=subprocess.STDOUT))

  def signal(self, index: int, sig: int) -> None:
    if self.procs[index].poll() is None:
      self.procs[index].send_signal(sig)

  def wait(self, timeout: float) -> list[int]:
    """Exit codes of all processes; None for those still running after `timeout` s."""
    deadline = time.time() + timeout
    for p in self.procs:
      try:
        p.wait(timeout=max(deadline - time.time(), 0.1))
      except subprocess.TimeoutExpired:
        pass
    return [p.poll() for p in self.procs]

  def kill(self) -> None:
    for p in self.procs:
      if p.poll() is None:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)

  def output(self, index: int = 0, tail: int = 4000) -> str:
    return self.logs[index].read_text(errors="replace")[-tail:]

  def outputs(self) -> str:
    return "\n".join(f"--- process {i} ---\n{self.output(i)}" for i in range(len(self.procs)))


def wait_for(predicate, timeout: float, job: Job | None = None, what: str = "") -> None:
  """Polls `predicate` until true; fails (with the job's logs) on timeout or early exit."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    if job is not None and all(p.poll() is not None for p in job.procs):
      raise AssertionError(f"the run ended before {what}:\n{job.outputs()}")
    time.sleep(0.05)
  raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n"
                       + (job.outputs() if job else ""))


def complete_steps(workdir: pathlib.Path) -> list[int]:
  ckpt = workdir / "checkpoints"
  if not ckpt.is_dir():
    return []
  return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())


def final_params(workdir: pathlib.Path, step: int) -> dict:
  """The params of checkpoint `step` as numpy, whatever mesh / processes wrote them."""
  import jax  # pylint: disable=g-import-not-at-top
  from merit_jax import checkpoint  # pylint: disable=g-import-not-at-top
  params = checkpoint.restore_params(workdir / "checkpoints" / str(step) / "state")
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(params)}


def max_param_diff(a: dict, b: dict) -> float:
  assert a.keys() == b.keys()
  return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def summary(workdir: pathlib.Path) -> dict:
  return json.loads((workdir / "summary.json").read_text())
