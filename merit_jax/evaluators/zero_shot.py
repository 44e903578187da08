"""Zero-shot classification from text prompts built on SCP statement descriptions.

Public API (model-free: text goes through a caller-supplied `embed_text(list[str]) -> (n, d)`):

- `DEFAULT_TEMPLATES`: prompt templates with a `{description}` slot.
- `load_scp_descriptions(statements_csv) -> dict[str, str]`: SCP code → description.
- `build_class_prompts(class_names, statements_csv=None, descriptions=None,
  templates=DEFAULT_TEMPLATES, prompt_file=None, user_prompts="extend") -> dict[str, list[str]]`.
  A class's description is looked up as an SCP code; PTB-XL superclass / subclass names that are
  not codes (`MI`, `STTC`, `ISCA`, `LAO/LAE`, ...) use `GROUP_DESCRIPTIONS`, or else the member
  codes' descriptions from `scp_statements.csv` joined with "or". `prompt_file` is JSON or YAML
  `{class: [prompts]}`; its prompts extend (`user_prompts="extend"`) or replace
  (`"replace"`) the template prompts of the classes it names.
- `class_embeddings(prompts, class_names, embed_text) -> (C, d)`: prompt ensembling — each prompt
  embedding is L2-normalised, a class's prompts are averaged and the mean re-normalised.
- `zero_shot_scores(ecg_emb, class_emb) -> (N, C)` cosine similarities.
- `run_zero_shot(ecg_emb, labels, class_names, embed_text, prompts=None, val_ecg_emb=None,
  val_labels=None, n_bootstrap=1000, seed=0, **prompt_kwargs) -> dict` with the
  `metrics.evaluate_multilabel` layout: macro AUROC / AUPRC, and macro F1 when a validation set
  is given (thresholds on cosine scores chosen on validation, then applied to the test set),
  plus `"prompts"` and `"thresholds"`.
"""

from __future__ import annotations

import json
import pathlib
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from merit_jax.evaluators import metrics

DEFAULT_TEMPLATES = (
    "an ECG showing {description}",
    "electrocardiogram with {description}",
    "12-lead ECG: {description}",
    "{description}",
)

# PTB-XL diagnostic superclass / subclass names that are not SCP codes themselves.
GROUP_DESCRIPTIONS = {
    "NORM": "normal ECG",
    "MI": "myocardial infarction",
    "STTC": "ST/T change",
    "CD": "conduction disturbance",
    "HYP": "hypertrophy",
    "ISCA": "ischemia in anterior leads",
    "ISCI": "ischemia in inferior leads",
    "ISC_": "non-specific ischemia",
    "LAO/LAE": "left atrial overload or enlargement",
    "RAO/RAE": "right atrial overload or enlargement",
    "LAFB/LPFB": "left anterior or left posterior fascicular block",
    "_AVB": "atrioventricular block",
}

EmbedText = Callable[[list], np.ndarray]


def _read_statements(statements_csv):
  import pandas as pd  # Local import: only prompt building needs pandas.
  path = pathlib.Path(statements_csv)
  if not path.exists():
    raise FileNotFoundError(f"zero_shot: scp_statements.csv not found at {path}")
  return pd.read_csv(path, index_col=0)


def load_scp_descriptions(statements_csv) -> dict:
  """SCP code → description from PTB-XL's `scp_statements.csv`."""
  table = _read_statements(statements_csv)
  if "description" not in table.columns:
    raise ValueError(f"zero_shot: {statements_csv} has no 'description' column")
  return {str(code): str(desc).strip() for code, desc in table["description"].items()}


def _group_description(name: str, table) -> Optional[str]:
  if name in GROUP_DESCRIPTIONS:
    return GROUP_DESCRIPTIONS[name]
  if table is None:
    return None
  for column in ("diagnostic_subclass", "diagnostic_class"):
    if column in table.columns:
      members = table.index[table[column] == name]
      if len(members):
        return " or ".join(str(table.loc[m, "description"]).strip() for m in members)
  return None


def _load_prompt_file(path) -> dict:
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"zero_shot: prompt file not found at {path}")
  text = path.read_text(encoding="utf-8")
  if path.suffix.lower() in (".yaml", ".yml"):
    import yaml  # Local import: YAML prompt files are optional.
    data = yaml.safe_load(text)
  else:
    data = json.loads(text)
  if not isinstance(data, dict):
    raise ValueError(f"zero_shot: {path} must map class names to lists of prompts")
  out = {}
  for name, prompts in data.items():
    if isinstance(prompts, str):
      prompts = [prompts]
    if not isinstance(prompts, list) or not all(isinstance(p, str) and p.strip()
                                                for p in prompts):
      raise ValueError(f"zero_shot: {path}: prompts for class {name!r} must be a non-empty "
                       "string or a list of non-empty strings")
    out[str(name)] = list(prompts)
  return out


def build_class_prompts(class_names: Sequence[str], statements_csv=None,
                        descriptions: Optional[Mapping[str, str]] = None,
                        templates: Sequence[str] = DEFAULT_TEMPLATES, prompt_file=None,
                        user_prompts: str = "extend") -> dict:
  """Prompts per class from SCP descriptions × templates, plus optional user prompts."""
  if user_prompts not in ("extend", "replace"):
    raise ValueError(f"zero_shot: user_prompts must be 'extend' or 'replace', got "
                     f"{user_prompts!r}")
  for template in templates:
    if "{description}" not in template:
      raise ValueError(f"zero_shot: template {template!r} lacks a {{description}} slot")
  table = _read_statements(statements_csv) if statements_csv is not None else None
  known = dict(descriptions or {})
  if table is not None:
    known = {**{str(c): str(d).strip() for c, d in table["description"].items()}, **known}
  user = _load_prompt_file(prompt_file) if prompt_file is not None else {}
  unknown_user = set(user) - set(class_names)
  if unknown_user:
    raise ValueError(f"zero_shot: prompt file names classes not in the task: "
                     f"{sorted(unknown_user)}")
  prompts = {}
  for name in class_names:
    if name in user and user_prompts == "replace":
      prompts[name] = list(user[name])
      continue
    description = known.get(name) or _group_description(name, table)
    if description is None and name not in user:
      raise ValueError(f"zero_shot: no description for class {name!r}: pass statements_csv, "
                       "descriptions= or a prompt file that names it")
    built = [t.format(description=description) for t in templates] if description else []
    prompts[name] = built + list(user.get(name, []))
  return prompts


def _l2_normalise(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_embeddings(prompts: Mapping[str, Sequence[str]], class_names: Sequence[str],
                     embed_text: EmbedText) -> np.ndarray:
  """(C, d) prompt-ensembled, L2-normalised class embeddings, rows in `class_names` order."""
  flat, owner = [], []
  for c, name in enumerate(class_names):
    if name not in prompts or not prompts[name]:
      raise ValueError(f"zero_shot: no prompts for class {name!r}")
    flat.extend(prompts[name])
    owner.extend([c] * len(prompts[name]))
  emb = np.asarray(embed_text(list(flat)), dtype=np.float64)
  if emb.ndim != 2 or emb.shape[0] != len(flat):
    raise ValueError(f"zero_shot: embed_text returned {emb.shape} for {len(flat)} prompts; "
                     "expected (num_prompts, dim)")
  emb = _l2_normalise(emb)
  owner = np.asarray(owner)
  sums = np.zeros((len(class_names), emb.shape[1]))
  np.add.at(sums, owner, emb)
  return _l2_normalise(sums / np.bincount(owner)[:, None]).astype(np.float32)


def zero_shot_scores(ecg_emb, class_emb) -> np.ndarray:
  """Cosine similarity (N, C) between ECG and class embeddings."""
  ecg_emb = np.asarray(ecg_emb, dtype=np.float64)
  class_emb = np.asarray(class_emb, dtype=np.float64)
  if ecg_emb.ndim != 2 or class_emb.ndim != 2 or ecg_emb.shape[1] != class_emb.shape[1]:
    raise ValueError(f"zero_shot: ECG embeddings {ecg_emb.shape} and class embeddings "
                     f"{class_emb.shape} must be (N, d) and (C, d)")
  return (_l2_normalise(ecg_emb) @ _l2_normalise(class_emb).T).astype(np.float32)


def run_zero_shot(ecg_emb, labels, class_names: Sequence[str], embed_text: EmbedText,
                  prompts: Optional[Mapping[str, Sequence[str]]] = None, val_ecg_emb=None,
                  val_labels=None, n_bootstrap: int = 1000, seed: int = 0,
                  **prompt_kwargs) -> dict:
  """Zero-shot AUROC / AUPRC (and F1 with validation thresholds) for one task."""
  labels = np.asarray(labels)
  if labels.ndim != 2 or labels.shape[1] != len(class_names):
    raise ValueError(f"zero_shot: labels {labels.shape} do not match {len(class_names)} classes")
  if prompts is None:
    prompts = build_class_prompts(class_names, **prompt_kwargs)
  class_emb = class_embeddings(prompts, class_names, embed_text)
  thresholds = None
  if (val_ecg_emb is None) != (val_labels is None):
    raise ValueError("zero_shot: pass both val_ecg_emb and val_labels, or neither")
  if val_ecg_emb is not None:
    thresholds = metrics.best_f1_thresholds(val_labels, zero_shot_scores(val_ecg_emb, class_emb))
  result = metrics.evaluate_multilabel(labels, zero_shot_scores(ecg_emb, class_emb), thresholds,
                                       n_bootstrap=n_bootstrap, seed=seed)
  result["prompts"] = {name: list(prompts[name]) for name in class_names}
  result["thresholds"] = None if thresholds is None else thresholds.tolist()
  return result
