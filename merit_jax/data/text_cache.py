"""Report embeddings of a frozen text tower, computed once per built dataset and cached.

A frozen tower maps a report to the same vector at every step, so running it inside the train
step would only cost time. Instead every distinct report of a build (all splits) is embedded
once and stored beside the build:

  <builder_dir>/text_embeddings/<tower.cache_key>.npz
      texts       (n,) str      distinct reports, sorted
      embeddings  (n, dim) f32  the tower's pooled output for each (a Gemma tower with tuned
                                last blocks: (n, max_len, d_model + 1), the frozen trunk's
                                packed states, models/gemma_text_head.py)
      info_digest str           digest of the build's dataset_info.json: a rebuilt dataset
                                invalidates the cache

The file is written to a temporary name and renamed, so a crash never leaves half a cache, and
several processes computing the same cache write identical content.

`ReportEmbeddings` then serves as the pipeline's text encoder: `encode_batch(texts, max_len)`
returns (n, *row_shape) float32 rows under the batch key `text_emb` (the empty report of an
ECG-only record maps to zeros; such rows are left out of InfoNCE by `has_report`).

API:
  ReportEmbeddings(texts, embeddings): `lookup(text)`, `encode_batch(texts, max_len=None)`,
    `batch_key`, `dim`, `merged(other)`.
  load_or_build(tower, spec, progress=True) -> ReportEmbeddings for one built dataset.
  for_data(tower, data_cfg, progress=True) -> ReportEmbeddings over every source of a run that
    has reports, plus the evaluation (primary) dataset.
"""

from __future__ import annotations

import hashlib
import pathlib
import sys
from typing import Any, Iterable, Sequence

import numpy as np

from merit_jax import atomic_files
from merit_jax.data import tokenizer as tokenizer_lib

CACHE_DIR = "text_embeddings"
BATCH_KEY = "text_emb"


class ReportEmbeddings:
  """Report text -> frozen-tower embedding (see module docstring)."""
  batch_key = BATCH_KEY

  def __init__(self, texts: Sequence[str], embeddings: np.ndarray):
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim < 2 or embeddings.shape[0] != len(texts):
      raise ValueError(f"ReportEmbeddings: {len(texts)} texts but embeddings of shape "
                       f"{embeddings.shape}")
    self.texts = [str(t) for t in texts]
    self.embeddings = embeddings
    self._row = {t: i for i, t in enumerate(self.texts)}

  @property
  def dim(self) -> int:
    return int(self.embeddings.shape[1])

  @property
  def row_shape(self) -> tuple[int, ...]:
    return tuple(self.embeddings.shape[1:])

  def __len__(self) -> int:
    return len(self.texts)

  def lookup(self, text) -> np.ndarray:
    text = tokenizer_lib.as_text(text)
    if not text.strip():
      return np.zeros(self.row_shape, np.float32)
    row = self._row.get(text)
    if row is None:
      raise KeyError(f"report not in the text-embedding cache ({len(self)} reports): "
                     f"{text[:80]!r}; the cache covers the builds it was made for — delete "
                     f"their {CACHE_DIR}/ folders if a dataset was rebuilt")
    return self.embeddings[row]

  def encode_batch(self, texts: Sequence[Any], max_len: int | None = None) -> np.ndarray:
    del max_len  # Embeddings have no length; kept for the tokenizer protocol.
    return np.stack([self.lookup(t) for t in texts]) if len(texts) else np.zeros(
        (0,) + self.row_shape, np.float32)

  def merged(self, other: "ReportEmbeddings") -> "ReportEmbeddings":
    if other.row_shape != self.row_shape:
      raise ValueError(f"cannot merge report embeddings of shape {self.row_shape} and "
                       f"{other.row_shape}")
    extra = [i for i, t in enumerate(other.texts) if t not in self._row]
    return ReportEmbeddings(self.texts + [other.texts[i] for i in extra],
                            np.concatenate([self.embeddings, other.embeddings[extra]]))


def _info_digest(builder_dir: pathlib.Path) -> str:
  return hashlib.sha1((builder_dir / "dataset_info.json").read_bytes()).hexdigest()[:16]


def _all_reports(builder) -> list[str]:
  reports = set()
  for split in builder.info.splits.keys():
    source = builder.as_data_source(split)
    for i in range(len(source)):
      text = tokenizer_lib.as_text(source[i]["report"])
      if text.strip():
        reports.add(text)
  return sorted(reports)


def load_or_build(tower, spec, progress: bool = True) -> ReportEmbeddings:
  """The cached report embeddings of one built dataset, computing them when missing."""
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  folder = pipeline.builder_dir(spec)
  path = folder / CACHE_DIR / f"{tower.cache_key}.npz"
  digest = _info_digest(folder)
  if path.is_file():
    with np.load(path, allow_pickle=False) as cached:
      fresh = (str(cached["info_digest"]) == digest
               and cached["embeddings"].shape[1:] == tower.row_shape)
      if fresh:
        return ReportEmbeddings(list(cached["texts"]), cached["embeddings"])
    print(f"text cache {path} is stale (dataset rebuilt): recomputing", file=sys.stderr)
  reports = _all_reports(pipeline.open_builder(spec))
  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=len(reports), desc=f"embedding reports of {folder.parent.parent.name}/"
               f"{folder.parent.name}", unit="report", file=sys.stderr)
  embeddings = tower.embed(reports, progress=bar) if reports else np.zeros(
      (0,) + tower.row_shape, np.float32)
  if bar is not None:
    bar.close()
  with atomic_files.replacing(path, suffix=".npz") as tmp:
    np.savez(tmp, texts=np.asarray(reports, dtype=str), embeddings=embeddings,
             info_digest=np.asarray(digest))
  return ReportEmbeddings(reports, embeddings)


def _unique_specs(specs: Iterable) -> list:
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  seen, out = set(), []
  for spec in specs:
    folder = pipeline.builder_dir(spec).resolve()
    if folder not in seen:
      seen.add(folder)
      out.append(spec)
  return out


def for_data(tower, data_cfg, progress: bool = True) -> ReportEmbeddings:
  """Report embeddings for every source with reports and the evaluation dataset."""
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  specs = [s for s in pipeline.data_sources(data_cfg) if s.reports]
  specs = _unique_specs(specs + [pipeline.primary_source(data_cfg)])
  result = None
  for spec in specs:
    part = load_or_build(tower, spec, progress)
    result = part if result is None else result.merged(part)
  return result
