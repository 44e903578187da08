"""Tests for merit_jax/models/llm/conditioning.py: projectors, prefix gradients, LoRA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from merit_jax.models.llm import conditioning
from merit_jax.models.llm import gemma3


@pytest.fixture(scope="module")
def tiny_llm():
  model = gemma3.Gemma3(gemma3.tiny_config())
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
  return model, params


@pytest.mark.parametrize("kind,shape", [("mlp", (3, 12)), ("resampler", (3, 10, 12))])
def test_projector_shapes_and_output_scale(kind, shape):
  proj = conditioning.build_projector(kind, 4, 32, target_rms=5.0, hidden=16, width=16,
                                      depth=1, num_heads=2)
  x = jax.random.normal(jax.random.PRNGKey(1), shape)
  params = proj.init(jax.random.PRNGKey(2), x)
  out = proj.apply(params, x)
  assert out.shape == (3, 4, 32)
  # Soft tokens start at the LLM's token-embedding magnitude, whatever the feature scale.
  np.testing.assert_allclose(np.sqrt(np.mean(np.asarray(out) ** 2, axis=-1)), 5.0, rtol=1e-3)
  out_big = proj.apply(params, 1000.0 * x)
  assert np.all(np.isfinite(np.asarray(out_big)))
  # All-zero features (the no-ECG arm) still give non-zero soft tokens at the target rms.
  out_zero = np.asarray(proj.apply(params, jnp.zeros(shape)))
  np.testing.assert_allclose(np.sqrt(np.mean(out_zero ** 2, axis=-1)), 5.0, rtol=1e-2)


def test_projector_rejects_wrong_feature_rank():
  proj = conditioning.build_projector("mlp", 2, 8)
  with pytest.raises(ValueError, match="pooled features"):
    proj.init(jax.random.PRNGKey(0), jnp.zeros((2, 5, 4)))
  with pytest.raises(ValueError, match="projector kind"):
    conditioning.build_projector("linear", 2, 8)
  with pytest.raises(ValueError, match="num_prefix_tokens"):
    conditioning.build_projector("mlp", 0, 8)
  assert conditioning.feature_kind("resampler") == "tokens"
  assert conditioning.feature_kind("mlp") == "pooled"


def test_prefix_reaches_llm_and_gradients_flow(tiny_llm):
  model, llm_params = tiny_llm
  proj = conditioning.build_projector("mlp", 3, model.config.d_model, hidden=16)
  feats = jax.random.normal(jax.random.PRNGKey(3), (2, 6))
  p_params = proj.init(jax.random.PRNGKey(4), feats)["params"]
  tokens = jnp.array([[2, 10, 11, 12], [2, 13, 14, 15]])

  def loss(p_params, llm_params, feats):
    prefix = proj.apply({"params": p_params}, feats)
    logits, _ = model.apply(llm_params, tokens, prefix_embeddings=prefix)
    return jnp.mean(jax.nn.log_softmax(logits)[:, -1, 5])

  g_proj, g_llm = jax.grad(loss, argnums=(0, 1))(p_params, llm_params, feats)
  norms = [float(jnp.linalg.norm(x)) for x in jax.tree_util.tree_leaves(g_proj)]
  assert all(n > 0 for n in norms), norms
  # Different ECG features → different next-token distribution: the prefix is not ignored.
  assert abs(float(loss(p_params, llm_params, feats))
             - float(loss(p_params, llm_params, -feats))) > 1e-6
  assert any(float(jnp.abs(x).max()) > 0 for x in jax.tree_util.tree_leaves(g_llm))


def test_lora_starts_equal_and_trains_only_adapters(tiny_llm):
  model, llm_params = tiny_llm
  lora = conditioning.init_lora(llm_params, 2, jax.random.PRNGKey(5))
  assert set(lora) == {"layer_0", "layer_1"}
  assert set(lora["layer_0"]) == set(conditioning.LORA_TARGETS)
  for factors in lora["layer_0"].values():
    assert not np.any(np.asarray(factors["b"]))  # B = 0 at init.
    assert np.any(np.asarray(factors["a"]))
  tokens = jnp.array([[2, 10, 11, 12, 13]])
  base, _ = model.apply(llm_params, tokens)
  merged = conditioning.apply_lora(llm_params, lora, alpha=16.0)
  same, _ = model.apply(merged, tokens)
  np.testing.assert_array_equal(np.asarray(base), np.asarray(same))

  def loss(lora):
    logits, _ = model.apply(conditioning.apply_lora(llm_params, lora, 16.0), tokens)
    return jnp.mean(jax.nn.log_softmax(logits)[:, :, 7])

  grads = jax.grad(loss)(lora)
  assert float(jnp.linalg.norm(grads["layer_1"]["q_proj"]["b"])) > 0
  # The frozen tree is untouched by merging (a new tree is returned).
  bumped = jax.tree_util.tree_map(lambda x: x + 0.1, lora)
  changed = conditioning.apply_lora(llm_params, bumped, 16.0)
  assert not np.allclose(np.asarray(changed["params"]["layer_0"]["attn"]["q_proj"]["kernel"]),
                         np.asarray(llm_params["params"]["layer_0"]["attn"]["q_proj"]["kernel"]))
  assert conditioning.apply_lora(llm_params, {}, 16.0) is llm_params
  assert conditioning.init_lora(llm_params, 0, jax.random.PRNGKey(0)) == {}
  with pytest.raises(ValueError, match="lora_rank"):
    conditioning.init_lora(llm_params, -1, jax.random.PRNGKey(0))
