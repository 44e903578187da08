"""Training-time ECG augmentations, off by default (`config.data.augment.enabled=False`).

All randomness comes from the numpy Generator passed in, so a pipeline that seeds one Generator
per record (Grain's `random_map`) is deterministic. Augmentations act on the preprocessed,
normalised signal, so `noise_std` is in units of the per-lead standard deviation.

Random cropping needs the record before it is cut to length, so it is done by
`preprocess.preprocess(..., rng=...)`: the pipeline passes an rng there when `enabled` and
`crop` are both set. `augment()` does amplitude scaling, Gaussian noise and lead dropout.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from merit_jax.data import preprocess


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Augmentation settings; the fields of `config.data.augment`.

  Attributes:
    enabled: master switch; nothing below applies when False.
    crop: random crop offset (applied by preprocess) instead of the centre crop.
    scale: None/0 (off), (low, high), or s > 0 meaning (1 - s, 1 + s): every lead is
      multiplied by its own U(low, high) factor.
    noise_std: standard deviation of added white Gaussian noise (0 = off).
    lead_dropout: probability of zeroing each lead (at least one lead is always kept).
  """
  enabled: bool = False
  crop: bool = False
  scale: tuple[float, float] | float | None = None
  noise_std: float = 0.0
  lead_dropout: float = 0.0

  def __post_init__(self):
    if isinstance(self.scale, (int, float)):
      if not 0 <= self.scale < 1:
        raise ValueError(f'augment.scale as a number must be in [0, 1), got {self.scale}')
      object.__setattr__(self, 'scale', (1 - self.scale, 1 + self.scale) if self.scale else None)
    if self.scale is not None:
      lo, hi = (float(v) for v in self.scale)
      if not 0 < lo <= hi:
        raise ValueError(
            f'augment.scale must be (low, high) with 0 < low <= high, got {self.scale}')
      object.__setattr__(self, 'scale', (lo, hi))
    if self.noise_std < 0:
      raise ValueError(f'augment.noise_std must be >= 0, got {self.noise_std}')
    if not 0 <= self.lead_dropout < 1:
      raise ValueError(f'augment.lead_dropout must be in [0, 1), got {self.lead_dropout}')

  @classmethod
  def from_config(cls, cfg: Any = None) -> 'AugmentConfig':
    """Builds from a ConfigDict / dict / AugmentConfig / None (defaults); unknown keys fail."""
    kw = preprocess.config_fields(cls, cfg, 'data.augment')
    if isinstance(kw, cls):
      return kw
    if isinstance(kw.get('scale'), (list, tuple)):
      kw['scale'] = tuple(kw['scale'])
    return cls(**kw)

  @property
  def random_crop(self) -> bool:
    return self.enabled and self.crop


def augment(signal: np.ndarray, rng: np.random.Generator, cfg: Any = None) -> np.ndarray:
  """Applies the enabled augmentations to one float32 (leads, samples) signal.

  Returns the input unchanged when `cfg.enabled` is False; never modifies it in place.
  """
  cfg = AugmentConfig.from_config(cfg)
  if not cfg.enabled:
    return signal
  x = np.array(signal, dtype=np.float32, copy=True)
  num_leads = x.shape[0]
  if cfg.scale is not None:
    x *= rng.uniform(cfg.scale[0], cfg.scale[1], size=(num_leads, 1)).astype(np.float32)
  if cfg.noise_std > 0:
    x += rng.normal(0.0, cfg.noise_std, size=x.shape).astype(np.float32)
  if cfg.lead_dropout > 0:
    drop = rng.random(num_leads) < cfg.lead_dropout
    if drop.all():  # an all-zero ECG carries nothing to learn from
      drop[rng.integers(num_leads)] = False
    x[drop] = 0.0
  return x
