"""The model of report generation: the LLM, the trainable projector and LoRA adapters.

Frozen ECG features → trainable projector (`models/llm/conditioning.py`) → k soft prefix tokens
→ [prefix | BOS prompt | report EOS] → frozen Gemma 3 (optionally LoRA adapters on its
attention and/or MLP projections, `config.lora_targets`). The loss is next-token cross-entropy
on the report tokens (and their EOS) only: the prefix and the prompt are context.

The trainable params are one tree {'projector': ..., 'lora': ...} (the frozen LLM is never in
it, so only these train); `save_projector` writes it with Orbax under <workdir>/projector/ (plus
the random encoder's params for checkpoint='random'), and <workdir>/generate_config.json holds
the run's config, the encoder's source and the feature shape: all `load_projector` (predict
mode) needs besides the LLM.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax
import orbax.checkpoint as ocp

from merit_jax.models.llm import conditioning
from merit_jax.report_gen import GenerateError
from merit_jax.report_gen import data as data_lib

CONFIG_FILE = "generate_config.json"
PROJECTOR_DIR = "projector"
LLMS = ("gemma3_270m", "tiny")  # The packaged Gemma 3 270M GGUF; a tiny random test model.


class ByteTokenizer:
  """UTF-8 bytes as tokens (pad 0, eos 1, bos 2, byte b → b + 3): the tiny test LLM's vocab."""
  pad_id, eos_id, bos_id = 0, 1, 2
  vocab_size = 259
  add_bos = True

  def encode(self, text: str, add_bos: bool | None = None,
             add_eos: bool | None = None) -> list[int]:
    ids = [b + 3 for b in text.encode("utf-8")]
    if self.add_bos if add_bos is None else add_bos:
      ids = [self.bos_id] + ids
    if add_eos:
      ids = ids + [self.eos_id]
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in ids]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    return bytes(i - 3 for i in ids if i >= 3).decode("utf-8", errors="replace")


@functools.lru_cache(maxsize=2)
def load_llm(name: str, path: str | None = None, seed: int = 0):
  """(model, params, tokenizer) of 'gemma3_270m' (packaged GGUF, or `path`) or 'tiny'."""
  from merit_jax.models.llm import gemma3  # pylint: disable=g-import-not-at-top
  if name == "tiny":
    tokenizer = ByteTokenizer()
    model = gemma3.Gemma3(gemma3.tiny_config(vocab_size=tokenizer.vocab_size))
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 4), jnp.int32))
    return model, params, tokenizer
  if name not in LLMS:
    raise GenerateError(f"config.llm={name!r} must be one of {', '.join(LLMS)}")
  from merit_jax.models.llm import gemma_tokenizer  # pylint: disable=g-import-not-at-top
  model, params, metadata = gemma3.load_pretrained(path)
  return model, params, gemma_tokenizer.GgufTokenizer(metadata)


def next_token_loss(logits: jax.Array, tokens: jax.Array, loss_mask: jax.Array,
                    num_prefix: int) -> tuple[jax.Array, jax.Array]:
  """Mean cross-entropy of the tokens where `loss_mask` is True.

  logits: (B, k + T, V) from the LLM on [k soft tokens | T tokens]; the logits at column
  k - 1 + t predict tokens[:, t]. Returns (mean loss, number of scored tokens).
  """
  if num_prefix < 1:
    raise ValueError("next_token_loss needs at least one prefix column to predict token 0")
  t = tokens.shape[1]
  pred = logits[:, num_prefix - 1:num_prefix - 1 + t].astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(pred, tokens)
  weight = loss_mask.astype(jnp.float32)
  count = jnp.sum(weight)
  return jnp.sum(ce * weight) / jnp.maximum(count, 1.0), count


@dataclasses.dataclass
class Generator:
  """The LLM, its tokenizer, the projector module and the fixed prompt of one run."""
  llm: Any
  llm_params: Any
  tokenizer: Any
  projector: Any
  prompt: list[int]
  lora_alpha: float

  @property
  def num_prefix(self) -> int:
    return self.projector.num_tokens

  def prefix(self, trainable, features):
    return self.projector.apply({"params": trainable["projector"]}, features)

  def llm_params_with(self, trainable):
    return conditioning.apply_lora(self.llm_params, trainable["lora"], self.lora_alpha)

  def loss(self, trainable, llm_params, features, tokens, input_mask, loss_mask):
    """Report-token cross-entropy; `llm_params` is passed in so jit sees it as an argument."""
    prefix = self.projector.apply({"params": trainable["projector"]}, features)
    params = conditioning.apply_lora(llm_params, trainable["lora"], self.lora_alpha)
    logits, _ = self.llm.apply(params, tokens, input_mask=input_mask, prefix_embeddings=prefix)
    return next_token_loss(logits, tokens, loss_mask, prefix.shape[1])


def build_generator(config, llm=None) -> Generator:
  """The Generator of `config`; `llm` = (model, params, tokenizer) to reuse a loaded LLM."""
  model, params, tokenizer = llm or load_llm(config.llm, config.llm_path, config.seed)
  d_model = model.config.d_model
  projector = conditioning.build_projector(
      config.projector_kind, config.num_prefix_tokens, d_model,
      target_rms=conditioning.token_embedding_rms(params, d_model),
      hidden=config.projector_hidden, **config.resampler.to_dict())
  return Generator(model, params, tokenizer, projector,
                   data_lib.prompt_ids(tokenizer, config.prompt), float(config.lora_alpha))


def init_trainable(gen: Generator, feature_shape: Sequence[int], lora_rank: int, seed: int,
                   lora_targets: Sequence[str] = ("attn",)):
  """{'projector': fresh projector params, 'lora': adapters (B = 0; {} for rank 0)}.

  `lora_targets`: `conditioning.LORA_TARGET_GROUPS` names ('attn', 'mlp').
  """
  rng_p, rng_l = jax.random.split(jax.random.PRNGKey(seed))
  dummy = jnp.zeros((1,) + tuple(feature_shape), jnp.float32)
  return {"projector": gen.projector.init(rng_p, dummy)["params"],
          "lora": conditioning.init_lora(gen.llm_params, lora_rank, rng_l,
                                         tuple(lora_targets))}


# ---------------------------------------------------------------------------- save / restore

def config_json(config) -> dict:
  return json.loads(config.to_json_best_effort())


def save_projector(workdir: str, config, source: data_lib.FeatureSource, trainable,
                   feature_shape, feature_stats: dict | None = None) -> None:
  """projector/ (Orbax) + generate_config.json: all `predict` needs besides the LLM.

  feature_stats: `data.fit_feature_stats` of the training features when the run
  standardised them (predict mode applies the same), else None.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  tree = {"projector": trainable["projector"]}
  if trainable["lora"]:
    tree["lora"] = trainable["lora"]
  if source.source == "random":
    tree["encoder"] = source.encoder.params
  path = os.path.join(workdir, PROJECTOR_DIR)
  ocp.PyTreeCheckpointer().save(path, jax.device_get(tree), force=True)
  meta = {"config": config_json(config), "encoder_source": source.source,
          "encoder_run_config": source.run_config, "preprocess": source.preprocess,
          "feature_shape": list(feature_shape),
          "feature_kind": conditioning.feature_kind(config.projector_kind),
          "feature_stats": feature_stats}
  with open(os.path.join(workdir, CONFIG_FILE), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=2, default=str)


def run_directory(projector_dir: str) -> str:
  """The generate workdir of `projector_dir`: that workdir itself or its projector/ folder."""
  run_dir = os.path.abspath(os.path.expanduser(projector_dir))
  if os.path.basename(run_dir) == PROJECTOR_DIR:
    run_dir = os.path.dirname(run_dir)
  return run_dir


def load_projector(projector_dir: str, feature_batch_size: int = 64):
  """(run config, FeatureSource, trainable, meta) of a workdir written by `save_projector`."""
  run_dir = run_directory(projector_dir)
  meta_path = os.path.join(run_dir, CONFIG_FILE)
  if not os.path.isfile(meta_path):
    raise GenerateError(f"config.projector={projector_dir!r}: no {CONFIG_FILE} there; pass the "
                        "--workdir of a `merit_jax.generate` training run")
  with open(meta_path, encoding="utf-8") as f:
    meta = json.load(f)
  config = ml_collections.ConfigDict(meta["config"])
  tree = ocp.PyTreeCheckpointer().restore(os.path.join(run_dir, PROJECTOR_DIR))
  trainable = {"projector": tree["projector"], "lora": tree.get("lora", {})}
  source = meta["encoder_source"]
  if source == "none":
    features = data_lib.FeatureSource("none", None, meta["preprocess"])
  elif source == "random":
    encoder = data_lib.random_encoder(meta["encoder_run_config"], 0, feature_batch_size,
                                      params=tree["encoder"])
    features = data_lib.FeatureSource("random", encoder, meta["preprocess"],
                                      meta["encoder_run_config"])
  else:
    features = data_lib.load_feature_source(source, None, 0, meta["preprocess"],
                                            feature_batch_size)
  return config, features, trainable, meta
