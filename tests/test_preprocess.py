"""Tests for merit_jax.data.preprocess and merit_jax.data.augment."""

import numpy as np
import pytest

from merit_jax.data import augment as augment_lib
from merit_jax.data import preprocess as pp


def _sine(freq, rate, seconds, leads=1, amplitude=1.0):
  t = np.arange(int(rate * seconds)) / rate
  return np.tile(amplitude * np.sin(2 * np.pi * freq * t), (leads, 1)), t


def _peak_hz(x, rate):
  spectrum = np.abs(np.fft.rfft(x - x.mean()))
  return np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)]


@pytest.mark.parametrize('from_rate', [500, 250, 360])
def test_resample_preserves_sine_frequency(from_rate):
  x, _ = _sine(7.0, from_rate, 10, leads=2)
  cfg = pp.PreprocessConfig(sample_rate=100, num_samples=1000, normalize='none')
  y = pp.preprocess(x.astype(np.float16), from_rate, cfg)
  assert y.shape == (2, 1000) and y.dtype == np.float32
  assert _peak_hz(y[0], 100) == pytest.approx(7.0, abs=0.1)
  # Away from the edges the resampled sine matches the analytic one at the new rate.
  expected, _ = _sine(7.0, 100, 10)
  np.testing.assert_allclose(y[1, 100:-100], expected[0, 100:-100], atol=0.02)


def test_bandpass_removes_baseline_wander_and_offset():
  rate = 100
  t = np.arange(1000) / rate
  ecg_like = np.sin(2 * np.pi * 10 * t)
  wander = 3.0 + 2.0 * np.sin(2 * np.pi * 0.15 * t)
  cfg = pp.PreprocessConfig(sample_rate=rate, num_samples=1000, bandpass=(0.5, 40),
                            normalize='none')
  y = pp.preprocess((ecg_like + wander)[None], rate, cfg)[0]
  inner = slice(100, -100)
  assert np.abs(y[inner] - ecg_like[inner]).max() < 0.1
  assert abs(y.mean()) < 0.05


def test_bandpass_config_is_validated():
  with pytest.raises(ValueError, match='Nyquist'):
    pp.PreprocessConfig(sample_rate=100, bandpass=(0.5, 60))
  with pytest.raises(ValueError, match='unknown data.preprocess keys'):
    pp.PreprocessConfig.from_config({'sample_rat': 100})
  with pytest.raises(ValueError, match='normalize'):
    pp.PreprocessConfig(normalize='minmax')
  assert pp.PreprocessConfig.from_config({'bandpass': [1, 40]}).bandpass == (1.0, 40.0)


def test_zscore_per_lead_and_flat_lead():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 500)) * np.array([[0.1], [5.0], [0.0]]) + np.array([[1], [-2], [7]])
  y = pp.preprocess(x, 100, pp.PreprocessConfig(num_samples=500))
  np.testing.assert_allclose(y[:2].mean(axis=1), 0, atol=1e-5)
  np.testing.assert_allclose(y[:2].std(axis=1), 1, atol=1e-4)
  np.testing.assert_array_equal(y[2], 0)  # flat lead: zeros, not NaN/inf


def test_nan_interpolation_and_all_nan_lead():
  x = np.tile(np.linspace(0, 9, 10, dtype=np.float32), (3, 1))
  x[0, 3:5] = np.nan        # interior gap: linear interpolation
  x[1, 0] = np.nan          # edge: nearest finite value
  x[2, :] = np.nan          # whole lead missing: zeros
  y = pp.fill_nans(x)
  np.testing.assert_allclose(y[0], np.arange(10))
  assert y[1, 0] == 1.0
  np.testing.assert_array_equal(y[2], 0)
  out = pp.preprocess(x.astype(np.float16), 100, pp.PreprocessConfig(num_samples=10))
  assert np.isfinite(out).all()
  np.testing.assert_array_equal(out[2], 0)


def test_crop_and_pad_lengths():
  x = np.arange(30, dtype=np.float32)[None].repeat(2, 0)
  cfg = dict(sample_rate=100, num_samples=10, normalize='none')
  np.testing.assert_array_equal(pp.preprocess(x, 100, cfg)[0], np.arange(10, 20))  # centre
  starts = {int(pp.preprocess(x, 100, cfg, np.random.default_rng(s))[0, 0]) for s in range(40)}
  assert len(starts) > 5 and min(starts) >= 0 and max(starts) <= 20
  again = pp.preprocess(x, 100, cfg, np.random.default_rng(3))
  np.testing.assert_array_equal(again, pp.preprocess(x, 100, cfg, np.random.default_rng(3)))
  short = pp.preprocess(x[:, :4] + 1, 100, dict(cfg, num_samples=8))
  np.testing.assert_array_equal(short[0], [1, 2, 3, 4, 0, 0, 0, 0])
  # z-score statistics use the real samples only; the padding stays exactly 0.
  zs = pp.preprocess(x[:, :4] + 1, 100, dict(num_samples=8))
  np.testing.assert_allclose(zs[0, :4].mean(), 0, atol=1e-6)
  np.testing.assert_array_equal(zs[0, 4:], 0)


def test_bad_input_is_rejected():
  with pytest.raises(ValueError, match='leads, samples'):
    pp.preprocess(np.zeros(10), 100)
  with pytest.raises(ValueError, match='sample_rate'):
    pp.preprocess(np.zeros((12, 10)), 0)


def test_augment_off_by_default_and_deterministic():
  x = np.random.default_rng(0).normal(size=(12, 100)).astype(np.float32)
  assert augment_lib.augment(x, np.random.default_rng(0)) is x
  cfg = dict(enabled=True, scale=(0.5, 2.0), noise_std=0.1, lead_dropout=0.3)
  a = augment_lib.augment(x, np.random.default_rng(5), cfg)
  b = augment_lib.augment(x, np.random.default_rng(5), cfg)
  c = augment_lib.augment(x, np.random.default_rng(6), cfg)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert a.dtype == np.float32 and a.shape == x.shape


def test_augment_components():
  x = np.ones((12, 2000), np.float32)
  scaled = augment_lib.augment(x, np.random.default_rng(0), dict(enabled=True, scale=(0.8, 1.2)))
  per_lead = scaled[:, 0]
  assert np.all((per_lead >= 0.8) & (per_lead <= 1.2)) and np.ptp(per_lead) > 0
  np.testing.assert_array_equal(scaled, per_lead[:, None] * x)  # one factor per lead
  noisy = augment_lib.augment(x, np.random.default_rng(0), dict(enabled=True, noise_std=0.5))
  assert (noisy - x).std() == pytest.approx(0.5, rel=0.05)
  for seed in range(20):
    dropped = augment_lib.augment(x, np.random.default_rng(seed),
                                  dict(enabled=True, lead_dropout=0.95))
    zero_leads = np.all(dropped == 0, axis=1)
    assert np.all(dropped[~zero_leads] == 1)  # whole leads only
    assert 0 < (~zero_leads).sum()             # never every lead
  with pytest.raises(ValueError, match='lead_dropout'):
    augment_lib.AugmentConfig(lead_dropout=1.0)
  assert augment_lib.AugmentConfig.from_config({'enabled': True, 'crop': True}).random_crop
  assert not augment_lib.AugmentConfig(crop=True).random_crop
  assert augment_lib.AugmentConfig(scale=0.2).scale == (0.8, 1.2)
  assert augment_lib.AugmentConfig(scale=0.0).scale is None
