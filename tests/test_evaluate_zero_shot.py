"""evaluate.evaluate_encoders with the default tasks, on a hand-made feature store (no model).

Checks the wiring of the zero-shot suite (prompt set and normalisation chosen on validation,
prototype diagnostic, text-only ceiling), the class-scoring table and the markdown sections,
in seconds: the "encoders" are numpy functions and the store holds toy records whose labels
cover every PTB-XL task name.
"""

import json
import pathlib
import types

import numpy as np
import pytest

from configs import evaluate as evaluate_config
from merit_jax import config_validation
from merit_jax import evaluate
from merit_jax.data import pipeline
from merit_jax.evaluators import tasks as tasks_lib
from merit_jax.evaluators import zero_shot
from merit_jax.reporting import writer

# Atomic findings per record; every task's labels are derived from them below.
ATOMS = ["NORM", "IMI", "LVH", "AFIB", "SR", "PVC", "LVOLT", "WPW"]
TASKS = {
    "all": ["AFIB", "IMI", "LVH", "LVOLT", "NORM", "PVC", "SR", "WPW"],
    "diagnostic": ["IMI", "LVH", "NORM", "WPW"],
    "subdiagnostic": ["IMI", "LVH", "NORM", "WPW"],
    "superdiagnostic": ["CD", "HYP", "MI", "NORM"],
    "form": ["LVOLT", "PVC"],
    "rhythm": ["AFIB", "SR"],
}
GROUP = {"MI": "IMI", "HYP": "LVH", "CD": "WPW"}  # superclass -> the one atom it stands for
VOCAB = sorted(set(ATOMS) | set(GROUP))
STATEMENTS = """,description,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass
NORM,normal ECG,1.0,,,NORM,NORM
IMI,inferior myocardial infarction,1.0,,,MI,IMI
LVH,left ventricular hypertrophy,1.0,,,HYP,LVH
WPW,Wolf-Parkinson-White syndrome,1.0,,,CD,WPW
AFIB,atrial fibrillation,,,1.0,,
SR,sinus rhythm,,,1.0,,
PVC,ventricular premature complex,,1.0,,,
LVOLT,low QRS voltages in the frontal and horizontal leads,,1.0,,,
"""


def _split(rng, n, split):
  atoms = {a: rng.random(n) < 0.35 for a in ATOMS}
  atoms["WPW"][:] = False                      # no positive anywhere
  if split == "test":
    atoms["LVOLT"][:] = False                  # no test positive
  atoms["SR"] = ~atoms["AFIB"]
  positive = dict(atoms, **{g: atoms[a] for g, a in GROUP.items()})
  labels = {task: np.stack([positive[c] for c in names], 1).astype(np.uint8)
            for task, names in TASKS.items()}
  tokens = [[f"tok_{c}" for c in VOCAB if positive[c][i]] for i in range(n)]
  reports = [" ".join(t) for t in tokens]
  reports[:3] = ["", "", ""]                  # records without a report
  # The "ECG": one-hot of its findings plus noise (the toy encoders read it as features).
  ecg = np.stack([sum(np.eye(len(VOCAB))[VOCAB.index(t[4:])] for t in ts) if ts
                  else np.zeros(len(VOCAB)) for ts in tokens])
  ecg = (ecg + 0.3 * rng.normal(size=ecg.shape))[:, None, :].astype(np.float32)
  return _Split(ecg=ecg, labels=labels, ecg_id=np.arange(n), report=reports,
                source=np.zeros(n, np.int32))


class _Split(types.SimpleNamespace):
  """What a `features.SplitData` offers: the arrays and len()."""

  def __len__(self):
    return len(self.ecg_id)


def one_hot_text(texts):
  """A text tower that knows one word per class: tok_<class> → e_<class>, anything else → 0."""
  out = np.zeros((len(texts), len(VOCAB)), np.float32)
  for row, text in enumerate(texts):
    for word in text.split():
      if word.startswith("tok_") and word[4:] in VOCAB:
        out[row, VOCAB.index(word[4:])] = 1.0
  return out


class FakeStore:
  """What evaluate_encoders reads of a FeatureStore."""
  sources = []

  def __init__(self, seed=0):
    rng = np.random.default_rng(seed)
    self._splits = {s: _split(rng, n, s) for s, n in (("train", 80), ("validation", 50),
                                                      ("test", 50))}

  def split(self, name):
    return self._splits[name]

  def features(self, encoder, split, corruption=None, seed=0, reduced_leads_mode="native",
               kinds=None):
    del corruption, seed, reduced_leads_mode, kinds
    data = self._splits[split]
    return dict(encoder.embed_ecg(data.ecg), ecg_id=data.ecg_id)

  def text_features(self, encoder, split):
    return encoder.embed_text(list(self._splits[split].report))


def _embed_ecg(ecg):
  x = ecg[:, 0, :]
  return {"pooled": x, "projected": x}


@pytest.fixture()
def evaluated(tmp_path, monkeypatch):
  monkeypatch.setattr(pipeline, "label_names", lambda data_cfg: TASKS)
  statements = tmp_path / "scp_statements.csv"
  statements.write_text(STATEMENTS)
  prompt_file = tmp_path / "tokens.yaml"
  prompt_file.write_text("".join(f"{c}: [tok_{c}]\n" for c in VOCAB))
  config = evaluate_config.get_config("quick")
  config.evaluators = ("linear_probe", "zero_shot")
  config.fractions = (1.0,)
  config.seeds = (0,)
  config.n_bootstrap = 20
  config.progress = False
  config.probe.weight_decays = (0.0,)
  config.probe.max_epochs = 10
  config.probe.eval_every = 5
  config.zero_shot.statements_csv = str(statements)
  # scp_en's English prompts hold no token this text tower knows (all-zero embeddings):
  # validation must pick the token prompts (`user`).
  config.zero_shot.prompt_sets = ("scp_en",)
  config.zero_shot.prompt_file = str(prompt_file)
  config.zero_shot.user_prompts = "replace"
  encoders = [
      types.SimpleNamespace(name="toy", cache_key="toy", embed_ecg=_embed_ecg,
                            embed_text=one_hot_text, params={"logit_scale": np.log(20.0)},
                            model=None, step=0, has_text=True,
                            feature_kinds=("pooled", "projected")),
      types.SimpleNamespace(name="ecg_only", cache_key="ecg_only", embed_ecg=_embed_ecg,
                            embed_text=None, params=None, model=None, step=0,
                            has_text=False, feature_kinds=("pooled", "projected"))]
  results = evaluate.evaluate_encoders(encoders, {}, config, str(tmp_path / "out"),
                                       store=FakeStore())
  return config, results, tmp_path


def test_default_tasks_include_all_and_diagnostic():
  config = evaluate_config.get_config()
  tasks = tasks_lib.resolve_tasks(config.tasks)
  assert tasks == ["superdiagnostic", "subdiagnostic", "form", "rhythm", "all", "diagnostic"]
  assert evaluate_config.get_config("quick").tasks == config.tasks
  assert zero_shot.options(config.zero_shot) == (
      ["scp_en", "report_de", "knowledge", "all"], ["raw", "centered", "softmax"])


def test_zero_shot_suite_and_class_scoring_on_every_default_task(evaluated):
  config, results, tmp_path = evaluated
  tasks = list(TASKS)
  assert sorted(results["meta"]["tasks"]) == sorted(tasks)
  for section in ("linear_probe", "zero_shot", "prototype", "text_ceiling"):
    assert sorted(results[section]["toy"]) == sorted(tasks), section
  assert results["zero_shot"]["ecg_only"] == {} == results["prototype"]["ecg_only"]
  assert sorted(results["linear_probe"]["ecg_only"]) == sorted(tasks)
  for task in tasks:
    zs = results["zero_shot"]["toy"][task]
    assert zs["prompt_set"] == "user", task
    assert set(zs["validation"]) == {"scp_en", "user"}
    assert set(zs["validation"]["user"]) == {"raw", "centered", "softmax"}
    assert zs["softmax_scale"] == pytest.approx(20.0) and zs["softmax_scale_source"] == "model"
    assert "macro_f1" in zs and zs["macro_auroc"]["value"] > 0.9
    proto = results["prototype"]["toy"][task]
    assert proto["normalization"] in ("raw", "centered", "softmax")
    assert proto["macro_auroc"]["value"] > 0.75  # prototypes mix co-occurring findings
    # The one-hot text tower reads the reports perfectly; 3 empty reports are left out.
    ceiling = results["text_ceiling"]["toy"][task]
    assert ceiling["macro_auroc"]["value"] == 1.0, task
    assert ceiling["num_records"] == 47 and ceiling["num_left_out"] == 3
    assert ceiling["prompt_set"] == "user"
  scoring = results["meta"]["class_scoring"]
  assert scoring["all"]["classes"] == 8
  assert scoring["all"]["left_out"]["no_train_positive"] == ["WPW"]
  assert scoring["all"]["left_out"]["no_test_positive"] == ["LVOLT"]
  assert len(scoring["all"]["scored"]) == 6
  assert scoring["superdiagnostic"]["left_out"]["no_train_positive"] == ["CD"]
  assert scoring["rhythm"] == {"classes": 2, "scored": ["AFIB", "SR"],
                               "left_out": {r: [] for r in tasks_lib.LEFT_OUT_REASONS}}
  # LVOLT is evaluated (train and validation positives) but has no test AUROC.
  assert "LVOLT" in results["meta"]["classes"]["form"]
  probe = results["linear_probe"]["toy"]["form"]["1.0"]["runs"][0]["test"]
  assert probe["num_evaluated"] == 1

  paths = writer.write_results(results, str(tmp_path / "results"), "toy")
  md = pathlib.Path(paths["md"]).read_text(encoding="utf-8")
  saved = json.loads(pathlib.Path(paths["json"]).read_text(encoding="utf-8"))
  assert saved["text_ceiling"]["toy"]["all"]["num_left_out"] == 3
  assert saved["meta"]["class_scoring"]["all"]["left_out"]["no_train_positive"] == ["WPW"]
  assert "| all | 8 | 6 | 1 | 0 | 1 | 0 |" in md
  assert "## Linear probe (test, 100 % labels): macro AUROC / macro F1" in md
  assert md.index("## Linear probe: macro auroc") < md.index("## Linear probe: macro f1") < \
      md.index("## Linear probe: macro auprc")
  assert "## Zero-shot (test): macro AUROC / macro F1" in md
  assert "Chosen on validation: prompt set / normalisation" in md
  assert "| user / centered |" in md or "| user / raw |" in md
  assert "## Prototype diagnostic (uses training labels — not zero-shot)" in md
  assert "## Text-only ceiling" in md and "all: 47 (3 left out)" in md
  # The diagnostics are never rows of the zero-shot table.
  zero_shot_part = md[md.index("## Zero-shot"):md.index("## Prototype")]
  assert "Prototype" not in zero_shot_part.split("## Zero-shot", 1)[1].split("\n\n")[2]


def test_merl_splits_skip_tasks_without_split_files(tmp_path, monkeypatch):
  monkeypatch.setattr(pipeline, "label_names", lambda data_cfg: TASKS)
  config = evaluate_config.get_config("quick")
  config.evaluators = ("zero_shot",)
  config.merl_splits = True
  config.tasks = ("all,diagnostic",)  # as `--config.tasks=all,diagnostic` gives it
  with pytest.raises(ValueError, match="none of the tasks"):
    evaluate.evaluate_encoders([], {}, config, str(tmp_path), store=FakeStore())


def test_unknown_zero_shot_options_are_named():
  config = evaluate_config.get_config()
  config.zero_shot.normalizations = ("raw", "zscore")
  with pytest.raises(config_validation.ConfigError, match="unknown normalization 'zscore'"):
    config_validation.validate_evaluate_config(config)
  config = evaluate_config.get_config()
  config.zero_shot.prompt_sets = ("scp_en", "user")
  with pytest.raises(config_validation.ConfigError, match="names 'user'"):
    config_validation.validate_evaluate_config(config)
