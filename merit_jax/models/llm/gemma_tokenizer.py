"""SentencePiece tokenizer rebuilt from a GGUF file's `tokenizer.ggml.*` metadata.

llama.cpp's 'llama' tokenizer model is SentencePiece; Gemma's is BPE-style SentencePiece with
byte fallback, no dummy-prefix space and no whitespace collapsing. The GGUF file carries the
pieces, their scores (BPE merge priority) and types, which map one-to-one onto SentencePiece's
`ModelProto.SentencePiece.Type` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
6 byte). We serialise them into a ModelProto and hand it to `sentencepiece`.
"""

from typing import Any, Mapping, Sequence

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2


def build_model_proto(metadata: Mapping[str, Any]) -> sp_pb2.ModelProto:
  """A SentencePiece ModelProto from GGUF tokenizer metadata."""
  kind = metadata.get("tokenizer.ggml.model")
  if kind != "llama":
    raise ValueError(f"GGUF tokenizer.ggml.model is {kind!r}; only 'llama' (SentencePiece) "
                     "is supported")
  for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
    if key not in metadata:
      raise KeyError(f"GGUF metadata lacks {key!r}")
  pieces = metadata["tokenizer.ggml.tokens"]
  scores = np.asarray(metadata["tokenizer.ggml.scores"], np.float32)
  types = np.asarray(metadata["tokenizer.ggml.token_type"], np.int64)
  if not len(pieces) == len(scores) == len(types):
    raise ValueError(f"GGUF tokenizer arrays differ in length: {len(pieces)} tokens, "
                     f"{len(scores)} scores, {len(types)} types")
  bad = sorted(set(types.tolist()) - {1, 2, 3, 4, 5, 6})
  if bad:
    raise ValueError(f"GGUF tokenizer.ggml.token_type has unknown values {bad}")

  proto = sp_pb2.ModelProto()
  for piece, score, kind_id in zip(pieces, scores.tolist(), types.tolist()):
    p = proto.pieces.add()
    p.piece = piece
    p.score = score
    p.type = kind_id
  byte_fallback = bool((types == 6).any())
  trainer = proto.trainer_spec
  trainer.model_type = sp_pb2.TrainerSpec.BPE
  trainer.vocab_size = len(pieces)
  trainer.byte_fallback = byte_fallback
  trainer.unk_id = int(metadata.get("tokenizer.ggml.unknown_token_id", 3))
  trainer.bos_id = int(metadata.get("tokenizer.ggml.bos_token_id", 2))
  trainer.eos_id = int(metadata.get("tokenizer.ggml.eos_token_id", 1))
  trainer.pad_id = int(metadata.get("tokenizer.ggml.padding_token_id", 0))
  trainer.allow_whitespace_only_pieces = True
  trainer.split_digits = True
  norm = proto.normalizer_spec
  norm.name = "identity"
  norm.add_dummy_prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", False))
  norm.remove_extra_whitespaces = False
  norm.escape_whitespaces = True
  return proto


class GgufTokenizer:
  """Encodes/decodes text with the vocabulary of a GGUF model."""

  def __init__(self, metadata: Mapping[str, Any]):
    self._sp = spm.SentencePieceProcessor()
    self._sp.LoadFromSerializedProto(build_model_proto(metadata).SerializeToString())
    self.bos_id = int(metadata.get("tokenizer.ggml.bos_token_id", self._sp.bos_id()))
    self.eos_id = int(metadata.get("tokenizer.ggml.eos_token_id", self._sp.eos_id()))
    self.pad_id = int(metadata.get("tokenizer.ggml.padding_token_id", self._sp.pad_id()))
    self.add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", True))
    self.add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False))

  @property
  def vocab_size(self) -> int:
    return self._sp.GetPieceSize()

  def encode(self, text: str, add_bos: bool | None = None,
             add_eos: bool | None = None) -> list[int]:
    ids = list(self._sp.EncodeAsIds(text))
    if self.add_bos if add_bos is None else add_bos:
      ids = [self.bos_id] + ids
    if self.add_eos if add_eos is None else add_eos:
      ids = ids + [self.eos_id]
    return ids

  def encode_pieces(self, text: str) -> list[str]:
    return list(self._sp.EncodeAsPieces(text))

  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`; stops at the first eos, drops pad/bos/control tokens."""
    ids = [int(i) for i in ids]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    return self._sp.DecodeIds(ids)

  def id_to_piece(self, token_id: int) -> str:
    return self._sp.IdToPiece(int(token_id))

  def encode_batch(self, texts: Sequence[str], max_len: int, add_bos: bool | None = None,
                   left_pad: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 (B, max_len), mask bool (B, max_len)); truncates from the left (keeps the end).

    Left padding (the default) suits generation: every prompt then ends at the last column.
    """
    ids = np.full((len(texts), max_len), self.pad_id, np.int32)
    mask = np.zeros((len(texts), max_len), bool)
    for row, text in enumerate(texts):
      seq = self.encode(text, add_bos=add_bos)[-max_len:]
      if left_pad:
        ids[row, max_len - len(seq):] = seq
        mask[row, max_len - len(seq):] = True
      else:
        ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = True
    return ids, mask
