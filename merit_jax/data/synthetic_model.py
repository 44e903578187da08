"""Physiological model behind the synthetic ECGs: cardiac dipole beats projected onto 12 leads.

Each beat is a sum of Gaussian waves in time (P, initial/septal Q, R, a second R for split
conduction, S, a terminal R' for right bundle branch block, a two-part asymmetric T) plus a
flat-topped ST-segment term, in the spirit of McSharry et al. (2003). Every wave carries a 3-D
dipole direction (x to the patient's left, y inferior, z anterior), so the heart's vector
(a vectorcardiogram) is projected onto per-lead vectors: leads I and II and V1-V6 are
projections, and III, aVR, aVL, aVF follow from Einthoven/Goldberger exactly
(III = II - I, aVR = -(I + II) / 2, aVL = I - II / 2, aVF = II - I / 2). Electrode noise (baseline
wander, muscle noise) is added per electrode (RA, LA, LL, V1-V6) so it obeys the same identities.

Findings (rhythm, conduction, structural, repolarisation, voltage) change the waves as in
textbook ECG: e.g. atrial fibrillation draws irregular RR intervals, drops the P wave and adds
fibrillatory waves; left bundle branch block splits and widens the R wave, drops the septal q
and makes ST/T discordant. Rendering is vectorised over records: the time axis is evaluated
at once for a chunk of records, each sample seeing only its four nearest beats.

Waves are rendered analytically at any sampling rate, smoothed by a Gaussian anti-aliasing
kernel of 0.6 sample (convolving Gaussians widens them, keeping their area), so the 100 Hz and
500 Hz versions of one record show the same heart; only the white noise differs between rates.
"""

import dataclasses
from typing import Optional, Sequence

import numpy as np

# Lead order of the output (merit_jax.data.wfdb_io.STANDARD_LEADS).
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
RHYTHMS = ("SR", "SBRAD", "STACH", "SARRH", "AFIB")
CONDUCTIONS = (None, "CLBBB", "CRBBB", "LAFB", "1AVB")
STRUCTURES = (None, "LVH", "IMI", "ASMI")
REPOLARISATIONS = (None, "ISC_", "NDT", "NST_")

# Wave slots of one beat (columns of the per-beat arrays).
WAVES = ("P", "Q", "R", "R2", "S", "RP", "T1", "T2", "ST")
_W = {name: i for i, name in enumerate(WAVES)}
_NUM_WAVES = len(WAVES)
# Electrodes that carry their own noise: limb RA, LA, LL, then chest V1-V6.
_NUM_ELECTRODES = 9
# Margin of beats simulated before 0 s and after the end, so edges look like the middle.
_EDGE_SECONDS = 1.2
# Anti-aliasing kernel width in samples (Gaussian sigma).
_ANTI_ALIAS_SAMPLES = 0.6
# Chest-lead directions: angle in the horizontal plane from the left (+x) towards anterior
# (+z), and gain (precordial leads lie close to the heart, V2-V4 closest).
_CHEST_ANGLES_DEG = np.array([115.0, 95.0, 78.0, 60.0, 35.0, 10.0])
_CHEST_GAINS = np.array([2.6, 3.1, 2.4, 2.1, 1.8, 1.5])


@dataclasses.dataclass(frozen=True)
class Findings:
  """What one synthetic record shows; the labels and the report are derived from it."""
  rhythm: str = "SR"                      # one of RHYTHMS
  conduction: Optional[str] = None        # one of CONDUCTIONS
  structure: Optional[str] = None         # one of STRUCTURES
  repolarisation: Optional[str] = None    # one of REPOLARISATIONS
  low_voltage: bool = False               # LVOLT
  lvh_strain: bool = False                # LVH with lateral ST depression and T inversion
  inferior_t_inversion: bool = False      # IMI with inverted T in II, III, aVF
  acute_st_elevation: bool = False        # ASMI with anterior ST elevation

  def __post_init__(self):
    for field, allowed in (("rhythm", RHYTHMS), ("conduction", CONDUCTIONS),
                           ("structure", STRUCTURES), ("repolarisation", REPOLARISATIONS)):
      if getattr(self, field) not in allowed:
        raise ValueError(f"Findings.{field}={getattr(self, field)!r}; expected one of {allowed}")
    if self.conduction == "1AVB" and self.rhythm == "AFIB":
      raise ValueError("Findings: first degree AV block needs P waves; not with AFIB")
    if self.low_voltage and self.structure == "LVH":
      raise ValueError("Findings: low voltage and LVH exclude each other")


@dataclasses.dataclass
class RecordParams:
  """Everything needed to render one record at any sampling rate."""
  r_times: np.ndarray        # (beats,) R-peak times in seconds, including edge beats
  beat_scale: np.ndarray     # (beats,) per-beat amplitude factor
  offsets: np.ndarray        # (beats, waves) wave centres relative to the R peak, seconds
  widths: np.ndarray         # (waves,) Gaussian sigma (ST: half length of the plateau), s
  amplitudes: np.ndarray     # (waves, 3) dipole vector of each wave, mV
  lead_vectors: np.ndarray   # (8, 3) lead vectors of I, II, V1..V6
  wander: np.ndarray         # (electrodes, 3 components, 3: amplitude mV, freq Hz, phase)
  muscle_noise_mv: float     # white-noise std per electrode, mV
  fibrillation: np.ndarray   # (8,): amplitude mV, freq Hz, fm depth, fm freq, phase, dir xyz
  heart_rate_bpm: float      # mean rate over the 10 s window
  qrs_axis_deg: float        # frontal QRS axis


def _unit(v) -> np.ndarray:
  v = np.asarray(v, dtype=np.float64)
  return v / np.linalg.norm(v)


def _frontal(angle_deg: float, z: float) -> np.ndarray:
  a = np.deg2rad(angle_deg)
  return _unit([np.cos(a), np.sin(a), z])


def _rr_intervals(rng: np.random.Generator, rhythm: str, total_s: float):
  """RR intervals (s) covering `total_s`, and the nominal heart rate."""
  if rhythm == "SBRAD":
    hr = rng.uniform(40.0, 57.0)
  elif rhythm == "STACH":
    hr = rng.uniform(102.0, 150.0)
  elif rhythm == "AFIB":
    hr = rng.uniform(65.0, 135.0)
  else:
    hr = rng.uniform(60.0, 97.0)
  mean_rr = 60.0 / hr
  n = int(np.ceil(total_s / (mean_rr * 0.6))) + 2
  if rhythm == "AFIB":
    # Irregularly irregular: independent intervals, coefficient of variation 0.15-0.3.
    cv = rng.uniform(0.15, 0.3)
    shape = 1.0 / cv**2
    rr = rng.gamma(shape, mean_rr / shape, size=n)
    rr = np.maximum(rr, 0.33)
  else:
    # Slow heart-rate variability plus, for sinus arrhythmia, respiratory modulation.
    beat_times = np.arange(n) * mean_rr
    resp_freq = rng.uniform(0.15, 0.3)
    depth = rng.uniform(0.1, 0.18) if rhythm == "SARRH" else rng.uniform(0.0, 0.02)
    lf = rng.uniform(0.0, 0.015)
    rr = mean_rr * (1.0 + depth * np.sin(2 * np.pi * resp_freq * beat_times
                                         + rng.uniform(0, 2 * np.pi))
                    + lf * np.sin(2 * np.pi * 0.08 * beat_times + rng.uniform(0, 2 * np.pi))
                    + 0.004 * rng.standard_normal(n))
  return rr, hr


def sample_params(rng: np.random.Generator, findings: Findings,
                  duration_s: float = 10.0) -> RecordParams:
  """Draws the physiology of one record with `findings` (deterministic given `rng`)."""
  f = findings
  w = _W
  amplitudes = np.zeros((_NUM_WAVES, 3))
  widths = np.zeros(_NUM_WAVES)
  base_offsets = np.zeros(_NUM_WAVES)

  # --- Rhythm: beat times.
  total = duration_s + 2 * _EDGE_SECONDS
  rr, _ = _rr_intervals(rng, f.rhythm, total)
  start = -_EDGE_SECONDS - rng.uniform(0.0, rr[0])
  r_times = start + np.concatenate([[0.0], np.cumsum(rr)])
  r_times = r_times[r_times < duration_s + _EDGE_SECONDS]
  inside = (r_times >= 0) & (r_times < duration_s)
  if inside.sum() >= 2:
    heart_rate = 60.0 / np.mean(np.diff(r_times[inside]))
  else:
    heart_rate = 60.0 / np.mean(np.diff(r_times))
  # RR preceding each beat drives its QT (Fridericia).
  prev_rr = np.concatenate([[rr[0]], np.diff(r_times)])

  # --- Normal morphology with per-record variation.
  axis = rng.normal(45.0, 25.0)
  axis = float(np.clip(axis, -25.0, 95.0))
  r_amp = rng.lognormal(np.log(1.1), 0.2)
  qrs_scale = rng.uniform(0.9, 1.1)        # QRS duration variation
  pr = rng.uniform(0.13, 0.18)             # P centre to R peak
  qtc = rng.uniform(0.38, 0.44)
  t_amp = rng.lognormal(np.log(0.32), 0.2)
  t_axis = axis - 10.0 + rng.normal(0.0, 12.0)

  amplitudes[w["P"]] = rng.uniform(0.09, 0.17) * _frontal(rng.normal(55.0, 10.0), 0.2)
  widths[w["P"]] = rng.uniform(0.019, 0.025)
  base_offsets[w["P"]] = -pr
  # Septal depolarisation: small, rightward and anterior (q in I/V6, r in V1).
  amplitudes[w["Q"]] = rng.uniform(0.08, 0.16) * _unit([-0.5, 0.25, 0.85])
  widths[w["Q"]] = 0.008 * qrs_scale
  base_offsets[w["Q"]] = -0.028 * qrs_scale
  r_dir = _frontal(axis, 0.05)
  amplitudes[w["R"]] = r_amp * r_dir
  widths[w["R"]] = 0.0105 * qrs_scale
  amplitudes[w["S"]] = rng.uniform(0.3, 0.5) * _unit([-0.5, -0.5, -0.6])
  widths[w["S"]] = 0.010 * qrs_scale
  base_offsets[w["S"]] = 0.026 * qrs_scale
  t_dir = _frontal(t_axis, 0.65)
  widths[w["T1"]] = 0.06
  widths[w["T2"]] = 0.04
  st_vector = np.zeros(3)
  qrs_end = 0.045 * qrs_scale
  lead_scale = 1.0

  # --- Conduction.
  if f.conduction == "CLBBB":
    axis = float(np.clip(axis, -30.0, 40.0))
    lbbb_dir = _frontal(axis, -0.55)
    amplitudes[w["Q"]] = 0.12 * _unit([0.7, 0.2, -0.5])   # septum activated from the right
    amplitudes[w["R"]] = 0.8 * r_amp * lbbb_dir
    amplitudes[w["R2"]] = 0.85 * r_amp * lbbb_dir
    widths[w["R"]] = widths[w["R2"]] = rng.uniform(0.017, 0.021)
    base_offsets[w["R"]] = -0.028
    base_offsets[w["R2"]] = 0.032
    base_offsets[w["Q"]] = -0.055
    amplitudes[w["S"]] = 0.0
    t_dir = _unit(-lbbb_dir + [0.0, 0.0, 0.3])            # discordant T
    t_amp = rng.uniform(0.3, 0.45)
    st_vector += rng.uniform(0.08, 0.15) * _unit([-0.5, -0.3, 0.9])
    qrs_end = 0.08
  elif f.conduction == "CRBBB":
    amplitudes[w["S"]] *= 1.2
    widths[w["S"]] = 0.016
    base_offsets[w["S"]] = 0.03
    amplitudes[w["RP"]] = rng.uniform(0.5, 0.8) * _unit([-0.55, 0.05, 0.85])
    widths[w["RP"]] = rng.uniform(0.016, 0.02)
    base_offsets[w["RP"]] = 0.07
    t_dir = _frontal(t_axis, -0.45)                       # T inverted in V1-V3
    qrs_end = 0.095
  elif f.conduction == "LAFB":
    axis = rng.uniform(-75.0, -45.0)
    amplitudes[w["R"]] = r_amp * _frontal(axis, -0.25)
    amplitudes[w["Q"]] = rng.uniform(0.1, 0.18) * _unit([-0.3, 0.8, 0.3])
    widths[w["R"]] *= 1.1
    t_axis = rng.uniform(0.0, 50.0)
    t_dir = _frontal(t_axis, 0.65)
  elif f.conduction == "1AVB":
    pr = rng.uniform(0.24, 0.33)
    base_offsets[w["P"]] = -pr

  # --- Structure.
  if f.structure == "LVH":
    gain = rng.uniform(1.9, 2.5)
    lvh_dir = _frontal(float(np.clip(axis, -20.0, 50.0)), -0.35)
    amplitudes[w["R"]] = np.linalg.norm(amplitudes[w["R"]]) * gain * lvh_dir
    if f.conduction == "CLBBB":
      amplitudes[w["R2"]] = np.linalg.norm(amplitudes[w["R2"]]) * gain * lvh_dir
    amplitudes[w["S"]] *= 1.6
    widths[[w["R"], w["S"]]] *= 1.15
    if f.lvh_strain:
      t_dir = _unit([-0.85, 0.1, -0.2])
      t_amp = rng.uniform(0.2, 0.35)
      st_vector += rng.uniform(0.08, 0.15) * _unit([-0.9, -0.3, -0.1])
  elif f.structure == "IMI":
    # Inferior necrosis: initial forces point superior (wide Q in II, III, aVF).
    amplitudes[w["Q"]] = rng.uniform(0.35, 0.55) * _unit([0.05, -1.0, 0.1])
    widths[w["Q"]] = 0.014
    base_offsets[w["Q"]] = -0.03 * qrs_scale
    amplitudes[w["R"]] = np.linalg.norm(amplitudes[w["R"]]) * 0.85 * _frontal(
        float(np.clip(axis - 40.0, -30.0, 20.0)), -0.25)
    if f.inferior_t_inversion:
      t_dir = _unit([0.6, -0.8, 0.3])
      t_amp = rng.uniform(0.25, 0.4)
  elif f.structure == "ASMI":
    # Anteroseptal necrosis: initial forces point posterior (QS in V1-V3).
    amplitudes[w["Q"]] = rng.uniform(0.3, 0.45) * _unit([0.1, 0.1, -1.0])
    widths[w["Q"]] = 0.014
    base_offsets[w["Q"]] = -0.03 * qrs_scale
    if f.acute_st_elevation:
      st_vector += rng.uniform(0.06, 0.12) * _unit([-0.1, 0.15, 1.0])
      t_dir = _frontal(t_axis, 1.2)
      t_amp *= 1.3

  # --- Repolarisation.
  if f.repolarisation == "ISC_":
    # Subendocardial ischaemia: ST vector towards aVR, so ST depression in most leads.
    st_vector += rng.uniform(0.07, 0.14) * _unit([-0.8, -0.5, -0.3])
    t_amp *= 0.6
  elif f.repolarisation == "NDT":
    t_dir = _unit([-0.8, 0.35, 0.2])                    # inverted T in I, aVL, V5, V6
    t_amp = rng.uniform(0.2, 0.35)
  elif f.repolarisation == "NST_":
    st_vector += rng.uniform(0.05, 0.1) * _unit([0.3, 0.6, 0.75])

  if f.low_voltage:
    lead_scale = rng.uniform(0.3, 0.42)

  amplitudes[w["T1"]] = 0.45 * t_amp * t_dir
  amplitudes[w["T2"]] = 0.85 * t_amp * t_dir
  amplitudes[w["ST"]] = st_vector
  if f.rhythm == "AFIB":
    amplitudes[w["P"]] = 0.0
  amplitudes *= lead_scale

  # Per-beat wave times: T (and the ST plateau before it) follow the preceding RR.
  qt = qtc * np.cbrt(prev_rr)
  t_peak = np.maximum(qt - 0.12, qrs_end + 0.1)
  offsets = np.broadcast_to(base_offsets, (len(r_times), _NUM_WAVES)).copy()
  offsets[:, w["T2"]] = t_peak
  offsets[:, w["T1"]] = t_peak - 0.05
  st_start = qrs_end
  st_stop = t_peak - 0.03
  offsets[:, w["ST"]] = 0.5 * (st_start + st_stop)
  widths[w["ST"]] = float(np.mean(0.5 * (st_stop - st_start)))

  beat_scale = 1.0 + 0.04 * np.sin(2 * np.pi * rng.uniform(0.15, 0.3) * r_times
                                    + rng.uniform(0, 2 * np.pi))
  beat_scale += 0.015 * rng.standard_normal(len(r_times))

  # --- Leads: per-record electrode placement and body habitus.
  habitus = rng.lognormal(0.0, 0.12)
  limb_gain = 0.95 * habitus
  lead_vectors = np.zeros((8, 3))
  lead_vectors[0] = limb_gain * np.array([1.0, 0.0, 0.0])
  lead_vectors[1] = limb_gain * np.array([0.5, np.sqrt(3) / 2, 0.0])
  angles = np.deg2rad(_CHEST_ANGLES_DEG + rng.normal(0.0, 5.0, 6))
  gains = _CHEST_GAINS * habitus * rng.lognormal(0.0, 0.07, 6)
  lead_vectors[2:, 0] = gains * np.cos(angles)
  lead_vectors[2:, 1] = gains * 0.12
  lead_vectors[2:, 2] = gains * np.sin(angles)

  # --- Noise.
  wander = np.zeros((_NUM_ELECTRODES, 3, 3))
  wander[..., 0] = rng.uniform(0.0, 1.0) * rng.uniform(0.0, 0.06, (_NUM_ELECTRODES, 3))
  wander[..., 1] = rng.uniform(0.05, 0.5, (_NUM_ELECTRODES, 3))
  wander[..., 2] = rng.uniform(0.0, 2 * np.pi, (_NUM_ELECTRODES, 3))
  muscle = rng.uniform(0.003, 0.02)
  fibrillation = np.zeros(8)
  if f.rhythm == "AFIB":
    fibrillation[:5] = [rng.uniform(0.015, 0.05) * lead_scale, rng.uniform(4.5, 8.0),
                        rng.uniform(0.5, 2.0), rng.uniform(0.1, 0.5),
                        rng.uniform(0, 2 * np.pi)]
    fibrillation[5:] = _unit([0.2, 0.45, 0.85])
  return RecordParams(r_times=r_times, beat_scale=beat_scale, offsets=offsets, widths=widths,
                      amplitudes=amplitudes, lead_vectors=lead_vectors, wander=wander,
                      muscle_noise_mv=muscle, fibrillation=fibrillation,
                      heart_rate_bpm=float(heart_rate), qrs_axis_deg=float(axis))


def _stack_beats(params: Sequence[RecordParams]):
  """Pads per-record beat arrays to one (records, beats) layout with far-away dummy beats.

  Three dummy beats lead (far in the past) and at least two trail (far in the future), so
  the four beats around any sample can be gathered without bounds checks.
  """
  max_beats = max(len(p.r_times) for p in params) + 5
  n = len(params)
  r = np.full((n, max_beats), 1e4)
  r[:, :3] = -1e4
  scale = np.zeros((n, max_beats))
  offsets = np.zeros((n, max_beats, _NUM_WAVES))
  for i, p in enumerate(params):
    b = len(p.r_times)
    r[i, 3:3 + b] = p.r_times
    scale[i, 3:3 + b] = p.beat_scale
    offsets[i, 3:3 + b] = p.offsets
  return r, scale, offsets


def _render_heart(params: Sequence[RecordParams], sample_rate: float,
                  num_samples: int) -> np.ndarray:
  """The cardiac vector (records, samples, 3) in mV."""
  n = len(params)
  t = (np.arange(num_samples) / sample_rate).astype(np.float32)
  r, scale, offsets = _stack_beats(params)
  # Number of beats with R <= t, via the first sample at or after each R peak.
  first = np.clip(np.ceil(r * sample_rate), 0, num_samples).astype(np.int64)
  counts = np.zeros((n, num_samples + 1), np.int32)
  np.add.at(counts, (np.repeat(np.arange(n), r.shape[1]), first.ravel()), 1)
  last = np.cumsum(counts, axis=1)[:, :num_samples] - 1        # index of the last beat <= t
  # The two beats before (their T waves) and the two after (P wave, early QRS).
  near = last[:, :, None] + np.arange(-2, 2)[None, None, :]
  rows = np.arange(n)[:, None, None]
  beat_r = r.astype(np.float32)[rows, near]                   # (n, T, 4)
  beat_scale = scale.astype(np.float32)[rows, near]
  beat_offsets = offsets.astype(np.float32)[rows, near]       # (n, T, 4, W)

  widths = np.stack([p.widths for p in params])               # (n, W)
  amplitudes = np.stack([p.amplitudes for p in params])       # (n, W, 3)
  # Anti-aliasing: widen each Gaussian, keep its area; the ST plateau is left as is.
  aa = _ANTI_ALIAS_SAMPLES / sample_rate
  is_gauss = np.ones(_NUM_WAVES, bool)
  is_gauss[_W["ST"]] = False
  eff = np.where(is_gauss, np.sqrt(widths**2 + aa**2), widths)
  gain = np.where(is_gauss, widths / np.where(eff > 0, eff, 1.0), 1.0)
  eff = np.where(eff > 0, eff, 1.0)

  inv = (1.0 / eff).astype(np.float32)[:, None, None, :]
  z = (t[None, :, None, None] - beat_r[..., None] - beat_offsets) * inv
  z2 = z * z
  # Gaussian waves exp(-z^2/2); the ST term is a flat top exp(-ln2 z^4), 0.5 at its ends.
  expo = np.where(is_gauss, np.float32(0.5) * z2, np.float32(np.log(2.0)) * z2 * z2)
  shapes = np.exp(-np.minimum(expo, np.float32(80.0))) * beat_scale[..., None]
  shapes = shapes.sum(axis=2)                                 # (n, T, W)
  return np.einsum("ntw,nwd->ntd", shapes, (amplitudes * gain[..., None]).astype(np.float32))


def _electrode_noise(params: Sequence[RecordParams], sample_rate: float, num_samples: int,
                     noise_rngs: Sequence[np.random.Generator]) -> np.ndarray:
  """Noise potentials (records, electrodes, samples) in mV: wander plus muscle noise."""
  t = np.arange(num_samples) / sample_rate
  wander = np.stack([p.wander for p in params])               # (n, E, 3, 3)
  phase = 2 * np.pi * wander[..., 1, None] * t + wander[..., 2, None]
  noise = np.einsum("nek,nekt->net", wander[..., 0], np.sin(phase)).astype(np.float32)
  for i, (p, rng) in enumerate(zip(params, noise_rngs)):
    white = rng.standard_normal((_NUM_ELECTRODES, num_samples), dtype=np.float32)
    noise[i] += p.muscle_noise_mv * white
  return noise


def _fibrillatory_waves(params: Sequence[RecordParams], sample_rate: float,
                        num_samples: int) -> np.ndarray:
  """Atrial fibrillation f-waves as a cardiac vector (records, samples, 3)."""
  t = np.arange(num_samples) / sample_rate
  fib = np.stack([p.fibrillation for p in params])            # (n, 8)
  amp, freq, fm_depth, fm_freq, phase = (fib[:, i, None] for i in range(5))
  signal = amp * np.sin(2 * np.pi * freq * t + fm_depth * np.sin(2 * np.pi * fm_freq * t)
                        + phase)
  return (signal[:, :, None] * fib[:, None, 5:]).astype(np.float32)


def render(params: Sequence[RecordParams], sample_rate: float, num_samples: int,
           noise_rngs: Sequence[np.random.Generator]) -> np.ndarray:
  """Renders records to float32 (records, 12, samples) in mV, leads in `LEADS` order.

  Args:
    params: one `RecordParams` per record.
    sample_rate: Hz.
    num_samples: samples per lead.
    noise_rngs: one generator per record for its white noise.
  """
  if len(params) != len(noise_rngs):
    raise ValueError(f"render: {len(params)} records but {len(noise_rngs)} noise generators")
  if not params:
    return np.zeros((0, len(LEADS), num_samples), np.float32)
  heart = _render_heart(params, sample_rate, num_samples)
  heart += _fibrillatory_waves(params, sample_rate, num_samples)
  lead_vectors = np.stack([p.lead_vectors for p in params]).astype(np.float32)  # (n, 8, 3)
  core = np.einsum("ntd,nld->nlt", heart, lead_vectors)       # I, II, V1..V6
  noise = _electrode_noise(params, sample_rate, num_samples, noise_rngs)
  ra, la, ll = noise[:, 0], noise[:, 1], noise[:, 2]
  core[:, 0] += la - ra
  core[:, 1] += ll - ra
  core[:, 2:] += noise[:, 3:] - ((ra + la + ll) / 3.0)[:, None, :]
  lead_i, lead_ii = core[:, 0], core[:, 1]
  out = np.empty((len(params), len(LEADS), num_samples), np.float32)
  out[:, 0] = lead_i
  out[:, 1] = lead_ii
  out[:, 2] = lead_ii - lead_i
  out[:, 3] = -(lead_i + lead_ii) / 2.0
  out[:, 4] = lead_i - lead_ii / 2.0
  out[:, 5] = lead_ii - lead_i / 2.0
  out[:, 6:] = core[:, 2:]
  return out
