"""A tiny TFDS builder with the merit_jax example schema, for pipeline/tokenizer tests.

It lives in an importable module (TFDS registers builder classes by module) and writes
ArrayRecord files without TensorFlow. Records are deterministic functions of their index, so a
test can recompute what any record should contain: `ecg_id = id_offset + 100 * split_code +
index` (the config's `id_offset` tells two configs apart in a mixture), the signal's lead 0 is a
constant equal to the ecg_id (integers <= 2048 are exact in float16; other leads are sines), and
the report names the ecg_id.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from merit_jax.data import schema as features

SPLIT_SIZES = {'train': 24, 'validation': 7, 'test': 5}
SPLIT_CODES = {'train': 1, 'validation': 2, 'test': 3}
LABEL_SIZES = {'super': 5, 'rhythm': 3}
WORDS = ('sinus', 'rhythm', 'normal', 'ecg', 'left', 'axis', 'deviation', 'atrial',
         'fibrillation', 'st', 'depression', 'inferior', 'leads', 'borderline', 'vorhofflimmern')


def toy_ecg_id(split: str, index: int, id_offset: int = 0) -> int:
  return id_offset + 100 * SPLIT_CODES[split] + index


def toy_report(ecg_id: int, empty_every: int = 0) -> str:
  if empty_every and ecg_id % empty_every == 0:
    return ''
  rng = np.random.default_rng(ecg_id)
  words = rng.choice(WORDS, size=int(rng.integers(3, 9)))
  return f'record {ecg_id} ' + ' '.join(words)


def _make_example(split: str, index: int, cfg: 'ToyEcgConfig'):
  num_samples, sample_rate = cfg.num_samples, cfg.sample_rate
  ecg_id = toy_ecg_id(split, index, cfg.id_offset)
  t = np.arange(num_samples) / sample_rate
  signal = np.stack([np.sin(2 * np.pi * (1 + lead) * t + index) for lead in range(12)])
  signal[0] = ecg_id  # lead 0 identifies the record after decoding
  labels = {task: (np.arange(n) == ecg_id % n).astype(np.uint8)
            for task, n in LABEL_SIZES.items()}
  return {
      'signal': signal.astype(np.float16),
      'sample_rate': sample_rate,
      'unit': cfg.unit,
      'report': toy_report(ecg_id, cfg.empty_every),
      'ecg_id': ecg_id,
      'patient_id': ecg_id // 2,
      'age': np.float32(50 + index % 30),
      'sex': index % 2,
      'fold': index % 10 + 1,
      'labels': labels,
  }


class ToyEcgConfig(tfds.core.BuilderConfig):
  """Signal shape/rate/unit; `empty_every` > 0 blanks some reports; `id_offset` shifts ecg_ids."""

  def __init__(self, *, num_samples: int, sample_rate: int, unit: str = 'mV',
               empty_every: int = 0, id_offset: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.num_samples = num_samples
    self.sample_rate = sample_rate
    self.unit = unit
    self.empty_every = empty_every
    self.id_offset = id_offset


class ToyEcg(tfds.core.GeneratorBasedBuilder):
  """Deterministic toy ECG–report dataset (12 leads, float16 signals)."""

  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIGS = [
      ToyEcgConfig(name='100hz', num_samples=250, sample_rate=100),
      ToyEcgConfig(name='250hz', num_samples=500, sample_rate=250, unit='NU', empty_every=4,
                   id_offset=500),
      ToyEcgConfig(name='noreports', num_samples=250, sample_rate=100, empty_every=1,
                   id_offset=1000),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return self.dataset_info_from_configs(
        features=features.ecg_features(cfg.num_samples, LABEL_SIZES),
        metadata=tfds.core.MetadataDict(
            label_names={task: [f'{task}_{i}' for i in range(n)]
                         for task, n in LABEL_SIZES.items()}),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in SPLIT_SIZES}

  def _generate_examples(self, split):
    for index in range(SPLIT_SIZES[split]):
      yield index, _make_example(split, index, self.builder_config)


def build(data_dir, config: str = '100hz') -> ToyEcg:
  """Builds (or reuses) the toy dataset under data_dir as ArrayRecord; returns the builder."""
  builder = ToyEcg(config=config, data_dir=str(data_dir))
  builder.download_and_prepare(file_format='array_record')
  return builder
