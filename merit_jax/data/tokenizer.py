"""Report tokenizers: SentencePiece trained on a dataset's train reports, or a pretrained HF one.

Every tokenizer follows the same small protocol, which is all the pipeline and the text models
rely on:

  encode_batch(texts, max_len) -> np.int32 (B, max_len)   padded with `pad_id`, truncated
  decode(ids) -> str                                     specials and padding dropped
  vocab_size, pad_id

SentencePiece ids: pad 0, unk 1, BOS 2, EOS 3; an encoded report is `BOS pieces... EOS pad...`,
and when it is too long the pieces are truncated so that EOS is kept as the last token.
A Hugging Face tokenizer (`tokenizer.json`, e.g. all-MiniLM-L6-v2's) keeps its own specials
([CLS] ... [SEP]) and its own pad id (0 for BERT vocabularies).

Training is deterministic: one thread, input order fixed (no sentence shuffling) and the
sentence sample taken in the split's record order, so training twice gives byte-identical model
files.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pathlib
import re
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np

from merit_jax import atomic_files

TOKENIZER_FILENAME = 'tokenizer.model'
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class Tokenizer(Protocol):
  vocab_size: int
  pad_id: int

  def encode_batch(self, texts: Sequence[str], max_len: int) -> np.ndarray:
    ...

  def decode(self, ids: Sequence[int]) -> str:
    ...


def as_text(text: Any) -> str:
  """A report as str, whether stored as bytes, a 0-d numpy array (TFDS) or str."""
  if isinstance(text, bytes):
    return text.decode('utf-8')
  if isinstance(text, np.ndarray) and text.ndim == 0:
    return as_text(text.item())
  return str(text)


class SentencePieceTokenizer:
  """SentencePiece model with BOS/EOS framing and pad id 0; picklable (Grain workers)."""

  def __init__(self, model_proto: bytes, path: str | None = None):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    self._proto = bytes(model_proto)
    self.path = path
    self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
    if self._sp.pad_id() != PAD_ID or self._sp.bos_id() != BOS_ID or self._sp.eos_id() != EOS_ID:
      raise ValueError(
          f'SentencePiece model {path or "<bytes>"} has pad/bos/eos ids '
          f'{self._sp.pad_id()}/{self._sp.bos_id()}/{self._sp.eos_id()}; expected '
          f'{PAD_ID}/{BOS_ID}/{EOS_ID} (train it with train_dataset_tokenizer)')
    self.vocab_size = int(self._sp.get_piece_size())
    self.pad_id = PAD_ID
    self.bos_id = BOS_ID
    self.eos_id = EOS_ID

  @classmethod
  def from_file(cls, path: str | os.PathLike) -> 'SentencePieceTokenizer':
    path = pathlib.Path(path)
    if not path.is_file():
      raise FileNotFoundError(f'SentencePiece model not found: {path}')
    return cls(path.read_bytes(), str(path))

  def __getstate__(self):
    return {'model_proto': self._proto, 'path': self.path}

  def __setstate__(self, state):
    self.__init__(state['model_proto'], state['path'])

  def encode_batch(self, texts: Sequence[Any], max_len: int) -> np.ndarray:
    if max_len < 2:
      raise ValueError(f'max_len must be >= 2 (BOS + EOS), got {max_len}')
    out = np.full((len(texts), max_len), self.pad_id, np.int32)
    for row, text in enumerate(texts):
      # One call per text: the list form starts a thread pool, ~20x slower per report here.
      ids = self._sp.encode(as_text(text), out_type=int)
      ids = [self.bos_id] + list(ids[:max_len - 2]) + [self.eos_id]
      out[row, :len(ids)] = ids
    return out

  def decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in np.asarray(ids).reshape(-1)
           if int(i) not in (self.pad_id, self.bos_id, self.eos_id)]
    return self._sp.decode(ids)


class HFTokenizer:
  """A Hugging Face `tokenizers` tokenizer from a local folder holding `tokenizer.json`."""

  def __init__(self, folder: str | os.PathLike):
    from tokenizers import Tokenizer as _HfTokenizer  # pylint: disable=g-import-not-at-top
    folder = pathlib.Path(folder)
    path = folder / 'tokenizer.json' if folder.is_dir() else folder
    if not path.is_file():
      raise FileNotFoundError(f'no tokenizer.json at {path} (expected a local HF model folder)')
    self.path = str(path)
    self._tok = _HfTokenizer.from_file(self.path)
    self._tok.no_truncation()
    self._tok.no_padding()
    self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
    self.pad_id = self._find_pad_id(path.parent)

  def _find_pad_id(self, folder: pathlib.Path) -> int:
    pad_token = None
    config = folder / 'tokenizer_config.json'
    if config.is_file():
      pad_token = json.loads(config.read_text()).get('pad_token')
      if isinstance(pad_token, dict):
        pad_token = pad_token.get('content')
    for token in (pad_token, '[PAD]', '<pad>'):
      if token is not None and self._tok.token_to_id(token) is not None:
        return int(self._tok.token_to_id(token))
    return 0

  def __getstate__(self):
    return {'path': self.path}

  def __setstate__(self, state):
    self.__init__(state['path'])

  def encode_batch(self, texts: Sequence[Any], max_len: int) -> np.ndarray:
    out = np.full((len(texts), max_len), self.pad_id, np.int32)
    texts = [as_text(t) for t in texts]
    # A single text (the pipeline's per-record call) skips encode_batch's thread pool.
    encodings = ([self._tok.encode(texts[0])] if len(texts) == 1 else
                 self._tok.encode_batch(texts))
    for row, enc in enumerate(encodings):
      ids = enc.ids
      if len(ids) > max_len:
        # Keep the closing special token ([SEP]) the model was trained to see last.
        special = enc.special_tokens_mask
        ids = ids[:max_len - 1] + ([ids[-1]] if special and special[-1] else [ids[max_len - 1]])
      out[row, :len(ids)] = ids
    return out

  def decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in np.asarray(ids).reshape(-1) if int(i) != self.pad_id]
    return self._tok.decode(ids, skip_special_tokens=True)


def load_tokenizer(spec: Any) -> Tokenizer:
  """Loads a tokenizer.

  Args:
    spec: a path to a SentencePiece `.model` file or to a folder with `tokenizer.json`; or a
      mapping / ConfigDict `{kind: 'sentencepiece' | 'hf', path: ...}` (`config.data.tokenizer`).
      A `path` of None needs the dataset's own model: resolve it first with
      `dataset_tokenizer_path(builder_dir)` (the pipeline's `load_data_tokenizer` does this).

  Returns:
    a SentencePieceTokenizer or HFTokenizer.
  """
  if hasattr(spec, 'to_dict'):
    spec = spec.to_dict()
  if isinstance(spec, (str, os.PathLike)):
    path = pathlib.Path(spec)
    kind = 'hf' if path.is_dir() or path.name.endswith('.json') else 'sentencepiece'
  elif isinstance(spec, Mapping):
    kind = spec.get('kind', 'sentencepiece')
    path = spec.get('path')
    if path is None:
      raise ValueError(f'tokenizer spec {spec} has no path (None means the dataset\'s '
                       f'{TOKENIZER_FILENAME}; resolve it with dataset_tokenizer_path)')
    path = pathlib.Path(path)
  else:
    raise TypeError(f'tokenizer spec must be a path or a mapping, got {type(spec).__name__}')
  if kind == 'sentencepiece':
    return SentencePieceTokenizer.from_file(path)
  if kind == 'hf':
    return HFTokenizer(path)
  raise ValueError(f"tokenizer kind must be 'sentencepiece' or 'hf', got {kind!r}")


def dataset_tokenizer_path(builder_dir: str | os.PathLike) -> pathlib.Path:
  """Where `train_dataset_tokenizer` writes a built dataset's model."""
  return pathlib.Path(str(builder_dir)) / TOKENIZER_FILENAME


def train_sentencepiece(texts: Iterable[str], vocab_size: int = 4000, *,
                        model_type: str = 'unigram', character_coverage: float = 0.9999,
                        input_sentence_size: int = 1_000_000,
                        max_sentence_length: int = 16384) -> bytes:
  """Trains a SentencePiece model deterministically and returns the serialised model."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  sentences = [t for t in (as_text(x).strip() for x in texts) if t]
  if not sentences:
    raise ValueError('no non-empty report to train a tokenizer on')
  # A deterministic sample (the first N in record order) instead of SentencePiece's shuffle.
  sentences = sentences[:input_sentence_size]
  kwargs = dict(model_type=model_type, character_coverage=character_coverage,
                hard_vocab_limit=False, num_threads=1, shuffle_input_sentence=False,
                input_sentence_size=0, max_sentence_length=max_sentence_length,
                pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
                byte_fallback=False, minloglevel=2)
  for _ in range(2):
    writer = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=writer,
                                     vocab_size=vocab_size, **kwargs)
      break
    except RuntimeError as e:
      # Too small for the alphabet: SentencePiece says 'N vs M'; grow to the minimum once.
      match = re.search(r'smaller than required_chars\. (\d+) vs (\d+)', str(e))
      if not match:
        raise
      needed = int(match.group(2))
      logging.warning('tokenizer: vocab_size %d is below the %d characters + specials of the '
                      'corpus; using %d', vocab_size, needed, needed)
      print(f'tokenizer: vocab_size {vocab_size} < {needed} required characters; using {needed}')
      vocab_size = needed
  proto = writer.getvalue()
  actual = spm.SentencePieceProcessor(model_proto=proto).get_piece_size()
  if actual < vocab_size:
    print(f'tokenizer: the reports support only {actual} pieces; vocab_size lowered from '
          f'{vocab_size} to {actual}')
  return proto


def train_dataset_tokenizer(builder: Any, vocab_size: int = 4000, *, split: str = 'train',
                            overwrite: bool = True, **train_kwargs) -> pathlib.Path:
  """Trains SentencePiece on a built dataset's reports and saves it beside the dataset.

  Args:
    builder: a built TFDS builder (e.g. `tfds.builder_from_directory(dir)`); its `split`
      records' 'report' feature is read through `builder.as_data_source`.
    vocab_size: requested size; lowered automatically (with a message) when the reports do not
      support that many pieces.
    split: split to read reports from (only the training split, to avoid test leakage).
    overwrite: when False and the model already exists, return it untouched.
    **train_kwargs: forwarded to `train_sentencepiece`.

  Returns:
    the path of `tokenizer.model` in `builder.data_dir`.
  """
  path = dataset_tokenizer_path(builder.data_dir)
  if path.exists() and not overwrite:
    return path
  source = builder.as_data_source(split)
  reports = (as_text(source[i]['report']) for i in range(len(source)))
  proto = train_sentencepiece(reports, vocab_size, **train_kwargs)
  atomic_files.write_bytes(path, proto)
  return path
