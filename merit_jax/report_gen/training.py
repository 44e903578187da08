"""Training the projector (and LoRA adapters) on precomputed ECG features, and its held-out loss.

One jitted step with the batch sharded over the mesh's ('data', 'fsdp') axes and the (frozen)
LLM and the trainable params replicated; Optax AdamW with warm-up and cosine decay from
`config.optim`. Batches are drawn from a per-epoch permutation, reshuffled at each epoch
boundary, so every batch has one static shape. Gradients are taken w.r.t. the trainable tree
{'projector', 'lora'} only; the LLM's params are an argument of the step, never updated.

`eval_loss` is the same report-token cross-entropy on another split (validation when choosing
a recipe), so recipes are compared on the quantity they train.
"""

from __future__ import annotations

import time

import jax
import numpy as np
import optax

from merit_jax import optim as optim_lib
from merit_jax import parallel
from merit_jax import run_logging
from merit_jax.report_gen import GenerateError
from merit_jax.report_gen import data as data_lib
from merit_jax.report_gen import projector as projector_lib


def make_train_step(gen: projector_lib.Generator, optimizer, mesh):
  """jit(trainable, opt_state, llm_params, batch) → (trainable, opt_state, metrics)."""
  data = parallel.batch_sharding(mesh)
  rep = parallel.replicated(mesh)

  def step(trainable, opt_state, llm_params, batch):
    (loss, count), grads = jax.value_and_grad(gen.loss, has_aux=True)(
        trainable, llm_params, batch["features"], batch["tokens"], batch["input_mask"],
        batch["loss_mask"])
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    return trainable, opt_state, {"loss": loss, "tokens": count,
                                  "grad_norm": optax.global_norm(grads)}

  return jax.jit(step, in_shardings=(rep, rep, rep, data), out_shardings=(rep, rep, rep),
                 donate_argnums=(0, 1))


def train_projector(config, gen: projector_lib.Generator, train: dict, mesh=None,
                    workdir: str | None = None,
                    progress: bool = True) -> tuple[dict, list[dict]]:
  """Trains the projector (and LoRA) on `train` = {'features', 'reports'[, 'prompts']}
  ('prompts': per-record prompt token ids instead of the run's one prompt).

  Logs loss, grad norm and seconds per step every `config.log_every` steps (and at the first
  and last) to the returned history and, with a `workdir`, to its metrics.jsonl and
  TensorBoard. Returns (trainable params on the host, history).
  """
  mesh = mesh or parallel.make_mesh(config.mesh)
  shards = parallel.num_batch_shards(mesh)
  bs = int(config.batch_size)
  if bs <= 0 or bs % shards:
    raise GenerateError(f"config.batch_size={bs} must be a positive multiple of the "
                        f"{shards} batch shards of the mesh")
  feats = np.asarray(train["features"], np.float32)
  tokens, input_mask, loss_mask = data_lib.training_sequences(
      gen.tokenizer, train.get("prompts", gen.prompt), train["reports"],
      int(config.max_report_tokens))
  trainable = projector_lib.init_trainable(gen, feats.shape[1:], int(config.lora_rank),
                                           int(config.seed), tuple(config.lora_targets))
  rep = parallel.replicated(mesh)
  trainable = jax.device_put(trainable, rep)
  llm_params = jax.device_put(gen.llm_params, rep)
  total = int(config.total_steps)
  optimizer = optim_lib.make_optimizer(config.optim, total)
  opt_state = jax.device_put(optimizer.init(trainable), rep)
  step_fn = make_train_step(gen, optimizer, mesh)
  data = parallel.batch_sharding(mesh)
  writer = run_logging.MetricWriter(workdir) if workdir else None
  bar = run_logging.ProgressBar(total, enabled=progress, desc="train projector")
  rng = np.random.default_rng(int(config.seed))
  order, pos = rng.permutation(len(feats)), 0
  history, window = [], []
  start = time.time()
  for step in range(1, total + 1):
    if pos + bs > len(order):  # Epoch boundary: reshuffle; batches keep one static shape.
      order, pos = rng.permutation(len(feats)), 0
    idx = order[pos:pos + bs] if bs <= len(order) else rng.choice(len(feats), bs)
    pos += bs
    batch = jax.device_put({"features": feats[idx], "tokens": tokens[idx],
                            "input_mask": input_mask[idx], "loss_mask": loss_mask[idx]}, data)
    trainable, opt_state, metrics = step_fn(trainable, opt_state, llm_params, batch)
    window.append(metrics)
    if step % int(config.log_every) == 0 or step == total or step == 1:
      host = jax.device_get(window)
      record = {"step": step, "loss": float(np.mean([m["loss"] for m in host])),
                "grad_norm": float(host[-1]["grad_norm"]),
                "seconds_per_step": (time.time() - start) / step}
      history.append(record)
      window = []
      if writer:
        writer.write_scalars(step, {k: v for k, v in record.items() if k != "step"})
      bar.update(0, loss=f"{record['loss']:.3f}")
    bar.update(1)
  bar.close()
  if writer:
    writer.close()
  return jax.device_get(trainable), history


def eval_loss(config, gen: projector_lib.Generator, trainable, split: dict) -> dict:
  """Teacher-forced report-token cross-entropy on `split` = {'features', 'reports'[,
  'prompts']}.

  Batches of config.eval.batch_size (the last padded with rows that score no token, so one
  compile); the mean is over every report token of the split, as the training loss is.
  Returns {'loss', 'tokens'}.
  """
  feats = np.asarray(split["features"], np.float32)
  tokens, input_mask, loss_mask = data_lib.training_sequences(
      gen.tokenizer, split.get("prompts", gen.prompt), split["reports"],
      int(config.max_report_tokens))
  bs = int(config.eval.batch_size)
  loss_fn = jax.jit(gen.loss)
  total, count = 0.0, 0.0
  for start in range(0, len(feats), bs):
    idx = np.arange(start, min(start + bs, len(feats)))
    pad = bs - len(idx)
    rows = np.concatenate([idx, np.full(pad, idx[-1])]) if pad else idx
    mask = loss_mask[rows].copy()
    mask[len(idx):] = False  # Padding rows: context only, no targets.
    mean, n = loss_fn(trainable, gen.llm_params, feats[rows], tokens[rows], input_mask[rows],
                      mask)
    total += float(mean) * float(n)
    count += float(n)
  return {"loss": total / max(count, 1.0), "tokens": int(count)}
