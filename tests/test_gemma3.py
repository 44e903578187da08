"""Gemma 3 decoder: tiny-model structure checks, and the real 270M GGUF model is a working LM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from merit_jax.models.llm import decode
from merit_jax.models.llm import gemma3
from merit_jax.models.llm import gemma_tokenizer as tokenizer_lib

# Ordinary English prose (written for this test) for the perplexity check.
_PARAGRAPHS = (
    "The history of the city dates back more than two thousand years. It was founded on the "
    "banks of a river, where merchants traded grain, wine and cloth. Over the centuries, the "
    "town grew into an important centre of commerce and learning. Today it is known for its "
    "museums, its old university and its busy markets, which attract visitors from all over "
    "the world.\n\n"
    "Regular exercise is one of the best things you can do for your health. It strengthens the "
    "heart, improves sleep and helps to control weight. Doctors recommend at least thirty "
    "minutes of moderate activity on most days of the week, such as brisk walking, cycling or "
    "swimming.")


# ------------------------------------------------------------------ tiny model (random weights)

@pytest.fixture(scope="module")
def tiny():
  config = gemma3.tiny_config()
  model = gemma3.Gemma3(config)
  tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 14), 3, config.vocab_size)
  params = model.init(jax.random.PRNGKey(1), tokens)
  return model, params, tokens


def test_layer_pattern_and_config():
  config = gemma3.tiny_config(num_layers=12, sliding_window_pattern=6)
  assert [i for i in range(12) if config.is_global(i)] == [5, 11]
  assert [gemma3.tiny_config().is_global(i) for i in range(2)] == [False, True]


def test_chunked_cache_forward_equals_full_forward(tiny):
  model, params, tokens = tiny
  full, _ = model.apply(params, tokens)
  cache = gemma3.init_cache(model.config, 2, 20)
  first, cache = model.apply(params, tokens[:, :9], cache=cache)
  second, cache = model.apply(params, tokens[:, 9:], cache=cache)
  np.testing.assert_allclose(jnp.concatenate([first, second], 1), full, atol=1e-4, rtol=1e-4)
  assert int(cache["index"]) == 14


def test_sliding_window_limits_local_attention(tiny):
  model, params, tokens = tiny
  # One local layer (window 6): token 0 reaches positions 0..5 only.
  config = gemma3.tiny_config(num_layers=1)
  one = gemma3.Gemma3(config)
  p = one.init(jax.random.PRNGKey(2), tokens)
  changed = tokens.at[:, 0].set(5)
  a, _ = one.apply(p, tokens)
  b, _ = one.apply(p, changed)
  np.testing.assert_allclose(a[:, 6:], b[:, 6:], atol=1e-6)  # Outside the window: no effect.
  assert not np.allclose(a[:, 1:6], b[:, 1:6])  # Inside: an effect.
  glob = gemma3.Gemma3(gemma3.tiny_config(num_layers=1, sliding_window_pattern=1))
  a, _ = glob.apply(p, tokens)
  b, _ = glob.apply(p, changed)
  assert not np.allclose(a[:, 6:], b[:, 6:])  # A global layer sees everything.


def test_padding_and_prefix_hook(tiny):
  model, params, tokens = tiny
  # Left padding: same logits for the real tokens as the unpadded sequence.
  plain, _ = model.apply(params, tokens[:1, 4:])
  padded, _ = model.apply(params, tokens[:1], input_mask=jnp.arange(14)[None] >= 4)
  np.testing.assert_allclose(padded[:, 4:], plain, atol=1e-4, rtol=1e-4)
  # Prefix soft tokens = token embeddings of the same ids put in front.
  prefix = model.apply(params, tokens[:, :3], method=gemma3.Gemma3.embed)
  with_prefix, _ = model.apply(params, tokens[:, 3:], prefix_embeddings=prefix)
  full, _ = model.apply(params, tokens)
  np.testing.assert_allclose(with_prefix, full, atol=1e-4, rtol=1e-4)
  with pytest.raises(ValueError, match="prefix_embeddings shape"):
    model.apply(params, tokens, prefix_embeddings=jnp.zeros((2, 3, 7)))


def test_final_logit_softcap(tiny):
  """Logits = cap · tanh(raw / cap), with the raw logits computed here in numpy from the
  residual stream: final RMSNorm, then the tied embedding."""
  _, params, tokens = tiny
  uncapped = gemma3.Gemma3(gemma3.tiny_config(final_logit_softcap=None))
  x = np.asarray(uncapped.apply(params, tokens, method=gemma3.Gemma3.hidden_states), np.float64)
  p = params["params"]
  normed = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-6)
  raw = (normed * np.asarray(p["final_norm"]["scale"])) @ np.asarray(p["embedding"]).T
  plain, _ = uncapped.apply(params, tokens)
  np.testing.assert_allclose(plain, raw, atol=1e-4, rtol=1e-4)
  cap = 0.5 * float(np.max(np.abs(raw)))  # Half the largest logit: tanh far from linear.
  capped, _ = gemma3.Gemma3(gemma3.tiny_config(final_logit_softcap=cap)).apply(params, tokens)
  np.testing.assert_allclose(capped, cap * np.tanh(raw / cap), atol=1e-4, rtol=1e-4)
  assert float(np.max(np.abs(capped))) < cap < float(np.max(np.abs(raw)))


def test_bfloat16_compute_close_to_float32(tiny):
  model, params, tokens = tiny
  bf16 = gemma3.Gemma3(gemma3.tiny_config(dtype="bfloat16"))
  ref, _ = model.apply(params, tokens)
  got, _ = bf16.apply(params, tokens)
  assert got.dtype == jnp.float32  # Logits are computed in float32.
  assert float(jnp.max(jnp.abs(got - ref))) < 0.1 * float(jnp.max(jnp.abs(ref)))


def test_config_from_synthetic_metadata():
  metadata = {
      "general.architecture": "gemma3", "gemma3.context_length": 1024,
      "gemma3.embedding_length": 64, "gemma3.block_count": 6,
      "gemma3.feed_forward_length": 128, "gemma3.attention.head_count": 4,
      "gemma3.attention.head_count_kv": 2, "gemma3.attention.key_length": 16,
      "gemma3.attention.value_length": 16, "gemma3.rope.freq_base": 1e6,
      "gemma3.attention.sliding_window": 32, "gemma3.final_logit_softcapping": 30.0,
      "tokenizer.ggml.tokens": ["<pad>"] * 50}
  cfg = gemma3.Gemma3Config.from_gguf_metadata(metadata)
  assert (cfg.vocab_size, cfg.head_dim, cfg.num_kv_heads, cfg.final_logit_softcap) == (
      50, 16, 2, 30.0)
  assert cfg.query_scale == pytest.approx(0.25)
  with pytest.raises(ValueError, match="expected 'gemma3'"):
    gemma3.Gemma3Config.from_gguf_metadata({**metadata, "general.architecture": "llama"})
  del metadata["gemma3.block_count"]
  with pytest.raises(KeyError, match="gemma3.block_count"):
    gemma3.Gemma3Config.from_gguf_metadata(metadata)


# ------------------------------------------------------------------ real Gemma 3 270M (GGUF)

@pytest.fixture(scope="module")
def real():
  pytest.importorskip("gguf", reason="the gguf package reads the GGUF weights")
  from merit_jax.models.llm import gguf_loader  # pylint: disable=g-import-not-at-top
  try:
    path = gguf_loader.default_gguf_path()
  except ImportError as e:
    pytest.skip(f"Gemma 3 GGUF weights not installed: {e}")
  model, params, metadata = gemma3.load_pretrained(path)
  return model, params, tokenizer_lib.GgufTokenizer(metadata)


def test_config_from_metadata(real):
  model, _, _ = real
  cfg = model.config
  assert (cfg.vocab_size, cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads,
          cfg.head_dim, cfg.ffn_dim, cfg.sliding_window) == (262144, 640, 18, 4, 1, 256, 2048,
                                                             512)
  assert cfg.final_logit_softcap is None and cfg.rope_global_base == 1e6


def test_tokenizer_round_trip_and_known_pieces(real):
  _, _, tok = real
  for text in ["The capital of France is Paris.",
               "Sinusrhythmus, Linkstyp. Normales EKG.\n  Two  spaces, 2024, ünïcode 🙂"]:
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id
    assert tok.decode(ids) == text
  assert tok.encode_pieces("The capital of France") == ["The", "▁capital", "▁of", "▁France"]
  assert tok.encode("hello", add_bos=False) == [23391]


def test_perplexity_of_english_text(real):
  model, params, tok = real
  ids = jnp.asarray([tok.encode(_PARAGRAPHS)])
  logp = decode.token_log_probs(model, params, ids)
  ppl = float(jnp.exp(-jnp.mean(logp)))
  print(f"Gemma 3 270M Q4_K_M perplexity: {ppl:.2f} over {ids.shape[1] - 1} tokens")
  assert ppl < 30, ppl


def test_greedy_continuation_is_fluent(real):
  model, params, tok = real
  prompts = ["Question: What is the capital of France?\nAnswer:",
             "The Eiffel Tower is located in the city of"]
  ids, mask = tok.encode_batch(prompts, max_len=16)
  out = decode.greedy_decode(model, params, ids, mask, max_new_tokens=6, eos_id=tok.eos_id)
  texts = [tok.decode(row) for row in np.asarray(out)]
  print("greedy continuations:", texts)
  assert all("Paris" in t for t in texts), texts
  # The plain prompt: the 270M base model ranks ' Paris' in its top 3 next tokens (greedy
  # itself continues with ' the capital of the country of France').
  prompt = jnp.asarray([tok.encode("The capital of France is")])
  logits, _ = model.apply(params, prompt)
  top3 = np.argsort(-np.asarray(logits[0, -1]))[:3]
  assert tok.encode(" Paris", add_bos=False)[0] in top3


def test_hidden_states_are_the_forward_pass_before_its_head(real):
  # The states a frozen text tower pools, run through the final norm and the tied embedding,
  # reproduce the model's own logits on the same (right-padded) tokens.
  model, params, tok = real
  ids, mask = tok.encode_batch(["Sinusrhythmus. Normales EKG.", "atrial fibrillation"], 12,
                               left_pad=False)
  logits, _ = model.apply(params, jnp.asarray(ids), jnp.asarray(mask))
  states = model.apply(params, jnp.asarray(ids), jnp.asarray(mask),
                       method=gemma3.Gemma3.hidden_states)
  again = model.apply(params, states, method=gemma3.Gemma3.final_norm_logits)
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(again)[valid], np.asarray(logits)[valid], atol=1e-3,
                             rtol=1e-4)


def test_frozen_gemma3_tower_pools_the_chosen_layer(real, monkeypatch):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from merit_jax.models import text_tower  # pylint: disable=g-import-not-at-top
  model, params, tok = real
  metadata = {"tokenizer": "reused"}
  monkeypatch.setattr(gemma3, "load_pretrained", lambda path=None: (model, params, metadata))
  monkeypatch.setattr(tokenizer_lib, "GgufTokenizer", lambda _: tok)
  texts = ["Sinusrhythmus. Linkstyp.", "ventrikuläre Extrasystolen", "ST depression"]
  for layer, pooling in ((9, "mean"), (18, "last")):
    tower = text_tower.FrozenTextTower.from_config(ml_collections.ConfigDict(dict(
        kind="gemma3", hf_dir=None, frozen=True, layer=layer, pooling=pooling, max_len=16)),
        batch_size=2)
    assert tower.dim == 640 and f"L{layer}-{pooling}" in tower.cache_key
    ids, mask = tok.encode_batch(texts, 16, left_pad=False)
    states = np.asarray(model.apply(params, jnp.asarray(ids), jnp.asarray(mask),
                                    num_layers=layer, method=gemma3.Gemma3.hidden_states))
    if pooling == "mean":
      expected = (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    else:
      expected = states[np.arange(3), mask.sum(1) - 1]
    # Gemma's hidden states reach ~10^4, and batches of 2 (the tower) and 3 (here) round
    # differently in float32 (2.5e-3 apart in a row whose largest entry is ~1.5e4, on one
    # CPU), so the tolerance scales with each row's largest entry; a wrong layer or pooling
    # differs by a sizeable fraction of it.
    diff = np.abs(tower.embed(texts) - expected)
    row_scale = np.abs(expected).max(axis=1, keepdims=True)
    np.testing.assert_array_less(diff, np.broadcast_to(2e-6 * row_scale, diff.shape))
