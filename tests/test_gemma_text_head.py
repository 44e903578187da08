"""Gemma 3 text tower with tuned last blocks: cached trunk + head = the model's own forward.

The head's pooled output over the cached trunk states is checked against a direct forward of
`llm.gemma3.Gemma3` to the same layer on the same tokens, pooled here with numpy; the train
state against the packaged weights it starts from; the train step by which params it changes,
replicated and under FSDP; the text encoder's learning-rate scale on the optimizer's update.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from merit_jax import config_validation
from merit_jax import optim
from merit_jax import parallel
from merit_jax import step as step_lib
from merit_jax.data import text_cache
from merit_jax.models import gemma_text_head
from merit_jax.models import text_tower
from merit_jax.models.llm import gemma3
from tests.test_models import tiny_config

pytest.importorskip("gguf", reason="the gguf package reads the GGUF weights")

TOWER = dict(kind="gemma3", hf_dir=None, frozen=True, layer=3, tune_blocks=2, pooling="mean",
             max_len=12)
TEXTS = ["Sinusrhythmus. Normales EKG.", "atrial fibrillation with rapid response",
         "sinus rhythm", "Vorhofflimmern, Linkstyp, T-Abflachung in V5/V6."]


@pytest.fixture(scope="module")
def gemma():
  from merit_jax.models.llm import gguf_loader  # pylint: disable=g-import-not-at-top
  try:
    path = gguf_loader.default_gguf_path()
  except ImportError as e:
    pytest.skip(f"Gemma 3 GGUF weights not installed: {e}")
  model, params, _ = gemma3.load_pretrained(path)
  tower = text_tower.FrozenTextTower.from_config(ml_collections.ConfigDict(TOWER), batch_size=4)
  return model, params, tower


@pytest.fixture(autouse=True)
def _weights_read_once(request, monkeypatch):
  """Every train state of this module starts from the fixture's weights (GGUF read once)."""
  if "gemma" in request.fixturenames:
    model, params, _ = request.getfixturevalue("gemma")
    monkeypatch.setattr(gemma3, "load_pretrained", lambda *a, **k: (model, params, None))


def _reference_pooled(gemma, texts, layer, pooling):
  model, params, tower = gemma
  ids, valid = tower.tokenizer.encode_batch(texts, TOWER["max_len"], left_pad=False)
  states = np.asarray(model.apply(params, jnp.asarray(ids), jnp.asarray(valid),
                                  num_layers=layer, method=gemma3.Gemma3.hidden_states))
  valid = np.asarray(valid, bool)
  if pooling == "mean":
    return (states * valid[..., None]).sum(1) / valid.sum(1, keepdims=True)
  return states[np.arange(len(texts)), valid.sum(1) - 1]  # The last real token.


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_head_over_cached_trunk_equals_the_full_forward(gemma, pooling):
  _, _, tower = gemma
  text_cfg = ml_collections.ConfigDict(dict(TOWER, pooling=pooling))
  packed = tower.embed(TEXTS)
  assert packed.shape == (len(TEXTS), TOWER["max_len"], tower.dim + 1)
  assert "trunk1" in tower.cache_key and pooling not in tower.cache_key
  head = gemma_text_head.build_head(text_cfg)
  assert (head.first_layer, head.num_blocks) == (1, 2)
  pooled = head.apply({"params": gemma_text_head.pretrained_params(text_cfg)},
                      jnp.asarray(packed))["pooled"]
  reference = _reference_pooled(gemma, TEXTS, TOWER["layer"], pooling)
  # Gemma's residual stream is large (|x| ~ 1e3); float32 sums in another order differ ~1e-7.
  np.testing.assert_allclose(np.asarray(pooled), reference, rtol=0,
                             atol=1e-6 * np.abs(reference).max())


def test_trunk_of_zero_blocks_is_the_scaled_embedding(gemma):
  model, params, _ = gemma
  text_cfg = ml_collections.ConfigDict(dict(TOWER, layer=1, tune_blocks=1))
  tower = text_tower.FrozenTextTower.from_config(text_cfg, batch_size=4)
  packed = tower.embed(TEXTS[:2])
  ids, valid = tower.tokenizer.encode_batch(TEXTS[:2], TOWER["max_len"], left_pad=False)
  embedded = (np.asarray(params["params"]["embedding"])[np.asarray(ids)]
              * np.sqrt(model.config.d_model))
  states, mask = gemma_text_head.unpack(jnp.asarray(packed))
  np.testing.assert_array_equal(np.asarray(mask), np.asarray(valid, bool))
  np.testing.assert_allclose(np.asarray(states), embedded, rtol=1e-6)


def test_report_cache_holds_packed_trunk_states(gemma):
  _, _, tower = gemma
  cache = text_cache.ReportEmbeddings(TEXTS, tower.embed(TEXTS))
  assert cache.row_shape == tower.row_shape
  assert not cache.lookup("").any() and cache.lookup("").shape == tower.row_shape
  tower._memo.clear()  # pylint: disable=protected-access  # A fresh forward, not a recall.
  np.testing.assert_allclose(cache.encode_batch(TEXTS[::-1]), tower.embed(TEXTS[::-1]),
                             atol=1e-3)
  with pytest.raises(ValueError, match="shape"):
    cache.merged(text_cache.ReportEmbeddings(["x"], np.zeros((1, 640), np.float32)))


def _tuned_config(**optim_overrides):
  config = tiny_config()
  config.model.text.update(TOWER)
  config.model.text.vocab_size = None
  config.data.max_text_len = TOWER["max_len"]
  config.optim.update(optim_overrides)
  return config


def _train_once(config, batch, data: int, fsdp: int):
  """(params before, params after, state after) of one train step on a data x fsdp mesh."""
  config.mesh.update(data=data, fsdp=fsdp)
  mesh = parallel.make_mesh(config.mesh)
  state, shardings = step_lib.create_train_state(config, mesh, jax.random.key(0))
  start = jax.tree.map(np.asarray, state.params)
  state, metrics = step_lib.make_train_step(config, mesh, shardings)(
      state, batch, jax.random.key(2))
  assert int(metrics["skipped"]) == 0
  return start, jax.tree.map(np.asarray, state.params), state


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def test_train_step_tunes_the_pretrained_blocks_replicated_or_fsdp(gemma):
  # One step on 8 devices, params replicated (data=8) and split over fsdp=8.
  _, params, tower = gemma
  rng = np.random.default_rng(0)
  text = tower.embed(TEXTS * 2)
  text[3] = 0.0  # An ECG-only row: its zero input must not poison the gradients.
  batch = {"ecg": rng.normal(size=(8, 12, 500)).astype(np.float32), "text_emb": text,
           "has_report": (np.arange(8) != 3).astype(np.float32)}
  start, after, _ = _train_once(_tuned_config(), batch, data=8, fsdp=1)
  for name in ("layer_1", "layer_2"):  # The head starts from the packaged weights ...
    for got, want in zip(jax.tree.leaves(start["text_encoder"][name]),
                         jax.tree.leaves(params["params"][name])):
      np.testing.assert_array_equal(got, np.asarray(want))
  assert "layer_0" not in start["text_encoder"] and "layer_3" not in start["text_encoder"]
  q = ("text_encoder", "layer_2", "attn", "q_proj", "kernel")
  assert np.all(np.isfinite(_get(after, q)))  # ... and the step moves them.
  assert np.abs(_get(after, q) - _get(start, q)).max() > 0

  _, sharded, state = _train_once(_tuned_config(), batch, data=1, fsdp=8)
  down = ("text_encoder", "layer_2", "mlp", "down", "kernel")
  assert _get(state.params, down).addressable_shards[0].data.shape == (2048 // 8, 640)
  # Adam's first update is lr * g / (|g| + eps): where |g| is near eps, the order of the
  # cross-device sums moves it by a fraction of lr (1e-3); everywhere else it agrees to 1e-6.
  diff = np.abs(_get(sharded, down) - _get(after, down))
  assert diff.max() < 1e-4 and np.mean(diff > 1e-6) < 1e-3, (diff.max(), np.mean(diff > 1e-6))


def test_config_checks_name_the_key():
  config = _tuned_config()
  config.model.text.kind = "hf_bert"
  with pytest.raises(config_validation.ConfigError, match="tune_blocks"):
    config_validation.validate_config(config, num_devices=1, check_paths=False)
  config = _tuned_config()
  config.model.text.tune_blocks = 5
  with pytest.raises(config_validation.ConfigError, match="exceeds model.text.layer"):
    config_validation.validate_config(config, num_devices=1, check_paths=False)
  config = _tuned_config(text_lr_scale=0.0)
  with pytest.raises(config_validation.ConfigError, match="text_lr_scale"):
    config_validation.validate_config(config, num_devices=1, check_paths=False)


def test_text_lr_scale_touches_only_the_text_encoder():
  params = {"text_encoder": {"w": jnp.ones((2, 2))}, "ecg_projection": {"w": jnp.ones((2, 2))}}
  grads = jax.tree.map(lambda p: 0.5 * p, params)
  cfg = dict(lr=1e-2, warmup_steps=0, weight_decay=0.0, b1=0.9, b2=0.95, grad_clip=None,
             min_lr_ratio=1.0)
  plain = optim.make_optimizer(dict(cfg, text_lr_scale=1.0), 10)
  scaled = optim.make_optimizer(dict(cfg, text_lr_scale=0.25), 10)
  up_plain, _ = plain.update(grads, plain.init(params), params)
  up_scaled, _ = scaled.update(grads, scaled.init(params), params)
  np.testing.assert_allclose(up_scaled["text_encoder"]["w"], 0.25 * up_plain["text_encoder"]["w"])
  np.testing.assert_array_equal(up_scaled["ecg_projection"]["w"], up_plain["ecg_projection"]["w"])
  assert isinstance(plain, optax.GradientTransformation)
