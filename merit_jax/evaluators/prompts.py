"""Zero-shot prompts: SCP descriptions × templates, prompt files and the named prompt sets.

- `DEFAULT_TEMPLATES`: prompt templates with a `{description}` slot.
- `load_scp_descriptions(statements_csv) -> dict[str, str]`: SCP code → description;
  `descriptions(statements_csv, class_names)` adds aliases for MERL's names (ISC → ISC_).
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
- `build_prompt_sets(names, class_names, ..., prompt_dir)`: the named prompt sets `scp_en`
  (templates), `report_de` (`<prompt_dir>/ptbxl_reports.yaml`), `knowledge`
  (`<prompt_dir>/ptbxl_knowledge.yaml`, CKEPE-style clinical descriptions of all 71 SCP
  statements and the PTB-XL group names), `all` (their union, ensembled) and `user`
  (`prompt_file` / `user_prompts`). The evaluation config names `prompt_dir` (configs/prompts,
  found relative to the config file).

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
from typing import Mapping, Optional, Sequence

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


# Named prompt sets: None = the SCP-description templates, else a bundled prompt file (its
# prompts replace the templates of the classes it names; the other classes keep the templates).
PROMPT_SET_FILES = {"scp_en": None, "report_de": "ptbxl_reports.yaml",
                    "knowledge": "ptbxl_knowledge.yaml"}
# `all` is the union of the named sets, ensembled; `user` is `prompt_file` / `user_prompts`.
PROMPT_SETS = tuple(PROMPT_SET_FILES) + ("all", "user")


def check_names(kind: str, names: Sequence[str], known: Sequence[str]) -> None:
  if not names:
    raise ValueError(f"zero_shot: no {kind} given; choose from {', '.join(known)}")
  for name in names:
    if name not in known:
      raise ValueError(f"zero_shot: unknown {kind} {name!r}; choose from {', '.join(known)}")


def build_prompt_sets(names: Sequence[str], class_names: Sequence[str], statements_csv=None,
                      descriptions: Optional[Mapping[str, str]] = None, prompt_file=None,
                      user_prompts: str = "extend", prompt_dir=None) -> dict:
  """{set name: {"prompts": {class: [prompts]}, "file": path | None, "fallback": [classes]}}.

  `scp_en`: the templates over SCP descriptions; `report_de` / `knowledge`: the prompt files
  `PROMPT_SET_FILES` under `prompt_dir` (the config's configs/prompts), templates for the
  classes a file does not name (listed in "fallback"); `all`: per class the union of the three
  (in that order, duplicates dropped), ensembled by `class_embeddings`; `user`: `prompt_file` with
  `user_prompts` (the single prompt set of earlier versions).
  """
  check_names("prompt set", list(names), PROMPT_SETS)
  if prompt_dir is None and any(PROMPT_SET_FILES.get(n) or n == "all" for n in names):
    raise ValueError("zero_shot: prompt sets report_de, knowledge and all read their files "
                     "from zero_shot.prompt_dir (configs/prompts), which is not set")
  folder = pathlib.Path(prompt_dir or ".")
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


def descriptions(statements_csv: Optional[str], class_names: Sequence[str]) -> dict:
  """SCP descriptions, plus aliases for MERL's names without PTB-XL's '_' (ISC → ISC_)."""
  known = load_scp_descriptions(statements_csv) if statements_csv else {}
  out = {}
  for name in class_names:
    for candidate in (name, name + "_", "_" + name):
      if candidate in known:
        out[name] = known[candidate]
        break
      if candidate in GROUP_DESCRIPTIONS and candidate != name:
        out[name] = GROUP_DESCRIPTIONS[candidate]
        break
  return out
