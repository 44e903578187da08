"""The fine-tuning evaluator (config `evals.finetune`, type `finetune_eval`).

Encoder + linear head per task and label fraction (`finetune.run_finetune_fractions`: choices
on validation, test scored once), results in the section `finetune` with the layout of the
linear probe's. Only MERIT encoders are fine-tuned; random convolutions are not a network.
"""

from __future__ import annotations

from merit_jax.evaluators import finetune
from merit_jax.evaluators import linear_probe
from merit_jax.evaluators import registry
from merit_jax.evaluators import tasks as tasks_lib


class Evaluator(registry.EvaluatorBase):
  """Fine-tuning per task. Config: tasks, fractions, seeds, learning_rates, max_epochs,
  patience, batch_size, weight_decay, n_bootstrap, progress."""
  sections = ("finetune",)

  def __init__(self, config, context):
    super().__init__(config, context)
    self.tasks = registry.eval_tasks(config, context)

  def run(self, encoder) -> dict:
    if encoder.model is None:
      return {}  # Not a network (random convolutions): nothing to fine-tune.
    return {"finetune": {task: self.run_task(encoder, self.context.task_data(task))
                         for task in self.tasks}}

  def run_task(self, encoder, data: tasks_lib.TaskData) -> dict:
    f = self.config
    embed_fn, encoder_params = finetune.encoder_embed_fn(encoder)
    runs = finetune.run_finetune_fractions(
        embed_fn, encoder_params, *[(data.signals(s), data.labels[s]) for s in tasks_lib.SPLITS],
        fractions=tasks_lib.parse_list(f.fractions, float),
        seeds=tasks_lib.parse_list(f.seeds, int),
        learning_rates=tasks_lib.parse_list(f.learning_rates, float),
        max_epochs=int(f.max_epochs), patience=int(f.patience), batch_size=int(f.batch_size),
        weight_decay=float(f.weight_decay), n_bootstrap=int(f.n_bootstrap),
        progress=bool(f.progress))
    return linear_probe.fraction_results(runs)

  def scalars(self, results: dict) -> dict:
    """{"finetune/<task>/<fraction>/<metric>": test value (mean over seeds)}."""
    return {f"finetune/{task}/{fraction}/{metric}": float(entry[metric]["mean"])
            for task, per_fraction in (results.get("finetune") or {}).items()
            for fraction, entry in per_fraction.items()
            for metric in ("macro_auroc", "macro_auprc", "macro_f1")}
