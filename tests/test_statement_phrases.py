"""Tests for hinted statements written into the report (merit_jax/report_gen/statement_phrases.py,
`config.decoding.write_hints`): the phrase table against hand-counted reports, its file, and
decoding that continues a written start exactly as a direct decode of that start would.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from merit_jax import config_validation
from merit_jax.metrics import clinical
from merit_jax.models.llm import decode
from merit_jax.report_gen import GenerateError
from merit_jax.report_gen import data as data_lib
from merit_jax.report_gen import decoding
from merit_jax.report_gen import statement_phrases
from tests.test_generate import generate_config
from tests.test_generate import tiny_generator

REPORTS = [
    "sinusrhythmus normales ekg",
    "sinusrhythmus linkstyp normales ekg",
    "sinus rhythm. normal ecg.",
    "vorhofflimmern   linkshypertrophie",
    "sinus rhythm",  # Not labelled SR: it does not vote for SR's phrase.
    "sinus rhythm",
]
CODES = [["SR", "NORM"], ["SR", "NORM"], ["SR", "NORM"], ["AFIB", "LVH"], [], []]


def test_fit_picks_the_phrase_most_labelled_reports_use():
  table = statement_phrases.fit(REPORTS, CODES)
  # By hand: SR is "sinusrhythmus" in two labelled reports, "sinus rhythm" in one (the two
  # unlabelled ones do not count); NORM "normales ekg" in two, "normal ecg" in one.
  assert table["phrases"] == {"SR": "sinusrhythmus", "NORM": "normales ekg",
                              "AFIB": "vorhofflimmern", "LVH": "linkshypertrophie"}
  matcher = clinical.ScpMatcher()
  for code, phrase in table["phrases"].items():  # Each phrase names its statement alone.
    assert matcher(phrase) == {code}
  # Report order: sinus rhythm first (position 0), "normales ekg" later in its reports.
  assert table["position"]["SR"] == 0.0
  assert table["position"]["NORM"] > table["position"]["SR"]
  assert statement_phrases.render(table, ["NORM", "SR"]) == "sinusrhythmus normales ekg"
  assert statement_phrases.render(table, ["LVH", "AFIB"]) == "vorhofflimmern linkshypertrophie"
  assert statement_phrases.render(table, ["IMI"]) == ""  # No phrase: nothing written.
  assert statement_phrases.render(table, []) == ""
  with pytest.raises(GenerateError, match="6 reports but 2 label sets"):
    statement_phrases.fit(REPORTS, CODES[:2])
  with pytest.raises(GenerateError, match="'SR NORM' must be a list of SCP codes"):
    statement_phrases.fit(REPORTS[:1], ["SR NORM"])


def test_fit_breaks_ties_by_length_then_text():
  table = statement_phrases.fit(["sinus rhythm", "sinusrhythmus"], [["SR"], ["SR"]])
  # One report each: the shorter wins (12 characters against 13).
  assert table["phrases"]["SR"] == "sinus rhythm"
  table = statement_phrases.fit(["sinus rytm", "sinus rhythm", "sinusrytm"], [["SR"]] * 3)
  assert table["phrases"]["SR"] == "sinusrytm"
  table = statement_phrases.fit(["lvh", "rvh"], [["LVH", "RVH"], ["LVH", "RVH"]])
  assert table["phrases"] == {"LVH": "lvh", "RVH": "rvh"}


def test_table_saves_and_loads(tmp_path):
  table = statement_phrases.fit(REPORTS, CODES)
  assert statement_phrases.load(str(tmp_path)) is None  # A run that saved none.
  statement_phrases.save(str(tmp_path), table)
  assert statement_phrases.load(str(tmp_path)) == table
  assert [p.name for p in tmp_path.iterdir()] == [statement_phrases.PHRASES_FILE]
  (tmp_path / statement_phrases.PHRASES_FILE).write_text("{not json", encoding="utf-8")
  with pytest.raises(GenerateError, match="statement_phrases.json: cannot read"):
    statement_phrases.load(str(tmp_path))
  (tmp_path / statement_phrases.PHRASES_FILE).write_text(json.dumps({"phrases": {}}),
                                                         encoding="utf-8")
  with pytest.raises(GenerateError, match="not a statement phrase table"):
    statement_phrases.load(str(tmp_path))


def test_config_checks():
  cfg = generate_config.get_config("test")
  cfg.decoding.write_hints = True
  with pytest.raises(ValueError, match="needs config.statement_hints.enabled=True"):
    config_validation.validate_generate_config(cfg)
  cfg.statement_hints.enabled = True
  config_validation.validate_generate_config(cfg)
  cfg.decoding.tokens_after_hints = -1
  with pytest.raises(ValueError, match="tokens_after_hints=-1 must be an integer >= 0"):
    config_validation.validate_generate_config(cfg)


@pytest.fixture(scope="module")
def tiny():
  return tiny_generator()


def _direct_greedy(cfg, gen, trainable, features, prompt, limit, min_new_tokens):
  """The new token ids of one row decoded alone, straight through `decode.greedy_decode`."""
  rules = dict(decoding.decode_rules(cfg, gen.tokenizer), min_new_tokens=min_new_tokens)
  ids = decode.greedy_decode(
      gen.llm, gen.llm_params_with(trainable), jnp.asarray([prompt], jnp.int32),
      max_new_tokens=limit, eos_id=gen.tokenizer.eos_id, pad_id=gen.tokenizer.pad_id,
      prefix_embeddings=gen.prefix(trainable, jnp.asarray(features[None], jnp.float32)),
      **rules)
  row = np.asarray(ids)[0].tolist()
  end = next((i for i, t in enumerate(row) if t == gen.tokenizer.eos_id), len(row))
  return row[:end]


def test_written_starts_are_continued_as_a_direct_decode_would(tiny):
  _, gen, trainable = tiny
  tok = gen.tokenizer
  cfg = generate_config.get_config("test")
  cfg.eval.batch_size = 4
  cfg.decoding.min_new_tokens = 3
  features = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
  written = [tok.encode("sinus", add_bos=False), [], tok.encode("afib x", add_bos=False)]
  plain = decoding.generate_reports(cfg, gen, trainable, features, progress=False)

  cfg.decoding.tokens_after_hints = 0  # The written starts are the reports.
  got = decoding.generate_reports(cfg, gen, trainable, features, progress=False,
                                  written=written)
  assert got == ["sinus", plain[1], "afib x"]  # A row with no start decodes as before.

  cfg.decoding.tokens_after_hints = 5
  got = decoding.generate_reports(cfg, gen, trainable, features, progress=False,
                                  written=written)
  assert got[1] == plain[1]
  for row in (0, 2):
    # A written start already holds text: no minimum length is forced after it.
    new = _direct_greedy(cfg, gen, trainable, features[row], gen.prompt + written[row], 5, 0)
    assert got[row] == tok.decode(written[row] + new).strip()
    assert got[row].startswith(tok.decode(written[row]))
  with pytest.raises(GenerateError, match="2 written report starts for 3 records"):
    decoding.generate_reports(cfg, gen, trainable, features, progress=False,
                              written=written[:2])


def test_left_padded_written_prompts_are_independent_of_batching(tiny):
  _, gen, trainable = tiny
  tok = gen.tokenizer
  cfg = generate_config.get_config("test")
  cfg.decoding.tokens_after_hints = 4
  features = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
  written = [tok.encode(t, add_bos=False) if t else [] for t in ("sr", "", "lbbb and", "a", "")]
  cfg.eval.batch_size = 8
  together = decoding.generate_reports(cfg, gen, trainable, features, progress=False,
                                       written=written)
  cfg.eval.batch_size = 1
  alone = decoding.generate_reports(cfg, gen, trainable, features, progress=False,
                                    written=written)
  assert together == alone
  assert data_lib.per_record_prompts(gen.prompt, 2) == [gen.prompt, gen.prompt]
