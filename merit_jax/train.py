"""MERIT pretraining entry point: flags, then config -> datasets -> state -> loop -> summary.

  python -m merit_jax.train --config=configs/pretrain.py:quick --workdir=/tmp/merit_quick
  python -m merit_jax.train --config=configs/pretrain.py --workdir=DIR --config.model.size=small

The run directory holds config.json, the tokenizer, metrics.jsonl (one JSON object per logged
step; validation entries carry "split": "validation"), TensorBoard events (tensorboard/),
checkpoints (checkpoints/, checkpoints_best/), reconstruction plots (plots/) and summary.json
(the last validation numbers and the results of the evaluators in `config.evals`, e.g. a
linear probe on frozen features). Missing datasets are built first (merit_jax/provision.py).
The library behind this entry point is merit_jax/training/. Restarting
with the same --workdir resumes from the latest complete checkpoint, data position included;
a checkpoint written with another model or preprocessing config is refused, naming the fields.
The workdir may be a `gs://` bucket: checkpoints go there directly, logs and plots are staged
locally and copied at every checkpoint.

Several processes (hosts) train one run together through jax.distributed:

  --distributed=auto                  Cloud TPU pods, SLURM (srun), Kubernetes: detected
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I   (implies explicit)

Each process reads only its shard of the data; checkpoints are written collectively; logs,
progress and single-writer files come from process 0. On SIGTERM every process stops at the
same step, saves a checkpoint and exits 0 (merit_jax/preemption.py); a process that dies
ends the others after --heartbeat_timeout_s. A run whose last
`config.max_consecutive_nonfinite` steps all had non-finite loss or gradients aborts with the
step and count.
"""

from __future__ import annotations

import functools
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging as absl_logging
import jax
import ml_collections
from ml_collections import config_flags

from merit_jax import checkpoint as checkpoint_lib
from merit_jax import cli
from merit_jax import config_validation
from merit_jax import distributed
from merit_jax import preemption
from merit_jax import provision
from merit_jax import run_logging
from merit_jax import xla_defaults

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file, e.g. configs/pretrain.py:quick.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed when it exists).")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "off", list(distributed.MODES),
    "Multi-process start-up: off (one process, unless --coordinator_address is given), auto "
    "(Cloud TPU / SLURM / Kubernetes detected by JAX), explicit (the three flags below).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0's coordinator (explicit mode).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Total number of processes (explicit mode).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's index in [0, num_processes) (explicit mode).")
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout_s", None,
    "Seconds after which a silent (dead) process ends all the others (default JAX's, 100).")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) pretraining in `workdir`; returns the final summary dict.

  Raises:
    preemption.Preempted: after a SIGTERM (to any process), once every process has saved the
      checkpoint of the step they agreed on. It is a SystemExit with status 0: uncaught, the
      program ends successfully, and rerunning it resumes.
    FloatingPointError: after config.max_consecutive_nonfinite consecutive non-finite steps.
    checkpoint.IncompatibleCheckpointError: the workdir's checkpoint is of another model.
    provision.DatasetNotFound: a dataset is neither built nor buildable.
  """
  t_start = time.time()
  workdir = os.fspath(checkpoint_lib.resolve_path(workdir))
  config = ml_collections.ConfigDict(config.to_dict())  # Unlocked private copy.
  # Before anything expensive: a bad value stops here with the key and the fix.
  config_validation.validate_config(config, jax.device_count(), jax.process_count())
  # First, so that a SIGTERM during set-up or compilation also ends in a checkpoint.
  guard = preemption.PreemptionGuard()
  try:
    return _train(config, workdir, guard, t_start)
  finally:
    guard.close()


def _train(config, workdir: str, guard: preemption.PreemptionGuard, t_start: float) -> dict:
  """train_and_evaluate's body (the guard is installed and removed around it)."""
  # Imported here, after main() has set XLA's flags and joined the distributed runtime.
  from merit_jax.training import loop  # pylint: disable=g-import-not-at-top
  from merit_jax.training import run_dir  # pylint: disable=g-import-not-at-top
  from merit_jax.training import setup as setup_lib  # pylint: disable=g-import-not-at-top
  from merit_jax.training import validation  # pylint: disable=g-import-not-at-top
  main = jax.process_index() == 0
  run = setup_lib.setup(config, workdir)
  logs = run_dir.log_dir(workdir, main)
  writer = run_logging.MetricWriter(logs, enabled=main, resume_step=run.start_step)
  upload = functools.partial(run_dir.upload_logs, logs, workdir)
  try:
    validator = validation.Validator(run, logs if main else None)
    outcome = loop.train(run, guard, validator, writer, upload)
  finally:
    run.checkpointer.close()  # Lets pending saves complete, also when the loop raised.
    writer.close()
    if main:
      upload()

  if outcome.preempted_at is not None:
    if main:
      print(f"preempted: stopped at step {outcome.preempted_at} on every process and saved "
            f"{run.checkpointer.latest.directory}/{outcome.preempted_at}; rerun the same "
            "command to resume", flush=True)
    raise preemption.Preempted(outcome.preempted_at)

  summary = {"final_step": int(config.total_steps), "resumed_from": int(run.start_step),
             "first_logged_loss": outcome.first_loss, "last_logged_loss": outcome.last_loss,
             "validation": outcome.validation, "evals": outcome.evals,
             "wall_time_s": time.time() - t_start}
  if main:
    run_dir.write_summary(workdir, summary)
    print(run_dir.summary_lines(summary), flush=True)
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError("both --config (e.g. configs/pretrain.py:quick) and --workdir are "
                         "required")
  # Before any other JAX call: XLA reads its flags, and joining the runtime must happen, before
  # the first backend is created.
  xla_defaults.apply()
  try:
    distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                           _PROCESS_ID.value, heartbeat_timeout_s=_HEARTBEAT_TIMEOUT.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if not flags.FLAGS["verbosity"].present:
    # Orbax logs every save step at INFO; keep the console to the progress bar and results,
    # and to errors on every process but the first.
    absl_logging.set_verbosity(absl_logging.WARNING if distributed.is_main_process()
                               else absl_logging.ERROR)
  try:
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (config_validation.ConfigError, checkpoint_lib.IncompatibleCheckpointError,
          provision.DatasetNotFound, FloatingPointError) as e:
    sys.exit(f"merit_jax.train: {e}")


def cli_main():
  """The `merit-train` / `python -m merit_jax.train` program."""
  app.run(main, flags_parser=cli.make_flags_parser("merit_jax.train"))


if __name__ == "__main__":
  cli_main()
