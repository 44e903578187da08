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

Diagnosable zero-shot (what `merit_jax.evaluate` runs):

- `normalize_scores(cosine, normalization, logit_scale=None)`: per record over the task's
  classes, `raw` (cosine), `centered` (minus the record's mean cosine over the class prompts:
  a record-level offset, e.g. short prompts sitting closer to short normal reports, otherwise
  works against every abnormal class when raw cosines are ranked across records) or `softmax`
  (softmax of cosine × the model's logit scale, or × `FIXED_SOFTMAX_SCALE` = 100 when unknown;
  `softmax_scale` says which).
- `build_prompt_sets(names, class_names, ...)`: the named prompt sets `scp_en` (templates),
  `report_de` (`configs/prompts/ptbxl_reports.yaml`), `knowledge`
  (`configs/prompts/ptbxl_knowledge.yaml`, CKEPE-style clinical descriptions of all 71 SCP
  statements and the PTB-XL group names), `all` (their union, ensembled) and `user`
  (`prompt_file` / `user_prompts`).
- `choose_on_validation(val_cosines, val_labels, normalizations, logit_scale)` and
  `run_zero_shot_selected(...)`: every (prompt set, normalisation) scored on validation, the
  best macro AUROC scored once on test.
- `prototype_embeddings(text_emb, labels, valid)` / `run_prototype(...)`: the PROTOTYPE
  diagnostic, class embedding = the normalised mean of the training reports' embeddings of a
  class. It uses training labels: it is not zero-shot. Prototypes good and prompts bad → the
  prompts are the problem; both bad → the ECG–text alignment is.
- `text_only_ceiling(report_emb, labels, class_emb, has_report)`: the test reports themselves
  (no ECG) against the chosen prompts, by cosine: how far the text tower alone gets.

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

from merit_jax.metrics import classification as metrics

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
                        user_prompts: str = "extend", unknown_keys: str = "error") -> dict:
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
    unknown_keys: "error" (default) refuses file keys that are neither a class of the task nor a
      label of `statements_csv`; "skip" ignores them (the bundled prompt sets, whose keys are
      PTB-XL labels, also serve datasets with another statements table).

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
  if unknown_keys not in ("error", "skip"):
    raise ValueError(f"zero_shot: unknown_keys must be 'error' or 'skip', got {unknown_keys!r}")
  unknown_user = set(user) - set(user_key.values()) if unknown_keys == "error" else set()
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


# ----------------------------------------------------------------------------------------------
# Score normalisation, prompt sets chosen on validation, and the two diagnostics.

# Per-record score normalisations (see `normalize_scores`).
NORMALIZATIONS = ("raw", "centered", "softmax")
# Softmax temperature when the encoder's own logit scale is unknown: CLIP's clipped maximum.
FIXED_SOFTMAX_SCALE = 100.0
PROMPT_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs" / "prompts"
# Named prompt sets: None = the SCP-description templates, else a bundled prompt file (its
# prompts replace the templates of the classes it names; the other classes keep the templates).
PROMPT_SET_FILES = {"scp_en": None, "report_de": "ptbxl_reports.yaml",
                    "knowledge": "ptbxl_knowledge.yaml"}
# `all` is the union of the named sets, ensembled; `user` is `prompt_file` / `user_prompts`.
PROMPT_SETS = tuple(PROMPT_SET_FILES) + ("all", "user")


def softmax_scale(logit_scale: Optional[float]) -> tuple[float, str]:
  """(multiplier of the cosines in `softmax`, 'model' | 'fixed'): the model's logit scale
  (1 / temperature) when known, else `FIXED_SOFTMAX_SCALE`."""
  if logit_scale is None or not np.isfinite(logit_scale) or logit_scale <= 0:
    return FIXED_SOFTMAX_SCALE, "fixed"
  return float(logit_scale), "model"


def normalize_scores(cosine, normalization: str = "raw",
                     logit_scale: Optional[float] = None) -> np.ndarray:
  """Per-record normalisation of (N, C) cosine scores over the task's classes.

  `raw`: the cosines. `centered`: each record's cosines minus their mean over the classes (a
  record-level offset, e.g. short reports sitting close to every short prompt, is removed).
  `softmax`: softmax over the classes of cosine × `softmax_scale(logit_scale)`.
  """
  s = np.asarray(cosine, dtype=np.float64)
  if s.ndim != 2:
    raise ValueError(f"zero_shot: scores must be (N, C), got {s.shape}")
  if normalization == "raw":
    return s
  if normalization == "centered":
    return s - s.mean(axis=1, keepdims=True)
  if normalization == "softmax":
    z = s * softmax_scale(logit_scale)[0]
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)
  raise ValueError(f"zero_shot: unknown normalization {normalization!r}; choose from "
                   f"{', '.join(NORMALIZATIONS)}")


def _check_names(kind: str, names: Sequence[str], known: Sequence[str]) -> None:
  if not names:
    raise ValueError(f"zero_shot: no {kind} given; choose from {', '.join(known)}")
  for name in names:
    if name not in known:
      raise ValueError(f"zero_shot: unknown {kind} {name!r}; choose from {', '.join(known)}")


def check_options(prompt_sets: Sequence[str], normalizations: Sequence[str]) -> None:
  """Raises ValueError naming an unknown prompt set or normalisation (or an empty list)."""
  _check_names("prompt set", prompt_sets, PROMPT_SETS)
  _check_names("normalization", normalizations, NORMALIZATIONS)


def build_prompt_sets(names: Sequence[str], class_names: Sequence[str], statements_csv=None,
                      descriptions: Optional[Mapping[str, str]] = None, prompt_file=None,
                      user_prompts: str = "extend", prompt_dir=None) -> dict:
  """{set name: {"prompts": {class: [prompts]}, "file": path | None, "fallback": [classes]}}.

  `scp_en`: the templates over SCP descriptions; `report_de` / `knowledge`: the bundled prompt
  files (`PROMPT_SET_FILES` under `prompt_dir`, default `PROMPT_DIR`), templates for the classes
  a file does not name (listed in "fallback"); `all`: per class the union of the three (in that
  order, duplicates dropped), ensembled by `class_embeddings`; `user`: `prompt_file` with
  `user_prompts` (the single prompt set of earlier versions).
  """
  _check_names("prompt set", list(names), PROMPT_SETS)
  folder = pathlib.Path(prompt_dir) if prompt_dir else PROMPT_DIR
  common = dict(statements_csv=statements_csv, descriptions=descriptions)
  out = {}

  def named(name):
    if name in out:
      return out[name]
    if name == "user":
      if prompt_file is None:
        raise ValueError("zero_shot: prompt set 'user' needs zero_shot.prompt_file")
      file, prompts = str(prompt_file), build_class_prompts(
          class_names, prompt_file=prompt_file, user_prompts=user_prompts, **common)
      named_classes = _match_user_keys(class_names, _load_prompt_file(prompt_file))
    elif name == "all":
      parts = [named(n) for n in PROMPT_SET_FILES]
      prompts = {c: list(dict.fromkeys(p for part in parts for p in part["prompts"][c]))
                 for c in class_names}
      file = None
      named_classes = {c: c for c in class_names
                       if any(c not in part["fallback"] for part in parts if part["file"])}
    elif PROMPT_SET_FILES[name] is None:
      file, prompts = None, build_class_prompts(class_names, **common)
      named_classes = {c: c for c in class_names}
    else:
      file = str(folder / PROMPT_SET_FILES[name])
      prompts = build_class_prompts(class_names, prompt_file=file, user_prompts="replace",
                                    unknown_keys="skip", **common)
      named_classes = _match_user_keys(class_names, _load_prompt_file(file))
    out[name] = {"prompts": prompts, "file": file,
                 "fallback": [c for c in class_names if c not in named_classes]}
    return out[name]

  for name in names:
    named(name)
  return {name: out[name] for name in names}


def _memo_embed(embed_text: EmbedText) -> EmbedText:
  """`embed_text` that embeds each distinct text once across calls (prompt sets overlap)."""
  cache = {}

  def embed(texts):
    missing = [t for t in dict.fromkeys(texts) if t not in cache]
    if missing:
      emb = np.asarray(embed_text(list(missing)))
      if emb.ndim != 2 or emb.shape[0] != len(missing):
        raise ValueError(f"zero_shot: embed_text returned {emb.shape} for {len(missing)} "
                         "texts; expected (num_texts, dim)")
      cache.update(zip(missing, emb))
    return np.stack([cache[t] for t in texts])

  return embed


def _nan_to_worst(x: float) -> float:
  return float(x) if np.isfinite(x) else -np.inf


def choose_on_validation(val_cosines: Mapping[str, np.ndarray], val_labels,
                         normalizations: Sequence[str] = NORMALIZATIONS,
                         logit_scale: Optional[float] = None) -> dict:
  """The (candidate, normalisation) with the best validation macro AUROC.

  Args:
    val_cosines: {candidate (e.g. prompt set): (N_val, C) cosine scores on validation}.
    val_labels: (N_val, C) validation labels. Test data never enters the choice.
    normalizations: the options tried per candidate.
    logit_scale: the model's logit scale for `softmax` (None: `FIXED_SOFTMAX_SCALE`).

  Returns:
    {"validation": {candidate: {normalization: macro AUROC}}, "prompt_set", "normalization",
     "val_macro_auroc"}; ties go to the earlier candidate, then the earlier normalisation.
  """
  _check_names("normalization", list(normalizations), NORMALIZATIONS)
  table, best, best_value = {}, None, -np.inf
  for candidate, cosine in val_cosines.items():
    table[candidate] = {}
    for norm in normalizations:
      value = metrics.macro_auroc(val_labels, normalize_scores(cosine, norm, logit_scale))
      table[candidate][norm] = value
      if best is None or _nan_to_worst(value) > best_value:
        best, best_value = (candidate, norm), _nan_to_worst(value)
  if best is None:
    raise ValueError("zero_shot: no candidate to choose from")
  return {"validation": table, "prompt_set": best[0], "normalization": best[1],
          "val_macro_auroc": table[best[0]][best[1]]}


def _score_chosen(cosine_test, labels, cosine_val, val_labels, normalization, logit_scale,
                  n_bootstrap, seed) -> dict:
  """Test metrics of one (scores, normalisation), F1 thresholds fixed on validation."""
  val_scores = normalize_scores(cosine_val, normalization, logit_scale)
  thresholds = metrics.best_f1_thresholds(val_labels, val_scores)
  result = metrics.evaluate_multilabel(
      labels, normalize_scores(cosine_test, normalization, logit_scale), thresholds,
      n_bootstrap=n_bootstrap, seed=seed)
  result["thresholds"] = thresholds.tolist()
  return result


def run_zero_shot_selected(ecg_emb, labels, class_names: Sequence[str], embed_text: EmbedText,
                           prompt_sets: Mapping[str, Mapping[str, Sequence[str]]], val_ecg_emb,
                           val_labels, normalizations: Sequence[str] = NORMALIZATIONS,
                           logit_scale: Optional[float] = None, n_bootstrap: int = 1000,
                           seed: int = 0) -> dict:
  """Zero-shot with the prompt set and normalisation chosen on validation.

  Every (prompt set, normalisation) is scored on validation (macro AUROC); the best one is then
  scored once on test (AUROC / AUPRC, and F1 with per-class thresholds fixed on validation in
  the chosen normalisation). Test labels play no part in the choice.

  Returns the `metrics.evaluate_multilabel` layout plus "prompt_set", "normalization",
  "validation" ({set: {normalization: validation macro AUROC}}), "val_macro_auroc" (the
  chosen), "prompts" (the chosen set's), "thresholds", "softmax_scale", "softmax_scale_source"
  ('model' or 'fixed') and "class_embeddings" (the chosen set's (C, d), for the text-only
  ceiling; drop it before writing JSON).
  """
  labels, val_labels = np.asarray(labels), np.asarray(val_labels)
  for name, y in (("labels", labels), ("val_labels", val_labels)):
    if y.ndim != 2 or y.shape[1] != len(class_names):
      raise ValueError(f"zero_shot: {name} {y.shape} do not match {len(class_names)} classes")
  if not prompt_sets:
    raise ValueError("zero_shot: no prompt set given")
  embed = _memo_embed(embed_text)
  class_emb = {name: class_embeddings(prompts, class_names, embed)
               for name, prompts in prompt_sets.items()}
  val_cosines = {name: zero_shot_scores(val_ecg_emb, e) for name, e in class_emb.items()}
  choice = choose_on_validation(val_cosines, val_labels, normalizations, logit_scale)
  chosen, norm = choice["prompt_set"], choice["normalization"]
  result = _score_chosen(zero_shot_scores(ecg_emb, class_emb[chosen]), labels,
                         val_cosines[chosen], val_labels, norm, logit_scale, n_bootstrap, seed)
  scale, source = softmax_scale(logit_scale)
  result.update(choice, prompts={c: list(prompt_sets[chosen][c]) for c in class_names},
                softmax_scale=scale, softmax_scale_source=source,
                class_embeddings=class_emb[chosen])
  return result


def prototype_embeddings(text_emb, labels, valid=None) -> tuple[np.ndarray, np.ndarray]:
  """Class prototypes from labelled texts: ((C, d) embeddings, (C,) counts).

  A class's prototype is the mean of the L2-normalised embeddings of the texts (rows of
  `text_emb`, with `valid` True) that carry the class, L2-normalised again; a class without
  such a text gets a zero row and count 0.
  """
  emb = _l2_normalise(np.asarray(text_emb, dtype=np.float64))
  labels = np.asarray(labels).astype(bool)
  if labels.ndim != 2 or labels.shape[0] != emb.shape[0]:
    raise ValueError(f"zero_shot: labels {labels.shape} do not match {emb.shape[0]} texts")
  if valid is not None:
    labels = labels & np.asarray(valid, dtype=bool)[:, None]
  counts = labels.sum(axis=0)
  sums = labels.T.astype(np.float64) @ emb
  means = sums / np.maximum(counts, 1)[:, None]
  protos = np.where(counts[:, None] > 0, _l2_normalise(means), 0.0)
  return protos.astype(np.float32), counts.astype(np.int64)


def _expand_per_class(values, keep, size) -> list:
  out = np.full(size, np.nan)
  out[np.flatnonzero(keep)] = values
  return out.tolist()


def run_prototype(train_text_emb, train_labels, ecg_emb, labels, val_ecg_emb, val_labels,
                  class_names: Sequence[str], train_valid=None,
                  normalizations: Sequence[str] = NORMALIZATIONS,
                  logit_scale: Optional[float] = None, n_bootstrap: int = 1000,
                  seed: int = 0) -> dict:
  """PROTOTYPE diagnostic (uses training labels, so it is not zero-shot).

  Class embedding = `prototype_embeddings` of the training reports (`train_valid`: those with a
  report); ECGs scored by cosine, the normalisation chosen on validation as for zero-shot, test
  scored once. Classes without a training report are left out ("no_prototype"); per-class lists
  keep the `class_names` order (NaN for those).
  """
  protos, counts = prototype_embeddings(train_text_emb, train_labels, train_valid)
  keep = counts > 0
  if not keep.any():
    raise ValueError("zero_shot: no class has a training report to build a prototype from")
  labels, val_labels = np.asarray(labels)[:, keep], np.asarray(val_labels)[:, keep]
  val_cos = zero_shot_scores(val_ecg_emb, protos[keep])
  choice = choose_on_validation({"prototype": val_cos}, val_labels, normalizations, logit_scale)
  norm = choice["normalization"]
  result = _score_chosen(zero_shot_scores(ecg_emb, protos[keep]), labels, val_cos, val_labels,
                         norm, logit_scale, n_bootstrap, seed)
  kept_idx = np.flatnonzero(keep)
  result["excluded_classes"] = sorted(
      [int(kept_idx[i]) for i in result["excluded_classes"]] +
      [int(i) for i in np.flatnonzero(~keep)])
  result["per_class"] = {k: _expand_per_class(v, keep, len(class_names))
                         for k, v in result["per_class"].items()}
  result["thresholds"] = _expand_per_class(result["thresholds"], keep, len(class_names))
  result.update(normalization=norm, validation=choice["validation"]["prototype"],
                val_macro_auroc=choice["val_macro_auroc"],
                num_train_reports={c: int(n) for c, n in zip(class_names, counts)},
                no_prototype=[c for c, k in zip(class_names, keep) if not k])
  return result


def text_only_ceiling(report_emb, labels, class_emb, has_report=None,
                      normalizations: Sequence[str] = ("raw",),
                      logit_scale: Optional[float] = None, n_bootstrap: int = 0,
                      seed: int = 0) -> dict:
  """TEXT-ONLY CEILING of a text tower: the reports themselves (no ECG) scored against the class
  embeddings by cosine.

  Records without a report (`has_report` False) are left out ("num_left_out"). The headline
  (`macro_auroc`, ...) is raw cosine; "by_normalization" holds the macro AUROC under each of
  `normalizations` too (diagnostic only, nothing is chosen here).
  """
  emb = np.asarray(report_emb)
  labels = np.asarray(labels)
  keep = (np.ones(len(emb), bool) if has_report is None
          else np.asarray(has_report, dtype=bool))
  if labels.shape[0] != emb.shape[0] or keep.shape[0] != emb.shape[0]:
    raise ValueError(f"zero_shot: {emb.shape[0]} report embeddings, {labels.shape[0]} label "
                     f"rows and {keep.shape[0]} has_report flags must agree")
  if not keep.any():
    raise ValueError("zero_shot: no record with a report for the text-only ceiling")
  cosine = zero_shot_scores(emb[keep], class_emb)
  result = metrics.evaluate_multilabel(labels[keep], cosine, n_bootstrap=n_bootstrap, seed=seed)
  result["by_normalization"] = {
      n: metrics.macro_auroc(labels[keep], normalize_scores(cosine, n, logit_scale))
      for n in normalizations}
  result["num_records"] = int(keep.sum())
  result["num_left_out"] = int((~keep).sum())
  return result
