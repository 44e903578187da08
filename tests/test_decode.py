"""Decoding on a tiny random Gemma 3: cached = recomputed, beam(1) = greedy, top-p, padding."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from merit_jax.models.llm import decode
from merit_jax.models.llm import gemma3

EOS = 1
PAD = 0
MAX_NEW = 10


@pytest.fixture(scope="module")
def tiny():
  config = gemma3.tiny_config(vocab_size=64)
  model = gemma3.Gemma3(config)
  params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32))
  return model, params


@functools.partial(jax.jit, static_argnums=0)
def _next_token(model, params, seq, length, prefix):
  """Argmax after `length` tokens of a right-padded row, from a full forward (no cache)."""
  logits, _ = model.apply(params, seq, input_mask=jnp.arange(seq.shape[1])[None] < length,
                          prefix_embeddings=prefix)
  return jnp.argmax(logits[0, prefix.shape[1] + length - 1])


def _greedy_without_cache(model, params, prompt, max_new, prefix=None):
  """Reference: recompute the whole (prefix +) prompt + generated sequence at every step."""
  if prefix is None:
    prefix = jnp.zeros((1, 0, model.config.d_model))
  seq = list(prompt)
  out = []
  for _ in range(max_new):
    padded = jnp.asarray([seq + [PAD] * (len(prompt) + max_new - len(seq))])
    tok = int(_next_token(model, params, padded, len(seq), prefix))
    out.append(tok)
    if tok == EOS:
      break
    seq.append(tok)
  return out + [PAD] * (max_new - len(out))


def test_greedy_with_cache_equals_recomputation(tiny):
  model, params = tiny
  prompts = [[2, 17, 33, 9, 41], [2, 5, 60, 12, 7]]
  got = decode.greedy_decode(model, params, jnp.asarray(prompts), max_new_tokens=MAX_NEW,
                             eos_id=EOS, pad_id=PAD)
  for row, prompt in zip(np.asarray(got), prompts):
    # Total length 15 > sliding window 6: the window is exercised in both paths.
    assert row.tolist() == _greedy_without_cache(model, params, prompt, MAX_NEW)


def test_prefix_and_padding(tiny):
  model, params = tiny
  prefix = jax.random.normal(jax.random.PRNGKey(3), (2, 3, model.config.d_model))
  prompts = [[2, 17, 33, 9, 41], [2, 5, 60]]
  # Left-padded and right-padded batches must both match unpadded single-row decoding.
  for left in (True, False):
    ids = np.zeros((2, 5), np.int32)
    mask = np.zeros((2, 5), bool)
    for r, p in enumerate(prompts):
      cols = slice(5 - len(p), 5) if left else slice(0, len(p))
      ids[r, cols], mask[r, cols] = p, True
    got = decode.greedy_decode(model, params, ids, mask, prefix, max_new_tokens=MAX_NEW,
                               eos_id=EOS)
    for r, p in enumerate(prompts):
      want = _greedy_without_cache(model, params, p, MAX_NEW, prefix[r:r + 1])
      assert np.asarray(got)[r].tolist() == want, (left, r)


def test_eos_stops_and_pads(tiny):
  model, params = tiny
  prompt = jnp.asarray([[2, 17, 33, 9, 41]])
  free = np.asarray(decode.greedy_decode(model, params, prompt, max_new_tokens=MAX_NEW,
                                         eos_id=-1))[0]
  # Declare the 3rd generated token the eos: output stops there and pads afterwards.
  eos = int(free[2])
  first = free.tolist().index(eos)
  got = np.asarray(decode.greedy_decode(model, params, prompt, max_new_tokens=MAX_NEW,
                                        eos_id=eos, pad_id=PAD))[0]
  assert got[:first + 1].tolist() == free[:first + 1].tolist()
  assert (got[first + 1:] == PAD).all()


def test_beam_width_one_equals_greedy(tiny):
  model, params = tiny
  prompts = jnp.asarray([[2, 17, 33, 9, 41], [2, 5, 60, 12, 7]])
  greedy = decode.greedy_decode(model, params, prompts, max_new_tokens=MAX_NEW, eos_id=EOS)
  beam, _ = decode.beam_search(model, params, prompts, max_new_tokens=MAX_NEW, eos_id=EOS,
                               beam_width=1)
  np.testing.assert_array_equal(beam, greedy)


def test_beam_score_is_sequence_log_prob(tiny):
  model, params = tiny
  prompt = [2, 17, 33, 9, 41]
  eos = 7  # Some token the random model emits now and then, so beams do finish.
  best, score = decode.beam_search(model, params, jnp.asarray([prompt]),
                                   max_new_tokens=MAX_NEW, eos_id=eos, beam_width=4)
  gen = np.asarray(best)[0].tolist()
  if eos in gen:
    gen = gen[:gen.index(eos) + 1]
  seq = jnp.asarray([prompt + gen])
  logp = decode.token_log_probs(model, params, seq)[0, len(prompt) - 1:]
  np.testing.assert_allclose(float(score[0]), float(jnp.sum(logp)), rtol=1e-4, atol=1e-4)
  greedy = np.asarray(decode.greedy_decode(model, params, jnp.asarray([prompt]),
                                           max_new_tokens=MAX_NEW, eos_id=eos))[0].tolist()
  if eos in greedy:
    greedy = greedy[:greedy.index(eos) + 1]
  greedy_logp = decode.token_log_probs(model, params, jnp.asarray([prompt + greedy]))
  # Beam 4 keeps the greedy path's prefix alive; here it must do at least as well.
  assert float(score[0]) >= float(jnp.sum(greedy_logp[0, len(prompt) - 1:])) - 1e-4


def _numpy_nucleus(logits: np.ndarray, top_p: float) -> np.ndarray:
  """Reference: per row, the most probable tokens until their mass reaches top_p."""
  kept = np.zeros(logits.shape, bool)
  for row, values in enumerate(logits.astype(np.float64)):
    probs = np.exp(values - values.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    count = int(np.searchsorted(np.cumsum(probs[order]), top_p) + 1)
    kept[row, order[:min(count, len(order))]] = True
  return kept


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95])
def test_top_p_filter_equals_a_full_sort_with_and_without_the_fast_path(top_p):
  rng = np.random.default_rng(0)
  vocab = 4 * decode.TOP_P_CANDIDATES
  peaked = rng.normal(size=(3, vocab))
  peaked[:, :20] += 10.0  # The nucleus lies among the first candidates: the top-k path.
  flat = rng.normal(scale=0.1, size=(2, vocab))  # 256 candidates hold ~25 %: the full sort.
  for logits in (peaked, flat, np.concatenate([peaked, flat])):
    kept = np.asarray(decode.top_p_filter(jnp.asarray(logits, jnp.float32), top_p) > -1e29)
    np.testing.assert_array_equal(kept, _numpy_nucleus(logits.astype(np.float32), top_p))


def test_top_p_filter_and_sampling(tiny):
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  kept = np.asarray(decode.top_p_filter(logits, 0.7)[0] > -1e29)
  assert kept.tolist() == [True, True, False, False]
  kept = np.asarray(decode.top_p_filter(logits, 0.1)[0] > -1e29)
  assert kept.tolist() == [True, False, False, False]
  model, params = tiny
  prompts = jnp.asarray([[2, 17, 33, 9, 41]])
  greedy = decode.greedy_decode(model, params, prompts, max_new_tokens=MAX_NEW, eos_id=EOS)
  # A tiny nucleus holds only the argmax token: sampling becomes greedy.
  nucleus = decode.sample_decode(model, params, prompts, jax.random.PRNGKey(5),
                                 max_new_tokens=MAX_NEW, eos_id=EOS, top_p=1e-6)
  np.testing.assert_array_equal(nucleus, greedy)
  a = decode.sample_decode(model, params, prompts, jax.random.PRNGKey(1),
                           max_new_tokens=MAX_NEW, eos_id=EOS, top_p=1.0, temperature=2.0)
  b = decode.sample_decode(model, params, prompts, jax.random.PRNGKey(2),
                           max_new_tokens=MAX_NEW, eos_id=EOS, top_p=1.0, temperature=2.0)
  assert not np.array_equal(a, b)  # Random model at temperature 2: different samples.
  with pytest.raises(ValueError, match="top_p"):
    decode.sample_decode(model, params, prompts, jax.random.PRNGKey(1),
                         max_new_tokens=2, eos_id=EOS, top_p=0.0)


# ------------------------------------------------------------------------ decoding rules

@functools.partial(jax.jit, static_argnums=0)
def _last_logits(model, params, seq, length):
  logits, _ = model.apply(params, seq, input_mask=jnp.arange(seq.shape[1])[None] < length)
  return logits[0, length - 1]


def _greedy_with_rules_reference(model, params, prompt, max_new, penalty, ngram, min_new,
                                 banned, stop):
  """The rules in plain numpy on full recomputation: the independent reference."""
  seq, out = list(prompt), []
  for step in range(max_new):
    padded = jnp.asarray([seq + [PAD] * (len(prompt) + max_new - len(seq))])
    logits = np.asarray(_last_logits(model, params, padded, len(seq)), np.float64)
    for tok in set(out):
      logits[tok] = logits[tok] / penalty if logits[tok] > 0 else logits[tok] * penalty
    if ngram and len(out) >= ngram - 1:
      context = tuple(out[len(out) - ngram + 1:]) if ngram > 1 else ()
      for s in range(len(out) - ngram + 1):
        if tuple(out[s:s + ngram - 1]) == context:
          logits[out[s + ngram - 1]] = -np.inf
    if step < min_new:
      logits[[EOS, stop]] = -np.inf
    logits[banned] = -np.inf
    tok = int(np.argmax(logits))
    out.append(tok)
    if tok in (EOS, stop):
      break
    seq.append(tok)
  return out + [PAD] * (max_new - len(out))


def test_rules_match_numpy_reference(tiny):
  model, params = tiny
  prompts = [[2, 17, 33, 9, 41], [2, 5, 60, 12, 7]]
  banned = np.asarray([3, 8, 13, 21], np.int32)
  stop = 7
  for penalty, ngram, min_new in ((1.0, 2, 0), (1.5, 0, 3), (2.0, 3, 2)):
    got = decode.greedy_decode(model, params, jnp.asarray(prompts), max_new_tokens=MAX_NEW,
                               eos_id=EOS, pad_id=PAD, repetition_penalty=penalty,
                               no_repeat_ngram=ngram, min_new_tokens=min_new,
                               banned_ids=banned, stop_ids=(stop,))
    for row, prompt in zip(np.asarray(got).tolist(), prompts):
      assert row == _greedy_with_rules_reference(model, params, prompt, MAX_NEW, penalty,
                                                 ngram, min_new, banned, stop), (penalty, ngram)


def test_rules_off_keep_todays_outputs(tiny):
  model, params = tiny
  prompts = jnp.asarray([[2, 17, 33, 9, 41], [2, 5, 60, 12, 7]])
  off = dict(repetition_penalty=1.0, no_repeat_ngram=0, min_new_tokens=0, stop_ids=())
  np.testing.assert_array_equal(
      decode.greedy_decode(model, params, prompts, max_new_tokens=MAX_NEW, eos_id=7, **off),
      decode.greedy_decode(model, params, prompts, max_new_tokens=MAX_NEW, eos_id=7))
  a = decode.beam_search(model, params, prompts, max_new_tokens=MAX_NEW, eos_id=7, **off)
  b = decode.beam_search(model, params, prompts, max_new_tokens=MAX_NEW, eos_id=7)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
