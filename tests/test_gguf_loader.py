"""GGUF loader: dequantised values against an independent block decoder, shapes, raw F32."""

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from merit_jax.models.llm import gguf_loader  # noqa: E402


@pytest.fixture(scope="module")
def gguf_path():
  try:
    return gguf_loader.default_gguf_path()
  except ImportError as e:
    pytest.skip(f"Gemma 3 GGUF weights not installed: {e}")


@pytest.fixture(scope="module")
def reader(gguf_path):
  return gguf_loader.open_reader(gguf_path)


def _tensor(reader, name):
  return next(t for t in reader.tensors if t.name == name)


def _f16(raw: np.ndarray) -> float:
  return float(raw.view(np.float16)[0])


def _q4_k_block(block: np.ndarray) -> np.ndarray:
  """One Q4_K super-block (144 bytes → 256 values), written from ggml's block_q4_K layout."""
  d, dmin = _f16(block[0:2]), _f16(block[2:4])
  scales, qs = block[4:16].astype(np.int32), block[16:144].astype(np.int32)
  sc, mn = [], []
  for j in range(8):  # get_scale_min_k4: 6-bit scales and mins packed into 12 bytes.
    if j < 4:
      sc.append(scales[j] & 63)
      mn.append(scales[j + 4] & 63)
    else:
      sc.append((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4))
      mn.append((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4))
  out = []
  for chunk in range(4):  # 32 bytes of quants hold 64 values: low nibbles, then high.
    q = qs[32 * chunk:32 * chunk + 32]
    out.extend(d * sc[2 * chunk] * (q & 0xF) - dmin * mn[2 * chunk])
    out.extend(d * sc[2 * chunk + 1] * (q >> 4) - dmin * mn[2 * chunk + 1])
  return np.array(out, np.float32)


def _q8_0_block(block: np.ndarray) -> np.ndarray:
  """One Q8_0 block (34 bytes → 32 values): f16 scale then 32 int8."""
  return _f16(block[0:2]) * block[2:34].view(np.int8).astype(np.float32)


def _q6_k_block(block: np.ndarray) -> np.ndarray:
  """One Q6_K super-block (210 bytes → 256 values): ql[128], qh[64], int8 scales[16], f16 d."""
  ql, qh = block[0:128].astype(np.int32), block[128:192].astype(np.int32)
  scales = block[192:208].view(np.int8).astype(np.float32)
  d = _f16(block[208:210])
  out = np.zeros(256, np.float32)
  for half in range(2):  # ggml's dequantize_row_q6_K, 128 values per half.
    l_, h_, s_ = ql[64 * half:], qh[32 * half:], scales[8 * half:]
    for l in range(32):
      is_ = l // 16
      q1 = ((l_[l] & 0xF) | (((h_[l] >> 0) & 3) << 4)) - 32
      q2 = ((l_[l + 32] & 0xF) | (((h_[l] >> 2) & 3) << 4)) - 32
      q3 = ((l_[l] >> 4) | (((h_[l] >> 4) & 3) << 4)) - 32
      q4 = ((l_[l + 32] >> 4) | (((h_[l] >> 6) & 3) << 4)) - 32
      base = 128 * half
      out[base + l] = d * s_[is_] * q1
      out[base + l + 32] = d * s_[is_ + 2] * q2
      out[base + l + 64] = d * s_[is_ + 4] * q3
      out[base + l + 96] = d * s_[is_ + 6] * q4
  return out


@pytest.mark.parametrize("name,qtype,block_bytes,decode_block", [
    ("blk.0.attn_output.weight", "Q4_K", 144, _q4_k_block),
    ("blk.0.ffn_down.weight", "Q6_K", 210, _q6_k_block),
    ("blk.0.attn_v.weight", "Q8_0", 34, _q8_0_block),
])
def test_dequantisation_matches_block_format(reader, gguf_path, name, qtype, block_bytes,
                                             decode_block):
  tensor = _tensor(reader, name)
  assert tensor.tensor_type.name == qtype
  raw_row = np.asarray(tensor.data[0])  # First row (numpy order), raw bytes.
  values_per_block = 256 if qtype.endswith("_K") else 32
  _, tensors = gguf_loader.load_gguf(gguf_path, names=[name])
  loaded = tensors[name]
  # Loader returns (in, out): row 0 of the file is column 0 here.
  for block in (0, 1):
    expected = decode_block(raw_row[block * block_bytes:(block + 1) * block_bytes])
    got = loaded[block * values_per_block:(block + 1) * values_per_block, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_shapes_follow_metadata(gguf_path):
  names = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight",
           "blk.0.attn_output.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_down.weight",
           "blk.0.attn_q_norm.weight", "output_norm.weight"]
  metadata, tensors = gguf_loader.load_gguf(gguf_path, names=names)
  d = metadata["gemma3.embedding_length"]
  heads = metadata["gemma3.attention.head_count"]
  kv_heads = metadata["gemma3.attention.head_count_kv"]
  head_dim = metadata["gemma3.attention.key_length"]
  ffn = metadata["gemma3.feed_forward_length"]
  vocab = len(metadata["tokenizer.ggml.tokens"])
  assert tensors["token_embd.weight"].shape == (vocab, d)
  assert tensors["blk.0.attn_q.weight"].shape == (d, heads * head_dim)
  assert tensors["blk.0.attn_k.weight"].shape == (d, kv_heads * head_dim)
  assert tensors["blk.0.attn_output.weight"].shape == (heads * head_dim, d)
  assert tensors["blk.0.ffn_gate.weight"].shape == (d, ffn)
  assert tensors["blk.0.ffn_down.weight"].shape == (ffn, d)
  assert tensors["blk.0.attn_q_norm.weight"].shape == (head_dim,)
  assert tensors["output_norm.weight"].shape == (d,)
  assert all(t.dtype == np.float32 for t in tensors.values())
  assert metadata["gemma3.block_count"] == 18
  assert metadata["tokenizer.ggml.tokens"][2] == "<bos>"


def test_f32_norm_read_raw(reader, gguf_path):
  name = "blk.3.post_ffw_norm.weight"
  tensor = _tensor(reader, name)
  assert tensor.tensor_type.name == "F32"
  # Independent read: the tensor's bytes at its absolute file offset.
  raw = np.fromfile(gguf_path, dtype="<f4", count=int(tensor.n_elements),
                    offset=int(tensor.data_offset))
  _, tensors = gguf_loader.load_gguf(gguf_path, names=[name])
  np.testing.assert_array_equal(tensors[name], raw)


def test_clear_errors(tmp_path, gguf_path):
  with pytest.raises(FileNotFoundError, match="not found"):
    gguf_loader.load_gguf(tmp_path / "missing.gguf")
  with pytest.raises(KeyError, match="no.such.tensor"):
    gguf_loader.load_gguf(gguf_path, names=["no.such.tensor"])
