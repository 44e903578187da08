"""Per-record ECG preprocessing shared by every dataset.

One record at a time, in numpy, so it runs inside Grain map transforms. The order of the steps is
fixed and chosen so that no step sees the artefacts of a later one:

  1. NaN repair   (a filter or resampler would smear one NaN over the whole lead)
  2. resampling   (`scipy.signal.resample_poly` with the exact rational factor)
  3. band-pass    (optional zero-phase Butterworth, `sosfiltfilt`)
  4. crop / pad   (centre crop for evaluation, random offset when an rng is given; zero pad at
                   the end when the record is short)
  5. normalise    (per-lead z-score over the real samples of the window, or none; padding
                   stays 0)

NaN policy (documented choice): NaNs inside a lead are replaced by linear interpolation between
the nearest finite samples (edges hold the nearest finite value), which keeps the lead's
baseline instead of inserting artificial steps to 0; a lead with no finite sample at all becomes
zeros (after z-scoring it stays zeros, i.e. "lead absent").
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
from typing import Any, Mapping

import numpy as np
from scipy import signal as sp_signal

NORMALIZE_MODES = ('zscore', 'none')


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """Preprocessing settings; the fields of `config.data.preprocess`.

  Attributes:
    sample_rate: target sampling rate in Hz.
    num_samples: output length in samples at `sample_rate`.
    bandpass: None, or (low_hz, high_hz) for a zero-phase Butterworth band-pass.
    normalize: 'zscore' (per lead, over the output window) or 'none'.
    filter_order: Butterworth order (the effective order is doubled by filtfilt).
    eps: added to the per-lead standard deviation, so flat leads map to zeros.
  """
  sample_rate: int = 100
  num_samples: int = 1000
  bandpass: tuple[float, float] | None = None
  normalize: str = 'zscore'
  filter_order: int = 4
  eps: float = 1e-6

  def __post_init__(self):
    if int(self.sample_rate) <= 0:
      raise ValueError(f'preprocess.sample_rate must be > 0, got {self.sample_rate}')
    if int(self.num_samples) <= 0:
      raise ValueError(f'preprocess.num_samples must be > 0, got {self.num_samples}')
    if self.normalize not in NORMALIZE_MODES:
      raise ValueError(
          f'preprocess.normalize must be one of {NORMALIZE_MODES}, got {self.normalize!r}')
    if self.bandpass is not None:
      lo, hi = (float(v) for v in self.bandpass)
      nyquist = self.sample_rate / 2
      if not 0 < lo < hi < nyquist:
        raise ValueError(
            f'preprocess.bandpass must satisfy 0 < low < high < Nyquist ({nyquist} Hz at '
            f'{self.sample_rate} Hz), got {self.bandpass}')
      object.__setattr__(self, 'bandpass', (lo, hi))

  @classmethod
  def from_config(cls, cfg: Any = None) -> 'PreprocessConfig':
    """Builds from a ConfigDict / dict / PreprocessConfig / None (defaults); unknown keys fail."""
    kw = config_fields(cls, cfg, 'data.preprocess')
    if isinstance(kw, cls):
      return kw
    if kw.get('bandpass') is not None:
      kw['bandpass'] = tuple(kw['bandpass'])
    return cls(**kw)


def config_fields(cls, cfg: Any, section: str):
  """The keyword arguments of dataclass `cls` held in config `section` (an instance passes).

  Accepts a ConfigDict, a plain mapping, an instance of `cls` (returned as is) or None (no
  keywords: the defaults); keys that are not fields of `cls` fail with a message naming them.
  """
  if cfg is None:
    return {}
  if isinstance(cfg, cls):
    return cfg
  if hasattr(cfg, 'to_dict'):
    cfg = cfg.to_dict()
  if not isinstance(cfg, Mapping):
    raise TypeError(f'{section} must be a mapping, got {type(cfg).__name__}')
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = set(cfg) - names
  if unknown:
    raise ValueError(f'unknown {section} keys {sorted(unknown)}; known: {sorted(names)}')
  return dict(cfg)


def fill_nans(signal: np.ndarray) -> np.ndarray:
  """Linear interpolation over NaN/inf samples per lead; an all-NaN lead becomes zeros."""
  finite = np.isfinite(signal)
  if finite.all():
    return signal
  out = np.array(signal, dtype=np.float32, copy=True)
  positions = np.arange(out.shape[1])
  for lead in range(out.shape[0]):
    ok = finite[lead]
    if ok.all():
      continue
    if not ok.any():
      out[lead] = 0.0
      continue
    out[lead, ~ok] = np.interp(positions[~ok], positions[ok], out[lead, ok])
  return out


def resample(signal: np.ndarray, from_rate: float, to_rate: float) -> np.ndarray:
  """Polyphase resampling along the last axis with the exact rational factor."""
  if from_rate == to_rate:
    return signal
  ratio = fractions.Fraction(to_rate).limit_denominator(10_000) / fractions.Fraction(
      from_rate).limit_denominator(10_000)
  return sp_signal.resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1)


@functools.lru_cache(maxsize=32)
def _butter_sos(order: int, lo: float, hi: float, rate: float) -> np.ndarray:
  return sp_signal.butter(order, (lo, hi), btype='bandpass', fs=rate, output='sos')


def bandpass(signal: np.ndarray, lo: float, hi: float, rate: float, order: int = 4) -> np.ndarray:
  """Zero-phase Butterworth band-pass along the last axis."""
  sos = _butter_sos(order, lo, hi, float(rate))
  n = signal.shape[-1]
  # sosfiltfilt's default padding needs a longer signal than short crops may have.
  default_padlen = 3 * (2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum()))
  return sp_signal.sosfiltfilt(sos, signal, axis=-1, padlen=min(default_padlen, n - 1))


def crop_or_pad(signal: np.ndarray, num_samples: int,
                rng: np.random.Generator | None = None) -> np.ndarray:
  """Fixed length: centre crop (or random offset given `rng`) / zero pad at the end."""
  n = signal.shape[-1]
  if n > num_samples:
    excess = n - num_samples
    start = int(rng.integers(0, excess + 1)) if rng is not None else excess // 2
    return signal[..., start:start + num_samples]
  if n < num_samples:
    pad = [(0, 0)] * (signal.ndim - 1) + [(0, num_samples - n)]
    return np.pad(signal, pad)
  return signal


def zscore(signal: np.ndarray, eps: float = 1e-6) -> np.ndarray:
  """Per-lead zero mean, unit variance; flat leads become zeros."""
  mean = signal.mean(axis=-1, keepdims=True)
  std = signal.std(axis=-1, keepdims=True)
  return (signal - mean) / (std + eps)


def preprocess(signal: np.ndarray, sample_rate: float, cfg: Any = None,
               rng: np.random.Generator | None = None) -> np.ndarray:
  """Preprocesses one record.

  Args:
    signal: float16/float32 array (leads, samples) in its stored unit.
    sample_rate: the record's sampling rate in Hz.
    cfg: a PreprocessConfig, or a ConfigDict/dict with its fields, or None for the defaults.
    rng: when given, the crop offset is random (training); otherwise the crop is centred.

  Returns:
    float32 array (leads, cfg.num_samples).
  """
  cfg = PreprocessConfig.from_config(cfg)
  signal = np.asarray(signal)
  if signal.ndim != 2:
    raise ValueError(f'preprocess expects a (leads, samples) signal, got shape {signal.shape}')
  if signal.shape[1] == 0:
    raise ValueError(f'preprocess got an empty signal of shape {signal.shape}')
  sample_rate = float(sample_rate)
  if not sample_rate > 0:
    raise ValueError(f'preprocess got a non-positive sample_rate {sample_rate}')
  x = fill_nans(signal.astype(np.float32))
  x = resample(x, sample_rate, float(cfg.sample_rate))
  if cfg.bandpass is not None:
    x = bandpass(x, cfg.bandpass[0], cfg.bandpass[1], cfg.sample_rate, cfg.filter_order)
  valid = min(x.shape[-1], cfg.num_samples)
  x = crop_or_pad(x, cfg.num_samples, rng)
  if cfg.normalize == 'zscore':
    # Statistics over the real samples only, so zero padding neither shifts nor shrinks them.
    x[:, :valid] = zscore(x[:, :valid], cfg.eps)
  return np.ascontiguousarray(x, dtype=np.float32)


def preprocess_windows(signal: np.ndarray, sample_rate: float, cfg: Any = None) -> np.ndarray:
  """Every model window of a record: float32 (W, leads, cfg.num_samples).

  `preprocess` keeps one centred window, which silently drops most of a long recording (a
  60 s ECG would become its middle 10 s). Here steps 1-3 run on the whole record, which is
  then cut into consecutive windows; when the length is not a multiple of the window, the last
  window is aligned to the record's end (it overlaps the one before) rather than padded. Each
  window is normalised on its own, as in training. A record no longer than one window gives
  exactly `preprocess`'s output.
  """
  cfg = PreprocessConfig.from_config(cfg)
  signal = np.asarray(signal)
  num = int(cfg.num_samples)
  rate = float(sample_rate)
  if signal.ndim != 2 or signal.shape[1] == 0 or not rate > 0:
    return preprocess(signal, sample_rate, cfg)[None]  # Raises the same clear errors.
  x = fill_nans(signal.astype(np.float32))
  x = resample(x, rate, float(cfg.sample_rate))
  if cfg.bandpass is not None:
    x = bandpass(x, cfg.bandpass[0], cfg.bandpass[1], cfg.sample_rate, cfg.filter_order)
  if x.shape[-1] <= num:
    starts = [0]
  else:
    starts = list(range(0, x.shape[-1] - num + 1, num))
    if starts[-1] + num < x.shape[-1]:
      starts.append(x.shape[-1] - num)
  out = []
  for start in starts:
    w = crop_or_pad(x[:, start:start + num], num).copy()  # Windows overlap: never in place.
    valid = min(x.shape[-1] - start, num)
    if cfg.normalize == 'zscore':
      w[:, :valid] = zscore(w[:, :valid], cfg.eps)
    out.append(w)
  return np.ascontiguousarray(np.stack(out), dtype=np.float32)
