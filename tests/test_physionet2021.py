"""Tests for the PhysioNet/CinC 2021 builder on a synthetic copy of the Challenge layout.

The fixture writes WFDB headers in the Challenge's format (`.mat` signal file, `16+24` format,
gains, `#Age/#Sex/#Dx` comments) and `.mat` files via scipy.io.savemat into tmp_path.
"""

import csv
import os

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from merit_jax.data import physionet2021
from merit_jax.data import snomed_maps
from merit_jax.data import wfdb_io

FS = 500

# name -> (seconds, Dx, age, sex, gain, baseline, lead order, action)
CPSC = {
    "A0001": (10, "426783006", "74", "Male", 1000, 0, None, "ok"),
    "A0002": (15, "164889003,59118001", "49", "Female", 500, 10, "shuffled", "ok"),
    "A0003": (7, "164884008,429622005", "NaN", "Female", 1000, 0, None, "ok"),
    "A0004": (10, "164889003,999999999", "61", "Unknown", 1000, 0, None, "ok"),
    "A0005": (10, "55930002", "50", "Male", 1000, 0, None, "ok"),
    "A0006": (4, "426783006", "50", "Male", 1000, 0, None, "ok"),
    "A0007": (10, "426783006", "50", "Male", 1000, 0, None, "corrupt_mat"),
    "A0008": (10, "", "50", "Male", 1000, 0, None, "ok"),
}
CSN = {
    "JS00001": (10, "426177001", "80", "Male", 1000, 0, None, "ok"),
    "JS00002": (10, "713427006,164934002,164930006", "33", "Female", 1000, 0, None, "ok"),
}
SHUFFLED = ["V6", "I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5"]


def standard_signal(name: str, seconds: float) -> np.ndarray:
  """(12, samples) mV in STANDARD_LEADS order; lead k offset by k/10 mV."""
  t = np.arange(int(seconds * FS)) / FS
  rng = np.random.default_rng(sum(map(ord, name)))
  waves = 0.8 * np.sin(2 * np.pi * rng.uniform(0.8, 2.0, size=(12, 1)) * t)
  return waves + np.arange(12)[:, None] / 10


def quantised(name: str, spec) -> np.ndarray:
  """What the reader should return: the signal after ADC rounding, standard order."""
  seconds, _, _, _, gain, _, _, _ = spec
  return np.round(standard_signal(name, seconds) * gain) / gain


def write_record(folder: str, name: str, spec) -> None:
  seconds, dx, age, sex, gain, baseline, order, action = spec
  leads = SHUFFLED if order == "shuffled" else list(wfdb_io.STANDARD_LEADS)
  signal = standard_signal(name, seconds)[[wfdb_io.STANDARD_LEADS.index(n) for n in leads]]
  val = (np.round(signal * gain) + baseline).astype(np.int16)
  os.makedirs(folder, exist_ok=True)
  if action == "corrupt_mat":
    with open(os.path.join(folder, name + ".mat"), "wb") as f:
      f.write(b"MATLAB 5.0 MAT-file, but then nothing useful" + bytes(200))
  else:
    scipy.io.savemat(os.path.join(folder, name + ".mat"), {"val": val}, format="4")
  gain_field = f"{gain}({baseline})/mV" if baseline else f"{gain}/mV"
  lines = [f"{name} 12 {FS} {val.shape[1]} 05-Feb-2020 11:39:16"]
  for lead, row in zip(leads, val):
    lines.append(f"{name}.mat 16+24 {gain_field} 16 0 {int(row[0])} 0 0 {lead}")
  lines += [f"#Age: {age}", f"#Sex: {sex}", f"#Dx: {dx}", "#Rx: Unknown", "#Hx: Unknown",
            "#Sx: Unknown"]
  with open(os.path.join(folder, name + ".hea"), "w") as f:
    f.write("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def challenge_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("challenge2021")
  for name, spec in CPSC.items():
    write_record(os.path.join(root, "training", "cpsc_2018", "g1"), name, spec)
  for name, spec in CSN.items():
    write_record(os.path.join(root, "training", "chapman_shaoxing", "g1"), name, spec)
  return root


def _build(config, manual_dir, data_dir):
  builder = physionet2021.Physionet2021(config=config, data_dir=str(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


@pytest.fixture(scope="module")
def cpsc(challenge_dir, tmp_path_factory):
  return _build("cpsc2018", challenge_dir, tmp_path_factory.mktemp("tfds"))


def _examples(builder) -> dict:
  assert list(builder.info.splits) == ["test"]
  source = builder.as_data_source("test")
  return {int(source[i]["ecg_id"]): source[i] for i in range(len(source))}


def _labels(example, builder, task):
  names = builder.info.metadata["label_names"][task]
  return {names[i] for i in np.flatnonzero(example["labels"][task])}


def test_cpsc_examples_and_labels(cpsc):
  examples = _examples(cpsc)
  assert sorted(examples) == [1, 2, 3, 4]
  assert _labels(examples[1], cpsc, "cpsc") == {"NSR"}
  assert _labels(examples[2], cpsc, "cpsc") == {"AF", "RBBB"}
  assert _labels(examples[2], cpsc, "challenge") == {"AF", "RBBB"}
  # CPSC2018 codes PVC as 'ventricular ectopics'; STD is not a Challenge 2021 class.
  assert _labels(examples[3], cpsc, "cpsc") == {"PVC", "STD"}
  assert _labels(examples[3], cpsc, "challenge") == set()
  assert _labels(examples[4], cpsc, "cpsc") == {"AF"}
  assert cpsc.info.metadata["label_names"]["cpsc"] == [
      "NSR", "AF", "IAVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE"]
  assert len(cpsc.info.metadata["label_names"]["challenge"]) == 26
  assert cpsc.info.metadata["ptbxl_equivalents"]["cpsc"]["AF"] == "AFIB"
  for example in examples.values():
    assert example["report"] == b"" and int(example["patient_id"]) == -1
    assert 1 <= int(example["fold"]) <= 10


def test_demographics(cpsc):
  examples = _examples(cpsc)
  assert float(examples[1]["age"]) == 74 and int(examples[1]["sex"]) == 0
  assert float(examples[2]["age"]) == 49 and int(examples[2]["sex"]) == 1
  assert np.isnan(examples[3]["age"])
  assert int(examples[4]["sex"]) == -1


def test_signals_gains_baselines_order_and_padding(cpsc):
  examples = _examples(cpsc)
  for ecg_id, name in [(1, "A0001"), (2, "A0002"), (3, "A0003")]:
    signal = examples[ecg_id]["signal"]
    assert signal.dtype == np.float16 and signal.shape == (12, 10 * FS)
    expected = quantised(name, CPSC[name])[:, :10 * FS]
    n = expected.shape[1]
    np.testing.assert_allclose(signal[:, :n].astype(np.float32), expected, atol=2e-3)
    assert int(examples[ecg_id]["sample_rate"]) == FS and examples[ecg_id]["unit"] == b"mV"
  # A0003 lasts 7 s: zero-padded to 10 s.
  assert not examples[3]["signal"][:, 7 * FS:].any()
  # A0002 lists V6 first and aVF before aVL: stored in standard order (offset k/10 mV).
  means = examples[2]["signal"].astype(np.float32).mean(axis=1)
  np.testing.assert_allclose(means, np.arange(12) / 10, atol=0.05)


def test_skips_and_unknown_codes(cpsc):
  with open(os.path.join(cpsc.data_dir, "skipped_records.csv"), newline="") as f:
    rows = {r["record_id"]: r["reason"] for r in csv.DictReader(f)}
  assert set(rows) == {"A0005", "A0006", "A0007", "A0008"}
  assert rows["A0005"] == f"{physionet2021.NO_KNOWN_CODE}: 55930002"
  assert rows["A0006"].startswith(physionet2021.TOO_SHORT)
  assert rows["A0007"].startswith("undecodable") and "A0007.mat" in rows["A0007"]
  assert rows["A0008"] == physionet2021.NO_DX
  assert cpsc.unknown_codes == {"999999999": 1}
  with open(os.path.join(cpsc.data_dir, physionet2021.UNKNOWN_CODES_CSV), newline="") as f:
    assert list(csv.DictReader(f)) == [
        {"code": "999999999", "description": "999999999", "records": "1"}]


def test_csn_config_reads_its_folder(challenge_dir, tmp_path):
  builder = _build("csn", challenge_dir, tmp_path)
  examples = _examples(builder)
  assert sorted(examples) == [1, 2]
  assert "cpsc" not in builder.info.metadata["label_names"]
  assert _labels(examples[1], builder, "challenge") == {"SB"}
  # CRBBB counts as RBBB; 164930006 (ST interval abnormal) is unscored and only counted.
  assert _labels(examples[2], builder, "challenge") == {"RBBB", "TAb"}
  assert builder.unknown_codes == {"164930006": 1}


def test_source_folder_as_manual_dir(challenge_dir, tmp_path):
  # Pointing at one source's folder works too (the prefix selects the records).
  builder = _build("cpsc2018", os.path.join(challenge_dir, "training", "cpsc_2018"), tmp_path)
  assert sorted(_examples(builder)) == [1, 2, 3, 4]


def test_missing_manual_dir_is_explained(tmp_path):
  builder = physionet2021.Physionet2021(config="csn", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(FileNotFoundError, match="physionet.org/content/challenge-2021"):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "nowhere")))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no 'JS\\*.hea' record"):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "empty")))


def test_parse_header_comments():
  parsed = physionet2021.parse_header_comments(
      ["Age: 56", "Sex: F", "Dx: 426783006, 164889003", "Rx: Unknown"])
  assert parsed == {"age": 56.0, "sex": 1, "dx": ["426783006", "164889003"]}
  parsed = physionet2021.parse_header_comments(["Age: -1", "Sex: Unknown"])
  assert np.isnan(parsed["age"]) and parsed["sex"] == -1 and parsed["dx"] is None


def test_label_maps_are_consistent():
  challenge = snomed_maps.TASKS["challenge"]
  assert len(challenge) == 26
  codes = [c for cs in challenge.values() for c in cs]
  assert len(codes) == len(set(codes)) == 30
  assert set(codes) == set(snomed_maps.CHALLENGE_SCORED_CODES)
  assert challenge["RBBB"] == ("59118001", "713427006")
  for task, table in snomed_maps.PTBXL_EQUIVALENTS.items():
    assert set(table) <= set(snomed_maps.TASKS[task])


def test_ptbxl_equivalents_exist_in_scp_statements(ptbxl_dir):
  import pandas as pd  # pylint: disable=g-import-not-at-top
  statements = pd.read_csv(ptbxl_dir / "scp_statements.csv", index_col=0)
  for table in snomed_maps.PTBXL_EQUIVALENTS.values():
    assert set(table.values()) <= set(statements.index)


def test_build_cli_entry(challenge_dir, tmp_path):
  from merit_jax.data import build  # pylint: disable=g-import-not-at-top
  builder = build.build("physionet2021", str(challenge_dir), str(tmp_path), config="csn",
                        tokenizer_vocab_size=None)
  assert builder.info.splits["test"].num_examples == 2
  with pytest.raises(FileNotFoundError, match="challenge-2021"):
    build.build("physionet2021", str(tmp_path / "nowhere"), str(tmp_path), config="csn",
                tokenizer_vocab_size=None)
