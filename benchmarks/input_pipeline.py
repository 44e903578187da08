"""Input pipeline throughput: built TFDS dataset -> device-ready global batches.

  python -m benchmarks.input_pipeline --data_dir=DIR [--name=synthetic_ecg] [--config=CONFIG]
      [--batch_size=256] [--steps=50] [--warmup=3] [--worker_count=0] [--num_threads=0]
      [--augment] [--sample_rate=100] [--json=out.json]

Runs `merit_jax.data.pipeline.make_train_iterator` at the default pretraining input (100 Hz,
1000 samples, 12 leads, z-score, report tokens max 64; `--sample_rate=500` for 500 Hz) on a mesh over all local devices and
times `--steps` batches after `--warmup` batches, waiting until each batch is on the devices.
The dataset's own `tokenizer.model` is used (trained first if missing).
"""

from __future__ import annotations

import json
import os
import platform
import time

from absl import app
from absl import flags
import jax
from jax.sharding import Mesh
import numpy as np

from configs import pretrain
from merit_jax.data import pipeline

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data dir with the built dataset.',
                                required=True)
_NAME = flags.DEFINE_string('name', 'synthetic_ecg', 'TFDS dataset name.')
_CONFIG = flags.DEFINE_string('config', None, 'Builder config (default: the only built one).')
_BATCH = flags.DEFINE_integer('batch_size', 256, 'Global batch size.')
_STEPS = flags.DEFINE_integer('steps', 50, 'Timed batches.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed batches first (thread start, caches).')
_WORKERS = flags.DEFINE_integer('worker_count', 0, 'Grain worker processes (0 = threads).')
_THREADS = flags.DEFINE_integer('num_threads', 0, 'Grain read threads (0 = min(8, cores)).')
_AUGMENT = flags.DEFINE_bool('augment', False, 'Enable crop/scale/noise/lead-dropout.')
_SEED = flags.DEFINE_integer('seed', 0, 'Pipeline seed.')
_RATE = flags.DEFINE_integer('sample_rate', 100, 'Input rate (10 s crops: 10 x rate samples).')
_JSON = flags.DEFINE_string('json', None, 'Also write the results to this JSON file.')


def data_config(data_dir: str, name: str = 'synthetic_ecg', config: str | None = None,
                worker_count: int = 0, num_threads: int = 0, augment: bool = False,
                sample_rate: int = 100) -> dict:
  # Every data key from the training config (its defaults), with the benchmark's values.
  cfg = pretrain.get_config().data.to_dict()
  cfg.update(name=name, config=config, data_dir=data_dir, sources=None, max_text_len=64,
             worker_count=worker_count, num_threads=num_threads)
  cfg['preprocess'].update(sample_rate=sample_rate, num_samples=10 * sample_rate,
                           bandpass=None, normalize='zscore')
  cfg['tokenizer'].update(kind='sentencepiece', path=None)
  cfg['augment'] = {'enabled': False}
  if augment:
    cfg['augment'] = {'enabled': True, 'crop': True, 'scale': (0.9, 1.1), 'noise_std': 0.05,
                      'lead_dropout': 0.1}
  return cfg


def run_benchmark(data_dir: str, name: str = 'synthetic_ecg', config: str | None = None,
                  batch_size: int = 256, steps: int = 50, warmup: int = 3,
                  worker_count: int = 0, num_threads: int = 0, augment: bool = False,
                  seed: int = 0, sample_rate: int = 100) -> dict:
  """Times `steps` global batches (after `warmup`) until each is on the devices.

  Also called by benchmarks/train_step.py (`--input_data_dir`) to put the pipeline's ECGs/s
  beside the step's, at the same batch size and sample rate.
  """
  cfg = data_config(data_dir, name, config, worker_count, num_threads, augment, sample_rate)
  tokenizer = pipeline.load_data_tokenizer(cfg)
  devices = jax.devices()
  mesh = Mesh(np.array(devices).reshape(len(devices), 1), ('data', 'fsdp'))
  start = time.perf_counter()
  iterator = pipeline.make_train_iterator(cfg, mesh, batch_size, seed, tokenizer)
  with iterator:
    jax.block_until_ready(next(iterator))
    first_batch_s = time.perf_counter() - start
    for _ in range(max(0, warmup - 1)):
      jax.block_until_ready(next(iterator))
    times = []
    for _ in range(steps):
      t0 = time.perf_counter()
      batch = jax.block_until_ready(next(iterator))
      times.append(time.perf_counter() - t0)
  total = float(np.sum(times))
  return {
      'dataset': '/'.join(pipeline.builder_dir(pipeline.primary_source(cfg)).parts[-3:]),
      'train_records': pipeline.split_size(cfg, 'train'),
      'batch_size': batch_size,
      'sample_rate': sample_rate,
      'steps': steps,
      'batch_shapes': {k: list(v.shape) for k, v in batch.items()},
      'devices': f'{len(devices)} x {devices[0].platform}',
      'host_cpus': os.cpu_count(),
      'worker_count': worker_count,
      'num_threads': num_threads or min(8, os.cpu_count() or 1),
      'augment': augment,
      'records_per_s': batch_size * steps / total,
      'ms_per_batch_mean': 1e3 * total / steps,
      'ms_per_batch_p90': 1e3 * float(np.percentile(times, 90)),
      'first_batch_s': first_batch_s,
      'load_average_1m': os.getloadavg()[0],
      'python': platform.python_version(),
  }


def main(argv):
  del argv
  result = run_benchmark(
      _DATA_DIR.value, _NAME.value, _CONFIG.value, _BATCH.value, _STEPS.value, _WARMUP.value,
      _WORKERS.value, _THREADS.value, _AUGMENT.value, _SEED.value, _RATE.value)
  rows = [(k, f'{v:.1f}' if isinstance(v, float) else str(v)) for k, v in result.items()]
  width = max(len(k) for k, _ in rows)
  print('\ninput pipeline: TFDS ArrayRecord -> Grain -> device batches')
  print('-' * (width + 30))
  for key, value in rows:
    print(f'{key:<{width}}  {value}')
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(result, f, indent=2)
    print(f'wrote {_JSON.value}')


if __name__ == '__main__':
  app.run(main)
