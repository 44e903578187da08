"""The MERIT objective: what a train step minimises and the MI diagnostics it reports.

The paper's equations are not public; this formulation is OURS. With X the ECG, T the report
and Z = f(X), I(Z;X) = I(Z;T) + I(Z;X|T), and we maximise I(Z;X) + lambda * I(Z;T) through two
variational lower bounds:

* signal term (Barber-Agakov): I(Z_v; X_m) >= H(X_m) + E[log q(X_m | Z_v)], Z_v the encoding of
  the visible patches and X_m the masked patches. A Gaussian q with a shared variance turns the
  second term into the mean-squared error on masked patches (`masked_patch_mse`, per-patch
  normalised targets when `norm_pix_loss`, as in MAE / ST-MEM);
* text term (InfoNCE): I(Z;T) >= log N - L_NCE, L_NCE the symmetric cross-entropy over the N x N
  cosine-similarity matrix of the GLOBAL batch with a learnable temperature (`info_nce`).

Loss: L = L_rec + lambda * L_NCE (`merit_loss`), with the ablation switches lambda_nce = 0
(masked modelling only), reconstruction = False (contrastive only) and contrastive_view.
Rows of a batch without a report (`batch["has_report"] == 0`, from ECG-only sources) count
in L_rec only; InfoNCE is that of the sub-batch with reports.

Reported MI diagnostics (`mi_bounds`, both in nats):

* `mi_signal_nats` = -1/2 * log(MSE): the Barber-Agakov bound PER MASKED SCALAR SAMPLE,
  taking H(X_m) as that of a unit-variance Gaussian, 1/2 log(2 pi e), and the optimal Gaussian
  variance sigma^2 = MSE, so that H + E[log q] = 1/2 log(2 pi e) - 1/2 log(2 pi e MSE). It is
  only meaningful with unit-variance targets (norm_pix_loss=True makes every patch exactly
  so) and is an estimate rather than a certified bound, because the Gaussian entropy is an
  upper bound on H(X_m). Multiply by the number of masked samples for a per-ECG figure.
* `mi_text_nats` = log N - L_NCE with N the number of rows of the global batch that have a
  report (all of them unless ECG-only sources are mixed in); it cannot exceed log N.

Under `jax.jit` with batch-sharded inputs the global batch is simply the array, so `info_nce`
contains no per-device code: the similarity matrix spans every device's samples.

API:
  masked_patch_mse(pred, target, mask, norm_pix_loss=True) -> scalar
  info_nce(ecg_emb, text_emb, logit_scale, valid=None) -> (loss, logits)
  retrieval_top1(logits, valid=None) -> fraction of ECGs whose own report is the top-1 text
  mi_bounds(rec_mse, nce_loss, batch_size) -> {'mi_signal_nats', 'mi_text_nats'}
  objective_flags(objective_cfg) -> kwargs for MERIT.__call__ (what to compute)
  merit_loss(outputs, batch, objective_cfg) -> (loss, metrics)
    objective_cfg: `config.objective` (or a mapping with its keys): lambda_nce,
    reconstruction, contrastive_view, norm_pix_loss.
"""

from typing import Any

import jax
import jax.numpy as jnp

# Logit of an excluded (report-less) pair: exp() of it is 0 next to any real logit.
_MASKED_LOGIT = -1e9


def masked_patch_mse(pred: jax.Array, target: jax.Array, mask: jax.Array,
                     norm_pix_loss: bool = True, eps: float = 1e-6) -> jax.Array:
  """Mean squared error over masked patches only.

  Args:
    pred: (B, N, P) predicted patches.
    target: (B, N, P) true patch values.
    mask: (B, N), 1 where the patch was hidden from the encoder (only those count).
    norm_pix_loss: normalise every target patch to zero mean, unit variance first.
    eps: variance floor for flat patches.

  Returns:
    Scalar: sum over masked patches of their mean squared error / number of masked patches.
  """
  target = target.astype(jnp.float32)
  if norm_pix_loss:
    mean = jnp.mean(target, axis=-1, keepdims=True)
    var = jnp.var(target, axis=-1, keepdims=True)
    target = (target - mean) / jnp.sqrt(var + eps)
  per_patch = jnp.mean(jnp.square(pred.astype(jnp.float32) - target), axis=-1)
  mask = mask.astype(jnp.float32)
  return jnp.sum(per_patch * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def l2_normalize(x: jax.Array) -> jax.Array:
  """x / |x| with finite gradients at x = 0 (an ECG-only row's all-zero text embedding).

  `x / max(norm(x), eps)` has a NaN gradient there (the norm's), and a masked-out row is still
  differentiated; clamping the squared norm instead gives the same values elsewhere.
  """
  sq_norm = jnp.sum(x * x, axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq_norm, 1e-12))


def info_nce(ecg_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array,
             valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Symmetric InfoNCE over the (global) N x N cosine-similarity matrix.

  Args:
    ecg_emb, text_emb: (N, D) embeddings; normalised here again, so raw ones are fine.
    logit_scale: log(1 / temperature).
    valid: optional (N,) mask, nonzero where the row has a report. Other rows are neither
      anchors nor negatives (the loss is the InfoNCE of the valid sub-batch), so ECG-only
      records can share a batch with paired ones at fixed shapes.

  Returns:
    (loss, logits) with loss = (CE(ECG->text) + CE(text->ECG)) / 2 and logits (N, N); with a
    mask, pairs involving an invalid row or column get a large negative logit, and the loss
    is 0 for a batch without a valid row.
  """
  e = ecg_emb.astype(jnp.float32)
  t = text_emb.astype(jnp.float32)
  e, t = l2_normalize(e), l2_normalize(t)
  logits = jnp.exp(logit_scale) * e @ t.T
  if valid is None:
    diag = jnp.diagonal(logits)
    loss_e2t = jnp.mean(jax.nn.logsumexp(logits, axis=1) - diag)
    loss_t2e = jnp.mean(jax.nn.logsumexp(logits, axis=0) - diag)
    return 0.5 * (loss_e2t + loss_t2e), logits
  v = valid.astype(bool)
  # Finite, so an all-masked row gives a finite logsumexp instead of NaN gradients.
  logits = jnp.where(v[:, None] & v[None, :], logits, _MASKED_LOGIT)
  diag = jnp.diagonal(logits)
  weights = v.astype(jnp.float32)
  count = jnp.maximum(jnp.sum(weights), 1.0)
  loss_e2t = jnp.sum(weights * (jax.nn.logsumexp(logits, axis=1) - diag)) / count
  loss_t2e = jnp.sum(weights * (jax.nn.logsumexp(logits, axis=0) - diag)) / count
  return 0.5 * (loss_e2t + loss_t2e), logits


def retrieval_top1(logits: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """Fraction of (valid) rows (ECGs) whose highest-scoring column (report) is their own."""
  hits = (jnp.argmax(logits, axis=1) == jnp.arange(logits.shape[0])).astype(jnp.float32)
  if valid is None:
    return jnp.mean(hits)
  weights = valid.astype(jnp.float32)
  return jnp.sum(hits * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def mi_bounds(rec_mse: jax.Array, nce_loss: jax.Array, batch_size) -> dict[str, Any]:
  """MI diagnostics in nats; see the module docstring for exactly what they are.

  `batch_size` is N of the InfoNCE bound: the number of rows with a report (may be an array).
  """
  n = jnp.maximum(jnp.asarray(batch_size, jnp.float32), 1.0)
  return {
      "mi_signal_nats": -0.5 * jnp.log(jnp.maximum(rec_mse, 1e-12)),
      "mi_text_nats": jnp.log(n) - nce_loss,
  }


def objective_flags(cfg) -> dict[str, Any]:
  """Which branches MERIT.__call__ must compute for this objective config.

  The config is checked by config_validation.validate_config (lambda_nce >= 0, a known view,
  not both branches off).
  """
  return dict(reconstruction=bool(cfg["reconstruction"]),
              contrastive=float(cfg["lambda_nce"]) > 0,
              contrastive_view=cfg["contrastive_view"])


def merit_loss(outputs: dict[str, jax.Array], batch: dict[str, jax.Array],
               cfg) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L = L_rec + lambda * L_NCE from MERIT outputs; metrics hold both terms and MI bounds.

  Args:
    outputs: MERIT.__call__ output computed with `objective_flags(cfg)`.
    batch: the batch (its size, or the number of rows with `has_report`, gives N for the
      InfoNCE bound; `has_report`, when present, keeps report-less rows out of InfoNCE).
    cfg: the objective config (lambda_nce, reconstruction, contrastive_view, norm_pix_loss).

  Returns:
    (loss, metrics); a switched-off term is reported as 0 (its bound as 0 too).
  """
  flags = objective_flags(cfg)
  lam = float(cfg["lambda_nce"])
  has_report = batch.get("has_report")
  n = batch["ecg"].shape[0] if has_report is None else jnp.sum(has_report)
  zero = jnp.zeros((), jnp.float32)
  rec = nce = zero
  metrics = {}
  if flags["reconstruction"]:
    rec = masked_patch_mse(outputs["pred"], outputs["target"], outputs["mask"],
                           bool(cfg["norm_pix_loss"]))
  if flags["contrastive"]:
    nce, logits = info_nce(outputs["ecg_proj"], outputs["text_proj"], outputs["logit_scale"],
                           valid=has_report)
    metrics["retrieval_top1"] = retrieval_top1(logits, valid=has_report)
  else:
    metrics["retrieval_top1"] = zero
  loss = (rec if flags["reconstruction"] else zero) + (lam * nce if flags["contrastive"] else zero)
  bounds = mi_bounds(rec, nce, n)
  metrics.update(
      loss=loss, rec_loss=rec, nce_loss=nce,
      mi_signal_nats=bounds["mi_signal_nats"] if flags["reconstruction"] else zero,
      mi_text_nats=bounds["mi_text_nats"] if flags["contrastive"] else zero,
      temperature=jnp.exp(-outputs["logit_scale"]),
      mask_fraction=jnp.mean(outputs["mask"]))
  return loss, metrics
