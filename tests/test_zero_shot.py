"""Tests for zero-shot classification with a fake (bag-of-words) text embedder."""

import json
import pathlib
import types
import zlib

import numpy as np
import pytest
import yaml

from merit_jax.data import ptbxl
from merit_jax.metrics import classification as metrics
from merit_jax.evaluators import prompts as prompts_lib
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
  prompts = prompts_lib.build_class_prompts(CLASSES, statements_csv, prompt_file=user)
  assert prompts["IMI"][0] == "an ECG showing inferior myocardial infarction"
  assert len(prompts["IMI"]) == len(prompts_lib.DEFAULT_TEMPLATES)
  assert prompts["AFIB"][-1] == "irregularly irregular rhythm"
  replaced = prompts_lib.build_class_prompts(CLASSES, statements_csv, prompt_file=user,
                                           user_prompts="replace")
  assert replaced["NORM"] == ["all normal"]
  yaml_file = tmp_path / "prompts.yaml"
  yaml_file.write_text("LVH:\n  - big left ventricle\n")
  assert prompts_lib.build_class_prompts(CLASSES, statements_csv, prompt_file=yaml_file)[
      "LVH"][-1] == "big left ventricle"
  # Group names: built-in description, else the member codes' descriptions.
  groups = prompts_lib.build_class_prompts(["MI", "ISCA", "GRPX"], statements_csv,
                                         templates=["{description}"])
  assert groups["GRPX"] == ["foo pattern or bar pattern"]
  assert groups["MI"] == ["myocardial infarction"]
  assert groups["ISCA"] == ["ischemia in anterior leads"]
  with pytest.raises(ValueError, match="no description for class 'XYZ'"):
    prompts_lib.build_class_prompts(["XYZ"], statements_csv)
  with pytest.raises(ValueError, match="not in the task"):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"FOO": ["x"]}))
    prompts_lib.build_class_prompts(CLASSES, statements_csv, prompt_file=bad)


def test_prompt_file_may_cover_other_tasks_and_merl_names(statements_csv, tmp_path):
  user = tmp_path / "prompts.yaml"
  # ISCAL, ISCA and GRPX are labels of scp_statements.csv but no class of this task.
  user.write_text("AFIB: [vorhofflimmern]\nISCAL: [x]\nISCA: [y]\nGRPX: [z]\n"
                  "_AVB: [a-v block i, prolonged pr interval.]\n")
  prompts = prompts_lib.build_class_prompts(CLASSES, statements_csv, prompt_file=user,
                                           user_prompts="replace")
  assert prompts["AFIB"] == ["vorhofflimmern"]
  assert prompts["IMI"][0] == "an ECG showing inferior myocardial infarction"
  # MERL's split files write AVB for PTB-XL's _AVB.
  merl = prompts_lib.build_class_prompts(["AVB"], prompt_file=user, user_prompts="replace",
                                       statements_csv=statements_csv)
  assert merl["AVB"] == ["a-v block i", "prolonged pr interval."]
  # Without scp_statements.csv nothing says that ISCAL is a PTB-XL label.
  with pytest.raises(ValueError, match="pass statements_csv"):
    prompts_lib.build_class_prompts(["AFIB"], descriptions={"AFIB": "atrial fibrillation"},
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
    prompts = prompts_lib.build_class_prompts(names, csv, templates=(),
                                            prompt_file=REPORT_PROMPTS, user_prompts="replace")
    assert list(prompts) == names
    for name in names:
      assert len(prompts[name]) >= 2, (task, name)
      assert prompts[name] == data[name]
    # With the default templates too, "replace" leaves only the file's prompts.
    assert prompts_lib.build_class_prompts(names, csv, prompt_file=REPORT_PROMPTS,
                                         user_prompts="replace") == prompts
  assert set(data) == {n for t in PTBXL_TASKS for n in label_names[t]}


def test_ptbxl_report_prompts_cover_merl_class_names(ptbxl_dir):
  from merit_jax.evaluators import tasks  # pylint: disable=g-import-not-at-top
  merl_dir = ptbxl_dir / "labels_merl"
  if not merl_dir.exists():
    pytest.skip(f"MERL split files not found at {merl_dir}")
  for task in PTBXL_TASKS:
    _, names = tasks.merl_table(str(merl_dir), task, "train")
    prompts = prompts_lib.build_class_prompts(names, ptbxl_dir / "scp_statements.csv",
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
  descriptions = prompts_lib.load_scp_descriptions(statements_csv)
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
  prompts = prompts_lib.build_class_prompts(CLASSES, statements_csv)
  shuffled = {c: prompts[CLASSES[(i + 1) % len(CLASSES)]] for i, c in enumerate(CLASSES)}
  worse = zero_shot.run_zero_shot(test_emb, test_labels, CLASSES, fake_embed_text,
                                  prompts=shuffled, n_bootstrap=0)
  assert worse["macro_auroc"]["value"] < 0.65
  assert "macro_f1" not in worse and worse["val_macro_auroc"] is None


class _FakeTaskData:
  """What the zero-shot evaluator reads of a `TaskData`: labels, projected features, reports
  (German, English, none in turn)."""

  def __init__(self, class_names, labels, features):
    self.class_names, self.labels, self._features = class_names, labels, features

  def reports(self, split):
    texts = ("sinusrhythmus normales ekg", "sinus rhythm. normal ecg.", "")
    return [texts[i % 3] for i in range(len(self.labels[split]))]

  def features(self, encoder, split, kind="pooled"):
    del encoder
    assert kind == "projected"
    return self._features[split]


def _run_zero_shot(config, encoder, data):
  """The zero-shot evaluator's entry for one task, as `merit_jax.evaluate` runs it."""
  from merit_jax.evaluators import registry  # pylint: disable=g-import-not-at-top
  evaluator = zero_shot.Evaluator(config.evals.zero_shot,
                                  registry.EvalContext(data_cfg={}, store=None))
  return evaluator.suite(encoder, data)["zero_shot"]


def test_evaluator_zero_shot_stores_validation_auroc(statements_csv, tmp_path):
  from configs import evaluate as evaluate_config  # pylint: disable=g-import-not-at-top
  from merit_jax.reporting import writer  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  descriptions = prompts_lib.load_scp_descriptions(statements_csv)
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
  config.zero_shot.prototype = False
  config.zero_shot.text_ceiling = False
  encoder = types.SimpleNamespace(name="fake", embed_text=fake_embed_text)
  data = _FakeTaskData(CLASSES, labels, features)
  out = _run_zero_shot(config, encoder, data)
  # The prompt file joins the default prompt sets as `user`; all are scored on validation.
  assert set(out["validation"]) == {"scp_en", "report_de", "knowledge", "all", "user"}
  assert out["val_macro_auroc"] == max(v for by_norm in out["validation"].values()
                                       for v in by_norm.values())
  assert out["val_macro_auroc"] == out["validation"][out["prompt_set"]][out["normalization"]]
  assert 0.5 < out["val_macro_auroc"] <= 1 and 0 <= out["macro_auroc"]["value"] <= 1
  assert out["softmax_scale_source"] == "fixed"  # the fake encoder has no logit scale
  # The test records by report language: 50 German, 50 English, 50 without a report.
  assert {g: e["num_records"] for g, e in out["by_language"].items()} == {
      "de": 50, "en": 50, "none": 50}
  assert all(0 <= e["macro_auroc"]["value"] <= 1 for e in out["by_language"].values())
  assert out["prompt_file"] == str(user) and out["user_prompts"] == "replace"
  # The bundled prompt files are read beside the config file.
  assert out["prompt_sets"]["report_de"]["file"] == str(REPORT_PROMPTS)
  config.zero_shot.prompt_sets = ("user",)
  config.zero_shot.normalizations = ("raw",)
  only = _run_zero_shot(config, encoder, data)
  assert (only["prompt_set"], only["normalization"]) == ("user", "raw")
  assert only["prompts"]["AFIB"] == ["atrial fibrillation", "irregular atrial fibrillation"]
  # What write_results stores in <name>.json.
  saved = json.loads(writer.results_json(out))
  assert saved["val_macro_auroc"] == pytest.approx(out["val_macro_auroc"])


def test_real_statements_cover_ptbxl_group_names(ptbxl_dir):
  csv = ptbxl_dir / "scp_statements.csv"
  sub = ["NORM", "IMI", "AMI", "STTC", "NST_", "ISCA", "ISC_", "ISCI", "LVH", "RVH", "LAO/LAE",
         "RAO/RAE", "SEHYP", "LAFB/LPFB", "IRBBB", "CRBBB", "CLBBB", "IVCD", "_AVB", "WPW",
         "ILBBB", "PMI"]
  prompts = prompts_lib.build_class_prompts(sub + ["MI", "CD", "HYP"], csv)
  assert all(len(p) == len(prompts_lib.DEFAULT_TEMPLATES) for p in prompts.values())


# ----------------------------------------------------------------------------------------------
# Score normalisation, choice on validation, the prototype and text-only diagnostics.

COSINE_3X3 = np.array([[0.3, 0.1, 0.2],
                       [0.0, 0.6, 0.3],
                       [-0.3, 0.0, 0.3]])


def test_centered_and_softmax_normalisation_by_hand():
  np.testing.assert_allclose(zero_shot.normalize_scores(COSINE_3X3, "raw"), COSINE_3X3)
  # Row means 0.2, 0.3, 0.0.
  np.testing.assert_allclose(zero_shot.normalize_scores(COSINE_3X3, "centered"),
                             [[0.1, -0.1, 0.0], [-0.3, 0.3, 0.0], [-0.3, 0.0, 0.3]], atol=1e-12)
  # Logit scale 10: rows z = (3, 1, 2), (0, 6, 3), (-3, 0, 3); e.g. e^3 / (e^3 + e + e^2)
  # = 20.0855 / 30.1929 = 0.66524.
  np.testing.assert_allclose(zero_shot.normalize_scores(COSINE_3X3, "softmax", logit_scale=10.0),
                             [[0.66524, 0.09003, 0.24473],
                              [0.0023556, 0.95033, 0.047314],
                              [0.0023556, 0.047314, 0.95033]], rtol=1e-4)
  # Unknown scale: × 100 (row 1: z = 30, 10, 20 → 1 / (1 + e^-20 + e^-10) = 0.9999546).
  assert zero_shot.softmax_scale(None) == (100.0, "fixed")
  assert zero_shot.softmax_scale(14.3) == (14.3, "model")
  fixed = zero_shot.normalize_scores(COSINE_3X3, "softmax")
  assert fixed[0, 0] == pytest.approx(0.9999546, rel=1e-6)
  np.testing.assert_allclose(fixed.sum(axis=1), 1.0)
  with pytest.raises(ValueError, match="unknown normalization 'zscore'"):
    zero_shot.normalize_scores(COSINE_3X3, "zscore")


def _onehot_embed(dim):
  """Texts 'p0', 'p1', ... → one-hot e_i plus a shared direction e_{dim-1} ("an ECG")."""
  def embed(texts):
    out = np.zeros((len(texts), dim))
    for row, text in enumerate(texts):
      for word in text.split():
        out[row, int(word[1:])] = 1.0
      out[row, dim - 1] = 1.0
    return out
  return embed


def _offset_records(rng, n, num_classes, dim, offset_sd=3.0):
  """ECG embeddings: class signal plus a large record-level offset along the shared direction.

  Returns (labels, embeddings, offsets): raw cosines rank records mostly by the offset;
  centring over the classes removes it.
  """
  labels = (rng.random((n, num_classes)) < 0.4).astype(np.uint8)
  offsets = rng.normal(size=n) * offset_sd
  emb = np.zeros((n, dim))
  emb[:, :num_classes] = labels + 0.1 * rng.normal(size=(n, num_classes))
  emb[:, dim - 1] = 2.0 + offsets
  return labels, emb, offsets


def test_choice_is_made_on_validation_and_never_reads_test_labels():
  rng = np.random.default_rng(0)
  classes, dim = ["A", "B", "C"], 5
  sets = {"good": {"A": ["p0"], "B": ["p1"], "C": ["p2"]},
          "shuffled": {"A": ["p1"], "B": ["p2"], "C": ["p0"]}}
  val_labels, val_emb, _ = _offset_records(rng, 200, 3, dim)
  test_labels, test_emb, test_offsets = _offset_records(rng, 200, 3, dim)
  # Test labels that favour raw cosine: positive exactly where the record offset is high.
  raw_friendly = np.repeat((test_offsets > 0)[:, None], 3, axis=1).astype(np.uint8)
  class_emb = zero_shot.class_embeddings(sets["good"], classes, _onehot_embed(dim))
  test_cos = zero_shot.zero_shot_scores(test_emb, class_emb)
  on_test = {n: metrics.macro_auroc(raw_friendly, zero_shot.normalize_scores(test_cos, n))
             for n in zero_shot.NORMALIZATIONS}
  assert on_test["raw"] > 0.75 > 0.6 > max(on_test["centered"], on_test["softmax"])

  runs = [zero_shot.run_zero_shot_selected(test_emb, y, classes, _onehot_embed(dim), sets,
                                           val_emb, val_labels, n_bootstrap=0)
          for y in (test_labels, raw_friendly)]
  for run in runs:
    assert (run["prompt_set"], run["normalization"]) == ("good", "centered")
    # Every option's validation number is reported; the record offset sinks raw cosine.
    assert set(run["validation"]) == {"good", "shuffled"}
    assert set(run["validation"]["good"]) == set(zero_shot.NORMALIZATIONS)
    assert run["validation"]["good"]["centered"] > 0.95 > 0.8 > run["validation"]["good"]["raw"]
    assert run["validation"]["shuffled"]["centered"] < 0.5
    assert run["val_macro_auroc"] == run["validation"]["good"]["centered"]
    assert run["softmax_scale_source"] == "fixed" and run["prompts"]["A"] == ["p0"]
  assert runs[0]["validation"] == runs[1]["validation"]
  assert runs[0]["thresholds"] == runs[1]["thresholds"]
  # The test labels did reach the test metric (and only it).
  assert runs[0]["macro_auroc"]["value"] > 0.95 > 0.6 > runs[1]["macro_auroc"]["value"]
  assert runs[1]["macro_auroc"]["value"] == pytest.approx(on_test["centered"])


def test_choose_on_validation_ties_and_nan():
  y = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
  perfect = y.astype(float)
  chance = np.zeros((4, 2))
  choice = zero_shot.choose_on_validation({"a": chance, "b": perfect, "c": perfect}, y,
                                          ["raw", "centered"])
  assert (choice["prompt_set"], choice["normalization"]) == ("b", "raw")  # first of the ties
  assert choice["validation"]["a"]["raw"] == 0.5 and choice["val_macro_auroc"] == 1.0


def test_prototype_is_the_normalised_mean_of_normalised_report_embeddings():
  text = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
  labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0]])
  valid = np.array([True, True, True, False])  # record 3 has no report
  protos, counts = zero_shot.prototype_embeddings(text, labels, valid)
  # Class 0: (0.6, 0.8) and (1, 0) → mean (0.8, 0.4) → (2, 1) / √5.
  np.testing.assert_allclose(protos[0], [2 / np.sqrt(5), 1 / np.sqrt(5)], rtol=1e-6)
  # Class 1: (1, 0) and (0, 1) → (1, 1) / √2.
  np.testing.assert_allclose(protos[1], [1 / np.sqrt(2), 1 / np.sqrt(2)], rtol=1e-6)
  np.testing.assert_array_equal(protos[2], [0.0, 0.0])
  np.testing.assert_array_equal(counts, [2, 2, 0])


def test_run_prototype_leaves_out_classes_without_a_training_report():
  rng = np.random.default_rng(1)
  classes, dim = ["A", "B", "C", "D"], 6
  def split(n):
    labels = (rng.random((n, 4)) < 0.4).astype(np.uint8)
    emb = np.zeros((n, dim))
    emb[:, :4] = labels + 0.2 * rng.normal(size=(n, 4))
    emb[:, 5] = 1.0
    return labels, emb
  train_y, train_text = split(100)
  val_y, val_emb = split(80)
  test_y, test_emb = split(80)
  has_report = np.ones(100, bool)
  has_report[train_y[:, 3] == 1] = False  # D's training records have no report
  out = zero_shot.run_prototype(train_text, train_y, test_emb, test_y, val_emb, val_y, classes,
                                train_valid=has_report, n_bootstrap=0)
  assert out["no_prototype"] == ["D"] and out["num_train_reports"]["D"] == 0
  assert 3 in out["excluded_classes"] and np.isnan(out["per_class"]["auroc"][3])
  assert out["num_evaluated"] == 3 and out["macro_auroc"]["value"] > 0.9
  assert out["normalization"] in zero_shot.NORMALIZATIONS
  assert set(out["validation"]) == set(zero_shot.NORMALIZATIONS)


def test_text_only_ceiling_of_a_one_hot_text_tower_is_perfect():
  dim = 4
  def embed(texts):  # one-hot per mentioned class token, nothing else
    out = np.zeros((len(texts), dim))
    for row, text in enumerate(texts):
      for word in text.split():
        out[row, int(word[1:])] = 1.0
    return out
  prompts = {"A": ["p0"], "B": ["p1"], "C": ["p2"]}
  class_emb = zero_shot.class_embeddings(prompts, ["A", "B", "C"], embed)
  labels = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0], [1, 0, 0]])
  reports = ["p0", "p1 p2", "p2", "p0 p1", "p1", ""]
  has_report = np.array([bool(r) for r in reports])
  out = zero_shot.text_only_ceiling(embed(reports), labels, class_emb, has_report,
                                    normalizations=zero_shot.NORMALIZATIONS)
  assert out["macro_auroc"]["value"] == 1.0 and out["num_evaluated"] == 3
  assert out["num_records"] == 5 and out["num_left_out"] == 1
  assert out["by_normalization"]["raw"] == 1.0


def test_prompt_sets_knowledge_report_and_union(statements_csv):
  names = ["NORM", "IMI", "LVH", "AFIB", "CLBBB", "GRPX"]
  built = prompts_lib.build_prompt_sets(["scp_en", "report_de", "knowledge", "all"], names,
                                    statements_csv=statements_csv,
                                    prompt_dir=REPORT_PROMPTS.parent)
  knowledge = yaml.safe_load((REPORT_PROMPTS.parent / "ptbxl_knowledge.yaml").read_text("utf-8"))
  reports = _load_report_prompts()
  assert built["knowledge"]["prompts"]["CLBBB"] == knowledge["CLBBB"]
  assert built["report_de"]["prompts"]["AFIB"] == reports["AFIB"]
  # GRPX is in neither file: it keeps the templates, and says so.
  assert built["knowledge"]["fallback"] == ["GRPX"] == built["all"]["fallback"]
  assert built["scp_en"]["fallback"] == [] and built["scp_en"]["file"] is None
  assert built["knowledge"]["prompts"]["GRPX"] == built["scp_en"]["prompts"]["GRPX"]
  # all = the union of the three, each prompt once.
  union = built["all"]["prompts"]["LVH"]
  assert set(union) == (set(built["scp_en"]["prompts"]["LVH"]) | set(reports["LVH"])
                        | set(knowledge["LVH"]))
  assert len(union) == len(set(union))
  with pytest.raises(ValueError, match="needs zero_shot.prompt_file"):
    prompts_lib.build_prompt_sets(["user"], names, statements_csv=statements_csv)
  with pytest.raises(ValueError, match="unknown prompt set 'bogus'"):
    prompts_lib.build_prompt_sets(["bogus"], names, statements_csv=statements_csv)
  with pytest.raises(ValueError, match="zero_shot.prompt_dir"):
    prompts_lib.build_prompt_sets(["knowledge"], names, statements_csv=statements_csv)


def test_knowledge_prompts_cover_every_ptbxl_label(ptbxl_dir):
  csv = ptbxl_dir / "scp_statements.csv"
  label_names = ptbxl.ptbxl_label_names(csv)
  path = REPORT_PROMPTS.parent / "ptbxl_knowledge.yaml"
  data = yaml.safe_load(path.read_text(encoding="utf-8"))
  assert set(data) == {n for names in label_names.values() for n in names}
  for task, names in label_names.items():
    prompts = prompts_lib.build_class_prompts(names, csv, templates=(), prompt_file=path,
                                            user_prompts="replace")
    for name in names:
      assert len(prompts[name]) >= 2 and len(set(prompts[name])) == len(prompts[name]), name
      # CKEPE style: "<name>: <what the ECG shows>" first.
      assert ":" in prompts[name][0], name
