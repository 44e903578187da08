"""The jitted, sharded train step: multi-device == single device, non-finite skip, configs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from merit_jax import config_validation
from merit_jax import objective
from merit_jax import optim
from merit_jax import parallel
from merit_jax import step
from merit_jax.models import merit as merit_lib
from tests.test_models import tiny_batch
from tests.test_models import tiny_config


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _assert_trees_close(a, b, atol):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0,
                               err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def sharded():
  """State, train step and a batch on the 8-device ('data'=8, 'fsdp'=1) mesh."""
  assert jax.device_count() == 8, "conftest should provide 8 simulated CPU devices"
  config = tiny_config()
  mesh = parallel.make_mesh(config.mesh)
  assert dict(mesh.shape) == {"data": 8, "fsdp": 1}
  state, shardings = step.create_train_state(config, mesh, jax.random.key(0))
  train_step = step.make_train_step(config, mesh, shardings)
  batch = jax.device_put(tiny_batch(8), parallel.batch_sharding(mesh))
  return dict(config=config, mesh=mesh, state=state, shardings=shardings,
              train_step=train_step, batch=batch)


def test_make_mesh_shapes_and_errors():
  assert dict(parallel.make_mesh(dict(data=-1, fsdp=1)).shape) == {"data": 8, "fsdp": 1}
  assert dict(parallel.make_mesh(dict(data=2, fsdp=-1)).shape) == {"data": 2, "fsdp": 4}
  one = parallel.make_mesh(dict(data=-1, fsdp=1), devices=jax.devices()[:1])
  assert one.devices.size == 1
  with pytest.raises(ValueError, match="but 8 are available"):
    parallel.make_mesh(dict(data=2, fsdp=2))
  with pytest.raises(ValueError, match="does not divide the 8 available devices"):
    parallel.make_mesh(dict(data=-1, fsdp=3))
  with pytest.raises(ValueError, match="at most one"):
    parallel.make_mesh(dict(data=-1, fsdp=-1))


def test_config_validation_errors():
  """Both entry points into the step check the config (config_validation) before compute."""
  mesh = parallel.make_mesh(dict(data=-1, fsdp=1))
  config = tiny_config()
  config.batch_size = 12
  with pytest.raises(config_validation.ConfigError, match="batch_size=12 .* 8 devices"):
    step.create_train_state(config, mesh, jax.random.key(0))
  config = tiny_config()
  config.model.patch_size = 40
  with pytest.raises(config_validation.ConfigError,
                     match="patch_size=40 does not divide .*num_samples=500"):
    step.make_train_step(config, mesh, None)
  config = tiny_config(contrastive_view="half")
  with pytest.raises(config_validation.ConfigError,
                     match="contrastive_view='half' must be one of 'masked', 'full'"):
    step.make_train_step(config, mesh, None)


def test_fsdp_rules_shard_params_and_optimizer_state():
  config = tiny_config()
  config.mesh.update(data=2, fsdp=4)
  mesh = parallel.make_mesh(config.mesh)
  model = merit_lib.build_model(config)
  batch = tiny_batch(2)
  abstract = jax.eval_shape(
      lambda k: model.init({"params": k}, batch["ecg"], batch["tokens"], k)["params"],
      jax.random.key(0))
  shardings = parallel.state_shardings(abstract, mesh, parallel.rules_for(config.mesh))
  fc1 = shardings["encoder"]["transformer"]["block0"]["mlp"]["fc1"]["kernel"]
  assert fc1.spec == jax.sharding.PartitionSpec(None, "fsdp")  # (embed 32, mlp 64): mlp.
  assert shardings["logit_scale"].spec == jax.sharding.PartitionSpec()
  # Default rules replicate everything.
  replicated = parallel.state_shardings(abstract, mesh, parallel.logical_axis_rules())
  assert all(s.spec == jax.sharding.PartitionSpec(*([None] * len(s.spec)))
             for s in jax.tree.leaves(replicated))
  tx = optim.make_optimizer(config.optim, 10)
  opt = optax.tree_map_params(tx, lambda _, s: s, jax.eval_shape(tx.init, nn.unbox(abstract)),
                              shardings, transform_non_params=lambda _: None)
  assert opt[1][0].mu["encoder"]["transformer"]["block0"]["mlp"]["fc1"]["kernel"] == fc1


def test_eight_devices_equal_single_device(sharded):
  """Loss, gradients and the update on 8 devices equal one device (negatives span all)."""
  config, mesh, state = sharded["config"], sharded["mesh"], sharded["state"]
  params0, opt0 = _host(state.params), _host(state.opt_state)
  batch_host = _host(sharded["batch"])
  rng = jax.random.key(7)
  step_rng = jax.random.fold_in(rng, 0)  # What the step uses at state.step == 0.
  grad_fn = jax.value_and_grad(step.make_loss_fn(config), has_aux=True)

  one = jax.devices()[0]
  (loss1, metrics1), grads1 = jax.jit(grad_fn)(
      jax.device_put(params0, one), jax.device_put(batch_host, one), step_rng)
  rep = parallel.replicated(mesh)
  (loss8, metrics8), grads8 = jax.jit(
      grad_fn, in_shardings=(sharded["shardings"].params, parallel.batch_sharding(mesh), rep))(
          state.params, sharded["batch"], step_rng)
  np.testing.assert_allclose(float(loss8), float(loss1), atol=1e-5, rtol=0)
  np.testing.assert_allclose(float(metrics8["nce_loss"]), float(metrics1["nce_loss"]), atol=1e-5)
  _assert_trees_close(grads8, grads1, atol=1e-5)
  assert float(metrics1["nce_loss"]) > 0 and float(metrics1["rec_loss"]) > 0

  # The full train step on 8 devices = one optax update from the single-device gradients.
  new_state, metrics = sharded["train_step"](state, sharded["batch"], rng)
  sharded["state"] = new_state
  np.testing.assert_allclose(float(metrics["loss"]), float(loss1), atol=1e-5, rtol=0)
  np.testing.assert_allclose(float(metrics["grad_norm"]), float(optax.global_norm(grads1)),
                             rtol=1e-5)
  tx = optim.make_optimizer(config.optim, config.total_steps)
  expected = _host(jax.jit(lambda g, o, p: optax.apply_updates(p, tx.update(g, o, p)[0]))(
      grads1, jax.device_put(opt0, one), jax.device_put(params0, one)))
  # Adam's first step is lr * g / (|g| + eps): for gradients that are zero up to rounding
  # (e.g. attention key biases, to which softmax is invariant) it amplifies float noise to
  # +-lr, so those entries are compared only where the gradient is not negligible.
  new_params = _host(new_state.params)
  for (path, g), new, exp in zip(jax.tree_util.tree_leaves_with_path(_host(grads1)),
                                 jax.tree.leaves(new_params), jax.tree.leaves(expected)):
    significant = np.abs(g) > 1e-4
    np.testing.assert_allclose(new[significant], exp[significant], atol=1e-5, rtol=0,
                               err_msg=jax.tree_util.keystr(path))
  assert int(new_state.step) == 1 and int(metrics["skipped"]) == 0
  for key in ("loss", "rec_loss", "nce_loss", "mi_signal_nats", "mi_text_nats", "temperature",
              "grad_norm", "lr", "retrieval_top1", "nonfinite_steps"):
    assert np.isfinite(float(metrics[key])), key
  np.testing.assert_allclose(float(metrics["lr"]), config.optim.lr, rtol=1e-6)  # No warm-up.


def test_step_is_deterministic_per_state_batch_rng(sharded):
  state, train_step = sharded["state"], sharded["train_step"]
  copy = lambda s: jax.tree.map(lambda x: x.copy(), s)  # noqa: E731  (the step donates)
  _, m_a = train_step(copy(state), sharded["batch"], jax.random.key(3))
  _, m_b = train_step(copy(state), sharded["batch"], jax.random.key(3))
  _, m_c = train_step(copy(state), sharded["batch"], jax.random.key(4))
  assert float(m_a["loss"]) == float(m_b["loss"])
  assert float(m_a["rec_loss"]) != float(m_c["rec_loss"])  # Another mask.


def test_nonfinite_batch_skips_update_and_is_counted(sharded):
  state, train_step, mesh = sharded["state"], sharded["train_step"], sharded["mesh"]
  before_params, before_opt = _host(state.params), _host(state.opt_state)
  bad = jax.tree.map(np.array, _host(sharded["batch"]))  # Writable copies.
  bad["ecg"][3, 2, 10] = np.nan
  bad = jax.device_put(bad, parallel.batch_sharding(mesh))
  state, metrics = train_step(state, bad, jax.random.key(5))
  assert int(metrics["skipped"]) == 1 and int(metrics["nonfinite_steps"]) == 1
  assert int(state.nonfinite_steps) == 1 and int(state.consecutive_nonfinite) == 1
  assert int(state.step) == 2
  _assert_trees_close(state.params, before_params, atol=0)
  _assert_trees_close(state.opt_state, before_opt, atol=0)
  state, metrics = train_step(state, sharded["batch"], jax.random.key(5))
  assert int(metrics["skipped"]) == 0 and int(state.consecutive_nonfinite) == 0
  assert int(state.nonfinite_steps) == 1
  assert not np.allclose(_host(state.params)["logit_scale"], before_params["logit_scale"])
  sharded["state"] = state


def test_eval_step_returns_the_train_steps_losses(sharded):
  eval_step = step.make_eval_step(sharded["config"], sharded["mesh"], sharded["shardings"])
  batch = dict(_host(sharded["batch"]), ecg_id=np.arange(8))  # Extra keys are ignored.
  metrics = eval_step(sharded["state"], batch, jax.random.key(0))
  # The same loss computed directly from the model and the objective, outside any jit.
  config = sharded["config"]
  model = merit_lib.build_model(config)
  host_batch = _host(sharded["batch"])
  text_key = step.batch_keys(config)[1]
  outputs = model.apply({"params": _host(sharded["state"].params)}, host_batch["ecg"],
                        host_batch[text_key], jax.random.key(0),
                        **objective.objective_flags(config.objective))
  loss, _ = objective.merit_loss(outputs, host_batch, config.objective)
  np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-4)
  with pytest.raises(ValueError, match="pad the last batch"):
    eval_step(sharded["state"], tiny_batch(6), jax.random.key(0))


def test_optimizer_decay_mask_and_schedule():
  params = {"encoder": {"embed": {"lead_embedding": jnp.ones((12, 4)),
                                  "patch_proj": {"kernel": jnp.ones((5, 4)),
                                                 "bias": jnp.ones(4)}}},
            "logit_scale": jnp.ones(())}
  mask = optim.decay_mask(params)
  assert mask["encoder"]["embed"]["patch_proj"]["kernel"]
  assert not mask["encoder"]["embed"]["patch_proj"]["bias"]
  assert not mask["encoder"]["embed"]["lead_embedding"] and not mask["logit_scale"]
  schedule = optim.make_schedule(dict(lr=1.0, warmup_steps=10, min_lr_ratio=0.0), 110)
  np.testing.assert_allclose([float(schedule(s)) for s in (0, 5, 10, 60, 110)],
                             [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
  # Cosine from lr to lr * min_lr_ratio over the 100 steps after warm-up.
  schedule = optim.make_schedule(dict(lr=2.0, warmup_steps=10, min_lr_ratio=0.1), 110)
  steps = np.array([10, 35, 60, 85, 110])
  expected = 0.2 + (2.0 - 0.2) * (1 + np.cos(np.pi * (steps - 10) / 100)) / 2
  np.testing.assert_allclose([float(schedule(s)) for s in steps], expected, rtol=1e-5)
