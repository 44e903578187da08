"""Tests for zero-shot classification with a fake (bag-of-words) text embedder."""

import json
import zlib

import numpy as np
import pytest

from merit_jax.evaluators import zero_shot

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
  # Shuffling which class gets which prompts destroys the alignment.
  prompts = zero_shot.build_class_prompts(CLASSES, statements_csv)
  shuffled = {c: prompts[CLASSES[(i + 1) % len(CLASSES)]] for i, c in enumerate(CLASSES)}
  worse = zero_shot.run_zero_shot(test_emb, test_labels, CLASSES, fake_embed_text,
                                  prompts=shuffled, n_bootstrap=0)
  assert worse["macro_auroc"]["value"] < 0.65
  assert "macro_f1" not in worse


def test_real_statements_cover_ptbxl_group_names(ptbxl_dir):
  csv = ptbxl_dir / "scp_statements.csv"
  sub = ["NORM", "IMI", "AMI", "STTC", "NST_", "ISCA", "ISC_", "ISCI", "LVH", "RVH", "LAO/LAE",
         "RAO/RAE", "SEHYP", "LAFB/LPFB", "IRBBB", "CRBBB", "CLBBB", "IVCD", "_AVB", "WPW",
         "ILBBB", "PMI"]
  prompts = zero_shot.build_class_prompts(sub + ["MI", "CD", "HYP"], csv)
  assert all(len(p) == len(zero_shot.DEFAULT_TEMPLATES) for p in prompts.values())
