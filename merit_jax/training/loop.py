"""The training loop: steps, logging, checkpoints, validation, preemption and divergence.

The loop never blocks on the device between log steps: per-step metrics stay on the device
and are fetched together at the next log step, so host-side batch preparation overlaps with
the running step. Every process asks the preemption guard at every step, so all of them stop
at the same one. A run whose last `config.max_consecutive_nonfinite` steps all had non-finite
loss or gradients stops with FloatingPointError (read at log steps only).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np

from merit_jax import preemption
from merit_jax import run_logging


@dataclasses.dataclass
class Outcome:
  """How the loop ended and what it logged."""
  first_loss: float | None = None
  last_loss: float | None = None
  validation: dict = dataclasses.field(default_factory=dict)  # The last validation scalars.
  evals: dict = dataclasses.field(default_factory=dict)  # Latest results per evaluator.
  preempted_at: int | None = None


def _mean_metrics(pending: list[Mapping[str, Any]]) -> dict[str, float]:
  """Fetches the steps' device metrics at once and averages them over the steps."""
  fetched = jax.device_get(pending)
  return {k: float(np.mean([np.asarray(m[k], np.float64) for m in fetched]))
          for k in fetched[0]}


def check_nonfinite(state, done: int, limit: int) -> None:
  """Aborts when the last `limit` steps were all skipped as non-finite (read at log steps)."""
  # The step skips non-finite updates and counts the current run of them in the state; reading
  # it only at log steps keeps the loop free of per-step host syncs.
  run = int(jax.device_get(state.consecutive_nonfinite))
  if run >= limit:
    total = int(jax.device_get(state.nonfinite_steps))
    raise FloatingPointError(
        f"aborting at step {done}: the last {run} consecutive steps (steps {done - run + 1}-"
        f"{done}; {total} in the whole run) had a non-finite loss or gradients and were "
        f"skipped, reaching config.max_consecutive_nonfinite={limit}. Lower config.optim.lr, "
        "check the data for NaN/inf, or resume from an earlier checkpoint (metrics.jsonl has "
        "the losses).")


def train(run, guard: preemption.PreemptionGuard, validator, writer: run_logging.MetricWriter,
          upload_logs: Callable[[], None]) -> Outcome:
  """Trains `run` (a `training.setup.Run`) from its start step to config.total_steps.

  Args:
    run: the run's live objects; `run.state` is updated as the loop goes.
    guard: the preemption guard; when it asks to stop, the loop saves and returns with
      `preempted_at` set.
    validator: a `training.validation.Validator`.
    writer: where train and validation scalars go.
    upload_logs: called (on the main process) after every checkpoint save.

  Raises:
    FloatingPointError: after config.max_consecutive_nonfinite consecutive non-finite steps.
  """
  config, ckpt, train_iter = run.config, run.checkpointer, run.train_iter
  main = jax.process_index() == 0
  bar = run_logging.ProgressBar(config.total_steps, initial=run.start_step, enabled=main)
  out = Outcome()
  pending: list[Mapping[str, Any]] = []
  last_log_time, last_log_step = time.time(), run.start_step
  limit = int(config.max_consecutive_nonfinite or 0)
  last_saved = None
  state = run.state
  try:
    for step in range(run.start_step, config.total_steps):
      batch = next(train_iter)
      # The step folds state.step into the rng: a fresh mask per step, identical after resume.
      state, metrics = run.train_step(state, batch, run.loop_rng)
      run.state = state
      pending.append(metrics)  # Device arrays; fetched at the next log step.
      done = step + 1
      bar.update(1)
      if done % config.log_every == 0 or done == config.total_steps:
        logged = _mean_metrics(pending)
        pending = []
        now = time.time()
        logged["steps_per_sec"] = (done - last_log_step) / max(now - last_log_time, 1e-9)
        last_log_time, last_log_step = now, done
        entry = writer.write_scalars(done, logged)
        out.last_loss = entry.get("loss")
        if out.first_loss is None:
          out.first_loss = out.last_loss
        bar.update(0, loss=f"{logged.get('loss', float('nan')):.4f}")
        if limit:
          check_nonfinite(state, done, limit)
      if done % config.checkpoint_every == 0 or done == config.total_steps:
        ckpt.save(done, state, train_iter.get_state(), config)
        last_saved = done
        if main:
          upload_logs()
      if guard.should_stop(done) and done < config.total_steps:
        if last_saved != done:
          ckpt.save(done, state, train_iter.get_state(), config, force=True)
        out.preempted_at = done
        break
      if validator.is_due(done):
        out.validation, results = validator(state, done)
        out.evals.update(results)
        writer.write_scalars(done, out.validation, split="validation")
        ckpt.save_best(done, state, train_iter.get_state(), config,
                       {"val_loss": out.validation.get("val_loss", float("nan"))})
        if main:
          bar.write(f"step {done}: " + ", ".join(
              f"{k}={v:.4g}" for k, v in out.validation.items() if isinstance(v, float)))
  finally:
    bar.close()
  ckpt.wait()
  return out
