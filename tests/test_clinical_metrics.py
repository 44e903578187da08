"""SCP statement matcher and clinical F1 of generated reports, against hand counts and sklearn."""

import numpy as np
import pytest

from merit_jax.metrics import clinical


def test_scp_matcher_english_and_german():
  match = clinical.ScpMatcher()
  assert match("Sinusrhythmus. Vorhofflimmern.") >= {"SR", "AFIB"}
  assert "CLBBB" in match("sinus rhythm. complete left bundle branch block.")
  assert "CLBBB" in match("sinusrhythmus linksschenkelblock")
  german_irbbb = match("sinusrhythmus unvollstÄndiger rechtsschenkelblock sonst normales ekg")
  assert german_irbbb == {"SR", "IRBBB", "NORM"}
  assert "CRBBB" not in match("incomplete right bundle branch block")
  assert match("sinusbradykardie, ventrikulÄre extrasystole(n)") == {"SBRAD", "PVC"}
  assert match("abnormal qrs") == {"ABQRS"}
  assert "NORM" not in match("abnormal ecg")
  # Located ischaemia replaces the unlocated code.
  assert match("st & t abnormal, wahrscheinlich anteriore ischÄmie") & {"ISCAN", "ISC_"} == {
      "ISCAN"}


def test_clinical_f1_hand_computed():
  generated = ["sinus rhythm. normal ecg.", "atrial fibrillation. left bundle branch block.",
               "sinus rhythm"]
  labels = [{"SR", "NORM"}, {"AFIB", "IRBBB"}, {"SR", "LVH"}]
  got = clinical.clinical_f1(generated, labels)
  # Predicted: {SR, NORM}, {AFIB, CLBBB}, {SR}. TP = 4 (SR×2, NORM, AFIB), FP = 1 (CLBBB),
  # FN = 2 (IRBBB, LVH).
  assert got["micro_precision"] == pytest.approx(4 / 5)
  assert got["micro_recall"] == pytest.approx(4 / 6)
  assert got["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))
  # Codes with label support: SR 1, NORM 1, AFIB 1, IRBBB 0, LVH 0 → macro 3/5.
  assert got["num_codes"] == 5
  assert got["macro_f1"] == pytest.approx(3 / 5)
  assert "CLBBB" not in got["per_code"]  # No support: not in the macro average.
  restricted = clinical.clinical_f1(generated, labels, codes=["SR", "AFIB"])
  assert restricted["micro_f1"] == pytest.approx(1.0)


def test_matcher_recovers_ptbxl_labels_from_reference_reports(ptbxl_dir):
  pd = pytest.importorskip("pandas")
  import ast  # pylint: disable=g-import-not-at-top
  db = pd.read_csv(ptbxl_dir / "ptbxl_database.csv", usecols=["report", "scp_codes"])
  db = db.head(2000)
  labels = [set(ast.literal_eval(s)) for s in db["scp_codes"]]
  got = clinical.clinical_f1(list(db["report"]), labels)
  # The ceiling a perfect generator could reach with this matcher (reports vs labels).
  print(f"matcher on reference reports: micro F1 {got['micro_f1']:.3f}, "
        f"macro F1 {got['macro_f1']:.3f} over {got['num_codes']} codes")
  assert got["per_code"]["SR"]["f1"] > 0.95
  assert got["per_code"]["AFIB"]["f1"] > 0.9
  assert got["micro_f1"] > 0.6



def test_clinical_f1_matches_sklearn_on_the_matched_codes():
  metrics = pytest.importorskip("sklearn.metrics")
  rng = np.random.default_rng(0)
  phrases = {"SR": "sinus rhythm", "AFIB": "atrial fibrillation", "LVH": "left ventricular "
             "hypertrophy", "1AVB": "first degree av block", "STD_": "st depression",
             "PVC": "ventricular premature complexes"}
  codes = sorted(phrases)
  generated, labels = [], []
  for _ in range(60):
    said = [c for c in codes if rng.random() < 0.3]
    generated.append(". ".join(phrases[c] for c in said))
    labels.append({c for c in codes if rng.random() < (0.7 if c in said else 0.15)})
  labels[0] = labels[0] | {"WPW"}  # A labelled code the generated text never states.
  got = clinical.clinical_f1(generated, labels)
  matcher = clinical.ScpMatcher()
  scored = sorted(set().union(*labels) | set().union(*(matcher(g) for g in generated)))
  y_true = np.array([[c in lab for c in scored] for lab in labels])
  y_pred = np.array([[c in matcher(g) for c in scored] for g in generated])
  assert got["micro_f1"] == pytest.approx(metrics.f1_score(y_true, y_pred, average="micro"))
  assert got["micro_precision"] == pytest.approx(
      metrics.precision_score(y_true, y_pred, average="micro"))
  assert got["micro_recall"] == pytest.approx(
      metrics.recall_score(y_true, y_pred, average="micro"))
  # The macro mean runs over the codes that occur in the labels.
  present = y_true.any(axis=0)
  assert got["num_codes"] == present.sum()
  assert got["macro_f1"] == pytest.approx(metrics.f1_score(
      y_true[:, present], y_pred[:, present], average="macro", zero_division=0))
  assert got["per_code"]["WPW"] == {"f1": 0.0, "support": 1}
