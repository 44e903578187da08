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
  (`"replace"`) the template prompts of the classes it names. Its keys are matched to the task's
  classes exactly, else without leading / trailing '_' (MERL's split files write `ISC`, `AVB`,
  `NST` for PTB-XL's `ISC_`, `_AVB`, `NST_`). One file may serve several tasks: a key that is no
  class of the task but an SCP code or diagnostic (sub)class of `statements_csv` is skipped;
  any other key is an error (a typo would otherwise silently fall back to the templates).
- `class_embeddings(prompts, class_names, embed_text) -> (C, d)`: prompt ensembling — each prompt
  embedding is L2-normalised, a class's prompts are averaged and the mean re-normalised.
- `zero_shot_scores(ecg_emb, class_emb) -> (N, C)` cosine similarities.
- `run_zero_shot(ecg_emb, labels, class_names, embed_text, prompts=None, val_ecg_emb=None,
  val_labels=None, n_bootstrap=1000, seed=0, **prompt_kwargs) -> dict` with the
  `metrics.evaluate_multilabel` layout: macro AUROC / AUPRC, and macro F1 when a validation set
  is given (thresholds on cosine scores chosen on validation, then applied to the test set),
  plus `"prompts"`, `"thresholds"` and `"val_macro_auroc"` (the prompts' macro AUROC on the
  validation set, None without one: the number to choose a prompt set by, so that the test set
  is scored once).

Prompt files: `configs/prompts/ptbxl_reports.yaml` holds prompts for every class of the PTB-XL
tasks superdiagnostic, subdiagnostic, form and rhythm, written in the style of the PTB-XL
reports the text tower is trained on (German device statements such as "unvollstÄndiger
rechtsschenkelblock", with the reports' upper-case umlauts, and English ones such as
"incomplete right bundle branch block."), since the English SCP descriptions of the default
templates are phrases a tokenizer trained on those reports has barely seen. Use it with

  python -m merit_jax.evaluate --config=configs/evaluate.py ... \
      --config.zero_shot.prompt_file=configs/prompts/ptbxl_reports.yaml \
      --config.zero_shot.user_prompts=replace

and compare prompt sets by `val_macro_auroc`, not by the test metrics.
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
  """Prompts per class from SCP descriptions × templates, plus optional user prompts.

  Args:
    class_names: the task's classes (PTB-XL names, or MERL's without the '_').
    statements_csv: PTB-XL's `scp_statements.csv`, for descriptions and the label vocabulary.
    descriptions: extra {class: description}, overriding the CSV's.
    templates: formatted with each class's description.
    prompt_file: JSON / YAML `{class: [prompts]}`, e.g. `configs/prompts/ptbxl_reports.yaml`;
      it may name classes of other PTB-XL tasks (skipped here, see the module docstring).
    user_prompts: "extend" appends the file's prompts to the template prompts, "replace" uses
      only the file's prompts for the classes it names (templates for the others).

  Returns:
    {class: [prompts]} in `class_names` order.
  """
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
  user_key = _match_user_keys(class_names, user)
  unknown_user = set(user) - set(user_key.values())
  if unknown_user:
    vocabulary = {_canonical(n) for n in _label_vocabulary(table, known)}
    unknown_user = {k for k in unknown_user if _canonical(k) not in vocabulary}
  if unknown_user:
    raise ValueError(f"zero_shot: prompt file names classes not in the task nor in "
                     f"scp_statements.csv: {sorted(unknown_user)}"
                     + ("" if table is not None else " (pass statements_csv to allow the "
                        "classes of other PTB-XL tasks)"))
  prompts = {}
  for name in class_names:
    own = list(user[user_key[name]]) if name in user_key else []
    if own and user_prompts == "replace":
      prompts[name] = own
      continue
    description = known.get(name) or _group_description(name, table)
    if description is None and not own:
      raise ValueError(f"zero_shot: no description for class {name!r}: pass statements_csv, "
                       "descriptions= or a prompt file that names it")
    built = [t.format(description=description) for t in templates] if description else []
    prompts[name] = built + own
  return prompts


def _canonical(name: str) -> str:
  # PTB-XL pads some names with '_' (ISC_, NST_, _AVB); MERL's split files drop it.
  return str(name).strip("_")


def _match_user_keys(class_names: Sequence[str], user: Mapping) -> dict:
  """Class name -> prompt-file key: the exact name, else the same name up to '_'."""
  by_canonical = {}
  for key in user:
    by_canonical.setdefault(_canonical(key), []).append(key)
  out = {}
  for name in class_names:
    if name in user:
      out[name] = name
      continue
    keys = by_canonical.get(_canonical(name), [])
    if len(keys) > 1:
      raise ValueError(f"zero_shot: prompt file keys {sorted(keys)} all name class {name!r}")
    if keys:
      out[name] = keys[0]
  return out


def _label_vocabulary(table, known: Mapping) -> set:
  """Every PTB-XL label name: SCP codes, diagnostic (sub)classes and the group names."""
  names = set(known) | set(GROUP_DESCRIPTIONS)
  if table is not None:
    names |= {str(c) for c in table.index}
    for column in ("diagnostic_class", "diagnostic_subclass"):
      if column in table.columns:
        names |= {str(v) for v in table[column].dropna()}
  return names


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
  """Zero-shot AUROC / AUPRC (and F1 with validation thresholds) for one task.

  With `val_ecg_emb` / `val_labels` the result also holds `val_macro_auroc`, the prompts'
  validation macro AUROC, by which prompt sets are to be chosen (None without validation).
  """
  labels = np.asarray(labels)
  if labels.ndim != 2 or labels.shape[1] != len(class_names):
    raise ValueError(f"zero_shot: labels {labels.shape} do not match {len(class_names)} classes")
  if prompts is None:
    prompts = build_class_prompts(class_names, **prompt_kwargs)
  class_emb = class_embeddings(prompts, class_names, embed_text)
  thresholds = val_auroc = None
  if (val_ecg_emb is None) != (val_labels is None):
    raise ValueError("zero_shot: pass both val_ecg_emb and val_labels, or neither")
  if val_ecg_emb is not None:
    val_scores = zero_shot_scores(val_ecg_emb, class_emb)
    thresholds = metrics.best_f1_thresholds(val_labels, val_scores)
    # Prompt sets are compared on validation: the test AUROC must not pick one.
    val_auroc = metrics.macro_auroc(val_labels, val_scores)
  result = metrics.evaluate_multilabel(labels, zero_shot_scores(ecg_emb, class_emb), thresholds,
                                       n_bootstrap=n_bootstrap, seed=seed)
  result["prompts"] = {name: list(prompts[name]) for name in class_names}
  result["thresholds"] = None if thresholds is None else thresholds.tolist()
  result["val_macro_auroc"] = val_auroc
  return result
