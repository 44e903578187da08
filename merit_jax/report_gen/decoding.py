"""Reports from ECG features: soft prefix + prompt → the LLM's decoder, and their scores.

Every batch has the shape (config.eval.batch_size, ...) (the last one is padded with zero
features), so each decoder compiles once. The decoding method, beam width, length penalty,
temperature and top-p come from `config.decoding`; `models/llm/decode.py` does the decoding.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from merit_jax.models.llm import decode
from merit_jax.report_gen import projector as projector_lib

METHODS = ("greedy", "beam", "nucleus")


def _decode_batch(config, gen: projector_lib.Generator, params, prefix, tokens, rng):
  dec = config.decoding
  kwargs = dict(max_new_tokens=int(config.max_report_tokens), eos_id=gen.tokenizer.eos_id,
                pad_id=gen.tokenizer.pad_id, prefix_embeddings=prefix)
  if dec.method == "greedy":
    return decode.greedy_decode(gen.llm, params, tokens, **kwargs)
  if dec.method == "beam":
    ids, _ = decode.beam_search(gen.llm, params, tokens, beam_width=int(dec.beam_width),
                                length_penalty=float(dec.length_penalty), **kwargs)
    return ids
  return decode.sample_decode(gen.llm, params, tokens, rng, temperature=float(dec.temperature),
                              top_p=float(dec.top_p), **kwargs)


def generate_reports(config, gen: projector_lib.Generator, trainable, features: np.ndarray,
                     progress: bool = True) -> list[str]:
  """Decodes one report per feature row (greedy / beam / nucleus from config.decoding)."""
  method = config.decoding.method
  if method not in METHODS:
    raise ValueError(f"config.decoding.method={method!r} must be one of {', '.join(METHODS)}")
  bs = int(config.eval.batch_size)
  params = gen.llm_params_with(trainable)
  prefix_fn = jax.jit(gen.prefix)
  prompt = np.asarray(gen.prompt, np.int32)
  rng = jax.random.PRNGKey(int(config.seed))
  out: list[str] = []
  starts = range(0, len(features), bs)
  if progress:
    from tqdm import auto as tqdm_auto  # pylint: disable=g-import-not-at-top
    starts = tqdm_auto.tqdm(starts, desc=f"generate ({method})", unit="batch", file=sys.stderr)
  for start in starts:
    chunk = np.asarray(features[start:start + bs], np.float32)
    real = chunk.shape[0]
    if real < bs:  # One shape for every batch: no recompiles.
      chunk = np.concatenate([chunk, np.zeros((bs - real,) + chunk.shape[1:], np.float32)])
    prefix = prefix_fn(trainable, jnp.asarray(chunk))
    tokens = jnp.asarray(np.tile(prompt, (bs, 1)))
    sub = None
    if method == "nucleus":  # Only sampling draws: greedy and beam leave the key alone.
      rng, sub = jax.random.split(rng)
    ids = _decode_batch(config, gen, params, prefix, tokens, sub)
    for row in np.asarray(ids)[:real]:
      out.append(gen.tokenizer.decode(row).strip())
  return out


def evaluate(config, gen: projector_lib.Generator, trainable, test: dict,
             progress: bool = True) -> tuple[dict, list[str]]:
  """(metrics dict, generated reports) on precomputed test features."""
  from merit_jax.metrics import generation  # pylint: disable=g-import-not-at-top
  generated = generate_reports(config, gen, trainable, test["features"], progress)
  # An empty generation (EOS first) is scored as the empty string, i.e. as a miss.
  metrics = generation.report_generation_metrics(
      generated, test["reports"], labels=test["codes"], with_meteor=bool(config.eval.meteor))
  metrics["num_records"] = len(generated)
  metrics["empty_generations"] = sum(1 for g in generated if not g)
  return metrics, generated
