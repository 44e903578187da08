"""Batched, jit-compiled decoding for `gemma3.Gemma3`: greedy, nucleus sampling, beam search.

Every method prefills the KV cache with (optional soft prefix +) prompt in one call, then runs a
`lax.while_loop` of single-token steps for at most `max_new_tokens`, stopping early once every
sequence has emitted `eos_id`. Tokens after a sequence's eos are `pad_id`. Prompts may be left-
or right-padded (give `input_mask`); the first new token follows each row's last real token.

Outputs are fixed-shape: tokens int32 (B, max_new_tokens).
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp

from merit_jax.models.llm import gemma3

Array = jax.Array
_NEG_INF = -1e30


def _prefill(model, params, tokens, input_mask, prefix_embeddings, max_new_tokens,
             cache_dtype):
  """Runs the prompt through the model; returns (last real token's logits, cache)."""
  b, p = tokens.shape
  k = 0 if prefix_embeddings is None else prefix_embeddings.shape[1]
  cache = gemma3.init_cache(model.config, b, k + p + max_new_tokens, cache_dtype)
  logits, cache = model.apply(params, tokens, input_mask=input_mask,
                              prefix_embeddings=prefix_embeddings, cache=cache)
  # Column of each row's last valid input (prefix soft tokens count as valid).
  valid = cache["valid"][:, :k + p]
  last = k + p - 1 - jnp.argmax(valid[:, ::-1], axis=1)
  return jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0], cache


def _step(model, params, tok, cache):
  logits, cache = model.apply(params, tok[:, None], cache=cache)
  return logits[:, -1], cache


def _default_mask(tokens, input_mask):
  return jnp.ones(tokens.shape, bool) if input_mask is None else input_mask.astype(bool)


def top_p_filter(logits: Array, top_p: float) -> Array:
  """Sets logits outside the smallest set with cumulative probability >= top_p to -inf-ish."""
  sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  cum_before = jnp.cumsum(probs, axis=-1) - probs
  keep = cum_before < top_p  # Always keeps the most probable token.
  threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits >= threshold, logits, _NEG_INF)


def _sampling_loop(model, params, tokens, input_mask, prefix_embeddings, rng, *,
                   max_new_tokens, eos_id, pad_id, greedy, temperature, top_p, cache_dtype):
  b = tokens.shape[0]
  logits, cache = _prefill(model, params, tokens, _default_mask(tokens, input_mask),
                           prefix_embeddings, max_new_tokens, cache_dtype)
  out = jnp.full((b, max_new_tokens), pad_id, jnp.int32)
  finished = jnp.zeros((b,), bool)

  def cond(state):
    step, _, _, _, finished, _ = state
    return (step < max_new_tokens) & ~jnp.all(finished)

  def body(state):
    step, logits, cache, out, finished, rng = state
    if greedy:
      tok = jnp.argmax(logits, axis=-1)
    else:
      rng, sub = jax.random.split(rng)
      scaled = logits / temperature
      if top_p < 1.0:
        scaled = top_p_filter(scaled, top_p)
      tok = jax.random.categorical(sub, scaled, axis=-1)
    tok = jnp.where(finished, pad_id, tok).astype(jnp.int32)
    out = out.at[:, step].set(tok)
    finished = finished | (tok == eos_id)
    logits, cache = _step(model, params, tok, cache)
    return step + 1, logits, cache, out, finished, rng

  state = (jnp.zeros((), jnp.int32), logits, cache, out, finished, rng)
  return jax.lax.while_loop(cond, body, state)[3]


@functools.partial(jax.jit, static_argnames=(
    "model", "max_new_tokens", "eos_id", "pad_id", "cache_dtype"))
def greedy_decode(model: gemma3.Gemma3, params: Any, tokens: Array,
                  input_mask: Array | None = None, prefix_embeddings: Array | None = None, *,
                  max_new_tokens: int, eos_id: int, pad_id: int = 0,
                  cache_dtype: Any = jnp.float32) -> Array:
  """Greedy continuation: int32 (B, max_new_tokens), pad after eos."""
  return _sampling_loop(model, params, tokens, input_mask, prefix_embeddings,
                        jax.random.PRNGKey(0), max_new_tokens=max_new_tokens, eos_id=eos_id,
                        pad_id=pad_id, greedy=True, temperature=1.0, top_p=1.0,
                        cache_dtype=cache_dtype)


@functools.partial(jax.jit, static_argnames=(
    "model", "max_new_tokens", "eos_id", "pad_id", "temperature", "top_p", "cache_dtype"))
def sample_decode(model: gemma3.Gemma3, params: Any, tokens: Array, rng: Array,
                  input_mask: Array | None = None, prefix_embeddings: Array | None = None, *,
                  max_new_tokens: int, eos_id: int, pad_id: int = 0, temperature: float = 1.0,
                  top_p: float = 0.9, cache_dtype: Any = jnp.float32) -> Array:
  """Nucleus (top-p) sampling at `temperature`: int32 (B, max_new_tokens), pad after eos."""
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature} (use greedy_decode)")
  if not 0 < top_p <= 1:
    raise ValueError(f"top_p must be in (0, 1], got {top_p}")
  return _sampling_loop(model, params, tokens, input_mask, prefix_embeddings, rng,
                        max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                        greedy=False, temperature=temperature, top_p=top_p,
                        cache_dtype=cache_dtype)


def _repeat_batch(tree, times):
  def rep(x):
    return x if x.ndim == 0 else jnp.repeat(x, times, axis=0)
  return jax.tree_util.tree_map(rep, tree)


@functools.partial(jax.jit, static_argnames=(
    "model", "max_new_tokens", "eos_id", "pad_id", "beam_width", "length_penalty",
    "cache_dtype"))
def beam_search(model: gemma3.Gemma3, params: Any, tokens: Array,
                input_mask: Array | None = None, prefix_embeddings: Array | None = None, *,
                max_new_tokens: int, eos_id: int, pad_id: int = 0, beam_width: int = 4,
                length_penalty: float = 0.0,
                cache_dtype: Any = jnp.float32) -> tuple[Array, Array]:
  """Beam search over summed log-probabilities.

  A finished beam (it emitted eos) continues with pad at zero cost, so it keeps its score.
  Final ranking divides each score by length**length_penalty (length counts eos; 0 = raw sum).

  Returns:
    (best tokens int32 (B, max_new_tokens), their normalised scores float32 (B,)).
  """
  b = tokens.shape[0]
  w = beam_width
  logits, cache = _prefill(model, params, tokens, _default_mask(tokens, input_mask),
                           prefix_embeddings, max_new_tokens, cache_dtype)
  vocab = logits.shape[-1]
  logits = jnp.repeat(logits, w, axis=0)  # (B*W, V); row b*W + j is beam j of example b.
  cache = _repeat_batch(cache, w)
  # Only beam 0 is live at first, so the first top-k does not pick W copies of one token.
  scores = jnp.tile(jnp.array([0.0] + [_NEG_INF] * (w - 1), jnp.float32), (b, 1))
  out = jnp.full((b, w, max_new_tokens), pad_id, jnp.int32)
  finished = jnp.zeros((b, w), bool)
  lengths = jnp.zeros((b, w), jnp.int32)
  pad_only = jnp.full((vocab,), _NEG_INF, jnp.float32).at[pad_id].set(0.0)

  def cond(state):
    step, _, _, _, _, finished, _ = state
    return (step < max_new_tokens) & ~jnp.all(finished)

  def body(state):
    step, logits, cache, scores, out, finished, lengths = state
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(b, w, vocab)
    logp = jnp.where(finished[..., None], pad_only, logp)
    cand = (scores[..., None] + logp).reshape(b, w * vocab)
    scores, flat = jax.lax.top_k(cand, w)
    parent = flat // vocab
    tok = (flat % vocab).astype(jnp.int32)
    gather = lambda x: jnp.take_along_axis(x, parent.reshape(b, w, *([1] * (x.ndim - 2))),
                                           axis=1)
    out = gather(out).at[:, :, step].set(tok)
    was_finished = gather(finished)
    lengths = gather(lengths) + (~was_finished).astype(jnp.int32)
    finished = was_finished | (tok == eos_id)
    rows = (jnp.arange(b)[:, None] * w + parent).reshape(-1)
    cache = jax.tree_util.tree_map(lambda x: x if x.ndim == 0 else x[rows], cache)
    logits, cache = _step(model, params, tok.reshape(-1), cache)
    return step + 1, logits, cache, scores, out, finished, lengths

  state = (jnp.zeros((), jnp.int32), logits, cache, scores, out, finished, lengths)
  _, _, _, scores, out, _, lengths = jax.lax.while_loop(cond, body, state)
  norm = scores / jnp.maximum(lengths, 1).astype(jnp.float32) ** length_penalty
  best = jnp.argmax(norm, axis=1)
  best_tokens = jnp.take_along_axis(out, best[:, None, None], axis=1)[:, 0]
  return best_tokens, jnp.take_along_axis(norm, best[:, None], axis=1)[:, 0]


@functools.partial(jax.jit, static_argnames=("model",))
def token_log_probs(model: gemma3.Gemma3, params: Any, tokens: Array,
                    input_mask: Array | None = None) -> Array:
  """log p(tokens[:, t] | tokens[:, :t]) for t >= 1: float32 (B, T-1), 0 where masked."""
  mask = _default_mask(tokens, input_mask)
  logits, _ = model.apply(params, tokens, input_mask=mask)
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
  return jnp.where(mask[:, 1:] & mask[:, :-1], picked, 0.0)
