"""Tests for zero-shot classification with a fake (bag-of-words) text embedder."""

import json
import pathlib
import types
import zlib

import numpy as np
import pytest
import yaml

from merit_jax.data import ptbxl
from merit_jax.evaluators import metrics
from merit_jax.evaluators import zero_shot

REPORT_PROMPTS = (pathlib.Path(__file__).resolve().parents[1] / "configs" / "prompts" /
                  "ptbxl_reports.yaml")
PTBXL_TASKS = ("superdiagnostic", "subdiagnostic", "form", "rhythm")

DIM = 64
STATEMENTS = """,description,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass
NORM,normal ECG,1.0,,,NORM,NORM
IMI,inferior myocardial infarction,1.0,,,MI,IMI
LVH,left ventricular hypertrophy,1.0,,,HYP,LVH
AFIB,atrial fibrillation,,,1.0,,
CLBBB,complete left bundle branch block,1.0,,,CD,CLBBB
ISCAL,ischemic in anterolateral leads,1.0,,,STTC,ISCA
ISCAS,ischemic in anteroseptal leads,1.0,,,STTC,ISCA
FOO1,foo pattern,1.0,,,GRP,GRPX
FOO2,bar pattern,1.0,,,GRP,GRPX
"""
CLASSES = ["NORM", "IMI", "LVH", "AFIB", "CLBBB"]


def _word_vector(word):
  rng = np.random.default_rng(zlib.crc32(word.lower().encode()))
  return rng.normal(size=DIM)


def fake_embed_text(texts):
  """Bag of words of random word vectors: texts sharing words are close."""
  return np.stack([np.sum([_word_vector(w) for w in t.replace(":", " ").split()], axis=0)
                   for t in texts])


@pytest.fixture()
def statements_csv(tmp_path):
  path = tmp_path / "scp_statements.csv"
  path.write_text(STATEMENTS)
  return path


def _ecg_embeddings(labels, descriptions, rng, noise=1.0):
  """ECG embeddings aligned with the words of their positive classes' descriptions."""
  concept = np.stack([fake_embed_text([descriptions[c]])[0] for c in CLASSES])
  concept /= np.linalg.norm(concept, axis=1, keepdims=True)
  return labels @ concept + noise * rng.normal(size=(len(labels), DIM)) / np.sqrt(DIM) * 3


def test_prompts_from_descriptions_templates_and_user_file(statements_csv, tmp_path):
  user = tmp_path / "prompts.json"
  user.write_text(json.dumps({"AFIB": ["irregularly irregular rhythm"], "NORM": "all normal"}))
  prompts = zero_shot.build_class_prompts(CLASSES, statements_csv, prompt_file=user)
  assert prompts["IMI"][0] == "an ECG showing inferior myocardial infarction"
  assert len(prompts["IMI"]) == len(zero_shot.DEFAULT_TEMPLATES)
  assert prompts["AFIB"][-1] == "irregularly irregular rhythm"
  replaced = zero_shot.build_class_prompts(CLASSES, statements_csv, prompt_file=user,
                                           user_prompts="replace")
  assert replaced["NORM"] == ["all normal"]
  yaml_file = tmp_path / "prompts.yaml"
  yaml_file.write_text("LVH:\n  - big left ventricle\n")
  assert zero_shot.build_class_prompts(CLASSES, statements_csv, prompt_file=yaml_file)[
      "LVH"][-1] == "big left ventricle"
  # Group names: built-in description, else the member codes' descriptions.
  groups = zero_shot.build_class_prompts(["MI", "ISCA", "GRPX"], statements_csv,
                                         templates=["{description}"])
  assert groups["GRPX"] == ["foo pattern or bar pattern"]
  assert groups["MI"] == ["myocardial infarction"]
  assert groups["ISCA"] == ["ischemia in anterior leads"]
  with pytest.raises(ValueError, match="no description for class 'XYZ'"):
    zero_shot.build_class_prompts(["XYZ"], statements_csv)
  with pytest.raises(ValueError, match="not in the task"):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"FOO": ["x"]}))
    zero_shot.build_class_prompts(CLASSES, statements_csv, prompt_file=bad)


def test_prompt_file_may_cover_other_tasks_and_merl_names(statements_csv, tmp_path):
  user = tmp_path / "prompts.yaml"
  # ISCAL, ISCA and GRPX are labels of scp_statements.csv but no class of this task.
  user.write_text("AFIB: [vorhofflimmern]\nISCAL: [x]\nISCA: [y]\nGRPX: [z]\n"
                  "_AVB: [a-v block i, prolonged pr interval.]\n")
  prompts = zero_shot.build_class_prompts(CLASSES, statements_csv, prompt_file=user,
                                           user_prompts="replace")
  assert prompts["AFIB"] == ["vorhofflimmern"]
  assert prompts["IMI"][0] == "an ECG showing inferior myocardial infarction"
  # MERL's split files write AVB for PTB-XL's _AVB.
  merl = zero_shot.build_class_prompts(["AVB"], prompt_file=user, user_prompts="replace",
                                       statements_csv=statements_csv)
  assert merl["AVB"] == ["a-v block i", "prolonged pr interval."]
  # Without scp_statements.csv nothing says that ISCAL is a PTB-XL label.
  with pytest.raises(ValueError, match="pass statements_csv"):
    zero_shot.build_class_prompts(["AFIB"], descriptions={"AFIB": "atrial fibrillation"},
                                  prompt_file=user)


def _load_report_prompts():
  data = yaml.safe_load(REPORT_PROMPTS.read_text(encoding="utf-8"))
  assert isinstance(data, dict)
  return data


def test_ptbxl_report_prompt_file_parses_with_a_provenance_header():
  text = REPORT_PROMPTS.read_text(encoding="utf-8")
  assert text.startswith("#") and "strat_fold 1-8" in text
  for name, prompts in _load_report_prompts().items():
    assert isinstance(prompts, list) and len(set(prompts)) == len(prompts), name
    assert all(isinstance(p, str) and p.strip() for p in prompts), name


def test_ptbxl_report_prompts_cover_every_class_of_the_four_tasks(ptbxl_dir):
  csv = ptbxl_dir / "scp_statements.csv"
  label_names = ptbxl.ptbxl_label_names(csv)  # The task classes, as the dataset builds them.
  data = _load_report_prompts()
  for task in PTBXL_TASKS:
    names = label_names[task]
    # No templates: a class the file does not name would come back without prompts.
    prompts = zero_shot.build_class_prompts(names, csv, templates=(),
                                            prompt_file=REPORT_PROMPTS, user_prompts="replace")
    assert list(prompts) == names
    for name in names:
      assert len(prompts[name]) >= 2, (task, name)
      assert prompts[name] == data[name]
    # With the default templates too, "replace" leaves only the file's prompts.
    assert zero_shot.build_class_prompts(names, csv, prompt_file=REPORT_PROMPTS,
                                         user_prompts="replace") == prompts
  assert set(data) == {n for t in PTBXL_TASKS for n in label_names[t]}


def test_ptbxl_report_prompts_cover_merl_class_names(ptbxl_dir):
  from merit_jax import evaluate  # pylint: disable=g-import-not-at-top
  merl_dir = ptbxl_dir / "labels_merl"
  if not merl_dir.exists():
    pytest.skip(f"MERL split files not found at {merl_dir}")
  for task in PTBXL_TASKS:
    _, names = evaluate._merl_table(str(merl_dir), task, "train")  # pylint: disable=protected-access
    prompts = zero_shot.build_class_prompts(names, ptbxl_dir / "scp_statements.csv",
                                            templates=(), prompt_file=REPORT_PROMPTS,
                                            user_prompts="replace")
    assert all(len(prompts[n]) >= 2 for n in names), task


def test_prompt_ensembling_is_normalised_mean():
  prompts = {"A": ["x y", "x z"], "B": ["w"]}
  emb = zero_shot.class_embeddings(prompts, ["A", "B"], fake_embed_text)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
  parts = fake_embed_text(["x y", "x z"])
  parts /= np.linalg.norm(parts, axis=1, keepdims=True)
  want = parts.mean(axis=0) / np.linalg.norm(parts.mean(axis=0))
  np.testing.assert_allclose(emb[0], want, rtol=1e-5, atol=1e-6)


def test_aligned_embeddings_beat_chance_clearly(statements_csv):
  rng = np.random.default_rng(0)
  descriptions = zero_shot.load_scp_descriptions(statements_csv)
  def sample(n):
    labels = (rng.random((n, len(CLASSES))) < 0.25).astype(np.uint8)
    return labels, _ecg_embeddings(labels, descriptions, rng)
  val_labels, val_emb = sample(200)
  test_labels, test_emb = sample(300)
  out = zero_shot.run_zero_shot(test_emb, test_labels, CLASSES, fake_embed_text,
                                statements_csv=statements_csv, val_ecg_emb=val_emb,
                                val_labels=val_labels, n_bootstrap=100)
  assert out["macro_auroc"]["value"] > 0.85
  assert out["macro_auroc"]["ci_low"] > 0.75
  assert out["macro_f1"]["value"] > 0.5
  assert len(out["thresholds"]) == len(CLASSES)
  # The validation AUROC (for choosing prompt sets) is that of the validation cosines.
  class_emb = zero_shot.class_embeddings(out["prompts"], CLASSES, fake_embed_text)
  assert out["val_macro_auroc"] == pytest.approx(
      metrics.macro_auroc(val_labels, zero_shot.zero_shot_scores(val_emb, class_emb)))
  assert out["val_macro_auroc"] > 0.85
  # Shuffling which class gets which prompts destroys the alignment.
  prompts = zero_shot.build_class_prompts(CLASSES, statements_csv)
  shuffled = {c: prompts[CLASSES[(i + 1) % len(CLASSES)]] for i, c in enumerate(CLASSES)}
  worse = zero_shot.run_zero_shot(test_emb, test_labels, CLASSES, fake_embed_text,
                                  prompts=shuffled, n_bootstrap=0)
  assert worse["macro_auroc"]["value"] < 0.65
  assert "macro_f1" not in worse and worse["val_macro_auroc"] is None


class _FakeTaskData:
  """What `evaluate.run_zero_shot` reads of a `TaskData`: labels and projected features."""

  def __init__(self, class_names, labels, features):
    self.class_names, self.labels, self._features = class_names, labels, features

  def features(self, encoder, split, kind="pooled"):
    del encoder
    assert kind == "projected"
    return self._features[split]


def test_evaluate_run_zero_shot_stores_validation_auroc(statements_csv, tmp_path):
  from configs import evaluate as evaluate_config  # pylint: disable=g-import-not-at-top
  from merit_jax import evaluate  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  descriptions = zero_shot.load_scp_descriptions(statements_csv)
  labels, features = {}, {}
  for split, n in (("validation", 150), ("test", 150)):
    labels[split] = (rng.random((n, len(CLASSES))) < 0.3).astype(np.uint8)
    features[split] = _ecg_embeddings(labels[split], descriptions, rng)
  user = tmp_path / "prompts.yaml"
  user.write_text("AFIB: [atrial fibrillation, irregular atrial fibrillation]\n")
  config = evaluate_config.get_config("quick")
  config.n_bootstrap = 0
  config.zero_shot.statements_csv = str(statements_csv)
  config.zero_shot.prompt_file = str(user)
  config.zero_shot.user_prompts = "replace"
  encoder = types.SimpleNamespace(name="fake", embed_text=fake_embed_text)
  out = evaluate.run_zero_shot(encoder, _FakeTaskData(CLASSES, labels, features), config, {})
  assert 0.5 < out["val_macro_auroc"] <= 1 and 0 <= out["macro_auroc"]["value"] <= 1
  assert out["prompts"]["AFIB"] == ["atrial fibrillation", "irregular atrial fibrillation"]
  assert out["prompt_file"] == str(user) and out["user_prompts"] == "replace"
  # What write_results stores in <name>.json.
  saved = json.loads(json.dumps(out, default=evaluate._json_default))  # pylint: disable=protected-access
  assert saved["val_macro_auroc"] == pytest.approx(out["val_macro_auroc"])


def test_real_statements_cover_ptbxl_group_names(ptbxl_dir):
  csv = ptbxl_dir / "scp_statements.csv"
  sub = ["NORM", "IMI", "AMI", "STTC", "NST_", "ISCA", "ISC_", "ISCI", "LVH", "RVH", "LAO/LAE",
         "RAO/RAE", "SEHYP", "LAFB/LPFB", "IRBBB", "CRBBB", "CLBBB", "IVCD", "_AVB", "WPW",
         "ILBBB", "PMI"]
  prompts = zero_shot.build_class_prompts(sub + ["MI", "CD", "HYP"], csv)
  assert all(len(p) == len(zero_shot.DEFAULT_TEMPLATES) for p in prompts.values())
