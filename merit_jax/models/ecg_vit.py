"""ECG Vision Transformer over per-lead patches (ST-MEM style) and its MAE decoder.

Every lead is cut into non-overlapping patches of `patch_size` samples; each patch is one
token that carries a learnable *lead* embedding (12 leads) and a *temporal* position
embedding shared by all leads. Because a token knows its lead and its time slot, any subset
of tokens is a valid input: random masking selects token indices, and a reduced-lead ECG is
just the tokens of those leads.

API:
  SIZES: {'tiny': (192, 12, 3), 'small': (384, 12, 6), 'base': (768, 12, 12)} as
    (width, depth, heads); the MLP is 4x wide.
  patchify(x (B, leads, S), patch) -> (B, leads * S // patch, patch), token order lead-major
    (token k = lead k // P, time slot k % P with P = S // patch); unpatchify inverts it.
  token_ids(num_leads, num_patches, leads=None) -> (lead_ids, time_ids), int32 (T,).
  ECGEncoder(...)(patches (B, T, patch), lead_ids, time_ids) -> {'tokens' (B, T, D) after
    the final LayerNorm, 'pooled' (B, D) = mean over tokens}; `stem` ('linear' | 'conv',
    STEMS) says how a patch becomes a token (ConvStem: per-patch convolutions).
  ECGDecoder(...)(visible (B, T_vis, D_enc), ids_restore (B, T), lead_ids (T,), time_ids
    (T,)) -> predicted patches (B, T, patch) for every position (the loss picks masked ones).
  EncoderBlock / MlpBlock / SelfAttention: pre-LN Transformer pieces shared with text.py.
  flat_dot_general: the `dot_general` of every Dense layer here (one 2-D matmul, see below);
    Dense / DenseGeneral: Flax's layers with it.

Params are float32 with logical axis names ('embed', 'mlp', 'heads', 'kv', 'vocab',
'patch', 'leads', 'time') so parallel.py can shard them; compute runs in `dtype`.
"""

import functools
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from merit_jax import config_validation

Dtype = Any

# (width, depth, heads); MLP width is 4 * width.
SIZES = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
}

_DENSE_INIT = nn.initializers.xavier_uniform()


def patchify(x: jax.Array, patch: int) -> jax.Array:
  """(B, leads, S) -> (B, leads * S // patch, patch), tokens ordered lead-major."""
  if x.ndim != 3:
    raise ValueError(f"patchify: expected (batch, leads, samples), got shape {x.shape}")
  b, leads, samples = x.shape
  if samples % patch:
    raise ValueError(f"patchify: patch size {patch} does not divide {samples} samples")
  return x.reshape(b, leads * (samples // patch), patch)


def unpatchify(patches: jax.Array, num_leads: int) -> jax.Array:
  """(B, leads * P, patch) -> (B, leads, P * patch); inverse of `patchify`."""
  b, tokens, patch = patches.shape
  if tokens % num_leads:
    raise ValueError(f"unpatchify: {tokens} tokens are not a multiple of {num_leads} leads")
  return patches.reshape(b, num_leads, (tokens // num_leads) * patch)


def token_ids(num_leads: int, num_patches: int,
              leads: Optional[Sequence[int]] = None) -> tuple[np.ndarray, np.ndarray]:
  """Lead and time-slot index of every token in `patchify` order (static numpy arrays)."""
  leads = np.arange(num_leads) if leads is None else np.asarray(leads)
  lead_ids = np.repeat(leads, num_patches).astype(np.int32)
  time_ids = np.tile(np.arange(num_patches), len(leads)).astype(np.int32)
  return lead_ids, time_ids


def sinusoidal_init(max_len: int, width: int):
  """Initialiser giving the fixed sin/cos table of Vaswani et al. (then learned)."""

  def init(key, shape, dtype=jnp.float32):
    del key
    assert shape == (max_len, width), (shape, max_len, width)
    pos = np.arange(max_len)[:, None]
    div = np.exp(np.arange(0, width, 2) * (-np.log(10000.0) / width))
    table = np.zeros((max_len, width), np.float32)
    table[:, 0::2] = np.sin(pos * div)
    table[:, 1::2] = np.cos(pos * div)[:, : width // 2]
    return jnp.asarray(table, dtype)

  return init


def _param_init(init, names):
  return nn.with_logical_partitioning(init, names)


def flat_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                     **kwargs):
  """`lax.dot_general` for Dense layers, computed as one 2-D matmul with the same result.

  A Dense or DenseGeneral layer contracts the trailing dims of its input with the leading dims
  of its kernel, e.g. (B, T, D) x (D, heads, head_dim). Flax hands XLA that N-D contraction, and
  the dots autodiff derives from it (weight gradients contract over B and T) reach XLA:CPU with
  several contracting and free dims. Flattened to (B*T, D) x (D, heads*head_dim) before the dot,
  the forward and backward matmuls are plain 2-D ones: on the 2-core CPU of benchmarks/RESULTS.md
  small MERIT steps are 6.8 % faster, base MERIT 3.6 %, base MAE the same. XLA:GPU and TPU bring
  dots to 2-D themselves, so there it should change nothing; that is not measured yet. Any other
  contraction (batch dims, other axes) goes to `lax.dot_general` unchanged.
  """
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  n_contract = len(lhs_contract)
  lhs_contract = tuple(d % lhs.ndim for d in lhs_contract)
  rhs_contract = tuple(d % rhs.ndim for d in rhs_contract)
  is_dense = (not lhs_batch and not rhs_batch and n_contract > 0
              and lhs_contract == tuple(range(lhs.ndim - n_contract, lhs.ndim))
              and rhs_contract == tuple(range(n_contract)))
  if not is_dense:
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type, **kwargs)
  free_lhs, free_rhs = lhs.shape[:lhs.ndim - n_contract], rhs.shape[n_contract:]
  size = math.prod(rhs.shape[:n_contract])
  out = jax.lax.dot_general(
      lhs.reshape(math.prod(free_lhs), size), rhs.reshape(size, math.prod(free_rhs)),
      (((1,), (0,)), ((), ())), precision=precision,
      preferred_element_type=preferred_element_type, **kwargs)
  return out.reshape(free_lhs + free_rhs)


# The Dense layers of every model here: Flax's, with the 2-D dot above.
Dense = functools.partial(nn.Dense, dot_general=flat_dot_general)
DenseGeneral = functools.partial(nn.DenseGeneral, dot_general=flat_dot_general)


# 'auto': cuDNN's fused (flash) attention on GPU for bfloat16/float16 without a padding mask,
# XLA's attention elsewhere; 'xla' forces XLA's. Read at trace time (benchmarks flip it).
FUSED_ATTENTION = "auto"


def _on_cuda() -> bool:
  if jax.default_backend() != "gpu":
    return False
  client = getattr(jax.devices()[0], "client", None)
  version = str(getattr(client, "platform_version", "") or "")
  return "rocm" not in version.lower()  # cuDNN attention exists on NVIDIA GPUs only.


def attention_implementation(dtype, head_dim: int, masked: bool) -> str:
  """Which `jax.nn.dot_product_attention` implementation to use for these operands."""
  if (FUSED_ATTENTION == "auto" and not masked and _on_cuda()
      and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
      and head_dim <= 128 and head_dim % 8 == 0):
    return "cudnn"
  return "xla"


class SelfAttention(nn.Module):
  """Multi-head self-attention via `jax.nn.dot_product_attention` (fused on GPU, see above)."""
  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, pad_mask: Optional[jax.Array] = None) -> jax.Array:
    """x (B, T, D); pad_mask (B, T) bool, True = a real token that may be attended to."""
    width = x.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"width {width} is not divisible by {self.num_heads} heads")
    head_dim = width // self.num_heads
    dense = lambda name, use_bias=True: DenseGeneral(  # noqa: E731
        (self.num_heads, head_dim), dtype=self.dtype, name=name, use_bias=use_bias,
        kernel_init=_param_init(_DENSE_INIT, ("embed", "heads", "kv")),
        bias_init=_param_init(nn.initializers.zeros, ("heads", "kv")))
    # No key bias: it adds the same q·b_k to every logit of a query row, which the softmax
    # cancels, so its gradient is exactly zero and Adam would only turn rounding noise (which
    # differs between device layouts) into parameter drift.
    q, k, v = dense("query")(x), dense("key", use_bias=False)(x), dense("value")(x)
    mask = None
    if pad_mask is not None:
      mask = pad_mask[:, None, None, :]  # (B, heads, T_q, T_k) broadcast.
    impl = attention_implementation(q.dtype, head_dim, mask is not None)
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=impl)
    return DenseGeneral(
        width, axis=(-2, -1), dtype=self.dtype, name="out",
        kernel_init=_param_init(_DENSE_INIT, ("heads", "kv", "embed")),
        bias_init=_param_init(nn.initializers.zeros, ("embed",)))(out)


class MlpBlock(nn.Module):
  """Two-layer GELU MLP."""
  mlp_dim: int
  dtype: Dtype = jnp.float32
  approximate_gelu: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    h = Dense(self.mlp_dim, dtype=self.dtype, name="fc1",
              kernel_init=_param_init(_DENSE_INIT, ("embed", "mlp")),
              bias_init=_param_init(nn.initializers.zeros, ("mlp",)))(x)
    h = nn.gelu(h, approximate=self.approximate_gelu)
    return Dense(width, dtype=self.dtype, name="fc2",
                 kernel_init=_param_init(_DENSE_INIT, ("mlp", "embed")),
                 bias_init=_param_init(nn.initializers.zeros, ("embed",)))(h)


def layer_norm(name: str, dtype: Dtype, epsilon: float = 1e-6) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, name=name,
                      scale_init=_param_init(nn.initializers.ones, ("embed",)),
                      bias_init=_param_init(nn.initializers.zeros, ("embed",)))


class EncoderBlock(nn.Module):
  """Pre-LN Transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""
  num_heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, pad_mask: Optional[jax.Array] = None) -> jax.Array:
    x = x + SelfAttention(self.num_heads, self.dtype, name="attn")(
        layer_norm("ln1", self.dtype)(x), pad_mask)
    x = x + MlpBlock(self.mlp_dim, self.dtype, name="mlp")(layer_norm("ln2", self.dtype)(x))
    return x


class Transformer(nn.Module):
  """A stack of pre-LN blocks, optionally rematerialised, with a final LayerNorm."""
  depth: int
  num_heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, pad_mask: Optional[jax.Array] = None) -> jax.Array:
    block_cls = nn.remat(EncoderBlock) if self.remat else EncoderBlock
    for i in range(self.depth):
      x = block_cls(self.num_heads, self.mlp_dim, self.dtype, name=f"block{i}")(x, pad_mask)
    return layer_norm("ln_final", self.dtype)(x)


# Token stems: how a patch's raw samples become a token (`ECGEncoder.stem`).
STEMS = config_validation.STEMS


class ConvStem(nn.Module):
  """Per-patch 1-D convolutions, mean- and max-pooled over the patch: (B, T, P) -> (B, T, 2C).

  A linear patch projection sees each sample at a fixed offset, so a QRS slope or a notch
  matches it only where the patch boundary happens to fall; convolutions pooled over the
  patch detect such shapes wherever they sit (the max pooling is what random-convolution
  features rely on). Each patch is convolved on its own ('SAME' zero padding at its edges),
  so a token never reads the samples of another token, which masking requires.
  """
  channels: int
  kernel_size: int = 5
  num_layers: int = 2
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, patches: jax.Array) -> jax.Array:
    b, t, p = patches.shape
    h = patches.reshape(b * t, p, 1)
    for i in range(self.num_layers):
      # Stem kernels are tiny; replicated under every sharding rule (no logical names).
      h = nn.Conv(self.channels, (self.kernel_size,), padding="SAME", dtype=self.dtype,
                  name=f"conv{i}",
                  kernel_init=_param_init(nn.initializers.lecun_normal(), (None, None, None)),
                  bias_init=_param_init(nn.initializers.zeros, (None,)))(h)
      h = nn.gelu(h, approximate=False)
    pooled = jnp.concatenate([jnp.mean(h, axis=1), jnp.max(h, axis=1)], axis=-1)
    return pooled.reshape(b, t, 2 * self.channels)


class TokenEmbedding(nn.Module):
  """Patch values -> width, plus lead and shared temporal position embeddings.

  stem 'linear': one Dense map of the patch's samples. 'conv': that map plus a Dense map of
  `ConvStem` features (`stem_channels` channels), so the linear path is kept and the
  convolutions add shift-tolerant shape detectors.
  """
  width: int
  num_leads: int
  max_patches: int
  dtype: Dtype = jnp.float32
  stem: str = "linear"
  stem_channels: int = 32

  @nn.compact
  def __call__(self, patches, lead_ids, time_ids):
    if self.stem not in STEMS:
      raise ValueError(f"stem={self.stem!r} must be one of {STEMS}")
    x = Dense(self.width, dtype=self.dtype, name="patch_proj",
              kernel_init=_param_init(_DENSE_INIT, ("patch", "embed")),
              bias_init=_param_init(nn.initializers.zeros, ("embed",)))(patches)
    if self.stem == "conv":
      features = ConvStem(self.stem_channels, dtype=self.dtype, name="conv_stem")(patches)
      x = x + Dense(self.width, dtype=self.dtype, name="stem_proj",
                    kernel_init=_param_init(_DENSE_INIT, (None, "embed")),
                    bias_init=_param_init(nn.initializers.zeros, ("embed",)))(features)
    lead_table = self.param(
        "lead_embedding",
        _param_init(nn.initializers.normal(0.02), ("leads", "embed")),
        (self.num_leads, self.width))
    time_table = self.param(
        "time_embedding",
        _param_init(sinusoidal_init(self.max_patches, self.width), ("time", "embed")),
        (self.max_patches, self.width))
    pos = jnp.take(lead_table, lead_ids, axis=0) + jnp.take(time_table, time_ids, axis=0)
    if pos.ndim == 2:  # Shared ids (T, D) broadcast over the batch.
      pos = pos[None]
    return x + pos.astype(x.dtype)


class ECGEncoder(nn.Module):
  """ViT over per-lead patch tokens; any subset of (lead, time) tokens is a valid input."""
  width: int = 192
  depth: int = 12
  num_heads: int = 3
  mlp_dim: Optional[int] = None
  num_leads: int = 12
  max_patches: int = 20
  dtype: Dtype = jnp.float32
  remat: bool = False
  stem: str = "linear"  # STEMS: how a patch becomes a token (TokenEmbedding)
  stem_channels: int = 32

  @nn.compact
  def __call__(self, patches: jax.Array, lead_ids: jax.Array,
               time_ids: jax.Array) -> dict[str, jax.Array]:
    """patches (B, T, patch); lead_ids/time_ids int (T,) or (B, T)."""
    x = TokenEmbedding(self.width, self.num_leads, self.max_patches, self.dtype,
                       self.stem, self.stem_channels,
                       name="embed")(patches.astype(self.dtype), lead_ids, time_ids)
    x = Transformer(self.depth, self.num_heads, self.mlp_dim or 4 * self.width, self.dtype,
                    self.remat, name="transformer")(x)
    return {"tokens": x, "pooled": jnp.mean(x.astype(jnp.float32), axis=1)}


class ECGDecoder(nn.Module):
  """MAE decoder shared across leads: visible encodings + mask tokens -> patch values."""
  patch_size: int
  width: int = 256
  depth: int = 4
  num_heads: int = 4
  num_leads: int = 12
  max_patches: int = 20
  dtype: Dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, visible: jax.Array, ids_restore: jax.Array, lead_ids: jax.Array,
               time_ids: jax.Array) -> jax.Array:
    """Predicts every token's patch.

    Args:
      visible: (B, T_vis, D_enc) encoder output of the kept tokens, in keep order.
      ids_restore: (B, T) position of each original token in [kept..., masked...] order.
      lead_ids, time_ids: (T,) ids of all tokens in `patchify` order.

    Returns:
      (B, T, patch_size) float32 predictions.
    """
    b, t_vis, _ = visible.shape
    t = ids_restore.shape[1]
    x = Dense(self.width, dtype=self.dtype, name="input_proj",
              kernel_init=_param_init(_DENSE_INIT, ("embed", "mlp")),
              bias_init=_param_init(nn.initializers.zeros, ("mlp",)))(visible)
    mask_token = self.param("mask_token",
                            _param_init(nn.initializers.normal(0.02), (None, None, "mlp")),
                            (1, 1, self.width))
    x = jnp.concatenate(
        [x, jnp.broadcast_to(mask_token.astype(x.dtype), (b, t - t_vis, self.width))], axis=1)
    x = jnp.take_along_axis(x, ids_restore[..., None], axis=1)  # Back to patchify order.
    lead_table = self.param("lead_embedding",
                            _param_init(nn.initializers.normal(0.02), ("leads", "mlp")),
                            (self.num_leads, self.width))
    time_table = self.param(
        "time_embedding",
        _param_init(sinusoidal_init(self.max_patches, self.width), ("time", "mlp")),
        (self.max_patches, self.width))
    x = x + (jnp.take(lead_table, lead_ids, axis=0)
             + jnp.take(time_table, time_ids, axis=0))[None].astype(x.dtype)
    x = Transformer(self.depth, self.num_heads, 4 * self.width, self.dtype, self.remat,
                    name="transformer")(x)
    pred = Dense(self.patch_size, dtype=self.dtype, name="head",
                 kernel_init=_param_init(_DENSE_INIT, ("mlp", "patch")),
                 bias_init=_param_init(nn.initializers.zeros, ("patch",)))(x)
    return pred.astype(jnp.float32)
