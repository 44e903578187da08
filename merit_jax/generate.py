"""ECG-conditioned report generation: train a projector, generate reports, compare encoders.

  python -m merit_jax.generate --config=configs/generate.py --config.checkpoint=RUN_DIR \
      --workdir=DIR                                     # train (mode 'train')
  python -m merit_jax.generate --config=configs/generate.py --config.mode=predict \
      --config.projector=DIR --config.input=FOLDER --config.output=reports.csv
  python -m merit_jax.generate --config=configs/generate.py:compare \
      --config.merit_checkpoint=RUN_DIR --workdir=DIR   # the table
  python -m merit_jax.generate --config=configs/generate.py --config.mode=score \
      --config.projector=DIR --config.eval.split=validation --workdir=OUT  # other decoding
  python -m merit_jax.generate --config=configs/generate.py:compare \
      --config.merit_checkpoint=RUN_DIR --config.rescore_from=DIR --workdir=OUT  # the table
                                                        # again, arms of DIR, other decoding

Frozen ECG encoder → features (pooled, or the token sequence) → trainable projector → k soft
prefix tokens → frozen Gemma 3 (optionally LoRA); the pieces are in `merit_jax/report_gen/`.
This module holds the flags and the flow of each mode.

Workdir after training: generate_config.json (the config, the encoder's source and the
feature shape), projector/ (Orbax: projector + LoRA params, and the random encoder's params
for `checkpoint='random'`), neighbour_bank.npz (the training reports' statements by feature,
for the neighbour hints and decoding's reranking; pooled features only), statement_hints.npz
(with `statement_hints.enabled`: the classifier that writes each record's prompt),
metrics.jsonl and tensorboard/, summary.json, samples.csv (test split), features_*.npz.
Compare mode writes one such workdir per arm under workdir/<arm>/ and the table in
workdir/report_generation.{md,json} and `config.results_path`.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging as absl_logging
import ml_collections

from merit_jax import cli
from merit_jax import config_validation
from merit_jax import provision
from merit_jax.models.llm import conditioning
from merit_jax.report_gen import GenerateError
from merit_jax.report_gen import data as data_lib
from merit_jax.report_gen import decoding
from merit_jax.report_gen import neighbours
from merit_jax.report_gen import projector as projector_lib
from merit_jax.report_gen import recipe_table
from merit_jax.report_gen import reporting
from merit_jax.report_gen import statement_hints
from merit_jax.report_gen import statement_phrases
from merit_jax.report_gen import training

# Flags are defined only when run as a program (`cli_main`): merit_jax.train, which tests
# import into the same process, owns a --config and a --workdir of its own.
_CONFIG = None
_WORKDIR = None


def _score_split(config, gen, trainable, split: dict, workdir: str,
                 progress: bool, bank: dict | None = None) -> tuple[dict, list]:
  """Teacher-forced loss and decoded-report metrics of a trained model on `split` (features
  already standardised as in training; `bank`: the neighbour bank decoding may rerank with);
  writes workdir/samples.csv. Returns ({eval_split, eval_loss, metrics, eval_seconds},
  generated reports)."""
  t0 = time.time()
  # Teacher-forced loss on the eval split (validation when choosing a recipe).
  loss = training.eval_loss(config, gen, trainable, split)["loss"]
  metrics, generated = decoding.evaluate(config, gen, trainable, split, progress, bank)
  reporting.write_samples(os.path.join(workdir, "samples.csv"), split, generated)
  return ({"eval_split": config.eval.split, "eval_loss": loss, "metrics": metrics,
           "eval_seconds": time.time() - t0}, generated)


def run_train(config, workdir: str, checkpoint: str | None = None, llm=None,
              evaluate_after: bool = True) -> dict:
  """Trains one projector; evaluates it on config.eval.split. Returns a summary dict.

  Args:
    config: a configs/generate.py config.
    workdir: the run's output folder (created).
    checkpoint: the arm's ECG source (None: config.checkpoint): a MERIT run dir, 'none' or
      'random'.
    llm: a loaded (model, params, tokenizer) to reuse (compare mode loads it once).
    evaluate_after: also decode and score the eval split.

  Returns:
    {encoder, train_records, steps, batch_size, train_seconds, first_loss, final_loss,
    trainable_params[, eval_split, eval_loss, metrics, eval_seconds, generated, test]};
    summary.json holds all but the generated reports and the test references.
  """
  if not workdir:
    raise GenerateError("--workdir is required in train mode")
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  checkpoint = config.checkpoint if checkpoint is None else checkpoint
  provision.ensure_datasets(config.data)
  source = data_lib.load_feature_source(checkpoint, config.encoder_like, int(config.seed),
                                        config.data.preprocess.to_dict(),
                                        int(config.feature_batch_size))
  kind = conditioning.feature_kind(config.projector_kind)
  train = data_lib.compute_features(workdir, config, source, config.train_split, kind)
  # Stats of the training split only; every other split (and predict mode) reuses them.
  stats = (data_lib.fit_feature_stats(train["features"]) if config.standardize_features
           else None)
  train["features"] = data_lib.standardize_features(train["features"], stats)
  gen = projector_lib.build_generator(config, llm)
  hint_classifier = phrase_table = None
  if statement_hints.enabled(config):
    hint_classifier, train_hints = _fit_statement_hints(config, train)
    train["prompts"] = statement_hints.prompt_ids(gen.tokenizer, train_hints, config.prompt)
    phrase_table = statement_phrases.fit(train["reports"], train["codes"])
  hints_k = neighbour_k(config)
  # The training reports' neighbour bank, saved with every projector: the neighbour hints
  # and decoding's reranking read it (predict and score mode too).
  bank = (neighbours.build_bank(train["features"], train["reports"])
          if kind == "pooled" else None)
  if hints_k:
    train["features"] = neighbours.with_hints(bank, train["features"], hints_k,
                                              leave_one_out=True)
  t0 = time.time()
  trainable, history = training.train_projector(config, gen, train, workdir=workdir,
                                                progress=bool(config.progress))
  train_s = time.time() - t0
  projector_lib.save_projector(workdir, config, source, trainable, train["features"].shape[1:],
                               feature_stats=stats)
  if bank is not None:
    neighbours.save_bank(workdir, bank)
  if hint_classifier is not None:
    statement_hints.save(workdir, hint_classifier)
    statement_phrases.save(workdir, phrase_table)
  summary = {"encoder": source.source, "train_records": len(train["reports"]),
             "steps": int(config.total_steps), "batch_size": int(config.batch_size),
             "train_seconds": train_s, "first_loss": history[0]["loss"],
             "final_loss": history[-1]["loss"],
             "trainable_params": conditioning.count_params(trainable)}
  if evaluate_after:
    test = data_lib.compute_features(workdir, config, source, config.eval.split, kind,
                                     config.eval.max_records)
    test["features"] = data_lib.standardize_features(test["features"], stats)
    test_hints = None
    if hint_classifier is not None:
      test_hints = statement_hints.predict(hint_classifier, test["features"])
      test["prompts"] = statement_hints.prompt_ids(gen.tokenizer, test_hints, config.prompt)
      summary["hint_f1"] = _print_hint_f1(config.eval.split, test_hints, test["codes"])
    test["written"] = _written_starts(config, gen, test_hints, phrase_table)
    if hints_k:
      test["features"] = neighbours.with_hints(bank, test["features"], hints_k)
    scores, generated = _score_split(config, gen, trainable, test, workdir,
                                     bool(config.progress), bank)
    metrics = scores["metrics"]
    print(f"{config.eval.split}: loss {scores['eval_loss']:.4f}, statement F1 micro "
          f"{metrics.get('clinical_micro_f1', float('nan')):.4f} macro "
          f"{metrics.get('clinical_macro_f1', float('nan')):.4f} ({len(generated)} records)",
          flush=True)
    summary.update(scores)
    summary["generated"] = generated
    summary["test"] = _test_references(test)
  with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
    json.dump({k: v for k, v in summary.items() if k not in ("generated", "test")}, f, indent=2)
  return summary


def run_predict(config) -> str:
  """Writes a CSV (id, report) for every ECG under config.input; returns its path."""
  ids, records = data_lib.read_inputs(config.input, config.sample_rate)  # Fail fast on input.
  train_cfg, source, trainable, meta = projector_lib.load_projector(
      config.projector, int(config.feature_batch_size))
  # Decoding settings come from this invocation; the model's from the training run.
  train_cfg.decoding = config.decoding
  train_cfg.eval.batch_size = config.eval.batch_size
  features = data_lib.standardize_features(
      data_lib.record_features(source, records, meta["feature_kind"],
                               int(config.feature_batch_size)),
      meta.get("feature_stats"))  # Absent in projectors trained without standardisation.
  gen = projector_lib.build_generator(train_cfg)
  hints = _saved_hints(train_cfg, config.projector, features)
  prompts = (None if hints is None
             else statement_hints.prompt_ids(gen.tokenizer, hints, train_cfg.prompt))
  written = _written_starts(train_cfg, gen, hints, _saved_phrases(train_cfg, config.projector))
  features = _with_saved_hints(train_cfg, config.projector, features)
  bank = (neighbours.load_bank(projector_lib.run_directory(config.projector))
          if decoding.rerank_samples(config) else None)
  reports = decoding.generate_reports(train_cfg, gen, trainable, features,
                                      bool(config.progress), bank, prompts, written)
  return reporting.write_predictions(config.output, ids, reports)


# What a re-scored arm must share with the run that trained it, so the comparison page's
# recipe line (read from this invocation's config) describes the arms it shows.
_TRAINED_RECIPE_KEYS = ("llm", "projector_kind", "num_prefix_tokens", "lora_rank", "lora_targets",
                        "standardize_features", "prompt", "max_report_tokens", "total_steps",
                        "batch_size", "optim.lr", "train_split", "neighbour_statements",
                        "statement_hints.enabled", "statement_hints.train_on")


def neighbour_k(config) -> int:
  """config.neighbour_statements (absent from an older run's config: 0, no hints)."""
  return int(config.get("neighbour_statements") or 0)


def _fit_statement_hints(config, train: dict) -> tuple[dict, list[list[str]]]:
  """The statement-hint classifier of the training split (standardised pooled features) and
  the training records' hints (its out-of-fold predictions, or with train_on='labels' their
  own hintable statements); prints what it hints."""
  from merit_jax.metrics import clinical  # pylint: disable=g-import-not-at-top
  hints_cfg = config.statement_hints
  classifier, train_hints = statement_hints.fit(
      train["features"], train["codes"], clinical.ScpMatcher().codes,
      folds=int(hints_cfg.folds), min_positives=int(hints_cfg.min_positives),
      min_f1=float(hints_cfg.min_f1), l2=float(hints_cfg.l2), seed=int(config.seed))
  listed = ", ".join(f"{c} {f:.2f}" for c, f in zip(classifier["codes"], classifier["oof_f1"]))
  print(f"statement hints: {len(classifier['codes'])} statements (out-of-fold F1 on the "
        f"training split: {listed or 'none'})", flush=True)
  if hints_cfg.get("train_on", "out_of_fold") == "labels":
    train_hints = statement_hints.label_hints(classifier, train["codes"])
  return classifier, train_hints


def _print_hint_f1(split: str, hints, codes) -> dict:
  """Prints and returns the statement F1 (micro, macro) of the hints alone on `split`."""
  f1 = statement_hints.hint_f1(hints, codes)
  print(f"{split}: the statement hints alone score statement F1 micro {f1['micro_f1']:.4f} "
        f"macro {f1['macro_f1']:.4f}", flush=True)
  return {"micro_f1": f1["micro_f1"], "macro_f1": f1["macro_f1"]}


def _saved_hints(train_cfg, trained_dir: str, features):
  """Each record's statement hints from the trained run's classifier (None when the run used
  none); `features`: standardised, before any neighbour hints are appended."""
  if not statement_hints.enabled(train_cfg):
    return None
  classifier = statement_hints.load(projector_lib.run_directory(trained_dir))
  return statement_hints.predict(classifier, features)


def write_hints(config) -> bool:
  """config.decoding.write_hints (absent from an older run's config: off)."""
  return bool(config.decoding.get("write_hints", False))


def _saved_phrases(train_cfg, trained_dir: str, training_split=None) -> dict | None:
  """The statement phrase table saved beside the projector (None unless decoding writes
  hints). A run trained before tables were saved gets one fitted on its training split's
  reports (`training_split`: () -> that split), as training would have fitted it."""
  if not write_hints(train_cfg):
    return None
  if not statement_hints.enabled(train_cfg):
    raise GenerateError("config.decoding.write_hints writes each record's statement hints, but "
                        "the projector was trained without statement_hints.enabled")
  run_dir = projector_lib.run_directory(trained_dir)
  table = statement_phrases.load(run_dir)
  if table is None:
    if training_split is None:
      raise GenerateError(f"{run_dir}: {statement_phrases.PHRASES_FILE} is missing there (the "
                          "statement phrase table that config.decoding.write_hints writes)")
    train = training_split()
    table = statement_phrases.fit(train["reports"], train["codes"])
  return table


def _written_starts(config, gen, hints, table) -> list[list[int]] | None:
  """With config.decoding.write_hints, each record's report start: its hinted statements'
  phrases as token ids (`statement_phrases`; [] for a record with none); else None."""
  if not write_hints(config):
    return None
  if hints is None:
    raise GenerateError("config.decoding.write_hints needs statement hints "
                        "(config.statement_hints.enabled at training)")
  texts = [statement_phrases.render(table, h) for h in hints]
  return [gen.tokenizer.encode(t, add_bos=False) if t else [] for t in texts]


def _with_saved_hints(train_cfg, trained_dir: str, features):
  """Standardised features plus the neighbour hints of the trained run's bank, if it used
  them (`report_gen/neighbours.py`)."""
  k = neighbour_k(train_cfg)
  if not k:
    return features
  bank = neighbours.load_bank(projector_lib.run_directory(trained_dir))
  return neighbours.with_hints(bank, features, k)


def _decoding_bank(config, trained_dir: str, workdir: str, source, meta: dict) -> dict | None:
  """The neighbour bank decoding reranks with (None when reranking is off): the one saved
  beside the projector, else (a projector trained before banks were saved) built from the
  training split's features, standardised as in training."""
  if not decoding.rerank_samples(config):
    return None
  run_dir = projector_lib.run_directory(trained_dir)
  if os.path.isfile(os.path.join(run_dir, neighbours.BANK_FILE)):
    return neighbours.load_bank(run_dir)
  train = data_lib.compute_features(workdir, config, source, config.train_split,
                                    meta["feature_kind"])
  return neighbours.build_bank(
      data_lib.standardize_features(train["features"], meta.get("feature_stats")),
      train["reports"])


def _check_same_recipe(config, train_cfg, trained_dir: str) -> None:
  def get(tree, dotted):
    value = recipe_table.recipe_value(tree, dotted)
    return tuple(value) if isinstance(value, list) else value  # JSON lists, config tuples.
  trained, given = train_cfg.to_dict(), config.to_dict()
  values = [(key, get(trained, key), get(given, key)) for key in _TRAINED_RECIPE_KEYS]
  differ = [f"{key}: trained {t!r}, given {g!r}" for key, t, g in values if t != g]
  if differ:
    raise GenerateError(f"config.rescore_from: the arm in {trained_dir} was trained with "
                        "another recipe than this config states (" + "; ".join(differ)
                        + "); pass the config it was trained with")


def _test_references(split: dict) -> dict:
  """What the comparison needs of the scored split besides the outputs (summary["test"])."""
  return {"reports": split["reports"], "ecg_id": split["ecg_id"].tolist(),
          "codes": split["codes"]}


def _score_trained(config, trained_dir: str, workdir: str, llm=None,
                   check_recipe: bool = False) -> tuple[dict, list, dict]:
  """A trained projector (`trained_dir`) reloaded and scored on config.eval.split with this
  config's decoding; with `check_recipe`, refused unless trained with the recipe `config`
  states. Writes workdir/samples.csv. Returns (summary, generated, split)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  train_cfg, source, trainable, meta = projector_lib.load_projector(
      trained_dir, int(config.feature_batch_size))
  if check_recipe:
    _check_same_recipe(config, train_cfg, trained_dir)
  os.makedirs(workdir, exist_ok=True)
  # The model as trained; decoding and evaluation as asked now.
  train_cfg.decoding = config.decoding
  train_cfg.eval = config.eval
  provision.ensure_datasets(config.data)
  split = data_lib.compute_features(workdir, config, source, config.eval.split,
                                    meta["feature_kind"], config.eval.max_records)
  gen = projector_lib.build_generator(train_cfg, llm)
  standardized = data_lib.standardize_features(split["features"], meta.get("feature_stats"))
  hints = _saved_hints(train_cfg, trained_dir, standardized)
  summary = {"projector": os.path.abspath(os.path.expanduser(trained_dir)),
             "decoding": config.decoding.to_dict()}
  if hints is not None:
    split["prompts"] = statement_hints.prompt_ids(gen.tokenizer, hints, train_cfg.prompt)
    summary["hint_f1"] = _print_hint_f1(config.eval.split, hints, split["codes"])
  if write_hints(train_cfg):
    table = _saved_phrases(train_cfg, trained_dir, lambda: data_lib.compute_features(
        workdir, config, source, config.train_split, meta["feature_kind"]))
    split["written"] = _written_starts(train_cfg, gen, hints, table)
  split["features"] = _with_saved_hints(train_cfg, trained_dir, standardized)
  bank = _decoding_bank(config, trained_dir, workdir, source, meta)
  scores, generated = _score_split(train_cfg, gen, trainable, split, workdir,
                                   bool(config.progress), bank)
  summary.update(scores)
  return summary, generated, split


def run_score(config, workdir: str) -> dict:
  """Scores a trained projector (config.projector) on config.eval.split with this
  invocation's decoding settings: how decoding rules are chosen on validation without
  retraining. Writes summary.json and samples.csv to `workdir`; returns the summary."""
  if not workdir:
    raise GenerateError("--workdir is required in score mode")
  summary, _, _ = _score_trained(config, config.projector, workdir)
  with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  return summary


def rescore_arm(config, trained_dir: str, workdir: str, llm=None) -> dict:
  """`run_train`'s summary for an arm trained earlier (a compare run's `<arm>` folder): its
  projector re-scored with this config's decoding; the training figures (records, steps,
  losses, seconds) are those the training run saved."""
  summary, generated, split = _score_trained(config, trained_dir, workdir, llm,
                                             check_recipe=True)
  with open(os.path.join(trained_dir, "summary.json"), encoding="utf-8") as f:
    trained = json.load(f)
  summary.update({k: trained[k] for k in ("encoder", "train_records", "steps", "batch_size",
                                          "train_seconds", "first_loss", "final_loss",
                                          "trainable_params") if k in trained})
  with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  summary["generated"] = generated
  summary["test"] = _test_references(split)
  return summary


def run_compare(config, workdir: str, command: str = "") -> dict:
  """Trains (or, for 'most_frequent', just writes) and scores the arms one after another;
  writes the table and the samples page.

  Each arm's summary (see `run_train`) gains "bootstrap": `reporting.bootstrap_arms`'s CIs
  over the test records, and for arms after the first the paired difference from the first
  arm; "degeneracy": its degenerate-output counts; the MERIT arm "versus": its paired
  difference from every other arm (`reporting.score_arms`).
  """
  # pylint: disable-next=g-import-not-at-top
  from merit_jax.report_gen import baselines, samples
  if not workdir:
    raise GenerateError("--workdir is required in compare mode")
  workdir = os.path.abspath(os.path.expanduser(workdir))
  llm = (projector_lib.load_llm(config.llm, config.llm_path, int(config.seed))
         if set(config.arms) - {baselines.MOST_FREQUENT} else None)
  checkpoints = {"none": "none", "random": "random", "merit": config.merit_checkpoint}
  results = {}
  for arm in config.arms:
    print(f"=== arm {arm}: {reporting.ARM_TITLES[arm]}", flush=True)
    arm_cfg = ml_collections.ConfigDict(config.to_dict())
    if arm == "random":
      arm_cfg.encoder_like = config.merit_checkpoint
    if arm == baselines.MOST_FREQUENT:  # No features, no training: nothing for the LLM.
      results[arm] = baselines.run_most_frequent(arm_cfg, os.path.join(workdir, arm))
    elif config.get("rescore_from"):  # Trained before: only decode and score again.
      results[arm] = rescore_arm(arm_cfg, os.path.join(config.rescore_from, arm),
                                 os.path.join(workdir, arm), llm=llm)
    else:
      results[arm] = run_train(arm_cfg, os.path.join(workdir, arm), checkpoints[arm], llm=llm)
    m = results[arm]["metrics"]
    print(f"    {arm}: BLEU-4 {m['bleu4']:.4f} ROUGE-L {m['rouge_l']:.4f} "
          f"METEOR {m.get('meteor', float('nan')):.4f} F1 {m['clinical_micro_f1']:.4f}",
          flush=True)
  reporting.score_arms(config, results)
  print(reporting.write_comparison(config, results, workdir, command))
  print(f"samples page: {samples.write_samples_page(config, results, workdir, command)}")
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = None if _CONFIG is None else _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/generate.py[:variant] is required")
  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax chatter.
  command = "python -m merit_jax.generate " + " ".join(sys.argv[1:])
  try:
    config_validation.validate_generate_config(config)
    if config.mode == "train":
      summary = run_train(config, _WORKDIR.value)
      print(json.dumps({k: v for k, v in summary.items() if k not in ("generated", "test")},
                       indent=2, default=str))
    elif config.mode == "predict":
      print(f"wrote reports to {run_predict(config)}")
    elif config.mode == "score":
      print(json.dumps(run_score(config, _WORKDIR.value), indent=2))
    else:
      run_compare(config, _WORKDIR.value, command)
  except (config_validation.ConfigError, GenerateError, FileNotFoundError) as e:
    sys.exit(f"merit_jax.generate: {e}")


def cli_main():
  """`python -m merit_jax.generate` and the `merit-generate` console script."""
  global _CONFIG, _WORKDIR
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "configs/generate.py[:variant]", lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (train / compare modes).")
  app.run(main, flags_parser=cli.make_flags_parser("merit_jax.generate"))


if __name__ == "__main__":
  cli_main()
