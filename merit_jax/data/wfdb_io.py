"""Reads one ECG record (WFDB header + `.dat`, or `.mat` signal) into a validated array.

Every builder reads records through `read_wfdb`, so lead order, unit handling and the checks
that decide whether a record is usable are the same for every dataset. Any problem with one
record raises `RecordError(reason)`; builders catch it, log the record as skipped and go on.
"""

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np

# The order every stored and batched signal uses.
STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF",
                  "V1", "V2", "V3", "V4", "V5", "V6")
_LEAD_INDEX = {name.lower(): i for i, name in enumerate(STANDARD_LEADS)}

# Physical units we convert to mV; every other unit (e.g. 'NU' for signals that were
# normalised upstream) is kept as is and recorded in `ECGRecord.unit`.
_TO_MV = {
    "mv": 1.0, "millivolt": 1.0, "millivolts": 1.0,
    "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "microvolt": 1e-3, "microvolts": 1e-3,
    "v": 1e3, "volt": 1e3, "volts": 1e3,
}

# More NaN than this (per record) makes a record unusable; fewer NaN samples are kept and
# left to `preprocess` (which fills them).
MAX_NAN_FRACTION = 0.5


class RecordError(Exception):
  """A record that cannot be used.

  `reason` reads "category: detail" (e.g. "truncated signal file: 00005_lr.dat: ..."); the
  skip summary counts records per category.
  """

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


@dataclasses.dataclass
class ECGRecord:
  """One decoded record, leads in `STANDARD_LEADS` order."""
  signal: np.ndarray          # float32 (leads, samples), physical unit `unit`
  sample_rate: int
  unit: str                   # 'mV' after conversion, or the header unit (e.g. 'NU')
  lead_names: tuple           # names of the rows of `signal` (== STANDARD_LEADS)
  record_name: str


def _canonical_lead(name: str) -> str:
  return name.strip().lower()


def reorder_leads(signal: np.ndarray, names: Sequence[str]) -> np.ndarray:
  """Returns `signal` (leads, samples) with rows in `STANDARD_LEADS` order.

  Lead names are matched case-insensitively ('AVR' == 'aVR'). Leads that are not one of the
  twelve standard leads are dropped.

  Raises:
    RecordError: when the number of names and rows differ, a standard lead is missing or
      a lead appears twice.
  """
  signal = np.asarray(signal)
  if signal.ndim != 2 or signal.shape[0] != len(names):
    raise RecordError(
        f"wrong lead count: signal shape {signal.shape} but {len(names)} lead names")
  rows = {}
  for row, name in enumerate(names):
    key = _canonical_lead(name)
    if key not in _LEAD_INDEX:
      continue
    if key in rows:
      raise RecordError(f"duplicate lead: {name!r}")
    rows[key] = row
  missing = [lead for lead in STANDARD_LEADS if lead.lower() not in rows]
  if missing:
    raise RecordError(
        f"wrong lead count: {len(names)} leads {list(names)}, missing {missing}")
  order = [rows[lead.lower()] for lead in STANDARD_LEADS]
  return signal[order]


def validate_signal(signal: np.ndarray, sample_rate, expected_rate=None) -> None:
  """Checks a (leads, samples) signal and its sampling rate.

  Raises:
    RecordError: wrong shape, unexpected sampling rate, infinite values, or a signal that is
      all (or more than `MAX_NAN_FRACTION`) NaN.
  """
  signal = np.asarray(signal)
  if signal.ndim != 2 or signal.shape[0] != len(STANDARD_LEADS):
    raise RecordError(f"wrong lead count: signal shape {signal.shape}, expected "
                      f"({len(STANDARD_LEADS)}, samples)")
  if signal.shape[1] == 0:
    raise RecordError("empty signal: 0 samples")
  if sample_rate is None or not np.isfinite(sample_rate) or sample_rate <= 0:
    raise RecordError(f"invalid sampling rate: {sample_rate!r}")
  if expected_rate is not None and not np.isclose(float(sample_rate), float(expected_rate)):
    raise RecordError(
        f"unexpected sampling rate: {sample_rate} Hz (expected {expected_rate} Hz)")
  nan = np.isnan(signal)
  if np.isinf(signal).any():
    raise RecordError("non-finite values: inf in signal")
  nan_fraction = float(nan.mean())
  if nan_fraction == 1.0:
    raise RecordError("all-NaN signal")
  if nan_fraction > MAX_NAN_FRACTION:
    raise RecordError(f"mostly-NaN signal: {nan_fraction:.0%} NaN")


def _unit_scale(unit: str) -> Optional[float]:
  return _TO_MV.get(unit.strip().lower())


@dataclasses.dataclass
class _Header:
  """The fields of a single-segment WFDB header that the reader needs."""
  n_sig: int
  fs: Optional[float]
  sig_len: Optional[int]
  file_name: list
  fmt: list            # base format ('16', '212', ...)
  special: list        # True where a signal uses samples-per-frame or skew
  byte_offset: list
  adc_gain: list
  baseline: list
  units: list
  sig_name: list


def _parse_header(header_path: str) -> _Header:
  """Parses a WFDB header (much faster than `wfdb.rdheader`, which goes through pandas).

  Format: https://physionet.org/physiotools/wag/header-5.htm
  """
  with open(header_path, encoding="latin-1") as f:
    lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
  if not lines:
    raise RecordError(f"undecodable header: {header_path}: no record line")
  record = lines[0].split()
  if len(record) < 2 or "/" in record[0]:
    raise RecordError(f"undecodable header: {header_path}: record line {lines[0]!r} "
                      "(multi-segment records are not supported)")
  n_sig = int(record[1])
  fs = float(record[2].split("/")[0].split("(")[0]) if len(record) > 2 else 250.0
  sig_len = int(record[3]) if len(record) > 3 else None
  if len(lines) - 1 < n_sig:
    raise RecordError(f"undecodable header: {header_path}: {n_sig} signals announced, "
                      f"{len(lines) - 1} signal lines")
  h = _Header(n_sig, fs, sig_len, [], [], [], [], [], [], [], [])
  for line in lines[1:1 + n_sig]:
    fields = line.split(maxsplit=8)
    h.file_name.append(fields[0])
    fmt = fields[1] if len(fields) > 1 else "16"
    fmt_base, _, offset = fmt.partition("+")
    h.special.append("x" in fmt_base or ":" in fmt_base)
    h.fmt.append(fmt_base.split("x")[0].split(":")[0])
    h.byte_offset.append(int(offset) if offset else 0)
    gain_field = fields[2] if len(fields) > 2 else ""
    gain_part, _, unit = gain_field.partition("/")
    gain_str, _, baseline = gain_part.partition("(")
    adc_zero = int(fields[4]) if len(fields) > 4 else 0
    h.adc_gain.append(float(gain_str) if gain_str and float(gain_str) != 0 else 200.0)
    h.baseline.append(int(baseline.rstrip(")")) if baseline else adc_zero)
    h.units.append(unit or "mV")
    h.sig_name.append(fields[8] if len(fields) > 8 else "")
  return h


def _read_fmt16(header: _Header, dat_path: str) -> Optional[np.ndarray]:
  """Physical (samples, channels) signal of a plain format-16 record; None if not plain."""
  if (len(set(header.file_name)) != 1 or set(header.fmt) != {"16"} or any(header.special)
      or len(set(header.byte_offset)) != 1):
    return None
  n_sig, offset = header.n_sig, header.byte_offset[0]
  digital = np.fromfile(dat_path, dtype="<i2", offset=offset)
  sig_len = header.sig_len or digital.size // n_sig
  if digital.size < sig_len * n_sig:
    raise RecordError(f"truncated signal file: {os.path.basename(dat_path)}: "
                      f"{digital.size // n_sig} samples, header says {sig_len}")
  digital = digital[:sig_len * n_sig].reshape(sig_len, n_sig)
  physical = (digital - np.asarray(header.baseline, np.float64)) / np.asarray(
      header.adc_gain, np.float64)
  physical[digital == -32768] = np.nan  # WFDB's invalid-sample marker for format 16
  return physical


def _read_mat_signal(header, base_dir: str) -> np.ndarray:
  """Physical (samples, channels) signal of a header whose signal file is a `.mat` (`val`)."""
  import scipy.io  # pylint: disable=g-import-not-at-top
  mat_path = os.path.join(base_dir, header.file_name[0])
  if not os.path.exists(mat_path):
    raise RecordError(f"record file missing: {mat_path}")
  try:
    val = np.asarray(scipy.io.loadmat(mat_path)["val"], dtype=np.float64)
  except Exception as e:  # pylint: disable=broad-except
    raise RecordError(f"undecodable signal file: {mat_path}: {e}") from e
  if val.ndim != 2 or val.shape[0] != header.n_sig:
    raise RecordError(f"wrong lead count: .mat 'val' shape {val.shape}, header says "
                      f"{header.n_sig} signals")
  if header.sig_len and val.shape[1] != header.sig_len:
    raise RecordError(f"truncated signal file: {val.shape[1]} samples, header says "
                      f"{header.sig_len}")
  gain = np.asarray(header.adc_gain, dtype=np.float64)[:, None]
  baseline = np.asarray(header.baseline, dtype=np.float64)[:, None]
  return ((val - baseline) / gain).T


def read_wfdb(path: str, expected_rate=None) -> ECGRecord:
  """Reads the WFDB record at `path` (without extension) into an `ECGRecord`.

  Leads are ordered to `STANDARD_LEADS` by the header's names; µV/V signals are converted to
  mV; other units (e.g. 'NU') are kept and reported in `unit`.

  Raises:
    RecordError: missing or undecodable header, missing or truncated signal file, wrong lead
      count, mixed units, unexpected sampling rate, NaN/inf problems (see `validate_signal`).
  """
  import wfdb  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  for ext in (".hea", ".dat", ".mat"):
    if path.endswith(ext):
      path = path[:-len(ext)]
  base_dir, record_name = os.path.split(path)
  header_path = path + ".hea"
  if not os.path.exists(header_path):
    raise RecordError(f"missing header file: {header_path}")
  try:
    header = _parse_header(header_path)
  except (ValueError, IndexError, UnicodeDecodeError) as e:
    raise RecordError(f"undecodable header: {header_path}: {e}") from e
  if not header.n_sig or not header.file_name:
    raise RecordError(f"undecodable header: {header_path} lists no signals")

  signal_files = sorted(set(header.file_name))
  for name in signal_files:
    if not os.path.exists(os.path.join(base_dir, name)):
      raise RecordError(f"record file missing: {os.path.join(base_dir, name)}")

  if all(name.lower().endswith(".mat") for name in signal_files):
    physical = _read_mat_signal(header, base_dir)
  else:
    expected_bytes = _expected_dat_bytes(header)
    for name in signal_files:
      size = os.path.getsize(os.path.join(base_dir, name))
      if expected_bytes.get(name) is not None and size < expected_bytes[name]:
        raise RecordError(f"truncated signal file: {name}: {size} bytes, header implies "
                          f"{expected_bytes[name]}")
    physical = _read_fmt16(header, os.path.join(base_dir, signal_files[0]))
    if physical is None:  # other formats: let the wfdb package decode them
      try:
        physical = wfdb.rdrecord(path, physical=True).p_signal
      except Exception as e:  # pylint: disable=broad-except
        raise RecordError(
            f"undecodable signal file: {path}: {type(e).__name__}: {e}") from e
    if physical is None or physical.ndim != 2:
      raise RecordError(f"undecodable signal file: no signal decoded from {path}")
    if header.sig_len and physical.shape[0] != header.sig_len:
      raise RecordError(f"truncated signal file: {physical.shape[0]} samples, header says "
                        f"{header.sig_len}")

  names = list(header.sig_name or [])
  signal = reorder_leads(physical.T, names)

  units = header.units
  rows = {_canonical_lead(n): i for i, n in enumerate(names)}
  units = [units[rows[lead.lower()]] for lead in STANDARD_LEADS]
  scales = [_unit_scale(u) for u in units]
  if all(s is not None for s in scales):
    signal = signal * np.asarray(scales, dtype=np.float64)[:, None]
    unit = "mV"
  elif len({u.strip() for u in units}) == 1:
    unit = units[0].strip()
  else:
    raise RecordError(f"mixed signal units: {sorted(set(units))}")

  signal = signal.astype(np.float32)
  sample_rate = header.fs
  if sample_rate is not None and float(sample_rate).is_integer():
    sample_rate = int(sample_rate)
  validate_signal(signal, sample_rate, expected_rate)
  return ECGRecord(signal=signal, sample_rate=sample_rate, unit=unit,
                   lead_names=tuple(STANDARD_LEADS), record_name=record_name)


# Bits per sample of the WFDB formats, for detecting truncated `.dat` files before decoding.
_FORMAT_BITS = {"8": 8, "16": 16, "24": 24, "32": 32, "61": 16, "80": 8, "160": 16,
                "212": 12, "310": 32 / 3, "311": 32 / 3}


def _expected_dat_bytes(header) -> dict:
  """Minimum size in bytes each signal file must have, or None where it cannot be told."""
  if not header.sig_len or any(header.special):
    return {}
  per_file = {}
  for name, fmt, offset in zip(header.file_name, header.fmt, header.byte_offset):
    bits = _FORMAT_BITS.get(str(fmt))
    if bits is None or name in per_file and per_file[name] is None:
      per_file[name] = None
      continue
    entry = per_file.setdefault(name, [0.0, offset or 0])
    entry[0] += bits
  return {name: (None if entry is None else
                 int(entry[1] + np.floor(entry[0] * header.sig_len / 8)))
          for name, entry in per_file.items()}
