"""FSDP (ZeRO-3 style) sharding against pure data parallelism, on 8 simulated CPU devices.

The same tiny model (configs/pretrain.py:test) trains 20 steps on the same synthetic global
batches twice: mesh data=8 (params and optimizer state replicated) and mesh data=1 x fsdp=8
(params and optimizer state split over the fsdp axis by the config's logical axis rules). The
loss curves must agree, and each FSDP device must hold about 1/8 of the state.
"""

import jax
import numpy as np
import pytest

from configs import pretrain
from merit_jax import config_validation
from merit_jax import parallel
from merit_jax import step as step_lib
from tests import multihost_worker

STEPS = 20


def _config(data: int, fsdp: int):
  config = pretrain.get_config("test")
  config.model.text.vocab_size = multihost_worker.VOCAB_SIZE
  config.mesh.data, config.mesh.fsdp = data, fsdp
  config.total_steps = STEPS
  return config


def _train(data: int, fsdp: int):
  config = _config(data, fsdp)
  mesh = parallel.make_mesh(config.mesh)
  state, shardings = step_lib.create_train_state(config, mesh, jax.random.key(0))
  initial_state = state
  per_device = _bytes_per_device(initial_state)
  train_step = step_lib.make_train_step(config, mesh, shardings)
  losses = []
  for step in range(STEPS):
    batch = multihost_worker.global_batch(step, config.batch_size,
                                          config.data.preprocess.num_samples,
                                          config.data.max_text_len)
    state, metrics = train_step(state, batch, jax.random.key(1))
    losses.append(metrics["loss"])
  return np.asarray(jax.device_get(losses)), state, per_device


def _bytes_per_device(state) -> dict:
  """Bytes of params + optimizer state held by each device, and the logical total."""
  leaves = jax.tree.leaves((state.params, state.opt_state))
  held = {}
  for leaf in leaves:
    for shard in leaf.addressable_shards:
      held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
  return {"total": sum(leaf.nbytes for leaf in leaves), "held": held}


@pytest.fixture(scope="module")
def runs():
  assert jax.device_count() == 8, "tests/conftest.py provides 8 simulated CPU devices"
  return {"dp": _train(8, 1), "fsdp": _train(1, 8)}


def test_fsdp_follows_the_data_parallel_loss_curve(runs):
  dp_losses, fsdp_losses = runs["dp"][0], runs["fsdp"][0]
  assert dp_losses.shape == (STEPS,) and np.all(np.isfinite(dp_losses))
  assert dp_losses[-1] < dp_losses[0]  # It trains.
  diff = float(np.abs(dp_losses - fsdp_losses).max())
  print(f"max |loss_fsdp - loss_dp| over {STEPS} steps: {diff:.3g}")
  assert diff <= 1e-4


def test_fsdp_holds_an_eighth_of_the_state_per_device(runs):
  for name, expected_max in (("dp", 1.0), ("fsdp", 0.15)):
    usage = runs[name][2]
    fractions = [held / usage["total"] for held in usage["held"].values()]
    assert len(fractions) == 8
    print(f"{name}: each device holds {max(fractions):.4f} of {usage['total']} bytes "
          "(params + optimizer state)")
    assert max(fractions) <= expected_max + 1e-9
  usage = runs["fsdp"][2]
  assert max(usage["held"].values()) >= usage["total"] / 8  # Nothing lost.
  # The big kernels are split on the fsdp axis; the trained state keeps the layout.
  state = runs["fsdp"][1]
  kernel = state.params["encoder"]["transformer"]["block0"]["mlp"]["fc1"]["kernel"]
  assert "fsdp" in jax.tree.leaves(tuple(kernel.sharding.spec))
  assert kernel.addressable_shards[0].data.size == kernel.size // 8


def test_rules_come_from_the_config():
  assert (parallel.rules_for({"data": 1, "fsdp": 8, "rules": None})
          == parallel.logical_axis_rules("fsdp"))
  assert (parallel.rules_for({"data": 8, "fsdp": 1, "rules": None})
          == parallel.logical_axis_rules("replicate"))
  assert (parallel.rules_for({"data": 1, "fsdp": 8, "rules": "replicate"})
          == parallel.logical_axis_rules("replicate"))
  with pytest.raises(ValueError, match="unknown logical axis rule set"):
    parallel.rules_for({"fsdp": 8, "rules": "zero9"})


def test_mesh_that_does_not_fit_the_devices_is_a_clear_error():
  with pytest.raises(ValueError, match=r"data=3 x fsdp=2 = 6 devices, but 8 are available"):
    parallel.make_mesh({"data": 3, "fsdp": 2})
  with pytest.raises(config_validation.ConfigError, match=r"config.mesh data=3 x fsdp=2"):
    config_validation.validate_config(_config(3, 2), num_devices=8)
  with pytest.raises(config_validation.ConfigError, match=r"config.mesh.fsdp=3 does not divide"):
    config_validation.validate_config(_config(-1, 3), num_devices=8)
