"""Tests for the MIMIC-IV-ECG builder on a synthetic copy of the PhysioNet layout.

The fixture writes tiny WFDB records with `wfdb.wrsamp`, leads in MIMIC's order (aVF before
aVL), plus `record_list.csv` and `machine_measurements.csv`, into tmp_path.
"""

import collections
import csv
import os

import numpy as np
import pandas as pd
import pytest
import wfdb

from merit_jax.data import mimic_iv_ecg
from merit_jax.data import preprocess
from merit_jax.data import skips
from merit_jax.data import wfdb_io

MIMIC_LEADS = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
FS = 500
N = 5000
# Subjects chosen for their split bucket (see test_subject_split_is_pinned).
TRAIN_SUBJECT, VALIDATION_SUBJECT, TEST_SUBJECT = 10000032, 10000020, 10000250

# study_id -> (subject_id, report statements, what to do with the files)
STUDIES = {
    40000001: (TRAIN_SUBJECT, ["Sinus rhythm", "Possible left atrial abnormality", None,
                               "  Borderline ECG  "], "ok"),
    40000002: (TRAIN_SUBJECT, ["Sinus tachycardia.", "Normal ECG"], "ok"),
    40000003: (VALIDATION_SUBJECT, ["Atrial fibrillation"], "ok"),
    40000004: (TEST_SUBJECT, ["Sinus bradycardia", "", "Left axis deviation"], "ok"),
    40000005: (TRAIN_SUBJECT, ["Sinus rhythm"], "truncate_dat"),
    40000006: (TRAIN_SUBJECT, ["Sinus rhythm"], "delete_hea"),
    40000007: (TRAIN_SUBJECT, [None, "   "], "ok"),
    40000008: (TRAIN_SUBJECT, ["Sinus rhythm"], "no_files"),
}
USED = (40000001, 40000002, 40000003, 40000004)


def standard_signal(study_id: int) -> np.ndarray:
  """(12, N) mV signal in STANDARD_LEADS order; lead k has offset k/10 mV, so leads differ."""
  t = np.arange(N) / FS
  rng = np.random.default_rng(study_id)
  waves = 0.5 * np.sin(2 * np.pi * rng.uniform(0.8, 2.0, size=(12, 1)) * t)
  return (waves + np.arange(12)[:, None] / 10).astype(np.float64)


def write_mimic_layout(root) -> dict:
  record_rows, measurement_rows = [], []
  for study_id, (subject_id, statements, action) in STUDIES.items():
    rel = mimic_iv_ecg.default_record_path(subject_id, study_id)
    record_rows.append({"subject_id": subject_id, "study_id": study_id,
                        "file_name": str(study_id), "ecg_time": "2180-07-23 08:44:00",
                        "path": rel})
    reports = {f"report_{k}": (statements[k] if k < len(statements) else None)
               for k in range(mimic_iv_ecg.NUM_REPORT_FIELDS)}
    measurement_rows.append({"subject_id": subject_id, "study_id": study_id, "cart_id": 6848296,
                             "ecg_time": "2180-07-23 08:44:00", **reports,
                             "bandwidth": "0.005-150 Hz", "rr_interval": 659})
    if action == "no_files":
      continue
    folder = os.path.join(root, os.path.dirname(rel))
    os.makedirs(folder, exist_ok=True)
    signal = standard_signal(study_id)
    in_mimic_order = signal[[wfdb_io.STANDARD_LEADS.index(n) for n in MIMIC_LEADS]]
    wfdb.wrsamp(str(study_id), fs=FS, units=["mV"] * 12, sig_name=MIMIC_LEADS,
                p_signal=in_mimic_order.T, fmt=["16"] * 12, adc_gain=[200.0] * 12,
                baseline=[0] * 12, write_dir=folder)
    base = os.path.join(root, rel)
    if action == "truncate_dat":
      with open(base + ".dat", "r+b") as f:
        f.truncate(1000)
    elif action == "delete_hea":
      os.remove(base + ".hea")
  pd.DataFrame(record_rows).to_csv(os.path.join(root, mimic_iv_ecg.RECORD_LIST_CSV),
                                   index=False)
  pd.DataFrame(measurement_rows).to_csv(os.path.join(root, mimic_iv_ecg.MEASUREMENTS_CSV),
                                        index=False)
  return STUDIES


@pytest.fixture(scope="module")
def mimic_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("mimic_iv_ecg")
  write_mimic_layout(root)
  return root


@pytest.fixture(scope="module")
def built_500hz(mimic_dir, tmp_path_factory):
  builder = mimic_iv_ecg.MimicIvEcg(config="500hz",
                                    data_dir=str(tmp_path_factory.mktemp("tfds")))
  builder.download_and_prepare(download_config=_download_config(mimic_dir))
  return builder


def _download_config(manual_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.download.DownloadConfig(manual_dir=str(manual_dir))


def _examples(builder) -> dict:
  out = {}
  for split in builder.info.splits:
    source = builder.as_data_source(split)
    for i in range(len(source)):
      example = source[i]
      out[int(example["ecg_id"])] = (split, example)
  return out


def test_splits_follow_subjects(built_500hz):
  examples = _examples(built_500hz)
  assert sorted(examples) == list(USED)
  by_split = collections.defaultdict(set)
  for ecg_id, (split, example) in examples.items():
    by_split[split].add(int(example["patient_id"]))
    assert split == mimic_iv_ecg.subject_split(int(example["patient_id"]))
  assert dict(by_split) == {"train": {TRAIN_SUBJECT}, "validation": {VALIDATION_SUBJECT},
                            "test": {TEST_SUBJECT}}


def test_leads_are_reordered_and_values_kept(built_500hz):
  examples = _examples(built_500hz)
  for ecg_id in USED:
    _, example = examples[ecg_id]
    signal = example["signal"]
    assert signal.dtype == np.float16 and signal.shape == (12, N)
    expected = standard_signal(ecg_id)
    # aVL/aVF are rows 4/5 after reordering (MIMIC stores aVF first).
    np.testing.assert_allclose(signal.astype(np.float32), expected, atol=0.01)
    assert abs(float(signal[4].mean()) - 0.4) < 0.05  # aVL carries offset 4/10
    assert abs(float(signal[5].mean()) - 0.5) < 0.05  # aVF carries offset 5/10
    assert int(example["sample_rate"]) == FS
    assert example["unit"] == b"mV"
    assert np.isnan(example["age"]) and int(example["sex"]) == -1
    assert int(example["fold"]) == -1 and example["labels"] == {}
  assert built_500hz.info.metadata["label_names"] == {}


def test_reports_are_joined(built_500hz):
  reports = {k: v[1]["report"].decode() for k, v in _examples(built_500hz).items()}
  assert reports[40000001] == ("Sinus rhythm. Possible left atrial abnormality. "
                               "Borderline ECG")
  assert reports[40000002] == "Sinus tachycardia. Normal ECG"
  assert reports[40000004] == "Sinus bradycardia. Left axis deviation"


def test_bad_records_are_skipped_with_reasons(built_500hz):
  path = os.path.join(built_500hz.data_dir, "skipped_records.csv")
  with open(path, newline="") as f:
    rows = {int(r["record_id"]): r for r in csv.DictReader(f)}
  assert set(rows) == {40000005, 40000006, 40000007, 40000008}
  assert skips.SkipLog.reason_category(rows[40000005]["reason"]) == "truncated signal file"
  assert skips.SkipLog.reason_category(rows[40000006]["reason"]) == "missing header file"
  assert rows[40000007]["reason"] == mimic_iv_ecg.NO_REPORT
  assert rows[40000008]["reason"] == mimic_iv_ecg.RECORD_FILE_MISSING
  assert all(r["split"] == "train" for r in rows.values())
  assert rows[40000005]["path"].endswith("s40000005/40000005")
  assert built_500hz.skip_log.num_used == len(USED)


def test_100hz_config_resamples_via_build_entry_point(mimic_dir, built_500hz, tmp_path):
  from merit_jax.data import build  # pylint: disable=g-import-not-at-top
  builder = build.build("mimic_iv_ecg", str(mimic_dir), str(tmp_path), config="100hz",
                        tokenizer_vocab_size=None)
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
      "train": 2, "validation": 1, "test": 1}
  low = _examples(builder)
  high = _examples(built_500hz)
  assert sorted(low) == list(USED)
  for ecg_id in USED:
    signal = low[ecg_id][1]["signal"]
    assert signal.shape == (12, 1000) and int(low[ecg_id][1]["sample_rate"]) == 100
    expected = preprocess.resample(high[ecg_id][1]["signal"].astype(np.float32), 500, 100)
    np.testing.assert_allclose(signal.astype(np.float32), expected, atol=0.01)


def test_missing_manual_dir_names_physionet(tmp_path):
  builder = mimic_iv_ecg.MimicIvEcg(config="500hz", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(FileNotFoundError, match="physionet.org/content/mimic-iv-ecg"):
    builder.download_and_prepare(download_config=_download_config(tmp_path / "nowhere"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="record_list.csv"):
    mimic_iv_ecg.check_manual_dir(tmp_path / "empty")


def test_subject_split_is_pinned():
  # Pinned values: changing the rule would silently move patients between splits.
  assert [mimic_iv_ecg.subject_bucket(s) for s in (10000032, 10000764, 19999987)] == [20, 6, 80]
  assert mimic_iv_ecg.subject_split(VALIDATION_SUBJECT) == "validation"
  assert mimic_iv_ecg.subject_split(TEST_SUBJECT) == "test"
  counts = collections.Counter(mimic_iv_ecg.subject_split(s) for s in range(10**7, 10**7 + 20000))
  assert 0.975 < counts["train"] / 20000 < 0.985
  assert 0.005 < counts["validation"] / 20000 < 0.015
  assert 0.005 < counts["test"] / 20000 < 0.015


def test_join_report():
  assert mimic_iv_ecg.join_report(["A", float("nan"), "", "B;", "C"]) == "A. B; C"
  assert mimic_iv_ecg.join_report([None, " "]) == ""

