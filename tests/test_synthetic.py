"""Tests of the synthetic ECG-report data: the model's physiology, the PTB-XL layout it writes,
and the `synthetic_ecg` TFDS builder that reads it with the PTB-XL code path."""

import ast
import os
import time

import numpy as np
import pandas as pd
import pytest
import scipy.signal
import scipy.stats

from merit_jax.data import ptbxl_records
from merit_jax.data import ptbxl_tables
from merit_jax.data import skips
from merit_jax.data import synthetic
from merit_jax.data import synthetic_model
from merit_jax.data import synthetic_records

LEADS = synthetic_model.LEADS
LEAD = {name: i for i, name in enumerate(LEADS)}
NUM_CLASSIFIER_RECORDS = 1000


# --------------------------------------------------------------------------- measurement helpers


def detect_r_peaks(signal: np.ndarray, sample_rate: int) -> np.ndarray:
  """R-peak sample indices: peaks of the squared slope summed over the 8 independent leads.

  Squaring favours the steep QRS over tall but slow T waves; candidates below 40 % of the
  90th-percentile candidate are dropped (T waves, noise).
  """
  independent = signal[[0, 1, 6, 7, 8, 9, 10, 11]]
  energy = (np.diff(independent, axis=1) ** 2).sum(axis=0)
  energy = np.convolve(energy, np.ones(max(1, sample_rate // 50)), mode="same")
  peaks, _ = scipy.signal.find_peaks(energy, distance=int(0.3 * sample_rate))
  heights = energy[peaks]
  return peaks[heights > 0.4 * np.percentile(heights, 90)]


def heart_rate_and_rr_cv(signal: np.ndarray, sample_rate: int):
  rr = np.diff(detect_r_peaks(signal, sample_rate)) / sample_rate
  return 60.0 / rr.mean(), rr.std() / rr.mean()


def average_beat(signal: np.ndarray, sample_rate: int, r_peaks_s: np.ndarray,
                 before_s: float = 0.3, after_s: float = 0.5) -> np.ndarray:
  """Mean beat (leads, window) around the given R peaks (edge beats dropped)."""
  lo, hi = int(before_s * sample_rate), int(after_s * sample_rate)
  centres = np.round(np.asarray(r_peaks_s) * sample_rate).astype(int)
  centres = centres[(centres - lo >= 0) & (centres + hi <= signal.shape[1])]
  return np.mean([signal[:, c - lo:c + hi] for c in centres], axis=0)


def beat_measures(beat: np.ndarray, sample_rate: int, rr_s: float,
                  before_s: float = 0.3) -> dict:
  """ST level 70-90 ms after R, T-wave extreme, QRS amplitudes; PR segment = 0 mV."""
  r = int(before_s * sample_rate)
  at = lambda s: r + int(round(s * sample_rate))  # noqa: E731
  baseline = beat[:, at(-0.07):at(-0.05) + 1].mean(axis=1, keepdims=True)
  beat = beat - baseline
  st = beat[:, at(0.07):at(0.09) + 1].mean(axis=1)
  # T wave: up to 0.42 s after R, but before the next beat's P wave.
  t_window = beat[:, at(0.15):at(max(0.26, min(0.42, rr_s - 0.25)))]
  t_wave = np.where(np.abs(t_window.max(1)) >= np.abs(t_window.min(1)),
                    t_window.max(1), t_window.min(1))
  qrs = beat[:, at(-0.08):at(0.1)]
  return {"st": st, "t": t_wave, "qrs_max": qrs.max(1), "qrs_min": qrs.min(1),
          "qrs_pp": qrs.max(1) - qrs.min(1)}


def qrs_width_s(beat: np.ndarray, sample_rate: int, before_s: float = 0.3) -> float:
  """Duration over which the spatial velocity of the mean beat exceeds 15 % of its peak."""
  r = int(before_s * sample_rate)
  velocity = np.sqrt((np.diff(beat[[0, 1, 6, 7, 8, 9, 10, 11]], axis=1) ** 2).sum(0))
  window = velocity[r - int(0.12 * sample_rate):r + int(0.14 * sample_rate)]
  above = np.nonzero(window > 0.15 * window.max())[0]
  return (above[-1] - above[0]) / sample_rate


def macro_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Mean over classes with both outcomes of the rank-based (Mann-Whitney) AUROC."""
  aucs = []
  for k in range(labels.shape[1]):
    y = labels[:, k].astype(bool)
    if y.all() or not y.any():
      continue
    ranks = scipy.stats.rankdata(scores[:, k])
    aucs.append((ranks[y].sum() - y.sum() * (y.sum() + 1) / 2) / (y.sum() * (~y).sum()))
  return float(np.mean(aucs))


def hand_features(signal: np.ndarray, sample_rate: int) -> np.ndarray:
  """Rate, RR irregularity and the downsampled mean beat of every lead (no ground truth)."""
  peaks = detect_r_peaks(signal, sample_rate)
  hr, cv = heart_rate_and_rr_cv(signal, sample_rate)
  beat = average_beat(signal, sample_rate, peaks / sample_rate, 0.25, 0.45)
  beat = beat - beat[:, :3].mean(axis=1, keepdims=True)
  return np.concatenate([[hr / 100.0, cv * 10.0], beat[:, ::2].ravel()])


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 500):
  """One-vs-rest logistic regression by full-batch gradient descent (numpy only)."""
  w = np.zeros((x.shape[1], y.shape[1]))
  b = np.zeros(y.shape[1])
  lr = 0.5
  for _ in range(steps):
    p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
    grad = p - y
    w -= lr * (x.T @ grad / len(x) + l2 * w)
    b -= lr * grad.mean(axis=0)
  return w, b


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def records():
  """1,000 records at 100 Hz in memory, with their metadata and folds."""
  signals, metadata = synthetic_records.generate_records(range(NUM_CLASSIFIER_RECORDS), seed=0)
  folds = synthetic.assign_folds([m["scp_codes"] for m in metadata], seed=0)
  return signals, metadata, folds


def _with_code(metadata, code):
  return [i for i, m in enumerate(metadata) if code in m["scp_codes"]]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
  """A small PTB-XL layout at both rates."""
  out = tmp_path_factory.mktemp("synthetic") / "layout"
  summary = synthetic.generate_ptbxl_layout(out, num_records=24, seed=3,
                                            sample_rates=(100, 500))
  return out, summary


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_records_and_different_seed_differs():
  a, meta_a = synthetic_records.generate_records(range(6), seed=5)
  b, meta_b = synthetic_records.generate_records(range(6), seed=5)
  c, meta_c = synthetic_records.generate_records(range(6), seed=6)
  np.testing.assert_array_equal(a, b)
  assert [m["report"] for m in meta_a] == [m["report"] for m in meta_b]
  assert [m["scp_codes"] for m in meta_a] == [m["scp_codes"] for m in meta_b]
  assert not np.allclose(a, c)
  assert [m["report"] for m in meta_a] != [m["report"] for m in meta_c]


def test_any_record_regenerates_alone_at_each_rate():
  for rate in (100, 500):
    batch, meta = synthetic_records.generate_records(range(5), seed=2, sample_rate=rate)
    alone, meta_alone = synthetic_records.generate_record(3, seed=2, sample_rate=rate)
    np.testing.assert_array_equal(alone, batch[3])
    assert meta_alone["report"] == meta[3]["report"]
    assert alone.shape == (12, 10 * rate)


def test_100hz_and_500hz_show_the_same_heart():
  low, _ = synthetic_records.generate_record(1, seed=0, sample_rate=100)
  high, _ = synthetic_records.generate_record(1, seed=0, sample_rate=500)
  # Up to white noise (a few tens of uV), the 500 Hz record decimated is the 100 Hz one.
  decimated = high.reshape(12, 1000, 5).mean(axis=2)
  assert np.corrcoef(low.ravel(), decimated.ravel())[0, 1] > 0.95


def test_limb_leads_obey_einthoven_and_goldberger(records):
  signals = records[0][:50].astype(np.float64)
  lead_i, lead_ii = signals[:, 0], signals[:, 1]
  np.testing.assert_allclose(signals[:, 2], lead_ii - lead_i, atol=1e-5)
  np.testing.assert_allclose(signals[:, 3], -(lead_i + lead_ii) / 2, atol=1e-5)
  np.testing.assert_allclose(signals[:, 4], lead_i - lead_ii / 2, atol=1e-5)
  np.testing.assert_allclose(signals[:, 5], lead_ii - lead_i / 2, atol=1e-5)


def test_amplitudes_are_physiological(records):
  signals = records[0]
  assert np.isfinite(signals).all()
  peak_to_peak = np.percentile(signals, 99.5, axis=2) - np.percentile(signals, 0.5, axis=2)
  median = np.median(peak_to_peak, axis=0)
  # Real PTB-XL NORM records: 0.5-2 mV per lead; nothing near the 16-bit range.
  assert (median > 0.25).all() and (median < 3.0).all(), median
  assert np.abs(signals).max() < 15.0


# --------------------------------------------------------------------------- physiology


def test_rates_match_rhythm_labels(records):
  signals, metadata, _ = records
  rates = {}
  for code in ("SBRAD", "SR", "STACH"):
    rates[code] = np.array([heart_rate_and_rr_cv(signals[i], 100)[0]
                            for i in _with_code(metadata, code)])
  assert (rates["SBRAD"] < 60).all(), rates["SBRAD"].max()
  assert (rates["STACH"] > 100).all(), rates["STACH"].min()
  assert ((rates["SR"] > 55) & (rates["SR"] < 102)).all()


def test_atrial_fibrillation_is_irregular_without_p_waves(records):
  signals, metadata, _ = records
  cv = {code: np.array([heart_rate_and_rr_cv(signals[i], 100)[1]
                        for i in _with_code(metadata, code)]) for code in ("AFIB", "SR")}
  assert np.median(cv["AFIB"]) > 0.12 and np.mean(cv["AFIB"] > 0.07) > 0.95
  assert np.median(cv["SR"]) < 0.04
  # P waves: lead II bump 0.12-0.2 s before R, present in sinus rhythm only.
  def p_wave(i):
    beat = average_beat(signals[i], 100, metadata[i]["r_peaks_s"])
    return beat[1, 30 - 20:30 - 12].max() - beat[1, 30 - 30:30 - 24].mean()
  p_afib = np.median([p_wave(i) for i in _with_code(metadata, "AFIB")[:40]])
  p_norm = np.median([p_wave(i) for i in _with_code(metadata, "NORM")[:40]])
  assert p_norm > 0.05 and p_afib < 0.5 * p_norm, (p_norm, p_afib)


def _findings_beats(findings, n=6, rate=500, seed=0):
  params = [synthetic_model.sample_params(np.random.default_rng((seed, i)), findings)
            for i in range(n)]
  signals = synthetic_model.render(params, rate, 10 * rate,
                                   [np.random.default_rng((seed, i, 9)) for i in range(n)])
  return [average_beat(s, rate, p.r_times[(p.r_times > 0.5) & (p.r_times < 9.3)])
          for s, p in zip(signals, params)]


def test_bundle_branch_blocks_widen_qrs_with_their_morphology():
  F = synthetic_model.Findings  # noqa: N806
  width = {name: np.median([qrs_width_s(b, 500) for b in _findings_beats(f)])
           for name, f in (("normal", F()), ("CLBBB", F(conduction="CLBBB")),
                           ("CRBBB", F(conduction="CRBBB")))}
  assert width["normal"] < 0.11, width
  assert width["CLBBB"] > width["normal"] + 0.03 and width["CLBBB"] >= 0.12, width
  assert width["CRBBB"] > width["normal"] + 0.03 and width["CRBBB"] >= 0.12, width
  r = int(0.3 * 500)
  for beat in _findings_beats(F(conduction="CRBBB")):
    # RBBB: terminal R' in V1, terminal (late) S in lead I.
    late = slice(r + int(0.05 * 500), r + int(0.1 * 500))
    assert beat[LEAD["V1"], late].max() > 0.2
    assert beat[LEAD["I"], late].min() < -0.05
  for beat in _findings_beats(F(conduction="CLBBB")):
    # LBBB: deep QS in V1, broad notched R in V6 (two maxima with a dip between).
    qrs = slice(r - int(0.07 * 500), r + int(0.07 * 500))
    assert beat[LEAD["V1"], qrs].min() < -0.5 and beat[LEAD["V1"], qrs].max() < 0.15
    v6 = scipy.signal.savgol_filter(beat[LEAD["V6"], qrs], 9, 2)
    peaks, _ = scipy.signal.find_peaks(v6, prominence=0.02)
    assert len(peaks) >= 2, "no notch in V6"


def test_form_statements_show_in_the_signal(records):
  signals, metadata, _ = records

  def measures(code, limit=60, exclude=()):
    chosen = [i for i in _with_code(metadata, code)
              if not any(c in metadata[i]["scp_codes"] for c in exclude)]
    out = []
    for i in chosen[:limit]:
      r_peaks = metadata[i]["r_peaks_s"]
      out.append(beat_measures(average_beat(signals[i], 100, r_peaks), 100,
                               rr_s=np.median(np.diff(r_peaks))))
    return {k: np.stack([m[k] for m in out]) for k in out[0]}

  norm = measures("NORM")
  chest_and_inferior = [LEAD[n] for n in ("II", "aVF", "V1", "V2", "V3", "V4", "V5")]
  ste = measures("STE_")
  assert np.median(ste["st"][:, chest_and_inferior].max(1)) > 0.1
  assert np.median(norm["st"][:, chest_and_inferior].max(1)) < 0.06
  lateral = [LEAD[n] for n in ("I", "II", "V4", "V5", "V6")]
  std = measures("STD_")
  assert np.median(std["st"][:, lateral].min(1)) < -0.07
  assert np.median(norm["st"][:, lateral].min(1)) > -0.03
  t_leads = [LEAD[n] for n in ("I", "II", "aVF", "V4", "V5", "V6")]
  invt = measures("INVT", exclude=("LVOLT",))   # low voltage shrinks T waves too
  assert np.mean(invt["t"][:, t_leads].min(1) < -0.08) > 0.9
  assert np.mean(norm["t"][:, t_leads].min(1) < -0.08) < 0.1
  limb = [LEAD[n] for n in ("I", "II", "III", "aVR", "aVL", "aVF")]
  lvolt = measures("LVOLT")
  assert np.median(lvolt["qrs_pp"][:, limb].max(1)) < 0.5
  assert np.median(lvolt["qrs_pp"][:, limb].max(1)) < 0.5 * np.median(
      norm["qrs_pp"][:, limb].max(1))
  # LVH: Sokolow-Lyon index S(V1) + R(V5 or V6) > 3.5 mV.
  lvh = measures("LVH")
  def sokolow(m):
    return -m["qrs_min"][:, LEAD["V1"]] + m["qrs_max"][:, [LEAD["V5"], LEAD["V6"]]].max(1)
  assert np.median(sokolow(lvh)) > 3.5 and np.median(sokolow(norm)) < 3.0
  # Pathological Q waves: deeper Q before R in the leads facing the infarct.
  qwave = measures("QWAVE")
  assert np.median(qwave["qrs_min"][:, [LEAD["III"], LEAD["V1"], LEAD["V2"]]].min(1)) < (
      np.median(norm["qrs_min"][:, [LEAD["III"], LEAD["V1"], LEAD["V2"]]].min(1)))


def test_simple_classifier_separates_the_classes(records):
  signals, metadata, folds = records
  x = np.stack([hand_features(s, 100) for s in signals])
  names = sorted(synthetic_records.SCP_STATEMENTS)
  y = np.array([[code in m["scp_codes"] for code in names] for m in metadata], np.float64)
  train, test = folds <= 8, folds == 10
  mean, std = x[train].mean(0), x[train].std(0) + 1e-6
  x = (x - mean) / std
  w, b = fit_logistic(x[train], y[train])
  auroc = macro_auroc(y[test], x[test] @ w + b)
  print(f"\nsynthetic_ecg mean-beat logistic regression, fold 10 macro AUROC over "
        f"{len(names)} codes: {auroc:.3f}")
  assert auroc > 0.85       # measured 0.97 (seed 0, 1,000 records)


# --------------------------------------------------------------------------- reports, labels


def test_reports_vary_and_follow_labels(records):
  _, metadata, _ = records
  reports = [m["report"] for m in metadata]
  assert len(set(reports)) > 0.5 * len(reports)
  keywords = {"AFIB": ("fibrillation", "afib"), "CLBBB": ("left bundle", "lbbb"),
              "CRBBB": ("right bundle", "rbbb"), "SBRAD": ("brady", "slow sinus"),
              "STACH": ("tachy", "fast sinus"), "LVOLT": ("low",)}
  for code, words in keywords.items():
    for i in _with_code(metadata, code):
      assert any(w in reports[i].lower() for w in words), (code, reports[i])
  norm = [reports[i].lower() for i in _with_code(metadata, "NORM")]
  assert all("normal" in r or "no abnormality" in r for r in norm)
  assert all(r.isascii() and r.strip() == r and r for r in reports)


def test_statements_define_ptbxl_tasks():
  names = ptbxl_tables.ptbxl_label_names(synthetic_records.statements_table())
  assert names["superdiagnostic"] == ["CD", "HYP", "MI", "NORM", "STTC"]
  assert names["rhythm"] == ["AFIB", "SARRH", "SBRAD", "SR", "STACH"]
  assert set(names["form"]) >= {"STE_", "STD_", "INVT", "LVOLT"}
  assert {"NORM", "CLBBB", "CRBBB", "LVH"} <= set(names["diagnostic"])
  assert names["all"] == sorted(synthetic_records.SCP_STATEMENTS)


def test_codes_are_consistent(records):
  _, metadata, folds = records
  for m in metadata:
    codes = m["scp_codes"]
    rhythms = [c for c in codes if c in synthetic_model.RHYTHMS]
    assert len(rhythms) == 1
    assert ("NORM" in codes) == (not any(
        c in codes for c in ("CLBBB", "CRBBB", "LAFB", "1AVB", "LVH", "IMI", "ASMI", "ISC_",
                             "NDT", "NST_", "AFIB")))
  counts = np.bincount(folds, minlength=11)[1:]
  assert counts.max() - counts.min() <= 1
  # Every code is common enough for the benchmark splits.
  for code in synthetic_records.SCP_STATEMENTS:
    assert len(_with_code(metadata, code)) >= 30, code


# --------------------------------------------------------------------------- PTB-XL layout


def test_layout_files_read_back_with_wfdb(layout):
  import wfdb  # pylint: disable=g-import-not-at-top
  out, summary = layout
  assert summary["num_records"] == 24 and summary["sample_rates"] == [100, 500]
  database = pd.read_csv(out / ptbxl_tables.DATABASE_CSV, index_col="ecg_id")
  assert list(database.index) == list(range(1, 25))
  for ecg_id in (1, 17):
    for rate, column in ((100, "filename_lr"), (500, "filename_hr")):
      signal, fields = wfdb.rdsamp(str(out / database.at[ecg_id, column]))
      expected, meta = synthetic_records.generate_record(ecg_id - 1, seed=3, sample_rate=rate)
      assert fields["fs"] == rate and fields["units"] == ["mV"] * 12
      assert [n.lower() for n in fields["sig_name"]] == [n.lower() for n in LEADS]
      np.testing.assert_allclose(signal.T, expected, atol=0.5e-3 + 1e-6)
      assert database.at[ecg_id, "report"] == meta["report"]
      assert ast.literal_eval(database.at[ecg_id, "scp_codes"]) == meta["scp_codes"]
  record = wfdb.rdrecord(str(out / database.at[5, "filename_lr"]))   # checksums valid
  assert record.sig_len == 1000


def test_direct_wfdb_writer_matches_wrsamp_byte_for_byte(tmp_path):
  import wfdb  # pylint: disable=g-import-not-at-top
  signal, _ = synthetic_records.generate_record(0, seed=0)
  synthetic.write_wfdb_record(str(tmp_path / "rec"), signal, 100)
  digital = np.round(signal.T.astype(np.float64) * 1000).astype(np.int16)
  (tmp_path / "ref").mkdir()
  wfdb.wrsamp("rec", fs=100, units=["mV"] * 12, sig_name=list(synthetic.HEADER_LEAD_NAMES),
              d_signal=digital, fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12,
              write_dir=str(tmp_path / "ref"))
  assert (tmp_path / "rec.dat").read_bytes() == (tmp_path / "ref" / "rec.dat").read_bytes()
  assert (tmp_path / "rec.hea").read_text() == (tmp_path / "ref" / "rec.hea").read_text()


def test_layout_is_read_by_the_ptbxl_reader(layout):
  out, _ = layout
  tables = ptbxl_tables.PtbxlTables.load(out)
  log = skips.SkipLog()
  examples = dict(ptbxl_records.generate_examples(out, "train", 500, log, tables))
  assert len(log) == 0 and examples
  ecg_id, example = next(iter(examples.items()))
  assert example["unit"] == "mV" and example["signal"].shape == (12, 5000)
  expected, meta = synthetic_records.generate_record(ecg_id - 1, seed=3, sample_rate=500)
  np.testing.assert_allclose(example["signal"].astype(np.float32), expected, atol=5e-3,
                             rtol=2e-3)
  codes = set(meta["scp_codes"])
  names = tables.encoder.label_names["all"]
  assert {n for n, v in zip(names, example["labels"]["all"]) if v} == codes


def test_layout_reuse_conflict_and_atomicity(layout, tmp_path, monkeypatch):
  out, _ = layout
  again = synthetic.generate_ptbxl_layout(out, num_records=24, seed=3, sample_rates=(500, 100))
  assert again["seconds"] == 0.0
  with pytest.raises(FileExistsError, match="different synthetic generation"):
    synthetic.generate_ptbxl_layout(out, num_records=25, seed=3, sample_rates=(100, 500))
  with pytest.raises(ValueError, match="num_records"):
    synthetic.generate_ptbxl_layout(tmp_path / "x", num_records=0, seed=0)
  with pytest.raises(ValueError, match="sample rate"):
    synthetic.generate_ptbxl_layout(tmp_path / "x", num_records=2, seed=0, sample_rates=(250,))

  calls = []
  real_write = synthetic.write_wfdb_record

  def failing_write(*args):
    calls.append(1)
    if len(calls) > 3:
      raise KeyboardInterrupt("simulated interruption")
    real_write(*args)

  monkeypatch.setattr(synthetic, "write_wfdb_record", failing_write)
  target = tmp_path / "interrupted"
  with pytest.raises(KeyboardInterrupt):
    synthetic.generate_ptbxl_layout(target, num_records=8, seed=0)
  assert not target.exists() and os.listdir(tmp_path) == []


def test_a_prefix_of_a_larger_generation_is_the_same_data(tmp_path):
  small = synthetic.generate_ptbxl_layout(tmp_path / "a", num_records=5, seed=1)
  large = synthetic.generate_ptbxl_layout(tmp_path / "b", num_records=9, seed=1)
  db_small = pd.read_csv(os.path.join(small["out_dir"], ptbxl_tables.DATABASE_CSV))
  db_large = pd.read_csv(os.path.join(large["out_dir"], ptbxl_tables.DATABASE_CSV))
  pd.testing.assert_series_equal(db_small.report, db_large.report[:5])
  a = open(tmp_path / "a/records100/00000/00004_lr.dat", "rb").read()
  b = open(tmp_path / "b/records100/00000/00004_lr.dat", "rb").read()
  assert a == b


# --------------------------------------------------------------------------- TFDS builder


def test_builder_configs_resolve():
  resolve = synthetic.SyntheticEcg._resolve_config  # pylint: disable=protected-access
  assert resolve(None, None, None) == "default"
  assert resolve(None, 2000, 0) == "default"
  assert resolve("500hz", None, None) == "500hz"
  custom = resolve(None, 64, 3)
  assert custom.name == "n64_s3" and custom.num_records == 64 and custom.sample_rate == 100
  parsed = resolve("n64_s3_500hz", None, None)
  assert (parsed.num_records, parsed.seed, parsed.sample_rate) == (64, 3, 500)
  assert resolve("500hz", 10, None).name == "n10_s0_500hz"
  with pytest.raises(ValueError, match="unknown config"):
    resolve("200hz", None, None)
  with pytest.raises(ValueError, match="num_records"):
    resolve(None, -1, None)


def test_builder_builds_through_the_build_cli_api(tmp_path):
  from merit_jax.data import build  # pylint: disable=g-import-not-at-top
  builder = build.build("synthetic_ecg", manual_dir=str(tmp_path / "manual"),
                        data_dir=str(tmp_path / "tfds"), num_records=30, seed=4,
                        tokenizer_vocab_size=None)
  assert builder.builder_config.name == "n30_s4"
  sizes = {split: info.num_examples for split, info in builder.info.splits.items()}
  assert sum(sizes.values()) == 30 and sizes["test"] == 3
  assert (tmp_path / "manual" / "n30_s4" / synthetic.MANIFEST).exists()
  label_names = builder.info.metadata["label_names"]
  assert label_names["superdiagnostic"] == ["CD", "HYP", "MI", "NORM", "STTC"]
  source = builder.as_data_source()["test"]
  example = source[0]
  expected, meta = synthetic_records.generate_record(int(example["ecg_id"]) - 1, seed=4)
  assert example["signal"].dtype == np.float16 and example["fold"] == 10
  np.testing.assert_allclose(example["signal"].astype(np.float32), expected, atol=2e-3,
                             rtol=2e-3)
  report = example["report"]
  assert (report.decode() if isinstance(report, bytes) else report) == meta["report"]
  # Later readers find the built dataset by config name (custom names parse back).
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  again = tfds.builder("synthetic_ecg", config="n30_s4", data_dir=str(tmp_path / "tfds"))
  assert again.info.splits["train"].num_examples == sizes["train"]
  assert again.info.metadata["label_names"] == label_names


@pytest.mark.slow
def test_default_size_builds_in_under_two_minutes(tmp_path):
  """'Done when': 2,000 records generate + build in < 2 min on 2 cores (prints timings)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  start = time.time()
  summary = synthetic.generate_ptbxl_layout(tmp_path / "manual" / "default", 2000, 0)
  generation = time.time() - start
  builder = synthetic.SyntheticEcg(data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
  total = time.time() - start
  print(f"\nsynthetic_ecg default (2,000 records, 100 Hz): generation {generation:.1f} s "
        f"({generation / 2000 * 1e3:.2f} ms/record), generation + TFDS build {total:.1f} s")
  assert summary["num_records"] == 2000
  assert sum(s.num_examples for s in builder.info.splits.values()) == 2000
  assert total < 120.0
