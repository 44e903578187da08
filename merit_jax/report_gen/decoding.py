"""Reports from ECG features: soft prefix + prompt → the LLM's decoder, and their scores.

Every batch has the shape (config.eval.batch_size, ...) (the last one is padded with zero
features), so each decoder compiles once. The decoding method, beam width, length penalty,
temperature and top-p come from `config.decoding`; `models/llm/decode.py` does the decoding.

So that no report comes out empty, as markup or as a loop, `config.decoding` also sets the
decoding rules of `models/llm/decode.py` (`decode_rules`): repetition_penalty, no_repeat_ngram,
min_new_tokens, max_new_tokens (default: max_report_tokens), stop_at_end_of_turn (Gemma's
`<end_of_turn>` ends a report like EOS; the byte tokenizer has none) and ban_markup (every
token whose text holds '<', '>' or an '&name' entity start is never generated; computed once
per tokenizer from its vocabulary).
`evaluate` counts the reports that still break a rule (`metrics/degeneracy.py`).

With `decoding.write_hints`, a record's report starts with its hinted statements written out
(`statement_phrases`), and the LLM continues it for at most `decoding.tokens_after_hints`
tokens.

`decoding.rerank_samples` / `rerank_neighbours` turn on the choice among several decodes of
`report_gen/reranking.py` (0 = off: one decode).
"""

from __future__ import annotations

import functools
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

from merit_jax.models.llm import decode
from merit_jax.report_gen import GenerateError
from merit_jax.report_gen import data as data_lib
from merit_jax.report_gen import neighbours
from merit_jax.report_gen import projector as projector_lib
from merit_jax.report_gen import reranking

METHODS = ("greedy", "beam", "nucleus")
END_OF_TURN = "<end_of_turn>"  # Gemma's end of a chat turn: a control token of the GGUF vocab.
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # SentencePiece byte-fallback pieces.
_ENTITY_START = re.compile(r"&[A-Za-z#]")


@functools.lru_cache(maxsize=4)
def _token_texts(tokenizer) -> tuple[str, ...]:
  """The text of every token id: GGUF pieces (byte pieces as their character), else decoded."""
  if not hasattr(tokenizer, "id_to_piece"):  # The byte tokenizer: one byte per id.
    return tuple(tokenizer.decode([i]) for i in range(tokenizer.vocab_size))
  texts = []
  for i in range(tokenizer.vocab_size):
    piece = tokenizer.id_to_piece(i)
    byte = _BYTE_PIECE.match(piece)
    if byte:  # A lone byte >= 0x80 is part of a multi-byte character, never markup.
      value = int(byte.group(1), 16)
      piece = chr(value) if value < 0x80 else ""
    texts.append(piece)
  return tuple(texts)


def end_of_turn_id(tokenizer) -> int | None:
  """The id of `<end_of_turn>` in a GGUF vocabulary (Gemma 3: 106), None for the byte one."""
  if not hasattr(tokenizer, "id_to_piece"):
    return None
  texts = _token_texts(tokenizer)
  return texts.index(END_OF_TURN) if END_OF_TURN in texts else None


def markup_token_ids(tokenizer, keep: tuple[int, ...] = ()) -> np.ndarray:
  """int32 ids of every token whose text holds '<', '>' or an entity start ('&lt', '&#'), but
  `keep` (the end ids: '<eos>' and '<end_of_turn>' are such tokens)."""
  ids = [i for i, text in enumerate(_token_texts(tokenizer))
         if ("<" in text or ">" in text or _ENTITY_START.search(text)) and i not in keep]
  return np.asarray(ids, np.int32)


def decode_rules(config, tokenizer) -> dict:
  """The decoding-rule kwargs of `models/llm/decode.py` from `config.decoding`.

  Keys missing from an older run's config (predict mode reloads one) mean "off".
  """
  dec = config.decoding
  eot = end_of_turn_id(tokenizer) if dec.get("stop_at_end_of_turn", False) else None
  stop_ids = () if eot is None else (int(eot),)
  rules = dict(stop_ids=stop_ids,
               repetition_penalty=float(dec.get("repetition_penalty", 1.0)),
               no_repeat_ngram=int(dec.get("no_repeat_ngram", 0)),
               min_new_tokens=int(dec.get("min_new_tokens", 0)), banned_ids=None)
  if dec.get("ban_markup", False):
    rules["banned_ids"] = jnp.asarray(
        markup_token_ids(tokenizer, keep=(int(tokenizer.eos_id),) + stop_ids))
  return rules


def max_new_tokens(config) -> int:
  """The decoding length limit: `decoding.max_new_tokens`, or else `max_report_tokens`
  (absent from an older run's config: the same)."""
  limit = config.decoding.get("max_new_tokens")
  return int(config.max_report_tokens if limit is None else limit)


def tokens_after_hints(config) -> int:
  """With decoding.write_hints, the most tokens the LLM writes after the hinted statements'
  phrases (absent from an older run's config: max_new_tokens)."""
  limit = config.decoding.get("tokens_after_hints")
  return max_new_tokens(config) if limit is None else int(limit)


def _decode_batch(config, gen: projector_lib.Generator, params, prefix, tokens, input_mask,
                  rng, rules, method: str, limit: int):
  dec = config.decoding
  kwargs = dict(max_new_tokens=limit, eos_id=gen.tokenizer.eos_id,
                pad_id=gen.tokenizer.pad_id, prefix_embeddings=prefix, input_mask=input_mask,
                **rules)
  if method == "greedy":
    return decode.greedy_decode(gen.llm, params, tokens, **kwargs)
  if method == "beam":
    ids, _ = decode.beam_search(gen.llm, params, tokens, beam_width=int(dec.beam_width),
                                length_penalty=float(dec.length_penalty), **kwargs)
    return ids
  return decode.sample_decode(gen.llm, params, tokens, rng, temperature=float(dec.temperature),
                              top_p=float(dec.top_p), **kwargs)


def _decode_all(config, gen: projector_lib.Generator, llm_params, prefix_fn,
                features: np.ndarray, method: str, seed: int, progress: bool,
                prompts=None, written=None) -> list[str]:
  """One report per feature row by `method` (the other decoding settings from config);
  prefix_fn: features → soft prefix (the trained projector, jitted); prompts: per-row prompt
  token ids (None: the run's one prompt for every row); written: per row, the report's first
  token ids, written for the LLM, which continues from them (`tokens_after_hints` more
  tokens; rows with none are decoded from the start as usual)."""
  n = len(features)
  prompts = data_lib.per_record_prompts(gen.prompt if prompts is None else prompts, n)
  written = [[] for _ in range(n)] if written is None else [list(w) for w in written]
  if len(written) != n:
    raise GenerateError(f"{len(written)} written report starts for {n} records")
  rows_of = {"free": [i for i in range(n) if not written[i]],
             "written": [i for i in range(n) if written[i]]}
  limits = {"free": max_new_tokens(config), "written": tokens_after_hints(config)}
  rules = decode_rules(config, gen.tokenizer)
  # min_new_tokens keeps a report from coming out empty; a written start already holds text.
  rules_of = {"free": rules, "written": dict(rules, min_new_tokens=0)}
  ids = [[] for _ in range(n)]
  for group, rows in rows_of.items():
    if rows and limits[group] > 0:
      for i, row_ids in zip(rows, _decode_rows(
          config, gen, llm_params, prefix_fn, features[rows],
          [prompts[i] + written[i] for i in rows], method, seed, progress, limits[group],
          rules_of[group])):
        ids[i] = row_ids
  return [gen.tokenizer.decode(w + i).strip() for w, i in zip(written, ids)]


def _decode_rows(config, gen: projector_lib.Generator, llm_params, prefix_fn,
                 features: np.ndarray, prompts, method: str, seed: int, progress: bool,
                 limit: int, rules: dict) -> list[list[int]]:
  """The new token ids of each row (cut before its first end id), at most `limit` of them;
  `rules`: `decode_rules`."""
  bs = int(config.eval.batch_size)
  # Every row's prompt, left-padded to the longest (one width for every batch: one compile).
  prompt_tokens, prompt_mask = data_lib.left_padded(prompts, gen.tokenizer.pad_id)
  rng = jax.random.PRNGKey(seed)
  ends = {int(gen.tokenizer.eos_id), *rules["stop_ids"]}
  out: list[list[int]] = []
  starts = range(0, len(features), bs)
  if progress:
    from tqdm import auto as tqdm_auto  # pylint: disable=g-import-not-at-top
    starts = tqdm_auto.tqdm(starts, desc=f"generate ({method})", unit="batch", file=sys.stderr)
  for start in starts:
    chunk = np.asarray(features[start:start + bs], np.float32)
    real = chunk.shape[0]
    if real < bs:  # One shape for every batch: no recompiles.
      chunk = np.concatenate([chunk, np.zeros((bs - real,) + chunk.shape[1:], np.float32)])
    prefix = prefix_fn(jnp.asarray(chunk))
    rows = np.minimum(np.arange(start, start + bs), len(features) - 1)  # Pads: any prompt.
    tokens, mask = jnp.asarray(prompt_tokens[rows]), jnp.asarray(prompt_mask[rows])
    sub = None
    if method == "nucleus":  # Only sampling draws: greedy and beam leave the key alone.
      rng, sub = jax.random.split(rng)
    ids = _decode_batch(config, gen, llm_params, prefix, tokens, mask, sub, rules, method,
                        limit)
    for row in np.asarray(ids)[:real].tolist():
      # Cut at the first end id: a stop id (<end_of_turn>) ends the report like eos.
      end = next((i for i, t in enumerate(row) if t in ends), len(row))
      out.append(row[:end])
  return out


def rerank_samples(config) -> int:
  """config.decoding.rerank_samples (absent from an older run's config: 0, no reranking)."""
  return int(config.decoding.get("rerank_samples") or 0)


def generate_reports(config, gen: projector_lib.Generator, trainable, features: np.ndarray,
                     progress: bool = True, bank: dict | None = None,
                     prompts=None, written=None) -> list[str]:
  """Decodes one report per feature row (greedy / beam / nucleus from config.decoding).

  prompts: per-row prompt token ids (`statement_hints`); None: the run's one prompt.
  written: per row, token ids the report starts with (`statement_phrases`: its hinted
  statements written out), which the LLM continues; None: none.

  With decoding.rerank_samples = n > 0, also draws n nucleus samples per row and keeps the
  candidate that `reranking.pick_reports` prefers; `bank` (`neighbours.build_bank` on the
  standardised training features) is then required.
  """
  method = config.decoding.method
  if method not in METHODS:
    raise ValueError(f"config.decoding.method={method!r} must be one of {', '.join(METHODS)}")
  llm_params = gen.llm_params_with(trainable)
  prefix_jit = jax.jit(gen.prefix)
  prefix_fn = lambda chunk: prefix_jit(trainable, chunk)
  seed = int(config.seed)
  n = rerank_samples(config)
  if n and bank is None:
    raise GenerateError("config.decoding.rerank_samples needs the training reports' neighbour "
                        "bank (neighbour_bank.npz beside the projector, or the training split)")
  reports = _decode_all(config, gen, llm_params, prefix_fn, features, method, seed, progress,
                        prompts, written)
  if not n:
    return reports
  candidates = [[r] for r in reports]
  for s in range(n):  # Each sample set its own stream, distinct from the first decode's.
    for row, text in zip(candidates, _decode_all(config, gen, llm_params, prefix_fn, features,
                                                 "nucleus", seed + 1 + s, progress, prompts,
                                                 written)):
      row.append(text)
  k = int(config.decoding.get("rerank_neighbours") or 0)
  return reranking.pick_reports(candidates, neighbours.neighbour_statement_sets(bank, features, k))


def evaluate(config, gen: projector_lib.Generator, trainable, test: dict,
             progress: bool = True, bank: dict | None = None) -> tuple[dict, list[str]]:
  """(metrics dict, generated reports) on precomputed test features (`bank`: as in
  `generate_reports`)."""
  from merit_jax.metrics import degeneracy  # pylint: disable=g-import-not-at-top
  from merit_jax.metrics import generation  # pylint: disable=g-import-not-at-top
  generated = generate_reports(config, gen, trainable, test["features"], progress, bank,
                               test.get("prompts"), test.get("written"))
  # An empty generation (EOS first) is scored as the empty string, i.e. as a miss.
  metrics = generation.report_generation_metrics(
      generated, test["reports"], labels=test["codes"], with_meteor=bool(config.eval.meteor))
  metrics["num_records"] = len(generated)
  metrics["empty_generations"] = sum(1 for g in generated if not g)
  # Reports breaking each rule of `metrics/degeneracy.py` (the run prints and writes them).
  counts = degeneracy.degeneracy_counts(generated)
  for rule in degeneracy.RULES:
    metrics[f"degenerate_{rule}"] = counts[rule]
  return metrics, generated
