"""Cross-dataset transfer: a linear probe trained on PTB-XL, scored once on another dataset.

The classes are the PTB-XL SCP statements (the source's `all` task) that have a SNOMED twin
among the target's classes (`snomed_maps.PTBXL_EQUIVALENTS`, as stored in the target's
`ptbxl_equivalents` metadata) and enough positives in PTB-XL train and validation. The choice
never looks at the target's labels. On those classes the probe is trained exactly as
`linear_probe.run_linear_probe` does (PTB-XL train; epochs, weight decay and F1 thresholds on
PTB-XL validation; PTB-XL test scored once = the in-domain number), then the fixed head and
thresholds score every target record once (`ProbeResult.evaluate`). The gap is target minus
in-domain macro AUROC over the classes scored on both.

Target signals go through the checkpoint's preprocessing (rate, length, band-pass,
normalisation) by the same `FeatureStore` code that reads PTB-XL: the source's data config with
the target's name/config/data_dir (`target_data_config`).

Public API:

- `Target(name, config, data_dir, task=None)`; `parse_targets('physionet2021/cpsc2018[:task],
  ...', data_dir) -> [Target]`. Without a task: the dataset's own class list when it stores one
  besides `challenge` (CPSC2018: `cpsc`), else `challenge`.
- `open_target(target) -> builder`; raises `TargetNotBuilt` (a FileNotFoundError naming the
  folder and the build command).
- `shared_classes(source_names, train_labels, val_labels, target_names, equivalents,
  min_positives) -> (classes, dropped, unmatched)`; raises `NoSharedClasses` (a ValueError
  listing both label sets).
- `prepare_transfer(source_store, target, ...) -> TransferTask` (built once per target, used for
  every encoder); `fit_source_probe(encoder, task, **probe_kwargs) -> ProbeResult`;
  `score_target(probe, encoder, task) -> metrics`; `run_transfer(encoder, task, **probe_kwargs)
  -> dict` (JSON-ready: mapping, record counts, hyperparameters, target and in-domain metrics
  with bootstrap CIs, per-class AUROC, gap).

`Evaluator` (config `evals.transfer`: targets, data_dir, source_task, min_positives, probe,
n_bootstrap, seed): prepares every built target when it is built (a target that is built but
unusable fails the run at once, before any probing; one that is not built is skipped with its
build command, listed in `meta()`), then `run_transfer` per encoder and target.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence

import ml_collections
import numpy as np

from merit_jax.evaluators import features as features_lib
from merit_jax.evaluators import linear_probe
from merit_jax.evaluators import registry
from merit_jax.evaluators import tasks as tasks_lib

SOURCE_SPLITS = ("train", "validation", "test")
CHALLENGE_TASK = "challenge"


class TargetNotBuilt(FileNotFoundError):
  """The target dataset has no build under the given data_dir."""


class NoSharedClasses(ValueError):
  """PTB-XL and the target share no class that can be trained and selected on."""


@dataclasses.dataclass(frozen=True)
class Target:
  """A built TFDS dataset to transfer to; `task` None = `choose_task`'s default."""
  name: str
  config: Optional[str]
  data_dir: str
  task: Optional[str] = None

  @property
  def label(self) -> str:
    """'physionet2021/cpsc2018' (plus ':task' when one was named): the key in results."""
    out = self.name + (f"/{self.config}" if self.config else "")
    return out + (f":{self.task}" if self.task else "")

  @property
  def cache_name(self) -> str:
    return self.label.replace("/", "-").replace(":", "-")


def parse_targets(value, data_dir: str) -> list[Target]:
  """'name/config[:task],...' (or a list of such strings) → Targets under `data_dir`."""
  items = value.split(",") if isinstance(value, str) else list(value or [])
  out = []
  for item in (str(i).strip() for i in items):
    if not item:
      continue
    spec, _, task = item.partition(":")
    name, _, config = spec.partition("/")
    if not name or "/" in config:
      raise ValueError(f"transfer target {item!r}: expected name/config[:task], e.g. "
                       "physionet2021/cpsc2018 or physionet2021/cpsc2018:challenge")
    out.append(Target(name.strip(), config.strip() or None, str(data_dir), task.strip() or None))
  return out


def build_command(target: Target) -> str:
  """The command that builds `target` (physionet2021 needs the Challenge's training folder)."""
  config = f" --config={target.config}" if target.config else ""
  manual = ("<Challenge 2021 training/ folder>" if target.name == "physionet2021"
            else "<publisher's files>")
  return (f"python -m merit_jax.data.build {target.name}{config} --manual_dir={manual} "
          f"--data_dir={target.data_dir} --no_tokenizer")


def open_target(target: Target):
  """A read-only builder of the built target; raises TargetNotBuilt when there is none."""
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  spec = pipeline.SourceSpec(target.name, target.config, target.data_dir)
  try:
    return pipeline.open_builder(spec)
  except FileNotFoundError as e:
    where = os.path.join(os.path.expanduser(target.data_dir), target.name,
                         target.config or "<config>")
    raise TargetNotBuilt(
        f"{target.name}/{target.config or ''} is not built under data_dir "
        f"{target.data_dir} (no {where}/<version>/dataset_info.json); build it with "
        f"`{build_command(target)}`") from e


def choose_task(label_names: dict, requested: Optional[str] = None) -> str:
  """The target task: `requested`, else the dataset's own classes, else `challenge`."""
  if requested:
    if requested not in label_names:
      raise ValueError(f"transfer: the target has no task {requested!r}; it has "
                       f"{sorted(label_names)}")
    return requested
  # CPSC2018 stores its own 9 classes besides the Challenge's 26; its own coding of PVC
  # (164884008) is not a Challenge class, so its own list is the faithful one.
  own = [t for t in label_names if t != CHALLENGE_TASK]
  if len(own) == 1 and CHALLENGE_TASK in label_names:
    return own[0]
  if CHALLENGE_TASK in label_names:
    return CHALLENGE_TASK
  if len(label_names) == 1:
    return next(iter(label_names))
  raise ValueError(f"transfer: the target has several tasks {sorted(label_names)}; name one "
                   "as name/config:task")


def target_equivalents(builder, task: str) -> dict:
  """{target class: PTB-XL SCP code} from the build's metadata, else `snomed_maps`."""
  from merit_jax.data import snomed_maps  # pylint: disable=g-import-not-at-top
  stored = dict(builder.info.metadata.get("ptbxl_equivalents", {}) or {})
  if task in stored:
    return dict(stored[task])
  return dict(snomed_maps.PTBXL_EQUIVALENTS.get(task, {}))


def shared_classes(source_names: Sequence[str], train_labels: np.ndarray,
                   val_labels: np.ndarray, target_names: Sequence[str], equivalents: dict,
                   min_positives: int = 10) -> tuple[list, list, list]:
  """Pairs PTB-XL statements with target classes; only source labels decide (module doc).

  Args:
    source_names: PTB-XL label names (SCP codes) of the source task, in column order.
    train_labels: (N, len(source_names)) PTB-XL train labels.
    val_labels: the same for validation.
    target_names: the target task's class names, in column order.
    equivalents: {target class: SCP code}.
    min_positives: positives a statement needs in train and in validation (it also needs a
      negative in both), so it can be learned and selected on.

  Returns:
    (classes, dropped, unmatched). classes: [{"ptbxl", "source_index", "target" [names],
    "target_index" [ints], "positives": {"train", "validation"}}] in target order (several
    target classes with the same twin are merged: a record is positive when any is). dropped:
    mapped statements with too few PTB-XL positives ({"ptbxl", "target", "reason"}).
    unmatched: [{"target", "ptbxl"}] target classes without a twin among the source labels.

  Raises:
    NoSharedClasses: no class is left; the message lists both label sets.
  """
  source_index = {name: i for i, name in enumerate(source_names)}
  train_pos = np.asarray(train_labels).sum(0)
  val_pos = np.asarray(val_labels).sum(0)
  n_train, n_val = np.asarray(train_labels).shape[0], np.asarray(val_labels).shape[0]
  groups: dict[str, list] = {}
  unmatched = []
  for j, name in enumerate(target_names):
    code = equivalents.get(name)
    if code is None or code not in source_index:
      unmatched.append({"target": name, "ptbxl": code})
    else:
      groups.setdefault(code, []).append((j, name))
  classes, dropped = [], []
  for code, members in groups.items():
    i = source_index[code]
    counts = {"train": int(train_pos[i]), "validation": int(val_pos[i])}
    entry = {"ptbxl": code, "target": [n for _, n in members]}
    if min(counts.values()) < min_positives:
      dropped.append(dict(entry, reason=f"{counts['train']} train / {counts['validation']} "
                          f"validation positives in PTB-XL (need {min_positives})"))
    elif counts["train"] == n_train or counts["validation"] == n_val:
      dropped.append(dict(entry, reason="no negative in PTB-XL train or validation"))
    else:
      classes.append(dict(entry, source_index=i, target_index=[j for j, _ in members],
                          positives=counts))
  if not classes:
    raise NoSharedClasses(
        "transfer: no shared class. PTB-XL labels: " + ", ".join(source_names) +
        ". Target classes (-> PTB-XL twin): " + ", ".join(
            f"{n}->{equivalents.get(n, '-')}" for n in target_names) +
        (". Twins with too few PTB-XL positives: " + "; ".join(
            f"{d['ptbxl']} ({d['reason']})" for d in dropped) if dropped else ""))
  return classes, dropped, unmatched


def target_data_config(data_cfg, target: Target) -> ml_collections.ConfigDict:
  """The source's data config (preprocessing included) reading `target` instead."""
  base = data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else dict(data_cfg)
  out = ml_collections.ConfigDict(base)
  out.name, out.config, out.data_dir = target.name, target.config, str(target.data_dir)
  out.sources = None
  return out


@dataclasses.dataclass
class TransferTask:
  """One target, ready for any encoder: class mapping, both stores, the target splits."""
  target: Target
  target_task: str
  source_task: str
  source: Any                 # FeatureStore of PTB-XL
  target_store: Any           # FeatureStore of the target
  target_splits: list
  classes: list
  dropped: list
  unmatched: list
  min_positives: int

  @property
  def class_names(self) -> list[str]:
    return [c["ptbxl"] for c in self.classes]

  def source_labels(self, split: str) -> np.ndarray:
    cols = [c["source_index"] for c in self.classes]
    return self.source.split(split).labels[self.source_task][:, cols]

  def target_labels(self) -> np.ndarray:
    parts = []
    for split in self.target_splits:
      y = self.target_store.split(split).labels[self.target_task]
      parts.append(np.stack([y[:, c["target_index"]].max(1) for c in self.classes], axis=1))
    return np.concatenate(parts).astype(np.uint8)

  def source_features(self, encoder, split: str) -> np.ndarray:
    return self.source.features(encoder, split)["pooled"]

  def target_features(self, encoder) -> np.ndarray:
    return np.concatenate([self.target_store.features(encoder, s)["pooled"]
                           for s in self.target_splits])


def prepare_transfer(source_store, target: Target, *, source_task: str = "all",
                     min_positives: int = 10, cache_dir: Optional[str] = None,
                     batch_size: Optional[int] = None, max_records: Optional[int] = None,
                     progress: Optional[bool] = None) -> TransferTask:
  """Opens the target, finds the shared classes and sets up the target's FeatureStore.

  Args:
    source_store: the PTB-XL `FeatureStore` (its data config supplies the preprocessing).
    target: the dataset to transfer to.
    source_task: the PTB-XL task whose label names are SCP codes.
    min_positives: see `shared_classes`.
    cache_dir: feature cache of the target (None: no cache).
    batch_size, max_records, progress: default to the source store's.

  Raises:
    TargetNotBuilt, NoSharedClasses, ValueError (the source lacks `source_task`).
  """
  from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  builder = open_target(target)
  target_names = dict(builder.info.metadata.get("label_names", {}) or {})
  if not target_names:
    raise ValueError(f"transfer: {target.label} stores no label names (metadata label_names)")
  task = choose_task(target_names, target.task)
  source_names = pipeline.label_names(source_store.data_cfg)
  if source_task not in source_names:
    raise ValueError(f"transfer: the source dataset has no {source_task!r} labels (PTB-XL SCP "
                     f"statements); it has {sorted(source_names)}")
  classes, dropped, unmatched = shared_classes(
      source_names[source_task], source_store.split("train").labels[source_task],
      source_store.split("validation").labels[source_task], target_names[task],
      target_equivalents(builder, task), min_positives)
  splits = list(builder.info.splits)
  # The Challenge builds hold one `test` split with every record; other builds are scored on
  # their test split, or on all their records when they have none.
  splits = ["test"] if "test" in splits else sorted(splits)
  store = features_lib.FeatureStore(
      target_data_config(source_store.data_cfg, target), cache_dir,
      batch_size=batch_size or source_store.batch_size,
      max_records=source_store.max_records if max_records is None else max_records,
      progress=source_store.progress if progress is None else progress)
  return TransferTask(target=target, target_task=task, source_task=source_task,
                      source=source_store, target_store=store, target_splits=splits,
                      classes=classes, dropped=dropped, unmatched=unmatched,
                      min_positives=int(min_positives))


def fit_source_probe(encoder, task: TransferTask, **probe_kwargs) -> linear_probe.ProbeResult:
  """`run_linear_probe` on PTB-XL's shared classes (choices on validation, test once)."""
  splits = [(task.source_features(encoder, s), task.source_labels(s)) for s in SOURCE_SPLITS]
  return linear_probe.run_linear_probe(*splits, **probe_kwargs)


def score_target(probe: linear_probe.ProbeResult, encoder, task: TransferTask,
                 n_bootstrap: int = 1000, seed: int = 0) -> dict:
  """The fixed head and validation thresholds on every target record (nothing refitted)."""
  return probe.evaluate(task.target_features(encoder), task.target_labels(),
                        n_bootstrap=n_bootstrap, seed=seed)


def _summary(m: dict, names: Sequence[str]) -> dict:
  return {**{k: m[k] for k in ("macro_auroc", "macro_auprc", "macro_f1") if k in m},
          "num_evaluated": m["num_evaluated"],
          "excluded_classes": [names[i] for i in m["excluded_classes"]],
          "per_class_auroc": dict(zip(names, m["per_class"]["auroc"]))}


def _gap(target: dict, in_domain: dict, names: Sequence[str]) -> dict:
  """Target minus in-domain macro AUROC over the classes with an AUROC on both."""
  a = np.asarray(target["per_class"]["auroc"], np.float64)
  b = np.asarray(in_domain["per_class"]["auroc"], np.float64)
  both = np.isfinite(a) & np.isfinite(b)
  if not both.any():
    return {"classes": [], "target_macro_auroc": None, "in_domain_macro_auroc": None,
            "delta": None}
  t, d = float(a[both].mean()), float(b[both].mean())
  return {"classes": [n for n, k in zip(names, both) if k], "target_macro_auroc": t,
          "in_domain_macro_auroc": d, "delta": t - d}


def run_transfer(encoder, task: TransferTask, *, n_bootstrap: int = 1000, seed: int = 0,
                 **probe_kwargs) -> dict:
  """Trains on PTB-XL, scores the target once; returns the JSON-ready result.

  Keys: target (its label), target_task, target_splits, data_dir, source_task,
  min_positives, classes (the mapping, with PTB-XL positives per split and target positives),
  dropped, unmatched, records, hparams, grid, val, target_metrics / in_domain (PTB-XL test):
  macro AUROC/AUPRC/F1 {value, ci_low, ci_high}, num_evaluated, excluded_classes,
  per_class_auroc {SCP code: value}; gap (see `_gap`).
  """
  probe = fit_source_probe(encoder, task, n_bootstrap=n_bootstrap, bootstrap_seed=seed,
                           **probe_kwargs)
  names = task.class_names
  target_y = task.target_labels()
  target_m = score_target(probe, encoder, task, n_bootstrap=n_bootstrap, seed=seed)
  test_pos = task.source_labels("test").sum(0)
  classes = [{"ptbxl": c["ptbxl"], "target": c["target"],
              "positives": dict(c["positives"], test=int(p), target=int(t))}
             for c, p, t in zip(task.classes, test_pos, target_y.sum(0))]
  return {
      "target": task.target.label, "target_task": task.target_task,
      "target_splits": task.target_splits, "data_dir": str(task.target.data_dir),
      "source_task": task.source_task, "min_positives": task.min_positives,
      "classes": classes, "dropped": task.dropped, "unmatched": task.unmatched,
      "records": {**{s: int(task.source_labels(s).shape[0]) for s in SOURCE_SPLITS},
                  "target": int(target_y.shape[0])},
      "hparams": probe.hparams, "grid": probe.grid_results,
      "val": _summary(probe.val_metrics, names),
      "target_metrics": _summary(target_m, names),
      "in_domain": _summary(probe.test_metrics, names),
      "gap": _gap(target_m, probe.test_metrics, names),
  }


class Evaluator(registry.EvaluatorBase):
  """Cross-dataset transfer to every built target of `targets`."""

  def __init__(self, config, context):
    super().__init__(config, context)
    from merit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    data_dir = config.data_dir or pipeline.primary_source(context.data_cfg).data_dir
    self.targets = parse_targets(tasks_lib.parse_list(config.targets),
                                 tasks_lib.expand(data_dir))
    if not self.targets:
      raise ValueError("config.transfer.targets is empty; name built datasets, e.g. "
                       "physionet2021/cpsc2018,physionet2021/csn")
    self.tasks, self.skipped = [], {}
    for target in self.targets:
      cache_dir = None if context.output_dir is None else os.path.join(
          context.output_dir, "features", "transfer", target.cache_name)
      try:
        self.tasks.append(prepare_transfer(
            context.store, target, source_task=config.source_task,
            min_positives=int(config.min_positives), cache_dir=cache_dir))
      except TargetNotBuilt as e:
        # Transfer runs "when those datasets are present": an absent target is skipped.
        print(f"transfer: skipping {target.label}: {e}", flush=True)
        self.skipped[target.label] = str(e)

  def meta(self) -> dict:
    return {"transfer": {"targets": [t.label for t in self.targets], "skipped": self.skipped}}

  def run(self, encoder) -> dict:
    kwargs = linear_probe.probe_kwargs(self.config.probe, self.config.n_bootstrap)
    return {"transfer": {task.target.label: run_transfer(encoder, task,
                                                         seed=int(self.config.seed), **kwargs)
                         for task in self.tasks}}

  def scalars(self, results: dict) -> dict:
    """{"transfer/<target>/<metric>": target value} and the gap to PTB-XL test."""
    out = {}
    for target, r in (results.get("transfer") or {}).items():
      for metric in ("macro_auroc", "macro_auprc", "macro_f1"):
        if metric in r["target_metrics"]:
          out[f"transfer/{target}/{metric}"] = float(r["target_metrics"][metric]["value"])
      if r["gap"]["delta"] is not None:
        out[f"transfer/{target}/gap"] = float(r["gap"]["delta"])
    return out
