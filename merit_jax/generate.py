"""ECG-conditioned report generation: train a projector, generate reports, compare encoders.

  python -m merit_jax.generate --config=configs/generate.py --config.checkpoint=RUN_DIR \
      --workdir=DIR                                     # train (mode 'train')
  python -m merit_jax.generate --config=configs/generate.py --config.mode=predict \
      --config.projector=DIR --config.input=FOLDER --config.output=reports.csv
  python -m merit_jax.generate --config=configs/generate.py:compare \
      --config.merit_checkpoint=RUN_DIR --workdir=DIR   # the table

Model: frozen ECG encoder → features (pooled, or the token sequence) → trainable projector
(`models/llm/conditioning.py`) → k soft prefix tokens → [prefix | BOS prompt | report EOS] →
frozen Gemma 3 (optionally LoRA on its attention projections). The loss is next-token cross-
entropy on the report tokens (and their EOS) only: the prefix and the prompt are context.

Training is one jitted step with the batch sharded over the mesh's ('data', 'fsdp') axes and
the (frozen) LLM and trainable params replicated; Optax AdamW from `config.optim`. ECG features
are computed once per split with the frozen encoder (`split_features`) and cached in the
workdir, so the encoder never runs inside the training loop.

Workdir after training: generate_config.json (the config, the encoder's source and the
feature shape), projector/ (Orbax: projector + LoRA params, and the random encoder's params
for `checkpoint='random'`), metrics.jsonl, eval.json + samples.csv (test split), features_*.npz.
Compare mode writes one such workdir per arm under workdir/<arm>/ and the table in
workdir/report_generation.{md,json} and `config.results_path`: each metric with a 95 %
bootstrap CI over test records, and each arm's paired bootstrap difference from the first arm
(`bootstrap_arms`, `config.eval.n_bootstrap` resamples).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
import pathlib
import sys
import time
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging as absl_logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax
import orbax.checkpoint as ocp

from merit_jax import parallel
from merit_jax.models.llm import conditioning

# Flags are defined only when run as a program (`_define_flags`): merit_jax.train, which tests
# import into the same process, owns a --config and a --workdir of its own.
_CONFIG = None
_WORKDIR = None


def _define_flags():
  config = config_flags.DEFINE_config_file(
      "config", None, "configs/generate.py[:variant]", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Output directory (train / compare modes).")
  return config, workdir


MODES = ("train", "predict", "compare")
CONFIG_FILE = "generate_config.json"
PROJECTOR_DIR = "projector"
NO_ECG_DIM = 16  # Feature width of the no-ECG arm (all zeros; the projector learns a constant).
ARM_TITLES = {"none": "no ECG (LLM prior, same training)",
              "random": "randomly initialised encoder",
              "merit": "MERIT encoder"}


class GenerateError(ValueError):
  """A problem with the user's config or inputs, reported as one clear line."""


# ------------------------------------------------------------------------------ LLM + tokens

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
  if name != "gemma3_270m":
    raise GenerateError(f"config.llm must be 'gemma3_270m' or 'tiny', got {name!r}")
  from merit_jax.models.llm import gemma_tokenizer as llm_tokenizer  # pylint: disable=g-import-not-at-top
  model, params, metadata = gemma3.load_pretrained(path)
  return model, params, llm_tokenizer.GgufTokenizer(metadata)


def prompt_ids(tokenizer, prompt: str) -> list[int]:
  """BOS + prompt text: the fixed context between the soft prefix and the report."""
  return tokenizer.encode(prompt, add_bos=True)


def training_sequences(tokenizer, prompt: Sequence[int], reports: Sequence[str],
                       max_report_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Right-padded [prompt | report tokens + EOS] rows.

  Returns:
    tokens int32 (N, P + R), input_mask bool (N, P + R) (False at pads), loss_mask bool
    (N, P + R): True exactly at the report tokens and their EOS, the only loss targets.
  """
  if max_report_tokens <= 1:
    raise GenerateError(f"max_report_tokens must be > 1, got {max_report_tokens}")
  p = len(prompt)
  width = p + max_report_tokens
  tokens = np.full((len(reports), width), tokenizer.pad_id, np.int32)
  input_mask = np.zeros((len(reports), width), bool)
  loss_mask = np.zeros((len(reports), width), bool)
  for row, report in enumerate(reports):
    ids = tokenizer.encode(report, add_bos=False)[:max_report_tokens - 1] + [tokenizer.eos_id]
    tokens[row, :p] = prompt
    tokens[row, p:p + len(ids)] = ids
    input_mask[row, :p + len(ids)] = True
    loss_mask[row, p:p + len(ids)] = True
  return tokens, input_mask, loss_mask


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


# ------------------------------------------------------------------------------- ECG encoder

@dataclasses.dataclass
class Encoder:
  """A frozen ECG encoder (or none) and how its inputs are preprocessed."""
  source: str  # 'none' | 'random' | a MERIT run dir
  model: Any
  params: Any
  preprocess: dict  # config.data.preprocess fields the encoder expects
  run_config: dict | None = None

  def feature_fn(self, kind: str):
    """A jitted ecg (B, 12, S) → features: pooled (B, D) or tokens (B, N, D)."""
    model = self.model

    def fn(params, ecg):
      if kind == "pooled":
        return model.apply({"params": params}, ecg, method=model.embed_ecg)["pooled"]
      # The encoder's token sequence (MERIT.embed_ecg only returns the pooled mean).
      return model.apply({"params": params}, ecg,
                         method=lambda m, x: m._encode_all(x)["tokens"])  # pylint: disable=protected-access

    return jax.jit(fn)


def _read_run_config(run_dir: str) -> dict:
  path = os.path.join(os.path.expanduser(run_dir), "config.json")
  if not os.path.isfile(path):
    raise GenerateError(f"{run_dir!r} is not a MERIT run directory (no config.json); pass the "
                        "--workdir of a `python -m merit_jax.train` run")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def load_encoder(checkpoint: str | None, encoder_like: str | None, seed: int,
                 default_preprocess: dict) -> Encoder:
  """The frozen encoder of an arm: None → no ECG; 'random' → fresh init; else a MERIT run."""
  from merit_jax.models import merit as merit_lib  # pylint: disable=g-import-not-at-top
  if checkpoint in (None, "", "none"):
    return Encoder("none", None, None, dict(default_preprocess))
  if checkpoint == "random":
    if not encoder_like:
      raise GenerateError("checkpoint='random' needs config.encoder_like: a MERIT run dir whose "
                          "encoder config the random encoder copies")
    run_cfg = ml_collections.ConfigDict(_read_run_config(encoder_like))
    run_cfg.model.text.vocab_size = run_cfg.model.text.get("vocab_size") or 8
    model = merit_lib.build_model(run_cfg)
    ecg = jnp.zeros((1, int(run_cfg.model.get("num_leads", 12)),
                     int(run_cfg.data.preprocess.num_samples)), jnp.float32)
    params = model.init(jax.random.PRNGKey(seed), ecg, method=model.embed_ecg)["params"]
    return Encoder("random", model, params, dict(run_cfg.data.preprocess.to_dict()),
                   run_cfg.to_dict())
  from merit_jax import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  try:
    model, params, run_cfg, _, _ = checkpoint_lib.load_for_inference(checkpoint)
  except FileNotFoundError as e:
    raise GenerateError(f"config.checkpoint: {e}") from e
  return Encoder(os.path.abspath(os.path.expanduser(checkpoint)), model, params,
                 dict(run_cfg.data.preprocess.to_dict()), run_cfg.to_dict())


def ensure_dataset(data_cfg) -> None:
  """Builds the PTB-XL (or other) TFDS dataset from data.manual_dir when it is not built."""
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  data_dir = os.path.expanduser(data_cfg.data_dir)
  try:
    pipeline.builder_dir(pipeline.SourceSpec(data_cfg.name, data_cfg.get("config"), data_dir))
    return
  except FileNotFoundError:
    pass
  manual_dir = data_cfg.get("manual_dir")
  if not manual_dir or not os.path.isdir(os.path.expanduser(manual_dir)):
    raise GenerateError(
        f"dataset {data_cfg.name!r} is not built under {data_dir} and data.manual_dir="
        f"{manual_dir!r} is not a folder; set --config.data.data_dir to a built copy or "
        "--config.data.manual_dir to the PTB-XL files")
  from merit_jax.data import build as build_lib  # pylint: disable=g-import-not-at-top
  print(f"building {data_cfg.name} ({data_cfg.get('config')}) into {data_dir} ...", flush=True)
  build_lib.build(data_cfg.name, os.path.expanduser(manual_dir), data_dir,
                  config=data_cfg.get("config"))


def _features_of_batch(encoder: Encoder, fn, ecg: np.ndarray, kind: str) -> np.ndarray:
  if encoder.model is None:
    shape = (ecg.shape[0], NO_ECG_DIM) if kind == "pooled" else (ecg.shape[0], 1, NO_ECG_DIM)
    return np.zeros(shape, np.float32)
  return np.asarray(fn(encoder.params, jnp.asarray(ecg)), np.float32)


def split_features(data_cfg, split: str, encoder: Encoder, kind: str, batch_size: int,
                   max_records: int | None = None, progress: bool = True) -> dict:
  """Frozen features of every record with a report in a split, once.

  Returns {'features' float32 (N, D) | (N, T, D), 'reports' [str], 'codes' [[SCP code]],
  'ecg_id' int64 (N,)}. Records whose report is empty are left out (nothing to learn or score).
  """
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  data_cfg = ml_collections.ConfigDict(data_cfg.to_dict())
  data_cfg.preprocess = ml_collections.ConfigDict(encoder.preprocess)
  names = pipeline.label_names(data_cfg).get("all", [])
  fn = None if encoder.model is None else encoder.feature_fn(kind)
  total = pipeline.split_size(data_cfg, split)
  bar = None
  if progress:
    from tqdm import auto as tqdm_auto  # pylint: disable=g-import-not-at-top
    bar = tqdm_auto.tqdm(total=total, desc=f"features {split}", unit="ecg", file=sys.stderr)
  feats, reports, codes, ids = [], [], [], []
  for batch in pipeline.iterate_split(data_cfg, split, batch_size):
    keep = np.asarray(batch["valid"]) & np.array([bool(r.strip()) for r in batch["report"]])
    if bar is not None:
      bar.update(int(np.sum(batch["valid"])))
    if not keep.any():
      continue
    out = _features_of_batch(encoder, fn, batch["ecg"], kind)
    feats.append(out[keep])
    reports += [r for r, k in zip(batch["report"], keep) if k]
    ids.append(np.asarray(batch["ecg_id"])[keep])
    if "labels/all" in batch:
      for row in np.asarray(batch["labels/all"])[keep]:
        codes.append([names[i] for i in np.flatnonzero(row)])
    else:
      codes += [[] for _ in range(int(keep.sum()))]
    if max_records and len(reports) >= max_records:
      break
  if bar is not None:
    bar.close()
  if not reports:
    raise GenerateError(f"split {split!r} of {data_cfg.name} has no record with a report")
  n = min(len(reports), max_records or len(reports))
  return {"features": np.concatenate(feats)[:n], "reports": reports[:n], "codes": codes[:n],
          "ecg_id": np.concatenate(ids)[:n]}


def save_features(path: str, feats: dict) -> None:
  np.savez(path, features=feats["features"], ecg_id=feats["ecg_id"],
           reports=np.asarray(feats["reports"], dtype=object),
           codes=np.asarray([" ".join(c) for c in feats["codes"]], dtype=object))


# ------------------------------------------------------------------------------- the model

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
  model, params, tokenizer = llm or load_llm(config.llm, config.get("llm_path"), config.seed)
  d_model = model.config.d_model
  projector = conditioning.build_projector(
      config.projector_kind, config.num_prefix_tokens, d_model,
      target_rms=conditioning.token_embedding_rms(params, d_model),
      hidden=config.projector_hidden, **config.resampler.to_dict())
  return Generator(model, params, tokenizer, projector, prompt_ids(tokenizer, config.prompt),
                   float(config.lora_alpha))


def init_trainable(gen: Generator, feature_shape: Sequence[int], lora_rank: int, seed: int):
  rng_p, rng_l = jax.random.split(jax.random.PRNGKey(seed))
  dummy = jnp.zeros((1,) + tuple(feature_shape), jnp.float32)
  return {"projector": gen.projector.init(rng_p, dummy)["params"],
          "lora": conditioning.init_lora(gen.llm_params, lora_rank, rng_l)}


def make_train_step(gen: Generator, optimizer, mesh):
  """jit(trainable, opt_state, llm_params, batch) → (trainable, opt_state, metrics)."""
  data = parallel.batch_sharding(mesh)
  rep = parallel.replicated(mesh)

  def step(trainable, opt_state, llm_params, batch):
    (loss, count), grads = jax.value_and_grad(gen.loss, has_aux=True)(
        trainable, llm_params, batch["features"], batch["tokens"], batch["input_mask"],
        batch["loss_mask"])
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    return trainable, opt_state, {"loss": loss, "tokens": count,
                                  "grad_norm": optax.global_norm(grads)}

  return jax.jit(step, in_shardings=(rep, rep, rep, data), out_shardings=(rep, rep, rep),
                 donate_argnums=(0, 1))


def train_projector(config, gen: Generator, train: dict, mesh=None, workdir: str | None = None,
                    progress: bool = True) -> tuple[dict, list[dict]]:
  """Trains the projector (and LoRA) on precomputed features; returns (trainable, history)."""
  from merit_jax import optim as optim_lib  # pylint: disable=g-import-not-at-top
  from merit_jax import run_logging  # pylint: disable=g-import-not-at-top
  mesh = mesh or parallel.make_mesh(config.mesh)
  shards = parallel.num_batch_shards(mesh)
  bs = int(config.batch_size)
  if bs <= 0 or bs % shards:
    raise GenerateError(f"config.batch_size={bs} must be a positive multiple of the "
                        f"{shards} batch shards of the mesh")
  feats = np.asarray(train["features"], np.float32)
  tokens, input_mask, loss_mask = training_sequences(
      gen.tokenizer, gen.prompt, train["reports"], int(config.max_report_tokens))
  trainable = init_trainable(gen, feats.shape[1:], int(config.lora_rank), int(config.seed))
  rep = parallel.replicated(mesh)
  trainable = jax.device_put(trainable, rep)
  llm_params = jax.device_put(gen.llm_params, rep)
  total = int(config.total_steps)
  optimizer = optim_lib.make_optimizer(config.optim, total)
  opt_state = jax.device_put(optimizer.init(trainable), rep)
  step_fn = make_train_step(gen, optimizer, mesh)
  data = parallel.batch_sharding(mesh)
  writer = run_logging.MetricWriter(workdir, tensorboard=False) if workdir else None
  bar = run_logging.ProgressBar(total, enabled=progress, desc="train projector")
  rng = np.random.default_rng(int(config.seed))
  order, pos = rng.permutation(len(feats)), 0
  history, window = [], []
  start = time.time()
  for step in range(1, total + 1):
    if pos + bs > len(order):  # Epoch boundary: reshuffle; batches keep one static shape.
      order, pos = rng.permutation(len(feats)), 0
    idx = order[pos:pos + bs] if bs <= len(order) else rng.choice(len(feats), bs)
    pos += bs
    batch = jax.device_put({"features": feats[idx], "tokens": tokens[idx],
                            "input_mask": input_mask[idx], "loss_mask": loss_mask[idx]}, data)
    trainable, opt_state, metrics = step_fn(trainable, opt_state, llm_params, batch)
    window.append(metrics)
    if step % int(config.log_every) == 0 or step == total or step == 1:
      host = jax.device_get(window)
      record = {"step": step, "loss": float(np.mean([m["loss"] for m in host])),
                "grad_norm": float(host[-1]["grad_norm"]),
                "seconds_per_step": (time.time() - start) / step}
      history.append(record)
      window = []
      if writer:
        writer.write(step, record)
      bar.update(0, loss=f"{record['loss']:.3f}")
    bar.update(1)
  bar.close()
  if writer:
    writer.close()
  return jax.device_get(trainable), history


# -------------------------------------------------------------------------------- decoding

def generate_reports(config, gen: Generator, trainable, features: np.ndarray,
                     progress: bool = True) -> list[str]:
  """Decodes one report per feature row (greedy / beam / nucleus from config.decoding)."""
  from merit_jax.models.llm import decode  # pylint: disable=g-import-not-at-top
  dec = config.decoding
  method = dec.method
  if method not in ("greedy", "beam", "nucleus"):
    raise GenerateError(f"config.decoding.method must be greedy|beam|nucleus, got {method!r}")
  bs = int(config.eval.batch_size)
  params = gen.llm_params_with(trainable)
  prefix_fn = jax.jit(gen.prefix)
  prompt = np.asarray(gen.prompt, np.int32)
  kwargs = dict(max_new_tokens=int(config.max_report_tokens), eos_id=gen.tokenizer.eos_id,
                pad_id=gen.tokenizer.pad_id)
  rng = jax.random.PRNGKey(int(config.seed))
  out: list[str] = []
  starts = range(0, len(features), bs)
  if progress:
    from tqdm import auto as tqdm_auto  # pylint: disable=g-import-not-at-top
    starts = tqdm_auto.tqdm(starts, desc=f"generate ({method})", unit="batch", file=sys.stderr)
  for start in starts:
    chunk = np.asarray(features[start:start + bs], np.float32)
    real = chunk.shape[0]
    if real < bs:  # One shape for every batch: no recompiles.
      chunk = np.concatenate([chunk, np.zeros((bs - real,) + chunk.shape[1:], np.float32)])
    prefix = prefix_fn(trainable, jnp.asarray(chunk))
    tokens = jnp.asarray(np.tile(prompt, (bs, 1)))
    if method == "greedy":
      ids = decode.greedy_decode(gen.llm, params, tokens, prefix_embeddings=prefix, **kwargs)
    elif method == "beam":
      ids, _ = decode.beam_search(gen.llm, params, tokens, prefix_embeddings=prefix,
                                  beam_width=int(dec.beam_width),
                                  length_penalty=float(dec.length_penalty), **kwargs)
    else:
      rng, sub = jax.random.split(rng)
      ids = decode.sample_decode(gen.llm, params, tokens, sub, prefix_embeddings=prefix,
                                 temperature=float(dec.temperature), top_p=float(dec.top_p),
                                 **kwargs)
    for row in np.asarray(ids)[:real]:
      out.append(gen.tokenizer.decode(row).strip())
  return out


def evaluate(config, gen: Generator, trainable, test: dict, progress: bool = True) -> tuple:
  """(metrics dict, generated reports) on precomputed test features."""
  from merit_jax.metrics import text as text_metrics  # pylint: disable=g-import-not-at-top
  generated = generate_reports(config, gen, trainable, test["features"], progress)
  # An empty generation (EOS first) is scored as the empty string, i.e. as a miss.
  metrics = text_metrics.report_generation_metrics(
      generated, test["reports"], labels=test["codes"], with_meteor=bool(config.eval.meteor))
  metrics["num_records"] = len(generated)
  metrics["empty_generations"] = sum(1 for g in generated if not g)
  return metrics, generated


# --------------------------------------------------------------------------- save / restore

def _config_json(config) -> dict:
  return json.loads(config.to_json_best_effort())


def save_projector(workdir: str, config, encoder: Encoder, trainable, feature_shape) -> None:
  """projector/ (Orbax) + generate_config.json: all `predict` needs besides the LLM."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  tree = {"projector": trainable["projector"]}
  if trainable["lora"]:
    tree["lora"] = trainable["lora"]
  if encoder.source == "random":
    tree["encoder"] = encoder.params
  path = os.path.join(workdir, PROJECTOR_DIR)
  ocp.PyTreeCheckpointer().save(path, jax.device_get(tree), force=True)
  meta = {"config": _config_json(config), "encoder_source": encoder.source,
          "encoder_run_config": encoder.run_config, "preprocess": encoder.preprocess,
          "feature_shape": list(feature_shape),
          "feature_kind": conditioning.feature_kind(config.projector_kind)}
  with open(os.path.join(workdir, CONFIG_FILE), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=2, default=str)


def load_projector(projector_dir: str):
  """(run config, Encoder, trainable, meta) of a training workdir written by `save_projector`."""
  run_dir = os.path.abspath(os.path.expanduser(projector_dir))
  if os.path.basename(run_dir) == PROJECTOR_DIR:
    run_dir = os.path.dirname(run_dir)
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
    encoder = Encoder("none", None, None, meta["preprocess"])
  elif source == "random":
    from merit_jax.models import merit as merit_lib  # pylint: disable=g-import-not-at-top
    run_cfg = ml_collections.ConfigDict(meta["encoder_run_config"])
    run_cfg.model.text.vocab_size = run_cfg.model.text.get("vocab_size") or 8
    encoder = Encoder("random", merit_lib.build_model(run_cfg), tree["encoder"],
                      meta["preprocess"], meta["encoder_run_config"])
  else:
    encoder = load_encoder(source, None, 0, meta["preprocess"])
  return config, encoder, trainable, meta


# ----------------------------------------------------------------------------------- modes

def _compute_features(workdir, config, encoder, split, kind, max_records=None, progress=True):
  path = os.path.join(workdir, f"features_{split}.npz")
  feats = split_features(config.data, split, encoder, kind, int(config.feature_batch_size),
                         max_records, progress)
  save_features(path, feats)
  return feats


def write_samples(path: str, test: dict, generated: Sequence[str]) -> None:
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["ecg_id", "reference", "generated", "scp_codes"])
    for i, g in enumerate(generated):
      w.writerow([int(test["ecg_id"][i]), test["reports"][i], g, " ".join(test["codes"][i])])


def run_train(config, workdir: str, checkpoint: str | None = None, llm=None,
              evaluate_after: bool = True) -> dict:
  """Trains one projector; evaluates it on config.eval.split. Returns a summary dict."""
  if not workdir:
    raise GenerateError("--workdir is required in train mode")
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  checkpoint = config.checkpoint if checkpoint is None else checkpoint
  progress = bool(config.progress)
  ensure_dataset(config.data)
  encoder = load_encoder(checkpoint, config.get("encoder_like"), int(config.seed),
                         config.data.preprocess.to_dict())
  kind = conditioning.feature_kind(config.projector_kind)
  train = _compute_features(workdir, config, encoder, config.train_split, kind,
                           progress=progress)
  gen = build_generator(config, llm)
  t0 = time.time()
  trainable, history = train_projector(config, gen, train, workdir=workdir, progress=progress)
  train_s = time.time() - t0
  save_projector(workdir, config, encoder, trainable, train["features"].shape[1:])
  summary = {"encoder": encoder.source, "train_records": len(train["reports"]),
             "steps": int(config.total_steps), "batch_size": int(config.batch_size),
             "train_seconds": train_s, "first_loss": history[0]["loss"],
             "final_loss": history[-1]["loss"],
             "trainable_params": conditioning.count_params(trainable)}
  if evaluate_after:
    test = _compute_features(workdir, config, encoder, config.eval.split, kind,
                            config.eval.get("max_records"), progress)
    t0 = time.time()
    metrics, generated = evaluate(config, gen, trainable, test, progress)
    summary.update(metrics=metrics, eval_seconds=time.time() - t0)
    write_samples(os.path.join(workdir, "samples.csv"), test, generated)
    summary["generated"] = generated
    summary["test"] = {"reports": test["reports"], "ecg_id": test["ecg_id"].tolist(),
                       "codes": test["codes"]}
  with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
    json.dump({k: v for k, v in summary.items() if k not in ("generated", "test")}, f, indent=2)
  return summary


def read_inputs(path: str, sample_rate: float | None) -> tuple[list[str], list]:
  """ECGs to report on: ([ids], [(signal (12, S) mV, rate)]) from a folder or one .npy.

  A folder holds WFDB records (searched recursively) or .npy files, each (samples, 12) for one
  ECG or (N, samples, 12) for several; `sample_rate` is the rate of .npy inputs (None = the
  model's).
  """
  from merit_jax import embed  # pylint: disable=g-import-not-at-top
  src = os.path.expanduser(path)
  if not os.path.exists(src):
    raise GenerateError(f"config.input {path!r} does not exist")
  p = pathlib.Path(src)
  if p.is_dir() and any(p.rglob("*.hea")):
    try:
      records, names = embed.read_wfdb_folder(src)
    except (ValueError, FileNotFoundError) as e:
      raise GenerateError(str(e)) from e
    return names, records
  files = sorted(p.rglob("*.npy")) if p.is_dir() else [p]
  if not files or any(f.suffix != ".npy" for f in files):
    raise GenerateError(f"config.input {path!r}: expected a folder of WFDB records (*.hea) or "
                        ".npy files, or one .npy file")
  ids, records = [], []
  for f in files:
    try:
      arr = np.load(f, allow_pickle=False)
    except ValueError as e:
      raise GenerateError(f"cannot read {f}: {e}") from e
    single = arr.ndim == 2
    try:
      leads_major = embed.check_signals(arr[None] if single else arr, where=str(f))
    except ValueError as e:
      raise GenerateError(str(e)) from e
    name = os.path.relpath(f, src) if p.is_dir() else f.name
    name = name[:-4]
    for i, sig in enumerate(leads_major):
      ids.append(name if single else f"{name}:{i}")
      records.append((sig, sample_rate))
  return ids, records


def run_predict(config) -> str:
  """Writes a CSV (id, report) for every ECG under config.input."""
  from merit_jax.data import preprocess as preprocess_lib  # pylint: disable=g-import-not-at-top
  for key in ("projector", "input", "output"):
    if not config.get(key):
      raise GenerateError(f"predict mode needs --config.{key}")
  ids, records = read_inputs(config.input, config.get("sample_rate"))  # Fail fast on input.
  train_cfg, encoder, trainable, meta = load_projector(config.projector)
  # Decoding settings come from this invocation; the model's from the training run.
  train_cfg.decoding = config.decoding
  train_cfg.eval.batch_size = config.eval.batch_size
  pre_cfg = preprocess_lib.PreprocessConfig.from_config(
      ml_collections.ConfigDict(meta["preprocess"]))
  rate_default = float(pre_cfg.sample_rate)
  kind = meta["feature_kind"]
  fn = None if encoder.model is None else encoder.feature_fn(kind)
  feats = []
  bs = int(config.feature_batch_size)
  for start in range(0, len(records), bs):
    chunk = records[start:start + bs]
    try:
      ecg = np.stack([preprocess_lib.preprocess(sig, rate or rate_default, pre_cfg)
                      for sig, rate in chunk])
    except ValueError as e:
      raise GenerateError(f"cannot preprocess input ECGs: {e}") from e
    feats.append(_features_of_batch(encoder, fn, ecg, kind))
  features = np.concatenate(feats)
  gen = build_generator(train_cfg)
  reports = generate_reports(train_cfg, gen, trainable, features, bool(config.progress))
  out = os.path.abspath(os.path.expanduser(config.output))
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["id", "report"])
    w.writerows(zip(ids, reports))
  return out


# --------------------------------------------------------------------------------- compare

# (metrics key, column title) of the comparison tables, scores in %.
_TABLE_COLUMNS = (("bleu1", "BLEU-1"), ("bleu4", "BLEU-4"), ("rouge_l", "ROUGE-L"),
                  ("meteor", "METEOR"), ("clinical_micro_f1", "statement F1 micro"),
                  ("clinical_macro_f1", "statement F1 macro"))
CONFIDENCE = 0.95  # Of the bootstrap intervals in the comparison table.


def _n_bootstrap(config) -> int:
  n = config.eval.get("n_bootstrap", 1000)
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise GenerateError(f"config.eval.n_bootstrap must be a positive integer, got {n!r}")
  return n


def _cell(stat: dict | None, value: float | None) -> str:
  """'12.3 [10.1, 14.5]' (%) from a bootstrap entry; the bare value (or –) without one."""
  if stat is None:
    return "–" if value is None else f"{100 * value:.1f}"
  return f"{100 * stat['value']:.1f} [{100 * stat['ci_low']:.1f}, {100 * stat['ci_high']:.1f}]"


def _diff_cell(stat: dict | None) -> str:
  """'+1.2 [-0.5, +2.9]' in percentage points."""
  if stat is None or "diff" not in stat:
    return "–"
  return (f"{100 * stat['diff']:+.1f} [{100 * stat['diff_ci_low']:+.1f}, "
          f"{100 * stat['diff_ci_high']:+.1f}]")


def bootstrap_arms(config, results: dict) -> dict:
  """Per arm, `text_metrics.bootstrap_from_statistics` over its test records.

  Every arm is resampled with the same seed, so resample b holds the same records for all arms;
  arms after the first also get the paired difference from the first arm (the no-ECG arm in
  the default `config.arms`). An arm scored on other records than the first gets no
  difference (it cannot be paired).
  """
  from merit_jax.metrics import text as text_metrics  # pylint: disable=g-import-not-at-top
  n_bootstrap = _n_bootstrap(config)
  arms = list(results)
  stats = {}
  for arm, r in results.items():
    # Each record is scored once (METEOR included); resamples re-sum these rows.
    stats[arm] = text_metrics.record_statistics(
        r["generated"], r["test"]["reports"], labels=r["test"]["codes"],
        with_meteor=bool(config.eval.meteor))
  base = arms[0]
  out = {}
  for arm in arms:
    paired = arm != base and results[arm]["test"]["ecg_id"] == results[base]["test"]["ecg_id"]
    if arm != base and not paired:
      print(f"    {arm}: test records differ from arm {base}'s; no paired difference",
            flush=True)
    out[arm] = text_metrics.bootstrap_from_statistics(
        stats[arm], stats[base] if paired else None, n_bootstrap=n_bootstrap,
        seed=int(config.seed), alpha=1.0 - CONFIDENCE)
  return out


def comparison_markdown(config, results: dict, command: str) -> str:
  """The comparison table (with bootstrap CIs), the paired differences, a few examples."""
  lines = ["# ECG-conditioned report generation on PTB-XL", "",
           f"Command: `{command}`", ""]
  first = next(iter(results.values()))
  base_arm = next(iter(results))
  num_records = first["metrics"]["num_records"]
  lines += [
      f"Data: {config.data.name} ({config.data.config}) from `{config.data.manual_dir}`; "
      f"trained on split `{config.train_split}` ({first['train_records']} records with a "
      f"report), scored on split `{config.eval.split}` ({num_records} "
      "records). LLM: " + ("Gemma 3 270M (Q4_K_M GGUF, dequantised), frozen"
                           if config.llm == "gemma3_270m" else f"{config.llm}")
      + (f" + LoRA rank {config.lora_rank}" if config.lora_rank else "") + "; projector "
      f"`{config.projector_kind}` → {config.num_prefix_tokens} soft tokens; prompt "
      f"`{config.prompt}`; {config.decoding.method} decoding, max {config.max_report_tokens} "
      "tokens.",
      f"Budget: **{config.total_steps} steps × batch {config.batch_size}** per arm, AdamW lr "
      f"{config.optim.lr}, on {jax.devices()[0].platform.upper()} "
      f"({jax.device_count()} device(s)) — a small budget: absolute scores are low. One "
      "training run per arm: the intervals below cover the sampling of test records, not "
      "the variation between training runs.", "",
      "| arm | encoder | " + " | ".join(title for _, title in _TABLE_COLUMNS)
      + " | final train loss | train s |",
      "|---|---|" + "---|" * len(_TABLE_COLUMNS) + "---|---|"]
  for arm, r in results.items():
    m, ci = r["metrics"], r.get("bootstrap") or {}
    cells = [_cell(ci.get(key), m.get(key)) for key, _ in _TABLE_COLUMNS]
    lines.append(f"| {ARM_TITLES.get(arm, arm)} | `{r['encoder']}` | " + " | ".join(cells)
                 + f" | {r['final_loss']:.3f} | {r['train_seconds']:.0f} |")
  n_bootstrap = config.eval.get("n_bootstrap", 1000)
  pct = f"{100 * CONFIDENCE:g} %"
  lines += ["", f"Scores in %, as `value [low, high]`: the {pct} percentile bootstrap "
            f"confidence interval over the {num_records} test records ({n_bootstrap} "
            f"resamples of the {num_records} records drawn with replacement, each keeping "
            "a record of every labelled statement (`evaluators.metrics."
            f"iter_resample_indices`), seed {config.seed}; low and high are the "
            f"{50 * (1 - CONFIDENCE):g}th and "
            f"{100 - 50 * (1 - CONFIDENCE):g}th percentiles of the metric over the "
            "resamples). Statement F1: SCP statements recovered from the generated text "
            "by `evaluators.text_metrics.ScpMatcher` against each record's PTB-XL `scp_codes`."]
  others = list(results.items())[1:]
  if others:
    base = "no-ECG arm" if base_arm == "none" else f"`{base_arm}` arm"
    lines += ["", f"## Difference from the {base} (paired bootstrap, {pct} CI)", "",
              "| arm | " + " | ".join(title for _, title in _TABLE_COLUMNS) + " |",
              "|---|" + "---|" * len(_TABLE_COLUMNS)]
    for arm, r in others:
      ci = r.get("bootstrap") or {}
      lines.append(f"| {ARM_TITLES.get(arm, arm)} | "
                   + " | ".join(_diff_cell(ci.get(key)) for key, _ in _TABLE_COLUMNS) + " |")
    lines += ["", f"Percentage points, arm minus {base}: `difference [low, high]`. Paired: "
              "each resample draws the same test records for both arms and the difference "
              f"is taken within it; low and high are its {50 * (1 - CONFIDENCE):g}th and "
              f"{100 - 50 * (1 - CONFIDENCE):g}th percentiles over the {n_bootstrap} "
              "resamples. An interval that excludes 0 is a difference beyond test-record "
              "sampling noise."]
  lines += ["", "## Examples", ""]
  test = first["test"]
  for i in range(min(int(config.eval.num_examples), len(test["reports"]))):
    lines.append(f"**ecg_id {test['ecg_id'][i]}** (labels: {' '.join(test['codes'][i])})")
    lines.append("")
    lines.append(f"- reference: {test['reports'][i]}")
    for arm, r in results.items():
      lines.append(f"- {arm}: {r['generated'][i] or '(empty)'}")
    lines.append("")
  return "\n".join(lines) + "\n"


def run_compare(config, workdir: str, command: str = "") -> dict:
  """Trains and scores the arms one after another; writes the table.

  Each arm's summary (see `run_train`) gains "bootstrap": `bootstrap_arms`'s CIs over the test
  records, and for arms after the first the paired difference from the first arm.
  """
  if not workdir:
    raise GenerateError("--workdir is required in compare mode")
  arms = list(config.arms)
  unknown = sorted(set(arms) - set(ARM_TITLES))
  if unknown:
    raise GenerateError(f"config.arms: unknown {unknown}; choose from {sorted(ARM_TITLES)}")
  if ("merit" in arms or "random" in arms) and not config.get("merit_checkpoint"):
    raise GenerateError("compare mode needs --config.merit_checkpoint=RUN_DIR (a MERIT "
                        "pretraining run; the random arm copies its encoder config)")
  n_bootstrap = _n_bootstrap(config)  # Fail before the arms train, not after.
  workdir = os.path.abspath(os.path.expanduser(workdir))
  llm = load_llm(config.llm, config.get("llm_path"), int(config.seed))
  results = {}
  for arm in arms:
    print(f"=== arm {arm}: {ARM_TITLES[arm]}", flush=True)
    arm_cfg = ml_collections.ConfigDict(config.to_dict())
    if arm == "random":
      arm_cfg.encoder_like = config.merit_checkpoint
    checkpoint = {"none": "none", "random": "random", "merit": config.merit_checkpoint}[arm]
    results[arm] = run_train(arm_cfg, os.path.join(workdir, arm), checkpoint, llm=llm)
    m = results[arm]["metrics"]
    print(f"    {arm}: BLEU-4 {m['bleu4']:.4f} ROUGE-L {m['rouge_l']:.4f} "
          f"METEOR {m.get('meteor', float('nan')):.4f} F1 {m['clinical_micro_f1']:.4f}",
          flush=True)
  for arm, ci in bootstrap_arms(config, results).items():
    results[arm]["bootstrap"] = ci
  table = comparison_markdown(config, results, command)
  with open(os.path.join(workdir, "report_generation.md"), "w", encoding="utf-8") as f:
    f.write(table)
  payload = {"config": _config_json(config), "command": command,
             "device": f"{jax.devices()[0].platform} x{jax.device_count()}",
             "arms": {arm: {k: v for k, v in r.items() if k != "test"}
                      for arm, r in results.items()},
             "references": results[arms[0]]["test"],
             # Each arm's "bootstrap": {metric: {value, ci_low, ci_high[, diff, diff_ci_low,
             # diff_ci_high]}}, differences against `baseline_arm`.
             "bootstrap": {"n_bootstrap": n_bootstrap, "seed": int(config.seed),
                           "confidence": CONFIDENCE, "baseline_arm": arms[0],
                           "method": "percentile bootstrap over test records, resampled "
                                     "with replacement keeping a record of every labelled "
                                     "statement (evaluators.metrics.iter_resample_indices); "
                                     "paired (same resamples) for differences"}}
  with open(os.path.join(workdir, "report_generation.json"), "w", encoding="utf-8") as f:
    json.dump(payload, f, indent=2, default=str)
  if config.get("results_path"):
    out = os.path.expanduser(config.results_path)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
      f.write(table)
  print(table)
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = None if _CONFIG is None else _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/generate.py[:variant] is required")
  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax chatter.
  if config.mode not in MODES:
    sys.exit(f"merit_jax.generate: config.mode must be one of {MODES}, got {config.mode!r}")
  command = "python -m merit_jax.generate " + " ".join(sys.argv[1:])
  try:
    if config.mode == "train":
      summary = run_train(config, _WORKDIR.value)
      print(json.dumps({k: v for k, v in summary.items() if k not in ("generated", "test")},
                       indent=2, default=str))
    elif config.mode == "predict":
      out = run_predict(config)
      print(f"wrote reports to {out}")
    else:
      run_compare(config, _WORKDIR.value, command)
  except (GenerateError, FileNotFoundError) as e:
    sys.exit(f"merit_jax.generate: {e}")


if __name__ == "__main__":
  _CONFIG, _WORKDIR = _define_flags()
  app.run(main)
