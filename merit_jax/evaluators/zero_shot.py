"""Zero-shot classification from text prompts, chosen on validation, with two diagnostics.

Model-free functions (text goes through a caller-supplied `embed_text(list[str]) -> (n, d)`;
the prompts themselves come from `prompts.py`):

- `class_embeddings(prompts, class_names, embed_text) -> (C, d)`: prompt ensembling — each prompt
  embedding is L2-normalised, a class's prompts are averaged and the mean re-normalised.
- `zero_shot_scores(ecg_emb, class_emb) -> (N, C)` cosine similarities.
- `run_zero_shot(ecg_emb, labels, class_names, embed_text, prompts=None, val_ecg_emb=None,
  val_labels=None, n_bootstrap=1000, seed=0, **prompt_kwargs) -> dict` with the
  `metrics.evaluate_multilabel` layout: macro AUROC / AUPRC, and macro F1 when a validation set
  is given (thresholds on cosine scores chosen on validation, then applied to the test set),
  plus `"prompts"`, `"thresholds"` and `"val_macro_auroc"` (the number to choose a prompt set
  by, so that the test set is scored once).
- `normalize_scores(cosine, normalization, logit_scale=None)`: per record over the task's
  classes, `raw` (cosine), `centered` (minus the record's mean cosine over the class prompts:
  a record-level offset, e.g. short prompts sitting closer to short normal reports, otherwise
  works against every abnormal class when raw cosines are ranked across records) or `softmax`
  (softmax of cosine × the model's logit scale, or × `FIXED_SOFTMAX_SCALE` = 100 when unknown;
  `softmax_scale` says which).
- `choose_on_validation(val_cosines, val_labels, normalizations, logit_scale)` and
  `run_zero_shot_selected(...)`: every (prompt set, normalisation) scored on validation, the
  best macro AUROC scored once on test.
- `prototype_embeddings(text_emb, labels, valid)` / `run_prototype(...)`: the PROTOTYPE
  diagnostic, class embedding = the normalised mean of the training reports' embeddings of a
  class. It uses training labels: it is not zero-shot. Prototypes good and prompts bad → the
  prompts are the problem; both bad → the ECG–text alignment is.
- `text_only_ceiling(report_emb, labels, class_emb, has_report)`: the test reports themselves
  (no ECG) against the chosen prompts, by cosine: how far the text tower alone gets.
- `scores_by_group(labels, scores, groups, class_names)`: metrics within each group of
  records; the evaluator groups the test records by report language (`data.report_language`)
  under `zero_shot[task]["by_language"]`, since prompts in one language can score a record by
  its report's language instead of its ECG.

`Evaluator` (config `evals.zero_shot`): per task, the prompt set (`prompt_sets`) and score
normalisation (`normalizations`) with the best validation macro AUROC, scored once on test, in
the results section `zero_shot`; the two diagnostics in `prototype` and `text_ceiling`.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from merit_jax.data import report_language
from merit_jax.evaluators import prompts as prompts_lib
from merit_jax.evaluators import registry
from merit_jax.evaluators import tasks as tasks_lib
from merit_jax.metrics import classification as metrics

EmbedText = Callable[[list], np.ndarray]


# Groups of test records (report languages) smaller than this are counted, not scored.
MIN_GROUP_RECORDS = 10


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
    prompts = prompts_lib.build_class_prompts(class_names, **prompt_kwargs)
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


def check_options(prompt_sets: Sequence[str], normalizations: Sequence[str]) -> None:
  """Raises ValueError naming an unknown prompt set or normalisation (or an empty list)."""
  prompts_lib.check_names("prompt set", prompt_sets, prompts_lib.PROMPT_SETS)
  prompts_lib.check_names("normalization", normalizations, NORMALIZATIONS)


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
  prompts_lib.check_names("normalization", list(normalizations), NORMALIZATIONS)
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
  test_cosine = zero_shot_scores(ecg_emb, class_emb[chosen])
  result = _score_chosen(test_cosine, labels, val_cosines[chosen], val_labels, norm,
                         logit_scale, n_bootstrap, seed)
  scale, source = softmax_scale(logit_scale)
  result.update(choice, prompts={c: list(prompt_sets[chosen][c]) for c in class_names},
                softmax_scale=scale, softmax_scale_source=source,
                class_embeddings=class_emb[chosen],
                test_scores=normalize_scores(test_cosine, norm, logit_scale))
  return result


def scores_by_group(labels, scores, groups: Sequence[str], class_names: Sequence[str],
                    min_records: int = MIN_GROUP_RECORDS, n_bootstrap: int = 1000,
                    seed: int = 0) -> dict:
  """Test metrics within each group of records (e.g. by report language).

  A group with fewer than `min_records` records is only counted. Classes without a positive
  (or a negative) inside a group are left out of that group's macro mean, as on the whole set.
  Returns {group: {"num_records", and for scored groups the `metric_summary` fields,
  "per_class_auroc" {class: AUROC or None}}}.
  """
  labels, scores, groups = np.asarray(labels), np.asarray(scores), np.asarray(groups)
  out = {}
  for group in sorted(set(groups.tolist())):
    idx = np.flatnonzero(groups == group)
    entry = {"num_records": int(idx.size)}
    if idx.size >= min_records:
      m = metrics.evaluate_multilabel(labels[idx], scores[idx], n_bootstrap=n_bootstrap,
                                      seed=seed)
      entry.update(tasks_lib.metric_summary(m))
      entry["per_class_auroc"] = {c: (None if np.isnan(v) else float(v))
                                  for c, v in zip(class_names, m["per_class"]["auroc"])}
    out[group] = entry
  return out


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


# ----------------------------------------------------------------------------------------------
# The evaluator: config section `evals.zero_shot`.


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


def options(config) -> tuple[list, list]:
  """(prompt sets, normalisations) chosen between on validation; `prompt_file` adds `user`."""
  sets = tasks_lib.parse_list(config.prompt_sets)
  if config.prompt_file and "user" not in sets:
    sets.append("user")
  return sets, tasks_lib.parse_list(config.normalizations)


class Evaluator(registry.EvaluatorBase):
  """Zero-shot per task (prompt set and normalisation chosen on validation), diagnostics.

  Config: tasks, prompt_sets, normalizations, prompt_file, user_prompts, prompt_dir,
  statements_csv (None: <data.manual_dir>/scp_statements.csv), prototype, text_ceiling,
  n_bootstrap, seed. Encoders without a text tower give no results.
  """
  sections = ("zero_shot", "prototype", "text_ceiling")

  def __init__(self, config, context):
    super().__init__(config, context)
    self.tasks = registry.eval_tasks(config, context)
    self.prompt_sets, self.normalizations = options(config)
    check_options(self.prompt_sets, self.normalizations)
    if "user" in self.prompt_sets and not config.prompt_file:
      raise ValueError("config.zero_shot.prompt_sets names 'user' but zero_shot.prompt_file is "
                       "not set")

  def run(self, encoder) -> dict:
    if not encoder.has_text:
      return {}
    out = {section: {} for section in self.sections}
    for task in self.tasks:
      for section, value in self.suite(encoder, self.context.task_data(task)).items():
        out[section][task] = value
    return out

  def suite(self, encoder, data: tasks_lib.TaskData) -> dict:
    """{"zero_shot": ..., ["prototype": ..., "text_ceiling": ...]} of one task."""
    z = self.config
    statements = tasks_lib.find_file(self.context.data_cfg, "scp_statements.csv",
                                     z.statements_csv)
    built = prompts_lib.build_prompt_sets(
        self.prompt_sets, data.class_names, statements_csv=statements,
        descriptions=prompts_lib.descriptions(statements, data.class_names),
        prompt_file=z.prompt_file, user_prompts=z.user_prompts, prompt_dir=z.prompt_dir)
    scale = model_logit_scale(encoder)
    result = run_zero_shot_selected(
        data.features(encoder, "test", "projected"), data.labels["test"], data.class_names,
        encoder.embed_text, {name: b["prompts"] for name, b in built.items()},
        data.features(encoder, "validation", "projected"), data.labels["validation"],
        self.normalizations, scale, n_bootstrap=int(z.n_bootstrap), seed=int(z.seed))
    class_emb = result.pop("class_embeddings")
    test_scores = result.pop("test_scores")
    out = tasks_lib.metric_summary(result)
    out.update({
        # Chosen on fold 9 (validation), never on test.
        "prompt_set": result["prompt_set"], "normalization": result["normalization"],
        "val_macro_auroc": result["val_macro_auroc"], "validation": result["validation"],
        "per_class_auroc": result["per_class"]["auroc"],
        "per_class_f1": result["per_class"].get("f1"), "thresholds": result["thresholds"],
        "softmax_scale": result["softmax_scale"],
        "softmax_scale_source": result["softmax_scale_source"],
        "prompt_file": z.prompt_file, "user_prompts": z.user_prompts,
        "prompt_sets": {name: {"file": b["file"], "fallback_classes": b["fallback"],
                               "num_prompts": sum(len(p) for p in b["prompts"].values())}
                        for name, b in built.items()},
        "prompts": result["prompts"],
        # The chosen scores within each report language: does the model score a record by
        # the language of its report (prompts are in one language) rather than its ECG?
        "by_language": scores_by_group(
            data.labels["test"], test_scores,
            [report_language.report_language(r) for r in data.reports("test")],
            data.class_names, n_bootstrap=int(z.n_bootstrap), seed=int(z.seed))})
    suite = {"zero_shot": out}
    if z.prototype:
      suite["prototype"] = self.prototype(encoder, data, scale)
    if z.text_ceiling:
      suite["text_ceiling"] = self.text_ceiling(encoder, data, class_emb, scale)
      suite["text_ceiling"]["prompt_set"] = result["prompt_set"]
    return suite

  def prototype(self, encoder, data: tasks_lib.TaskData, scale) -> dict:
    """PROTOTYPE diagnostic (uses training labels, not zero-shot), normalisation on validation."""
    result = run_prototype(
        data.text_features(encoder, "train"), data.labels["train"],
        data.features(encoder, "test", "projected"), data.labels["test"],
        data.features(encoder, "validation", "projected"), data.labels["validation"],
        data.class_names, train_valid=data.has_report("train"),
        normalizations=self.normalizations, logit_scale=scale,
        n_bootstrap=int(self.config.n_bootstrap), seed=int(self.config.seed))
    out = tasks_lib.metric_summary(result)
    out.update({k: result[k] for k in ("normalization", "validation", "val_macro_auroc",
                                       "num_train_reports", "no_prototype")})
    out["per_class_auroc"] = result["per_class"]["auroc"]
    return out

  def text_ceiling(self, encoder, data: tasks_lib.TaskData, class_emb, scale) -> dict:
    """TEXT-ONLY CEILING: the test reports (no ECG) against the chosen prompts' class
    embeddings; records with an empty report are left out ("num_left_out")."""
    result = text_only_ceiling(
        data.text_features(encoder, "test"), data.labels["test"], class_emb,
        has_report=data.has_report("test"), normalizations=self.normalizations,
        logit_scale=scale, n_bootstrap=int(self.config.n_bootstrap),
        seed=int(self.config.seed))
    out = tasks_lib.metric_summary(result)
    out.update({k: result[k] for k in ("by_normalization", "num_records", "num_left_out")})
    out["per_class_auroc"] = result["per_class"]["auroc"]
    return out

  def scalars(self, results: dict) -> dict:
    return super().scalars({"zero_shot": results.get("zero_shot") or {}})
