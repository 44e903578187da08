"""Batched, jit-compiled decoding for `gemma3.Gemma3`: greedy, nucleus sampling, beam search.

Every method prefills the KV cache with (optional soft prefix +) prompt in one call, then runs a
`lax.while_loop` of single-token steps for at most `max_new_tokens`, stopping early once every
sequence has emitted `eos_id`. Tokens after a sequence's eos are `pad_id`. Prompts may be left-
or right-padded (give `input_mask`); the first new token follows each row's last real token.

Outputs are fixed-shape: tokens int32 (B, max_new_tokens).

Decoding rules that keep a small or weakly conditioned model from degenerating (all off by
default, so the plain methods are unchanged), applied to each step's logits by
`process_logits` inside the loop with static shapes:
  - `repetition_penalty` p (CTRL, Keskar et al. 2019): the logit of every token already
    generated is divided by p if positive and multiplied by p if not (p > 1 discourages);
  - `no_repeat_ngram` n: a token that would complete an n-gram already present in the generated
    ids is banned;
  - `min_new_tokens` m: eos and the stop ids are banned for the first m steps;
  - `stop_ids`: further ids (e.g. Gemma's `<end_of_turn>`) that end a sequence like eos (the
    stop token is written, pad follows);
  - `banned_ids`: ids that are never generated (e.g. every token holding markup).
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


# Tokens `top_p_filter` looks at first; the whole vocabulary only when they hold less than
# top_p of the probability.
TOP_P_CANDIDATES = 256


def _nucleus_threshold(top_logits: Array, log_norm: Array, top_p: float) -> Array:
  """The smallest logit of the nucleus, from logits sorted in descending order."""
  probs = jnp.exp(top_logits - log_norm)
  cum_before = jnp.cumsum(probs, axis=-1) - probs
  keep = cum_before < top_p  # Always keeps the most probable token.
  return jnp.min(jnp.where(keep, top_logits, jnp.inf), axis=-1, keepdims=True)


def top_p_filter(logits: Array, top_p: float) -> Array:
  """Sets logits outside the smallest set with cumulative probability >= top_p to -inf-ish.

  Exact, and fast on a large vocabulary: the nucleus is searched among the
  TOP_P_CANDIDATES most probable tokens (a top-k, not a sort of all 262k of Gemma's logits,
  which cost ~1 s a step for 16 rows on a CPU), and the whole vocabulary is sorted only when
  some row's candidates hold less than top_p of its probability.
  """
  vocab = logits.shape[-1]
  log_norm = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  top_logits, _ = jax.lax.top_k(logits, min(TOP_P_CANDIDATES, vocab))
  covered = jnp.sum(jnp.exp(top_logits - log_norm), axis=-1) >= top_p
  threshold = jax.lax.cond(
      jnp.all(covered),
      lambda: _nucleus_threshold(top_logits, log_norm, top_p),
      lambda: _nucleus_threshold(jnp.sort(logits, axis=-1)[..., ::-1], log_norm, top_p))
  return jnp.where(logits >= threshold, logits, _NEG_INF)


def process_logits(logits: Array, generated: Array, step: Array, *,
                   repetition_penalty: float = 1.0, no_repeat_ngram: int = 0,
                   min_new_tokens: int = 0, end_ids: tuple[int, ...] = (),
                   banned_ids: Array | None = None) -> Array:
  """The decoding rules (module docstring) on one step's logits.

  Args:
    logits: (N, V) next-token logits.
    generated: int (N, T) ids generated so far; only columns < `step` are read.
    step: how many tokens each row has generated (scalar).
    end_ids: eos and the stop ids, masked while step < min_new_tokens (ids outside [0, V)
      are ignored, e.g. eos_id=-1 for "no eos").

  Returns:
    float32 (N, V) logits; banned entries are -1e30.
  """
  if (repetition_penalty == 1.0 and not no_repeat_ngram and not min_new_tokens
      and banned_ids is None):
    return logits
  logits = logits.astype(jnp.float32)
  n, vocab = logits.shape
  t = generated.shape[1]
  rows = jnp.arange(n)[:, None]
  if repetition_penalty != 1.0:
    # Scatter with out-of-range ids (vocab) for columns not yet generated: dropped.
    ids = jnp.where(jnp.arange(t)[None] < step, generated, vocab)
    seen = jnp.zeros((n, vocab), bool).at[rows, ids].set(True, mode="drop")
    penalised = jnp.where(logits > 0, logits / repetition_penalty, logits * repetition_penalty)
    logits = jnp.where(seen, penalised, logits)
  ngram = int(no_repeat_ngram)
  if ngram and t >= ngram:
    starts = t - ngram + 1
    # windows[:, s] = generated[:, s:s+n]: every n-gram start of the static buffer.
    windows = jnp.stack([generated[:, k:k + starts] for k in range(ngram)], axis=-1)
    # The n-1 newest ids; for step < n-1 the start clamps to 0, but then no window is valid.
    last = jax.lax.dynamic_slice_in_dim(generated, step - (ngram - 1), ngram - 1, axis=1)
    match = jnp.all(windows[:, :, :ngram - 1] == last[:, None, :], axis=-1)
    # A window is complete (all n ids generated) iff s + n <= step.
    match &= (jnp.arange(starts) <= step - ngram)[None]
    ban = jnp.where(match, windows[:, :, ngram - 1], vocab)
    banned = jnp.zeros((n, vocab), bool).at[rows, ban].set(True, mode="drop")
    logits = jnp.where(banned, _NEG_INF, logits)
  ends = [int(i) for i in end_ids if 0 <= int(i) < vocab]
  if min_new_tokens and ends:
    end_mask = jnp.zeros((vocab,), bool).at[jnp.asarray(ends)].set(True)
    logits = jnp.where((step < min_new_tokens) & end_mask[None], _NEG_INF, logits)
  if banned_ids is not None:
    logits = logits.at[:, jnp.asarray(banned_ids, jnp.int32)].set(_NEG_INF, mode="drop")
  return logits


def _check_rules(max_new_tokens, repetition_penalty, no_repeat_ngram, min_new_tokens):
  if not repetition_penalty > 0:
    raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {repetition_penalty}")
  if no_repeat_ngram < 0:
    raise ValueError(f"no_repeat_ngram must be >= 0 (0 = off), got {no_repeat_ngram}")
  if not 0 <= min_new_tokens <= max_new_tokens:
    raise ValueError(f"min_new_tokens must be in [0, max_new_tokens={max_new_tokens}], "
                     f"got {min_new_tokens}")


def _is_end(tok, end_ids):
  done = jnp.zeros(tok.shape, bool)
  for i in end_ids:
    done |= tok == i
  return done


def _sampling_loop(model, params, tokens, input_mask, prefix_embeddings, rng, *,
                   max_new_tokens, eos_id, pad_id, greedy, temperature, top_p, cache_dtype,
                   stop_ids=(), banned_ids=None, **rules):
  b = tokens.shape[0]
  end_ids = (eos_id,) + tuple(stop_ids)
  logits, cache = _prefill(model, params, tokens, _default_mask(tokens, input_mask),
                           prefix_embeddings, max_new_tokens, cache_dtype)
  out = jnp.full((b, max_new_tokens), pad_id, jnp.int32)
  finished = jnp.zeros((b,), bool)

  def cond(state):
    step, _, _, _, finished, _ = state
    return (step < max_new_tokens) & ~jnp.all(finished)

  def body(state):
    step, logits, cache, out, finished, rng = state
    logits = process_logits(logits, out, step, end_ids=end_ids, banned_ids=banned_ids, **rules)
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
    finished = finished | _is_end(tok, end_ids)
    logits, cache = _step(model, params, tok, cache)
    return step + 1, logits, cache, out, finished, rng

  state = (jnp.zeros((), jnp.int32), logits, cache, out, finished, rng)
  return jax.lax.while_loop(cond, body, state)[3]


@functools.partial(jax.jit, static_argnames=(
    "model", "max_new_tokens", "eos_id", "pad_id", "cache_dtype", "stop_ids",
    "repetition_penalty", "no_repeat_ngram", "min_new_tokens"))
def greedy_decode(
    model: gemma3.Gemma3, params: Any, tokens: Array, input_mask: Array | None = None,
    prefix_embeddings: Array | None = None, *, max_new_tokens: int, eos_id: int,
    pad_id: int = 0, cache_dtype: Any = jnp.float32,
    stop_ids: tuple[int, ...] = (), repetition_penalty: float = 1.0, no_repeat_ngram: int = 0,
    min_new_tokens: int = 0, banned_ids: Array | None = None) -> Array:
  """Greedy continuation: int32 (B, max_new_tokens), pad after eos / a stop id.

  stop_ids (a tuple), repetition_penalty, no_repeat_ngram, min_new_tokens, banned_ids: the
  decoding rules of the module docstring (defaults: off).
  """
  _check_rules(max_new_tokens, repetition_penalty, no_repeat_ngram, min_new_tokens)
  return _sampling_loop(
      model, params, tokens, input_mask, prefix_embeddings, jax.random.PRNGKey(0),
      max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id, greedy=True,
      temperature=1.0, top_p=1.0, cache_dtype=cache_dtype,
      stop_ids=stop_ids, repetition_penalty=repetition_penalty, no_repeat_ngram=no_repeat_ngram,
      min_new_tokens=min_new_tokens, banned_ids=banned_ids)


@functools.partial(jax.jit, static_argnames=(
    "model", "max_new_tokens", "eos_id", "pad_id", "temperature", "top_p", "cache_dtype",
    "stop_ids", "repetition_penalty", "no_repeat_ngram", "min_new_tokens"))
def sample_decode(
    model: gemma3.Gemma3, params: Any, tokens: Array, rng: Array,
    input_mask: Array | None = None, prefix_embeddings: Array | None = None, *,
    max_new_tokens: int, eos_id: int, pad_id: int = 0, temperature: float = 1.0,
    top_p: float = 0.9, cache_dtype: Any = jnp.float32,
    stop_ids: tuple[int, ...] = (), repetition_penalty: float = 1.0, no_repeat_ngram: int = 0,
    min_new_tokens: int = 0, banned_ids: Array | None = None) -> Array:
  """Nucleus (top-p) sampling at `temperature`: int32 (B, max_new_tokens), pad after eos.

  The decoding rules act on the logits before temperature and top-p (as in HF transformers'
  processors before warpers).
  """
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature} (use greedy_decode)")
  if not 0 < top_p <= 1:
    raise ValueError(f"top_p must be in (0, 1], got {top_p}")
  _check_rules(max_new_tokens, repetition_penalty, no_repeat_ngram, min_new_tokens)
  return _sampling_loop(
      model, params, tokens, input_mask, prefix_embeddings, rng,
      max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id, greedy=False,
      temperature=temperature, top_p=top_p, cache_dtype=cache_dtype,
      stop_ids=stop_ids, repetition_penalty=repetition_penalty, no_repeat_ngram=no_repeat_ngram,
      min_new_tokens=min_new_tokens, banned_ids=banned_ids)


def _repeat_batch(tree, times):
  def rep(x):
    return x if x.ndim == 0 else jnp.repeat(x, times, axis=0)
  return jax.tree_util.tree_map(rep, tree)


@functools.partial(jax.jit, static_argnames=(
    "model", "max_new_tokens", "eos_id", "pad_id", "beam_width", "length_penalty",
    "cache_dtype", "stop_ids", "repetition_penalty", "no_repeat_ngram", "min_new_tokens"))
def beam_search(
    model: gemma3.Gemma3, params: Any, tokens: Array, input_mask: Array | None = None,
    prefix_embeddings: Array | None = None, *, max_new_tokens: int, eos_id: int,
    pad_id: int = 0, beam_width: int = 4, length_penalty: float = 0.0,
    cache_dtype: Any = jnp.float32,
    stop_ids: tuple[int, ...] = (), repetition_penalty: float = 1.0, no_repeat_ngram: int = 0,
    min_new_tokens: int = 0, banned_ids: Array | None = None) -> tuple[Array, Array]:
  """Beam search over summed log-probabilities.

  A finished beam (it emitted eos or a stop id) continues with pad at zero cost, so it keeps
  its score. Final ranking divides each score by length**length_penalty (length counts eos;
  0 = raw sum). The decoding rules act on each beam's logits (with that beam's own history)
  before the log-softmax, so scores are log-probabilities of the rule-adjusted distribution.

  Returns:
    (best tokens int32 (B, max_new_tokens), their normalised scores float32 (B,)).
  """
  _check_rules(max_new_tokens, repetition_penalty, no_repeat_ngram, min_new_tokens)
  rules = dict(repetition_penalty=repetition_penalty, no_repeat_ngram=no_repeat_ngram,
               min_new_tokens=min_new_tokens, end_ids=(eos_id,) + tuple(stop_ids),
               banned_ids=banned_ids)
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
    logits = process_logits(logits, out.reshape(b * w, max_new_tokens), step, **rules)
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
    finished = was_finished | _is_end(tok, rules["end_ids"])
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
