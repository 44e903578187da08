"""Shapes, patching, lead subsets and masking of the MERIT models (tiny sizes)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import pretrain
from merit_jax.models import ecg_vit
from merit_jax.models import merit as merit_lib
from merit_jax.models import text

LEADS, SAMPLES, PATCH = 12, 500, 50


def tiny_config(**objective) -> ml_collections.ConfigDict:
  """The smallest MERIT config (width 32, depth 2, patch 50, 500 samples, batch 8).

  configs/pretrain.py's `test` variant (so every key the code reads is there) with 5 s
  inputs, a 64-token vocabulary and 10 steps at lr 1e-3 without warm-up.
  """
  config = pretrain.get_config("test")
  config.total_steps = 10
  config.model.text.vocab_size = 64
  config.optim.update(lr=1e-3, warmup_steps=0)
  config.data.preprocess.num_samples = SAMPLES
  config.objective.update(objective)
  return config


def tiny_batch(batch=8, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, 64, (batch, 16)).astype(np.int32)
  tokens[:, 12:] = 0  # Some padding.
  return {"ecg": rng.normal(size=(batch, LEADS, SAMPLES)).astype(np.float32),
          "tokens": tokens}


@pytest.fixture(scope="module")
def model_and_params():
  model = merit_lib.build_model(tiny_config())
  batch = tiny_batch(2)
  variables = jax.jit(model.init)({"params": jax.random.key(0)}, batch["ecg"],
                                  batch["tokens"], jax.random.key(1))
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  return model, nn.unbox(variables["params"])


def test_patchify_round_trip_and_order():
  x = np.arange(2 * 3 * 100, dtype=np.float32).reshape(2, 3, 100)
  p = ecg_vit.patchify(x, 25)
  assert p.shape == (2, 12, 25)
  np.testing.assert_array_equal(p[0, 5], x[0, 1, 25:50])  # Token 5 = lead 1, slot 1.
  np.testing.assert_array_equal(ecg_vit.unpatchify(p, 3), x)
  lead_ids, time_ids = ecg_vit.token_ids(3, 4)
  assert lead_ids[5] == 1 and time_ids[5] == 1
  with pytest.raises(ValueError, match="does not divide"):
    ecg_vit.patchify(x, 30)


# The published ViT shapes (Dosovitskiy et al. 2021; Ti from DeiT): width, layers, heads of
# 64 dimensions, MLP 4 x width.
PUBLISHED_VIT = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_size_presets_are_the_published_vits(size):
  """model.size alone builds a ViT-Ti/S/B: per-block parameters counted by hand."""
  config = pretrain.get_config()  # full: width/depth/heads/mlp_dim from the size preset
  config.model.size = size
  config.model.text.vocab_size = 64
  model = merit_lib.build_model(config)
  n = config.data.preprocess.num_samples // config.model.patch_size
  ecg = jnp.zeros((1, LEADS, config.data.preprocess.num_samples))
  params = jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0)}, ecg, jnp.ones((1, 8), jnp.int32), jax.random.key(1)))
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  encoder = nn.unbox(params["params"]["encoder"])
  d, layers, heads = PUBLISHED_VIT[size]
  # One pre-LN block: q, v and out projections with biases and k without (4d^2 + 3d), the
  # MLP d -> 4d -> d (8d^2 + 5d), two LayerNorms (4d).
  block = 12 * d * d + 12 * d
  # Patch projection (50 samples -> d, with bias), 12 lead and n time embeddings, final LN.
  embed = 50 * d + d + LEADS * d + n * d + 2 * d
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(encoder))
  assert count == layers * block + embed
  query = encoder["transformer"]["block0"]["attn"]["query"]["kernel"]
  assert query.shape == (d, heads, 64)


def test_forward_shapes(model_and_params):
  model, params = model_and_params
  batch = tiny_batch(4)
  out = jax.jit(model.apply)({"params": params}, batch["ecg"], batch["tokens"],
                             jax.random.key(2))
  n = LEADS * SAMPLES // PATCH
  assert out["pred"].shape == out["target"].shape == (4, n, PATCH)
  assert out["mask"].shape == (4, n)
  assert out["ecg_proj"].shape == out["text_proj"].shape == (4, 16)
  np.testing.assert_allclose(np.linalg.norm(out["ecg_proj"], axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(out["text_proj"], axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.exp(-out["logit_scale"]), 0.07, rtol=1e-5)


def test_masking_keeps_right_count():
  n, keep = 120, merit_lib.num_kept_tokens(120, 0.75)
  assert keep == 30
  ids_keep, ids_restore, mask = merit_lib.random_masking(jax.random.key(0), 5, n, keep)
  mask = np.asarray(mask)
  np.testing.assert_array_equal(mask.sum(1), n - keep)
  for row_keep, row_mask in zip(np.asarray(ids_keep), mask):
    assert len(set(row_keep.tolist())) == keep
    assert not row_mask[row_keep].any()  # Kept tokens are exactly the unmasked ones.
  assert not np.array_equal(mask[0], mask[1])  # Per-sample permutations.
  # ids_restore inverts the shuffle: restored positions of kept tokens are < keep.
  np.testing.assert_array_equal(np.asarray(ids_restore)[0][np.asarray(ids_keep)[0]],
                                np.arange(keep))


def test_time_masking_hides_whole_time_slots():
  leads, slots, keep_slots = 3, 8, 2
  ids_keep, ids_restore, mask = merit_lib.time_masking(jax.random.key(0), 4, leads, slots,
                                                       keep_slots)
  ids_keep, ids_restore, mask = map(np.asarray, (ids_keep, ids_restore, mask))
  assert ids_keep.shape == (4, leads * keep_slots)
  for row_keep, row_restore, row_mask in zip(ids_keep, ids_restore, mask):
    # Token l * slots + t: one (leads, slots) grid of the mask has identical columns.
    grid = row_mask.reshape(leads, slots)
    np.testing.assert_array_equal(grid, np.broadcast_to(grid[0], grid.shape))
    assert (grid[0] == 0).sum() == keep_slots
    kept = np.zeros(leads * slots)
    kept[row_keep] = 1
    np.testing.assert_array_equal(kept, 1 - row_mask)  # Kept tokens are the unmasked ones.
    np.testing.assert_array_equal(row_restore[row_keep], np.arange(leads * keep_slots))
  assert not np.array_equal(mask[0], mask[1])  # Per-sample slot choices.


def test_time_masked_model_hides_whole_slots():
  cfg = tiny_config()
  cfg.model.mask_strategy = "time"
  model = merit_lib.build_model(cfg)
  batch = tiny_batch(2)
  params = model.init(jax.random.key(0), batch["ecg"], batch["tokens"],
                      jax.random.key(1))["params"]
  out = model.apply({"params": params}, batch["ecg"], batch["tokens"], jax.random.key(2))
  grid = np.asarray(out["mask"]).reshape(2, LEADS, SAMPLES // PATCH)
  np.testing.assert_array_equal(grid, np.broadcast_to(grid[:, :1], grid.shape))
  assert grid[:, 0].sum() == 2 * (SAMPLES // PATCH
                                  - merit_lib.num_kept_tokens(SAMPLES // PATCH, 0.75))


def test_lead_subset_is_a_valid_input(model_and_params):
  model, params = model_and_params
  ecg = tiny_batch(2)["ecg"]
  leads = (0, 1, 7)
  from_full = model.apply({"params": params}, ecg, leads=leads,
                          method=merit_lib.MERIT.embed_ecg)
  from_subset = model.apply({"params": params}, ecg[:, list(leads)], leads=leads,
                            method=merit_lib.MERIT.embed_ecg)
  assert from_full["pooled"].shape == (2, 32) and from_full["projected"].shape == (2, 16)
  np.testing.assert_allclose(from_full["pooled"], from_subset["pooled"], atol=1e-6)
  # Other leads do not matter; the lead identity does.
  changed = ecg.copy()
  changed[:, 5] += 3.0
  again = model.apply({"params": params}, changed, leads=leads, method=merit_lib.MERIT.embed_ecg)
  np.testing.assert_allclose(again["pooled"], from_full["pooled"], atol=1e-6)
  other = model.apply({"params": params}, ecg[:, list(leads)], leads=(2, 3, 4),
                      method=merit_lib.MERIT.embed_ecg)
  assert not np.allclose(other["pooled"], from_full["pooled"])
  full = model.apply({"params": params}, ecg, return_tokens=True,
                     method=merit_lib.MERIT.embed_ecg)
  assert full["pooled"].shape == (2, 32) and full["tokens"].shape == (2, 120, 32)
  np.testing.assert_allclose(full["tokens"].mean(1), full["pooled"], atol=1e-5)
  with pytest.raises(ValueError, match="lead indices"):
    model.apply({"params": params}, ecg, leads=(0, 12), method=merit_lib.MERIT.embed_ecg)


def test_text_pooling_ignores_padding(model_and_params):
  model, params = model_and_params
  tokens = tiny_batch(2)["tokens"][:, :12]
  padded = np.pad(tokens, ((0, 0), (0, 4)))
  a = model.apply({"params": params}, tokens, method=merit_lib.MERIT.embed_text)
  b = model.apply({"params": params}, padded, method=merit_lib.MERIT.embed_text)
  np.testing.assert_allclose(a["projected"], b["projected"], atol=1e-5)


def test_param_logical_axes_and_dtype():
  model = text.TextTransformer(vocab_size=20, width=16, depth=1, num_heads=2, max_len=8,
                               dtype=jnp.bfloat16)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.ones((1, 8), jnp.int32))
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  specs = nn.get_partition_spec(variables)["params"]
  assert tuple(specs["token_embedding"]["embedding"]) == ("vocab", "embed")
  assert tuple(specs["transformer"]["block0"]["mlp"]["fc1"]["kernel"]) == ("embed", "mlp")
  params = nn.unbox(variables)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  out = jax.jit(model.apply)(params, jnp.ones((1, 8), jnp.int32))
  assert out["tokens"].dtype == jnp.bfloat16 and out["pooled"].dtype == jnp.float32


def test_build_model_errors():
  config = tiny_config()
  config.model.patch_size = 30
  with pytest.raises(ValueError, match="patch_size=30 must divide"):
    merit_lib.build_model(config)
  config = tiny_config()
  config.model.text.vocab_size = None
  with pytest.raises(ValueError, match="vocab_size"):
    merit_lib.build_model(config)
  config = tiny_config()
  config.model.size = "huge"
  with pytest.raises(ValueError, match="model.size"):
    merit_lib.build_model(config)


def test_remat_and_bfloat16_compute_keep_float32_params_and_gradients():
  kw = dict(width=16, depth=1, num_heads=2, num_leads=LEADS, max_patches=SAMPLES // PATCH)
  ref_model = ecg_vit.ECGEncoder(**kw)
  fast_model = ecg_vit.ECGEncoder(**kw, dtype=jnp.bfloat16, remat=True)
  patches = ecg_vit.patchify(jnp.asarray(tiny_batch(2)["ecg"]), PATCH)
  lead_ids, time_ids = ecg_vit.token_ids(LEADS, SAMPLES // PATCH)
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  params = nn.unbox(jax.jit(ref_model.init)(jax.random.key(0), patches, lead_ids, time_ids))

  def grads(model):
    def loss(p):
      return jnp.mean(model.apply(p, patches, lead_ids, time_ids)["pooled"] ** 2)
    return jax.jit(jax.grad(loss))(params)

  ref, fast = grads(ref_model), grads(fast_model)
  # bfloat16 has ~3 significant digits: compare against the largest gradient entry.
  scale = max(float(np.abs(r).max()) for r in jax.tree.leaves(ref))
  for r, f in zip(jax.tree.leaves(ref), jax.tree.leaves(fast)):
    assert f.dtype == jnp.float32
    np.testing.assert_allclose(f, r, atol=0.03 * scale)


def test_flat_dot_general_equals_the_nd_dot_and_its_gradients():
  """Dense layers compute their N-D contraction as one 2-D matmul: same values and gradients."""
  key_x, key_w, key_o = jax.random.split(jax.random.PRNGKey(3), 3)
  x = jax.random.normal(key_x, (2, 5, 3, 4))
  w = jax.random.normal(key_w, (3, 4, 6))   # DenseGeneral(axis=(-2, -1)) layout.
  dims = (((2, 3), (0, 1)), ((), ()))
  np.testing.assert_allclose(ecg_vit.flat_dot_general(x, w, dims),
                             jax.lax.dot_general(x, w, dims), rtol=1e-6, atol=1e-6)
  cotangent = jax.random.normal(key_o, (2, 5, 6))
  grads = [jax.grad(lambda x, w, f=f: jnp.sum(f(x, w, dims) * cotangent), argnums=(0, 1))(x, w)
           for f in (ecg_vit.flat_dot_general, jax.lax.dot_general)]
  for flat, ref in zip(*grads):
    np.testing.assert_allclose(flat, ref, rtol=1e-5, atol=1e-5)
  # Negative axes as Flax's Dense passes them, and a (D, heads, head_dim) kernel.
  x2, w2 = x[..., 0], jax.random.normal(key_w, (3, 2, 4))
  np.testing.assert_allclose(
      ecg_vit.flat_dot_general(x2, w2, (((-1,), (0,)), ((), ()))),
      jnp.einsum("btd,dnh->btnh", x2, w2), rtol=1e-5, atol=1e-5)
  # A contraction with batch dims is not a Dense layer's: passed through unchanged.
  a, b = jax.random.normal(key_x, (4, 3, 5)), jax.random.normal(key_w, (4, 5, 2))
  batched = (((2,), (1,)), ((0,), (0,)))
  np.testing.assert_array_equal(ecg_vit.flat_dot_general(a, b, batched),
                                jax.lax.dot_general(a, b, batched))


def _numpy_conv_stem(patches, stem_params, num_layers=2):
  """ConvStem recomputed with numpy: 'SAME' cross-correlation per patch, exact GELU, pooling."""
  from scipy import special  # pylint: disable=import-outside-toplevel
  b, t, p = patches.shape
  h = patches.reshape(b * t, p, 1).astype(np.float64)
  for i in range(num_layers):
    kernel = np.asarray(stem_params[f"conv{i}"]["kernel"], np.float64)  # (k, in, out)
    bias = np.asarray(stem_params[f"conv{i}"]["bias"], np.float64)
    k = kernel.shape[0]
    left = (k - 1) // 2
    padded = np.pad(h, ((0, 0), (left, k - 1 - left), (0, 0)))
    out = np.zeros((h.shape[0], p, kernel.shape[2]))
    for offset in range(k):
      out += padded[:, offset:offset + p, :] @ kernel[offset]
    out += bias
    h = 0.5 * out * (1.0 + special.erf(out / np.sqrt(2.0)))
  pooled = np.concatenate([h.mean(axis=1), h.max(axis=1)], axis=-1)
  return pooled.reshape(b, t, -1)


def test_conv_stem_equals_a_numpy_convolution_and_reads_only_its_own_patch():
  stem = ecg_vit.ConvStem(channels=6, kernel_size=5)
  rng = np.random.default_rng(0)
  patches = rng.normal(size=(2, 7, 25)).astype(np.float32)
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  params = nn.unbox(stem.init(jax.random.key(0), patches))["params"]
  out = np.asarray(stem.apply({"params": params}, patches))
  assert out.shape == (2, 7, 12)
  np.testing.assert_allclose(out, _numpy_conv_stem(patches, params), rtol=1e-4, atol=1e-5)

  # Masking hides whole tokens, so a token must not read its neighbours' samples: changing
  # patch 3 changes token 3's features and no other token's.
  changed = patches.copy()
  changed[:, 3] += rng.normal(size=(2, 25)).astype(np.float32)
  out_changed = np.asarray(stem.apply({"params": params}, changed))
  others = [i for i in range(7) if i != 3]
  np.testing.assert_array_equal(out_changed[:, others], out[:, others])
  assert np.abs(out_changed[:, 3] - out[:, 3]).max() > 1e-3


def test_conv_stem_model_trains_and_a_bad_stem_is_refused():
  config = tiny_config()
  config.model.stem = "conv"
  config.model.stem_channels = 4
  model = merit_lib.build_model(config)
  batch = tiny_batch(2)
  variables = jax.jit(model.init)({"params": jax.random.key(0)}, batch["ecg"],
                                  batch["tokens"], jax.random.key(1))
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  params = nn.unbox(variables["params"])
  embed = params["encoder"]["embed"]
  assert embed["conv_stem"]["conv0"]["kernel"].shape == (5, 1, 4)
  assert embed["stem_proj"]["kernel"].shape == (8, config.model.width or 32)
  out = model.apply({"params": params}, batch["ecg"], batch["tokens"], jax.random.key(1))
  assert np.isfinite(np.asarray(out["ecg_proj"])).all()

  config.model.stem = "wavelet"
  from merit_jax import config_validation  # pylint: disable=import-outside-toplevel
  with pytest.raises(config_validation.ConfigError, match="model.stem='wavelet'"):
    config_validation.validate_config(config, num_devices=1)
  with pytest.raises(ValueError, match="stem='wavelet'"):
    model = merit_lib.build_model(config)
    model.init({"params": jax.random.key(0)}, batch["ecg"], batch["tokens"],
               jax.random.key(1))
