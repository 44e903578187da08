"""Random-convolution features: the classical reference encoder (ROCKET-style, in JAX).

ROCKET (Dempster, Petitjean & Webb, 2020) transforms a series with many random 1-D convolution
kernels and summarises each output by two numbers: the proportion of positive values (PPV) and
the maximum. A linear classifier on these features is a strong baseline for ECGs that needs no
training of the transform, so it is the first bar a pretrained encoder must clear.

Here every kernel is applied to every lead on its own (depthwise: the 12 leads share the kernel
bank), giving `2 * num_kernels * leads` features per ECG. Kernels follow ROCKET: length drawn
from {7, 9, 11}, weights N(0, 1) centred to zero mean, bias U(-1, 1), and a dilation
2^U(0, log2((S - 1) / (length - 1))). Two deliberate simplifications keep it fast and jittable:
dilations are rounded to the nearest power of two (as MiniRocket does), and every kernel uses
"same" zero padding, so kernels group into a few (length, dilation) convolutions.

Public API:
- `RandomConvFeatures(num_kernels=500, seed=0, num_samples=1000)`: draws the kernels (numpy
  generator seeded by `seed`, so the same seed gives the same kernels on every machine);
  `__call__(ecg (B, leads, S)) -> (B, 2 * num_kernels * leads)` float32, jitted per group;
  `transform(ecg, batch_size=64) -> (N, D)` for arrays of any size.
- `num_features(num_kernels, num_leads)`.

`encoder.Encoder.random_conv(num_kernels, seed, num_samples)` serves these features through
the same calls as a MERIT encoder (its `cache_key` is `RandomConvFeatures.cache_key`).

Feature layout: for each (length, dilation) group in sorted order, for each lead, the group's
kernels' PPV then max. The layout only has to be fixed per seed; the probe standardises it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

KERNEL_LENGTHS = (7, 9, 11)


def num_features(num_kernels: int, num_leads: int = 12) -> int:
  return 2 * num_kernels * num_leads


@functools.partial(jax.jit, static_argnames=("dilation",))
def _group_features(ecg, weights, biases, dilation: int):
  """PPV and max of one (length, dilation) group of kernels on every lead.

  Args:
    ecg: (B, leads, S) float32.
    weights: (K, length) kernels.
    biases: (K,).
    dilation: static dilation of the group.

  Returns:
    (B, leads, 2 * K): PPV of each kernel, then the max of each kernel.
  """
  b, leads, samples = ecg.shape
  x = ecg.reshape(b * leads, 1, samples)
  k = weights[:, None, :]  # (out=K, in=1, width)
  out = jax.lax.conv_general_dilated(x, k, window_strides=(1,), padding="SAME",
                                     rhs_dilation=(dilation,),
                                     dimension_numbers=("NCH", "OIH", "NCH"))
  out = out + biases[None, :, None]
  ppv = jnp.mean((out > 0).astype(jnp.float32), axis=-1)
  peak = jnp.max(out, axis=-1)
  return jnp.concatenate([ppv, peak], axis=-1).reshape(b, leads, -1)


class RandomConvFeatures:
  """A fixed bank of random dilated kernels (see module docstring)."""

  def __init__(self, num_kernels: int = 500, seed: int = 0, num_samples: int = 1000):
    if num_kernels < 1:
      raise ValueError(f"RandomConvFeatures: num_kernels must be >= 1, got {num_kernels}")
    if num_samples < max(KERNEL_LENGTHS):
      raise ValueError(f"RandomConvFeatures: num_samples={num_samples} is shorter than the "
                       f"longest kernel ({max(KERNEL_LENGTHS)})")
    self.num_kernels = int(num_kernels)
    self.seed = int(seed)
    self.num_samples = int(num_samples)
    rng = np.random.default_rng(self.seed)
    lengths = rng.choice(KERNEL_LENGTHS, size=num_kernels)
    groups: dict[tuple[int, int], list[tuple[np.ndarray, float]]] = {}
    for length in lengths:
      length = int(length)
      weights = rng.standard_normal(length)
      weights -= weights.mean()
      bias = rng.uniform(-1.0, 1.0)
      max_exponent = np.log2((num_samples - 1) / (length - 1))
      dilation = int(2 ** np.round(rng.uniform(0, max_exponent)))
      groups.setdefault((length, dilation), []).append((weights, bias))
    self.groups = [(length, dilation,
                    jnp.asarray(np.stack([w for w, _ in members]), jnp.float32),
                    jnp.asarray(np.array([b for _, b in members]), jnp.float32))
                   for (length, dilation), members in sorted(groups.items())]

  @property
  def cache_key(self) -> str:
    return f"random_conv-k{self.num_kernels}-s{self.seed}"

  def __call__(self, ecg) -> np.ndarray:
    ecg = jnp.asarray(ecg, jnp.float32)
    if ecg.ndim != 3:
      raise ValueError(f"RandomConvFeatures: expected ECGs (batch, leads, samples), got "
                       f"{ecg.shape}")
    parts = [_group_features(ecg, w, b, dilation=d) for _, d, w, b in self.groups]
    feats = jnp.concatenate(parts, axis=-1)  # (B, leads, 2K)
    return np.asarray(feats.reshape(ecg.shape[0], -1), np.float32)

  def transform(self, ecg, batch_size: int = 64) -> np.ndarray:
    """Features of an array of any length, in fixed-size batches (one compilation)."""
    ecg = np.asarray(ecg, np.float32)
    out = []
    for start in range(0, ecg.shape[0], batch_size):
      chunk = ecg[start:start + batch_size]
      real = chunk.shape[0]
      if real < batch_size and ecg.shape[0] > batch_size:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - real, axis=0)])
      out.append(self(chunk)[:real])
    return np.concatenate(out, axis=0)
