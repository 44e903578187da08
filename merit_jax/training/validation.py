"""Train-time validation: losses on the validation split, reconstruction plots, evaluators.

The losses come from the run's eval step over `config.eval.split` (at most
`config.eval.max_batches` batches of `config.eval.batch_size`), weighted by the real records of
each batch, with fixed masks so numbers stay comparable across steps. Everything else comes
from the evaluators of `config.evals` named in `config.eval.evaluators` (built by
`evaluators.registry`, reading at most `config.eval.max_records` records per split), run on an
`Encoder` of the parameters being trained: one with `every` > 0 at the multiples of `every`
and at the last step, one with `every` = 0 only at the last step. Validation runs every
`config.eval_every` steps, at the last step, and whenever an evaluator is due.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from merit_jax import encoder as encoder_lib
from merit_jax import parallel
from merit_jax import plots
from merit_jax.data import pipeline
from merit_jax.evaluators import features
from merit_jax.evaluators import registry
from merit_jax.evaluators import tasks


def _pad_rows(array: np.ndarray, multiple: int) -> np.ndarray:
  extra = (-array.shape[0]) % multiple
  if not extra:
    return array
  return np.concatenate([array, np.repeat(array[-1:], extra, axis=0)], axis=0)


def _replicate(array: np.ndarray, mesh) -> Any:
  """A host array every process holds in full, as a replicated global array over `mesh`."""
  if mesh is None or jax.process_count() == 1:
    return jnp.asarray(array)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def _to_global_batch(batch: Mapping[str, np.ndarray], mesh) -> dict:
  """Host batches (identical on every process) as global arrays sharded like training."""
  if jax.process_count() == 1:
    return dict(batch)
  sharding = parallel.batch_sharding(mesh)
  return {k: jax.make_array_from_callback(v.shape, sharding, lambda index, v=v: v[index])
          for k, v in batch.items()}


def _fetch(tree: Any) -> Any:
  """Device -> host for outputs that may span several processes."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)


def _make_reconstruct(model, config, mesh):
  """Jitted (params, ecg, rng) -> (reconstruction (B, leads, S) in input units, patch mask)."""
  norm_pix = bool(config.objective.norm_pix_loss)

  def reconstruct(params, ecg, rng):
    tokens = jnp.zeros((ecg.shape[0], 2), jnp.int32)
    out = model.apply({"params": params}, ecg, tokens, rng, reconstruction=True,
                      contrastive=False)
    pred, target = out["pred"].astype(jnp.float32), out["target"].astype(jnp.float32)
    if norm_pix:  # Predictions live in per-patch normalised units: map back to the input's.
      mean = target.mean(-1, keepdims=True)
      std = jnp.sqrt(target.var(-1, keepdims=True) + 1e-6)
      pred = pred * std + mean
    b, n, patch = pred.shape
    leads = model.num_leads
    return (pred.reshape(b, leads, (n // leads) * patch),
            out["mask"].reshape(b, leads, n // leads))

  out_sharding = None
  if mesh is not None:  # Replicated: every process can read the plot's inputs.
    out_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  jitted = jax.jit(reconstruct, out_shardings=out_sharding)
  return lambda params, ecg, rng: jax.device_get(
      jitted(params, _replicate(np.asarray(ecg), mesh), rng))


class Validator:
  """Validation of one training run (see module docstring)."""

  def __init__(self, run, plot_dir: str | None):
    """`run`: a `training.setup.Run`; `plot_dir`: where plots go (None: no plots)."""
    self.run = run
    self.config = run.config
    self.plot_dir = plot_dir
    self._reconstruct = _make_reconstruct(run.model, self.config, run.mesh)
    # Built now, so a bad evaluator config stops the run before its first step.
    self.evaluators = self._build_evaluators()

  def _build_evaluators(self) -> dict:
    # A fresh feature store each time: features of earlier steps are not kept in memory
    # (the splits are read again, as the validation losses read theirs).
    store = features.FeatureStore(self.config.data, None,
                                  batch_size=int(self.config.eval.batch_size),
                                  max_records=self.config.eval.max_records, progress=False)
    context = registry.EvalContext(data_cfg=self.config.data, store=store)
    return registry.build_evaluators(self.config.evals, context,
                                     names=tasks.parse_list(self.config.eval.evaluators))

  def _due(self, step: int) -> list[str]:
    return [name for name, ev in self.evaluators.items()
            if step == self.config.total_steps or (ev.every and step % ev.every == 0)]

  def is_due(self, step: int) -> bool:
    """Whether validation runs after training step `step`."""
    return (step % self.config.eval_every == 0 or step == self.config.total_steps
            or bool(self._due(step)))

  def __call__(self, state, step: int) -> tuple[dict, dict]:
    """(scalars for the writer, full evaluator results) of validation at `step`."""
    scalars = self.losses(state, step)
    due = self._due(step)
    results = {}
    if due:
      encoder = encoder_lib.Encoder.from_params(
          self.run.model, state.params, self.config, self.run.tokenizer, mesh=self.run.mesh,
          batch_size=int(self.config.eval.batch_size), step=step)
      evaluators = self._build_evaluators()
      for name in due:
        evaluator = evaluators[name]
        results[name] = evaluator.run(encoder)
        scalars.update(evaluator.scalars(results[name]))
    return scalars, results

  def losses(self, state, step: int) -> dict:
    """Validation losses (and, on the main process, a reconstruction PNG)."""
    config = self.config
    text_key = pipeline.text_batch_key(self.run.text_input)
    sums: dict[str, float] = {}
    count = 0
    plotted = False
    rng = jax.random.key(config.seed + 1)  # Fixed masks: validation numbers stay comparable.
    devices = jax.device_count()
    for i, batch in enumerate(pipeline.iterate_split(config.data, config.eval.split,
                                                     config.eval.batch_size,
                                                     self.run.text_input)):
      if config.eval.max_batches is not None and i >= config.eval.max_batches:
        break
      n = int(np.asarray(batch["valid"]).sum())
      model_batch = {"ecg": _pad_rows(batch["ecg"], devices),
                     text_key: _pad_rows(batch[text_key], devices)}
      metrics = self.run.eval_step(state, _to_global_batch(model_batch, self.run.mesh), rng)
      metrics = _fetch(metrics)
      # Batch means, weighted by the real records (the padded tail repeats the last record).
      for key, value in metrics.items():
        sums[key] = sums.get(key, 0.0) + float(value) * n
      count += n
      if not plotted and config.eval.num_plot_ecgs:
        self._plot(state, batch, min(config.eval.num_plot_ecgs, n), rng, step)
        plotted = True
    if not count:
      raise ValueError(f"validation split {config.eval.split!r} yielded no records")
    out = {f"val_{k}": v / count for k, v in sums.items()
           if k not in ("skipped", "nonfinite_steps")}
    out["val_records"] = count
    return out

  def _plot(self, state, batch, k: int, rng, step: int) -> None:
    recon, mask = self._reconstruct(state.params, batch["ecg"][:k], rng)  # All processes.
    if self.plot_dir and jax.process_index() == 0:
      plots.plot_reconstructions(
          os.path.join(self.plot_dir, "plots", f"reconstruction_{step:07d}.png"),
          batch["ecg"][:k], recon, mask, self.config.model.patch_size,
          self.config.data.preprocess.sample_rate,
          titles=[f"ecg_id {int(e)}" for e in batch["ecg_id"][:k]])
