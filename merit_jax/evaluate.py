"""Evaluation entry point: checkpoints (and baselines) → result tables, JSON and plots.

  python -m merit_jax.evaluate --config=configs/evaluate.py --config.checkpoint=RUN_DIR \
      [--config.output_dir=DIR] [--config.baselines=random_init,random_conv]

Runs the evaluators `config.evaluators` names (sections of `config.evals`, built by
`evaluators.registry.build_evaluators`) on every encoder: the checkpoint plus the requested
baselines (`random_init`: the same architecture untrained; `random_conv[@K]`: random
convolutions), all through the same code. The evaluators are `linear_probe`, `finetune`,
`zero_shot` (with its prototype and text-only-ceiling diagnostics), `retrieval`, `shift` and
`transfer`; each module's docstring gives its protocol. Every choice is made on validation and
the test split is scored once.

Splits: the TFDS splits (PTB-XL folds 1–8 train, 9 validation, 10 test), or with
`merl_splits=True` MERL's published split files (`evaluators/tasks.py`; tasks without MERL
files, `all` and `diagnostic`, are then skipped). How many classes of each task are scored, and
why not the others, is a table of the markdown (`meta.class_scoring` in the JSON).

Writes into `results_dir` (default `<output_dir>/results`, output_dir default
`<checkpoint>/eval`): `<name>.md` (markdown tables, value [95 % CI]), `<name>.json` (everything,
including per-run hyperparameters and per-class metrics), `<name>_fractions.png` and
`<name>_shift.png` (`merit_jax.reporting`); the feature cache goes to `<output_dir>/features/`;
the headline numbers also go to the metric writers (TensorBoard, metrics.jsonl) under
`<output_dir>/results/<name>`.

Python API: `build_encoders(config)`, `evaluate_encoders(encoders, data_cfg, config,
output_dir, store=None) -> results`, `run(config) -> results`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Optional, Sequence

from absl import app
import ml_collections
from ml_collections import config_flags

from merit_jax import config_validation
from merit_jax.encoder import Encoder
from merit_jax.evaluators import features as features_lib
from merit_jax.evaluators import registry
from merit_jax.evaluators import tasks as tasks_lib
from merit_jax.reporting import writer

SPLITS = tasks_lib.SPLITS


def eval_data_config(run_config, config) -> ml_collections.ConfigDict:
  """The checkpoint's data config with the evaluation's overrides applied."""
  data = ml_collections.ConfigDict(run_config.data.to_dict())
  if config.data.name:
    data.name = config.data.name
    data.sources = None
  for key in ("config", "data_dir"):
    if config.data[key]:
      data[key] = config.data[key]
  return data


def build_encoders(config) -> tuple[list, Any]:
  """The checkpoint's encoder and the baselines the config names; returns (encoders, run cfg)."""
  if not config.checkpoint:
    raise ValueError("config.checkpoint is required: the --workdir of a training run "
                     "(--config.checkpoint=DIR)")
  encoders = [Encoder.from_checkpoint(config.checkpoint, config.step, config.batch_size)]
  run_config = encoders[0].config
  encoders += baseline_encoders(config, run_config, encoders[0].tokenizer)
  return encoders, run_config


def baseline_encoders(config, run_config, tokenizer) -> list:
  """The `config.baselines` encoders, built for the architecture and data of `run_config`."""
  out = []
  for name in tasks_lib.parse_list(config.baselines):
    if name == "random_init":
      out.append(Encoder.random_init(run_config, tokenizer, int(config.random_init.seed),
                                     config.batch_size))
    elif name.startswith("random_conv"):
      # random_conv@K: K kernels instead of config.random_conv.num_kernels, e.g. to match a
      # pretrained encoder's feature count (2 features per kernel and lead).
      _, _, kernels = name.partition("@")
      out.append(Encoder.random_conv(
          int(kernels or config.random_conv.num_kernels), int(config.random_conv.seed),
          int(run_config.data.preprocess.num_samples), name=name))
  return out


def _skipped_tasks(config) -> tuple[list, dict]:
  """(tasks evaluated, {task: why not}): MERL publishes split files for four tasks only."""
  tasks = tasks_lib.resolve_tasks(config.tasks)
  if not config.merl_splits:
    return tasks, {}
  # The other tasks (all, diagnostic) are left out of a MERL-split run rather than mixed with
  # the TFDS folds.
  skipped = {t: "MERL publishes no split files for it" for t in tasks
             if t not in tasks_lib.MERL_STEMS}
  if len(skipped) == len(tasks):
    raise ValueError(f"merl_splits: none of the tasks {sorted(skipped)} has MERL split "
                     f"files (only {sorted(tasks_lib.MERL_STEMS)})")
  for t in skipped:
    print(f"evaluate: skipping task {t} with merl_splits: MERL publishes no split files for "
          "it", flush=True)
  return [t for t in tasks if t not in skipped], skipped


def feature_store(data_cfg, config, output_dir: Optional[str],
                  progress: Optional[bool] = None) -> features_lib.FeatureStore:
  """The evaluation's `FeatureStore`, caching under `<output_dir>/features` (none without one)."""
  return features_lib.FeatureStore(
      data_cfg, None if output_dir is None else os.path.join(output_dir, "features"),
      sources=features_lib.data_sources(data_cfg, bool(config.data.all_sources)),
      batch_size=int(config.batch_size), max_records=config.max_records,
      progress=bool(config.progress if progress is None else progress))


def evaluate_encoders(encoders: Sequence, data_cfg, config, output_dir: Optional[str],
                      store=None, metrics_dir: Optional[str] = None) -> dict:
  """Runs the configured evaluators for every encoder; returns the results dict.

  With `metrics_dir`, each encoder's headline numbers (`Evaluator.scalars`) also go to a
  `run_logging.MetricWriter` there (TensorBoard and metrics.jsonl), keyed `<encoder>/<name>`.
  """
  config_validation.validate_evaluate_config(config)
  names = tasks_lib.parse_list(config.evaluators)
  tasks, skipped_tasks = _skipped_tasks(config)
  if store is None:
    store = feature_store(data_cfg, config, output_dir)
  context = registry.EvalContext(
      data_cfg=data_cfg, store=store, output_dir=output_dir,
      merl_splits=bool(config.merl_splits), merl_dir=config.merl_dir,
      progress=bool(config.progress))
  evaluators = registry.build_evaluators(config.evals, context, names)
  meta = {"evaluators": names, "tasks": tasks,
          "fractions": tasks_lib.parse_list(config.fractions, float),
          "seeds": tasks_lib.parse_list(config.seeds, int),
          "merl_splits": bool(config.merl_splits), "n_bootstrap": int(config.n_bootstrap),
          "data": {"name": data_cfg.get("name"), "config": data_cfg.get("config"),
                   "sources": [s.__dict__ for s in (store.sources or [])]},
          "encoders": [{"name": e.name, "cache_key": e.cache_key, "step": e.step}
                       for e in encoders],
          "records": {}, "classes": {}, "coverage": {}, "class_scoring": {},
          "skipped_tasks": skipped_tasks}
  for evaluator in evaluators.values():
    meta.update(evaluator.meta())
  results: dict[str, Any] = {"meta": meta}
  # Each evaluator's main section in config order, then the extra ones (the zero-shot
  # diagnostics), every encoder present in each.
  sections = [e.sections[0] for e in evaluators.values()]
  sections += [s for e in evaluators.values() for s in e.sections[1:]]
  for section in sections:
    results[section] = {e.name: {} for e in encoders}
  for task in tasks:
    d = context.task_data(task)
    meta["classes"][task] = d.class_names
    meta["records"][task] = {s: int(d.labels[s].shape[0]) for s in SPLITS}
    # Test labels beside the 100 % probes' test scores: enough to compare any two encoders
    # on the same records afterwards (linear_probe.probe_paired_difference).
    meta.setdefault("test_labels", {})[task] = d.labels["test"].astype(int).tolist()
    meta["class_scoring"][task] = d.class_scoring
    if d.coverage:
      meta["coverage"][task] = d.coverage
  metric_writer = None
  if metrics_dir:
    from merit_jax import run_logging  # pylint: disable=g-import-not-at-top
    metric_writer = run_logging.MetricWriter(metrics_dir)
  bar = None
  if config.progress:
    from tqdm import auto as tqdm_auto  # pylint: disable=g-import-not-at-top
    bar = tqdm_auto.tqdm(total=len(encoders) * len(evaluators), desc="evaluate",
                         file=sys.stderr)
  for encoder in encoders:
    scalars = {}
    for name, evaluator in evaluators.items():
      if bar is not None:
        bar.set_postfix_str(f"{encoder.name}/{name}")
      out = evaluator.run(encoder)
      for section, value in out.items():
        results[section][encoder.name] = value
      scalars.update(evaluator.scalars(out))
      if bar is not None:
        bar.update(1)
    if metric_writer is not None:
      metric_writer.write_scalars(int(encoder.step or 0), {
          f"{encoder.name}/{k}": v for k, v in scalars.items()}, split="evaluation")
  if bar is not None:
    bar.close()
  if metric_writer is not None:
    metric_writer.close()
  return results


def run(config, command: Optional[str] = None) -> dict:
  """Loads the checkpoint and baselines, evaluates, writes the outputs; returns the results."""
  config_validation.validate_evaluate_config(config)
  t0 = time.time()
  encoders, run_config = build_encoders(config)
  output_dir = config.output_dir or os.path.join(tasks_lib.expand(config.checkpoint), "eval")
  data_cfg = eval_data_config(run_config, config)
  results = evaluate_encoders(encoders, data_cfg, config, output_dir,
                              metrics_dir=os.path.join(output_dir, "metrics", config.name))
  results["meta"]["checkpoint"] = tasks_lib.expand(config.checkpoint)
  results["meta"]["wall_time_s"] = time.time() - t0
  results_dir = config.results_dir or os.path.join(output_dir, "results")
  paths = writer.write_results(results, results_dir, config.name, command)
  print(f"wrote {', '.join(paths.values())}", flush=True)
  results["paths"] = paths
  return results


_CONFIG = None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG is None or _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. --config=configs/evaluate.py "
                         "--config.checkpoint=RUN_DIR")
  command = "python -m merit_jax.evaluate " + " ".join(sys.argv[1:])
  try:
    run(_CONFIG.value, command)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"merit_jax.evaluate: {e}")


def cli_main():
  """The `merit-evaluate` / `python -m merit_jax.evaluate` program."""
  global _CONFIG
  from merit_jax import cli  # pylint: disable=g-import-not-at-top
  # Defined only when run as a program: merit_jax.ablations imports this module and owns its
  # own --eval_config.
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Evaluation config, e.g. configs/evaluate.py.", lock_config=True)
  app.run(main, flags_parser=cli.make_flags_parser("merit_jax.evaluate"))


if __name__ == "__main__":
  cli_main()
