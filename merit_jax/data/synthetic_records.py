"""One synthetic ECG record: findings, PTB-XL SCP codes, an English report and the signal.

Each record draws findings (a rhythm, and optionally a conduction defect, a structural change,
a repolarisation change, low voltage), renders 12 leads from the dipole model of
`synthetic_model`, and derives PTB-XL SCP codes and a report with varied phrasing from the
findings. Everything about record `i` comes from generators seeded with `(seed, i, stream)`, so
any record can be regenerated alone. `synthetic` writes records in the PTB-XL layout and holds
the TFDS builder.
"""

from typing import Sequence

import numpy as np
import pandas as pd

from merit_jax.data import ptbxl_tables
from merit_jax.data import synthetic_model

RECORD_SECONDS = ptbxl_tables.RECORD_SECONDS
SAMPLE_RATES = (100, 500)
# Generator streams of one record: (seed, index, stream).
_FINDINGS_STREAM, _PHYSIOLOGY_STREAM, _REPORT_STREAM, _DEMOGRAPHY_STREAM, _NOISE_STREAM = range(5)
# Records rendered at once per sampling rate (bounds memory to a few hundred MB).
CHUNK_RECORDS = {100: 128, 500: 24}

# Our scp_statements.csv: code -> (description, diagnostic, form, rhythm, class, subclass).
# Categories follow PTB-XL's scp_statements.csv, so the PTB-XL label tasks derive from it.
SCP_STATEMENTS = {
    "NORM": ("normal ECG", 1, 0, 0, "NORM", "NORM"),
    "IMI": ("inferior myocardial infarction", 1, 0, 0, "MI", "IMI"),
    "ASMI": ("anteroseptal myocardial infarction", 1, 0, 0, "MI", "AMI"),
    "LVH": ("left ventricular hypertrophy", 1, 0, 0, "HYP", "LVH"),
    "LAFB": ("left anterior fascicular block", 1, 0, 0, "CD", "LAFB/LPFB"),
    "1AVB": ("first degree AV block", 1, 0, 0, "CD", "_AVB"),
    "CLBBB": ("complete left bundle branch block", 1, 0, 0, "CD", "CLBBB"),
    "CRBBB": ("complete right bundle branch block", 1, 0, 0, "CD", "CRBBB"),
    "ISC_": ("non-specific ischaemic ST depression", 1, 0, 0, "STTC", "ISC_"),
    "NDT": ("non-diagnostic T abnormalities", 1, 1, 0, "STTC", "STTC"),
    "NST_": ("non-specific ST changes", 1, 1, 0, "STTC", "NST_"),
    "STE_": ("non-specific ST elevation", 0, 1, 0, None, None),
    "STD_": ("non-specific ST depression", 0, 1, 0, None, None),
    "INVT": ("inverted T waves", 0, 1, 0, None, None),
    "QWAVE": ("pathological Q waves", 0, 1, 0, None, None),
    "LVOLT": ("low QRS voltage", 0, 1, 0, None, None),
    "SR": ("sinus rhythm", 0, 0, 1, None, None),
    "SBRAD": ("sinus bradycardia", 0, 0, 1, None, None),
    "STACH": ("sinus tachycardia", 0, 0, 1, None, None),
    "SARRH": ("sinus arrhythmia", 0, 0, 1, None, None),
    "AFIB": ("atrial fibrillation", 0, 0, 1, None, None),
}

# Finding probabilities (each slot drawn independently; conflicts resolved in sample_findings).
_RHYTHM_P = {"SR": 0.56, "SBRAD": 0.12, "STACH": 0.12, "SARRH": 0.07, "AFIB": 0.13}
_CONDUCTION_P = {None: 0.70, "CLBBB": 0.08, "CRBBB": 0.09, "LAFB": 0.07, "1AVB": 0.06}
_STRUCTURE_P = {None: 0.70, "LVH": 0.11, "IMI": 0.10, "ASMI": 0.09}
_REPOLARISATION_P = {None: 0.72, "ISC_": 0.10, "NDT": 0.10, "NST_": 0.08}
_LOW_VOLTAGE_P = 0.1


def statements_table() -> pd.DataFrame:
  """Our scp_statements.csv as a DataFrame (index = SCP code, PTB-XL's columns)."""
  rows = []
  for code, (description, diagnostic, form, rhythm, cls, subclass) in SCP_STATEMENTS.items():
    rows.append({"": code, "description": description,
                 "diagnostic": 1.0 if diagnostic else np.nan,
                 "form": 1.0 if form else np.nan,
                 "rhythm": 1.0 if rhythm else np.nan,
                 "diagnostic_class": cls, "diagnostic_subclass": subclass})
  return pd.DataFrame(rows).set_index("")


def label_sizes() -> dict:
  """Task -> number of labels that our scp_statements.csv defines."""
  return {task: len(names) for task, names in ptbxl_tables.ptbxl_label_names(
      statements_table()).items()}


# --------------------------------------------------------------------------- findings, codes


def _choice(rng: np.random.Generator, probabilities: dict):
  keys = list(probabilities)
  return keys[rng.choice(len(keys), p=np.asarray(list(probabilities.values())))]


def sample_findings(rng: np.random.Generator) -> synthetic_model.Findings:
  """Draws the findings of one record (always the same number of draws, for stability)."""
  rhythm = _choice(rng, _RHYTHM_P)
  conduction = _choice(rng, _CONDUCTION_P)
  structure = _choice(rng, _STRUCTURE_P)
  repolarisation = _choice(rng, _REPOLARISATION_P)
  low_voltage, strain, inferior_t, acute = rng.random(4)
  if conduction == "1AVB" and rhythm == "AFIB":
    conduction = None      # no P waves, so no PR interval to prolong
  return synthetic_model.Findings(
      rhythm=rhythm, conduction=conduction, structure=structure,
      repolarisation=repolarisation,
      low_voltage=bool(structure != "LVH" and low_voltage < _LOW_VOLTAGE_P),
      lvh_strain=bool(structure == "LVH" and strain < 0.5),
      inferior_t_inversion=bool(structure == "IMI" and inferior_t < 0.6),
      acute_st_elevation=bool(structure == "ASMI" and acute < 0.6))


def scp_codes(findings: synthetic_model.Findings, rng: np.random.Generator) -> dict:
  """PTB-XL `scp_codes`: diagnostic statements with a likelihood, form/rhythm with 0."""
  f = findings
  diagnostic = [c for c in (f.conduction, f.structure, f.repolarisation) if c]
  if not diagnostic and f.rhythm != "AFIB":
    diagnostic = ["NORM"]
  codes = {}
  for code in diagnostic:
    codes[code] = float(rng.choice([100.0, 100.0, 100.0, 80.0, 50.0]))
  form = []
  if f.acute_st_elevation:
    form.append("STE_")
  if f.repolarisation == "ISC_" or f.lvh_strain:
    form.append("STD_")
  if f.lvh_strain or f.inferior_t_inversion:
    form.append("INVT")
  if f.structure in ("IMI", "ASMI"):
    form.append("QWAVE")
  if f.low_voltage:
    form.append("LVOLT")
  for code in form:
    codes[code] = 0.0
  codes[f.rhythm] = 0.0
  return codes


# --------------------------------------------------------------------------- reports

_RHYTHM_PHRASES = {
    "SR": ["sinus rhythm", "normal sinus rhythm", "regular sinus rhythm",
           "sinus rhythm at {hr} bpm", "rhythm: sinus, rate {hr}/min"],
    "SBRAD": ["sinus bradycardia", "sinus bradycardia at {hr} bpm",
              "slow sinus rhythm, rate {hr}/min", "bradycardic sinus rhythm"],
    "STACH": ["sinus tachycardia", "sinus tachycardia at {hr} bpm",
              "fast sinus rhythm, rate {hr}/min", "tachycardic sinus rhythm"],
    "SARRH": ["sinus arrhythmia", "sinus rhythm with respiratory variation",
              "sinus arrhythmia, mean rate {hr} bpm", "irregular sinus rhythm (sinus arrhythmia)"],
    "AFIB": ["atrial fibrillation", "atrial fibrillation with {response} ventricular response",
             "irregularly irregular rhythm without p waves, atrial fibrillation",
             "atrial fibrillation, ventricular rate {hr}/min", "afib"],
}
_FINDING_PHRASES = {
    "CLBBB": ["left bundle branch block", "complete left bundle branch block", "lbbb",
              "broad qrs with left bundle branch block morphology"],
    "CRBBB": ["right bundle branch block", "complete right bundle branch block",
              "rbbb with rsr' pattern in v1", "complete rbbb"],
    "LAFB": ["left anterior fascicular block", "left anterior hemiblock",
             "left axis deviation, consistent with left anterior fascicular block"],
    "1AVB": ["first degree av block", "first-degree atrioventricular block",
             "prolonged pr interval (first degree av block)", "av block, first degree"],
    "LVH": ["left ventricular hypertrophy", "lvh by voltage criteria",
            "voltage criteria for left ventricular hypertrophy",
            "signs of left ventricular hypertrophy"],
    "LVH_STRAIN": ["with strain pattern", "with secondary st-t changes",
                   "with lateral st depression and t inversion"],
    "IMI": ["inferior myocardial infarction, age undetermined", "old inferior infarction",
            "inferior infarct, possibly old",
            "q waves in ii, iii, avf consistent with inferior infarction"],
    "IMI_T": ["t wave inversion in inferior leads", "negative t waves in ii, iii and avf",
              "inverted inferior t waves"],
    "ASMI_ACUTE": ["acute anteroseptal myocardial infarction",
                   "anteroseptal infarction with st elevation in v1-v4",
                   "st elevation in v1-v4, consistent with acute anteroseptal infarction"],
    "ASMI": ["anteroseptal infarction, age undetermined", "old anteroseptal infarct",
             "qs complexes in v1-v3 suggesting anteroseptal infarction"],
    "ISC_": ["st depression, consider ischaemia", "diffuse st depression",
             "non-specific ischaemic st depression",
             "st segment depression in i, ii, v4-v6, possibly ischemic"],
    "NDT": ["t wave inversion in lateral leads", "negative t waves in i, avl, v5, v6",
            "non-diagnostic t wave abnormality", "inverted t waves laterally"],
    "NST_": ["non-specific st elevation", "st elevation in ii, avf and v2-v5, non-specific",
             "mild diffuse st elevation, non-specific", "non-specific st changes"],
    "LVOLT": ["low voltage", "low qrs voltages", "peripheral low voltage",
              "low voltage in limb and chest leads"],
}
_NORMAL_CLOSINGS = ["normal ecg", "normal tracing", "within normal limits",
                    "no abnormality detected"]
_OTHERWISE_NORMAL = ["otherwise normal ecg", "otherwise within normal limits",
                     "otherwise normal"]
_ABNORMAL_CLOSINGS = ["abnormal ecg", "abnormal tracing"]
_SEPARATORS = [". ", "; ", ", ", " - "]


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
  return options[rng.integers(len(options))]


def write_report(findings: synthetic_model.Findings, codes: dict, heart_rate: float,
                 rng: np.random.Generator) -> str:
  """An English report for `findings` with randomly chosen phrasing, order and connectors."""
  f = findings
  hr = int(round(heart_rate))
  rhythm = _pick(rng, _RHYTHM_PHRASES[f.rhythm]).format(
      hr=hr, response="rapid" if hr > 100 else "controlled")
  findings_text = []
  for slot in (f.conduction, f.structure, f.repolarisation):
    if slot == "ASMI" and f.acute_st_elevation:
      slot = "ASMI_ACUTE"
    if slot:
      text = _pick(rng, _FINDING_PHRASES[slot])
      if slot == "LVH" and f.lvh_strain:
        text += " " + _pick(rng, _FINDING_PHRASES["LVH_STRAIN"])
      findings_text.append(text)
  if f.inferior_t_inversion:
    findings_text.append(_pick(rng, _FINDING_PHRASES["IMI_T"]))
  if f.low_voltage:
    findings_text.append(_pick(rng, _FINDING_PHRASES["LVOLT"]))
  rng.shuffle(findings_text)
  parts = [rhythm] + findings_text
  if rng.random() < 0.15:          # rhythm last now and then
    parts = parts[1:] + parts[:1]
  if "NORM" in codes:
    sinus_variant = f.rhythm in ("SBRAD", "STACH", "SARRH") or bool(findings_text)
    parts.append(_pick(rng, _OTHERWISE_NORMAL if sinus_variant else _NORMAL_CLOSINGS))
  elif rng.random() < 0.4:
    parts.append(_pick(rng, _ABNORMAL_CLOSINGS))
  if rng.random() < 0.1:
    parts.append("unconfirmed report")
  separator = _pick(rng, _SEPARATORS)
  if rng.random() < 0.5:           # PTB-XL reports are lower case; half of ours are not
    if separator == ". ":
      parts = [p[0].upper() + p[1:] for p in parts]
    text = separator.join(parts)
    return text[0].upper() + text[1:] + "."
  return separator.join(parts)


# --------------------------------------------------------------------------- records


def _rng(seed: int, index: int, stream: int, *extra) -> np.random.Generator:
  return np.random.default_rng((int(seed), int(index), stream) + tuple(int(e) for e in extra))


def check_seed(seed) -> int:
  """`seed` as an int; raises ValueError unless it is an integer >= 0."""
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"synthetic_ecg: seed must be an integer >= 0, got {seed!r}")
  return int(seed)


def check_rate(sample_rate) -> int:
  """`sample_rate` as an int; raises ValueError unless it is one of SAMPLE_RATES."""
  if sample_rate not in SAMPLE_RATES:
    raise ValueError(f"synthetic_ecg: sample rate {sample_rate!r} Hz not supported; "
                     f"choose from {SAMPLE_RATES}")
  return int(sample_rate)


def _heart_axis_code(axis_deg: float) -> str:
  """PTB-XL `heart_axis` code of a frontal QRS axis."""
  if axis_deg < -45:
    return "ALAD"
  if axis_deg < -30:
    return "LAD"
  if axis_deg > 90:
    return "RAD"
  return "MID"


def record_metadata(index: int, seed: int) -> dict:
  """Everything about record `index` except its signal: findings, codes, report, demographics.

  Returns a dict with 'ecg_id' (index + 1), 'findings', 'scp_codes', 'report', 'age', 'sex',
  'heart_rate_bpm', 'heart_axis', 'r_peaks_s' (R-peak times inside the 10 s window) and
  'params' (the `synthetic_model.RecordParams` to render it).
  """
  seed = check_seed(seed)
  findings = sample_findings(_rng(seed, index, _FINDINGS_STREAM))
  params = synthetic_model.sample_params(_rng(seed, index, _PHYSIOLOGY_STREAM), findings,
                                         duration_s=RECORD_SECONDS)
  report_rng = _rng(seed, index, _REPORT_STREAM)
  codes = scp_codes(findings, report_rng)
  report = write_report(findings, codes, params.heart_rate_bpm, report_rng)
  demo = _rng(seed, index, _DEMOGRAPHY_STREAM)
  abnormal = "NORM" not in codes
  age = float(np.clip(np.round(demo.normal(64.0 if abnormal else 50.0, 15.0)), 18, 95))
  r = params.r_times
  return {
      "ecg_id": int(index) + 1,
      "findings": findings,
      "scp_codes": codes,
      "report": report,
      "age": age,
      "sex": int(demo.random() < 0.48),
      "recording_offset_s": int(demo.integers(0, 5 * 365 * 86400)),
      "heart_rate_bpm": params.heart_rate_bpm,
      "heart_axis": _heart_axis_code(params.qrs_axis_deg),
      "r_peaks_s": r[(r >= 0) & (r < RECORD_SECONDS)],
      "params": params,
  }


def render_records(metadata: Sequence[dict], seed: int, sample_rate: int = 100) -> np.ndarray:
  """Signals float32 (records, 12, samples) in mV for `record_metadata` outputs."""
  seed = check_seed(seed)
  sample_rate = check_rate(sample_rate)
  chunk = CHUNK_RECORDS[sample_rate]
  num_samples = RECORD_SECONDS * sample_rate
  out = np.empty((len(metadata), len(synthetic_model.LEADS), num_samples), np.float32)
  for start in range(0, len(metadata), chunk):
    part = metadata[start:start + chunk]
    out[start:start + len(part)] = synthetic_model.render(
        [m["params"] for m in part], sample_rate, num_samples,
        [_rng(seed, m["ecg_id"] - 1, _NOISE_STREAM, sample_rate) for m in part])
  return out


def generate_records(indices: Sequence[int], seed: int, sample_rate: int = 100):
  """Signals (records, 12, samples) mV and metadata of the records at `indices` (0-based)."""
  metadata = [record_metadata(i, seed) for i in indices]
  return render_records(metadata, seed, sample_rate), metadata


def generate_record(index: int, seed: int, sample_rate: int = 100):
  """One record alone: (signal (12, samples) mV, metadata); identical to its batch version."""
  signals, metadata = generate_records([index], seed, sample_rate)
  return signals[0], metadata[0]
