"""Evaluators as plug-ins: the shared context and `build_evaluators`.

Each evaluator is one module under `merit_jax/evaluators/` with one class `Evaluator`, built
from its config section:

  config.evals.<name> = dict(type="<module>", every=<steps>, ...)   # `type` defaults to name

`build_evaluators(config.evals, context)` imports `merit_jax.evaluators.<type>` and builds
`module.Evaluator(section, context)`. An evaluator has

- `every`: training steps between runs (0: only when asked, e.g. by `merit_jax.evaluate`);
- `sections`: the results sections it fills (usually one, named after its type);
- `run(encoder) -> {section: result}`: JSON-able results for one encoder;
- `scalars(results) -> {name: float}`: the headline numbers for metric writers;
- `meta() -> dict`: what it adds to the results' `meta` (e.g. skipped transfer targets).

`merit_jax.evaluate`, `merit_jax.ablations` and training-time validation all go through here;
adding an evaluator is one new module plus a config entry.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Optional, Sequence

import ml_collections


@dataclasses.dataclass
class EvalContext:
  """What every evaluator may use besides its own config section.

  Attributes:
    data_cfg: the run's data config (sources, preprocess).
    store: a `features.FeatureStore` over `data_cfg` (features per split, cached).
    output_dir: where caches (transfer features) go; None keeps them in memory.
    label_names: {task: [class names]}; None reads them from the dataset's metadata.
    merl_splits: MERL's published split files instead of the TFDS folds (`tasks.task_data`).
    merl_dir: their folder; None looks for labels_merl/ under the data's manual_dir.
    progress: progress bars.
    shared: results evaluators hand each other within one evaluation (the task data, the
      100 % linear probes the shift suite reuses), keyed by `(kind, ...)`.
  """
  data_cfg: Any
  store: Any
  output_dir: Optional[str] = None
  label_names: Optional[dict] = None
  merl_splits: bool = False
  merl_dir: Optional[str] = None
  progress: bool = False
  shared: dict = dataclasses.field(default_factory=dict)

  def task_data(self, task: str):
    """The `tasks.TaskData` of one task, read once per context."""
    from merit_jax.evaluators import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
    key = ("task_data", task)
    if key not in self.shared:
      if self.label_names is None:
        from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
        self.label_names = pipeline.label_names(self.data_cfg)
      self.shared[key] = tasks_lib.task_data(self.store, task, self.label_names, self.data_cfg,
                                             self.merl_splits, self.merl_dir)
    return self.shared[key]


class EvaluatorBase:
  """What every `Evaluator` shares: its config, context, schedule and results sections."""

  def __init__(self, config: ml_collections.ConfigDict, context: EvalContext):
    self.config = config
    self.context = context
    self.every = int(config.every)

  @property
  def sections(self) -> tuple:
    """The results sections `run` fills; by default the one named after the module."""
    return (type(self).__module__.rsplit(".", 1)[-1],)

  def meta(self) -> dict:
    return {}

  def run(self, encoder) -> dict:
    raise NotImplementedError

  def scalars(self, results: dict) -> dict:
    """{"<section>/<task>/<metric>": value} of every macro metric found (test split)."""
    out = {}
    for section, per_task in results.items():
      for task, entry in (per_task or {}).items():
        if isinstance(entry, dict):
          for metric in ("macro_auroc", "macro_auprc", "macro_f1"):
            value = (entry.get(metric) or {}).get("value") if isinstance(
                entry.get(metric), dict) else None
            if value is not None:
              out[f"{section}/{task}/{metric}"] = float(value)
    return out


def eval_tasks(config: ml_collections.ConfigDict, context: EvalContext) -> list:
  """The full names of `config.tasks`; with MERL's split files, only tasks that have them."""
  from merit_jax.evaluators import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  names = tasks_lib.resolve_tasks(config.tasks)
  if context.merl_splits:
    names = [t for t in names if t in tasks_lib.MERL_STEMS]
  return names


def build_evaluators(evals_cfg: ml_collections.ConfigDict, context: EvalContext,
                     names: Optional[Sequence[str]] = None) -> dict:
  """{name: Evaluator} for the sections of `evals_cfg` (only `names`, in that order, if given).

  Raises:
    ValueError: a name with no section, or a type with no module under merit_jax/evaluators.
  """
  names = list(evals_cfg.keys()) if names is None else list(names)
  out = {}
  for name in names:
    if name not in evals_cfg:
      raise ValueError(f"config.evals has no section {name!r}; it has {sorted(evals_cfg)}")
    section = evals_cfg[name]
    kind = section.get("type") or name
    try:
      module = importlib.import_module(f"merit_jax.evaluators.{kind}")
    except ModuleNotFoundError as e:
      if e.name != f"merit_jax.evaluators.{kind}":
        raise
      raise ValueError(f"config.evals.{name}.type={kind!r}: no module "
                       f"merit_jax/evaluators/{kind}.py") from None
    if not hasattr(module, "Evaluator"):
      raise ValueError(f"merit_jax/evaluators/{kind}.py defines no Evaluator class")
    out[name] = module.Evaluator(section, context)
  return out
