"""The MERIT objective: InfoNCE, masked MSE, MI bounds and the ablation switches."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import pretrain
from merit_jax import config_validation
from merit_jax import objective
from merit_jax.models import merit as merit_lib
from tests.test_models import tiny_batch
from tests.test_models import tiny_config


def _numpy_info_nce(e, t, scale):
  e = e / np.linalg.norm(e, axis=1, keepdims=True)
  t = t / np.linalg.norm(t, axis=1, keepdims=True)
  logits = np.exp(scale) * e @ t.T
  n = len(e)
  loss_rows = loss_cols = 0.0
  for i in range(n):
    loss_rows += -logits[i, i] + np.log(np.sum(np.exp(logits[i, :])))
    loss_cols += -logits[i, i] + np.log(np.sum(np.exp(logits[:, i])))
  return 0.5 * (loss_rows + loss_cols) / n


def test_info_nce_matches_numpy_reference():
  rng = np.random.default_rng(0)
  e, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
  scale = np.log(1 / 0.07)
  loss, logits = objective.info_nce(jnp.asarray(e, jnp.float32), jnp.asarray(t, jnp.float32),
                                    jnp.float32(scale))
  np.testing.assert_allclose(float(loss), _numpy_info_nce(e, t, scale), rtol=1e-5)
  assert logits.shape == (5, 5)
  # Perfect alignment with a sharp temperature: loss -> 0, bound -> log N.
  eye = np.eye(4, dtype=np.float32)
  loss, logits = objective.info_nce(eye, eye, jnp.float32(np.log(100.0)))
  assert float(loss) < 1e-3
  assert float(objective.retrieval_top1(logits)) == 1.0
  bounds = objective.mi_bounds(jnp.float32(0.25), loss, 4)
  np.testing.assert_allclose(float(bounds["mi_text_nats"]), np.log(4), atol=1e-3)
  np.testing.assert_allclose(float(bounds["mi_signal_nats"]), -0.5 * np.log(0.25), rtol=1e-6)


def test_info_nce_with_mask_is_the_sub_batch_loss():
  """Report-less rows (ECG-only sources) are neither anchors nor negatives."""
  rng = np.random.default_rng(3)
  e, t = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
  valid = np.array([1, 0, 1, 1, 0, 1], np.float32)
  keep = valid.astype(bool)
  scale = jnp.float32(np.log(1 / 0.07))
  loss, logits = objective.info_nce(jnp.asarray(e, jnp.float32), jnp.asarray(t, jnp.float32),
                                    scale, valid=jnp.asarray(valid))
  np.testing.assert_allclose(float(loss), _numpy_info_nce(e[keep], t[keep], float(scale)),
                             rtol=1e-5)
  # An all-ones mask is the unmasked loss; retrieval counts valid rows only.
  full, _ = objective.info_nce(jnp.asarray(e, jnp.float32), jnp.asarray(t, jnp.float32), scale)
  ones, _ = objective.info_nce(jnp.asarray(e, jnp.float32), jnp.asarray(t, jnp.float32), scale,
                               valid=jnp.ones(6))
  np.testing.assert_allclose(float(ones), float(full), rtol=1e-6)
  sub_logits = np.asarray(logits)[np.ix_(keep, keep)]
  expected_top1 = np.mean(sub_logits.argmax(1) == np.arange(keep.sum()))
  np.testing.assert_allclose(float(objective.retrieval_top1(logits, jnp.asarray(valid))),
                             expected_top1)

  # Embeddings of report-less rows get no gradient; an all-masked batch gives 0, finitely.
  def loss_of(e, t, v):
    return objective.info_nce(e, t, scale, valid=v)[0]
  grads = jax.grad(loss_of, argnums=(0, 1))(jnp.asarray(e, jnp.float32),
                                           jnp.asarray(t, jnp.float32), jnp.asarray(valid))
  for g in grads:
    assert np.all(np.asarray(g)[~keep] == 0) and np.all(np.isfinite(np.asarray(g)))
  # merit_loss reads the mask from the batch; N of the InfoNCE bound is the number of pairs.
  outputs = dict(pred=jnp.zeros((6, 2, 3)), target=jnp.ones((6, 2, 3)), mask=jnp.ones((6, 2)),
                 ecg_proj=jnp.asarray(e, jnp.float32), text_proj=jnp.asarray(t, jnp.float32),
                 logit_scale=scale)
  cfg = dict(lambda_nce=1.0, reconstruction=True, contrastive_view="masked",
             norm_pix_loss=False)
  _, metrics = objective.merit_loss(
      outputs, {"ecg": jnp.zeros((6, 12, 10)), "has_report": jnp.asarray(valid)}, cfg)
  np.testing.assert_allclose(float(metrics["nce_loss"]), float(loss), rtol=1e-6)
  np.testing.assert_allclose(float(metrics["mi_text_nats"]), np.log(4) - float(loss),
                             rtol=1e-5)
  zeros = jnp.zeros(6)
  assert float(loss_of(jnp.asarray(e, jnp.float32), jnp.asarray(t, jnp.float32), zeros)) == 0.0
  grads = jax.grad(loss_of)(jnp.asarray(e, jnp.float32), jnp.asarray(t, jnp.float32), zeros)
  assert np.all(np.asarray(grads) == 0)


def test_rec_loss_counts_only_masked_patches():
  rng = np.random.default_rng(1)
  target = rng.normal(size=(2, 6, 4)).astype(np.float32)
  pred = rng.normal(size=(2, 6, 4)).astype(np.float32)
  mask = np.zeros((2, 6), np.float32)
  mask[0, [1, 4]] = 1
  mask[1, [0]] = 1
  loss = objective.masked_patch_mse(pred, target, mask, norm_pix_loss=False)
  per_patch = ((pred - target) ** 2).mean(-1)
  np.testing.assert_allclose(float(loss), (per_patch * mask).sum() / 3, rtol=1e-6)
  # Anything at visible patches is irrelevant.
  pred2 = pred.copy()
  pred2[mask == 0] = 1e3
  np.testing.assert_allclose(float(objective.masked_patch_mse(pred2, target, mask, False)),
                             float(loss), rtol=1e-6)
  # Normalised targets: predicting the per-patch z-score exactly gives ~0.
  z = (target - target.mean(-1, keepdims=True)) / np.sqrt(target.var(-1, keepdims=True) + 1e-6)
  assert float(objective.masked_patch_mse(z, target * 3 + 1, mask, True)) < 1e-6


def test_objective_validation():
  """config_validation refuses objectives that cannot train, naming key, value and choices."""
  def errors(**objective_cfg):
    config = pretrain.get_config("test")
    config.objective.update(objective_cfg)
    with pytest.raises(config_validation.ConfigError) as info:
      config_validation.validate_config(config, num_devices=8)
    return str(info.value)
  assert "both branches are off" in errors(lambda_nce=0.0, reconstruction=False)
  assert ("config.objective.contrastive_view='both' must be one of 'masked', 'full'"
          in errors(contrastive_view="both"))
  assert "config.objective.lambda_nce=-1.0 must be >= 0" in errors(lambda_nce=-1.0)


@pytest.fixture(scope="module")
def tiny_model():
  model = merit_lib.build_model(tiny_config())
  batch = tiny_batch(4)
  variables = jax.jit(model.init)({"params": jax.random.key(0)}, batch["ecg"], batch["tokens"],
                                  jax.random.key(1))
  return model, nn.unbox(variables["params"]), batch


def _grads(model, params, batch, **objective_cfg):
  cfg = tiny_config(**objective_cfg).objective
  flags = objective.objective_flags(cfg)

  @jax.jit
  def f(params):
    def loss_fn(p):
      out = model.apply({"params": p}, batch["ecg"], batch["tokens"], jax.random.key(3),
                        **flags)
      return objective.merit_loss(out, batch, cfg)
    return jax.grad(loss_fn, has_aux=True)(params)

  return f(params)


def _norm(tree):
  return float(sum(np.sum(np.square(x)) for x in jax.tree.leaves(tree)))


def test_ablation_switches_change_what_is_computed(tiny_model):
  model, params, batch = tiny_model
  # lambda = 0: masked modelling only; the text tower and projections get no gradient.
  grads, metrics = _grads(model, params, batch, lambda_nce=0.0)
  assert _norm(grads["text_encoder"]) == 0.0 and _norm(grads["text_projection"]) == 0.0
  assert _norm(grads["decoder"]) > 0 and _norm(grads["encoder"]) > 0
  assert float(metrics["nce_loss"]) == 0.0 and float(metrics["rec_loss"]) > 0
  np.testing.assert_allclose(float(metrics["loss"]), float(metrics["rec_loss"]))
  # Contrastive only: the decoder gets no gradient, the text tower does.
  grads, metrics = _grads(model, params, batch, reconstruction=False)
  assert _norm(grads["decoder"]) == 0.0 and _norm(grads["text_encoder"]) > 0
  assert float(metrics["rec_loss"]) == 0.0
  np.testing.assert_allclose(float(metrics["loss"]), float(metrics["nce_loss"]))
  # Full view: a second, unmasked pass; contrastive-only then needs no mask at all.
  flags = objective.objective_flags(tiny_config(reconstruction=False,
                                                contrastive_view="full").objective)
  full = jax.jit(lambda p: model.apply({"params": p}, batch["ecg"], batch["tokens"],
                                       jax.random.key(3), **flags))(params)
  assert float(np.abs(full["mask"]).sum()) == 0.0
  _, full_metrics = objective.merit_loss(full, batch, tiny_config(
      reconstruction=False, contrastive_view="full").objective)
  assert abs(float(full_metrics["nce_loss"]) - float(metrics["nce_loss"])) > 1e-6
  # Both terms from one set of outputs: L = L_rec + lambda * L_NCE.
  outputs = dict(full, mask=(np.arange(120) % 4 != 0).astype(np.float32)[None].repeat(4, 0),
                 pred=jnp.zeros_like(full["target"]))
  _, both = objective.merit_loss(outputs, batch, tiny_config(lambda_nce=0.5).objective)
  np.testing.assert_allclose(float(both["loss"]),
                             float(both["rec_loss"]) + 0.5 * float(both["nce_loss"]), rtol=1e-6)
  np.testing.assert_allclose(float(both["rec_loss"]), 1.0, rtol=1e-3)  # Unit-variance targets.
  np.testing.assert_allclose(float(both["mi_text_nats"]), np.log(4) - float(both["nce_loss"]),
                             rtol=1e-5)
  np.testing.assert_allclose(float(both["mask_fraction"]), 0.75, rtol=1e-6)
