"""Features per split: each split read once, embedded by an `Encoder`, cached as .npz.

The evaluators consume numpy features; this module is where an encoder (`merit_jax/encoder.py`:
a MERIT checkpoint, its random initialisation or random convolutions) meets the data.

`FeatureStore(data_cfg, cache_dir, sources=None, batch_size=64, max_records=None)` reads each
split once (all records of every source, preprocessed as the data config says, padding rows
dropped) into a `SplitData` (ecg, labels {task: (N, C)}, ecg_id, report, source) and serves:

- `features(encoder, split, corruption=None, seed=0, reduced_leads_mode="native", kinds=None)
  -> {kind: features, 'ecg_id'}` for the `kinds` asked for (None: all `encoder.feature_kinds`;
  the wide kinds `per_lead_max` and `per_layer` are computed only when asked for, and a cache
  entry gains the kinds it lacks rather than being recomputed):
  `corruption` is `(name, severity)` of `shift.CORRUPTIONS`, applied to the preprocessed model
  input (so amplitude scaling is a real change, not undone by per-lead normalisation), seeded
  per batch from `seed`. For `reduced_leads`, `reduced_leads_mode` (`REDUCED_LEADS_MODES`) says
  how the missing leads are handled: `native` embeds only the kept leads
  (`encoder.embed_ecg(ecg, leads=kept)`) where the encoder `supports_lead_subsets` (zero-filling
  otherwise), `zeros` always feeds the 12-lead input with the missing leads zeroed;
  `reduced_leads_path(encoder, mode)` gives the path actually taken. Cached at
  `<cache_dir>/<encoder.cache_key>/<split>[__<name>_<severity>[_native]].npz` (`_native` only
  for features from the native path, so zero-filled and native features never share an entry)
  and checked against the split's ecg_ids when read back.
- `text_features(encoder, split) -> (N, P)`: projected embeddings of the split's reports,
  cached at `<cache_dir>/<encoder.cache_key>/<split>__text.npz`.

Records from several sources (e.g. `ptbxl_shared`: raw and upstream-normalised PTB-XL) are
concatenated per split; only label tasks with the same label names in every source are kept.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Optional, Sequence

import numpy as np

from merit_jax.encoder import CHEAP_FEATURE_KINDS
from merit_jax.encoder import Encoder
from merit_jax.evaluators import shift

# How `reduced_leads` feeds an encoder: its native lead-subset input where it has one, or the
# 12-lead input with the missing leads zero-filled.
REDUCED_LEADS_MODES = ("native", "zeros")


def _progress(iterable, desc: str, total: Optional[int] = None, enabled: bool = True):
  if not enabled:
    return iterable
  from tqdm import auto as tqdm_auto  # pylint: disable=g-import-not-at-top
  return tqdm_auto.tqdm(iterable, desc=desc, total=total, leave=False, file=sys.stderr)


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
  return "native" if mode == "native" and encoder.supports_lead_subsets else "zeros"


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
               reduced_leads_mode: str = "native",
               kinds: Optional[Sequence[str]] = None) -> dict:
    """{kind: (N, ...)} of one split for every kind asked for, plus 'ecg_id'; optionally
    corrupted. May hold more kinds than asked for (whatever the cache already had).

    Args:
      encoder: the feature source.
      split: a TFDS split name.
      corruption: None or `(name, severity)` of `shift.CORRUPTIONS`.
      seed: seeds the corruption (per batch).
      reduced_leads_mode: for `reduced_leads`, 'native' (the kept leads alone through
        `encoder.embed_ecg(ecg, leads=...)`, zero-filled for encoders that do not
        `supports_lead_subsets`) or 'zeros'.
      kinds: feature kinds of `encoder.feature_kinds` needed (None = all it offers). Only
        the kinds the cache lacks are computed, together with the `CHEAP_FEATURE_KINDS` the
        same forward pass yields anyway, and added to the cache entry; the wide kinds
        (`per_lead_max`, `per_layer`) are computed only when asked for.
    """
    check_reduced_leads_mode(reduced_leads_mode)
    kinds = encoder.check_kinds(kinds)
    native = (corruption is not None and corruption[0] == "reduced_leads"
              and reduced_leads_path(encoder, reduced_leads_mode) == "native")
    tag = corruption_tag(corruption, native)
    key = (encoder.cache_key, split, tag, seed)
    data = self.split(split)
    path = self._path(encoder, split, tag)
    if key not in self._memory:
      self._memory[key] = self._load_cached(path, data.ecg_id) or {"ecg_id": data.ecg_id}
    out = self._memory[key]
    missing = [k for k in kinds if k not in out]
    if missing:
      compute = tuple(k for k in encoder.feature_kinds
                      if k in missing or (k in CHEAP_FEATURE_KINDS and k not in out))
      out.update(self._compute(encoder, data, split, tag, compute, corruption, seed, native))
      self._save(path, out)
    return out

  def _compute(self, encoder, data, split, tag, kinds, corruption, seed, native) -> dict:
    """{kind: (N, ...)} of `kinds` over the whole split, batch by batch."""
    parts: dict[str, list] = {}
    starts = range(0, len(data), self.batch_size)
    desc = f"embed {encoder.name}/{split}{tag}"
    for i, start in enumerate(_progress(starts, desc, len(starts), self.progress)):
      ecg = data.ecg[start:start + self.batch_size]
      if native:
        # Only the kept leads reach the encoder: no zero-filled lead tokens.
        ecg, kept = shift.reduce_leads(ecg, corruption[1], mode="select")
        emb = encoder.embed_ecg(ecg, leads=tuple(int(k) for k in kept), kinds=kinds)
      else:
        if corruption is not None:
          ecg = shift.apply_corruption(ecg, corruption[0], corruption[1], self.sample_rate,
                                       seed=seed * 1_000_003 + i)
        emb = encoder.embed_ecg(ecg, kinds=kinds)
      for k, v in emb.items():
        parts.setdefault(k, []).append(np.asarray(v, np.float32))
    return {k: np.concatenate(v) for k, v in parts.items()}

  def text_features(self, encoder: Encoder, split: str) -> np.ndarray:
    """(N, P) projected embeddings of the split's reports ('' reports embed as empty text)."""
    if not encoder.has_text:
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
