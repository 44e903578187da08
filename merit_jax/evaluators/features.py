"""Encoders → features per split: batched, jitted, cached as .npz beside the results.

The evaluators consume numpy features; this module is where a model (or a classical feature
transform) meets the data. An `Encoder` wraps one feature source behind the same calls:

- `checkpoint_encoder(checkpoint_dir, step=None)`: a trained MERIT run (its own preprocessing,
  tokenizer and text tower);
- `random_init_encoder(config, tokenizer, seed=0)`: the same architecture, randomly initialised
  (the baseline a pretrained encoder must beat; its text tower is random too, so its zero-shot
  and retrieval numbers are a chance-level check);
- `random_conv_encoder(num_kernels, seed, num_samples)`: ROCKET-style random convolutions
  (`random_conv.py`), no text tower.

`Encoder` fields: `name` (for tables), `cache_key` (file-system safe; for a checkpoint it holds
the run name, the step and a hash of the run's path, so two runs never share a cache entry),
`embed_ecg(ecg (B, leads, S)) -> {'pooled': (B, D)[, 'projected': (B, P), 'per_lead':
(B, leads * D) (each lead's token mean, concatenated)]}`,
`embed_text(list[str]) -> (n, P)` projected text embeddings or None,
`embed_ecg_leads(ecg (B, len(leads), S), leads) -> dict` (same keys and widths as `embed_ecg`)
for encoders that take a lead subset natively, else None, and for MERIT encoders `model`,
`params`, `config` (fine-tuning needs them). MERIT encoders (`checkpoint_encoder`,
`random_init_encoder`) have `embed_ecg_leads`: per-lead patches with lead embeddings make any
lead subset a valid input (`MERIT.embed_ecg(ecg, leads=...)`), jitted once per lead set.
Random convolutions have none: their feature layout is per lead, so a missing lead can only be
zero-filled.

`FeatureStore(data_cfg, cache_dir, sources=None, batch_size=64, max_records=None)` reads each
split once (all records of every source, preprocessed as the data config says, padding rows
dropped) into a `SplitData` (ecg, labels {task: (N, C)}, ecg_id, report, source) and serves:

- `features(encoder, split, corruption=None, seed=0, reduced_leads_mode="native")
  -> {'pooled', ['projected'], 'ecg_id'}`: `corruption` is `(name, severity)` of
  `shift.CORRUPTIONS`, applied to the preprocessed model input (so amplitude scaling is a real
  change, not undone by per-lead normalisation), seeded per batch from `seed`. For
  `reduced_leads`, `reduced_leads_mode` (`REDUCED_LEADS_MODES`) says how the missing leads are
  handled: `native` embeds only the kept leads through `encoder.embed_ecg_leads` where the
  encoder has one (zero-filling otherwise), `zeros` always feeds the 12-lead input with the
  missing leads zeroed; `reduced_leads_path(encoder, mode)` gives the path actually taken.
  Cached at `<cache_dir>/<cache_key>/<split>[__<name>_<severity>[_native]].npz` (`_native` only
  for features from the native path, so zero-filled and native features never share an entry)
  and checked against the split's ecg_ids when read back.
- `text_features(encoder, split) -> (N, P)`: projected embeddings of the split's reports.

Records from several sources (e.g. `ptbxl_shared`: raw and upstream-normalised PTB-XL) are
concatenated per split; only label tasks with the same label names in every source are kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from merit_jax.evaluators import random_conv as random_conv_lib
from merit_jax.models import text_tower
from merit_jax.evaluators import shift

EmbedEcg = Callable[[np.ndarray], dict]
EmbedEcgLeads = Callable[[np.ndarray, tuple], dict]
EmbedText = Callable[[list], np.ndarray]

# How `reduced_leads` feeds an encoder: its native lead-subset input where it has one, or the
# 12-lead input with the missing leads zero-filled.
REDUCED_LEADS_MODES = ("native", "zeros")


@dataclasses.dataclass
class Encoder:
  """One source of ECG features (and optionally text embeddings); see module docstring."""
  name: str
  cache_key: str
  embed_ecg: EmbedEcg
  embed_text: Optional[EmbedText] = None
  model: Any = None
  params: Any = None
  config: Any = None
  tokenizer: Any = None
  step: Optional[int] = None
  # (ecg (B, len(leads), S), leads) -> the `embed_ecg` dict, from those leads alone; None when
  # the encoder cannot take a lead subset (reduced-lead input is then zero-filled).
  embed_ecg_leads: Optional[EmbedEcgLeads] = None


def _progress(iterable, desc: str, total: Optional[int] = None, enabled: bool = True):
  if not enabled:
    return iterable
  from tqdm import auto as tqdm_auto  # pylint: disable=g-import-not-at-top
  return tqdm_auto.tqdm(iterable, desc=desc, total=total, leave=False, file=sys.stderr)


def _pad_batch(x: np.ndarray, size: int) -> np.ndarray:
  if x.shape[0] == size:
    return x
  return np.concatenate([x, np.repeat(x[-1:], size - x.shape[0], axis=0)], axis=0)


class _TowerAsTokenizer:
  """A frozen tower behind the tokenizer call `_merit_fns` makes: text -> pooled rows."""

  def __init__(self, tower):
    self._tower = tower

  def encode_batch(self, texts, max_len=None):
    del max_len
    return self._tower.embed(texts)


def _merit_fns(model, params, config, tokenizer, batch_size: int):
  """Jitted, fixed-shape embedding functions of a MERIT model (one compilation each).

  Returns `(embed_ecg, embed_text, embed_ecg_leads)`; `embed_ecg_leads` compiles once per
  lead set (a static tuple), since the number of lead tokens fixes the input shape.
  """
  # One jitted function serves both paths: `leads` is static (None = all leads).
  def embed(p, ecg, leads):
    out = model.apply({"params": p}, ecg, leads=leads, return_tokens=True,
                      method=model.embed_ecg)
    tokens = out.pop("tokens")  # (B, leads * patches, D), lead-major.
    b, _, width = tokens.shape
    num_leads = ecg.shape[1] if leads is None else len(leads)
    # Per-lead means side by side: a probe feature 12x wider than `pooled`, for capacity
    # comparisons with wide classical features (chosen on validation by the probe).
    out["per_lead"] = tokens.reshape(b, num_leads, -1, width).mean(axis=2).reshape(b, -1)
    return out

  embed_jit = jax.jit(embed, static_argnums=2)
  embed_text_jit = jax.jit(lambda p, tok: model.apply({"params": p}, tok,
                                                      method=model.embed_text))
  max_len = int(config.data.get("max_text_len", 64))
  if text_tower.is_frozen(config.model.text):
    # The frozen tower runs outside the model; MERIT only projects its pooled output.
    tower = text_tower.FrozenTextTower.from_config(config.model.text, batch_size)
    tokenizer = _TowerAsTokenizer(tower)

  def embed_ecg_leads(ecg: np.ndarray, leads) -> dict:
    leads = None if leads is None else tuple(int(i) for i in leads)
    real = ecg.shape[0]
    out = embed_jit(params, jnp.asarray(_pad_batch(np.asarray(ecg, np.float32),
                                                   max(batch_size, real))), leads)
    return {k: np.asarray(v, np.float32)[:real] for k, v in out.items()}

  def embed_ecg(ecg: np.ndarray) -> dict:
    return embed_ecg_leads(ecg, None)

  def embed_text(texts: list) -> np.ndarray:
    out = []
    for start in range(0, len(texts), batch_size):
      chunk = list(texts[start:start + batch_size])
      tokens = tokenizer.encode_batch(chunk, max_len)
      emb = embed_text_jit(params, jnp.asarray(_pad_batch(tokens, batch_size)))["projected"]
      out.append(np.asarray(emb, np.float32)[:len(chunk)])
    return np.concatenate(out, axis=0) if out else np.zeros((0, 0), np.float32)

  return embed_ecg, embed_text, embed_ecg_leads


def _manager_dir(checkpoint_dir: str) -> str:
  """The folder holding the step folders of a run dir (or the folder itself)."""
  from merit_jax import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(os.path.expanduser(str(checkpoint_dir)))
  if os.path.isfile(os.path.join(path, checkpoint_lib.CONFIG_FILE)):
    for sub in (checkpoint_lib.LATEST_DIR, checkpoint_lib.BEST_DIR):
      if os.path.isdir(os.path.join(path, sub)):
        return os.path.join(path, sub)
  return path


def latest_step(checkpoint_dir: str) -> int:
  """The newest complete step of a run (what `load_for_inference` loads by default)."""
  folder = _manager_dir(checkpoint_dir)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"checkpoint path {checkpoint_dir!r} does not exist")
  steps = [int(n) for n in os.listdir(folder)
           if n.isdigit() and os.path.isdir(os.path.join(folder, n, "state"))]
  if not steps:
    raise FileNotFoundError(f"no complete checkpoint under {folder} (from {checkpoint_dir!r}); "
                            "pass the --workdir of a finished training run")
  return max(steps)


def _run_name(checkpoint_dir: str) -> str:
  path = os.path.abspath(os.path.expanduser(str(checkpoint_dir))).rstrip("/")
  base = os.path.basename(path)
  if base.startswith("checkpoints"):
    base = os.path.basename(os.path.dirname(path))
  return base or "run"


def checkpoint_encoder(checkpoint_dir: str, step: Optional[int] = None, batch_size: int = 64,
                       name: Optional[str] = None) -> Encoder:
  """A trained MERIT run as an `Encoder` (its latest step unless `step` is given)."""
  from merit_jax import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  step = latest_step(checkpoint_dir) if step is None else int(step)
  model, params, config, _, tokenizer = checkpoint_lib.load_for_inference(checkpoint_dir, step)
  embed_ecg, embed_text, embed_ecg_leads = _merit_fns(model, params, config, tokenizer,
                                                       batch_size)
  run = _run_name(checkpoint_dir)
  digest = hashlib.sha1(os.path.abspath(os.path.expanduser(str(checkpoint_dir))).encode()
                        ).hexdigest()[:8]
  return Encoder(name=name or run, cache_key=f"{run}-step{step}-{digest}", embed_ecg=embed_ecg,
                 embed_text=embed_text, model=model, params=params, config=config,
                 tokenizer=tokenizer, step=step, embed_ecg_leads=embed_ecg_leads)


def random_init_encoder(config, tokenizer, seed: int = 0, batch_size: int = 64,
                        name: str = "random_init") -> Encoder:
  """The architecture of `config`, randomly initialised (the same init as training)."""
  from merit_jax.models import merit as merit_lib  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references() if hasattr(config, "copy_and_resolve_references") \
      else config
  if tokenizer is not None:
    config.model.text.vocab_size = int(tokenizer.vocab_size)
  model = merit_lib.build_model(config)
  num_samples = int(config.data.preprocess.num_samples)
  ecg = jnp.zeros((1, int(config.model.get("num_leads", 12)), num_samples), jnp.float32)
  tokens = merit_lib.dummy_text_input(config)
  params_key, mask_key = jax.random.split(jax.random.key(seed))
  params = jax.jit(lambda k1, k2: nn.unbox(model.init(
      {"params": k1}, ecg, tokens, k2, reconstruction=True, contrastive=True)["params"]))(
          params_key, mask_key)
  embed_ecg, embed_text, embed_ecg_leads = _merit_fns(model, params, config, tokenizer,
                                                       batch_size)
  return Encoder(name=name, cache_key=f"random_init-s{seed}-{_config_digest(config)}",
                 embed_ecg=embed_ecg,
                 embed_text=embed_text if tokenizer or text_tower.is_frozen(
                     config.model.text) else None,
                 model=model, params=params, config=config, tokenizer=tokenizer, step=0,
                 embed_ecg_leads=embed_ecg_leads)


def _config_digest(config) -> str:
  text = config.model.to_json_best_effort(sort_keys=True) + str(
      config.data.preprocess.to_json_best_effort(sort_keys=True))
  return hashlib.sha1(text.encode()).hexdigest()[:8]


def random_conv_encoder(num_kernels: int = 500, seed: int = 0, num_samples: int = 1000,
                        name: str = "random_conv") -> Encoder:
  """ROCKET-style random convolution features as an `Encoder` (no text tower).

  No `embed_ecg_leads`: the features are laid out per lead, so the probe's weights expect
  every lead's block and a reduced-lead input can only be zero-filled.
  """
  transform = random_conv_lib.RandomConvFeatures(num_kernels, seed, num_samples)
  return Encoder(name=name, cache_key=transform.cache_key,
                 embed_ecg=lambda ecg: {"pooled": transform(ecg)})


@dataclasses.dataclass
class SplitData:
  """One split of every source, preprocessed, in stored order (padding dropped)."""
  ecg: np.ndarray           # float32 (N, leads, S)
  labels: dict              # task -> uint8 (N, C)
  ecg_id: np.ndarray        # int64 (N,)
  report: list              # N str
  source: np.ndarray        # int32 (N,) index into the store's sources

  def __len__(self) -> int:
    return int(self.ecg_id.shape[0])


def load_split(data_cfg, split: str, sources=None, batch_size: int = 64,
               max_records: Optional[int] = None, progress: bool = True) -> SplitData:
  """Reads `split` of every source into memory (see `FeatureStore`)."""
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  sources = list(sources) if sources else [pipeline.primary_source(data_cfg)]
  parts = []
  for index, spec in enumerate(sources):
    _check_labels_known(spec)
    total = pipeline.split_size(data_cfg, split, source=spec)
    if max_records:
      total = min(total, max_records)
    ecg, ids, reports, labels = [], [], [], {}
    seen = 0
    batches = pipeline.iterate_split(data_cfg, split, batch_size, source=spec)
    for batch in _progress(batches, f"read {spec.name}/{split}", -(-total // batch_size),
                           progress):
      valid = np.asarray(batch["valid"], bool)
      ecg.append(np.asarray(batch["ecg"], np.float32)[valid])
      ids.append(np.asarray(batch["ecg_id"], np.int64)[valid])
      reports.extend(r for r, v in zip(batch["report"], valid) if v)
      for key, value in batch.items():
        if key.startswith("labels/"):
          labels.setdefault(key[len("labels/"):], []).append(np.asarray(value, np.uint8)[valid])
      seen += int(valid.sum())
      if max_records and seen >= max_records:
        break
    if not ids:
      raise ValueError(f"split {split!r} of {spec.name} ({spec.data_dir}) holds no records")
    n = min(seen, max_records) if max_records else seen
    parts.append(SplitData(ecg=np.concatenate(ecg)[:n],
                           labels={t: np.concatenate(v)[:n] for t, v in labels.items()},
                           ecg_id=np.concatenate(ids)[:n], report=reports[:n],
                           source=np.full(n, index, np.int32)))
  tasks = set(parts[0].labels)
  for part in parts[1:]:
    tasks &= {t for t in part.labels if part.labels[t].shape[1] == parts[0].labels[t].shape[1]}
  return SplitData(ecg=np.concatenate([p.ecg for p in parts]),
                   labels={t: np.concatenate([p.labels[t] for p in parts]) for t in sorted(tasks)},
                   ecg_id=np.concatenate([p.ecg_id for p in parts]),
                   report=[r for p in parts for r in p.report],
                   source=np.concatenate([p.source for p in parts]))


def check_reduced_leads_mode(mode: str) -> str:
  """`mode` if it is one of `REDUCED_LEADS_MODES`, else a ValueError naming the choices."""
  if mode not in REDUCED_LEADS_MODES:
    raise ValueError(f"reduced_leads_mode must be one of {REDUCED_LEADS_MODES} "
                     f"(config.shift.reduced_leads_mode), got {mode!r}")
  return mode


def reduced_leads_path(encoder: Encoder, mode: str = "native") -> str:
  """The path `reduced_leads` takes for `encoder` under `mode`: 'native' or 'zeros'."""
  check_reduced_leads_mode(mode)
  return "native" if mode == "native" and encoder.embed_ecg_leads is not None else "zeros"


def corruption_tag(corruption, native: bool = False) -> str:
  """The cache-file suffix of a corruption; `native` marks lead-subset (not zero-filled) input."""
  if corruption is None:
    return ""
  name, severity = corruption
  tag = f"__{name}_{str(severity).replace('+', 'p').replace('/', '-')}"
  return tag + "_native" if native else tag


class FeatureStore:
  """Splits read once, features computed once per encoder/split/corruption and cached."""

  def __init__(self, data_cfg, cache_dir: Optional[str], sources=None, batch_size: int = 64,
               max_records: Optional[int] = None, progress: bool = True):
    self.data_cfg = data_cfg
    self.cache_dir = cache_dir
    self.sources = sources
    self.batch_size = int(batch_size)
    self.max_records = max_records
    self.progress = progress
    self._splits: dict[str, SplitData] = {}
    self._memory: dict[tuple, dict] = {}

  @property
  def sample_rate(self) -> float:
    return float(self.data_cfg.preprocess.sample_rate)

  def split(self, split: str) -> SplitData:
    if split not in self._splits:
      self._splits[split] = load_split(self.data_cfg, split, self.sources, self.batch_size,
                                       self.max_records, self.progress)
    return self._splits[split]

  def set_split(self, split: str, data: SplitData) -> None:
    """Replaces a split's data (tests use it to alter labels)."""
    self._splits[split] = data

  def _path(self, encoder: Encoder, split: str, tag: str) -> Optional[str]:
    if not self.cache_dir:
      return None
    return os.path.join(self.cache_dir, encoder.cache_key, f"{split}{tag}.npz")

  def _load_cached(self, path, ecg_id):
    if path is None or not os.path.exists(path):
      return None
    with np.load(path) as cached:
      out = {k: cached[k] for k in cached.files}
    if out.get("ecg_id") is None or not np.array_equal(out["ecg_id"], ecg_id):
      return None  # The split changed (another max_records, another build): recompute.
    return out

  def _save(self, path, out):
    if path is None:
      return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **out)
    os.replace(tmp, path)

  def features(self, encoder: Encoder, split: str, corruption=None, seed: int = 0,
               reduced_leads_mode: str = "native") -> dict:
    """{'pooled', ['projected'], 'ecg_id'} of one split, optionally corrupted.

    Args:
      encoder: the feature source.
      split: a TFDS split name.
      corruption: None or `(name, severity)` of `shift.CORRUPTIONS`.
      seed: seeds the corruption (per batch).
      reduced_leads_mode: for `reduced_leads`, 'native' (the kept leads alone through
        `encoder.embed_ecg_leads`, zero-filled for encoders without one) or 'zeros'.
    """
    check_reduced_leads_mode(reduced_leads_mode)
    native = (corruption is not None and corruption[0] == "reduced_leads"
              and reduced_leads_path(encoder, reduced_leads_mode) == "native")
    tag = corruption_tag(corruption, native)
    key = (encoder.cache_key, split, tag, seed)
    if key in self._memory:
      return self._memory[key]
    data = self.split(split)
    path = self._path(encoder, split, tag)
    out = self._load_cached(path, data.ecg_id)
    if out is None:
      parts: dict[str, list] = {}
      starts = range(0, len(data), self.batch_size)
      desc = f"embed {encoder.name}/{split}{tag}"
      for i, start in enumerate(_progress(starts, desc, len(starts), self.progress)):
        ecg = data.ecg[start:start + self.batch_size]
        if native:
          # Only the kept leads reach the encoder: no zero-filled lead tokens.
          ecg, kept = shift.reduce_leads(ecg, corruption[1], mode="select")
          emb = encoder.embed_ecg_leads(ecg, tuple(int(k) for k in kept))
        else:
          if corruption is not None:
            ecg = shift.apply_corruption(ecg, corruption[0], corruption[1], self.sample_rate,
                                         seed=seed * 1_000_003 + i)
          emb = encoder.embed_ecg(ecg)
        for k, v in emb.items():
          parts.setdefault(k, []).append(np.asarray(v, np.float32))
      out = {k: np.concatenate(v) for k, v in parts.items()}
      out["ecg_id"] = data.ecg_id
      self._save(path, out)
    self._memory[key] = out
    return out

  def text_features(self, encoder: Encoder, split: str) -> np.ndarray:
    """(N, P) projected embeddings of the split's reports ('' reports embed as empty text)."""
    if encoder.embed_text is None:
      raise ValueError(f"encoder {encoder.name!r} has no text tower")
    key = (encoder.cache_key, split, "__text", 0)
    if key in self._memory:
      return self._memory[key]["text"]
    data = self.split(split)
    path = self._path(encoder, split, "__text")
    out = self._load_cached(path, data.ecg_id)
    if out is None:
      out = {"text": encoder.embed_text(list(data.report)), "ecg_id": data.ecg_id}
      self._save(path, out)
    self._memory[key] = out
    return out["text"]


def data_sources(data_cfg, all_sources: bool = True) -> Sequence:
  """The sources evaluated: every labelled source of a mixture, or only the primary dataset.

  ECG-only sources (`reports=False`, e.g. ptbxl/100hz_ecg_only) are never evaluated on: their
  all-zero label vectors mean "unknown", and scoring them as negatives would bias every table.
  """
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  if all_sources and data_cfg.get("sources"):
    return [spec for spec in pipeline.data_sources(data_cfg) if spec.reports]
  return [pipeline.primary_source(data_cfg)]


def _check_labels_known(spec) -> None:
  """Refuses a build whose labels are unknown (an ECG-only build not marked reports=False)."""
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  metadata = pipeline.open_builder(spec).info.metadata or {}
  if metadata.get("labels_known", True) is False:
    raise ValueError(
        f"{spec.name}/{spec.config} at {spec.data_dir} is an ECG-only build (its labels are "
        f"unknown, stored as zeros) and cannot be evaluated on; mark it reports=False in "
        f"data.sources (evaluation then skips it) or evaluate another dataset")
