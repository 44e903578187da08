"""Optimiser from config: AdamW with linear warm-up then cosine decay, global-norm clipping.

Weight decay applies only to matrices (ndim >= 2) that are not embeddings or the mask token:
biases, LayerNorm params, the temperature, lead/time/token embeddings are not decayed.

API:
  make_schedule(optim_cfg, total_steps) -> optax schedule (step -> learning rate)
  make_optimizer(optim_cfg, total_steps) -> optax.GradientTransformation
    optim_cfg: lr, warmup_steps, weight_decay (0.05), b1 (0.9), b2 (0.95), grad_clip (1.0),
    optional min_lr_ratio (0.0; final lr = lr * min_lr_ratio).
  decay_mask(params) -> bool tree, True where weight decay applies.
"""

import jax
import optax

_NO_DECAY_NAMES = ("embedding", "mask_token", "logit_scale")


def _get(cfg, key, default):
  value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
  return default if value is None else value


def make_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
  lr = float(_get(optim_cfg, "lr", 1.5e-4))
  warmup = int(_get(optim_cfg, "warmup_steps", 0))
  total_steps = int(total_steps)
  if total_steps <= 0:
    raise ValueError(f"total_steps must be positive, got {total_steps}")
  if lr <= 0:
    raise ValueError(f"config.optim.lr must be positive, got {lr}")
  warmup = min(max(warmup, 0), total_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=lr * float(_get(optim_cfg, "min_lr_ratio", 0.0)))


def decay_mask(params):
  def decide(path, leaf):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    if getattr(leaf, "ndim", 0) < 2:
      return False
    return not any(tag in name for name in names for tag in _NO_DECAY_NAMES)

  return jax.tree_util.tree_map_with_path(decide, params)


def make_optimizer(optim_cfg, total_steps: int) -> optax.GradientTransformation:
  """AdamW + warm-up/cosine + clip_by_global_norm, all from `config.optim`."""
  chain = []
  clip = _get(optim_cfg, "grad_clip", 1.0)
  if clip and float(clip) > 0:
    chain.append(optax.clip_by_global_norm(float(clip)))
  chain.append(optax.adamw(
      learning_rate=make_schedule(optim_cfg, total_steps),
      b1=float(_get(optim_cfg, "b1", 0.9)), b2=float(_get(optim_cfg, "b2", 0.95)),
      weight_decay=float(_get(optim_cfg, "weight_decay", 0.05)), mask=decay_mask))
  return optax.chain(*chain)
