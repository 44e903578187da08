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
  # The pixels: each subplot draws its curve in the first colour (C0), falling from left to
  # right for lead_dropout (1, 6, 12 leads zeroed) as the values do.
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  image = matplotlib.image.imread(str(path))[..., :3]
  blue = np.all(np.abs(image - np.array([0x1f, 0x77, 0xb4]) / 255) < 0.08, axis=-1)
  half = image.shape[1] // 2
  left, right = blue[:, :half], blue[:, half:]
  assert left.sum() > 50 and right.sum() > 50
  cols = np.flatnonzero(left.any(axis=0))
  first = np.flatnonzero(left[:, cols[:5]].any(axis=1)).mean()
  last = np.flatnonzero(left[:, cols[-5:]].any(axis=1)).mean()
  assert first < last  # image rows grow downwards: the curve falls


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


# ----------------------------------------------------------------------------------------------
# reduced_leads through features.FeatureStore: MERIT's native lead-subset input vs zero-filling.


@pytest.fixture(scope="module")
def lead_setup(tmp_path_factory):
  """A random-init tiny MERIT encoder, random convolutions and a 10-record synthetic split."""
  from configs import pretrain as pretrain_config  # pylint: disable=g-import-not-at-top
  from merit_jax.evaluators import features  # pylint: disable=g-import-not-at-top
  config = pretrain_config.get_config("test")
  config.model.text.vocab_size = 50  # No tokenizer: the text tower is unused here.
  from merit_jax.encoder import Encoder  # pylint: disable=g-import-not-at-top
  merit = Encoder.random_init(config, None, seed=0, batch_size=4)
  conv = Encoder.random_conv(num_kernels=10, seed=0, num_samples=1000)
  rng = np.random.default_rng(3)
  ecg = rng.normal(size=(10, 12, 1000)).astype(np.float32)
  split = features.SplitData(ecg=ecg, labels={"superdiagnostic": rng.integers(0, 2, (10, 2))},
                             ecg_id=np.arange(10, dtype=np.int64), report=[""] * 10,
                             source=np.zeros(10, np.int32))

  def store(cache_dir):
    # batch_size 4 over 10 records: the last batch is padded, as in a real split.
    s = features.FeatureStore(config.data, str(cache_dir), batch_size=4, progress=False)
    s.set_split("test", split)
    return s
  return {"merit": merit, "conv": conv, "ecg": ecg, "store": store,
          "cache": tmp_path_factory.mktemp("lead_cache")}


def test_native_reduced_leads_feed_merit_only_the_kept_leads(lead_setup):
  from merit_jax.evaluators import features  # pylint: disable=g-import-not-at-top
  merit, ecg = lead_setup["merit"], lead_setup["ecg"]
  store = lead_setup["store"](lead_setup["cache"])
  assert features.reduced_leads_path(merit, "native") == "native"
  assert features.reduced_leads_path(merit, "zeros") == "zeros"
  clean = store.features(merit, "test")
  for lead_set in ("I", "I+II", "limb"):
    leads = shift.LEAD_SETS[lead_set]
    native = store.features(merit, "test", ("reduced_leads", lead_set))  # native by default
    expected = merit.model.apply({"params": merit.params}, ecg[:, list(leads)], leads=leads,
                                 method=merit.model.embed_ecg)
    np.testing.assert_allclose(native["pooled"], np.asarray(expected["pooled"]),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(native["projected"], np.asarray(expected["projected"]),
                               rtol=1e-5, atol=1e-5)
    # Same width as the clean 12-lead features: the fixed clean probe applies unchanged.
    assert native["pooled"].shape == clean["pooled"].shape
    zeros = store.features(merit, "test", ("reduced_leads", lead_set),
                           reduced_leads_mode="zeros")
    zero_filled = shift.apply_corruption(ecg, "reduced_leads", lead_set)
    np.testing.assert_allclose(zeros["pooled"], merit.embed_ecg(zero_filled)["pooled"],
                               rtol=1e-5, atol=1e-5)
    assert np.abs(native["pooled"] - zeros["pooled"]).max() > 1e-3, lead_set


def test_random_conv_zero_fills_in_either_mode(lead_setup):
  from merit_jax.evaluators import features  # pylint: disable=g-import-not-at-top
  conv, ecg = lead_setup["conv"], lead_setup["ecg"]
  store = lead_setup["store"](lead_setup["cache"])
  assert not conv.supports_lead_subsets
  assert features.reduced_leads_path(conv, "native") == "zeros"
  native = store.features(conv, "test", ("reduced_leads", "I+II"), reduced_leads_mode="native")
  zeros = store.features(conv, "test", ("reduced_leads", "I+II"), reduced_leads_mode="zeros")
  expected = conv.embed_ecg(shift.apply_corruption(ecg, "reduced_leads", "I+II"))["pooled"]
  np.testing.assert_array_equal(native["pooled"], expected)
  np.testing.assert_array_equal(zeros["pooled"], expected)
  names = sorted(p.name for p in (lead_setup["cache"] / conv.cache_key).glob("*.npz"))
  assert names == ["test__reduced_leads_IpII.npz"]  # no native entry: none was computed


def test_reduced_leads_cache_key_separates_native_and_zero_filled(lead_setup):
  from merit_jax.evaluators import features  # pylint: disable=g-import-not-at-top
  assert features.corruption_tag(("reduced_leads", "I+II")) == "__reduced_leads_IpII"
  assert features.corruption_tag(("reduced_leads", "I+II"), native=True) == \
      "__reduced_leads_IpII_native"
  merit = lead_setup["merit"]
  cache = lead_setup["cache"] / "keys"
  first = lead_setup["store"](cache)
  native = first.features(merit, "test", ("reduced_leads", "I"))
  zeros = first.features(merit, "test", ("reduced_leads", "I"), reduced_leads_mode="zeros")
  folder = cache / merit.cache_key
  assert sorted(p.name for p in folder.glob("*.npz")) == [
      "test__reduced_leads_I.npz", "test__reduced_leads_I_native.npz"]
  with np.load(folder / "test__reduced_leads_I.npz") as f:
    np.testing.assert_array_equal(f["pooled"], zeros["pooled"])
  # A fresh store (empty memory) reads each mode back from its own file.
  second = lead_setup["store"](cache)
  np.testing.assert_array_equal(
      second.features(merit, "test", ("reduced_leads", "I"))["pooled"], native["pooled"])
  np.testing.assert_array_equal(
      second.features(merit, "test", ("reduced_leads", "I"), reduced_leads_mode="zeros")[
          "pooled"], zeros["pooled"])
  # Other corruptions ignore the switch: one entry, zero-filled-style input, no suffix.
  dropout = second.features(merit, "test", ("lead_dropout", 4))
  assert (folder / "test__lead_dropout_4.npz").exists()
  assert dropout["pooled"].shape == native["pooled"].shape


class _MeanProbe:
  """Stands in for `linear_probe.ProbeResult`: the 'metric' is the mean feature."""
  test_metrics = {"macro_auroc": {"value": 0.5}}

  def evaluate(self, feats, labels, n_bootstrap=0):
    del labels, n_bootstrap
    return {"macro_auroc": {"value": float(np.mean(feats))}}


def _shift_config(mode):
  from configs import evaluate as evaluate_config  # pylint: disable=g-import-not-at-top
  config = evaluate_config.get_config("quick")
  config.shift.corruptions = ("reduced_leads,gaussian_noise",)  # as the command line gives it
  if mode is not None:
    config.shift.reduced_leads_mode = mode
  return config


def _run_shift(encoder, data, mode):
  from merit_jax.evaluators import registry  # pylint: disable=g-import-not-at-top
  evaluator = shift.Evaluator(_shift_config(mode).evals.shift,
                              registry.EvalContext(data_cfg=None, store=data.store))
  return evaluator.curves(encoder, data, _MeanProbe())


def test_run_shift_mode_switch_is_recorded(lead_setup):
  from merit_jax.evaluators import tasks  # pylint: disable=g-import-not-at-top
  from merit_jax.reporting import markdown  # pylint: disable=g-import-not-at-top
  assert _shift_config(None).shift.reduced_leads_mode == "native"  # the default
  store = lead_setup["store"](lead_setup["cache"] / "run_shift")
  data = tasks.TaskData(store, "superdiagnostic", ["A", "B"],
                        {"test": store.split("test").labels["superdiagnostic"]},
                        {"test": [("test", np.arange(10))]})
  results = {"shift": {}}
  by_mode = {}
  for mode in ("native", "zeros"):
    for key in ("merit", "conv"):
      encoder = lead_setup[key]
      curves = _run_shift(encoder, data, mode)
      reduced = next(c for c in curves if c["corruption"] == "reduced_leads")
      assert "reduced_leads_mode" not in next(c for c in curves if c is not reduced)
      by_mode[mode, key] = reduced
      results["shift"].setdefault(f"{key}_{mode}", {})["superdiagnostic"] = curves
  assert by_mode["native", "merit"]["reduced_leads_mode"] == "native"
  assert by_mode["zeros", "merit"]["reduced_leads_mode"] == "zeros"
  assert by_mode["native", "conv"]["reduced_leads_mode"] == "zeros"
  assert by_mode["zeros", "conv"]["reduced_leads_mode"] == "zeros"
  # The switch changes what MERIT sees (and so the scores), not what random_conv sees.
  assert by_mode["native", "merit"]["values"] != by_mode["zeros", "merit"]["values"]
  assert by_mode["native", "conv"]["values"] == by_mode["zeros", "conv"]["values"]
  md = "\n".join(markdown._shift_markdown(results))  # pylint: disable=protected-access
  assert ("reduced_leads: native lead subset for merit_native; zero-filled for conv_native, "
          "merit_zeros, conv_zeros.") in md


def test_unknown_reduced_leads_mode_is_a_clear_error(lead_setup):
  from merit_jax.evaluators import features  # pylint: disable=g-import-not-at-top
  from merit_jax.evaluators import tasks  # pylint: disable=g-import-not-at-top
  store = lead_setup["store"](lead_setup["cache"])
  with pytest.raises(ValueError, match=r"reduced_leads_mode must be one of \('native', "
                                       r"'zeros'\).*got 'zero'"):
    store.features(lead_setup["merit"], "test", ("reduced_leads", "I"),
                   reduced_leads_mode="zero")
  with pytest.raises(ValueError, match="reduced_leads_mode"):
    features.reduced_leads_path(lead_setup["conv"], "select")
  data = tasks.TaskData(store, "superdiagnostic", ["A", "B"],
                        {"test": store.split("test").labels["superdiagnostic"]},
                        {"test": [("test", np.arange(10))]})
  with pytest.raises(ValueError, match="config.shift.reduced_leads_mode"):
    _run_shift(lead_setup["conv"], data, "subset")
