"""Tests for merit_jax.data.pipeline on tiny toy TFDS datasets (tests/toy_ecg_builder.py).

Records are identified inside batches through lead 0, which the toy builder sets to the
record's ecg_id (normalisation is off in these configs so the value survives preprocessing).
"""

import json

import jax
from jax.sharding import Mesh
import numpy as np
import pytest

from configs import pretrain
from merit_jax import config_validation
from merit_jax.data import pipeline
from merit_jax.data import tokenizer as tk
from tests import toy_ecg_builder as toy

NUM_SAMPLES = 200  # 2 s at 100 Hz: the 100 Hz toy records (250 samples) are cropped


@pytest.fixture(scope='module')
def toy_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('toy_tfds_pipe')
  toy.build(data_dir, '100hz')
  toy.build(data_dir, '250hz')
  return str(data_dir)


@pytest.fixture(scope='module')
def data_cfg(toy_dir):
  """configs/pretrain.py's data section (as a plain dict) pointed at the toy dataset."""
  cfg = pretrain.get_config('test').data.to_dict()
  cfg.update(name='toy_ecg', config='100hz', data_dir=toy_dir, max_text_len=16)
  cfg['preprocess'].update(num_samples=NUM_SAMPLES, normalize='none')
  return cfg


@pytest.fixture(scope='module')
def tokenizer(data_cfg):
  return pipeline.load_data_tokenizer(data_cfg, vocab_size=64)


@pytest.fixture(scope='module')
def mesh():
  return Mesh(np.array(jax.devices()[:8]).reshape(8, 1), ('data', 'fsdp'))


def _ids(batch):
  ecg = np.asarray(batch['ecg'])
  return np.rint(ecg[:, 0, ecg.shape[-1] // 2]).astype(int).tolist()


def _take(iterator, n):
  return [jax.tree.map(np.asarray, next(iterator)) for _ in range(n)]


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_global_batches_sharded_over_mesh(data_cfg, tokenizer, mesh):
  it = pipeline.make_train_iterator(data_cfg, mesh, 8, seed=0, tokenizer=tokenizer)
  batch = next(it)
  assert set(batch) == {'ecg', 'tokens', 'has_report'}
  assert batch['ecg'].shape == (8, 12, NUM_SAMPLES) and batch['ecg'].dtype == np.float32
  np.testing.assert_array_equal(np.asarray(batch['has_report']), np.ones(8, np.float32))
  assert batch['tokens'].shape == (8, 16) and batch['tokens'].dtype == np.int32
  for value in batch.values():
    assert isinstance(value, jax.Array)
    assert value.sharding.spec == jax.sharding.PartitionSpec(('data', 'fsdp'))
    assert {s.data.shape[0] for s in value.addressable_shards} == {1}
  tokens = np.asarray(batch['tokens'])
  assert np.all(tokens[:, 0] == tk.BOS_ID) and np.all(tokens[:, -1] != -1)


def test_same_seed_same_batches_other_seed_differs(data_cfg, tokenizer, mesh):
  a = _take(pipeline.make_train_iterator(data_cfg, mesh, 8, 0, tokenizer), 4)
  b = _take(pipeline.make_train_iterator(data_cfg, mesh, 8, 0, tokenizer), 4)
  c = _take(pipeline.make_train_iterator(data_cfg, mesh, 8, 1, tokenizer), 4)
  _assert_same(a, b)
  assert [_ids(x) for x in a] != [_ids(x) for x in c]


def test_epochs_cover_split_and_reshuffle(data_cfg, mesh):
  batches = _take(pipeline.make_train_iterator(data_cfg, mesh, 8, 3, None), 6)
  train_ids = sorted(toy.toy_ecg_id('train', i) for i in range(toy.SPLIT_SIZES['train']))
  epoch1 = sum((_ids(b) for b in batches[:3]), [])
  epoch2 = sum((_ids(b) for b in batches[3:]), [])
  assert sorted(epoch1) == train_ids and sorted(epoch2) == train_ids  # each record once
  assert epoch1 != epoch2  # a new order every epoch
  assert 'tokens' not in batches[0]


def test_resume_replays_exactly_the_uninterrupted_batches(data_cfg, tokenizer, mesh):
  cfg = dict(data_cfg, augment={'enabled': True, 'crop': True, 'noise_std': 0.1,
                                'lead_dropout': 0.2, 'scale': (0.9, 1.1)})
  reference = _take(pipeline.make_train_iterator(cfg, mesh, 8, 7, tokenizer), 6)
  interrupted = pipeline.make_train_iterator(cfg, mesh, 8, 7, tokenizer)
  _assert_same(_take(interrupted, 2), reference[:2])
  state = json.loads(json.dumps(interrupted.get_state()))  # JSON round trip, as checkpoints do
  _take(interrupted, 1)  # the run goes on after the save, then dies
  resumed = pipeline.make_train_iterator(cfg, mesh, 8, 7, tokenizer)
  resumed.set_state(state)
  _assert_same(_take(resumed, 4), reference[2:6])
  # Restoring into an iterator that has read ahead rewinds it too.
  interrupted.set_state(state)
  _assert_same(_take(interrupted, 1), reference[2:3])
  other = pipeline.make_train_iterator(cfg, mesh, 8, 8, tokenizer)
  with pytest.raises(ValueError, match='seed'):
    other.set_state(state)


def test_processes_read_disjoint_shards_covering_the_split(data_cfg):
  per_process = []
  for index in range(2):
    it = pipeline.make_train_iterator(data_cfg, None, 8, 0, None, process_index=index,
                                      process_count=2)
    batches = _take(it, 3)  # 3 x 4 = the 12 records of this process's shard, one epoch
    assert batches[0]['ecg'].shape == (4, 12, NUM_SAMPLES)
    per_process.append(sum((_ids(b) for b in batches), []))
  a, b = (set(ids) for ids in per_process)
  assert len(a) == len(per_process[0]) == 12 and len(b) == 12
  assert not a & b
  assert a | b == {toy.toy_ecg_id('train', i) for i in range(toy.SPLIT_SIZES['train'])}
  with pytest.raises(ValueError, match='multiple of the process count'):
    pipeline.make_train_iterator(data_cfg, None, 7, 0, None, process_index=0, process_count=2)


def test_mixture_of_two_sources(data_cfg, tokenizer, mesh, toy_dir):
  cfg = dict(data_cfg, sources=[
      {'name': 'toy_ecg', 'config': '100hz', 'data_dir': toy_dir, 'weight': 1.0},
      {'name': 'toy_ecg', 'config': '250hz', 'data_dir': toy_dir, 'weight': 3.0},
  ])
  cfg.update(name=None, config=None, data_dir=None)
  batches = _take(pipeline.make_train_iterator(cfg, mesh, 8, 0, tokenizer), 4)
  ids = sum((_ids(b) for b in batches), [])
  from_250 = [i for i in ids if i >= 500]
  assert len(from_250) == 24 and len(ids) - len(from_250) == 8  # weights 1:3, deterministic
  assert not [i for i in from_250 if i % 4 == 0]  # empty reports were dropped
  # 18 of its 24 train reports are non-empty: one epoch of them, each once, then the next.
  assert len(set(from_250[:18])) == 18 and set(from_250[18:]) <= set(from_250[:18])
  assert batches[0]['ecg'].shape == (8, 12, NUM_SAMPLES)  # 250 Hz resampled to 100 Hz
  tokens = np.concatenate([b['tokens'] for b in batches])
  assert np.all(tokens[:, 1] != tk.EOS_ID)  # no empty report reached the batch
  again = _take(pipeline.make_train_iterator(cfg, mesh, 8, 0, tokenizer), 4)
  _assert_same(batches, again)


def test_iterate_split_every_record_once_in_order(data_cfg, tokenizer):
  batches = list(pipeline.iterate_split(data_cfg, 'validation', 3, tokenizer))
  assert [len(b['valid']) for b in batches] == [3, 3, 3]
  valid = np.concatenate([b['valid'] for b in batches])
  assert valid.tolist() == [True] * 7 + [False] * 2
  ids = np.concatenate([b['ecg_id'] for b in batches])[valid]
  assert sorted(ids.tolist()) == [toy.toy_ecg_id('validation', i) for i in range(7)]
  stored = pipeline.open_builder(pipeline.primary_source(data_cfg)).as_data_source('validation')
  assert ids.tolist() == [stored[i]['ecg_id'] for i in range(len(stored))]  # stored order
  reports = sum((b['report'] for b in batches), [])
  assert reports[:7] == [toy.toy_report(i) for i in ids] and reports[7:] == ['', '']
  first = batches[0]
  assert first['labels/super'].shape == (3, 5) and first['labels/super'].dtype == np.uint8
  np.testing.assert_array_equal(first['labels/super'].argmax(1), first['ecg_id'] % 5)
  assert first['tokens'].shape == (3, 16) and first['ecg'].shape == (3, 12, NUM_SAMPLES)
  np.testing.assert_array_equal(_ids(first), first['ecg_id'])
  unpadded = list(pipeline.iterate_split(data_cfg, 'validation', 3, pad_last=False))
  assert [len(b['ecg_id']) for b in unpadded] == [3, 3, 1] and 'tokens' not in unpadded[0]
  assert pipeline.split_size(data_cfg, 'validation') == 7
  assert pipeline.label_names(data_cfg)['rhythm'] == ['rhythm_0', 'rhythm_1', 'rhythm_2']


def test_source_without_reports(data_cfg, tokenizer, toy_dir, mesh):
  toy.build(toy_dir, 'noreports')
  cfg = dict(data_cfg, config='noreports')
  with pytest.raises(ValueError, match='drop_empty_reports=False'):
    pipeline.make_train_iterator(cfg, mesh, 8, 0, tokenizer)
  batch = next(pipeline.make_train_iterator(dict(cfg, drop_empty_reports=False), mesh, 8, 0,
                                            tokenizer))
  tokens = np.asarray(batch['tokens'])
  assert np.all(tokens[:, :3] == [tk.BOS_ID, tk.EOS_ID, 0])  # empty reports kept on request
  assert next(pipeline.make_train_iterator(cfg, mesh, 8, 0, None))['ecg'].shape[0] == 8


def _paired_and_ecg_only(data_cfg, toy_dir, **overrides):
  """data_cfg reading the toy paired build and its report-less twin, weights 1 : 1."""
  toy.build(toy_dir, 'noreports')
  cfg = dict(data_cfg, sources=[
      {'name': 'toy_ecg', 'config': '100hz', 'data_dir': toy_dir, 'weight': 1.0},
      {'name': 'toy_ecg', 'config': 'noreports', 'data_dir': toy_dir, 'weight': 1.0,
       'reports': False},
  ], **overrides)
  cfg.update(name=None, config=None, data_dir=None)
  return cfg


def test_ecg_only_source_mixed_with_paired_one(data_cfg, tokenizer, toy_dir, mesh):
  cfg = _paired_and_ecg_only(data_cfg, toy_dir)
  batches = _take(pipeline.make_train_iterator(cfg, mesh, 8, 0, tokenizer), 3)
  ids = np.array(sum((_ids(b) for b in batches), []))
  has_report = np.concatenate([b['has_report'] for b in batches])
  tokens = np.concatenate([b['tokens'] for b in batches])
  ecg_only = ids >= 1000
  assert ecg_only.sum() == 12  # weights 1:1; the empty reports were not dropped
  np.testing.assert_array_equal(has_report, (~ecg_only).astype(np.float32))
  assert np.all(tokens[ecg_only, :2] == [tk.BOS_ID, tk.EOS_ID])
  assert np.all(tokens[~ecg_only, 1] != tk.EOS_ID)
  # Evaluation and the tokenizer never use the ECG-only source, even when it comes first.
  cfg_first = dict(cfg, sources=cfg['sources'][::-1])
  assert pipeline.primary_source(cfg_first).config == '100hz'
  config = pretrain.get_config('test')
  config.data.sources = [dict(cfg['sources'][1], reports='no')]
  with pytest.raises(config_validation.ConfigError,
                     match=r"sources\[0\].reports='no' must be one of True, False"):
    config_validation.validate_config(config, num_devices=8)
  with pytest.raises(ValueError, match='every source is marked reports=False'):
    pipeline.primary_source(dict(cfg, sources=cfg['sources'][1:]))


def test_report_less_share_sets_the_ecg_only_rows_per_batch(data_cfg, tokenizer, toy_dir, mesh):
  cfg = _paired_and_ecg_only(data_cfg, toy_dir, report_less_share=0.25)
  batches = _take(pipeline.make_train_iterator(cfg, mesh, 8, 0, tokenizer), 4)
  has_report = np.concatenate([b['has_report'] for b in batches])
  ecg_only = np.array(sum((_ids(b) for b in batches), [])) >= 1000
  assert ecg_only.sum() == 8 and has_report.sum() == 24  # a quarter of 32 rows, not a half
  # Three sources: the paired weights (0.6, 0.4) stay, the ECG-only pair (1 : 3) keeps its
  # ratio and together takes 0.2 of the total: x + 3x = 0.2 / 0.8 * (0.6 + 0.4).
  specs = [pipeline.SourceSpec('a', None, 'd', 0.6), pipeline.SourceSpec('b', None, 'd', 0.4),
           pipeline.SourceSpec('c', None, 'd', 1.0, reports=False),
           pipeline.SourceSpec('e', None, 'd', 3.0, reports=False)]
  weights = [s.weight for s in pipeline.with_report_less_share(specs, 0.2)]
  np.testing.assert_allclose(weights, [0.6, 0.4, 0.0625, 0.1875])
  assert pipeline.with_report_less_share(specs, None) == specs
  assert pipeline.with_report_less_share(specs[:2], 0.2) == specs[:2]  # nothing to rescale
  config = pretrain.get_config('test')
  config.data.report_less_share = 0.3
  with pytest.raises(config_validation.ConfigError, match='needs a data.sources mixture'):
    config_validation.validate_config(config, num_devices=8)
  config.data.sources = cfg['sources']
  config.data.report_less_share = 1.0
  with pytest.raises(config_validation.ConfigError, match='strictly between 0 and 1'):
    config_validation.validate_config(config, num_devices=8)


def test_clear_errors_for_missing_data(data_cfg, tmp_path, mesh):
  with pytest.raises(FileNotFoundError, match='no built dataset'):
    pipeline.make_train_iterator(dict(data_cfg, data_dir=str(tmp_path)), mesh, 8, 0)
  with pytest.raises(ValueError, match="split 'dev'"):
    next(pipeline.iterate_split(data_cfg, 'dev', 2))
  with pytest.raises(ValueError, match='batch shards'):
    pipeline.make_train_iterator(data_cfg, mesh, 4, 0)


def test_project_config_schema_is_accepted(toy_dir, tokenizer, mesh):
  config = pretrain.get_config('test')
  with config.unlocked():
    config.data.name, config.data.config, config.data.data_dir = 'toy_ecg', '100hz', toy_dir
    config.data.preprocess.num_samples = NUM_SAMPLES
    config.data.max_text_len = 16
  tok = pipeline.load_data_tokenizer(config.data)  # path None: the dataset's own model
  assert tok.vocab_size == tokenizer.vocab_size
  batch = next(pipeline.make_train_iterator(config.data, mesh, 8, config.seed, tok))
  assert batch['ecg'].shape == (8, 12, NUM_SAMPLES) and batch['tokens'].shape == (8, 16)
  ecg = np.asarray(batch['ecg'])
  np.testing.assert_allclose(ecg[:, 1:].std(axis=-1), 1, atol=1e-3)  # z-scored leads
