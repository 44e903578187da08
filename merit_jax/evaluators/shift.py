"""Distribution-shift corruptions of test-fold ECGs and degradation curves.

Signals are numpy float32 `(N, leads, samples)` (leads in the standard order I, II, III, aVR,
aVL, aVF, V1–V6), at `sample_rate` Hz. Every corruption returns a new float32 array of the same
shape and is deterministic for a given `seed`.

Public API:

- `CORRUPTIONS: dict[name, Corruption]`, each with `severities` (the levels, weakest first),
  `unit` and `apply(signals, severity, sample_rate, rng)`. Names:
  `gaussian_noise`, `baseline_wander`, `mains_50hz`, `mains_60hz`, `electrode_motion` (severity =
  SNR in dB per lead: the added artefact is scaled so that
  10·log10(var(signal lead) / mean(artefact²)) equals the SNR exactly), `amplitude_scaling`
  (severity = gain factor), `lead_dropout` (severity = number of leads zeroed, random per
  record), `reduced_leads` (severity = a `LEAD_SETS` name; here the leads outside the set
  are zeroed, but `features.FeatureStore` by default feeds encoders that accept lead subsets
  (MERIT: `Encoder.embed_ecg(ecg, leads=...)`) only the kept leads instead, see `reduce_leads`),
  `time_shift` (severity = seconds, circular, random direction per record), `time_shift_pad`
  (same, vacated samples zero).
- `apply_corruption(signals, name, severity, sample_rate=100, seed=0) -> signals`.
- `LEAD_SETS` (`I`, `I+II`, `limb` = I, II, III, aVR, aVL, aVF, `12`) and
  `reduce_leads(signals, lead_set, mode="zero"|"select")`: `zero` keeps the shape and zeroes the
  other leads; `select` returns `(signals[:, kept], kept_indices)` for an encoder that accepts
  lead subsets. `features.FeatureStore.features(..., reduced_leads_mode="native"|"zeros")`
  (`config.shift.reduced_leads_mode` in `merit_jax.evaluate`) picks between them per encoder:
  `native` (default) uses `select` for MERIT encoders and `zero` for encoders whose features
  are laid out per lead (random convolutions); `zeros` uses `zero` for every encoder.
- `degradation_curve(evaluate_fn, signals, labels, corruption, severities=None, sample_rate=100,
  seed=0) -> dict`: `evaluate_fn(signals, labels) -> float | dict[str, float]` is called on the
  clean signals and at each severity; returns `{"corruption", "severities", "clean", "values"}`.
- `plot_degradation(curves, path, metric=None)`: one line per curve, clean level dashed; PNG.

Mains interference at 100 Hz sampling: 50 Hz sits at Nyquist and 60 Hz aliases to 40 Hz; the
sampled artefact is what a 100 Hz recording of that interference would contain.

`Evaluator` (config `evals.shift`: tasks, corruptions, reduced_leads_mode, seed, probe,
n_bootstrap): per task, the fixed 100 % probe fitted on clean training features (the linear
probe evaluator's when it ran) scored on the corrupted test split at every severity.
"""

from __future__ import annotations

import dataclasses
import pathlib
import zlib
from typing import Any, Callable, Optional, Sequence

import numpy as np

from merit_jax.evaluators import registry
from merit_jax.evaluators import tasks as tasks_lib

STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF",
                  "V1", "V2", "V3", "V4", "V5", "V6")
LEAD_SETS = {
    "I": (0,),
    "I+II": (0, 1),
    "limb": (0, 1, 2, 3, 4, 5),
    "12": tuple(range(12)),
}


def _check_signals(signals, where: str) -> np.ndarray:
  signals = np.asarray(signals, dtype=np.float32)
  if signals.ndim != 3:
    raise ValueError(f"{where}: signals must be (N, leads, samples), got {signals.shape}")
  if not np.all(np.isfinite(signals)):
    raise ValueError(f"{where}: signals contain NaN or inf")
  return signals


def _scale_to_snr(signals: np.ndarray, artefact: np.ndarray, snr_db: float) -> np.ndarray:
  """Adds `artefact` scaled per (record, lead) so that var(signal)/mean(artefact²) = SNR."""
  signal_power = signals.astype(np.float64).var(axis=-1, keepdims=True)
  artefact_power = np.mean(artefact.astype(np.float64) ** 2, axis=-1, keepdims=True)
  target = signal_power / (10.0 ** (snr_db / 10.0))
  # A flat (zeroed) lead has no power to compare with: it gets no artefact.
  gain = np.sqrt(np.where(artefact_power > 0, target / np.maximum(artefact_power, 1e-300), 0.0))
  return (signals + gain * artefact).astype(np.float32)


def _time_axis(num_samples: int, sample_rate: float) -> np.ndarray:
  return np.arange(num_samples) / float(sample_rate)


def gaussian_noise(signals, snr_db, sample_rate, rng):
  del sample_rate
  return _scale_to_snr(signals, rng.standard_normal(signals.shape), snr_db)


def baseline_wander(signals, snr_db, sample_rate, rng):
  """Sum of three 0.05–0.5 Hz sinusoids per lead (respiration, movement)."""
  n, leads, samples = signals.shape
  t = _time_axis(samples, sample_rate)
  freqs = rng.uniform(0.05, 0.5, size=(n, leads, 3, 1))
  phases = rng.uniform(0, 2 * np.pi, size=(n, leads, 3, 1))
  amps = rng.uniform(0.5, 1.0, size=(n, leads, 3, 1))
  wander = np.sum(amps * np.sin(2 * np.pi * freqs * t + phases), axis=2)
  return _scale_to_snr(signals, wander, snr_db)


def _mains(hz: float):
  def corrupt(signals, snr_db, sample_rate, rng):
    n, leads, samples = signals.shape
    t = _time_axis(samples, sample_rate)
    # One phase and frequency per record (the same interference reaches every lead; grid
    # frequency drifts by up to ±0.1 Hz), amplitude per lead.
    phase = rng.uniform(0.1, np.pi / 2 - 0.1, size=(n, 1, 1))
    freq = hz + rng.uniform(-0.1, 0.1, size=(n, 1, 1))
    amp = rng.uniform(0.5, 1.0, size=(n, leads, 1))
    hum = amp * (np.cos(2 * np.pi * freq * t + phase) + 0.2 * np.cos(2 * np.pi * 3 * freq * t))
    return _scale_to_snr(signals, hum, snr_db)
  corrupt.__doc__ = f"{hz:g} Hz (±0.1 Hz) mains interference with a third harmonic."
  return corrupt


def electrode_motion(signals, snr_db, sample_rate, rng):
  """1–3 bursts per record of 0.2–1 s of low-pass noise plus a baseline step, Hann-windowed."""
  n, leads, samples = signals.shape
  artefact = np.zeros((n, leads, samples))
  kernel_len = max(1, int(0.05 * sample_rate))
  kernel = np.ones(kernel_len) / kernel_len
  for i in range(n):
    for _ in range(int(rng.integers(1, 4))):
      length = int(min(samples, max(2, rng.uniform(0.2, 1.0) * sample_rate)))
      start = int(rng.integers(0, samples - length + 1))
      noise = rng.standard_normal((leads, length + kernel_len - 1))
      smooth = np.stack([np.convolve(row, kernel, mode="valid") for row in noise])
      step = rng.uniform(-1, 1, size=(leads, 1)) * smooth.std(axis=1, keepdims=True) * 3
      artefact[i, :, start:start + length] += (smooth + step) * np.hanning(length)
  return _scale_to_snr(signals, artefact, snr_db)


def amplitude_scaling(signals, gain, sample_rate, rng):
  del sample_rate, rng
  return (signals * np.float32(gain)).astype(np.float32)


def lead_dropout(signals, num_leads, sample_rate, rng):
  """Zeroes `num_leads` leads chosen at random for each record."""
  del sample_rate
  n, leads, _ = signals.shape
  num_leads = int(num_leads)
  if not 0 <= num_leads <= leads:
    raise ValueError(f"lead_dropout: cannot drop {num_leads} of {leads} leads")
  out = signals.copy()
  for i in range(n):
    out[i, rng.choice(leads, size=num_leads, replace=False)] = 0
  return out


def lead_subset_indices(lead_set) -> tuple:
  """Lead indices of a `LEAD_SETS` name, or of an explicit sequence of lead names/indices."""
  if isinstance(lead_set, str):
    if lead_set not in LEAD_SETS:
      raise ValueError(f"reduce_leads: unknown lead set {lead_set!r}; known: {list(LEAD_SETS)}")
    return LEAD_SETS[lead_set]
  indices = []
  for lead in lead_set:
    if isinstance(lead, str):
      if lead not in STANDARD_LEADS:
        raise ValueError(f"reduce_leads: unknown lead name {lead!r}")
      indices.append(STANDARD_LEADS.index(lead))
    else:
      indices.append(int(lead))
  return tuple(indices)


def reduce_leads(signals, lead_set, mode: str = "zero"):
  """Keeps only `lead_set`: zeroing the rest (`zero`) or selecting the kept rows (`select`)."""
  signals = _check_signals(signals, "reduce_leads")
  kept = lead_subset_indices(lead_set)
  if any(not 0 <= k < signals.shape[1] for k in kept):
    raise ValueError(f"reduce_leads: lead indices {kept} out of range for "
                     f"{signals.shape[1]} leads")
  if mode == "select":
    return signals[:, list(kept)].copy(), np.asarray(kept, dtype=np.int64)
  if mode != "zero":
    raise ValueError(f"reduce_leads: mode must be 'zero' or 'select', got {mode!r}")
  out = np.zeros_like(signals)
  out[:, list(kept)] = signals[:, list(kept)]
  return out


def _reduced_leads(signals, lead_set, sample_rate, rng):
  del sample_rate, rng
  return reduce_leads(signals, lead_set, mode="zero")


def _time_shift(circular: bool):
  def corrupt(signals, seconds, sample_rate, rng):
    n, _, samples = signals.shape
    shift = int(round(seconds * sample_rate))
    signs = rng.choice([-1, 1], size=n)
    out = np.zeros_like(signals)
    for i in range(n):
      s = int(signs[i] * min(shift, samples))
      if circular:
        out[i] = np.roll(signals[i], s, axis=-1)
      elif s >= 0:
        out[i, :, s:] = signals[i, :, :samples - s]
      else:
        out[i, :, :samples + s] = signals[i, :, -s:]
    return out
  corrupt.__doc__ = ("Circular" if circular else "Zero-padded") + " shift, random direction."
  return corrupt


@dataclasses.dataclass(frozen=True)
class Corruption:
  """A named corruption with its severity levels (weakest first)."""
  name: str
  apply: Callable[..., np.ndarray]
  severities: tuple
  unit: str


CORRUPTIONS = {c.name: c for c in (
    Corruption("gaussian_noise", gaussian_noise, (24, 18, 12, 6, 0), "SNR dB"),
    Corruption("baseline_wander", baseline_wander, (24, 18, 12, 6, 0), "SNR dB"),
    Corruption("mains_50hz", _mains(50.0), (24, 18, 12, 6, 0), "SNR dB"),
    Corruption("mains_60hz", _mains(60.0), (24, 18, 12, 6, 0), "SNR dB"),
    Corruption("electrode_motion", electrode_motion, (24, 18, 12, 6, 0), "SNR dB"),
    Corruption("amplitude_scaling", amplitude_scaling, (0.9, 0.75, 0.5, 1.5, 2.0), "gain"),
    Corruption("lead_dropout", lead_dropout, (1, 2, 4, 6, 9), "leads zeroed"),
    Corruption("reduced_leads", _reduced_leads, ("limb", "I+II", "I"), "lead set"),
    Corruption("time_shift", _time_shift(circular=True), (0.5, 1.0, 2.0, 5.0), "seconds"),
    Corruption("time_shift_pad", _time_shift(circular=False), (0.5, 1.0, 2.0, 5.0), "seconds"),
)}


def apply_corruption(signals, name: str, severity, sample_rate: float = 100, seed: int = 0):
  """Applies `CORRUPTIONS[name]` at `severity`; the same seed gives the same output."""
  if name not in CORRUPTIONS:
    raise ValueError(f"apply_corruption: unknown corruption {name!r}; known: "
                     f"{sorted(CORRUPTIONS)}")
  if sample_rate <= 0:
    raise ValueError(f"apply_corruption: sample_rate must be positive, got {sample_rate}")
  signals = _check_signals(signals, f"apply_corruption({name})")
  # Seed from (seed, name, severity) so each setting has its own fixed stream.
  key = zlib.crc32(f"{name}:{severity}".encode())
  rng = np.random.default_rng([int(seed), key])
  return CORRUPTIONS[name].apply(signals, severity, sample_rate, rng)


def degradation_curve(evaluate_fn: Callable[[np.ndarray, Any], Any], signals, labels,
                      corruption: str, severities: Optional[Sequence] = None,
                      sample_rate: float = 100, seed: int = 0) -> dict:
  """Metric(s) of `evaluate_fn` on clean signals and at each severity of `corruption`."""
  if corruption not in CORRUPTIONS:
    raise ValueError(f"degradation_curve: unknown corruption {corruption!r}")
  severities = list(CORRUPTIONS[corruption].severities if severities is None else severities)
  signals = _check_signals(signals, "degradation_curve")
  clean = evaluate_fn(signals, labels)
  values = [evaluate_fn(apply_corruption(signals, corruption, s, sample_rate, seed), labels)
            for s in severities]
  return {"corruption": corruption, "unit": CORRUPTIONS[corruption].unit,
          "severities": severities, "clean": clean, "values": values}


def _metric_value(value, metric: Optional[str]) -> float:
  if isinstance(value, dict):
    if metric is None:
      if len(value) != 1:
        raise ValueError(f"plot_degradation: evaluate_fn returned {sorted(value)}; pass metric=")
      return float(next(iter(value.values())))
    return float(value[metric])
  return float(value)


def plot_degradation(curves, path, metric: Optional[str] = None, title: Optional[str] = None):
  """Writes a PNG with one subplot per corruption (x = severity level); returns the path."""
  import matplotlib  # Local import: plotting is optional.
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  if isinstance(curves, dict):
    curves = [curves]
  fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3), squeeze=False)
  for ax, curve in zip(axes[0], curves):
    ys = [_metric_value(v, metric) for v in curve["values"]]
    ax.plot(range(len(ys)), ys, marker="o")
    ax.axhline(_metric_value(curve["clean"], metric), linestyle="--", color="gray",
               label="clean")
    ax.set_xticks(range(len(ys)))
    ax.set_xticklabels([str(s) for s in curve["severities"]], fontsize=7)
    ax.set_xlabel(curve.get("unit", "severity"))
    ax.set_title(curve["corruption"], fontsize=9)
  axes[0][0].set_ylabel(metric or "metric")
  axes[0][0].legend(fontsize=7)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


class Evaluator(registry.EvaluatorBase):
  """Degradation curves of the fixed 100 % probe per task and corruption."""

  def __init__(self, config, context):
    super().__init__(config, context)
    from merit_jax.evaluators import features  # pylint: disable=g-import-not-at-top
    self.tasks = registry.eval_tasks(config, context)
    # Checked here, before hours of probing, not when the suite starts.
    self.mode = features.check_reduced_leads_mode(str(config.reduced_leads_mode))
    self.corruptions = tasks_lib.parse_list(config.corruptions)
    for name in self.corruptions:
      if name not in CORRUPTIONS:
        raise ValueError(f"config.shift.corruptions: unknown corruption {name!r}; known: "
                         f"{sorted(CORRUPTIONS)}")

  def run(self, encoder) -> dict:
    from merit_jax.evaluators import linear_probe  # pylint: disable=g-import-not-at-top
    out = {}
    for task in self.tasks:
      data = self.context.task_data(task)
      probe = linear_probe.shared_full_probe(self.context, encoder, data, self.config.probe,
                                             self.config.n_bootstrap)
      out[task] = self.curves(encoder, data, probe)
    return {"shift": out}

  def curves(self, encoder, data, probe) -> list:
    """Degradation curves (layout of `degradation_curve`) of the fixed probe on one task.

    The `reduced_leads` curve also holds `reduced_leads_mode`: 'native' where the encoder saw
    only the kept leads, 'zeros' where the missing leads were zero-filled.
    """
    from merit_jax.evaluators import features  # pylint: disable=g-import-not-at-top
    labels = data.labels["test"]
    clean = {"macro_auroc": probe.test_metrics["macro_auroc"]["value"]}
    curves = []
    for name in self.corruptions:
      values = []
      for severity in CORRUPTIONS[name].severities:
        feats = data.features(encoder, "test", "pooled", (name, severity),
                              int(self.config.seed), reduced_leads_mode=self.mode)
        m = probe.evaluate(feats, labels, n_bootstrap=0)
        values.append({"macro_auroc": m["macro_auroc"]["value"],
                       "macro_f1": m.get("macro_f1", {}).get("value")})
      curve = {"corruption": name, "unit": CORRUPTIONS[name].unit,
               "severities": list(CORRUPTIONS[name].severities), "clean": clean,
               "values": values}
      if name == "reduced_leads":
        curve["reduced_leads_mode"] = features.reduced_leads_path(encoder, self.mode)
      curves.append(curve)
    return curves

  def scalars(self, results: dict) -> dict:
    """{"shift/<task>/<corruption>/<severity>/macro_auroc": value}."""
    return {f"shift/{task}/{c['corruption']}/{s}/macro_auroc": float(v["macro_auroc"])
            for task, curves in (results.get("shift") or {}).items() for c in curves
            for s, v in zip(c["severities"], c["values"])}
