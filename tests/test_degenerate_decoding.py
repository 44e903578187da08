"""Decoding rules on a tiny Gemma forced to loop, and the degeneracy counts of generated text.

`Forced` wraps the tiny random Gemma 3 so that its logits always favour a fixed next token
(after token a comes cycle[(i + 1) % len] when a = cycle[i], else cycle[0]): greedy and beam
search then loop for ever unless the rules of `models/llm/decode.py` stop them.
"""

import dataclasses
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from merit_jax.metrics import degeneracy
from merit_jax.models.llm import decode
from merit_jax.models.llm import gemma3
from merit_jax.report_gen import decoding
from merit_jax.report_gen import projector as projector_lib

EOS = 1
PAD = 0
VOCAB = 64
MAX_NEW = 16
PROMPTS = jnp.asarray([[2, 17, 33, 9, 41], [2, 5, 60, 12, 7]])


@dataclasses.dataclass(frozen=True)
class Forced:
  """The tiny Gemma with `bias` added to the logit of each position's forced next token."""
  model: gemma3.Gemma3
  cycle: tuple[int, ...]
  bias: float = 100.0  # The tiny model soft-caps its logits at 30: the forced token wins.

  @property
  def config(self):
    return self.model.config

  def apply(self, params, tokens, **kwargs):
    logits, cache = self.model.apply(params, tokens, **kwargs)
    nxt = np.full(logits.shape[-1], self.cycle[0], np.int32)
    for a, b in zip(self.cycle, self.cycle[1:] + self.cycle[:1]):
      nxt[a] = b
    bonus = jax.nn.one_hot(jnp.asarray(nxt)[tokens], logits.shape[-1]) * self.bias
    k = logits.shape[1] - tokens.shape[1]  # Soft-prefix positions get no bonus.
    return logits + jnp.pad(bonus, ((0, 0), (k, 0), (0, 0))), cache


@pytest.fixture(scope="module")
def tiny():
  model = gemma3.Gemma3(gemma3.tiny_config(vocab_size=VOCAB))
  return model, model.init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32))


def _run(method, model, params, tokens=PROMPTS, **kwargs):
  kwargs = dict(dict(max_new_tokens=MAX_NEW, eos_id=EOS, pad_id=PAD), **kwargs)
  if method == "greedy":
    return np.asarray(decode.greedy_decode(model, params, tokens, **kwargs))
  if method == "beam":
    return np.asarray(decode.beam_search(model, params, tokens, beam_width=3, **kwargs)[0])
  return np.asarray(decode.sample_decode(model, params, tokens, jax.random.PRNGKey(4),
                                         temperature=1.0, top_p=0.9, **kwargs))


def _until_end(row, end_ids):
  row = list(map(int, row))
  for i, t in enumerate(row):
    if t in end_ids:
      return row[:i + 1]
  return row


def _ngrams(ids, n):
  return [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]


# ----------------------------------------------------------------------- loops and n-grams

@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_forced_model_loops_without_rules(tiny, method):
  model, params = tiny
  out = _run(method, Forced(model, (10, 11, 12)), params)
  assert out.tolist() == [([10, 11, 12] * 6)[:MAX_NEW]] * 2
  out = _run(method, Forced(model, (10,)), params)
  assert (out == 10).all()


# Each (method, n) compiles a decoder: a spread of them, not the full product.
@pytest.mark.parametrize("method,n", [("greedy", 1), ("greedy", 4), ("beam", 2), ("beam", 4),
                                      ("nucleus", 4)])
def test_no_repeat_ngram_blocks_every_repeat(tiny, method, n):
  model, params = tiny
  for cycle in ((10,), (10, 11, 12)):
    out = _run(method, Forced(model, cycle), params, no_repeat_ngram=n)
    for row in out:
      ids = _until_end(row, (EOS,))
      grams = _ngrams(ids, n)
      assert len(grams) == len(set(grams)), (cycle, ids)
      assert len(ids) == MAX_NEW or ids[-1] == EOS  # Blocked, not stopped early.
      # The loop's first n-gram is still written: only its repeat is blocked.
      assert ids[:min(n, len(cycle))] == list(cycle[:min(n, len(cycle))])


# ------------------------------------------------------------------ min length and stop ids

@pytest.mark.parametrize("method", ["greedy", "beam", "nucleus"])
def test_min_new_tokens_masks_eos_and_stop_ids(tiny, method):
  model, params = tiny
  stop = 20
  out = _run(method, Forced(model, (EOS,)), params)  # An empty report: eos first.
  assert (out[:, 0] == EOS).all() and (out[:, 1:] == PAD).all()
  out = _run(method, Forced(model, (EOS,)), params, min_new_tokens=5, stop_ids=(stop,))
  assert not np.isin(out[:, :5], [EOS, stop]).any()
  assert (out[:, 5] == EOS).all() and (out[:, 6:] == PAD).all()
  # A stop id the model favours is held back just the same, then ends the sequence.
  out = _run(method, Forced(model, (stop,)), params, min_new_tokens=3, stop_ids=(stop,))
  assert not np.isin(out[:, :3], [EOS, stop]).any()
  assert (out[:, 3] == stop).all() and (out[:, 4:] == PAD).all()


@pytest.mark.parametrize("method", ["greedy", "beam", "nucleus"])
def test_stops_at_any_stop_id(tiny, method):
  model, params = tiny
  for stop_ids, want in (((30, 31), [10, 11, 30]), ((31,), [10, 11, 30, 12, 31])):
    out = _run(method, Forced(model, (10, 11, 30, 12, 31)), params, stop_ids=stop_ids)
    assert out.tolist() == [want + [PAD] * (MAX_NEW - len(want))] * 2
  # Eos still ends a sequence when stop ids are given.
  out = _run(method, Forced(model, (10, EOS)), params, stop_ids=(30,))
  assert out.tolist() == [[10, EOS] + [PAD] * (MAX_NEW - 2)] * 2


@pytest.mark.parametrize("method", ["greedy", "beam", "nucleus"])
def test_banned_ids_never_appear(tiny, method):
  model, params = tiny
  banned = np.asarray([11] + list(range(40, 64)), np.int32)
  free = _run(method, Forced(model, (10, 11, 12)), params)
  assert np.isin(free, banned).any()
  out = _run(method, Forced(model, (10, 11, 12)), params, banned_ids=banned)
  assert not np.isin(out, banned).any()
  if method == "nucleus":
    return
  # Every rule at once, on the unforced random model too.
  for m in (model, Forced(model, (10, 11, 12))):
    out = _run(method, m, params, banned_ids=banned, no_repeat_ngram=3, min_new_tokens=4,
               repetition_penalty=1.5, stop_ids=(20,))
    assert not np.isin(out, banned).any()
    assert not np.isin(out[:, :4], [EOS, 20]).any()
    for row in out:
      grams = _ngrams(_until_end(row, (EOS, 20)), 3)
      assert len(grams) == len(set(grams))


# ---------------------------------------------------------------------- repetition penalty

def test_repetition_penalty_formula():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (3, VOCAB)).astype(np.float32)
  generated = rng.integers(0, VOCAB, (3, 8)).astype(np.int32)
  step, p = 5, 1.7
  got = np.asarray(decode.process_logits(jnp.asarray(logits), jnp.asarray(generated),
                                         jnp.asarray(step), repetition_penalty=p))
  want = logits.copy()
  for r in range(3):
    for tok in set(generated[r, :step].tolist()):  # Columns >= step are not generated yet.
      want[r, tok] = logits[r, tok] / p if logits[r, tok] > 0 else logits[r, tok] * p
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert (got != logits).any() and (got <= np.maximum(logits, logits / p)).all()
  # All rules off: the logits pass through untouched.
  same = decode.process_logits(jnp.asarray(logits), jnp.asarray(generated), jnp.asarray(step))
  np.testing.assert_array_equal(np.asarray(same), logits)


def test_repetition_penalty_one_step_in_the_loop(tiny):
  """Step 2 of greedy decoding = argmax of the model's logits with token 1 penalised (numpy)."""
  model, params = tiny
  prompt = PROMPTS[:1]
  first = int(decode.greedy_decode(model, params, prompt, max_new_tokens=1, eos_id=-1)[0, 0])
  logits, _ = model.apply(params, jnp.concatenate([prompt, jnp.asarray([[first]])], axis=1))
  step2 = np.asarray(logits[0, -1], np.float64)
  for p in (1.0, 1.3, 3.0, 100.0):
    want = step2.copy()
    want[first] = want[first] / p if want[first] > 0 else want[first] * p
    got = decode.greedy_decode(model, params, prompt, max_new_tokens=2, eos_id=-1,
                               repetition_penalty=p)
    assert int(got[0, 0]) == first and int(got[0, 1]) == int(np.argmax(want)), p
  # A one-token loop breaks once the penalty brings its logit below the runner-up's.
  loop = Forced(model, (10,), bias=25.0)
  assert (_run("greedy", loop, params) == 10).all()
  out = _run("greedy", loop, params, repetition_penalty=1e4)
  assert (out[:, 0] == 10).all() and not (out[:, 1:] == 10).any()


def test_rule_arguments_are_checked(tiny):
  model, params = tiny
  for kwargs, match in ((dict(repetition_penalty=0.0), "repetition_penalty"),
                        (dict(no_repeat_ngram=-1), "no_repeat_ngram"),
                        (dict(min_new_tokens=MAX_NEW + 1), "min_new_tokens")):
    with pytest.raises(ValueError, match=match):
      _run("greedy", model, params, **kwargs)


# ----------------------------------------------------------------------- degeneracy counts

def test_degeneracy_counts_on_hand_written_reports():
  texts = [
      "sinus rhythm, normal ecg",  # 0: fine
      "",  # 1: empty
      "   \n\t ",  # 2: empty
      "<strong>v</strong> <strong>v</strong>",  # 3: markup
      "qrs &lt; 120 ms",  # 4: markup (an entity)
      "sinus rhythm <br",  # 5: markup (a tag cut off)
      "qrs < 120 ms and qt > 400 ms",  # 6: fine: comparisons, not tags
      "left axis deviation left axis deviation left axis deviation",  # 7: fine: 3-gram only
      "st depression in v5 v6 st depression in v5 v6",  # 8: fine: a 4-gram twice
      "st depression in v5 st depression in v5 st depression in v5",  # 9: 4-gram 3 times
      "a b c d a b c d a b c d <i>x</i>",  # 10: markup and repeated
      "v v v v v v",  # 11: 'v v v v' at 3 overlapping places
      "AT&amp;T &#60;p&#x3e;",  # 12: markup (named, decimal, hex entities)
      "R&D staff",  # 13: fine: '&' without an entity
  ]
  flags = [degeneracy.degeneracy_flags(t) for t in texts]
  broken = {rule: [i for i, f in enumerate(flags) if f[rule]] for rule in degeneracy.RULES}
  assert broken == {"empty": [1, 2], "markup": [3, 4, 5, 10, 12],
                    "repeated_ngram": [9, 10, 11]}
  assert degeneracy.offenders(texts) == broken
  assert degeneracy.degeneracy_counts(texts) == {"empty": 2, "markup": 5, "repeated_ngram": 3,
                                                 "total": 14}
  assert degeneracy.degeneracy_counts([]) == {"empty": 0, "markup": 0, "repeated_ngram": 0,
                                              "total": 0}
  assert degeneracy.repeated_ngrams(texts[9]) == [("st depression in v5", 3)]
  # n = 5 is implied by n = 4 (its 4-grams repeat too); n = 3 is stricter.
  assert not degeneracy.degeneracy_flags(texts[7], n=4)["repeated_ngram"]
  assert degeneracy.degeneracy_flags(texts[7], n=3)["repeated_ngram"]


# ----------------------------------------------------------------- report_gen/decoding.py

def _generate_config():
  """configs/generate.py by its path, as `--config=` loads it."""
  path = pathlib.Path(__file__).resolve().parents[1] / "configs" / "generate.py"
  spec = importlib.util.spec_from_file_location("generate_config_degenerate", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class _PieceTokenizer:
  """A GGUF-style vocabulary in miniature (ids are list positions)."""
  eos_id, pad_id = 1, 0
  pieces = ["<pad>", "<eos>", "<bos>", "\u2581sinus", "<end_of_turn>", "<0x3C>", "<0xC3>",
            "\u2581&lt", "a>b", "\u2581rhythm", "&", "<0x3E>"]
  vocab_size = len(pieces)

  def id_to_piece(self, i):
    return self.pieces[i]


def test_decode_rules_from_config():
  configs = _generate_config()
  byte_tokenizer = projector_lib.ByteTokenizer()
  rules = decoding.decode_rules(configs.get_config("test"), byte_tokenizer)
  assert rules == dict(stop_ids=(), repetition_penalty=1.0, no_repeat_ngram=0,
                       min_new_tokens=0, banned_ids=None)  # The defaults: every rule off.
  rules = decoding.decode_rules(configs.get_config("compare"), byte_tokenizer)
  assert (rules["repetition_penalty"], rules["no_repeat_ngram"], rules["min_new_tokens"]) == (
      1.2, 4, 4)
  # Byte tokens b + 3: '<' (60) and '>' (62) are the byte tokenizer's only markup.
  assert np.asarray(rules["banned_ids"]).tolist() == [63, 65]
  tok = _PieceTokenizer()
  assert decoding.end_of_turn_id(tok) == 4
  assert decoding.end_of_turn_id(byte_tokenizer) is None
  # Control pieces, '<'/'>' bytes and pieces, an entity start; not the end ids, not a lone
  # UTF-8 lead byte (0xC3 starts 'ü'), not a bare '&'.
  assert decoding.markup_token_ids(tok, keep=(1, 4)).tolist() == [0, 2, 5, 7, 8, 11]
  config = configs.get_config("compare")
  rules = decoding.decode_rules(config, tok)
  assert rules["stop_ids"] == (4,)
  assert np.asarray(rules["banned_ids"]).tolist() == [0, 2, 5, 7, 8, 11]
  config.decoding.stop_at_end_of_turn = False
  assert decoding.decode_rules(config, tok)["stop_ids"] == ()


def test_generate_reports_on_a_model_forced_to_write_markup():
  configs = _generate_config()
  config = configs.get_config("test")
  gen = projector_lib.build_generator(config)
  tag = tuple(gen.tokenizer.encode("<b>", add_bos=False))
  gen = dataclasses.replace(gen, llm=Forced(gen.llm, tag))
  trainable = projector_lib.init_trainable(gen, (16,), 0, 0)
  features = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
  loops = decoding.generate_reports(config, gen, trainable, features, progress=False)
  assert loops == [("<b>" * config.max_report_tokens)[:config.max_report_tokens]] * 3
  assert degeneracy.degeneracy_counts(loops)["markup"] == 3
  config.decoding.update(ban_markup=True, no_repeat_ngram=4, min_new_tokens=4,
                         repetition_penalty=1.2)
  reports = decoding.generate_reports(config, gen, trainable, features, progress=False)
  assert len(reports) == 3
  assert not any("<" in r or ">" in r for r in reports), reports
  assert degeneracy.degeneracy_counts(reports)["markup"] == 0
  # evaluate() reports how many outputs broke each rule.
  test = {"features": features, "reports": ["sinus rhythm"] * 3, "codes": [["NORM"]] * 3}
  metrics, generated = decoding.evaluate(config, gen, trainable, test, progress=False)
  assert generated == reports
  counts = degeneracy.degeneracy_counts(reports)
  assert {rule: metrics[f"degenerate_{rule}"] for rule in degeneracy.RULES} == {
      rule: counts[rule] for rule in degeneracy.RULES}


def test_config_validation_names_bad_decoding_rules():
  from merit_jax import config_validation  # pylint: disable=g-import-not-at-top
  config = _generate_config().get_config("test")
  config.decoding.update(repetition_penalty=0.0, no_repeat_ngram=-1, min_new_tokens=99)
  with pytest.raises(config_validation.ConfigError) as e:
    config_validation.validate_generate_config(config)
  message = str(e.value)
  assert "config.decoding.repetition_penalty=0.0 must be a number > 0" in message
  assert "config.decoding.no_repeat_ngram=-1 must be an integer >= 0" in message
  assert "config.decoding.min_new_tokens=99 must be an integer in [0, max_report_tokens=24]" \
      in message
