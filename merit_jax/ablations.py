"""The ablation grid: pretrain MERIT and its ablations with one config and one budget, evaluate.

  python -m merit_jax.ablations --config=configs/pretrain.py:<variant> --workdir=DIR \
      [--total_steps=N] [--variants=merit,masked_only,contrastive_only] \
      [--eval_config=configs/evaluate.py:quick] [--eval_config.tasks=super,rhythm] \
      [--baselines=random_init,random_conv] [--results_dir=DIR] [--name=ablations]

Variants (everything else in the config is shared, including the step budget):

- `merit`: L_rec + λ·L_NCE with λ = 1;
- `masked_only`: λ = 0 (masked ECG modelling only; the text tower is never trained, so its
  zero-shot and retrieval numbers are a chance-level check);
- `contrastive_only`: objective.reconstruction = False (ECG–text InfoNCE only);
- `merit@<λ>` (e.g. `merit@0.3`): MERIT with another text weight λ. When the grid holds two or
  more MERIT variants, λ is chosen on validation only (`select_on_validation`: mean validation
  macro AUROC of the probe runs below 100 % labels); the choice and every candidate's score go
  into the JSON (`meta.lambda_selection`) and a section at the end of the markdown.

Tasks: the evaluation config's, by default every PTB-XL task: superdiagnostic, subdiagnostic,
form, rhythm, and the paper's headline tasks all (71 statements) and diagnostic (44) (so the λ
criterion below averages over all six; `--eval_config.tasks=...` narrows it). Every table holds
macro F1 (thresholds fixed on validation) beside macro AUROC; zero-shot runs with its prompt set
and normalisation chosen on validation, beside the prototype and text-only-ceiling diagnostics.

Each variant trains through `merit_jax.train.train_and_evaluate(config, DIR/<variant>)` (which
resumes a sub-workdir that already holds checkpoints, so an interrupted grid picks up where it
stopped). The training-time linear-probe summary is switched off: the evaluation below does it
properly. Then every variant plus the requested baselines (a randomly initialised encoder of the
same config, random convolutions) go through `merit_jax.evaluate.evaluate_encoders` (the
evaluator registry) with one feature store, and the combined tables are written by
`merit_jax.reporting` to `<results_dir>/<name>.md` (+ .json, `_fractions.png`, `_shift.png`;
results_dir defaults to `DIR/results`), the headline numbers to the metric writers under
`DIR/eval/metrics/<name>`.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

from merit_jax import evaluate as evaluate_lib
# merit_jax.train defines --config (the pretraining config file, with --config.* overrides) and
# --workdir; the grid uses those same flags, so both commands read alike.
from merit_jax import train
from merit_jax import xla_defaults
from merit_jax.encoder import Encoder
from merit_jax.evaluators import linear_probe
from merit_jax.evaluators import tasks as tasks_lib
from merit_jax.reporting import markdown
from merit_jax.reporting import writer

_EVAL_CONFIG = config_flags.DEFINE_config_file(
    "eval_config", "configs/evaluate.py", "Evaluation config (configs/evaluate.py[:quick]).",
    lock_config=True)
_TOTAL_STEPS = flags.DEFINE_integer("total_steps", None,
                                    "Step budget of every variant (default: the config's).")
_VARIANTS = flags.DEFINE_list("variants", ["merit", "masked_only", "contrastive_only"],
                              "Variants to train and evaluate.")
_BASELINES = flags.DEFINE_list("baselines", ["random_init", "random_conv"],
                               "Baselines evaluated beside the variants.")
_RESULTS_DIR = flags.DEFINE_string("results_dir", None, "Where the tables go (default "
                                   "WORKDIR/results).")
_NAME = flags.DEFINE_string("name", "ablations", "Base name of the result files.")
_SKIP_TRAINING = flags.DEFINE_bool("skip_training", False,
                                   "Evaluate the existing sub-workdirs without training.")

# Variant → (display name, objective overrides).
VARIANTS = {
    "merit": ("MERIT (λ=1)", {"lambda_nce": 1.0, "reconstruction": True}),
    "masked_only": ("masked only (λ=0)", {"lambda_nce": 0.0, "reconstruction": True}),
    "contrastive_only": ("contrastive only", {"lambda_nce": 1.0, "reconstruction": False}),
}
# `merit@<λ>` names MERIT with another weight of the text term (e.g. merit@0.3).
LAMBDA_PREFIX = "merit@"


def resolve_variant(variant: str) -> tuple[str, dict]:
  """(display name, objective overrides) of a variant name (see `VARIANTS`, `merit@<λ>`)."""
  if variant in VARIANTS:
    return VARIANTS[variant]
  if variant.startswith(LAMBDA_PREFIX):
    try:
      lam = float(variant[len(LAMBDA_PREFIX):])
    except ValueError:
      lam = float("nan")
    if not lam > 0:
      raise ValueError(f"ablation variant {variant!r}: the text weight after '@' must be a "
                       "number > 0 (e.g. merit@0.3)")
    return f"MERIT (λ={lam:g})", {"lambda_nce": lam, "reconstruction": True}
  raise ValueError(f"unknown ablation variant {variant!r}; choose from {sorted(VARIANTS)} or "
                   f"{LAMBDA_PREFIX}<λ>")


def select_on_validation(results: dict, variants) -> dict | None:
  """Picks the MERIT λ (among the `merit`/`merit@<λ>` variants) by validation AUROC.

  The criterion is the mean validation macro AUROC of every linear-probe run below 100 %
  labels (all tasks, fractions and seeds): the low-label regime the method is for. Test
  numbers play no part. Returns None when fewer than two MERIT variants were trained.
  """
  probe = results.get("linear_probe") or {}
  candidates = [resolve_variant(v)[0] for v in variants
                if v == "merit" or v.startswith(LAMBDA_PREFIX)]
  if len(candidates) < 2:
    return None
  scores = {}
  for title in candidates:
    values = [run["val"]["macro_auroc"]["value"]
              for task in probe.get(title, {}).values()
              for fraction, entry in task.items() if float(fraction) < 1
              for run in entry["runs"]]
    if values:
      scores[title] = float(sum(values) / len(values))
  if not scores:
    return None
  return {"criterion": "mean validation macro AUROC of the linear-probe runs below 100 % "
                       "labels (all tasks, fractions, seeds)",
          "scores": scores, "selected": max(scores, key=scores.get)}


def paired_against_contrastive(results: dict, variants, eval_config) -> dict:
  """Each MERIT variant minus contrastive only: 100 % probe, paired bootstrap, per task.

  Empty when contrastive only or the 100 % probe is not part of the run (a run of the 1 % /
  10 % probes alone has no 100 % scores to pair).
  """
  if ("contrastive_only" not in variants or "linear_probe" not in results
      or 1.0 not in tasks_lib.parse_list(eval_config.fractions, float)):
    return {}
  reference = resolve_variant("contrastive_only")[0]
  out = {}
  for variant in variants:
    if variant != "merit" and not variant.startswith(LAMBDA_PREFIX):
      continue
    title = resolve_variant(variant)[0]
    out[title] = {task: linear_probe.probe_paired_difference(
        results, title, reference, task, int(eval_config.n_bootstrap), int(eval_config.seed))
                  for task in results["linear_probe"].get(title, {})}
  return out


def variant_config(config: ml_collections.ConfigDict, variant: str,
                   total_steps: int | None = None) -> ml_collections.ConfigDict:
  """A private copy of `config` with the variant's objective and the shared budget."""
  _, overrides = resolve_variant(variant)
  out = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    out.objective[key] = value
  if total_steps is not None:
    out.total_steps = int(total_steps)
  out.eval.evaluators = tuple(n for n in out.eval.evaluators if n != "linear_probe")
  return out


def train_variants(config, workdir: str, variants, total_steps=None) -> dict:
  """Trains each variant into WORKDIR/<variant>; returns {variant: (sub-workdir, wall s)}."""
  out = {}
  for variant in variants:
    sub = os.path.join(workdir, variant)
    print(f"=== training {variant} into {sub}", flush=True)
    t0 = time.time()
    train.train_and_evaluate(variant_config(config, variant, total_steps), sub)
    out[variant] = (sub, time.time() - t0)
  return out


def evaluate_variants(workdir: str, variants, eval_config, baselines, results_dir: str,
                      name: str, command: str | None = None, train_seconds=None) -> dict:
  """Evaluates the trained variants and the baselines together; writes the tables."""
  eval_config = eval_config.copy_and_resolve_references()
  eval_config.baselines = tuple(baselines)
  encoders = [Encoder.from_checkpoint(os.path.join(workdir, v),
                                      batch_size=int(eval_config.batch_size),
                                      name=resolve_variant(v)[0]) for v in variants]
  run_config = encoders[0].config
  encoders += evaluate_lib.baseline_encoders(eval_config, run_config, encoders[0].tokenizer)
  data_cfg = evaluate_lib.eval_data_config(run_config, eval_config)
  output_dir = os.path.join(workdir, "eval")
  results = evaluate_lib.evaluate_encoders(encoders, data_cfg, eval_config, output_dir,
                                           metrics_dir=os.path.join(output_dir, "metrics", name))
  results["meta"]["variants"] = {
      title: {"workdir": os.path.join(workdir, v), "objective": objective,
              "train_seconds": (train_seconds or {}).get(v)}
      for v in variants for title, objective in [resolve_variant(v)]}
  results["meta"]["total_steps"] = int(run_config.total_steps)
  results["meta"]["model"] = run_config.model.to_dict()
  selection = select_on_validation(results, variants)
  if selection:
    results["meta"]["lambda_selection"] = selection
  paired = paired_against_contrastive(results, variants, eval_config)
  if paired:
    results["paired_vs_contrastive_only"] = paired
  extra = (markdown.paired_markdown(paired) if paired else "") + (
      markdown.selection_markdown(selection) if selection else "")
  paths = writer.write_results(results, results_dir, name, command,
                               title="Ablations: MERIT vs its ablations vs baselines",
                               extra_markdown=extra)
  print(f"wrote {', '.join(paths.values())}", flush=True)
  results["paths"] = paths
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  xla_defaults.apply()  # Before the first JAX computation; see xla_defaults.py.
  pretrain_config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  if pretrain_config is None or not workdir:
    raise app.UsageError("--config (e.g. configs/pretrain.py:quick) and --workdir are required")
  for variant in _VARIANTS.value:
    try:
      resolve_variant(variant)
    except ValueError as e:
      raise app.UsageError(f"--variants: {e}") from None
  workdir = os.path.abspath(os.path.expanduser(workdir))
  command = "python -m merit_jax.ablations " + " ".join(sys.argv[1:])
  try:
    seconds = {}
    if not _SKIP_TRAINING.value:
      trained = train_variants(pretrain_config, workdir, _VARIANTS.value, _TOTAL_STEPS.value)
      seconds = {v: s for v, (_, s) in trained.items()}
    evaluate_variants(workdir, _VARIANTS.value, _EVAL_CONFIG.value, _BASELINES.value,
                      _RESULTS_DIR.value or os.path.join(workdir, "results"), _NAME.value,
                      command, seconds)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"merit_jax.ablations: {e}")


if __name__ == "__main__":
  from merit_jax import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.make_flags_parser("merit_jax.ablations"))
