"""Tests for merit_jax.data.wfdb_io: lead order, units, and every RecordError reason."""

import os
import shutil

import numpy as np
import pytest
import scipy.io
import wfdb

from merit_jax.data import wfdb_io

RAW_RECORD = "records100/00000/00001_lr"
RAW_RECORD_500 = "records500/00000/00001_hr"


def _copy_record(src_dir, rel, dst_dir):
  for ext in (".hea", ".dat"):
    shutil.copy(os.path.join(src_dir, rel + ext),
                os.path.join(dst_dir, os.path.basename(rel) + ext))
  return os.path.join(dst_dir, os.path.basename(rel))


def _write_record(directory, name, signal, fs=100, units="mV", names=wfdb_io.STANDARD_LEADS,
                  gain=1000.0):
  """Writes (samples, leads) `signal` as a format-16 WFDB record."""
  wfdb.wrsamp(name, fs=fs, units=[units] * signal.shape[1], sig_name=list(names),
              p_signal=signal, fmt=["16"] * signal.shape[1],
              adc_gain=[gain] * signal.shape[1], baseline=[0] * signal.shape[1],
              write_dir=str(directory))
  return os.path.join(str(directory), name)


def _sine(samples=1000, leads=12):
  t = np.arange(samples) / 100.0
  return np.stack([0.5 * np.sin(2 * np.pi * (1 + i) * t) for i in range(leads)], axis=1)


def test_real_record_matches_rdsamp(ptbxl_dir):
  for rel, rate in ((RAW_RECORD, 100), (RAW_RECORD_500, 500)):
    record = wfdb_io.read_wfdb(str(ptbxl_dir / rel), expected_rate=rate)
    expected, fields = wfdb.rdsamp(str(ptbxl_dir / rel))
    assert record.signal.dtype == np.float32
    assert record.signal.shape == (12, 10 * rate)
    assert record.unit == "mV" and record.sample_rate == rate
    assert record.lead_names == wfdb_io.STANDARD_LEADS
    assert [n.lower() for n in fields["sig_name"]] == [n.lower() for n in wfdb_io.STANDARD_LEADS]
    np.testing.assert_allclose(record.signal, expected.T.astype(np.float32), atol=1e-6)


def test_normalised_record_keeps_unit(ptbxl_derived_dir):
  rel = next(p for p in sorted((ptbxl_derived_dir / "records100").rglob("*.hea")))
  record = wfdb_io.read_wfdb(str(rel.with_suffix("")))
  assert record.unit == "NU"
  np.testing.assert_allclose(record.signal.std(axis=1), 1.0, atol=0.05)


def test_header_order_is_mapped_to_standard_order(tmp_path):
  # MIMIC-IV-ECG style: aVF before aVL, names in other case.
  names = ["i", "II", "iii", "AVR", "aVF", "AVL", "V1", "V2", "V3", "V4", "V5", "V6"]
  signal = np.tile(np.arange(12, dtype=np.float64)[None, :] / 10, (500, 1))
  path = _write_record(tmp_path, "shuffled", signal, names=names)
  record = wfdb_io.read_wfdb(path)
  level = {name.lower(): i / 10 for i, name in enumerate(names)}
  expected = [level[lead.lower()] for lead in wfdb_io.STANDARD_LEADS]
  np.testing.assert_allclose(record.signal[:, 0], expected, atol=1e-3)


def test_reorder_leads_drops_extra_and_rejects_missing():
  names = list(reversed(wfdb_io.STANDARD_LEADS)) + ["V3R"]
  signal = np.arange(13)[:, None] * np.ones((1, 4))
  out = wfdb_io.reorder_leads(signal, names)
  np.testing.assert_array_equal(out[:, 0], np.arange(11, -1, -1))
  with pytest.raises(wfdb_io.RecordError, match="missing"):
    wfdb_io.reorder_leads(signal[:11], names[:11])
  with pytest.raises(wfdb_io.RecordError, match="duplicate"):
    wfdb_io.reorder_leads(signal[:2], ["I", "i"])


def test_microvolts_are_converted_to_millivolts(tmp_path):
  signal = _sine() * 1000.0  # µV
  path = _write_record(tmp_path, "micro", signal, units="uV", gain=1.0)
  record = wfdb_io.read_wfdb(path)
  assert record.unit == "mV"
  np.testing.assert_allclose(record.signal, (signal / 1000.0).T, atol=2e-3)


def test_mat_signal_file(tmp_path):
  """PhysioNet 2021 layout: header lines name a .mat file holding int16 `val`."""
  val = (np.arange(12)[:, None] * 100 + np.zeros((1, 500))).astype(np.int16)
  scipy.io.savemat(tmp_path / "A0001.mat", {"val": val})
  lines = ["A0001 12 500 500"] + [
      f"A0001.mat 16+24 1000/mV 16 0 0 0 0 {lead}" for lead in wfdb_io.STANDARD_LEADS]
  (tmp_path / "A0001.hea").write_text("\n".join(lines + ["# Dx: 426783006"]) + "\n")
  record = wfdb_io.read_wfdb(str(tmp_path / "A0001"), expected_rate=500)
  assert record.signal.shape == (12, 500)
  np.testing.assert_allclose(record.signal[:, 0], np.arange(12) * 0.1, atol=1e-6)


@pytest.mark.parametrize("corruption, reason", [
    ("truncated_dat", "truncated signal file"),
    ("missing_hea", "missing header file"),
    ("missing_dat", "record file missing"),
])
def test_broken_files(ptbxl_dir, tmp_path, corruption, reason):
  path = _copy_record(str(ptbxl_dir), RAW_RECORD, str(tmp_path))
  if corruption == "truncated_dat":
    with open(path + ".dat", "r+b") as f:
      f.truncate(os.path.getsize(path + ".dat") // 2)
  elif corruption == "missing_hea":
    os.remove(path + ".hea")
  else:
    os.remove(path + ".dat")
  with pytest.raises(wfdb_io.RecordError, match=reason):
    wfdb_io.read_wfdb(path)


def test_nan_records(tmp_path):
  signal = np.full((1000, 12), np.nan)
  with pytest.raises(wfdb_io.RecordError, match="all-NaN"):
    wfdb_io.read_wfdb(_write_record(tmp_path, "nan", signal))
  signal = _sine()
  signal[:800] = np.nan
  with pytest.raises(wfdb_io.RecordError, match="mostly-NaN"):
    wfdb_io.read_wfdb(_write_record(tmp_path, "mostly_nan", signal))
  signal = _sine()
  signal[:10, 3] = np.nan  # a few gaps are left to preprocessing
  record = wfdb_io.read_wfdb(_write_record(tmp_path, "few_nan", signal))
  assert np.isnan(record.signal).sum() == 10


def test_wrong_lead_count(tmp_path):
  path = _write_record(tmp_path, "eleven", _sine(leads=11), names=wfdb_io.STANDARD_LEADS[:11])
  with pytest.raises(wfdb_io.RecordError, match="wrong lead count"):
    wfdb_io.read_wfdb(path)


def test_unexpected_sampling_rate(tmp_path):
  path = _write_record(tmp_path, "rate", _sine(), fs=250)
  assert wfdb_io.read_wfdb(path, expected_rate=250).sample_rate == 250
  with pytest.raises(wfdb_io.RecordError, match="unexpected sampling rate: 250"):
    wfdb_io.read_wfdb(path, expected_rate=100)


def test_validate_signal():
  good = np.zeros((12, 100), np.float32)
  wfdb_io.validate_signal(good, 100, expected_rate=100)
  bad = good.copy()
  bad[0, 0] = np.inf
  with pytest.raises(wfdb_io.RecordError, match="non-finite"):
    wfdb_io.validate_signal(bad, 100)
  with pytest.raises(wfdb_io.RecordError, match="wrong lead count"):
    wfdb_io.validate_signal(good[:8], 100)
  with pytest.raises(wfdb_io.RecordError, match="sampling rate"):
    wfdb_io.validate_signal(good, 0)
  with pytest.raises(wfdb_io.RecordError, match="empty"):
    wfdb_io.validate_signal(good[:, :0], 100)
