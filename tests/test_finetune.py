"""Tests of fine-tuning (encoder + linear head, every choice on validation)."""

import jax.numpy as jnp
import numpy as np
import pytest

from merit_jax.evaluators import finetune


def _toy(n, seed):
  """ECG-shaped arrays whose two classes depend on the mean of lead 0 and of lead 1."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, size=(n, 2)).astype(np.uint8)
  x = rng.standard_normal((n, 12, 20)).astype(np.float32) * 0.5
  x[:, 0] += (2.0 * y[:, 0] - 1.0)[:, None]
  x[:, 1] += (2.0 * y[:, 1] - 1.0)[:, None]
  return x, y


def _encoder():
  """A linear 'encoder' of the per-lead means (D=4), small random init."""
  params = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((12, 4)) * 0.1,
                             jnp.float32)}

  def embed_fn(p, ecg):
    return ecg.mean(-1) @ p["w"]

  return embed_fn, params


KWARGS = dict(learning_rates=(1e-2, 3e-2), max_epochs=6, patience=2, batch_size=16,
              n_bootstrap=100)


@pytest.fixture(scope="module")
def splits():
  return _toy(96, 0), _toy(48, 1), _toy(48, 2)


@pytest.fixture(scope="module")
def result(splits):
  embed_fn, params = _encoder()
  return finetune.run_finetune(embed_fn, params, *splits, **KWARGS)


def test_finetune_learns_and_reports(result):
  auroc = result.test_metrics["macro_auroc"]
  assert auroc["value"] > 0.9
  assert auroc["ci_low"] <= auroc["value"] <= auroc["ci_high"]
  assert result.hparams["learning_rate"] in KWARGS["learning_rates"]
  assert 1 <= result.hparams["epochs"] <= KWARGS["max_epochs"]
  assert len(result.grid_results) == 2
  best = max(g["val_auroc"] for g in result.grid_results)
  assert result.val_metrics["macro_auroc"]["value"] == pytest.approx(best, abs=1e-6)
  assert result.thresholds.shape == (2,)
  assert result.test_scores.shape == (48, 2)


def test_test_labels_change_no_choice(splits, result):
  train, val, (x_test, y_test) = splits
  embed_fn, params = _encoder()
  flipped = finetune.run_finetune(embed_fn, params, train, val, (x_test, 1 - y_test), **KWARGS)
  assert flipped.hparams == result.hparams
  assert flipped.grid_results == result.grid_results
  np.testing.assert_array_equal(flipped.thresholds, result.thresholds)
  np.testing.assert_allclose(flipped.test_scores, result.test_scores, rtol=1e-6)
  # The test metric did see the new labels: flipping every label mirrors AUROC.
  assert flipped.test_metrics["macro_auroc"]["value"] == pytest.approx(
      1 - result.test_metrics["macro_auroc"]["value"], abs=1e-6)


def test_fractions_layout(splits):
  embed_fn, params = _encoder()
  out = finetune.run_finetune_fractions(embed_fn, params, *splits, fractions=(0.25, 1.0),
                                        seeds=(0, 1), **dict(KWARGS, n_bootstrap=0,
                                                             max_epochs=2))
  assert sorted(out) == [0.25, 1.0]
  assert out[0.25]["seeds"] == [0, 1] and out[1.0]["seeds"] == [0]
  assert out[0.25]["subset_sizes"] == [24, 24]
  assert len(out[0.25]["macro_auroc"]["values"]) == 2


def test_bad_inputs_are_named():
  embed_fn, params = _encoder()
  x, y = _toy(8, 0)
  with pytest.raises(ValueError, match="train ecg"):
    finetune.run_finetune(embed_fn, params, (x[:, 0], y), (x, y), (x, y))
  with pytest.raises(ValueError, match="val has 1 classes"):
    finetune.run_finetune(embed_fn, params, (x, y), (x, y[:, :1]), (x, y))
  with pytest.raises(ValueError, match="positives and negatives in val"):
    finetune.run_finetune(embed_fn, params, (x, y), (x, np.ones_like(y)), (x, y))


def test_encoder_embed_fn_trains_only_the_encoder_subtree():
  import jax  # pylint: disable=g-import-not-at-top
  from configs import pretrain as pretrain_config  # pylint: disable=g-import-not-at-top
  from merit_jax.encoder import Encoder  # pylint: disable=g-import-not-at-top
  config = pretrain_config.get_config("test")
  config.model.text.vocab_size = 50
  encoder = Encoder.random_init(config, None, seed=0, batch_size=4)
  embed_fn, encoder_params = finetune.encoder_embed_fn(encoder)
  assert jax.tree.structure(encoder_params) == jax.tree.structure(encoder.params["encoder"])
  x = np.random.default_rng(0).normal(size=(3, 12, 1000)).astype(np.float32)
  direct = encoder.model.apply({"params": encoder.params}, x, method=encoder.model.embed_ecg)
  np.testing.assert_allclose(np.asarray(embed_fn(encoder_params, x)),
                             np.asarray(direct["pooled"]), rtol=1e-5, atol=1e-5)
  # Changing the trained subtree changes the features; the rest comes from the encoder.
  moved = jax.tree.map(lambda p: p + 0.05, encoder_params)
  assert np.abs(np.asarray(embed_fn(moved, x)) - np.asarray(direct["pooled"])).max() > 1e-3
  # One short fine-tuning run end to end on the MERIT encoder.
  xs, ys = _toy(24, 3)
  ecg = np.repeat(xs, 50, axis=2)  # (24, 12, 1000): the model's input length
  result = finetune.run_finetune(embed_fn, encoder_params, (ecg, ys), (ecg[:12], ys[:12]),
                                 (ecg[12:], ys[12:]), learning_rates=(1e-3,), max_epochs=1,
                                 patience=1, batch_size=8, n_bootstrap=0)
  assert result.test_scores.shape == (12, 2) and np.all(np.isfinite(result.test_scores))
