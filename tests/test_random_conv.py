"""Tests of the random-convolution (ROCKET-style) reference features."""

import numpy as np
import pytest

from merit_jax.evaluators import linear_probe
from merit_jax.evaluators import random_conv


def _signals(n, seed=0, samples=200):
  return np.random.default_rng(seed).standard_normal((n, 12, samples)).astype(np.float32)


def test_deterministic_per_seed_and_different_across_seeds():
  x = _signals(5)
  a = random_conv.RandomConvFeatures(num_kernels=16, seed=3, num_samples=200)(x)
  b = random_conv.RandomConvFeatures(num_kernels=16, seed=3, num_samples=200)(x)
  c = random_conv.RandomConvFeatures(num_kernels=16, seed=4, num_samples=200)(x)
  assert a.shape == (5, random_conv.num_features(16, 12))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert np.all(np.isfinite(a))


def test_ppv_in_unit_interval_and_batching_matches_one_call():
  x = _signals(7, seed=1)
  transform = random_conv.RandomConvFeatures(num_kernels=8, seed=0, num_samples=200)
  whole = transform(x)
  batched = transform.transform(x, batch_size=3)  # padded last batch
  np.testing.assert_allclose(whole, batched, rtol=1e-5, atol=1e-5)
  # Layout per lead: for each (length, dilation) group, its kernels' PPV then their max.
  per_lead = whole.reshape(7, 12, -1)
  offset = 0
  for _, _, weights, _ in transform.groups:
    k = weights.shape[0]
    ppv = per_lead[:, :, offset:offset + k]
    assert ppv.min() >= 0 and ppv.max() <= 1
    offset += 2 * k
  assert offset == per_lead.shape[-1]


def test_rejects_bad_arguments():
  with pytest.raises(ValueError, match="num_kernels"):
    random_conv.RandomConvFeatures(num_kernels=0)
  with pytest.raises(ValueError, match="shorter"):
    random_conv.RandomConvFeatures(num_kernels=4, num_samples=5)
  with pytest.raises(ValueError, match="batch, leads, samples"):
    random_conv.RandomConvFeatures(num_kernels=4, num_samples=200)(np.zeros((12, 200)))


@pytest.fixture(scope="module")
def synthetic_splits(tmp_path_factory):
  """The synthetic_ecg data (120 records), read into memory per split."""
  from configs import pretrain as pretrain_config  # pylint: disable=g-import-not-at-top
  from merit_jax.data import build  # pylint: disable=g-import-not-at-top
  from merit_jax.evaluators import features  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("synthetic_rc")
  build.build("synthetic_ecg", manual_dir=str(root / "manual"), data_dir=str(root / "tfds"),
              config="n120_s0", tokenizer_vocab_size=200)
  data_cfg = pretrain_config.get_config("test").data  # 100 Hz, 10 s, z-scored, no band-pass
  data_cfg.config, data_cfg.data_dir = "n120_s0", str(root / "tfds")
  return {s: features.load_split(data_cfg, s, progress=False)
          for s in ("train", "validation", "test")}


def test_random_conv_features_separate_synthetic_classes(synthetic_splits):
  transform = random_conv.RandomConvFeatures(num_kernels=50, seed=0, num_samples=1000)
  splits = []
  for name in ("train", "validation", "test"):
    data = synthetic_splits[name]
    splits.append((transform.transform(data.ecg), data.labels["rhythm"]))
  # Train + validation both need positives of a class for it to be kept.
  keep = (splits[0][1].sum(0) > 0) & (splits[1][1].sum(0) > 0)
  splits = [(x, y[:, keep]) for x, y in splits]
  result = linear_probe.run_linear_probe(*splits, max_epochs=60, eval_every=10,
                                         n_bootstrap=0)
  # Rhythm classes (sinus, AF, brady/tachy ...) are easy for random kernels: far above 0.5.
  assert result.test_metrics["macro_auroc"]["value"] > 0.85


def test_encoder_serves_the_transform_and_zero_fill_only():
  from merit_jax.encoder import Encoder  # pylint: disable=g-import-not-at-top
  x = _signals(6, seed=2, samples=200)
  encoder = Encoder.random_conv(num_kernels=8, seed=1, num_samples=200)
  transform = random_conv.RandomConvFeatures(num_kernels=8, seed=1, num_samples=200)
  np.testing.assert_array_equal(encoder.embed_ecg(x)["pooled"], transform(x))
  assert encoder.cache_key == transform.cache_key == "random_conv-k8-s1"
  assert not encoder.supports_lead_subsets
  with pytest.raises(ValueError, match="lead subsets"):
    encoder.embed_ecg(x[:, :3], leads=(0, 1, 2))
