"""Optimiser from config: AdamW with linear warm-up then cosine decay, global-norm clipping.

Weight decay applies only to matrices (ndim >= 2) that are not embeddings or the mask token:
biases, LayerNorm params, the temperature, lead/time/token embeddings are not decayed.

API:
  make_schedule(optim_cfg, total_steps) -> optax schedule (step -> learning rate)
  make_optimizer(optim_cfg, total_steps) -> optax.GradientTransformation
    optim_cfg: `config.optim` (or a mapping with its keys): lr, warmup_steps, weight_decay,
    b1, b2, grad_clip (None or 0 = no clipping), min_lr_ratio (final lr = lr * min_lr_ratio),
    text_lr_scale (the `text_encoder` params' updates scaled by it: their learning rate and
    decay are lr * text_lr_scale); the defaults are in configs/pretrain.py.
  decay_mask(params) -> bool tree, True where weight decay applies.
"""

import jax
import optax

_NO_DECAY_NAMES = ("embedding", "mask_token", "logit_scale")


def make_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
  lr = float(optim_cfg["lr"])
  warmup = int(optim_cfg["warmup_steps"])
  total_steps = int(total_steps)
  if total_steps <= 0:
    raise ValueError(f"total_steps must be positive, got {total_steps}")
  warmup = min(max(warmup, 0), total_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=lr * float(optim_cfg["min_lr_ratio"]))


def decay_mask(params):
  def decide(path, leaf):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    if getattr(leaf, "ndim", 0) < 2:
      return False
    return not any(tag in name for name in names for tag in _NO_DECAY_NAMES)

  return jax.tree_util.tree_map_with_path(decide, params)


def text_encoder_mask(params):
  """True under the top-level `text_encoder` subtree (a text tower that trains)."""
  return {k: jax.tree.map(lambda _, k=k: k == "text_encoder", v) for k, v in params.items()}


def make_optimizer(optim_cfg, total_steps: int) -> optax.GradientTransformation:
  """AdamW + warm-up/cosine + clip_by_global_norm, all from `config.optim`."""
  chain = []
  clip = optim_cfg["grad_clip"]
  if clip and float(clip) > 0:
    chain.append(optax.clip_by_global_norm(float(clip)))
  chain.append(optax.adamw(
      learning_rate=make_schedule(optim_cfg, total_steps),
      b1=float(optim_cfg["b1"]), b2=float(optim_cfg["b2"]),
      weight_decay=float(optim_cfg["weight_decay"]), mask=decay_mask))
  text_scale = float(optim_cfg.get("text_lr_scale", 1.0))
  if text_scale != 1.0:
    # Only when asked: the optimizer state of runs without it keeps its structure.
    chain.append(optax.masked(optax.scale(text_scale), text_encoder_mask))
  return optax.chain(*chain)
