"""Fine-tuning: the whole ECG encoder plus a linear head, with choices made on validation.

The protocol mirrors the linear probe (`linear_probe.py`): for each learning rate of the grid
the encoder and a zero-initialised linear head are trained with AdamW on sigmoid/BCE; after every
epoch the validation fold is scored and the parameters with the best validation macro AUROC
are kept (early stopping after `patience` epochs without improvement). The learning rate with
the best validation AUROC wins, F1 thresholds are fitted on validation with its parameters, and
only then is the test fold scored, once. Test labels never influence any choice.

Model-agnostic: the caller passes `embed_fn(encoder_params, ecg (B, leads, S)) -> (B, D)` and
the initial `encoder_params`; `encoder_embed_fn(encoder)` builds both for a MERIT `Encoder`
from its un-jitted `apply_fn()` (only the `encoder` subtree is trained; the rest stays as
given), and the train step below jits it.

Public API:
- `run_finetune(embed_fn, encoder_params, train=(ecg, Y), val=(ecg, Y), test=(ecg, Y),
  learning_rates=(1e-4, 1e-3), max_epochs=10, patience=3, batch_size=32, weight_decay=1e-4,
  seed=0, n_bootstrap=1000) -> FinetuneResult` (fields as `linear_probe.ProbeResult`:
  `test_metrics`, `val_metrics`, `hparams` {learning_rate, epochs, batch_size, weight_decay},
  `thresholds`, `grid_results`, `test_scores`, `val_scores`).
- `run_finetune_fractions(embed_fn, encoder_params, train, val, test, fractions, seeds,
  **kwargs) -> dict` with the layout of `linear_probe.run_label_fractions`.
- `encoder_embed_fn(encoder) -> (embed_fn, encoder_params)`.

Everything is jitted with fixed batch shapes (the last partial training batch of an epoch is
dropped; evaluation batches are padded), so one compilation serves every epoch and grid point.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from merit_jax.metrics import classification as metrics
from merit_jax.metrics import stratify


@dataclasses.dataclass
class FinetuneResult:
  """What one fine-tuning run reports (same fields as a linear-probe result, no head)."""
  test_metrics: dict
  val_metrics: dict
  hparams: dict
  thresholds: np.ndarray
  grid_results: list
  test_scores: np.ndarray
  val_scores: np.ndarray


def encoder_embed_fn(encoder):
  """(embed_fn, encoder_params) that fine-tune only the `encoder` subtree of a MERIT Encoder."""
  apply = encoder.apply_fn()
  frozen = {k: v for k, v in encoder.params.items() if k != "encoder"}

  def embed_fn(encoder_params, ecg):
    return apply({**frozen, "encoder": encoder_params}, ecg)

  return embed_fn, encoder.params["encoder"]


def _check(split, name, num_classes=None):
  if not isinstance(split, (tuple, list)) or len(split) != 2:
    raise ValueError(f"run_finetune: {name} must be a pair (ecg, labels)")
  x, y = np.asarray(split[0], np.float32), np.asarray(split[1])
  if x.ndim != 3 or y.ndim != 2 or x.shape[0] != y.shape[0]:
    raise ValueError(f"run_finetune: {name} ecg {x.shape} / labels {y.shape} must be "
                     "(N, leads, samples) and (N, C) with the same N")
  if num_classes is not None and y.shape[1] != num_classes:
    raise ValueError(f"run_finetune: {name} has {y.shape[1]} classes, train has {num_classes}")
  return x, y.astype(np.float32)


def _make_fns(embed_fn: Callable, batch_size: int):
  """Jitted train step and scoring for a given encoder function."""

  def logits_fn(trainable, ecg):
    pooled = embed_fn(trainable["encoder"], ecg).astype(jnp.float32)
    return pooled @ trainable["head"]["w"] + trainable["head"]["b"]

  def loss_fn(trainable, ecg, y):
    return optax.sigmoid_binary_cross_entropy(logits_fn(trainable, ecg), y).mean()

  tx = optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3, weight_decay=1e-4)

  @jax.jit
  def train_step(trainable, opt_state, ecg, y):
    loss, grads = jax.value_and_grad(loss_fn)(trainable, ecg, y)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss

  score_jit = jax.jit(logits_fn)

  def score(trainable, ecg: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, ecg.shape[0], batch_size):
      chunk = ecg[start:start + batch_size]
      real = chunk.shape[0]
      if real < batch_size:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - real, axis=0)])
      out.append(np.asarray(score_jit(trainable, jnp.asarray(chunk)))[:real])
    return np.concatenate(out).astype(np.float64)

  return tx, train_step, score


def run_finetune(embed_fn: Callable, encoder_params, train, val, test,
                 learning_rates: Sequence[float] = (1e-4, 1e-3), max_epochs: int = 10,
                 patience: int = 3, batch_size: int = 32, weight_decay: float = 1e-4,
                 seed: int = 0, n_bootstrap: int = 1000, bootstrap_seed: int = 0,
                 progress: bool = False) -> FinetuneResult:
  """Fine-tunes encoder + head per learning rate, picks on validation, scores test once."""
  x_train, y_train = _check(train, "train")
  x_val, y_val = _check(val, "val", y_train.shape[1])
  x_test, y_test = _check(test, "test", y_train.shape[1])
  if max_epochs < 1 or patience < 1 or batch_size < 1:
    raise ValueError(f"run_finetune: max_epochs ({max_epochs}), patience ({patience}) and "
                     f"batch_size ({batch_size}) must be >= 1")
  if not learning_rates:
    raise ValueError("run_finetune: learning_rates is empty")
  val_pos = y_val.sum(axis=0)
  if not np.any((val_pos > 0) & (val_pos < y_val.shape[0])):
    raise ValueError("run_finetune: no class has both positives and negatives in val, so "
                     "nothing can be selected on validation")
  # A training set smaller than a batch still trains: the batch is the whole set.
  batch = min(batch_size, x_train.shape[0])
  tx, train_step, score = _make_fns(embed_fn, batch_size)
  dim = int(jax.eval_shape(embed_fn, encoder_params,
                           jax.ShapeDtypeStruct((1,) + x_train.shape[1:], jnp.float32)).shape[-1])
  num_classes = y_train.shape[1]

  grid_results, best = [], None
  bar = None
  if progress:
    from tqdm import auto as tqdm_auto  # pylint: disable=g-import-not-at-top
    bar = tqdm_auto.tqdm(total=len(learning_rates) * max_epochs, desc="finetune", leave=False,
                         file=sys.stderr)
  for lr in learning_rates:
    trainable = {"encoder": encoder_params,
                 "head": {"w": jnp.zeros((dim, num_classes), jnp.float32),
                          "b": jnp.zeros((num_classes,), jnp.float32)}}
    opt_state = tx.init(trainable)
    opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
    opt_state.hyperparams["weight_decay"] = jnp.asarray(weight_decay, jnp.float32)
    rng = np.random.default_rng(seed)
    best_auc, best_epoch, best_params, stale = -np.inf, 0, None, 0
    for epoch in range(1, max_epochs + 1):
      order = rng.permutation(x_train.shape[0])
      for start in range(0, x_train.shape[0] - batch + 1, batch):
        idx = order[start:start + batch]
        trainable, opt_state, _ = train_step(trainable, opt_state, jnp.asarray(x_train[idx]),
                                             jnp.asarray(y_train[idx]))
      auc = metrics.macro_auroc(y_val, score(trainable, x_val))
      if bar is not None:
        bar.update(1)
      if auc > best_auc:
        best_auc, best_epoch, stale = auc, epoch, 0
        best_params = jax.device_get(trainable)
      else:
        stale += 1
        if stale >= patience:
          break
    grid_results.append({"learning_rate": float(lr), "epochs": int(best_epoch),
                         "val_auroc": float(best_auc)})
    if best is None or best_auc > best[0]:  # ties: the first learning rate in order
      best = (best_auc, lr, best_epoch, best_params)
  if bar is not None:
    bar.close()

  _, lr, epochs, params = best
  val_scores = score(params, x_val)
  thresholds = metrics.best_f1_thresholds(y_val, val_scores)
  val_metrics = metrics.evaluate_multilabel(y_val, val_scores, thresholds, n_bootstrap=0)
  # The test fold is touched here, once, with everything already fixed.
  test_scores = score(params, x_test)
  test_metrics = metrics.evaluate_multilabel(y_test, test_scores, thresholds,
                                             n_bootstrap=n_bootstrap, seed=bootstrap_seed)
  hparams = {"learning_rate": float(lr), "epochs": int(epochs), "batch_size": int(batch),
             "weight_decay": float(weight_decay)}
  return FinetuneResult(test_metrics=test_metrics, val_metrics=val_metrics, hparams=hparams,
                        thresholds=thresholds, grid_results=grid_results,
                        test_scores=test_scores, val_scores=val_scores)


def run_finetune_fractions(embed_fn: Callable, encoder_params, train, val, test,
                           fractions: Sequence[float] = (1.0,), seeds: Sequence[int] = (0,),
                           cover_all: bool = False, **kwargs: Any) -> dict:
  """Fine-tuning on stratified fractions of the training set (layout of run_label_fractions)."""
  x_train, y_train = _check(train, "train")
  out = {}
  for fraction in fractions:
    run_seeds = list(seeds) if fraction < 1 else list(seeds)[:1]
    runs, sizes = [], []
    for seed in run_seeds:
      idx = stratify.stratified_subset(y_train, fraction, seed, cover_all=cover_all)
      runs.append(run_finetune(embed_fn, encoder_params, (x_train[idx], y_train[idx]), val,
                               test, seed=seed, **kwargs))
      sizes.append(int(idx.size))
    summary = {"runs": runs, "subset_sizes": sizes, "seeds": run_seeds}
    for name in ("macro_auroc", "macro_auprc", "macro_f1"):
      values = np.asarray([r.test_metrics[name]["value"] for r in runs], np.float64)
      summary[name] = {"mean": float(values.mean()),
                       "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                       "values": values.tolist()}
    out[fraction] = summary
  return out

