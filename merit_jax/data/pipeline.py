"""Grain input pipeline over built TFDS (ArrayRecord) datasets.

Training (`make_train_iterator`), per JAX process:

  for every source in data.sources (or the single data.name/config/data_dir):
    records[process_index::process_count]        # this process's disjoint shard
    -> drop empty reports (optional; not for       # filtered lazily; Grain skips the gaps
       sources marked `reports=False`)
    -> global shuffle, reshuffled every epoch    # seeded from (seed, source index)
    -> repeat forever
    -> decode + preprocess (+ augment) + tokenize  # random_map: one rng per element index;
                                                   # run by a thread pool per source
  deterministic weighted interleave of sources   # grain IterDataset.mix (exact proportions)
  -> batch of global_batch_size / process_count
  -> global jax.Array sharded over the mesh's ('data', 'fsdp') axes

A source marked `reports=False` in data.sources (an ECG-only build, e.g. `ptbxl/100hz_ecg_only`)
feeds masked modelling only: its records keep their empty reports and every training batch
carries `has_report` (float, 1 = the row has a report), by which the objective leaves such rows
out of InfoNCE (`objective.info_nce(valid=...)`).

Every step is a function of element indices, so the stream is fixed by the seed and the
position in it is a few counters: `get_state()` is Grain's iterator state (plus a few checks)
and restoring it replays exactly the batches an uninterrupted run would have seen. One batch is
kept in flight on the devices; the saved state always points at the first batch the caller has
not received yet.

Evaluation (`iterate_split`) reads one split in the stored record order, every record exactly
once, as numpy batches; the last batch is padded to `batch_size` by repeating its final record
and marked by a boolean `valid` mask (fixed shapes keep jitted eval steps from recompiling).

No TensorFlow and no builder class is needed: datasets are opened from their folders with
`tfds.builder_from_directory`.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import logging
import os
import pathlib
from typing import Any, Iterator, Mapping, Sequence

from absl import flags
import grain.python as grain
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import tensorflow_datasets as tfds

from merit_jax.data import augment as augment_lib
from merit_jax.data import preprocess as preprocess_lib
from merit_jax.data import tokenizer as tokenizer_lib

BATCH_MESH_AXES = ('data', 'fsdp')
_STATE_VERSION = 1


# ----------------------------------------------------------------------------------------------
# Opening built datasets.


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """One built dataset: TFDS name, builder config, data dir and mixture weight."""
  name: str
  config: str | None
  data_dir: str
  weight: float = 1.0
  # False for an ECG-only source: its empty reports are kept (masked modelling only).
  reports: bool = True

  @classmethod
  def from_entry(cls, entry: Mapping[str, Any]) -> 'SourceSpec':
    """A `data.sources` entry {name, config, data_dir, weight, reports[, manual_dir]}.

    Fields it leaves out take the defaults above (a run written before `reports` existed
    records none); manual_dir only matters for building (merit_jax.provision).
    """
    entry = dict(entry)
    if not entry.get('name') or not entry.get('data_dir'):
      raise ValueError(f'a data.sources entry needs a name and a data_dir, got {entry}')
    fields = {f.name for f in dataclasses.fields(cls)}
    spec = cls(**{k: v for k, v in entry.items() if k in fields})
    return dataclasses.replace(spec, data_dir=str(spec.data_dir), weight=float(spec.weight))


def data_sources(data_cfg: Mapping[str, Any]) -> list[SourceSpec]:
  """The datasets of a run: `data.sources` when given, else data.name/config/data_dir.

  With `data.report_less_share` set, the ECG-only sources' weights are the ones that give
  them that share of the mixture (`with_report_less_share`).
  """
  if data_cfg['sources']:
    specs = [SourceSpec.from_entry(src) for src in data_cfg['sources']]
    # .get: the data config of a run saved before the key existed has none.
    return with_report_less_share(specs, data_cfg.get('report_less_share'))
  if not data_cfg['name'] or not data_cfg['data_dir']:
    raise ValueError('config.data needs name and data_dir (or a non-empty data.sources)')
  return [SourceSpec(data_cfg['name'], data_cfg['config'], str(data_cfg['data_dir']))]


def with_report_less_share(specs: Sequence[SourceSpec],
                           share: float | None) -> list[SourceSpec]:
  """`specs` with the ECG-only (reports=False) weights scaled to `share` of the total weight.

  The paired sources keep their weights and the ECG-only ones their ratios to each other, so
  on average a batch holds `share` report-less rows. None, or no ECG-only source (a
  contrastive-only run drops them), leaves the weights as they are.
  """
  specs = list(specs)
  report_less = sum(s.weight for s in specs if not s.reports)
  paired = sum(s.weight for s in specs if s.reports)
  if share is None or not report_less or not paired:
    return specs
  if not 0.0 < share < 1.0:
    raise ValueError(f'data.report_less_share={share} must lie strictly between 0 and 1')
  scale = share / (1.0 - share) * paired / report_less
  return [s if s.reports else dataclasses.replace(s, weight=s.weight * scale) for s in specs]


def _version_key(path: pathlib.Path) -> tuple[int, ...]:
  try:
    return tuple(int(p) for p in path.name.split('.'))
  except ValueError:
    return (-1,)


def builder_dir(spec: SourceSpec) -> pathlib.Path:
  """The versioned folder of a built dataset (highest version when several are built).

  Accepts `data_dir/name[/config]/<version>` (TFDS layout; with no config, the only built
  config) or a data_dir that already is a versioned dataset folder (holds dataset_info.json).
  """
  root = pathlib.Path(spec.data_dir).expanduser()
  if (root / 'dataset_info.json').is_file():
    return root
  parent = root / spec.name
  if spec.config:
    parent = parent / spec.config
  versions = sorted((d for d in parent.glob('*') if (d / 'dataset_info.json').is_file()),
                    key=_version_key)
  if not versions and not spec.config:
    # No config named: accept the only built config (e.g. synthetic_ecg's 'default').
    configs = sorted({d.parent.parent for d in parent.glob('*/*/dataset_info.json')})
    if len(configs) > 1:
      raise ValueError(f'{spec.name} has several built configs under {parent} '
                       f'({[c.name for c in configs]}); set data.config')
    if configs:
      versions = sorted((d.parent for d in configs[0].glob('*/dataset_info.json')),
                        key=_version_key)
  if not versions:
    raise FileNotFoundError(
        f'no built dataset {spec.name!r} (config {spec.config!r}) under {root}: expected '
        f'{parent}/<version>/dataset_info.json. Build it first, e.g. '
        f'`python -m merit_jax.data.build {spec.name} --data_dir={root}`')
  return versions[-1]


def open_builder(spec: SourceSpec):
  """A read-only TFDS builder for a built dataset (no builder class, no TensorFlow)."""
  return tfds.builder_from_directory(str(builder_dir(spec)))


def _split_source(builder, split: str):
  available = list(builder.info.splits.keys())
  if split not in available:
    raise ValueError(f'split {split!r} not in {builder.info.full_name} at {builder.data_dir}; '
                     f'available: {available}')
  return builder.as_data_source(split)


def primary_source(data_cfg: Any) -> SourceSpec:
  """The dataset used for evaluation and the tokenizer.

  data.name if set, else the first of data.sources with reports (an ECG-only build has
  neither reports nor labels to evaluate on).
  """
  if data_cfg['name'] and data_cfg['data_dir']:
    return SourceSpec(data_cfg['name'], data_cfg['config'], str(data_cfg['data_dir']))
  specs = data_sources(data_cfg)
  with_reports = [s for s in specs if s.reports]
  if not with_reports:
    raise ValueError('config.data.sources: every source is marked reports=False; evaluation '
                     'and the tokenizer need one with reports (or set data.name/data_dir)')
  return with_reports[0]


def label_names(data_cfg: Any) -> dict[str, list[str]]:
  """{task: [label name, ...]} from the primary dataset's metadata."""
  builder = open_builder(primary_source(data_cfg))
  return dict(builder.info.metadata.get('label_names', {}))


def load_data_tokenizer(data_cfg: Any, *, train_if_missing: bool = True,
                        vocab_size: int = 4000) -> tokenizer_lib.Tokenizer:
  """Tokenizer of `data.tokenizer`; path None = the primary dataset's `tokenizer.model`.

  When that model does not exist yet and `train_if_missing`, it is trained on the primary
  dataset's train reports (`tokenizer.train_dataset_tokenizer`) and saved there.
  """
  kind, path = data_cfg['tokenizer']['kind'], data_cfg['tokenizer']['path']
  if path is None:
    if kind != 'sentencepiece':
      raise ValueError(f"data.tokenizer.kind={kind!r} needs data.tokenizer.path")
    builder = open_builder(primary_source(data_cfg))
    path = tokenizer_lib.dataset_tokenizer_path(builder.data_dir)
    if not path.exists():
      if not train_if_missing:
        raise FileNotFoundError(f'{path} does not exist; train it with '
                                f'merit_jax.data.tokenizer.train_dataset_tokenizer')
      logging.info('training the dataset tokenizer at %s', path)
      path = tokenizer_lib.train_dataset_tokenizer(builder, vocab_size=vocab_size)
  return tokenizer_lib.load_tokenizer({'kind': kind, 'path': str(path)})


# ----------------------------------------------------------------------------------------------
# Per-record transforms (picklable, so they also run in Grain worker processes).


def text_batch_key(tokenizer) -> str:
  """The batch key a text encoder's output goes under: 'tokens' for a tokenizer, or its own
  `batch_key` (a frozen tower's cached embeddings: 'text_emb', see data/text_cache.py)."""
  return getattr(tokenizer, 'batch_key', 'tokens')


def _has_report(record: Mapping[str, Any]) -> bool:
  return bool(tokenizer_lib.as_text(record['report']).strip())


class _TrainTransform(grain.RandomMapTransform):
  """decode -> preprocess (random crop if enabled) -> augment -> tokenize."""

  def __init__(self, preprocess_cfg, augment_cfg, tokenizer, max_text_len: int):
    self._pre = preprocess_cfg
    self._aug = augment_cfg
    self._tokenizer = tokenizer
    self._max_text_len = max_text_len

  def random_map(self, record, rng: np.random.Generator):
    crop_rng = rng if self._aug.random_crop else None
    ecg = preprocess_lib.preprocess(record['signal'], record['sample_rate'], self._pre, crop_rng)
    ecg = augment_lib.augment(ecg, rng, self._aug)
    out = {'ecg': ecg}
    if self._tokenizer is not None:
      out[text_batch_key(self._tokenizer)] = self._tokenizer.encode_batch(
          [record['report']], self._max_text_len)[0]
      # Rows without a report (ECG-only sources) stay out of the contrastive term.
      out['has_report'] = np.float32(_has_report(record))
    return out


class _EvalTransform(grain.MapTransform):
  """decode -> preprocess (centre crop) -> tokenize; keeps labels, ids and the report text."""

  def __init__(self, preprocess_cfg, tokenizer, max_text_len: int | None):
    self._pre = preprocess_cfg
    self._tokenizer = tokenizer
    self._max_text_len = max_text_len

  def map(self, record):
    out = {
        'ecg': preprocess_lib.preprocess(record['signal'], record['sample_rate'], self._pre),
        'ecg_id': np.int64(record['ecg_id']),
        'report': tokenizer_lib.as_text(record['report']),
    }
    for task, value in (record.get('labels') or {}).items():
      out[f'labels/{task}'] = np.asarray(value, np.uint8)
    if self._tokenizer is not None:
      out[text_batch_key(self._tokenizer)] = self._tokenizer.encode_batch(
          [out['report']], self._max_text_len)[0]
    return out


def _check_has_reports(ds: grain.MapDataset, spec: SourceSpec, probes: int = 64) -> None:
  """Fails fast where filtering empty reports would leave nothing (the stream would hang)."""
  indices = np.unique(np.linspace(0, len(ds) - 1, min(probes, len(ds))).astype(int))
  if not any(_has_report(ds[int(i)]) for i in indices):
    raise ValueError(
        f'{spec.name}/{spec.config} at {spec.data_dir}: none of {len(indices)} sampled train '
        f'records has a report, so dropping empty reports leaves nothing; set '
        f'data.drop_empty_reports=False (masked modelling only) or remove this source')


def _num_threads(data_cfg: Mapping[str, Any]) -> int:
  """Grain read threads: data.num_threads, 0 = min(8, cores)."""
  return int(data_cfg['num_threads']) or min(8, os.cpu_count() or 1)


def _source_seed(seed: int, index: int) -> int:
  return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


# ----------------------------------------------------------------------------------------------
# Training.


def make_train_dataset(data_cfg: Any, seed: int, local_batch_size: int, tokenizer=None, *,
                       process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """The per-process Grain dataset of numpy batches (see the module docstring)."""
  specs = data_sources(data_cfg)
  pre_cfg = preprocess_lib.PreprocessConfig.from_config(data_cfg['preprocess'])
  aug_cfg = augment_lib.AugmentConfig.from_config(data_cfg['augment'])
  drop_empty = data_cfg['drop_empty_reports']
  if drop_empty is None:  # without a tokenizer the reports are not used at all
    drop_empty = tokenizer is not None
  transform = _TrainTransform(pre_cfg, aug_cfg, tokenizer, int(data_cfg['max_text_len']))
  num_threads = _num_threads(data_cfg)
  read_options = grain.ReadOptions(num_threads=max(1, num_threads // len(specs)),
                                   prefetch_buffer_size=2 * local_batch_size)
  parts = []
  for i, spec in enumerate(specs):
    source = _split_source(open_builder(spec), data_cfg['train_split'])
    if len(source) < process_count:
      raise ValueError(f'{spec.name} train split has {len(source)} records, fewer than the '
                       f'{process_count} processes that each need a shard')
    ds = grain.MapDataset.source(source)[process_index::process_count]
    if drop_empty and spec.reports:
      _check_has_reports(ds, spec)
      ds = ds.filter(_has_report)
    ds = ds.shuffle(seed=_source_seed(seed, 2 * i)).repeat()
    ds = ds.random_map(transform, seed=_source_seed(seed, 2 * i + 1))
    # Filtered records leave gaps that the iterator skips; mixing after that point makes the
    # weights apply to the records actually used.
    parts.append(ds.to_iter_dataset(read_options))
  if len(parts) == 1:
    ds = parts[0]
  else:
    ds = grain.IterDataset.mix(parts, [s.weight for s in specs])
  ds = ds.batch(local_batch_size, drop_remainder=True)
  worker_count = int(data_cfg['worker_count'])
  if worker_count > 0:
    # Grain's worker processes read absl flags; outside absl.app (tests, notebooks) use their
    # defaults instead of failing with UnparsedFlagAccessError.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return ds


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Batch dimension split over the mesh's data axes ('data', 'fsdp'), the rest replicated."""
  axes = tuple(a for a in BATCH_MESH_AXES if a in mesh.axis_names)
  if not axes:
    raise ValueError(f'mesh axes {mesh.axis_names} contain none of {BATCH_MESH_AXES}')
  return NamedSharding(mesh, P(axes))


class TrainIterator:
  """Infinite iterator of training batches with a checkpointable position.

  Yields {'ecg': (B, leads, S) float32, 'tokens': (B, L) int32 (when a tokenizer is given)} as
  global `jax.Array`s sharded by `batch_sharding(mesh)`, or as this process's numpy batch when
  `mesh` is None.
  """

  def __init__(self, dataset: grain.IterDataset, sharding: NamedSharding | None,
               global_batch_size: int, meta: dict[str, Any], prefetch: int = 1):
    self._dataset = dataset
    self._iterator = iter(dataset)
    self._sharding = sharding
    self._global_batch_size = global_batch_size
    self._meta = meta
    self._prefetch = max(0, int(prefetch))
    self._pending: collections.deque = collections.deque()  # (state before, batch)

  def __iter__(self) -> 'TrainIterator':
    return self

  def _to_global(self, local: dict[str, np.ndarray]):
    if self._sharding is None:
      return local
    return {
        key: jax.make_array_from_process_local_data(
            self._sharding, value, (self._global_batch_size,) + value.shape[1:])
        for key, value in local.items()
    }

  def _fetch_one(self) -> None:
    state = copy.deepcopy(self._iterator.get_state())
    self._pending.append((state, self._to_global(next(self._iterator))))

  def __next__(self):
    while len(self._pending) < self._prefetch + 1:
      self._fetch_one()
    _, batch = self._pending.popleft()
    if self._prefetch:  # start the next host->device transfer before the caller's step runs
      while len(self._pending) < self._prefetch:
        self._fetch_one()
    return batch

  def close(self) -> None:
    """Stops Grain's prefetch threads / worker processes."""
    self._pending.clear()
    close = getattr(self._iterator, 'close', None)
    if close is not None:
      close()

  def __enter__(self) -> 'TrainIterator':
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def get_state(self) -> dict[str, Any]:
    """JSON-serialisable position: the first batch not yet returned by __next__."""
    if self._pending:
      grain_state = self._pending[0][0]
    else:
      grain_state = self._iterator.get_state()
    return {'version': _STATE_VERSION, **self._meta, 'grain': copy.deepcopy(grain_state)}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Restores a position saved by `get_state` (same data config, seed and batch size)."""
    if state.get('version') != _STATE_VERSION:
      raise ValueError(f'data iterator state version {state.get("version")} != {_STATE_VERSION}')
    for key, value in self._meta.items():
      saved = state.get(key)
      if isinstance(value, (list, tuple)):
        saved = [list(v) if isinstance(v, (list, tuple)) else v for v in (saved or [])]
        value = [list(v) if isinstance(v, (list, tuple)) else v for v in value]
      if saved != value:
        raise ValueError(f'data iterator state was saved with {key}={saved!r}, but this run has '
                         f'{key}={value!r}; the batches would not match')
    self._pending.clear()
    self._iterator.set_state(copy.deepcopy(state['grain']))


def make_train_iterator(data_cfg: Any, mesh: jax.sharding.Mesh | None, global_batch_size: int,
                        seed: int, tokenizer=None, process_index: int | None = None,
                        process_count: int | None = None, prefetch: int = 1) -> TrainIterator:
  """Builds the training iterator of one JAX process.

  Args:
    data_cfg: `config.data` (a ConfigDict or a mapping with the keys configs/pretrain.py
      defines: name/config/data_dir or sources, train_split, drop_empty_reports, preprocess,
      augment, max_text_len, worker_count, num_threads).
    mesh: mesh with axes ('data', 'fsdp'); None yields this process's numpy batches (tests,
      benchmarks of the host side only).
    global_batch_size: batch over all processes; must divide by process_count and by the
      number of batch shards of the mesh.
    seed: fixes the shuffle, mixture and augmentation streams.
    tokenizer: encodes reports into 'tokens' (or, for a frozen tower's
      `text_cache.ReportEmbeddings`, into 'text_emb' (B, dim) float32); None leaves them out.
    process_index, process_count: default jax.process_index()/process_count().
    prefetch: batches kept in flight ahead of the caller.
  """
  process_index = jax.process_index() if process_index is None else int(process_index)
  process_count = jax.process_count() if process_count is None else int(process_count)
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f'global batch size {global_batch_size} must be a positive multiple of the '
                     f'process count {process_count}')
  sharding = None
  if mesh is not None:
    sharding = batch_sharding(mesh)
    shards = int(np.prod([mesh.shape[a] for a in sharding.spec[0]]))
    if global_batch_size % shards:
      raise ValueError(f'global batch size {global_batch_size} must be a multiple of the '
                       f'{shards} batch shards of mesh {dict(mesh.shape)}')
  local_batch_size = global_batch_size // process_count
  dataset = make_train_dataset(data_cfg, seed, local_batch_size, tokenizer,
                               process_index=process_index, process_count=process_count)
  meta = {
      'seed': int(seed),
      'global_batch_size': int(global_batch_size),
      'process_index': process_index,
      'process_count': process_count,
      'sources': [[s.name, s.config, s.weight] for s in data_sources(data_cfg)],
  }
  return TrainIterator(dataset, sharding, global_batch_size, meta, prefetch)


# ----------------------------------------------------------------------------------------------
# Evaluation.


def _stack(elements: Sequence[dict[str, Any]], batch_size: int) -> dict[str, Any]:
  n = len(elements)
  padded = list(elements) + [elements[-1]] * (batch_size - n)
  batch = {}
  for key in padded[0]:
    if key == 'report':
      batch[key] = [e[key] for e in elements] + [''] * (batch_size - n)
    else:
      batch[key] = np.stack([e[key] for e in padded])
  batch['valid'] = np.arange(batch_size) < n
  return batch


def iterate_split(data_cfg: Any, split: str, batch_size: int, tokenizer=None, *,
                  pad_last: bool = True, source: SourceSpec | None = None
                  ) -> Iterator[dict[str, Any]]:
  """Numpy batches of one split, in stored order, each record exactly once.

  Batches hold 'ecg' float32 (B, leads, S), 'labels/<task>' uint8 (B, C), 'ecg_id' int64 (B,),
  'report' (list of B str), 'valid' bool (B,), and 'tokens' int32 (B, L) with a tokenizer
  ('text_emb' (B, dim) with a frozen tower's `text_cache.ReportEmbeddings`). With
  `pad_last` the final batch is padded to `batch_size` (padding rows repeat the last record,
  'valid' False, report ''); otherwise it is smaller. Reads `source`, or the primary dataset
  (data.name, else the first of data.sources); no augmentation, centre crop.
  """
  if batch_size <= 0:
    raise ValueError(f'batch_size must be > 0, got {batch_size}')
  spec = source or primary_source(data_cfg)
  data = _split_source(open_builder(spec), split)
  pre_cfg = preprocess_lib.PreprocessConfig.from_config(data_cfg['preprocess'])
  # The text length only matters with a tokenizer (an evaluation data config may lack it).
  max_text_len = None if tokenizer is None else int(data_cfg['max_text_len'])
  transform = _EvalTransform(pre_cfg, tokenizer, max_text_len)
  num_threads = _num_threads(data_cfg)
  ds = grain.MapDataset.source(data).map(transform).to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * batch_size))
  pending = []
  for element in ds:
    pending.append(element)
    if len(pending) == batch_size:
      yield _stack(pending, batch_size)
      pending = []
  if pending:
    yield _stack(pending, batch_size if pad_last else len(pending))


def split_size(data_cfg: Any, split: str, source: SourceSpec | None = None) -> int:
  """Number of records in a split of the primary (or given) dataset."""
  return len(_split_source(open_builder(source or primary_source(data_cfg)), split))


__all__ = [
    'SourceSpec', 'TrainIterator', 'batch_sharding', 'builder_dir', 'data_sources',
    'text_batch_key',
    'iterate_split', 'label_names', 'load_data_tokenizer', 'make_train_dataset',
    'make_train_iterator', 'open_builder', 'primary_source', 'split_size',
]
