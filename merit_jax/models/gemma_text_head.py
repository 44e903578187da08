"""The trainable top of a Gemma 3 text tower: its last blocks over cached trunk states.

Gemma 3 270M's pooled hidden states are no sentence embedding (cosines to class prompts score
below chance), so as a text tower it has to be tuned; running all its blocks in every train
step would cost far more than the ECG side. The tower is therefore split at
`model.text.layer - model.text.tune_blocks`: the frozen trunk below runs once per distinct text
and its residual stream is cached like any frozen embedding (data/text_cache.py); the head here
holds the last `tune_blocks` blocks up to `model.text.layer`, starts from their pretrained
weights, trains with the rest of MERIT and pools. A train step runs `tune_blocks` Gemma blocks.

Packed input: one float32 array per text, (T, d_model + 1) — the trunk's states and, in the
last channel, 1 for a real token and 0 for right padding — so that the cache, the input
pipeline ('text_emb') and MERIT's text input keep one array per record.

API:
  pack(states (B, T, D), valid (B, T)) -> (B, T, D + 1) float32;  unpack(packed) -> (states,
    valid bool).
  GemmaTextHead(config, first_layer, num_blocks, pooling)(packed) -> {'pooled': (B, D) f32};
    its blocks are named `layer_<i>` as in `llm.gemma3.Gemma3`, i = first_layer, ... .
  build_head(text_cfg) -> GemmaTextHead;  pretrained_params(text_cfg) -> the head's params,
    the pretrained weights of those blocks.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from merit_jax.models import text_tower
from merit_jax.models.llm import gemma3


def pack(states: jax.Array, valid: jax.Array) -> jax.Array:
  return jnp.concatenate([states.astype(jnp.float32),
                          valid.astype(jnp.float32)[..., None]], axis=-1)


def unpack(packed: jax.Array) -> tuple[jax.Array, jax.Array]:
  return packed[..., :-1], packed[..., -1] > 0.5


class GemmaTextHead(nn.Module):
  """Gemma 3 blocks `first_layer .. first_layer + num_blocks - 1` and the pooling."""
  config: gemma3.Gemma3Config
  first_layer: int
  num_blocks: int
  pooling: str = "mean"

  @nn.compact
  def __call__(self, packed: jax.Array) -> dict[str, jax.Array]:
    cfg = self.config
    if packed.ndim != 3 or packed.shape[-1] != cfg.d_model + 1:
      raise ValueError(f"GemmaTextHead: expected packed trunk states (batch, tokens, "
                       f"{cfg.d_model + 1}), got {packed.shape}")
    states, valid = unpack(packed)
    # As `Gemma3.hidden_states` numbers right-padded tokens, so the head continues the trunk.
    positions = jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0).astype(jnp.int32)
    x = states.astype(jnp.dtype(cfg.dtype))
    for i in range(self.first_layer, self.first_layer + self.num_blocks):
      x, _ = gemma3.Block(cfg, cfg.is_global(i), name=f"layer_{i}")(
          x, positions, 0, positions, valid, None)
    return {"pooled": text_tower.pool_states(x, valid, self.pooling)}


def _gemma_config(text_cfg, dtype: str = "float32") -> gemma3.Gemma3Config:
  metadata = text_tower._gemma_metadata()[1]  # pylint: disable=protected-access
  return dataclasses.replace(gemma3.Gemma3Config.from_gguf_metadata(metadata),
                             logical_axes=True, dtype=dtype)


def build_head(text_cfg, dtype: str = "float32") -> GemmaTextHead:
  config = _gemma_config(text_cfg, dtype)
  tuned = text_tower.tune_blocks(text_cfg)
  first = text_tower.gemma_trunk_layers(text_cfg["layer"], tuned, config.num_layers)
  return GemmaTextHead(config, first, tuned, str(text_cfg["pooling"]))


def pretrained_params(text_cfg) -> dict:
  """The head's params: the packaged Gemma 3 weights of the blocks it holds (float32)."""
  from merit_jax.models.llm import gguf_loader  # pylint: disable=g-import-not-at-top
  head = build_head(text_cfg)
  _, params, _ = gemma3.load_pretrained(gguf_loader.default_gguf_path())
  layers = range(head.first_layer, head.first_layer + head.num_blocks)
  return {f"layer_{i}": params["params"][f"layer_{i}"] for i in layers}
