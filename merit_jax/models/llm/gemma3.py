"""Gemma 3 text decoder in Flax Linen, with a functional KV cache and a soft-prefix input hook.

Architecture (as in Google's reference and llama.cpp): token embedding scaled by
sqrt(d_model); per block RMSNorm → GQA attention (per-head RMSNorm on q and k, rotate-half RoPE,
query scaled by query_pre_attn_scalar^-½) → RMSNorm, residual; RMSNorm → GeGLU MLP (tanh GELU)
→ RMSNorm, residual. Layers alternate 5 sliding-window ("local", RoPE base 10k) to 1 global
(RoPE base 1M) layer: layer i is global when (i + 1) % pattern == 0. The output projection is
tied to the embedding; final-logit soft-capping only when the config sets it (Gemma 3 does not).

RMSNorm scales multiply directly: they hold (1 + w) of the Hugging Face parameterisation, as
llama.cpp's converter stores them, so GGUF norm weights load unchanged and a fresh model's
scales start at 1.

The KV cache is a plain pytree (see `init_cache`): keys/values per layer written at slot
`cache['index']`, plus each slot's position and validity. Slots are filled in order, so
causality is "key slot <= query slot"; the sliding window compares positions. Left-padded
batches of prompts work through `input_mask` (pad slots are never attended to).
"""

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Cache = dict[str, Any]

# Large negative logit for masked attention entries: finite, so that a fully-masked row (a pad
# query) gives a uniform distribution instead of NaN.
_MASK_VALUE = -1e30


@dataclasses.dataclass(frozen=True)
class Gemma3Config:
  """Hyperparameters of a Gemma 3 text decoder."""
  vocab_size: int
  d_model: int
  num_layers: int
  ffn_dim: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  max_len: int = 32768
  rope_global_base: float = 1_000_000.0
  rope_local_base: float = 10_000.0
  rope_global_scale: float = 1.0  # Linear RoPE scaling of global layers (1 = none).
  sliding_window: int = 512
  sliding_window_pattern: int = 6
  rms_eps: float = 1e-6
  query_pre_attn_scalar: float | None = None  # None = head_dim.
  final_logit_softcap: float | None = None
  attn_logit_softcap: float | None = None
  dtype: str = "float32"  # Compute dtype; parameters keep the dtype they are given.
  # Name the kernels' axes for FSDP ('embed', 'heads', 'mlp'; merit_jax/parallel.py): set when
  # the blocks train inside MERIT's state (models/gemma_text_head.py); the LLM side of report
  # generation loads and applies plain arrays.
  logical_axes: bool = False

  def is_global(self, layer: int) -> bool:
    return (layer + 1) % self.sliding_window_pattern == 0

  @property
  def query_scale(self) -> float:
    scalar = self.query_pre_attn_scalar or self.head_dim
    return float(scalar) ** -0.5

  @classmethod
  def from_gguf_metadata(cls, metadata: Mapping[str, Any], **overrides) -> "Gemma3Config":
    """Config from GGUF metadata (`gemma3.*` keys); `overrides` replace fields."""
    arch = metadata.get("general.architecture")
    if arch != "gemma3":
      raise ValueError(f"GGUF metadata: general.architecture is {arch!r}, expected 'gemma3'")

    def get(key, default=None, required=True):
      full = f"gemma3.{key}"
      if full in metadata:
        return metadata[full]
      if required and default is None:
        raise KeyError(f"GGUF metadata lacks {full!r}")
      return default

    num_heads = int(get("attention.head_count"))
    d_model = int(get("embedding_length"))
    head_dim = int(get("attention.key_length", d_model // num_heads))
    value_dim = int(get("attention.value_length", head_dim))
    if value_dim != head_dim:
      raise ValueError(f"GGUF metadata: value_length {value_dim} != key_length {head_dim}")
    if "tokenizer.ggml.tokens" in metadata:
      vocab_size = len(metadata["tokenizer.ggml.tokens"])
    else:
      vocab_size = int(get("vocab_size"))
    softcap = get("final_logit_softcapping", required=False)
    attn_softcap = get("attn_logit_softcapping", required=False)
    scaling_type = get("rope.scaling.type", "none", required=False)
    scale = 1.0
    if scaling_type == "linear":
      scale = float(get("rope.scaling.factor", 1.0, required=False))
    fields = dict(
        vocab_size=vocab_size,
        d_model=d_model,
        num_layers=int(get("block_count")),
        ffn_dim=int(get("feed_forward_length")),
        num_heads=num_heads,
        num_kv_heads=int(get("attention.head_count_kv", num_heads)),
        head_dim=head_dim,
        max_len=int(get("context_length")),
        rope_global_base=float(get("rope.freq_base", 1_000_000.0)),
        # llama.cpp hard-codes 10k for Gemma 3's local layers (no GGUF key for it).
        rope_local_base=10_000.0,
        rope_global_scale=scale,
        sliding_window=int(get("attention.sliding_window", 512)),
        rms_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        final_logit_softcap=None if softcap is None else float(softcap),
        attn_logit_softcap=None if attn_softcap is None else float(attn_softcap),
    )
    fields.update(overrides)
    return cls(**fields)


def tiny_config(vocab_size: int = 97, **overrides) -> Gemma3Config:
  """A tiny Gemma 3 (random init) for tests: one local then one global layer, window 6."""
  fields = dict(
      vocab_size=vocab_size, d_model=32, num_layers=2, ffn_dim=64, num_heads=4,
      num_kv_heads=2, head_dim=8, max_len=128, sliding_window=6, sliding_window_pattern=2,
      final_logit_softcap=30.0)
  fields.update(overrides)
  return Gemma3Config(**fields)


def init_cache(config: Gemma3Config, batch_size: int, max_len: int,
               dtype: Any = jnp.float32) -> Cache:
  """An empty KV cache for `max_len` slots (prefix soft tokens + prompt + new tokens)."""
  shape = (batch_size, max_len, config.num_kv_heads, config.head_dim)
  return {
      "k": [jnp.zeros(shape, dtype) for _ in range(config.num_layers)],
      "v": [jnp.zeros(shape, dtype) for _ in range(config.num_layers)],
      "pos": jnp.zeros((batch_size, max_len), jnp.int32),
      "valid": jnp.zeros((batch_size, max_len), bool),
      "index": jnp.zeros((), jnp.int32),
  }


def _softcap(x: Array, cap: float | None) -> Array:
  return x if cap is None else cap * jnp.tanh(x / cap)


def apply_rope(x: Array, positions: Array, base: float, scale: float = 1.0) -> Array:
  """Rotate-half RoPE. x: (B, T, H, D); positions: (B, T)."""
  half = x.shape[-1] // 2
  inv_freq = 1.0 / (base ** (jnp.arange(half, dtype=jnp.float32) * 2.0 / x.shape[-1]))
  angles = positions.astype(jnp.float32)[..., None] / scale * inv_freq  # (B, T, half)
  sin = jnp.sin(angles)[:, :, None, :]
  cos = jnp.cos(angles)[:, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def _dense(cfg: Gemma3Config, features: int, name: str, axes: tuple[str, str], dtype):
  init = nn.linear.default_kernel_init
  if cfg.logical_axes:
    init = nn.with_logical_partitioning(init, axes)
  return nn.Dense(features, use_bias=False, dtype=dtype, kernel_init=init, name=name)


class RMSNorm(nn.Module):
  """RMSNorm whose scale multiplies directly (holds 1 + w; see module doc)."""
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * scale.astype(jnp.float32)).astype(x.dtype)


class Attention(nn.Module):
  """Grouped-query attention with q/k RMSNorm, RoPE and an optional sliding window."""
  config: Gemma3Config
  is_global: bool

  @nn.compact
  def __call__(self, x, positions, slot_index, key_pos, key_valid, cache_kv):
    cfg = self.config
    b, t, _ = x.shape
    dense = lambda n, name, axes: _dense(cfg, n, name, axes, x.dtype)
    q = dense(cfg.num_heads * cfg.head_dim, "q_proj", ("embed", "heads"))(x)
    k = dense(cfg.num_kv_heads * cfg.head_dim, "k_proj", ("embed", "kv"))(x)
    v = dense(cfg.num_kv_heads * cfg.head_dim, "v_proj", ("embed", "kv"))(x)
    q = q.reshape(b, t, cfg.num_heads, cfg.head_dim)
    k = k.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
    v = v.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
    q = RMSNorm(cfg.rms_eps, name="q_norm")(q)
    k = RMSNorm(cfg.rms_eps, name="k_norm")(k)
    if self.is_global:
      base, scale = cfg.rope_global_base, cfg.rope_global_scale
    else:
      base, scale = cfg.rope_local_base, 1.0
    q = apply_rope(q, positions, base, scale) * jnp.asarray(cfg.query_scale, q.dtype)
    k = apply_rope(k, positions, base, scale)

    if cache_kv is not None:
      cache_k, cache_v = cache_kv
      k_all = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype),
                                           (0, slot_index, 0, 0))
      v_all = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype),
                                           (0, slot_index, 0, 0))
      new_kv = (k_all, v_all)
    else:
      k_all, v_all, new_kv = k, v, None
    s = k_all.shape[1]

    groups = cfg.num_heads // cfg.num_kv_heads
    q = q.reshape(b, t, cfg.num_kv_heads, groups, cfg.head_dim)
    logits = jnp.einsum("btkgd,bskd->bkgts", q.astype(jnp.float32),
                        k_all.astype(jnp.float32))
    logits = _softcap(logits, cfg.attn_logit_softcap)

    q_slot = slot_index + jnp.arange(t)
    k_slot = jnp.arange(s)
    mask = (k_slot[None, :] <= q_slot[:, None])[None]  # (1, T, S)
    mask = mask & key_valid[:, None, :]
    if not self.is_global:
      mask = mask & (positions[:, :, None] - key_pos[:, None, :] < cfg.sliding_window)
    logits = jnp.where(mask[:, None, None], logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v_all.astype(jnp.float32))
    out = out.reshape(b, t, cfg.num_heads * cfg.head_dim).astype(x.dtype)
    return dense(cfg.d_model, "o_proj", ("heads", "embed"))(out), new_kv


class MLP(nn.Module):
  """GeGLU feed-forward: down(gelu_tanh(gate(x)) * up(x))."""
  config: Gemma3Config

  @nn.compact
  def __call__(self, x):
    dense = lambda n, name, axes: _dense(self.config, n, name, axes, x.dtype)
    gate = dense(self.config.ffn_dim, "gate", ("embed", "mlp"))(x)
    up = dense(self.config.ffn_dim, "up", ("embed", "mlp"))(x)
    return dense(self.config.d_model, "down", ("mlp", "embed"))(
        nn.gelu(gate, approximate=True) * up)


class Block(nn.Module):
  """One Gemma 3 block with its four norms (pre/post attention, pre/post MLP)."""
  config: Gemma3Config
  is_global: bool

  @nn.compact
  def __call__(self, x, positions, slot_index, key_pos, key_valid, cache_kv):
    eps = self.config.rms_eps
    h = RMSNorm(eps, name="pre_attention_norm")(x)
    h, new_kv = Attention(self.config, self.is_global, name="attn")(
        h, positions, slot_index, key_pos, key_valid, cache_kv)
    x = x + RMSNorm(eps, name="post_attention_norm")(h)
    h = MLP(self.config, name="mlp")(RMSNorm(eps, name="pre_ffw_norm")(x))
    x = x + RMSNorm(eps, name="post_ffw_norm")(h)
    return x, new_kv


class Gemma3(nn.Module):
  """Gemma 3 decoder: (tokens, optional soft prefix, optional cache) → (logits, new cache)."""
  config: Gemma3Config

  def setup(self):
    cfg = self.config
    # std d^-1/2: inputs (scaled by sqrt(d)) have unit rms and tied logits are O(1).
    self.embedding = self.param(
        "embedding", nn.initializers.normal(stddev=cfg.d_model ** -0.5),
        (cfg.vocab_size, cfg.d_model))
    self.blocks = [Block(cfg, cfg.is_global(i), name=f"layer_{i}")
                   for i in range(cfg.num_layers)]
    self.final_norm = RMSNorm(cfg.rms_eps, name="final_norm")

  def embed(self, tokens: Array) -> Array:
    """Scaled token embeddings (B, T, d_model) in the compute dtype."""
    dtype = jnp.dtype(self.config.dtype)
    emb = jnp.take(self.embedding, tokens, axis=0).astype(dtype)
    return emb * jnp.asarray(math.sqrt(self.config.d_model), dtype)

  def __call__(
      self,
      tokens: Array,
      input_mask: Array | None = None,
      positions: Array | None = None,
      prefix_embeddings: Array | None = None,
      cache: Cache | None = None,
  ) -> tuple[Array, Cache | None]:
    """Runs the decoder on a chunk of inputs.

    Args:
      tokens: int (B, T) token ids.
      input_mask: bool (B, T), False at pad tokens (default all True). With a prefix, it
        covers the tokens only; prefix soft tokens are always valid.
      positions: int (B, k + T) positions of prefix + tokens. Default: with no cache,
        cumsum(mask) - 1; with a cache, continuing from the largest position in it.
      prefix_embeddings: float (B, k, d_model) soft tokens put before the token embeddings
        (already in the model's embedding space: not scaled by sqrt(d_model)).
      cache: from `init_cache` or a previous call; the chunk is written at `cache['index']`.

    Returns:
      (logits float32 (B, k + T, vocab), updated cache or None).
    """
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    b = tokens.shape[0]
    x = self.embed(tokens)
    mask = jnp.ones(tokens.shape, bool) if input_mask is None else input_mask.astype(bool)
    if prefix_embeddings is not None:
      if prefix_embeddings.shape[0] != b or prefix_embeddings.shape[-1] != cfg.d_model:
        raise ValueError(
            f"prefix_embeddings shape {prefix_embeddings.shape} does not match batch {b} and "
            f"d_model {cfg.d_model}")
      x = jnp.concatenate([prefix_embeddings.astype(dtype), x], axis=1)
      mask = jnp.concatenate([jnp.ones(prefix_embeddings.shape[:2], bool), mask], axis=1)
    t = x.shape[1]
    if positions is None:
      start = 0
      if cache is not None:
        # Next position after the last valid slot (0 for an empty cache).
        start = jnp.max(jnp.where(cache["valid"], cache["pos"] + 1, 0), axis=1,
                        keepdims=True)
      positions = start + jnp.cumsum(mask, axis=1) - 1
      positions = jnp.maximum(positions, 0)
    positions = positions.astype(jnp.int32)

    if cache is None:
      slot_index, key_pos, key_valid = 0, positions, mask
    else:
      slot_index = cache["index"]
      key_pos = jax.lax.dynamic_update_slice(cache["pos"], positions, (0, slot_index))
      key_valid = jax.lax.dynamic_update_slice(cache["valid"], mask, (0, slot_index))

    new_k, new_v = [], []
    for i, block in enumerate(self.blocks):
      cache_kv = None if cache is None else (cache["k"][i], cache["v"][i])
      x, kv = block(x, positions, slot_index, key_pos, key_valid, cache_kv)
      if kv is not None:
        new_k.append(kv[0])
        new_v.append(kv[1])
    x = self.final_norm(x)
    logits = jnp.einsum("btd,vd->btv", x.astype(jnp.float32),
                        self.embedding.astype(jnp.float32))
    logits = _softcap(logits, cfg.final_logit_softcap)
    new_cache = None
    if cache is not None:
      new_cache = {"k": new_k, "v": new_v, "pos": key_pos, "valid": key_valid,
                   "index": cache["index"] + t}
    return logits, new_cache


  def hidden_states(self, tokens: Array, input_mask: Array | None = None,
                    num_layers: int | None = None) -> Array:
    """The residual stream (B, T, d_model) after block `num_layers` (default: every block,
    before the final norm), for right- or left-padded `tokens` without a cache or prefix.

    What a frozen text tower pools (models/text_tower.py). `final_norm` of the last layer's
    states, times the tied embedding, gives `__call__`'s logits (before any soft-cap).
    """
    cfg = self.config
    num_layers = cfg.num_layers if num_layers is None else int(num_layers)
    if not 1 <= num_layers <= cfg.num_layers:
      raise ValueError(f"num_layers={num_layers} must lie in 1..{cfg.num_layers}")
    mask = jnp.ones(tokens.shape, bool) if input_mask is None else input_mask.astype(bool)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0).astype(jnp.int32)
    x = self.embed(tokens)
    for block in self.blocks[:num_layers]:
      x, _ = block(x, positions, 0, positions, mask, None)
    return x

  def final_norm_logits(self, x: Array) -> Array:
    """Logits of residual-stream states x (final norm, tied embedding, soft-cap)."""
    x = self.final_norm(x)
    logits = jnp.einsum("btd,vd->btv", x.astype(jnp.float32),
                        self.embedding.astype(jnp.float32))
    return _softcap(logits, self.config.final_logit_softcap)


# GGUF tensor name (per block, after 'blk.{i}.') -> path inside the block's params.
_GGUF_BLOCK_MAP = {
    "attn_norm.weight": ("pre_attention_norm", "scale"),
    "attn_q.weight": ("attn", "q_proj", "kernel"),
    "attn_k.weight": ("attn", "k_proj", "kernel"),
    "attn_v.weight": ("attn", "v_proj", "kernel"),
    "attn_output.weight": ("attn", "o_proj", "kernel"),
    "attn_q_norm.weight": ("attn", "q_norm", "scale"),
    "attn_k_norm.weight": ("attn", "k_norm", "scale"),
    "post_attention_norm.weight": ("post_attention_norm", "scale"),
    "ffn_norm.weight": ("pre_ffw_norm", "scale"),
    "ffn_gate.weight": ("mlp", "gate", "kernel"),
    "ffn_up.weight": ("mlp", "up", "kernel"),
    "ffn_down.weight": ("mlp", "down", "kernel"),
    "post_ffw_norm.weight": ("post_ffw_norm", "scale"),
}


def params_from_gguf(tensors: Mapping[str, np.ndarray], config: Gemma3Config) -> dict:
  """Nests `gguf_loader.load_gguf` tensors into this module's params tree ({'params': ...})."""
  tensors = dict(tensors)
  params: dict[str, Any] = {
      "embedding": tensors.pop("token_embd.weight"),
      "final_norm": {"scale": tensors.pop("output_norm.weight")},
  }
  for i in range(config.num_layers):
    block: dict[str, Any] = {}
    for suffix, path in _GGUF_BLOCK_MAP.items():
      name = f"blk.{i}.{suffix}"
      if name not in tensors:
        raise KeyError(f"GGUF tensors lack {name!r} (config has {config.num_layers} layers)")
      node = block
      for key in path[:-1]:
        node = node.setdefault(key, {})
      node[path[-1]] = tensors.pop(name)
    params[f"layer_{i}"] = block
  # llama.cpp may store an untied 'output.weight'; Gemma ties it, so it must not be there.
  if tensors:
    raise ValueError(f"GGUF tensors not used by the Gemma 3 model: {sorted(tensors)[:10]}")
  expected = (config.vocab_size, config.d_model)
  if params["embedding"].shape != expected:
    raise ValueError(f"token_embd.weight has shape {params['embedding'].shape}, "
                     f"config expects {expected}")
  return {"params": params}


def load_pretrained(path=None, dtype: Any = np.float32, **config_overrides):
  """(model, params, metadata) for a Gemma 3 GGUF file (default: the packaged 270M)."""
  from merit_jax.models.llm import gguf_loader  # pylint: disable=g-import-not-at-top
  if path is None:
    path = gguf_loader.default_gguf_path()
  metadata, tensors = gguf_loader.load_gguf(path, dtype=dtype)
  config = Gemma3Config.from_gguf_metadata(metadata, **config_overrides)
  params = params_from_gguf(tensors, config)
  params = jax.tree_util.tree_map(jnp.asarray, params)
  return Gemma3(config), params, metadata
