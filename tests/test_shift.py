"""Tests for the corruption suite: each corruption changes the signal by the set amount."""

import numpy as np
import pytest

from merit_jax.evaluators import shift

RATE = 100


@pytest.fixture(scope="module")
def signals():
  rng = np.random.default_rng(0)
  t = np.arange(1000) / RATE
  beat = np.sin(2 * np.pi * 1.2 * t) ** 15  # spiky, ECG-like periodic waveform
  amps = rng.uniform(0.3, 1.5, size=(6, 12, 1))
  return (amps * beat + 0.02 * rng.normal(size=(6, 12, 1000))).astype(np.float32)


def _snr_db(clean, corrupted):
  artefact = corrupted.astype(np.float64) - clean
  return 10 * np.log10(clean.var(axis=-1) / np.mean(artefact ** 2, axis=-1))


@pytest.mark.parametrize("name", ["gaussian_noise", "baseline_wander", "mains_50hz",
                                  "mains_60hz", "electrode_motion"])
@pytest.mark.parametrize("snr", [18, 6, 0])
def test_additive_artefacts_hit_the_set_snr(signals, name, snr):
  out = shift.apply_corruption(signals, name, snr, RATE, seed=1)
  assert out.dtype == np.float32 and out.shape == signals.shape
  measured = _snr_db(signals, out)
  assert np.all(np.abs(measured - snr) < 0.5), (name, measured.min(), measured.max())
  again = shift.apply_corruption(signals, name, snr, RATE, seed=1)
  np.testing.assert_array_equal(out, again)
  assert not np.array_equal(out, shift.apply_corruption(signals, name, snr, RATE, seed=2))


def test_artefacts_have_their_spectral_signature(signals):
  def dominant_hz(name, rate=500):
    clean = np.zeros((1, 1, 5000), np.float32)
    clean[0, 0, ::7] = 1.0  # flat-spectrum reference so the artefact decides the peak
    out = shift.apply_corruption(clean, name, 0, rate, seed=0) - clean
    spectrum = np.abs(np.fft.rfft(out[0, 0]))
    return np.fft.rfftfreq(5000, 1 / rate)[np.argmax(spectrum)]
  assert dominant_hz("mains_50hz") == pytest.approx(50, abs=0.2)
  assert dominant_hz("mains_60hz") == pytest.approx(60, abs=0.2)
  assert dominant_hz("baseline_wander") < 0.6
  # Electrode motion is bursty: most of its energy sits in a small part of the record.
  out = shift.apply_corruption(signals, "electrode_motion", 6, RATE, seed=0) - signals
  energy = np.sort((out[:, 0] ** 2))[:, ::-1]
  share = np.cumsum(energy, axis=1)[:, 300] / energy.sum(axis=1)
  assert np.all(share > 0.9)


def test_amplitude_scaling_and_lead_dropout(signals):
  np.testing.assert_allclose(shift.apply_corruption(signals, "amplitude_scaling", 0.5),
                             signals * 0.5, rtol=1e-6)
  out = shift.apply_corruption(signals, "lead_dropout", 4, RATE, seed=0)
  zeroed = np.all(out == 0, axis=-1)
  assert np.all(zeroed.sum(axis=1) == 4)
  np.testing.assert_array_equal(out[~zeroed], signals[~zeroed])
  assert len({tuple(np.flatnonzero(z)) for z in zeroed}) > 1  # random per record


@pytest.mark.parametrize("lead_set,kept", [("I", [0]), ("I+II", [0, 1]),
                                           ("limb", [0, 1, 2, 3, 4, 5])])
def test_reduced_leads_zero_or_select(signals, lead_set, kept):
  zeroed = shift.apply_corruption(signals, "reduced_leads", lead_set)
  dropped = [i for i in range(12) if i not in kept]
  assert np.all(zeroed[:, dropped] == 0)
  np.testing.assert_array_equal(zeroed[:, kept], signals[:, kept])
  selected, idx = shift.reduce_leads(signals, lead_set, mode="select")
  np.testing.assert_array_equal(idx, kept)
  np.testing.assert_array_equal(selected, signals[:, kept])
  _, by_name = shift.reduce_leads(signals, ["I", "aVF"], mode="select")
  np.testing.assert_array_equal(by_name, [0, 5])


def test_time_shift_circular_and_pad(signals):
  out = shift.apply_corruption(signals, "time_shift", 0.5, RATE, seed=0)
  padded = shift.apply_corruption(signals, "time_shift_pad", 0.5, RATE, seed=0)
  for i in range(len(signals)):
    candidates = [np.roll(signals[i], s, axis=-1) for s in (50, -50)]
    assert any(np.array_equal(out[i], c) for c in candidates)
    zero_cols = np.all(padded[i] == 0, axis=0)
    assert zero_cols.sum() >= 50
    assert zero_cols[:50].all() or zero_cols[-50:].all()


def test_degradation_curve_and_plot(signals, tmp_path):
  labels = np.zeros(len(signals))
  def evaluate(x, y):
    del y
    return {"mean_abs": float(np.abs(x).mean())}
  curve = shift.degradation_curve(evaluate, signals, labels, "lead_dropout", severities=[1, 6, 12])
  values = [v["mean_abs"] for v in curve["values"]]
  assert values[0] > values[1] > values[2] == 0.0
  assert curve["clean"]["mean_abs"] > values[0]
  default = shift.degradation_curve(evaluate, signals, labels, "reduced_leads")
  assert default["severities"] == list(shift.CORRUPTIONS["reduced_leads"].severities)
  path = shift.plot_degradation([curve, default], tmp_path / "curves.png", metric="mean_abs")
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_registry_and_bad_input(signals):
  for name, corruption in shift.CORRUPTIONS.items():
    out = shift.apply_corruption(signals[:2], name, corruption.severities[0], RATE)
    assert out.shape == signals[:2].shape and out.dtype == np.float32, name
  with pytest.raises(ValueError, match="unknown corruption"):
    shift.apply_corruption(signals, "nope", 1)
  with pytest.raises(ValueError, match=r"\(N, leads, samples\)"):
    shift.apply_corruption(signals[0], "gaussian_noise", 6)
  with pytest.raises(ValueError, match="unknown lead set"):
    shift.reduce_leads(signals, "V1-only")
