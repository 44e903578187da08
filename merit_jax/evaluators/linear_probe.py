"""Linear probe on frozen features, with every choice made on the validation fold.

Public API:

- `run_linear_probe(train=(X, Y), val=(X, Y), test=(X, Y), grid=None, seed=0, ...)
  -> ProbeResult`. X: (N, D) float features, Y: (N, C) 0/1 labels.
  Protocol: standardise with train statistics; fit a linear multi-label head (sigmoid / BCE,
  L2 weight decay) in JAX, one fit per grid point (the grid points fit together under
  `jax.vmap`), by one of two `solver`s:
  `adam` (the default): optax Adam for up to `max_epochs` epochs; every `eval_every` epochs
  score the validation fold and keep the parameters with the best validation macro AUROC
  (= early stopping, `patience` evaluations without improvement);
  `lbfgs`: optax L-BFGS, full batch, to the regularised optimum (gradient norm below `tol`
  times its starting value, or `max_iters` iterations), so the weight decay alone sets the
  fit and validation only chooses among the grid points. Adam's steps keep each weight
  moving by about the learning rate, so under a strong weight decay it wanders around an
  optimum smaller than that instead of reaching it; L-BFGS has no such floor, which is what a
  weight-decay grid reaching 1 and beyond needs.
  The grid point with the best validation macro AUROC wins;
  F1 thresholds are fitted on validation with those parameters. Only then is the test fold
  scored, once. Test labels never influence any choice.
  `ProbeResult` holds `test_metrics` and `val_metrics` (layout of
  `metrics.evaluate_multilabel`; test with bootstrap CIs), `hparams` (weight_decay,
  learning_rate, epochs = the early-stopping epoch (adam) or the iterations run (lbfgs),
  batch_size, solver, at_grid_edge = the chosen weight decay is the grid's largest or smallest
  non-zero one, so the grid may not reach the validation optimum), `thresholds` (C,),
  `grid_results` (validation AUROC per grid point), `test_scores` / `val_scores` (N, C)
  logits and the fitted `head`; `result.evaluate(features, labels)` scores other features
  (corrupted test signals, another dataset) with the fixed head and validation thresholds.
  Test macro AUROC: `result.test_metrics["macro_auroc"]["value"]` (also `ci_low`, `ci_high`).
- `run_label_fractions(train, val, test, fractions=(0.01, 0.1, 1.0), seeds=(0, 1, 2), ...)
  -> dict`: for each fraction, training subsets drawn by `stratify.stratified_subset` (one per
  seed; a single run at fraction 1), a probe per subset, and the mean ± std over seeds of each
  macro test metric.

`grid` is a dict of lists: `weight_decay` (L2 coefficient; default 0, 1e-4, 1e-3, 1e-2, 1e-1)
and `learning_rate` (default 1e-2; Adam only). The head starts at zero (the problem is
convex), so with full-batch training the result does not depend on the seed.

`Evaluator` (config `evals.linear_probe`): per task, probes at every label fraction on each
feature kind of `probe.features`, the kind with the best mean validation macro AUROC reported
per fraction; the 100 % probe's test scores are stored for paired comparisons
(`probe_paired_difference`).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from merit_jax.evaluators import registry
from merit_jax.evaluators import tasks as tasks_lib
from merit_jax.metrics import classification as metrics
from merit_jax.metrics import stratify

DEFAULT_GRID = {"weight_decay": [0.0, 1e-4, 1e-3, 1e-2, 1e-1], "learning_rate": [1e-2]}
SOLVERS = ("adam", "lbfgs")


@dataclasses.dataclass
class ProbeResult:
  """What one linear-probe run reports, plus the fitted head for scoring other features."""
  test_metrics: dict
  val_metrics: dict
  hparams: dict
  thresholds: np.ndarray
  grid_results: list
  test_scores: np.ndarray
  val_scores: np.ndarray
  head: dict  # feature_mean (D,), feature_std (D,), w (D, C), b (C,); float32 numpy

  def predict(self, features) -> np.ndarray:
    """Logits (N, C) of the fitted head, standardised with the train statistics."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != self.head["w"].shape[0]:
      raise ValueError(f"ProbeResult.predict: features {x.shape} must be (N, "
                       f"{self.head['w'].shape[0]})")
    x = (x - self.head["feature_mean"]) / self.head["feature_std"]
    return x @ self.head["w"] + self.head["b"]

  def evaluate(self, features, labels, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Metrics of the fixed head and validation thresholds on other features.

    For distribution shift (corrupted test signals) and cross-dataset transfer: nothing is
    refitted; `labels` must use the same classes in the same order.
    """
    return metrics.evaluate_multilabel(labels, self.predict(features), self.thresholds,
                                       n_bootstrap=n_bootstrap, seed=seed)


def _check_split(split, name: str, num_features=None, num_classes=None):
  if not isinstance(split, (tuple, list)) or len(split) != 2:
    raise ValueError(f"run_linear_probe: {name} must be a pair (features, labels)")
  x = np.asarray(split[0], dtype=np.float32)
  y = np.asarray(split[1])
  if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
    raise ValueError(f"run_linear_probe: {name} features {x.shape} / labels {y.shape} must be "
                     "(N, D) and (N, C) with the same N")
  if num_features is not None and x.shape[1] != num_features:
    raise ValueError(f"run_linear_probe: {name} has {x.shape[1]} features, train has "
                     f"{num_features}")
  if num_classes is not None and y.shape[1] != num_classes:
    raise ValueError(f"run_linear_probe: {name} has {y.shape[1]} classes, train has "
                     f"{num_classes}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"run_linear_probe: {name} features contain NaN or inf")
  return x, y.astype(np.float32)


def _feature_stats(x_train: np.ndarray):
  mean = x_train.mean(axis=0)
  std = x_train.std(axis=0)
  # Constant features would divide by zero; they carry no information, so leave them at 0.
  std = np.where(std > 1e-6, std, 1.0)
  return mean.astype(np.float32), std.astype(np.float32)


def _bce_loss(params, x, y, weight_decay):
  logits = x @ params["w"] + params["b"]
  loss = optax.sigmoid_binary_cross_entropy(logits, y).mean()
  return loss + 0.5 * weight_decay * jnp.sum(params["w"] ** 2)


def _make_epoch_fn():
  """Jitted: runs the given batches (a few epochs) for every grid point at once (vmapped)."""

  def one_grid_point(params, opt_state, x, y, batches, weight_decay, learning_rate):
    optimiser = optax.adam(learning_rate)

    def step(carry, batch_idx):
      params, opt_state = carry
      grads = jax.grad(_bce_loss)(params, x[batch_idx], y[batch_idx], weight_decay)
      updates, opt_state = optimiser.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), batches)
    return params, opt_state

  vmapped = jax.vmap(one_grid_point, in_axes=(0, 0, None, None, None, 0, 0))
  return jax.jit(vmapped)


# One jitted function for the module, so repeated probes of the same shapes compile once.
_EPOCH_FN = _make_epoch_fn()


def _epoch_batches(num_records: int, batch_size: Optional[int], num_epochs: int,
                   rng: np.random.Generator) -> np.ndarray:
  """(num_epochs * batches_per_epoch, batch) record indices; the last partial batch is dropped."""
  if batch_size is None or batch_size >= num_records:
    return np.tile(np.arange(num_records), (num_epochs, 1))
  per_epoch = num_records // batch_size
  rows = [rng.permutation(num_records)[:per_epoch * batch_size].reshape(per_epoch, batch_size)
          for _ in range(num_epochs)]
  return np.concatenate(rows, axis=0)


def _lbfgs_fit_one(params, x, y, weight_decay, max_iters, tol):
  """Full-batch L-BFGS on one weight decay's regularised loss, until the gradient norm falls
  below `tol` times its value at the start (scale-free in records and classes) or
  `max_iters` iterations."""
  def loss(p):
    return _bce_loss(p, x, y, weight_decay)

  optimiser = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)
  start_norm = optax.tree.norm(jax.grad(loss)(params))

  def cond(carry):
    _, _, iteration, grad_norm = carry
    return (iteration < max_iters) & (grad_norm > tol * start_norm)

  def body(carry):
    p, state, iteration, _ = carry
    value, grad = value_and_grad(p, state=state)
    updates, state = optimiser.update(grad, state, p, value=value, grad=grad, value_fn=loss)
    return optax.apply_updates(p, updates), state, iteration + 1, optax.tree.norm(grad)

  carry = (params, optimiser.init(params), jnp.asarray(0), start_norm)
  params, _, iterations, _ = jax.lax.while_loop(cond, body, carry)
  return params, iterations


# Jitted once per shapes. Grid points are fitted one after another, not vmapped: under vmap
# every point would run as many iterations and line-search steps as the slowest one.
_LBFGS_FN = jax.jit(_lbfgs_fit_one)


def _fit_adam(params, x_train, y_train, x_val, y_val, weight_decays, learning_rates, rng,
              batch_size, max_epochs, eval_every, patience):
  """Adam per grid point with early stopping on validation macro AUROC.

  Returns (best params per point, the epoch each was kept at, their validation AUROC)."""
  num_points = weight_decays.shape[0]
  opt_state = jax.vmap(lambda p, lr: optax.adam(lr).init(p))(params, jnp.asarray(learning_rates))
  x_train_j, y_train_j = jnp.asarray(x_train), jnp.asarray(y_train)
  best_auc = np.full(num_points, -np.inf)
  best_epoch = np.zeros(num_points, dtype=np.int64)
  best_params = jax.tree.map(lambda a: np.array(a, copy=True), params)
  stale = np.zeros(num_points, dtype=np.int64)
  epoch = 0
  while epoch < max_epochs and np.any(stale < patience):
    chunk = min(eval_every, max_epochs - epoch)
    batches = jnp.asarray(_epoch_batches(x_train.shape[0], batch_size, chunk, rng))
    params, opt_state = _EPOCH_FN(params, opt_state, x_train_j, y_train_j, batches,
                                  jnp.asarray(weight_decays), jnp.asarray(learning_rates))
    epoch += chunk
    w, b = np.asarray(params["w"]), np.asarray(params["b"])
    for g in range(num_points):
      if stale[g] >= patience:
        continue
      auc = metrics.macro_auroc(y_val, x_val @ w[g] + b[g])
      if auc > best_auc[g]:
        best_auc[g], best_epoch[g], stale[g] = auc, epoch, 0
        best_params["w"][g], best_params["b"][g] = w[g], b[g]
      else:
        stale[g] += 1
  return best_params, best_epoch, best_auc


def _fit_lbfgs(x_train, y_train, x_val, y_val, weight_decays, max_iters, tol):
  """L-BFGS per grid point to the regularised optimum.

  Returns (params per point, the iterations each ran, their validation AUROC)."""
  num_features, num_classes = x_train.shape[1], y_train.shape[1]
  zeros = {"w": jnp.zeros((num_features, num_classes), jnp.float32),
           "b": jnp.zeros((num_classes,), jnp.float32)}
  x_train_j, y_train_j = jnp.asarray(x_train), jnp.asarray(y_train)
  fits = [_LBFGS_FN(zeros, x_train_j, y_train_j, jnp.float32(wd), int(max_iters), float(tol))
          for wd in weight_decays]
  fitted = {k: np.stack([np.asarray(params[k]) for params, _ in fits]) for k in ("w", "b")}
  val_auc = np.array([metrics.macro_auroc(y_val, x_val @ fitted["w"][g] + fitted["b"][g])
                      for g in range(len(fits))])
  return fitted, np.array([int(iterations) for _, iterations in fits]), val_auc


def grid_edge(weight_decays, chosen: float) -> Optional[str]:
  """'largest' or 'smallest' where `chosen` is the largest, or the smallest non-zero, of two or
  more non-zero weight decays in the grid (the grid may stop short of the optimum), else None."""
  nonzero = sorted({float(wd) for wd in weight_decays if wd > 0})
  if len(nonzero) < 2 or chosen <= 0:
    return None
  return {nonzero[-1]: "largest", nonzero[0]: "smallest"}.get(float(chosen))


def run_linear_probe(train, val, test, grid: Optional[dict] = None, seed: int = 0,
                     max_epochs: int = 300, eval_every: int = 10, patience: int = 5,
                     batch_size: Optional[int] = None, n_bootstrap: int = 1000,
                     bootstrap_seed: int = 0, solver: str = "adam", max_iters: int = 500,
                     tol: float = 1e-4) -> ProbeResult:
  """Fits linear heads over `grid`, picks on validation, scores test once (module docstring)."""
  x_train, y_train = _check_split(train, "train")
  x_val, y_val = _check_split(val, "val", x_train.shape[1], y_train.shape[1])
  x_test, y_test = _check_split(test, "test", x_train.shape[1], y_train.shape[1])
  if solver not in SOLVERS:
    raise ValueError(f"run_linear_probe: solver {solver!r} is not one of {SOLVERS}")
  if solver == "adam" and (eval_every < 1 or max_epochs < eval_every):
    raise ValueError(f"run_linear_probe: need 1 <= eval_every ({eval_every}) <= max_epochs "
                     f"({max_epochs})")
  if solver == "lbfgs" and (max_iters < 1 or tol < 0 or batch_size is not None):
    raise ValueError(f"run_linear_probe: lbfgs needs max_iters >= 1 ({max_iters}), tol >= 0 "
                     f"({tol}) and the full batch (batch_size={batch_size})")
  val_pos = y_val.sum(axis=0)
  if not np.any((val_pos > 0) & (val_pos < y_val.shape[0])):
    raise ValueError("run_linear_probe: no class has both positives and negatives in val, so "
                     "nothing can be selected on validation")
  grid = dict(DEFAULT_GRID if grid is None else grid)
  unknown = set(grid) - {"weight_decay", "learning_rate"}
  if unknown:
    raise ValueError(f"run_linear_probe: unknown grid keys {sorted(unknown)}; "
                     "use weight_decay and learning_rate")
  points = list(itertools.product(grid.get("weight_decay", DEFAULT_GRID["weight_decay"]),
                                  grid.get("learning_rate", DEFAULT_GRID["learning_rate"])))
  if solver == "lbfgs":  # The learning rate is Adam's; L-BFGS fits each weight decay once.
    points = list(dict.fromkeys((wd, points[0][1]) for wd, _ in points))
  weight_decays = np.array([p[0] for p in points], dtype=np.float32)
  learning_rates = np.array([p[1] for p in points], dtype=np.float32)

  feature_mean, feature_std = _feature_stats(x_train)
  x_train, x_val, x_test = ((x - feature_mean) / feature_std for x in (x_train, x_val, x_test))
  num_features, num_classes = x_train.shape[1], y_train.shape[1]
  num_points = len(points)

  if solver == "adam":
    params = {"w": jnp.zeros((num_points, num_features, num_classes), jnp.float32),
              "b": jnp.zeros((num_points, num_classes), jnp.float32)}
    best_params, best_epoch, best_auc = _fit_adam(
        params, x_train, y_train, x_val, y_val, weight_decays, learning_rates,
        np.random.default_rng(seed), batch_size, max_epochs, eval_every, patience)
  else:
    best_params, best_epoch, best_auc = _fit_lbfgs(
        x_train, y_train, x_val, y_val, weight_decays, max_iters, tol)

  chosen = int(np.argmax(best_auc))  # ties: first grid point in order
  w, b = best_params["w"][chosen], best_params["b"][chosen]
  val_scores = x_val @ w + b
  thresholds = metrics.best_f1_thresholds(y_val, val_scores)
  val_metrics = metrics.evaluate_multilabel(y_val, val_scores, thresholds, n_bootstrap=0)
  # The test fold is touched here, once, with everything already fixed.
  test_scores = x_test @ w + b
  test_metrics = metrics.evaluate_multilabel(y_test, test_scores, thresholds,
                                             n_bootstrap=n_bootstrap, seed=bootstrap_seed)
  hparams = {"weight_decay": float(points[chosen][0]),
             "learning_rate": float(points[chosen][1]),
             "epochs": int(best_epoch[chosen]),
             "batch_size": batch_size,
             "solver": solver,
             "at_grid_edge": grid_edge(weight_decays, weight_decays[chosen]) is not None}
  grid_results = [{"weight_decay": float(p[0]), "learning_rate": float(p[1]),
                   "epochs": int(best_epoch[g]), "val_auroc": float(best_auc[g])}
                  for g, p in enumerate(points)]
  head = {"feature_mean": feature_mean, "feature_std": feature_std, "w": w, "b": b}
  return ProbeResult(test_metrics=test_metrics, val_metrics=val_metrics, hparams=hparams,
                     thresholds=thresholds, grid_results=grid_results, test_scores=test_scores,
                     val_scores=val_scores, head=head)


def _mean_std(values: Sequence[float]) -> dict:
  values = np.asarray(values, dtype=np.float64)
  return {"mean": float(np.mean(values)),
          "std": float(np.std(values, ddof=1)) if values.size > 1 else 0.0,
          "values": values.tolist()}


def run_label_fractions(train, val, test, fractions: Sequence[float] = (0.01, 0.1, 1.0),
                        seeds: Sequence[int] = (0, 1, 2), cover_all: bool = False,
                        **probe_kwargs: Any) -> dict:
  """Linear probes on stratified fractions of the training set, mean ± std over seeds.

  Returns `{fraction: {"runs": [ProbeResult], "subset_sizes": [...], "seeds": [...],
  "macro_auroc"|"macro_auprc"|"macro_f1": {"mean", "std", "values"}}}` (std with ddof=1).
  At fraction 1 one run is made (the subset is the whole set), with the first seed.
  """
  x_train, y_train = _check_split(train, "train")
  out = {}
  for fraction in fractions:
    run_seeds = list(seeds) if fraction < 1 else list(seeds)[:1]
    runs, sizes = [], []
    for seed in run_seeds:
      idx = stratify.stratified_subset(y_train, fraction, seed, cover_all=cover_all)
      runs.append(run_linear_probe((x_train[idx], y_train[idx]), val, test, seed=seed,
                                   **probe_kwargs))
      sizes.append(int(idx.size))
    summary = {"runs": runs, "subset_sizes": sizes, "seeds": run_seeds}
    for name in ("macro_auroc", "macro_auprc", "macro_f1"):
      summary[name] = _mean_std([r.test_metrics[name]["value"] for r in runs])
    out[fraction] = summary
  return out


# ----------------------------------------------------------------------------------------------
# The evaluator: config section `evals.linear_probe`.


def probe_kwargs(probe_cfg, n_bootstrap: int) -> dict:
  """`run_linear_probe` keyword arguments from a `probe` config section."""
  # solver, max_iters and tol are optional, so probe sections written before them still read.
  return dict(grid={"weight_decay": tasks_lib.parse_list(probe_cfg.weight_decays, float),
                    "learning_rate": [float(probe_cfg.learning_rate)]},
              max_epochs=int(probe_cfg.max_epochs), eval_every=int(probe_cfg.eval_every),
              patience=int(probe_cfg.patience), n_bootstrap=int(n_bootstrap),
              solver=str(probe_cfg.get("solver", "adam")),
              max_iters=int(probe_cfg.get("max_iters", 500)),
              tol=float(probe_cfg.get("tol", 1e-4)))


def fraction_results(fraction_runs: dict) -> dict:
  """{str(fraction): macro means over seeds + every run's choices and metrics} (JSON-able)."""
  out = {}
  for fraction, summary in fraction_runs.items():
    out[str(fraction)] = {
        **{k: summary[k] for k in ("macro_auroc", "macro_auprc", "macro_f1")},
        "runs": [{"seed": seed, "subset_size": size, "hparams": run.hparams,
                  "val": tasks_lib.metric_summary(run.val_metrics),
                  "test": tasks_lib.metric_summary(run.test_metrics),
                  "per_class_test_auroc": run.test_metrics["per_class"]["auroc"],
                  "grid": run.grid_results}
                 for seed, size, run in zip(summary["seeds"], summary["subset_sizes"],
                                            summary["runs"])]}
  return out


def full_probe(encoder, data: tasks_lib.TaskData, probe_cfg, n_bootstrap: int) -> ProbeResult:
  """The 100 % probe on pooled features (what the shift suite scores corrupted inputs with)."""
  splits = [(data.features(encoder, s), data.labels[s]) for s in tasks_lib.SPLITS]
  return run_linear_probe(*splits, **probe_kwargs(probe_cfg, n_bootstrap))


def shared_full_probe(context, encoder, data: tasks_lib.TaskData, probe_cfg,
                      n_bootstrap: int) -> ProbeResult:
  """The 100 % pooled probe of this encoder and task: the linear-probe evaluator's, if it ran."""
  key = ("full_probe", encoder.cache_key, data.task)
  if key not in context.shared:
    context.shared[key] = full_probe(encoder, data, probe_cfg, n_bootstrap)
  return context.shared[key]


def probe_paired_difference(results: dict, encoder_a: str, encoder_b: str, task: str,
                            n_bootstrap: int = 1000, seed: int = 0) -> dict:
  """Encoder A minus encoder B, 100 % linear probe on the test records of `task`: macro AUROC
  and macro F1 (each probe's validation thresholds), paired bootstrap CIs.

  Reads the stored 100 % probe scores and test labels, so `results` may also be the JSON of an
  earlier evaluation (or two of them merged, when they share the test records).
  """
  labels = np.asarray(results["meta"]["test_labels"][task])
  runs = []
  for name in (encoder_a, encoder_b):
    entry = results["linear_probe"][name][task].get("1.0")
    if entry is None or "test_scores" not in entry["runs"][0]:
      raise ValueError(f"no stored 100 % probe scores for {name!r} on {task!r}")
    runs.append(entry["runs"][0])
  return metrics.paired_difference(
      labels, np.asarray(runs[0]["test_scores"]), np.asarray(runs[1]["test_scores"]),
      np.asarray(runs[0]["thresholds"]), np.asarray(runs[1]["thresholds"]),
      n_bootstrap=n_bootstrap, seed=seed)


def offered_feature_kinds(features_setting, encoder, name: Optional[str] = None) -> list[str]:
  """The kinds of a `probe.features` setting that `encoder` provides, in the setting's order;
  ValueError naming the encoder (`name`, default its own) when it provides none."""
  kept = [k for k in tasks_lib.parse_list(features_setting) if k in encoder.feature_kinds]
  if not kept:
    raise ValueError(f"config.probe.features={features_setting!r}: encoder "
                     f"{(name or encoder.name)!r} provides none of them (it has "
                     f"{sorted(encoder.feature_kinds)})")
  return kept


def preferred_kind(runs_by_kind: dict) -> tuple[str, dict]:
  """(the feature kind with the best mean validation macro AUROC over its runs, {kind: that
  mean}) for one label fraction's probe runs per kind; ties: the first kind."""
  scores = {kind: float(np.mean([r.val_metrics["macro_auroc"]["value"] for r in runs]))
            for kind, runs in runs_by_kind.items()}
  return max(scores, key=scores.get), scores


class Evaluator(registry.EvaluatorBase):
  """Linear probe at every label fraction per task, feature kind chosen on validation.

  Config: tasks, fractions, seeds (subsets below 100 %), n_bootstrap, probe (solver,
  weight_decays, learning_rate, max_epochs, eval_every, patience, max_iters, tol, features).
  """

  def __init__(self, config, context):
    super().__init__(config, context)
    self.tasks = registry.eval_tasks(config, context)
    self.fractions = tasks_lib.parse_list(config.fractions, float)
    self.seeds = tasks_lib.parse_list(config.seeds, int)

  def run(self, encoder) -> dict:
    return {"linear_probe": {task: self.run_task(encoder, self.context.task_data(task))
                             for task in self.tasks}}

  def feature_kinds(self, encoder) -> list[str]:
    """The feature kinds of `probe.features` that this encoder provides."""
    return offered_feature_kinds(self.config.probe.features, encoder)

  def run_task(self, encoder, data: tasks_lib.TaskData) -> dict:
    """Every label fraction of one task; with several `probe.features` every kind is probed
    and, per fraction, the one with the best mean validation macro AUROC is reported
    (`feature`; every kind's score in `val_by_feature`). The 100 % pooled probe is kept in
    the context for the shift suite."""
    runs_by_kind = {}
    kinds = self.feature_kinds(encoder)
    data.prepare(encoder, kinds)
    for kind in kinds:
      splits = [(data.features(encoder, s, kind), data.labels[s]) for s in tasks_lib.SPLITS]
      runs_by_kind[kind] = run_label_fractions(
          *splits, fractions=self.fractions, seeds=self.seeds,
          **probe_kwargs(self.config.probe, self.config.n_bootstrap))
    results = {}
    for fraction in next(iter(runs_by_kind.values())):
      chosen, scores = preferred_kind(
          {kind: runs[fraction]["runs"] for kind, runs in runs_by_kind.items()})
      entry = fraction_results({fraction: runs_by_kind[chosen][fraction]})[str(fraction)]
      if fraction == 1.0:  # One run: keep what a paired comparison of encoders needs.
        run = runs_by_kind[chosen][fraction]["runs"][0]
        # Rounded in float64: a float32 rounded to 5 decimals still prints 17 digits in JSON.
        entry["runs"][0]["test_scores"] = np.round(np.asarray(run.test_scores, np.float64),
                                                   5).tolist()
        entry["runs"][0]["thresholds"] = np.asarray(run.thresholds, float).tolist()
      entry["feature"] = chosen
      entry["val_by_feature"] = scores
      results[str(fraction)] = entry
    pooled = runs_by_kind.get("pooled")
    if pooled is not None and 1.0 in pooled:
      self.context.shared[("full_probe", encoder.cache_key, data.task)] = (
          pooled[1.0]["runs"][0])
    return results

  def scalars(self, results: dict) -> dict:
    """{"linear_probe/<task>/<fraction>/<metric>": test value (mean over seeds)}."""
    return {f"linear_probe/{task}/{fraction}/{metric}": float(entry[metric]["mean"])
            for task, per_fraction in (results.get("linear_probe") or {}).items()
            for fraction, entry in per_fraction.items()
            for metric in ("macro_auroc", "macro_auprc", "macro_f1")}
