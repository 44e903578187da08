"""One process of a multi-process training check (run by tests/test_multihost.py).

  python tests/multihost_worker.py --out=DIR [--num_processes=N --process_id=I
      --coordinator_address=127.0.0.1:PORT] [--steps=20] [--measure_stop_check=200]

Trains the `configs/pretrain.py:test` model for `--steps` steps through the project's own
sharded train step over every device of every process (mesh data = all devices), on
deterministic synthetic global batches: batch k is the same array in every run, whatever the
process count, and each process supplies only the slices its own devices hold. Process 0 then
writes the losses and the final parameters (gathered from all processes) to
DIR/result.npz, so runs with different process counts can be compared exactly.

The device count per process comes from XLA_FLAGS (--xla_force_host_platform_device_count).

--measure_stop_check=N (not used by the tests) then times N more train steps three ways: plain,
with PreemptionGuard.should_stop after each step (what train.py does), and with an all-gather
of a stop flag after each step (the alternative it avoids), and prints ms per step.
"""

import argparse
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VOCAB_SIZE = 64


def global_batch(step: int, batch_size: int, num_samples: int, text_len: int):
  """The step's global batch: identical for every process count (a function of the step)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1000 + step)
  tokens = rng.integers(4, VOCAB_SIZE, (batch_size, text_len)).astype(np.int32)
  tokens[:, text_len // 2:] *= rng.random((batch_size, 1)) < 0.5  # Some padded reports.
  return {"ecg": rng.standard_normal((batch_size, 12, num_samples)).astype(np.float32),
          "tokens": tokens}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--coordinator_address", default=None)
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--measure_stop_check", type=int, default=0)
  args = parser.parse_args()

  from merit_jax import distributed  # pylint: disable=g-import-not-at-top
  if args.num_processes > 1:
    distributed.initialize("explicit", args.coordinator_address, args.num_processes,
                           args.process_id, heartbeat_timeout_s=30,
                           initialization_timeout_s=120)

  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from configs import pretrain  # pylint: disable=g-import-not-at-top
  from merit_jax import parallel  # pylint: disable=g-import-not-at-top
  from merit_jax import step as step_lib  # pylint: disable=g-import-not-at-top

  setup_start = time.time()
  config = pretrain.get_config("test")
  config.model.text.vocab_size = VOCAB_SIZE
  config.mesh.data, config.mesh.fsdp = -1, 1
  config.total_steps = args.steps
  mesh = parallel.make_mesh(config.mesh)
  state, shardings = step_lib.create_train_state(config, mesh, jax.random.key(0))
  train_step = step_lib.make_train_step(config, mesh, shardings)
  batch_sharding = parallel.batch_sharding(mesh)

  jax.block_until_ready(state)
  setup_seconds = time.time() - setup_start
  losses = []
  start = time.time()
  for step in range(args.steps):
    host = global_batch(step, config.batch_size, config.data.preprocess.num_samples,
                        config.data.max_text_len)
    batch = {k: jax.make_array_from_callback(v.shape, batch_sharding, lambda idx, v=v: v[idx])
             for k, v in host.items()}
    state, metrics = train_step(state, batch, jax.random.key(1))
    losses.append(metrics["loss"])
    if step == 0:
      jax.block_until_ready(metrics)
      first_step_seconds = time.time() - start
      start = time.time()
  losses = np.asarray(jax.device_get(losses))
  seconds = time.time() - start

  if args.measure_stop_check:
    from merit_jax import preemption  # pylint: disable=g-import-not-at-top
    guard = preemption.PreemptionGuard()
    checks = {"plain": lambda step: False, "PreemptionGuard.should_stop": guard.should_stop,
              "process_allgather(flag)": lambda step: bool(np.asarray(
                  multihost_utils.process_allgather(np.int32(0))).any())}
    for name, check in checks.items():
      t0 = time.time()
      for step in range(args.measure_stop_check):
        state, metrics = train_step(state, batch, jax.random.key(1))
        check(step)
      jax.block_until_ready(state)
      if jax.process_index() == 0:
        print(f"stop check {name}: {1e3 * (time.time() - t0) / args.measure_stop_check:.2f} "
              "ms per step", flush=True)
    guard.close()

  params = multihost_utils.process_allgather(state.params, tiled=True)
  flat = {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
  if jax.process_index() == 0:
    os.makedirs(args.out, exist_ok=True)
    np.savez(os.path.join(args.out, "result.npz"), losses=losses, **flat)
    print(f"processes={jax.process_count()} devices={jax.device_count()} "
          f"steps={args.steps} setup_seconds={setup_seconds:.1f} first_step_seconds="
          f"{first_step_seconds:.1f} seconds_per_step={seconds / max(args.steps - 1, 1):.3f}",
          flush=True)


if __name__ == "__main__":
  main()
