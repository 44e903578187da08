"""Preemption and fault tolerance of multi-process runs of merit_jax.train (CPU, gloo).

One uninterrupted 2-process run, started through launch/local_multiprocess.sh, is the
reference. A second run in another workdir is put through, one launch after the other:

  A. SIGTERM to one process: both agree on a step, save a checkpoint there and exit 0;
  B. restart; the save of the next checkpoint is stalled mid-write (test hook
     MERIT_JAX_TEST_STALL_SAVE) and one process is SIGKILLed: the other must end by itself
     (coordination-service heartbeat), and the half-written checkpoint must not count;
  C. restart: it resumes from the last complete checkpoint and must end with the reference's
     parameters and losses.

All launches share a persistent compilation cache, so only the first compiles. Children are
SIGKILLed in `finally` whatever happens.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from merit_jax import preemption
from tests import train_procs

# 8 steps leave room after the SIGTERM stop (step 1 or 2 in practice) for a torn save and
# several logged steps that must match the reference. The final validation runs (it always
# does) but no evaluator: nothing here asserts on evaluation (tests/test_train.py does), and
# each evaluator costs every launch its set-up and the reference its compilation.
TOTAL_STEPS = 8
COMMON = (f"--config.total_steps={TOTAL_STEPS}", "--config.checkpoint_every=2",
          "--config.log_every=2", f"--config.eval_every={TOTAL_STEPS}",
          "--config.eval.num_plot_ecgs=0", "--config.eval.evaluators=()",
          "--config.keep_checkpoints=20")
HEARTBEAT_S = 10


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return train_procs.build_synthetic(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("xla_cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root, cache_dir):
  """An uninterrupted 2-process run, started by the local launcher."""
  root = tmp_path_factory.mktemp("reference")
  workdir = root / "run"
  env = train_procs.child_env(cache_dir, 1, PORT=train_procs.free_port(), PYTHON=sys.executable,
                              DEVICES_PER_PROCESS=1, HEARTBEAT_TIMEOUT_S=HEARTBEAT_S)
  cmd = ["bash", "launch/local_multiprocess.sh", "2",
         *train_procs.train_flags(workdir, data_root, *COMMON)]
  with open(root / "launcher.log", "w") as log:
    proc = subprocess.Popen(cmd, cwd=train_procs.REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
      rc = proc.wait(timeout=500)
    finally:
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # The launcher's own session: it and its children.
        proc.wait()
  assert rc == 0, (root / "launcher.log").read_text()[-4000:]
  return workdir


def _train_losses(workdir):
  entries = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  return [(e["step"], e["loss"]) for e in entries if "split" not in e]


def test_guard_stops_single_process_on_sigterm():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.PreemptionGuard() as guard:
    assert not guard.synchronized
    assert not guard.should_stop(1)
    os.kill(os.getpid(), signal.SIGTERM)  # Handled: the process must survive it.
    assert guard.should_stop(2) and guard.should_stop(3) and guard.stop_step == 2
  assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.slow
def test_two_process_run_logs_once_and_checkpoints(reference):
  summary = train_procs.summary(reference)
  assert summary["final_step"] == TOTAL_STEPS and summary["resumed_from"] == 0
  # Only process 0 writes metrics: each logged step appears once.
  assert [s for s, _ in _train_losses(reference)] == list(range(2, TOTAL_STEPS + 1, 2))
  assert train_procs.complete_steps(reference) == list(range(2, TOTAL_STEPS + 1, 2))
  saved = json.load(open(reference / "checkpoints" / str(TOTAL_STEPS) / "data" / "metadata"))
  assert len(saved["processes"]) == 2  # The iterator state of each process.


@pytest.mark.slow
def test_sigterm_sigkill_and_torn_save_resume_like_uninterrupted(reference, data_root,
                                                                 cache_dir, tmp_path):
  workdir = tmp_path / "run"
  flags = train_procs.train_flags(workdir, data_root, *COMMON)
  ckpt_dir = workdir / "checkpoints"
  jobs = []
  try:
    # A. SIGTERM to process 1 alone, once both have joined the runtime (the checkpoint
    # manager's folder exists): both stop at one step, save it, exit 0.
    job = train_procs.Job(flags, train_procs.child_env(cache_dir, 1), tmp_path, "sigterm", 2,
                          HEARTBEAT_S)
    jobs.append(job)
    train_procs.wait_for(ckpt_dir.is_dir, 300, job, "the checkpoint folder")
    job.signal(1, signal.SIGTERM)
    assert job.wait(300) == [0, 0], job.outputs()
    match = re.search(r"preempted: stopped at step (\d+)", job.output(0))
    assert match, job.outputs()
    stopped = int(match.group(1))
    assert 1 <= stopped < TOTAL_STEPS
    assert train_procs.complete_steps(workdir)[-1] == stopped
    assert "preempted" not in job.output(1)  # Messages come from process 0 only.

    # B. Restart; stall the commit of the next checkpoint, SIGKILL process 1 during it.
    torn = stopped + 1 if (stopped + 1) % 2 == 0 else stopped + 2
    env = train_procs.child_env(cache_dir, 1, MERIT_JAX_TEST_STALL_SAVE=f"{torn}:300")
    job = train_procs.Job(flags, env, tmp_path, "killed", 2, HEARTBEAT_S)
    jobs.append(job)
    train_procs.wait_for(
        lambda: any(p.name.startswith(f"{torn}.orbax-checkpoint-tmp")
                    for p in ckpt_dir.iterdir()), 300, job, f"the save of step {torn}")
    killed_at = time.time()
    job.signal(1, signal.SIGKILL)
    codes = job.wait(6 * HEARTBEAT_S + 60)
    survivor_s = time.time() - killed_at
    assert codes[1] == -signal.SIGKILL
    assert codes[0] is not None, f"process 0 still runs {survivor_s:.0f} s after its peer died"
    assert codes[0] != 0, job.outputs()
    print(f"survivor ended {survivor_s:.1f} s after its peer was killed (rc {codes[0]})")
    complete = train_procs.complete_steps(workdir)
    assert torn not in complete and complete[-1] == stopped, complete

    # C. Restart: resumes from the last complete checkpoint and ends like the reference.
    job = train_procs.Job(flags, train_procs.child_env(cache_dir, 1), tmp_path, "resumed", 2,
                          HEARTBEAT_S)
    jobs.append(job)
    assert job.wait(400) == [0, 0], job.outputs()
    assert not any(p.name.startswith(f"{torn}.orbax") for p in ckpt_dir.iterdir())
    summary = train_procs.summary(workdir)
    assert summary["resumed_from"] == stopped and summary["final_step"] == TOTAL_STEPS
  finally:
    for job in jobs:
      job.kill()

  diff = train_procs.max_param_diff(train_procs.final_params(workdir, TOTAL_STEPS),
                                    train_procs.final_params(reference, TOTAL_STEPS))
  print(f"final params max |resumed - uninterrupted| = {diff:.3g}")
  assert diff <= 1e-6
  reference_losses = dict(_train_losses(reference))
  for step, loss in _train_losses(workdir):
    if step > stopped + 1:  # Log steps whose window lies wholly after the last resume.
      np.testing.assert_allclose(loss, reference_losses[step], rtol=1e-5, err_msg=f"step {step}")
