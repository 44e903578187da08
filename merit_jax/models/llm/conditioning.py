"""ECG conditioning of a decoder LLM: a projector to soft prefix tokens, and LoRA adapters.

Projector (trainable; the ECG encoder before it and the LLM after it stay frozen):
  kind 'mlp'        pooled ECG features (B, D) → LayerNorm → Dense(hidden) → GELU →
                    Dense(k · d_llm) → (B, k, d_llm).
  kind 'resampler'  encoder token features (B, N, D) → LayerNorm → Dense(width); k learned
                    queries cross-attend to them (perceiver-resampler style, `depth` layers of
                    cross-attention + MLP) → Dense(d_llm) → (B, k, d_llm).
Both end in an RMS normalisation times a learnable per-channel scale initialised to the rms of
the LLM's own (sqrt(d)-scaled) token embeddings, so soft tokens enter the frozen LLM at the
magnitude its first layer expects, whatever the encoder's feature scale.

LoRA (Hu et al. 2021) on the LLM's attention projections (q/k/v/o) and/or its MLP projections
(GeGLU gate/up/down), chosen by target groups `("attn", "mlp")`, without touching the LLM
module: the adapters live in their own tree {layer: {projection: {'a', 'b'}}}, and
`apply_lora(llm_params, lora, alpha)` returns the LLM params with W + (alpha / r) · A·B merged
in, differentiable w.r.t. A and B. The tree names its projections, so `apply_lora` needs no
target list (adapters saved before MLP targets existed load unchanged). B starts at zero, so a
fresh adapter leaves the model exactly unchanged. rank 0 = no adapters (frozen LLM).
"""

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

PROJECTOR_KINDS = ("mlp", "resampler")
# LoRA target groups → the projections they adapt; names as in models/llm/gemma3.py, where
# they are unique across a block's 'attn' and 'mlp' modules.
LORA_TARGET_GROUPS = {
    "attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mlp": ("gate", "up", "down"),
}
LORA_TARGETS = LORA_TARGET_GROUPS["attn"]  # init_lora's default: attention only, as before.
_MODULE_OF = {proj: group for group, projs in LORA_TARGET_GROUPS.items() for proj in projs}


def _rms_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)


class _OutputScale(nn.Module):
  """RMS-normalises soft tokens and scales them to the LLM's token-embedding magnitude."""
  target_rms: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.constant(self.target_rms), (x.shape[-1],))
    return _rms_normalize(x) * scale


class MlpProjector(nn.Module):
  """Pooled features (B, D) → k soft tokens (B, k, d_llm)."""
  num_tokens: int
  llm_width: int
  hidden: int = 1024
  target_rms: float = 1.0

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    if features.ndim != 2:
      raise ValueError(f"MlpProjector: expected pooled features (batch, dim), got shape "
                       f"{features.shape}")
    x = nn.LayerNorm(name="in_norm")(features.astype(jnp.float32))
    x = nn.gelu(nn.Dense(self.hidden, name="hidden")(x))
    # A random (not zero) bias: with all-zero features (the no-ECG arm) the soft tokens would
    # otherwise be exactly zero, and a zero input makes each of the LLM's RMSNorms scale the
    # backward pass by 1/sqrt(eps): 72 of them overflow to inf (NaN gradients).
    x = nn.Dense(self.num_tokens * self.llm_width, bias_init=nn.initializers.normal(0.02),
                 name="out")(x)
    x = x.reshape(features.shape[0], self.num_tokens, self.llm_width)
    return _OutputScale(self.target_rms, name="out_scale")(x)


class ResamplerProjector(nn.Module):
  """Encoder tokens (B, N, D) → k soft tokens (B, k, d_llm) through learned-query attention."""
  num_tokens: int
  llm_width: int
  width: int = 256
  depth: int = 2
  num_heads: int = 4
  target_rms: float = 1.0

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    if features.ndim != 3:
      raise ValueError(f"ResamplerProjector: expected token features (batch, tokens, dim), "
                       f"got shape {features.shape}")
    b = features.shape[0]
    kv = nn.Dense(self.width, name="in_proj")(nn.LayerNorm(name="in_norm")(
        features.astype(jnp.float32)))
    queries = self.param("queries", nn.initializers.normal(0.02),
                         (self.num_tokens, self.width))
    x = jnp.broadcast_to(queries[None], (b, self.num_tokens, self.width))
    for i in range(self.depth):
      h = nn.LayerNorm(name=f"q_norm_{i}")(x)
      # Queries attend to the ECG tokens and to themselves (Flamingo's resampler does the same).
      context = jnp.concatenate([kv, h], axis=1)
      x = x + nn.MultiHeadDotProductAttention(
          num_heads=self.num_heads, name=f"attn_{i}")(h, context)
      h = nn.LayerNorm(name=f"mlp_norm_{i}")(x)
      h = nn.Dense(4 * self.width, name=f"mlp_in_{i}")(h)
      x = x + nn.Dense(self.width, name=f"mlp_out_{i}")(nn.gelu(h))
    x = nn.Dense(self.llm_width, name="out")(nn.LayerNorm(name="out_norm")(x))
    return _OutputScale(self.target_rms, name="out_scale")(x)


def build_projector(kind: str, num_tokens: int, llm_width: int, target_rms: float = 1.0,
                    **kwargs) -> nn.Module:
  """A projector by name ('mlp' | 'resampler'); kwargs are the module's size fields."""
  if num_tokens <= 0:
    raise ValueError(f"num_prefix_tokens must be > 0, got {num_tokens}")
  if kind == "mlp":
    return MlpProjector(num_tokens, llm_width, target_rms=target_rms,
                        **{k: v for k, v in kwargs.items() if k in ("hidden",)})
  if kind == "resampler":
    return ResamplerProjector(num_tokens, llm_width, target_rms=target_rms, **{
        k: v for k, v in kwargs.items() if k in ("width", "depth", "num_heads")})
  raise ValueError(f"projector kind must be one of {PROJECTOR_KINDS}, got {kind!r}")


def feature_kind(projector_kind: str) -> str:
  """Which encoder output a projector reads: 'pooled' (B, D) or 'tokens' (B, N, D)."""
  return "tokens" if projector_kind == "resampler" else "pooled"


def token_embedding_rms(llm_params: Mapping[str, Any], d_model: int) -> float:
  """RMS of the LLM's input token embeddings (embedding rows × sqrt(d_model), as Gemma)."""
  emb = np.asarray(llm_params["params"]["embedding"], np.float32)
  # A row sample is enough and keeps this cheap for a 262k-row vocabulary.
  rows = emb[:: max(1, emb.shape[0] // 4096)]
  return float(np.sqrt(np.mean(rows * rows)) * np.sqrt(d_model))


# --------------------------------------------------------------------------------------- LoRA

def lora_projections(targets: Sequence[str]) -> tuple[str, ...]:
  """Target groups ('attn', 'mlp') and/or projection names → projection names, in order."""
  if isinstance(targets, str):
    targets = (targets,)
  out: list[str] = []
  for target in targets:
    names = LORA_TARGET_GROUPS.get(target, (target,) if target in _MODULE_OF else None)
    if names is None:
      raise ValueError(f"LoRA target {target!r} must be one of "
                       f"{', '.join(map(repr, list(LORA_TARGET_GROUPS) + list(_MODULE_OF)))}")
    out += [n for n in names if n not in out]
  if not out:
    raise ValueError("lora_targets is empty: name 'attn' and/or 'mlp'")
  return tuple(out)


def _target_kernels(llm_params: Mapping[str, Any], targets: Sequence[str]):
  """Yields (layer name, projection name, kernel) for the targeted projections."""
  params = llm_params["params"]
  layers = sorted((k for k in params if k.startswith("layer_")), key=lambda s: int(s[6:]))
  for layer in layers:
    for name in lora_projections(targets):
      module = params[layer][_MODULE_OF[name]]
      if name not in module:
        raise KeyError(f"LoRA target {name!r} not in {layer}/{_MODULE_OF[name]} "
                       f"(has {sorted(module)})")
      yield layer, name, module[name]["kernel"]


def init_lora(llm_params: Mapping[str, Any], rank: int, rng: jax.Array,
              targets: Sequence[str] = ("attn",)) -> dict:
  """LoRA factors {layer: {proj: {'a': (in, r), 'b': (r, out)}}}; empty dict for rank 0.

  `targets`: groups of `LORA_TARGET_GROUPS` ('attn', 'mlp') or projection names. A ~ N(0, 1/in)
  (a unit-gain random projection), B = 0: the adapted model starts as the frozen one.
  """
  if rank < 0:
    raise ValueError(f"lora_rank must be >= 0, got {rank}")
  if rank == 0:
    return {}
  lora: dict[str, dict] = {}
  kernels = list(_target_kernels(llm_params, targets))
  for rng_i, (layer, name, kernel) in zip(jax.random.split(rng, len(kernels)), kernels):
    d_in, d_out = kernel.shape
    a = jax.random.normal(rng_i, (d_in, rank), jnp.float32) / np.sqrt(d_in)
    lora.setdefault(layer, {})[name] = {"a": a, "b": jnp.zeros((rank, d_out), jnp.float32)}
  return lora


def apply_lora(llm_params: Mapping[str, Any], lora: Mapping[str, Any],
               alpha: float) -> Mapping[str, Any]:
  """LLM params with the adapters merged: W + (alpha / rank) · A @ B per adapted kernel."""
  if not lora:
    return llm_params
  params = dict(llm_params["params"])
  for layer, projections in lora.items():
    block = dict(params[layer])
    for name, factors in projections.items():
      module = dict(block[_MODULE_OF[name]])
      kernel = module[name]["kernel"]
      rank = factors["a"].shape[1]
      delta = (alpha / rank) * (factors["a"] @ factors["b"])
      module[name] = {**module[name], "kernel": kernel + delta.astype(kernel.dtype)}
      block[_MODULE_OF[name]] = module
    params[layer] = block
  return {**llm_params, "params": params}


def count_params(tree: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))
