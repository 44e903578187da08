"""Train state, the jitted sharded train step and the eval step.

One `jax.jit` step `(state, batch, rng) -> (state, metrics)` with explicit NamedShardings:
the state as `state_shardings` (replicated, or FSDP-sharded by parallel.py's rules), the batch
split over ('data', 'fsdp'), rng and metrics replicated; the state is donated. Because the
loss is written over the global batch (objective.py), the InfoNCE negatives span all devices
and the gradients equal the single-device ones.

A step whose loss or gradients are not finite leaves params and optimizer state untouched;
it is counted in `state.nonfinite_steps` and `state.consecutive_nonfinite` (reset by the next
good step), and reported as metrics['skipped']. `state.step` counts every step (applied or
skipped); the LR schedule follows applied updates only (optax's own count).

The step's rng is `fold_in(rng, state.step)`, so the same (state, batch, rng) is
deterministic and a fixed base rng gives a fresh mask every step.

API:
  TrainState(step, params, opt_state, nonfinite_steps, consecutive_nonfinite): flax struct.
  make_loss_fn(config) -> loss_fn(params, batch, rng) -> (loss, metrics) (un-jitted).
  create_train_state(config, mesh, rng) -> (state, state_shardings); params are created
    directly sharded; with model.text.kind='hf_bert' the text tower holds the imported
    weights. It and make_train_step first run config_validation.validate_config against the
    mesh's devices.
  make_train_step(config, mesh, state_shardings) -> train_step(state, batch, rng) ->
    (state, metrics). batch: {'ecg' (B, 12, S) float32, 'tokens' (B, L) int32} (with a frozen
    text tower 'text_emb' (B, dim) float32 instead of 'tokens': no text forward); extra keys
    are ignored. metrics (replicated scalars): loss, rec_loss, nce_loss, mi_signal_nats,
    mi_text_nats, temperature, grad_norm, lr, retrieval_top1, mask_fraction, skipped,
    nonfinite_steps. `train_step.jitted` is the underlying jitted function.
  make_eval_step(config, mesh, state_shardings) -> eval_step(state, batch, rng) -> metrics:
    the objective's losses on a validation batch (the masked forward with `rng`), replicated.
    Embeddings for retrieval and probes come from `merit_jax.encoder.Encoder.from_params`,
    the one jitted embedding. Eval batches must divide over the mesh's data x fsdp devices
    (pad the last one).
"""

from typing import Any, Callable

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from merit_jax import config_validation
from merit_jax import objective
from merit_jax import optim
from merit_jax import parallel
from merit_jax.models import merit as merit_lib
from merit_jax.models import text as text_lib
from merit_jax.models import text_tower

# Passed on when the pipeline provides them: `has_report` (1 = the row has a report) keeps the
# rows of ECG-only sources out of InfoNCE.
OPTIONAL_BATCH_KEYS = ("has_report",)


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any
  nonfinite_steps: jax.Array
  consecutive_nonfinite: jax.Array


def text_batch_key(config) -> str:
  """'text_emb' (cached frozen-tower embeddings) or 'tokens' (a text tower that trains)."""
  return "text_emb" if text_tower.is_frozen(config.model.text) else "tokens"


def batch_keys(config) -> tuple[str, str]:
  return ("ecg", text_batch_key(config))


def _validate(config, mesh) -> None:
  """config_validation.validate_config against this mesh's devices (ConfigError names the key)."""
  config_validation.validate_config(config, num_devices=mesh.size, check_paths=False)


def _dummy_inputs(config, batch: int = 1):
  ecg = jnp.zeros((batch, int(config.model.num_leads), int(config.data.preprocess.num_samples)),
                  jnp.float32)
  return ecg, merit_lib.dummy_text_input(config, batch)


def _pretrained_text_params(config):
  """Pretrained weights of the text params that train: a BERT tower, or a Gemma head."""
  text = config.model.text
  if text_tower.is_frozen(text) and text_tower.tune_blocks(text):
    from merit_jax.models import gemma_text_head  # pylint: disable=g-import-not-at-top
    return gemma_text_head.pretrained_params(text)
  if text.kind != "hf_bert" or text_tower.is_frozen(text):
    return None
  params, _ = text_lib.hf_bert_params(text.hf_dir)
  return params


def create_train_state(config, mesh, rng) -> tuple[TrainState, Any]:
  """Initialises params (directly sharded) and optimizer state; returns (state, shardings)."""
  _validate(config, mesh)
  model = merit_lib.build_model(config)
  tx = optim.make_optimizer(config.optim, config.total_steps)
  rules = parallel.rules_for(config.mesh)
  ecg, tokens = _dummy_inputs(config)

  def init_boxed(key):
    params_key, mask_key = jax.random.split(key)
    return model.init({"params": params_key}, ecg, tokens, mask_key, reconstruction=True,
                      contrastive=True, contrastive_view="masked")["params"]

  abstract_boxed = jax.eval_shape(init_boxed, rng)
  param_shardings = parallel.state_shardings(abstract_boxed, mesh, rules)
  abstract_params = nn.unbox(abstract_boxed)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  rep = parallel.replicated(mesh)
  opt_shardings = optax.tree_map_params(tx, lambda _, s: s, abstract_opt, param_shardings,
                                        transform_non_params=lambda _: rep)
  shardings = TrainState(step=rep, params=param_shardings, opt_state=opt_shardings,
                         nonfinite_steps=rep, consecutive_nonfinite=rep)

  text_params = _pretrained_text_params(config)
  if text_params is not None:
    expected = jax.tree.map(lambda x: x.shape, abstract_params["text_encoder"])
    got = jax.tree.map(np.shape, text_params)
    if expected != got:
      raise ValueError(f"config.model.text ({config.model.text.kind}): the pretrained "
                       f"weight shapes {got} do not match the text encoder built from the "
                       f"config, {expected}")

  def init_state(key, pretrained_text):
    params = nn.unbox(init_boxed(key))
    if pretrained_text is not None:
      params = dict(params, text_encoder=pretrained_text)
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=params, opt_state=tx.init(params),
                      nonfinite_steps=zero, consecutive_nonfinite=zero)

  text_shardings = None if text_params is None else param_shardings["text_encoder"]
  state = jax.jit(init_state, in_shardings=(rep, text_shardings),
                  out_shardings=shardings)(rng, text_params)
  return state, shardings


def _select_batch(batch, keys: tuple[str, ...]) -> dict[str, Any]:
  missing = [k for k in keys if k not in batch]
  if missing:
    raise KeyError(f"batch is missing {missing}; expected keys {keys}")
  return {k: batch[k] for k in keys + OPTIONAL_BATCH_KEYS if k in batch}


def make_loss_fn(config) -> Callable:
  """loss_fn(params, batch, rng) -> (loss, metrics): the un-jitted objective of one step."""
  model = merit_lib.build_model(config)
  obj_cfg = config.objective
  flags = objective.objective_flags(obj_cfg)
  text_key = text_batch_key(config)

  def loss_fn(params, batch, rng):
    outputs = model.apply({"params": params}, batch["ecg"], batch[text_key], rng, **flags)
    return objective.merit_loss(outputs, batch, obj_cfg)

  return loss_fn


def make_train_step(config, mesh, state_shardings) -> Callable:
  """Returns train_step(state, batch, rng) -> (state, metrics), jitted with shardings."""
  _validate(config, mesh)
  loss_fn = make_loss_fn(config)
  tx = optim.make_optimizer(config.optim, config.total_steps)
  schedule = optim.make_schedule(config.optim, config.total_steps)
  global_batch = int(config.batch_size)

  def step_fn(state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch, rng)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(  # noqa: E731
        lambda n, o: jnp.where(finite, n, o), new, old)
    skipped = 1 - finite.astype(jnp.int32)
    new_state = TrainState(
        step=state.step + 1,
        params=keep(new_params, state.params),
        opt_state=keep(new_opt_state, state.opt_state),
        nonfinite_steps=state.nonfinite_steps + skipped,
        consecutive_nonfinite=(state.consecutive_nonfinite + 1) * skipped)
    metrics = dict(metrics, grad_norm=grad_norm,
                   lr=schedule(state.step - state.nonfinite_steps),
                   skipped=skipped, nonfinite_steps=new_state.nonfinite_steps)
    return new_state, metrics

  rep = parallel.replicated(mesh)
  jitted = jax.jit(step_fn,
                   in_shardings=(state_shardings, parallel.batch_sharding(mesh), rep),
                   out_shardings=(state_shardings, rep), donate_argnums=(0,))

  keys = batch_keys(config)

  def train_step(state, batch, rng):
    selected = _select_batch(batch, keys)
    if selected["ecg"].shape[0] != global_batch:
      raise ValueError(f"train_step: batch has {selected['ecg'].shape[0]} examples, "
                       f"config.batch_size is {global_batch}")
    return jitted(state, selected, rng)

  train_step.jitted = jitted
  return train_step


def make_eval_step(config, mesh, state_shardings) -> Callable:
  """Returns eval_step(state, batch, rng) -> metrics; see module docstring."""
  model = merit_lib.build_model(config)
  obj_cfg = config.objective
  flags = objective.objective_flags(obj_cfg)
  shards = parallel.num_batch_shards(mesh)
  keys = batch_keys(config)
  text_key = keys[1]

  def eval_fn(state: TrainState, batch, rng):
    variables = {"params": state.params}
    outputs = model.apply(variables, batch["ecg"], batch[text_key], rng, **flags)
    _, metrics = objective.merit_loss(outputs, batch, obj_cfg)
    return metrics

  rep = parallel.replicated(mesh)
  batch_sh = parallel.batch_sharding(mesh)
  jitted = jax.jit(eval_fn, in_shardings=(state_shardings, batch_sh, rep),
                   out_shardings=rep)

  def eval_step(state, batch, rng):
    selected = _select_batch(batch, keys)
    n = selected["ecg"].shape[0]
    if n % shards:
      raise ValueError(f"eval_step: batch of {n} does not divide over {shards} devices "
                       "(data x fsdp); pad the last batch")
    return jitted(state, selected, rng)

  eval_step.jitted = jitted
  return eval_step
