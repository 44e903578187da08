"""Task data shared by the evaluators: labels and records per split, class scoring, list knobs.

`task_data` gives one PTB-XL task's train/validation/test records and labels: the TFDS splits
(PTB-XL folds 1-8 / 9 / 10), or with `merl_splits` MERL's published split files (ecg_id lists
and label columns, labels_merl/ptbxl_<stem>_{train,val,test}.csv), matched by ecg_id against
every record read. Classes without a positive in the training or validation records are left
out (nothing can be learned or selected for them); the rule never looks at the test split.
`class_scoring` reports how many classes of a task are scored and why the others are not.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

SPLITS = ("train", "validation", "test")
# Short names accepted for tasks, as in merit_jax.data.schema's PTB-XL tasks.
TASK_ALIASES = {"all": "all", "diag": "diagnostic", "diagnostic": "diagnostic",
                "sub": "subdiagnostic", "subdiagnostic": "subdiagnostic",
                "super": "superdiagnostic", "superdiagnostic": "superdiagnostic",
                "form": "form", "rhythm": "rhythm"}
# MERL's split-file stems (labels_merl/ptbxl_<stem>_{train,val,test}.csv).
MERL_STEMS = {"superdiagnostic": "super_class", "subdiagnostic": "sub_class", "form": "form",
              "rhythm": "rhythm"}
MERL_SPLITS = {"train": "train", "validation": "val", "test": "test"}
# Why a class of a task is not scored, in the order the reasons are checked (a class is counted
# under its first reason). The first three are `task_data`'s rule (train and validation only);
# the last two are the metrics': a class without test positives or negatives has no AUROC.
LEFT_OUT_REASONS = {"no_train_positive": "no train positive",
                    "no_validation_positive": "no validation positive",
                    "no_validation_negative": "no validation negative",
                    "no_test_positive": "no test positive",
                    "no_test_negative": "no test negative"}


def parse_list(value, cast=str) -> list:
  """('a', 'b') / 'a,b' / ('a,b',) -> [cast(a), cast(b)]; '', () or None -> [].

  Config lists are tuples; a command-line override such as `--config.tasks=super,sub` arrives
  as the one-string tuple ('super,sub',), so strings are split at commas.
  """
  if value is None:
    return []
  items = list(value) if isinstance(value, (list, tuple)) else [value]
  out = []
  for item in items:
    parts = item.split(",") if isinstance(item, str) else [item]
    out.extend(cast(p.strip() if isinstance(p, str) else p) for p in parts
               if str(p).strip() != "")
  return out


def resolve_tasks(names: Sequence[str], key: str = "config.tasks") -> list[str]:
  """Full task names, in order, without repeats; `key` names the config key in errors."""
  out = []
  for name in parse_list(names):
    if name not in TASK_ALIASES:
      raise ValueError(f"{key}: unknown task {name!r}; choose from {sorted(set(TASK_ALIASES))}")
    if TASK_ALIASES[name] not in out:
      out.append(TASK_ALIASES[name])
  return out


def expand(path) -> str:
  return os.path.abspath(os.path.expanduser(str(path)))


def find_file(data_cfg, relative: str, explicit=None) -> Optional[str]:
  """A publisher file: explicit path, or <manual_dir>[/<config>]/relative of each source."""
  if explicit:
    path = expand(explicit)
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
      if os.path.exists(expand(candidate)):
        return expand(candidate)
  return None


def merl_table(merl_dir: str, task: str, split: str):
  """(table, class names) of one MERL split file."""
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
    """(n, ...) `kind` features of the task's records of `split` (`FeatureStore.features`)."""
    parts = []
    for tfds_split, rows in self.index[split]:
      feats = self.store.features(encoder, tfds_split, corruption, seed,
                                  reduced_leads_mode=reduced_leads_mode, kinds=(kind,))
      parts.append(feats[kind][rows])
    return np.concatenate(parts)

  def prepare(self, encoder, kinds: Sequence[str], splits: Sequence[str] = SPLITS) -> None:
    """Computes (or reads) every kind of `kinds` on each of `splits` in one pass per split, so
    that the `features` calls after it, one kind at a time, run the encoder no more."""
    for split in splits:
      for tfds_split, _ in self.index[split]:
        self.store.features(encoder, tfds_split, kinds=tuple(kinds))

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


def class_scoring(class_names: Sequence[str], labels: dict) -> dict:
  """{"classes", "scored": [names], "left_out": {reason: [names]}} for one task.

  `labels`: split -> (n, C) over all of `class_names`. Only a report: the test columns decide
  nothing here that the metrics would not drop from the macro means anyway.
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


def _merl_labels(store, task: str, merl_dir: str):
  """(class names, labels, index, coverage) of one task from MERL's split files."""
  position = {}
  for s in SPLITS:
    for row, ecg_id in enumerate(store.split(s).ecg_id):
      position.setdefault(int(ecg_id), (s, row))
  labels, index, coverage, class_names = {}, {}, {}, None
  for split in SPLITS:
    table, classes = merl_table(merl_dir, task, split)
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
  return class_names, labels, index, coverage


def task_data(store, task: str, label_names: dict, data_cfg, merl_splits: bool = False,
              merl_dir: Optional[str] = None) -> TaskData:
  """Train/validation/test records and labels of one task (see module docstring)."""
  if merl_splits:
    merl_dir = merl_dir or find_file(data_cfg, "labels_merl")
    if not merl_dir:
      raise FileNotFoundError("merl_splits: no labels_merl/ folder under data.manual_dir; set "
                              "--config.merl_dir")
    class_names, labels, index, coverage = _merl_labels(store, task, merl_dir)
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


def metric_summary(m: dict) -> dict:
  """The macro metrics of an `evaluate_multilabel` result (no per-class lists)."""
  return {k: m[k] for k in ("macro_auroc", "macro_auprc", "macro_f1") if k in m} | {
      "num_evaluated": m.get("num_evaluated"), "excluded_classes": m.get("excluded_classes")}
