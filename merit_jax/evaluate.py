"""Evaluation entry point: checkpoints (and baselines) → result tables, JSON and plots.

  python -m merit_jax.evaluate --config=configs/evaluate.py --config.checkpoint=RUN_DIR \
      [--config.output_dir=DIR] [--config.baselines=random_init,random_conv]

Runs the evaluators the config names on every encoder (the checkpoint plus the requested
baselines, all through the same code), for each PTB-XL task:

- `linear_probe`: frozen pooled features, label fractions (default 1 %, 10 %, 100 %; several
  seeds below 100 %), `evaluators.linear_probe` (choices on validation, test scored once,
  bootstrap 95 % CIs);
- `finetune`: encoder + linear head, `evaluators.finetune` (same protocol; MERIT encoders only);
- `zero_shot`: the checkpoint's own text tower and tokenizer, prompt ensembling; per task the
  prompt set (`zero_shot.prompt_sets`: SCP-description templates, report-style prompts,
  knowledge-enhanced descriptions, their union, and a user prompt file) and the per-record
  score normalisation (`zero_shot.normalizations`: raw / centered / softmax) with the best
  validation macro AUROC, test scored once; plus two diagnostics in their own sections, the
  PROTOTYPE diagnostic (class embedding = mean text embedding of the training reports with
  that label: uses labels, not zero-shot) and the TEXT-ONLY CEILING (the test reports against
  the chosen prompts, no ECG);
- `retrieval`: ECG→report and report→ECG Recall@1/5/10 on the test split (records with a
  report), duplicate-aware, with chance levels;
- `shift`: degradation curves on the test split per corruption, with the 100 % probe fitted on
  clean training features kept fixed (`ProbeResult.evaluate`); `reduced_leads` feeds MERIT
  encoders only the kept leads and zero-fills the rest for random_conv
  (`config.shift.reduced_leads_mode`: native | zeros; the mode used is in each curve);
- `transfer`: cross-dataset transfer, `evaluators.transfer`: a probe on the PTB-XL statements
  with a SNOMED twin in each built `config.transfer.targets` dataset (e.g.
  `physionet2021/cpsc2018`, under `config.transfer.data_dir`, default the evaluation data's),
  trained and selected on PTB-XL (TFDS folds), scored once on the target; targets that are not
  built are skipped with the build command printed.

Splits: the TFDS splits (PTB-XL folds 1–8 train, 9 validation, 10 test), or with
`merl_splits=True` MERL's published split files (ecg_id lists + label columns), matched by
ecg_id against every record read (tasks without MERL files, `all` and `diagnostic`, are then
skipped). Classes without a positive in the training or validation records are left out
(nothing can be learned or selected for them); the rule never looks at the test split. Classes
without a test positive have no AUROC and are left out of the macro means; how many classes of
each task are scored, and why not the others, is a table of the markdown
(`meta.class_scoring` in the JSON).

Writes into `results_dir` (default `<output_dir>/results`, output_dir default
`<checkpoint>/eval`): `<name>.md` (markdown tables,
value [95 % CI]), `<name>.json` (everything, including per-run hyperparameters and per-class
metrics), `<name>_fractions.png` (AUROC against label fraction), `<name>_shift.png`
(degradation curves); the feature cache goes to `<output_dir>/features/`.

Python API: `build_encoders(config)`, `evaluate_encoders(encoders, data_cfg, config,
output_dir, store=None) -> results`, `write_results(results, output_dir, name) -> paths`,
`run(config) -> results`.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time
from typing import Any, Optional, Sequence

from absl import app
import ml_collections
from ml_collections import config_flags
import numpy as np

from merit_jax.evaluators import features as features_lib

EVALUATORS = ("linear_probe", "finetune", "zero_shot", "retrieval", "shift", "transfer")
BASELINES = ("random_init", "random_conv")
# Short names accepted in config.tasks, as in merit_jax.data.features.PTBXL_TASKS.
TASK_ALIASES = {"all": "all", "diag": "diagnostic", "diagnostic": "diagnostic",
                "sub": "subdiagnostic", "subdiagnostic": "subdiagnostic",
                "super": "superdiagnostic", "superdiagnostic": "superdiagnostic",
                "form": "form", "rhythm": "rhythm"}
# MERL's split-file stems (labels_merl/ptbxl_<stem>_{train,val,test}.csv).
MERL_STEMS = {"superdiagnostic": "super_class", "subdiagnostic": "sub_class", "form": "form",
              "rhythm": "rhythm"}
MERL_SPLITS = {"train": "train", "validation": "val", "test": "test"}
SPLITS = ("train", "validation", "test")
# Results sections the zero_shot evaluator adds beside "zero_shot" (see zero_shot_suite).
ZERO_SHOT_DIAGNOSTICS = ("prototype", "text_ceiling")


# ----------------------------------------------------------------------------------------------
# Config helpers.


def parse_list(value, cast=str) -> list:
  """'a,b' / ['a', 'b'] / ('a',) → [cast(a), cast(b)]; '' or None → []."""
  if value is None:
    return []
  if isinstance(value, str):
    items = [v.strip() for v in value.split(",")]
  elif isinstance(value, (list, tuple)):
    items = list(value)
  else:
    items = [value]
  return [cast(v) for v in items if str(v).strip() != ""]


def resolve_tasks(names: Sequence[str]) -> list[str]:
  out = []
  for name in names:
    if name not in TASK_ALIASES:
      raise ValueError(f"config.tasks: unknown task {name!r}; choose from "
                       f"{sorted(set(TASK_ALIASES))}")
    if TASK_ALIASES[name] not in out:
      out.append(TASK_ALIASES[name])
  return out


def _check_config(config) -> None:
  for name in parse_list(config.evaluators):
    if name not in EVALUATORS:
      raise ValueError(f"config.evaluators: unknown evaluator {name!r}; choose from "
                       f"{', '.join(EVALUATORS)}")
  for name in parse_list(config.baselines):
    base, _, kernels = name.partition("@")
    if base not in BASELINES or (kernels and (base != "random_conv" or not kernels.isdigit()
                                             or int(kernels) < 1)):
      raise ValueError(f"config.baselines: unknown baseline {name!r}; choose from "
                       f"{', '.join(BASELINES)} (random_conv@K: K kernels per lead)")
  fractions = parse_list(config.fractions, float)
  if not fractions or any(not 0 < f <= 1 for f in fractions):
    raise ValueError(f"config.fractions must be in (0, 1], got {config.fractions!r}")
  if not parse_list(config.seeds, int):
    raise ValueError("config.seeds is empty")
  resolve_tasks(parse_list(config.tasks))
  if "shift" in parse_list(config.evaluators):
    # Fail before hours of probing, not when the shift suite starts.
    features_lib.check_reduced_leads_mode(config.shift.get("reduced_leads_mode", "native"))
  if "transfer" in parse_list(config.evaluators):
    _check_transfer_config(config)
  if "zero_shot" in parse_list(config.evaluators):
    from merit_jax.evaluators import zero_shot  # pylint: disable=g-import-not-at-top
    sets, norms = zero_shot_options(config)
    zero_shot.check_options(sets, norms)
    if "user" in sets and not config.zero_shot.get("prompt_file"):
      raise ValueError("config.zero_shot.prompt_sets names 'user' but zero_shot.prompt_file is "
                       "not set")


def zero_shot_options(config) -> tuple[list, list]:
  """(prompt sets, normalisations) the zero-shot evaluator chooses between on validation.

  `zero_shot.prompt_file` (if set) adds the set `user` (the file with `user_prompts`, the only
  prompt set of earlier versions) unless `prompt_sets` names it already. Configs without the
  keys get the single option of earlier versions (scp_en or user, raw).
  """
  z = config.zero_shot
  sets = parse_list(z.get("prompt_sets", "scp_en"))
  if z.get("prompt_file") and "user" not in sets:
    sets.append("user")
  if "prompt_sets" not in z and z.get("prompt_file"):
    sets = ["user"]
  return sets, parse_list(z.get("normalizations", "raw"))


def _check_transfer_config(config) -> None:
  from merit_jax.evaluators import transfer  # pylint: disable=g-import-not-at-top
  t = config.get("transfer")
  if t is None or not transfer.parse_targets(t.get("targets") or "", "."):
    raise ValueError("config.transfer.targets is empty; name built datasets, e.g. "
                     "physionet2021/cpsc2018,physionet2021/csn")


def eval_data_config(run_config, config) -> ml_collections.ConfigDict:
  """The checkpoint's data config with the evaluation's overrides applied."""
  data = ml_collections.ConfigDict(run_config.data.to_dict())
  if config.data.get("name"):
    data.name = config.data.name
    data.sources = None
  for key in ("config", "data_dir"):
    if config.data.get(key):
      data[key] = config.data[key]
  return data


# ----------------------------------------------------------------------------------------------
# Encoders.


def build_encoders(config) -> tuple[list, Any]:
  """The checkpoint's encoder and the baselines the config names; returns (encoders, run cfg)."""
  if not config.checkpoint:
    raise ValueError("config.checkpoint is required: the --workdir of a training run "
                     "(--config.checkpoint=DIR)")
  encoders = [features_lib.checkpoint_encoder(config.checkpoint, config.step,
                                              config.batch_size)]
  run_config = encoders[0].config
  encoders += baseline_encoders(config, run_config, encoders[0].tokenizer)
  return encoders, run_config


def baseline_encoders(config, run_config, tokenizer) -> list:
  out = []
  for name in parse_list(config.baselines):
    if name == "random_init":
      out.append(features_lib.random_init_encoder(run_config, tokenizer,
                                                  int(config.random_init.seed),
                                                  config.batch_size))
    elif name.startswith("random_conv"):
      # random_conv@K: K kernels instead of config.random_conv.num_kernels, e.g. to match a
      # pretrained encoder's feature count (2 features per kernel and lead).
      _, _, kernels = name.partition("@")
      out.append(features_lib.random_conv_encoder(
          int(kernels or config.random_conv.num_kernels), int(config.random_conv.seed),
          int(run_config.data.preprocess.num_samples), name=name))
  return out


# ----------------------------------------------------------------------------------------------
# Task data: features and labels per split (TFDS folds or MERL split files).


def _expand(path) -> str:
  return os.path.abspath(os.path.expanduser(str(path)))


def _find_file(data_cfg, relative: str, explicit=None) -> Optional[str]:
  """A publisher file: explicit path, or <manual_dir>[/<config>]/relative of each source."""
  if explicit:
    path = _expand(explicit)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} does not exist")
    return path
  dirs = [data_cfg.get("manual_dir")]
  for src in data_cfg.get("sources") or []:
    dirs.append(dict(src).get("manual_dir"))
  for folder in dirs:
    if not folder:
      continue
    for candidate in (os.path.join(folder, relative),
                      os.path.join(folder, str(data_cfg.get("config") or ""), relative)):
      if os.path.exists(_expand(candidate)):
        return _expand(candidate)
  return None


def _merl_table(merl_dir: str, task: str, split: str):
  import pandas as pd  # pylint: disable=g-import-not-at-top
  if task not in MERL_STEMS:
    raise ValueError(f"merl_splits: MERL publishes no split files for task {task!r} (only "
                     f"{sorted(MERL_STEMS)})")
  path = os.path.join(merl_dir, f"ptbxl_{MERL_STEMS[task]}_{MERL_SPLITS[split]}.csv")
  if not os.path.exists(path):
    raise FileNotFoundError(f"merl_splits: {path} not found (set --config.merl_dir)")
  table = pd.read_csv(path)
  if "ecg_id" not in table.columns or MERL_STEMS[task] not in table.columns:
    raise ValueError(f"merl_splits: {path} lacks the ecg_id or {MERL_STEMS[task]} column")
  classes = list(table.columns[list(table.columns).index(MERL_STEMS[task]) + 1:])
  return table, classes


class TaskData:
  """Labels and record indices of one task on train/validation/test, for any encoder."""

  def __init__(self, store, task: str, class_names: list, labels: dict, index: dict,
               coverage: Optional[dict] = None, class_scoring: Optional[dict] = None):
    self.store = store
    self.task = task
    self.class_names = class_names
    self.labels = labels      # split -> (n, C)
    self.index = index        # split -> [(tfds split, row indices)] in order
    self.coverage = coverage or {}
    # How many of the task's classes are scored, and why the others are not
    # (`class_scoring`); None where the TaskData was built by hand.
    self.class_scoring = class_scoring

  def features(self, encoder, split: str, kind: str = "pooled", corruption=None,
               seed: int = 0, reduced_leads_mode: str = "native") -> np.ndarray:
    parts = []
    for tfds_split, rows in self.index[split]:
      feats = self.store.features(encoder, tfds_split, corruption, seed,
                                  reduced_leads_mode=reduced_leads_mode)
      if kind not in feats:
        raise ValueError(f"encoder {encoder.name!r} has no {kind!r} features")
      parts.append(feats[kind][rows])
    return np.concatenate(parts)

  def signals(self, split: str) -> np.ndarray:
    return np.concatenate([self.store.split(s).ecg[rows] for s, rows in self.index[split]])

  def reports(self, split: str) -> list:
    out = []
    for s, rows in self.index[split]:
      reports = self.store.split(s).report
      out.extend(reports[i] for i in rows)
    return out

  def has_report(self, split: str) -> np.ndarray:
    """(n,) bool: the record has a non-empty report."""
    return np.array([bool(str(r).strip()) for r in self.reports(split)], dtype=bool)

  def text_features(self, encoder, split: str) -> np.ndarray:
    """(n, P) projected text embeddings of the split's reports ('' embeds as empty text)."""
    return np.concatenate([self.store.text_features(encoder, s)[rows]
                           for s, rows in self.index[split]])


# Why a class of a task is not scored, in the order the reasons are checked (a class is counted
# under its first reason). The first three are `task_data`'s rule (train and validation only);
# the last two are metrics.py's: a class without test positives or negatives has no AUROC.
LEFT_OUT_REASONS = {"no_train_positive": "no train positive",
                    "no_validation_positive": "no validation positive",
                    "no_validation_negative": "no validation negative",
                    "no_test_positive": "no test positive",
                    "no_test_negative": "no test negative"}


def class_scoring(class_names: Sequence[str], labels: dict) -> dict:
  """{"classes", "scored": [names], "left_out": {reason: [names]}} for one task.

  `labels`: split -> (n, C) over all of `class_names`. Only a report: the test columns decide
  nothing here that metrics.py would not drop from the macro means anyway.
  """
  pos = {s: np.asarray(y).sum(0) for s, y in labels.items()}
  size = {s: np.asarray(y).shape[0] for s, y in labels.items()}
  checks = {"no_train_positive": pos["train"] == 0,
            "no_validation_positive": pos["validation"] == 0,
            "no_validation_negative": pos["validation"] == size["validation"],
            "no_test_positive": pos["test"] == 0,
            "no_test_negative": pos["test"] == size["test"]}
  left_out = {reason: [] for reason in LEFT_OUT_REASONS}
  scored = []
  for c, name in enumerate(class_names):
    reason = next((r for r in LEFT_OUT_REASONS if checks[r][c]), None)
    (left_out[reason] if reason else scored).append(str(name))
  return {"classes": len(class_names), "scored": scored, "left_out": left_out}


def task_data(store, task: str, label_names: dict, config, data_cfg) -> TaskData:
  """Train/validation/test records and labels of one task (see module docstring)."""
  if config.merl_splits:
    merl_dir = config.merl_dir or _find_file(data_cfg, "labels_merl")
    if not merl_dir:
      raise FileNotFoundError("merl_splits: no labels_merl/ folder under data.manual_dir; set "
                              "--config.merl_dir")
    position = {}
    for s in SPLITS:
      for row, ecg_id in enumerate(store.split(s).ecg_id):
        position.setdefault(int(ecg_id), (s, row))
    labels, index, coverage, class_names = {}, {}, {}, None
    for split in SPLITS:
      table, classes = _merl_table(merl_dir, task, split)
      if class_names is None:
        class_names = classes
      found = [(i, position[int(e)]) for i, e in enumerate(table["ecg_id"]) if int(e) in position]
      coverage[split] = {"listed": int(len(table)), "matched": len(found)}
      if not found:
        raise ValueError(f"merl_splits: none of the {len(table)} {task} {split} ecg_ids were "
                         "found among the records read")
      values = table[class_names].to_numpy()
      # Grouped by TFDS split (MERL's folds match them), MERL's row order within each.
      order, rows_of = [], []
      for s in SPLITS:
        members = [(i, row) for i, (s2, row) in found if s2 == s]
        if members:
          order.append((s, np.asarray([row for _, row in members], np.int64)))
          rows_of.extend(i for i, _ in members)
      labels[split] = values[rows_of].astype(np.uint8)
      index[split] = order
  else:
    if task not in label_names:
      raise ValueError(f"task {task!r} has no labels in this dataset (available: "
                       f"{sorted(label_names)})")
    class_names = list(label_names[task])
    labels, index, coverage = {}, {}, {}
    for split in SPLITS:
      data = store.split(split)
      if task not in data.labels:
        raise ValueError(f"task {task!r} is missing from split {split!r} of some source")
      labels[split] = data.labels[task]
      index[split] = [(split, np.arange(len(data)))]
  scoring = class_scoring(class_names, labels)
  # Classes that can be learned and selected: positives in train and in validation.
  keep = (labels["train"].sum(0) > 0) & (labels["validation"].sum(0) > 0)
  keep &= labels["validation"].sum(0) < labels["validation"].shape[0]
  if not keep.any():
    raise ValueError(f"task {task!r}: no class has positives in both train and validation")
  class_names = [c for c, k in zip(class_names, keep) if k]
  labels = {s: y[:, keep] for s, y in labels.items()}
  return TaskData(store, task, class_names, labels, index, coverage, scoring)


# ----------------------------------------------------------------------------------------------
# Evaluators.


def _metric_summary(m: dict) -> dict:
  """The macro metrics of an `evaluate_multilabel` result (no per-class lists)."""
  return {k: m[k] for k in ("macro_auroc", "macro_auprc", "macro_f1") if k in m} | {
      "num_evaluated": m.get("num_evaluated"), "excluded_classes": m.get("excluded_classes")}


def _fraction_results(fraction_runs: dict) -> dict:
  out = {}
  for fraction, summary in fraction_runs.items():
    out[str(fraction)] = {
        **{k: summary[k] for k in ("macro_auroc", "macro_auprc", "macro_f1")},
        "runs": [{"seed": seed, "subset_size": size, "hparams": run.hparams,
                  "val": _metric_summary(run.val_metrics),
                  "test": _metric_summary(run.test_metrics),
                  "per_class_test_auroc": run.test_metrics["per_class"]["auroc"],
                  "grid": run.grid_results}
                 for seed, size, run in zip(summary["seeds"], summary["subset_sizes"],
                                            summary["runs"])]}
  return out


def _probe_kwargs(config) -> dict:
  return dict(grid={"weight_decay": parse_list(config.probe.weight_decays, float),
                    "learning_rate": [float(config.probe.learning_rate)]},
              max_epochs=int(config.probe.max_epochs), eval_every=int(config.probe.eval_every),
              patience=int(config.probe.patience), n_bootstrap=int(config.n_bootstrap))


def _probe_feature_kinds(encoder, data: TaskData, config) -> list[str]:
  """The feature kinds of `config.probe.features` that this encoder provides."""
  kinds = parse_list(config.probe.get("features", "pooled"))
  available = data.store.features(encoder, data.index["train"][0][0]).keys()
  kept = [k for k in kinds if k in available]
  if not kept:
    raise ValueError(f"config.probe.features={config.probe.features!r}: encoder "
                     f"{encoder.name!r} provides none of them (it has {sorted(available)})")
  return kept


def _mean_val_auroc(summary: dict) -> float:
  return float(np.mean([r.val_metrics["macro_auroc"]["value"] for r in summary["runs"]]))


def run_probe(encoder, data: TaskData, config) -> tuple[dict, Any]:
  """Linear probe at every label fraction; returns (results, the 100 % ProbeResult or None).

  With several `config.probe.features` (e.g. `pooled,per_lead`) every kind is probed and, per
  label fraction, the one with the best mean validation macro AUROC is reported (`feature`;
  every kind's validation score in `val_by_feature`). The returned 100 % probe is always on
  `pooled` features, which every lead subset of the shift suite can produce.
  """
  from merit_jax.evaluators import linear_probe  # pylint: disable=g-import-not-at-top
  runs_by_kind = {}
  for kind in _probe_feature_kinds(encoder, data, config):
    splits = [(data.features(encoder, s, kind), data.labels[s]) for s in SPLITS]
    runs_by_kind[kind] = linear_probe.run_label_fractions(
        *splits, fractions=parse_list(config.fractions, float),
        seeds=parse_list(config.seeds, int), **_probe_kwargs(config))
  results = {}
  for fraction in next(iter(runs_by_kind.values())):
    scores = {kind: _mean_val_auroc(runs[fraction]) for kind, runs in runs_by_kind.items()}
    chosen = max(scores, key=scores.get)
    entry = _fraction_results({fraction: runs_by_kind[chosen][fraction]})[str(fraction)]
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
  full = pooled[1.0]["runs"][0] if pooled is not None and 1.0 in pooled else None
  return results, full


def probe_paired_difference(results: dict, encoder_a: str, encoder_b: str, task: str,
                            n_bootstrap: int = 1000, seed: int = 0) -> dict:
  """Encoder A minus encoder B, 100 % linear probe on the test records of `task`: macro AUROC
  and macro F1 (each probe's validation thresholds), paired bootstrap CIs.

  Reads the stored 100 % probe scores and test labels, so `results` may also be the JSON of an
  earlier evaluation (or two of them merged, when they share the test records).
  """
  from merit_jax.metrics import classification as metrics  # pylint: disable=g-import-not-at-top
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


def full_probe(encoder, data: TaskData, config):
  from merit_jax.evaluators import linear_probe  # pylint: disable=g-import-not-at-top
  splits = [(data.features(encoder, s), data.labels[s]) for s in SPLITS]
  return linear_probe.run_linear_probe(*splits, **_probe_kwargs(config))


def run_finetune(encoder, data: TaskData, config) -> Optional[dict]:
  from merit_jax.evaluators import finetune  # pylint: disable=g-import-not-at-top
  if encoder.model is None:
    return None  # Not a network (random convolutions): nothing to fine-tune.
  embed_fn, encoder_params = finetune.merit_embed_fn(encoder.model, encoder.params)
  f = config.finetune
  runs = finetune.run_finetune_fractions(
      embed_fn, encoder_params, *[(data.signals(s), data.labels[s]) for s in SPLITS],
      fractions=parse_list(f.fractions, float), seeds=parse_list(f.seeds, int),
      learning_rates=parse_list(f.learning_rates, float), max_epochs=int(f.max_epochs),
      patience=int(f.patience), batch_size=int(f.batch_size),
      weight_decay=float(f.weight_decay), n_bootstrap=int(config.n_bootstrap),
      progress=bool(config.progress))
  return _fraction_results(runs)


def _descriptions(statements_csv: Optional[str], class_names: Sequence[str]) -> dict:
  """SCP descriptions, plus aliases for MERL's names without PTB-XL's '_' (ISC → ISC_)."""
  from merit_jax.evaluators import zero_shot  # pylint: disable=g-import-not-at-top
  known = zero_shot.load_scp_descriptions(statements_csv) if statements_csv else {}
  out = {}
  for name in class_names:
    for candidate in (name, name + "_", "_" + name):
      if candidate in known:
        out[name] = known[candidate]
        break
      if candidate in zero_shot.GROUP_DESCRIPTIONS and candidate != name:
        out[name] = zero_shot.GROUP_DESCRIPTIONS[candidate]
        break
  return out


def model_logit_scale(encoder) -> Optional[float]:
  """exp of the encoder's learnt `logit_scale` parameter (1 / temperature), None if it has none.

  Clipped as MERIT clips it in training (`models.merit.MAX_LOGIT_SCALE`: scale in [1, 100]).
  """
  params = getattr(encoder, "params", None)
  try:
    value = float(np.asarray(params["logit_scale"]))
  except (KeyError, TypeError, IndexError, ValueError):
    return None
  return float(np.exp(np.clip(value, 0.0, np.log(100.0))))


def run_zero_shot(encoder, data: TaskData, config, data_cfg) -> Optional[dict]:
  """The zero-shot entry of one encoder and task (`zero_shot_suite` without the diagnostics)."""
  suite = zero_shot_suite(encoder, data, config, data_cfg, diagnostics=False)
  return None if suite is None else suite["zero_shot"]


def zero_shot_suite(encoder, data: TaskData, config, data_cfg,
                    diagnostics: bool = True) -> Optional[dict]:
  """{"zero_shot": ..., "prototype": ..., "text_ceiling": ...} of one encoder and task.

  zero_shot: every (prompt set, normalisation) of `zero_shot_options(config)` scored on
  validation, the best validation macro AUROC scored once on test; all validation numbers in
  "validation". prototype (class embeddings from training reports: uses training labels, not
  zero-shot) and text_ceiling (test reports against the chosen prompts, no ECG) when `diagnostics` and `config.zero_shot.prototype`
  / `.text_ceiling` (default on). None for an encoder without a text tower.
  """
  from merit_jax.evaluators import zero_shot  # pylint: disable=g-import-not-at-top
  if encoder.embed_text is None:
    return None
  z = config.zero_shot
  statements = _find_file(data_cfg, "scp_statements.csv", z.get("statements_csv"))
  sets, norms = zero_shot_options(config)
  built = zero_shot.build_prompt_sets(
      sets, data.class_names, statements_csv=statements,
      descriptions=_descriptions(statements, data.class_names), prompt_file=z.get("prompt_file"),
      user_prompts=z.get("user_prompts", "extend"))
  scale = model_logit_scale(encoder)
  val_emb = data.features(encoder, "validation", "projected")
  result = zero_shot.run_zero_shot_selected(
      data.features(encoder, "test", "projected"), data.labels["test"], data.class_names,
      encoder.embed_text, {name: b["prompts"] for name, b in built.items()}, val_emb,
      data.labels["validation"], norms, scale, n_bootstrap=int(config.n_bootstrap),
      seed=int(config.seed))
  class_emb = result.pop("class_embeddings")
  out = _metric_summary(result)
  out.update({
      # Chosen on fold 9 (validation), never on test.
      "prompt_set": result["prompt_set"], "normalization": result["normalization"],
      "val_macro_auroc": result["val_macro_auroc"], "validation": result["validation"],
      "per_class_auroc": result["per_class"]["auroc"],
      "per_class_f1": result["per_class"].get("f1"), "thresholds": result["thresholds"],
      "softmax_scale": result["softmax_scale"],
      "softmax_scale_source": result["softmax_scale_source"],
      "prompt_file": z.get("prompt_file"), "user_prompts": z.get("user_prompts", "extend"),
      "prompt_sets": {name: {"file": b["file"], "fallback_classes": b["fallback"],
                             "num_prompts": sum(len(p) for p in b["prompts"].values())}
                      for name, b in built.items()},
      "prompts": result["prompts"]})
  suite = {"zero_shot": out}
  if diagnostics and z.get("prototype", True):
    suite["prototype"] = run_prototype(encoder, data, config, norms, scale)
  if diagnostics and z.get("text_ceiling", True):
    suite["text_ceiling"] = run_text_ceiling(encoder, data, config, class_emb, norms, scale)
    suite["text_ceiling"]["prompt_set"] = result["prompt_set"]
  return suite


def run_prototype(encoder, data: TaskData, config, normalizations, logit_scale) -> dict:
  """PROTOTYPE diagnostic (uses training labels, not zero-shot): `zero_shot.run_prototype`
  with the training reports' text embeddings, normalisation chosen on validation."""
  from merit_jax.evaluators import zero_shot  # pylint: disable=g-import-not-at-top
  result = zero_shot.run_prototype(
      data.text_features(encoder, "train"), data.labels["train"],
      data.features(encoder, "test", "projected"), data.labels["test"],
      data.features(encoder, "validation", "projected"), data.labels["validation"],
      data.class_names, train_valid=data.has_report("train"), normalizations=normalizations,
      logit_scale=logit_scale, n_bootstrap=int(config.n_bootstrap), seed=int(config.seed))
  out = _metric_summary(result)
  out.update({k: result[k] for k in ("normalization", "validation", "val_macro_auroc",
                                     "num_train_reports", "no_prototype")})
  out["per_class_auroc"] = result["per_class"]["auroc"]
  return out


def run_text_ceiling(encoder, data: TaskData, config, class_emb, normalizations,
                     logit_scale) -> dict:
  """TEXT-ONLY CEILING: the test reports (no ECG) against the chosen prompts' class embeddings,
  raw cosine; records with an empty report are left out ("num_left_out")."""
  from merit_jax.evaluators import zero_shot  # pylint: disable=g-import-not-at-top
  result = zero_shot.text_only_ceiling(
      data.text_features(encoder, "test"), data.labels["test"], class_emb,
      has_report=data.has_report("test"), normalizations=normalizations,
      logit_scale=logit_scale, n_bootstrap=int(config.n_bootstrap), seed=int(config.seed))
  out = _metric_summary(result)
  out.update({k: result[k] for k in ("by_normalization", "num_records", "num_left_out")})
  out["per_class_auroc"] = result["per_class"]["auroc"]
  return out


def run_retrieval(encoder, store, config) -> Optional[dict]:
  from merit_jax.evaluators import retrieval  # pylint: disable=g-import-not-at-top
  if encoder.embed_text is None:
    return None
  split = config.retrieval.get("split", "test")
  data = store.split(split)
  has_report = np.array([bool(str(r).strip()) for r in data.report])
  if has_report.sum() < 2:
    return {"error": f"fewer than 2 records with a report in {split}"}
  ecg = store.features(encoder, split)["projected"][has_report]
  text = store.text_features(encoder, split)[has_report]
  ks = [k for k in parse_list(config.retrieval.ks, int) if k <= has_report.sum()]
  texts = [r for r, h in zip(data.report, has_report) if h]
  out = retrieval.recall_at_k(ecg, text, ks=ks, texts=texts)
  out["split"] = split
  return out


def transfer_targets(config, data_cfg) -> list:
  """`config.transfer.targets` under `config.transfer.data_dir` (default: the data's)."""
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from merit_jax.evaluators import transfer  # pylint: disable=g-import-not-at-top
  data_dir = config.transfer.get("data_dir") or pipeline.primary_source(data_cfg).data_dir
  return transfer.parse_targets(config.transfer.targets, _expand(data_dir))


def prepare_transfer(store, config, data_cfg, output_dir: str) -> tuple[list, dict]:
  """The built targets' `TransferTask`s and {target: why it was skipped (not built)}.

  Called before any evaluator runs, so a target that is built but unusable (no shared class,
  no `all` task in the source) fails the run at once instead of after hours of probing.
  """
  from merit_jax.evaluators import transfer  # pylint: disable=g-import-not-at-top
  tasks, skipped = [], {}
  for target in transfer_targets(config, data_cfg):
    try:
      tasks.append(transfer.prepare_transfer(
          store, target, source_task=config.transfer.get("source_task", "all"),
          min_positives=int(config.transfer.get("min_positives", 10)),
          cache_dir=os.path.join(output_dir, "features", "transfer", target.cache_name)))
    except transfer.TargetNotBuilt as e:
      # Transfer runs "when those datasets are present": an absent target is skipped.
      print(f"transfer: skipping {target.label}: {e}", flush=True)
      skipped[target.label] = str(e)
  return tasks, skipped


def run_transfer(encoders: Sequence, tasks: Sequence, config) -> dict:
  """{encoder: {target: `transfer.run_transfer` result}} for the prepared targets."""
  from merit_jax.evaluators import transfer  # pylint: disable=g-import-not-at-top
  out = {e.name: {} for e in encoders}
  for task in tasks:
    for encoder in encoders:
      out[encoder.name][task.target.label] = transfer.run_transfer(
          encoder, task, seed=int(config.seed), **_probe_kwargs(config))
  return out


def run_shift(encoder, data: TaskData, probe, config) -> list:
  """Degradation curves (layout of `shift.degradation_curve`) of the fixed 100 % probe.

  The `reduced_leads` curve also holds `reduced_leads_mode`: 'native' where the encoder saw
  only the kept leads, 'zeros' where the missing leads were zero-filled
  (`config.shift.reduced_leads_mode` and `features.reduced_leads_path`).
  """
  from merit_jax.evaluators import shift  # pylint: disable=g-import-not-at-top
  # Older evaluation configs have no switch; they get the default.
  mode = features_lib.check_reduced_leads_mode(
      str(config.shift.get("reduced_leads_mode", "native")))
  labels = data.labels["test"]
  clean = {"macro_auroc": probe.test_metrics["macro_auroc"]["value"]}
  curves = []
  for name in parse_list(config.shift.corruptions):
    if name not in shift.CORRUPTIONS:
      raise ValueError(f"config.shift.corruptions: unknown corruption {name!r}; known: "
                       f"{sorted(shift.CORRUPTIONS)}")
    values = []
    for severity in shift.CORRUPTIONS[name].severities:
      feats = data.features(encoder, "test", "pooled", (name, severity),
                            int(config.shift.seed), reduced_leads_mode=mode)
      m = probe.evaluate(feats, labels, n_bootstrap=0)
      values.append({"macro_auroc": m["macro_auroc"]["value"],
                     "macro_f1": m.get("macro_f1", {}).get("value")})
    curve = {"corruption": name, "unit": shift.CORRUPTIONS[name].unit,
             "severities": list(shift.CORRUPTIONS[name].severities),
             "clean": clean, "values": values}
    if name == "reduced_leads":
      curve["reduced_leads_mode"] = features_lib.reduced_leads_path(encoder, mode)
    curves.append(curve)
  return curves


def evaluate_encoders(encoders: Sequence, data_cfg, config, output_dir: str,
                      store=None) -> dict:
  """Runs the configured evaluators for every encoder and task; returns the results dict."""
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  _check_config(config)
  evaluators = parse_list(config.evaluators)
  tasks = resolve_tasks(parse_list(config.tasks))
  skipped_tasks = {}
  if config.merl_splits:
    # MERL publishes split files for super/sub/form/rhythm only: the other tasks (all,
    # diagnostic) are left out of a MERL-split run rather than mixed with the TFDS folds.
    skipped_tasks = {t: "MERL publishes no split files for it" for t in tasks
                     if t not in MERL_STEMS}
    tasks = [t for t in tasks if t not in skipped_tasks]
    if not tasks:
      raise ValueError(f"merl_splits: none of the tasks {sorted(skipped_tasks)} has MERL split "
                       f"files (only {sorted(MERL_STEMS)})")
    for t in skipped_tasks:
      print(f"evaluate: skipping task {t} with merl_splits: MERL publishes no split files for "
            "it", flush=True)
  if store is None:
    store = features_lib.FeatureStore(
        data_cfg, os.path.join(output_dir, "features"),
        sources=features_lib.data_sources(data_cfg, bool(config.data.all_sources)),
        batch_size=int(config.batch_size), max_records=config.max_records,
        progress=bool(config.progress))
  label_names = pipeline.label_names(data_cfg)
  shift_tasks = resolve_tasks(parse_list(config.shift.tasks)) if "shift" in evaluators else []
  results: dict[str, Any] = {
      "meta": {"evaluators": evaluators, "tasks": tasks,
               "fractions": parse_list(config.fractions, float),
               "seeds": parse_list(config.seeds, int), "merl_splits": bool(config.merl_splits),
               "n_bootstrap": int(config.n_bootstrap),
               "data": {"name": data_cfg.get("name"), "config": data_cfg.get("config"),
                        "sources": [s.__dict__ for s in (store.sources or [])]},
               "encoders": [{"name": e.name, "cache_key": e.cache_key, "step": e.step}
                            for e in encoders],
               "records": {}, "classes": {}, "coverage": {}, "class_scoring": {},
               "skipped_tasks": skipped_tasks},
  }
  for name in evaluators:
    results[name] = {e.name: {} for e in encoders}
  if "zero_shot" in evaluators:
    # The zero-shot diagnostics: their own sections, never part of the zero-shot table.
    for name in ZERO_SHOT_DIAGNOSTICS:
      results[name] = {e.name: {} for e in encoders}
  transfer_tasks = []
  if "transfer" in evaluators:
    transfer_tasks, skipped = prepare_transfer(store, config, data_cfg, output_dir)
    results["meta"]["transfer"] = {
        "targets": [t.label for t in transfer_targets(config, data_cfg)], "skipped": skipped}
  task_cache = {}
  work = [(e, t) for e in encoders for t in tasks]
  bar = None
  if config.progress:
    from tqdm import auto as tqdm_auto  # pylint: disable=g-import-not-at-top
    bar = tqdm_auto.tqdm(total=len(work), desc="evaluate", file=sys.stderr)
  for encoder, task in work:
    if bar is not None:
      bar.set_postfix_str(f"{encoder.name}/{task}")
    if task not in task_cache:
      task_cache[task] = task_data(store, task, label_names, config, data_cfg)
      d = task_cache[task]
      results["meta"]["classes"][task] = d.class_names
      results["meta"]["records"][task] = {s: int(d.labels[s].shape[0]) for s in SPLITS}
      # Test labels beside the 100 % probes' test scores: enough to compare any two encoders
      # on the same records afterwards (probe_paired_difference), e.g. across result files.
      results["meta"].setdefault("test_labels", {})[task] = d.labels["test"].astype(int).tolist()
      results["meta"]["class_scoring"][task] = d.class_scoring
      if d.coverage:
        results["meta"]["coverage"][task] = d.coverage
    data = task_cache[task]
    probe = None
    if "linear_probe" in evaluators:
      results["linear_probe"][encoder.name][task], probe = run_probe(encoder, data, config)
    if "finetune" in evaluators:
      out = run_finetune(encoder, data, config)
      if out is not None:
        results["finetune"][encoder.name][task] = out
    if "zero_shot" in evaluators:
      suite = zero_shot_suite(encoder, data, config, data_cfg)
      for section, out in (suite or {}).items():
        results[section][encoder.name][task] = out
    if task in shift_tasks:
      probe = probe or full_probe(encoder, data, config)
      results["shift"][encoder.name][task] = run_shift(encoder, data, probe, config)
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()
  if "retrieval" in evaluators:
    for encoder in encoders:
      out = run_retrieval(encoder, store, config)
      if out is not None:
        results["retrieval"][encoder.name] = out
  if "transfer" in evaluators:
    results["transfer"] = run_transfer(encoders, transfer_tasks, config)
  # Shift tasks outside config.tasks still get their curves.
  for task in shift_tasks:
    if task in tasks:
      continue
    data = task_data(store, task, label_names, config, data_cfg)
    for encoder in encoders:
      results["shift"][encoder.name][task] = run_shift(
          encoder, data, full_probe(encoder, data, config), config)
  return results


# ----------------------------------------------------------------------------------------------
# Output: markdown tables, JSON, plots.


def _pct(x) -> str:
  return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def _ci_cell(m: Optional[dict]) -> str:
  if not m:
    return "–"
  cell = _pct(m.get("value"))
  if "ci_low" in m and np.isfinite(m["ci_low"]):
    cell += f" [{_pct(m['ci_low'])}, {_pct(m['ci_high'])}]"
  return cell


def _fraction_cell(entry: Optional[dict], metric: str) -> str:
  """Single run: value [95 % CI]; several seeds: mean ± sd (n)."""
  if not entry:
    return "–"
  runs = entry["runs"]
  if len(runs) == 1:
    return _ci_cell(runs[0]["test"].get(metric))
  summary = entry[metric]
  return f"{_pct(summary['mean'])} ± {100 * summary['std']:.1f} (n={len(runs)})"


def _fraction_table(section: dict, tasks, fractions, metric: str) -> list[str]:
  header = ["encoder"] + [f"{t} {f:g}" for t in tasks for f in fractions]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for encoder, per_task in section.items():
    if not per_task:
      continue
    cells = [_fraction_cell(per_task.get(t, {}).get(str(f)), metric)
             for t in tasks for f in fractions]
    lines.append("| " + " | ".join([encoder] + cells) + " |")
  return lines


def results_markdown(results: dict, title: str, command: Optional[str] = None) -> str:
  meta = results["meta"]
  tasks, fractions = meta["tasks"], meta["fractions"]
  out = [f"# {title}", ""]
  if command:
    out += ["Produced by:", "", "```", command, "```", ""]
  splits = "MERL's published split files" if meta["merl_splits"] else \
      "TFDS splits (PTB-XL folds 1–8 / 9 / 10)"
  out += [f"Splits: {splits}. Every choice on validation; test scored once. Values in %; "
          f"single runs show value [95 % bootstrap CI, {meta['n_bootstrap']} resamples], "
          "several seeds show mean ± sd over seeds (per-run CIs in the JSON).", ""]
  out += ["Records (train / validation / test) and classes evaluated (positives in train and "
          "validation) per task: " + "; ".join(
              f"{t}: {r['train']} / {r['validation']} / {r['test']}, "
              f"{len(meta['classes'][t])} classes" for t, r in meta["records"].items()) + ".", ""]
  if meta.get("skipped_tasks"):
    out += ["Tasks not evaluated: " + "; ".join(
        f"{t} ({why})" for t, why in meta["skipped_tasks"].items()) + ".", ""]
  out += _class_scoring_markdown(meta)
  for key, label in (("linear_probe", "Linear probe"), ("finetune", "Fine-tuning")):
    if key not in results:
      continue
    key_fractions = fractions if key == "linear_probe" else sorted(
        {float(f) for e in results[key].values() for t in e.values() for f in t})
    if not key_fractions:
      continue
    out += _headline_table(results[key], label, tasks, max(key_fractions))
    # Macro F1 right after macro AUROC: the two headline metrics, then AUPRC.
    for metric in ("macro_auroc", "macro_f1", "macro_auprc"):
      note = " (per-class thresholds fixed on validation)" if metric == "macro_f1" else ""
      out += [f"## {label}: {metric.replace('_', ' ')}{note} (task, label fraction)", ""]
      out += _fraction_table(results[key], tasks, key_fractions, metric)
      out.append("")
    out += _probe_feature_markdown(results[key], tasks, key_fractions)
  out += _zero_shot_markdown(results, tasks)
  if "retrieval" in results and any(results["retrieval"].values()):
    out += ["## Retrieval (test, records with a report): Recall@K % (chance in brackets)", ""]
    some = next(v for v in results["retrieval"].values() if v)
    ks = sorted(int(k.split("@")[1]) for k in some if k.startswith("ecg_to_report/R@"))
    cols = [f"{d} R@{k}" for d in ("ecg→report", "report→ecg") for k in ks]
    out += ["| encoder | N | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for encoder, r in results["retrieval"].items():
      if not r or "error" in r:
        continue
      cells = [f"{_pct(r[f'{d}/R@{k}'])} ({_pct(r[f'chance/{d}/R@{k}'])})"
               for d in ("ecg_to_report", "report_to_ecg") for k in ks]
      out.append("| " + " | ".join([encoder, str(r["num_queries"])] + cells) + " |")
    out.append("")
  out += _shift_markdown(results)
  out += _transfer_markdown(results)
  return "\n".join(out) + "\n"


def _probe_feature_markdown(section: dict, tasks, fractions) -> list[str]:
  """Which probe feature validation chose per (task, fraction), where there was a choice."""
  rows = []
  for encoder, per_task in section.items():
    cells = []
    for task in tasks:
      for fraction in fractions:
        entry = (per_task.get(task) or {}).get(str(float(fraction))) or {}
        cells.append(entry.get("feature", "–"))
    if any(len((e or {}).get("val_by_feature", {})) > 1 for t in per_task.values()
           for e in (t or {}).values()):
      rows.append(_row([encoder] + cells))
  if not rows:
    return []
  head = [f"{t} {f:g}" for t in tasks for f in fractions]
  return (["## Probe features chosen on validation (mean validation macro AUROC over seeds)",
           "", _row(["encoder"] + head), "|" + "---|" * (len(head) + 1)] + rows + [""])


def _row(cells) -> str:
  return "| " + " | ".join(str(c) for c in cells) + " |"


def _task_table_head(first: str, tasks) -> list[str]:
  return [_row([first] + list(tasks)), "|" + "---|" * (len(tasks) + 1)]


def _class_scoring_markdown(meta: dict) -> list[str]:
  """The 'Classes scored per task' table (+ the names left out), from meta['class_scoring']."""
  scoring = {t: c for t, c in (meta.get("class_scoring") or {}).items() if c}
  if not scoring:
    return []
  out = ["## Classes scored per task", "",
         "A class is evaluated when it has positives in train and validation (and is not "
         "positive in every validation record); of those, classes without a test positive (or "
         "negative) have no AUROC and are left out of every macro mean. Each left-out class is "
         "counted under its first reason.", "",
         _row(["task", "classes in the task", "scored", "no train positive",
               "no validation positive", "no test positive",
               "no validation / test negative"]), "|" + "---|" * 7]
  for task, c in scoring.items():
    lo = c["left_out"]
    out.append(_row([task, c["classes"], len(c["scored"]), len(lo["no_train_positive"]),
                     len(lo["no_validation_positive"]), len(lo["no_test_positive"]),
                     len(lo["no_validation_negative"]) + len(lo["no_test_negative"])]))
  out.append("")
  names = []
  for task, c in scoring.items():
    parts = [f"{LEFT_OUT_REASONS[r]}: {', '.join(v)}" for r, v in c["left_out"].items() if v]
    if parts:
      names.append(f"- {task}: " + "; ".join(parts))
  if names:
    out += ["Left out:", ""] + names + [""]
  return out


def _headline_table(section: dict, label: str, tasks, fraction: float) -> list[str]:
  """Macro AUROC / macro F1 per task at one label fraction (the largest)."""
  rows = [(encoder, per_task) for encoder, per_task in section.items() if per_task]
  if not rows:
    return []
  out = [f"## {label} (test, {100 * fraction:g} % labels): macro AUROC / macro F1 (thresholds "
         "fixed on validation)", ""] + _task_table_head("encoder", tasks)
  for encoder, per_task in rows:
    cells = []
    for t in tasks:
      entry = per_task.get(t, {}).get(str(fraction))
      cells.append("–" if not entry else
                   f"{_fraction_cell(entry, 'macro_auroc')} / {_fraction_cell(entry, 'macro_f1')}")
    out.append(_row([encoder] + cells))
  return out + [""]


def _auroc_f1_cell(entry: Optional[dict], suffix: str = "") -> str:
  if not entry:
    return "–"
  cell = _ci_cell(entry.get("macro_auroc"))
  if entry.get("macro_f1"):
    cell += f" / {_ci_cell(entry['macro_f1'])}"
  return cell + suffix


def _zero_shot_markdown(results: dict, tasks) -> list[str]:
  """Zero-shot (chosen on validation), then its two diagnostics, each in its own section."""
  out = []
  zs = {e: v for e, v in (results.get("zero_shot") or {}).items() if v}
  if zs:
    out += ["## Zero-shot (test): macro AUROC / macro F1 (thresholds from validation)", "",
            "Per task, the prompt set (zero_shot.prompt_sets) and the per-record score "
            "normalisation (zero_shot.normalizations: raw cosine; centered = minus the "
            "record's mean over the task's class prompts; softmax over the task's classes) "
            "with the best validation macro AUROC; only that pair is scored on test.", ""]
    out += _task_table_head("encoder", tasks)
    for encoder, per_task in zs.items():
      out.append(_row([encoder] + [_auroc_f1_cell(per_task.get(t)) for t in tasks]))
    out += ["", "Chosen on validation: prompt set / normalisation (validation macro AUROC)", ""]
    out += _task_table_head("encoder", tasks)
    for encoder, per_task in zs.items():
      out.append(_row([encoder] + [
          f"{per_task[t].get('prompt_set', '–')} / {per_task[t].get('normalization', 'raw')} "
          f"({_pct(per_task[t].get('val_macro_auroc'))})" if t in per_task else "–"
          for t in tasks]))
    out.append("")
    scales = []
    for encoder, per_task in zs.items():
      some = next(iter(per_task.values()))
      if "softmax_scale" in some:
        source = ("the model's logit scale" if some.get("softmax_scale_source") == "model"
                  else "fixed; the model's is unknown")
        scales.append(f"{encoder} {some['softmax_scale']:.3g} ({source})")
    if scales:
      out += ["softmax multiplies the cosines by: " + "; ".join(scales) + ".", ""]
    for encoder, per_task in zs.items():
      options = []
      for t in tasks:
        for prompt_set, by_norm in (per_task.get(t, {}).get("validation") or {}).items():
          for norm in by_norm:
            if (prompt_set, norm) not in options:
              options.append((prompt_set, norm))
      if not options:
        continue
      out += [f"Validation macro AUROC of every option, {encoder} (* = chosen):", ""]
      out += _task_table_head("prompt set / normalisation", tasks)
      for prompt_set, norm in options:
        cells = []
        for t in tasks:
          entry = per_task.get(t, {})
          value = (entry.get("validation") or {}).get(prompt_set, {}).get(norm)
          mark = "*" if (entry.get("prompt_set"), entry.get("normalization")) == (
              prompt_set, norm) else ""
          cells.append("–" if value is None else f"{_pct(value)}{mark}")
        out.append(_row([f"{prompt_set} / {norm}"] + cells))
      out.append("")
  proto = {e: v for e, v in (results.get("prototype") or {}).items() if v}
  if proto:
    out += ["## Prototype diagnostic (uses training labels — not zero-shot): test macro AUROC / "
            "macro F1", "",
            "Class embedding = the mean of the L2-normalised text embeddings of the training "
            "reports that carry the class; cosine to the test ECG embeddings, normalisation "
            "(in brackets) chosen on validation. Prototypes good and prompts bad → the prompts "
            "are the problem; both bad → the ECG–text alignment is.", ""]
    out += _task_table_head("encoder", tasks)
    for encoder, per_task in proto.items():
      out.append(_row([encoder] + [
          _auroc_f1_cell(per_task.get(t), f" ({per_task[t]['normalization']})")
          if t in per_task else "–" for t in tasks]))
    out.append("")
    missing = sorted({f"{t}: {', '.join(v['no_prototype'])}" for per_task in proto.values()
                      for t, v in per_task.items() if v.get("no_prototype")})
    if missing:
      out += ["Classes without a training report (no prototype, left out): "
              + "; ".join(missing) + ".", ""]
  ceiling = {e: v for e, v in (results.get("text_ceiling") or {}).items() if v}
  if ceiling:
    out += ["## Text-only ceiling (test reports against the chosen prompts, cosine; no ECG): "
            "macro AUROC", "",
            "Each encoder's text tower alone: the test reports' own embeddings scored against "
            "the class prompts chosen for zero-shot (prompt set in brackets). Roughly the "
            "ceiling an ECG encoder aligned to that text space can approach.", ""]
    out += _task_table_head("encoder", tasks)
    for encoder, per_task in ceiling.items():
      out.append(_row([encoder] + [
          f"{_ci_cell(per_task[t].get('macro_auroc'))} ({per_task[t].get('prompt_set', '–')})"
          if t in per_task else "–" for t in tasks]))
    out.append("")
    counts = {}
    for per_task in ceiling.values():
      for t, v in per_task.items():
        counts.setdefault(t, (v["num_records"], v["num_left_out"]))
    out += ["Test records scored (empty reports left out): " + "; ".join(
        f"{t}: {n} ({left} left out)" for t, (n, left) in counts.items()) + ".", ""]
  return out


_REDUCED_LEADS_WORDS = {"native": "native lead subset", "zeros": "zero-filled"}


def _shift_markdown(results: dict) -> list[str]:
  """The 'Distribution shift' section: a table per encoder and task, then how leads were cut."""
  if "shift" not in results or not any(results["shift"].values()):
    return []
  out = ["## Distribution shift (test): macro AUROC % of the fixed 100 % probe", ""]
  modes: dict[str, list] = {}
  for encoder, per_task in results["shift"].items():
    for task, curves in per_task.items():
      out += [f"**{encoder} / {task}** (clean "
              f"{_pct(curves[0]['clean']['macro_auroc']) if curves else '–'})", ""]
      out += ["| corruption | unit | AUROC at each severity (weakest first) |", "|---|---|---|"]
      for c in curves:
        values = ", ".join(f"{s}: {_pct(v['macro_auroc'])}"
                           for s, v in zip(c["severities"], c["values"]))
        out.append(f"| {c['corruption']} | {c['unit']} | {values} |")
        # Results written before the switch existed were all zero-filled.
        if c["corruption"] == "reduced_leads":
          mode = c.get("reduced_leads_mode", "zeros")
          if encoder not in modes.setdefault(mode, []):
            modes[mode].append(encoder)
      out.append("")
  if modes:
    out += ["reduced_leads: " + "; ".join(
        f"{_REDUCED_LEADS_WORDS.get(mode, mode)} for {', '.join(encoders)}"
        for mode, encoders in sorted(modes.items())) + ".", ""]
  return out


def _transfer_markdown(results: dict) -> list[str]:
  """The 'Cross-dataset transfer' section: one row per encoder and target, then the maps."""
  if "transfer" not in results:
    return []
  out = ["## Cross-dataset transfer: probe trained on PTB-XL, target scored once", "",
         "Shared classes: PTB-XL statements with a SNOMED twin in the target. Choices on "
         "PTB-XL validation; gap = target − PTB-XL test macro AUROC over the classes scored on "
         "both.", ""]
  rows = [(e, t, r) for e, per_target in results["transfer"].items()
          for t, r in per_target.items()]
  if rows:
    out += ["| encoder | target (task) | N | classes | AUROC | AUPRC | F1 | PTB-XL test AUROC "
            "| gap |", "|" + "---|" * 9]
    for encoder, target, r in rows:
      m, gap = r["target_metrics"], r["gap"]
      delta = "–" if gap["delta"] is None else f"{100 * gap['delta']:+.1f}"
      out.append(f"| {encoder} | {target} ({r['target_task']}) | {r['records']['target']} | "
                 f"{m['num_evaluated']}/{len(r['classes'])} | {_ci_cell(m.get('macro_auroc'))} "
                 f"| {_ci_cell(m.get('macro_auprc'))} | {_ci_cell(m.get('macro_f1'))} | "
                 f"{_ci_cell(r['in_domain'].get('macro_auroc'))} | {delta} |")
    out.append("")
    mapped = {}
    for _, target, r in rows:
      mapped.setdefault(target, r)
    for target, r in mapped.items():
      pairs = ", ".join(f"{c['ptbxl']}={'+'.join(c['target'])} ({c['positives']['target']})"
                        for c in r["classes"])
      out += [f"{target}: PTB-XL=target (target positives): {pairs}."
              + (f" Too rare in PTB-XL: {', '.join(d['ptbxl'] for d in r['dropped'])}."
                 if r["dropped"] else ""), ""]
  skipped = results["meta"].get("transfer", {}).get("skipped", {})
  if skipped:
    out += ["Not built, skipped: " + ", ".join(skipped) + " (see the JSON for the build "
            "command).", ""]
  return out


def _save_auroc_figure(fig, axes, path) -> pathlib.Path:
  """Labels a grid of test-AUROC subplots, writes it as a PNG and closes the figure."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  axes[0][0].set_ylabel("test macro AUROC (%)")
  axes[0][-1].legend(fontsize=7)
  fig.tight_layout()
  path = pathlib.Path(path)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_fractions(results: dict, path) -> Optional[pathlib.Path]:
  """AUROC against label fraction, one subplot per task, one line per encoder."""
  if "linear_probe" not in results:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  tasks = results["meta"]["tasks"]
  fig, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks), 3.2), squeeze=False)
  for ax, task in zip(axes[0], tasks):
    for encoder, per_task in results["linear_probe"].items():
      entry = per_task.get(task)
      if not entry:
        continue
      fractions = sorted(entry, key=float)
      means = [100 * entry[f]["macro_auroc"]["mean"] for f in fractions]
      stds = [100 * entry[f]["macro_auroc"]["std"] for f in fractions]
      ax.errorbar([100 * float(f) for f in fractions], means, yerr=stds, marker="o",
                  capsize=3, label=encoder)
    ax.set_xscale("log")
    ax.set_xlabel("label fraction (%)")
    ax.set_title(task, fontsize=9)
  return _save_auroc_figure(fig, axes, path)


def plot_shift(results: dict, path) -> Optional[pathlib.Path]:
  """Degradation curves: one row per task, one subplot per corruption, a line per encoder."""
  if "shift" not in results or not any(results["shift"].values()):
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  tasks = sorted({t for per_task in results["shift"].values() for t in per_task})
  names = [c["corruption"] for c in next(
      per_task[t] for per_task in results["shift"].values() for t in per_task)]
  fig, axes = plt.subplots(len(tasks), len(names), figsize=(3 * len(names), 2.8 * len(tasks)),
                           squeeze=False)
  for row, task in enumerate(tasks):
    for col, name in enumerate(names):
      ax = axes[row][col]
      for encoder, per_task in results["shift"].items():
        for curve in per_task.get(task, []):
          if curve["corruption"] != name:
            continue
          ys = [100 * curve["clean"]["macro_auroc"]] + [100 * v["macro_auroc"]
                                                        for v in curve["values"]]
          ax.plot(range(len(ys)), ys, marker="o", label=encoder)
          ax.set_xticks(range(len(ys)))
          ax.set_xticklabels(["clean"] + [str(s) for s in curve["severities"]], fontsize=7)
          ax.set_xlabel(curve["unit"], fontsize=8)
      ax.set_title(f"{task}: {name}", fontsize=8)
  return _save_auroc_figure(fig, axes, path)


def _json_default(obj):
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if isinstance(obj, (np.floating, np.integer)):
    return obj.item()
  return str(obj)


def results_json(results: dict) -> str:
  """The results as JSON: one level of indentation per nesting level, but every list of plain
  numbers (or strings) on one line. `json.dumps(indent=1)` puts each number of the stored
  score matrices on its own, deeply indented line, which made a grid's file several times
  larger than its content.
  """
  plain = json.loads(json.dumps(results, default=_json_default, allow_nan=True))

  def fmt(obj, level: int) -> str:
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(obj, dict) and obj:
      return "{\n" + ",\n".join(f"{inner}{json.dumps(k)}: {fmt(v, level + 1)}"
                                for k, v in obj.items()) + f"\n{pad}}}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
      return "[\n" + ",\n".join(f"{inner}{fmt(v, level + 1)}" for v in obj) + f"\n{pad}]"
    return json.dumps(obj, allow_nan=True)

  return fmt(plain, 0)


def write_results(results: dict, results_dir: str, name: str,
                  command: Optional[str] = None, title: Optional[str] = None) -> dict:
  """Writes <results_dir>/<name>.md, .json and the PNGs; returns {kind: path}."""
  folder = pathlib.Path(results_dir)
  folder.mkdir(parents=True, exist_ok=True)
  paths = {"json": folder / f"{name}.json", "md": folder / f"{name}.md"}
  results = dict(results, meta=dict(results["meta"], command=command))
  paths["json"].write_text(results_json(results), encoding="utf-8")
  paths["md"].write_text(results_markdown(results, title or name, command), encoding="utf-8")
  fractions_png = plot_fractions(results, folder / f"{name}_fractions.png")
  shift_png = plot_shift(results, folder / f"{name}_shift.png")
  if fractions_png:
    paths["fractions_png"] = fractions_png
  if shift_png:
    paths["shift_png"] = shift_png
  return {k: str(v) for k, v in paths.items()}


def run(config, command: Optional[str] = None) -> dict:
  """Loads the checkpoint and baselines, evaluates, writes the outputs; returns the results."""
  _check_config(config)
  t0 = time.time()
  encoders, run_config = build_encoders(config)
  output_dir = config.output_dir or os.path.join(_expand(config.checkpoint), "eval")
  data_cfg = eval_data_config(run_config, config)
  results = evaluate_encoders(encoders, data_cfg, config, output_dir)
  results["meta"]["checkpoint"] = _expand(config.checkpoint)
  results["meta"]["wall_time_s"] = time.time() - t0
  results_dir = config.results_dir or os.path.join(output_dir, "results")
  paths = write_results(results, results_dir, config.name, command)
  print(f"wrote {', '.join(paths.values())}", flush=True)
  results["paths"] = paths
  return results


def _define_flags():
  # Defined only when run as a program: merit_jax.ablations imports this module and owns
  # its own --config.
  return config_flags.DEFINE_config_file(
      "config", None, "Evaluation config, e.g. configs/evaluate.py.", lock_config=True)


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


if __name__ == "__main__":
  from merit_jax import cli  # pylint: disable=g-import-not-at-top
  _CONFIG = _define_flags()
  app.run(main, flags_parser=cli.make_flags_parser("merit_jax.evaluate"))
