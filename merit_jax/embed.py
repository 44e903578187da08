"""ECG embeddings from a trained MERIT checkpoint (command line and Python API).

  python -m merit_jax.embed --checkpoint=RUN_DIR --input=ecgs.npy --output=emb.npy \
      [--sample_rate=500] [--batch_size=64] [--kind=pooled|projected]
  python -m merit_jax.embed --checkpoint=RUN_DIR --input=wfdb_folder/ --output=emb.npy

Input: a .npy array shaped (N, samples, 12) in mV, samples-major as ECGs usually come (it is
transposed to the (leads, samples) layout internally), sampled at --sample_rate (default the
checkpoint's own rate); or a folder of WFDB records (.hea + .dat/.mat, searched recursively,
sorted by path; each record's own rate and lead order from its header). Every ECG goes through
the checkpoint's own preprocessing (resample, band-pass, crop/pad, normalisation), so callers
never have to know how the model was trained. A WFDB folder also writes `<output>.records.txt`
with the record names in row order.

Kinds: `pooled` (default) = the encoder's mean-pooled token features, what a linear probe
uses; `projected` = the L2-normalised projection into the shared ECG-text space (retrieval,
zero-shot).

Recordings longer than the model's window (10 s by default): `--windows=mean` (default) embeds
every consecutive window (`preprocess.preprocess_windows`; the last one aligned to the end)
and averages the embeddings (a projected mean is re-normalised), so a 60 s ECG is six windows,
not its middle 10 s; the command says how many records were longer. `--windows=center` keeps
only the centred window, as training's evaluation does.

Python: `embed_ecgs(checkpoint_dir, signals, sample_rate=None, kind='pooled')`, or
`encoder.Encoder.from_checkpoint(checkpoint_dir).embed_recordings(records)` for recordings of
different lengths and rates; this module only reads inputs and writes outputs.
"""

from __future__ import annotations

import functools
import os
import pathlib
import sys
from typing import Any

from absl import app
from absl import flags
from absl import logging as absl_logging
import numpy as np

from merit_jax import atomic_files
from merit_jax import cli
from merit_jax import encoder as encoder_lib

KINDS = ("pooled", "projected")
WINDOWS = encoder_lib.WINDOWS
NUM_LEADS = 12

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Training run dir (or its checkpoints/).")
_INPUT = flags.DEFINE_string("input", None, ".npy (N, samples, 12) in mV, or a WFDB folder.")
_OUTPUT = flags.DEFINE_string("output", None, "Output .npy, (N, dim) float32.")
_SAMPLE_RATE = flags.DEFINE_float("sample_rate", None,
                                  "Rate of a .npy input in Hz (default: the checkpoint's).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "ECGs per forward pass.")
_KIND = flags.DEFINE_enum("kind", "pooled", list(KINDS), "Which embedding to write.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_WINDOWS = flags.DEFINE_enum("windows", "mean", list(WINDOWS),
                             "Records longer than the model window: average every window's "
                             "embedding (mean) or keep the centred window only (center).")


@functools.lru_cache(maxsize=4)
def _encoder(checkpoint_dir: str, step: int | None, batch_size: int) -> encoder_lib.Encoder:
  """Loads a checkpoint once per process (and batch size)."""
  return encoder_lib.Encoder.from_checkpoint(checkpoint_dir, step, batch_size)


def load_encoder(checkpoint_dir: str, step: int | None = None,
                 batch_size: int = 64) -> encoder_lib.Encoder:
  """The run's `Encoder`, cached per process."""
  if batch_size <= 0:
    raise ValueError(f"batch_size must be > 0, got {batch_size}")
  return _encoder(os.path.abspath(os.path.expanduser(str(checkpoint_dir))), step,
                  int(batch_size))


def check_signals(signals: Any, where: str = "signals") -> np.ndarray:
  """Validates user ECGs shaped (N, samples, 12); returns float32 (N, 12, samples)."""
  signals = np.asarray(signals)
  if signals.ndim == 2 and signals.shape[-1] == NUM_LEADS:
    raise ValueError(f"{where}: got one ECG of shape {signals.shape}; pass a batch "
                     f"(N, samples, {NUM_LEADS}), e.g. signals[None]")
  if signals.ndim != 3 or signals.shape[-1] != NUM_LEADS:
    hint = ""
    if signals.ndim == 3 and signals.shape[1] == NUM_LEADS:
      hint = (f" (it looks leads-major, (N, {NUM_LEADS}, samples): transpose it with "
              "np.swapaxes(x, 1, 2))")
    raise ValueError(f"{where}: expected an array of shape (N, samples, {NUM_LEADS}) in mV, "
                     f"got {signals.shape}{hint}")
  if signals.shape[0] == 0 or signals.shape[1] == 0:
    raise ValueError(f"{where}: empty array of shape {signals.shape}")
  if not np.issubdtype(signals.dtype, np.number):
    raise ValueError(f"{where}: expected a numeric array, got dtype {signals.dtype}")
  return np.ascontiguousarray(np.swapaxes(signals.astype(np.float32), 1, 2))


def embed_records(checkpoint_dir: str, records, kind: str = "pooled", batch_size: int = 64,
                  step: int | None = None, progress: bool = False,
                  windows: str = "mean") -> np.ndarray:
  """Embeds [(signal (12, S) mV, rate)] records of any lengths and rates, one row each."""
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  encoder = load_encoder(checkpoint_dir, step, batch_size)
  return encoder.embed_recordings(records, windows=windows, kind=kind, progress=progress)


def embed_ecgs(checkpoint_dir: str, signals: Any, sample_rate: float | None = None,
               kind: str = "pooled", batch_size: int = 64, step: int | None = None,
               progress: bool = False, windows: str = "mean") -> np.ndarray:
  """Embeds ECGs with a trained checkpoint.

  Args:
    checkpoint_dir: a training run's workdir (or its checkpoints/ folder).
    signals: array (N, samples, 12) in mV, samples-major.
    sample_rate: the signals' rate in Hz; None = the checkpoint's own preprocessing rate.
    kind: 'pooled' (encoder features) or 'projected' (normalised ECG-text space).
    batch_size: ECGs per forward pass.
    step: checkpoint step; None = the latest.
    progress: show a progress bar over batches.
    windows: 'mean' embeds every model window of a longer record and averages them;
      'center' keeps the centred window only.

  Returns:
    float32 array (N, dim).
  """
  leads_major = check_signals(signals)
  if sample_rate is not None and not float(sample_rate) > 0:
    raise ValueError(f"sample_rate must be > 0 Hz, got {sample_rate}")
  records = [(leads_major[i], sample_rate) for i in range(leads_major.shape[0])]
  return embed_records(checkpoint_dir, records, kind, batch_size, step, progress, windows)


def read_wfdb_folder(folder: str) -> tuple[list[tuple[np.ndarray, float]], list[str]]:
  """All WFDB records under `folder` (recursive, sorted): ([(signal, rate)], names)."""
  from merit_jax.data import wfdb_io  # pylint: disable=g-import-not-at-top
  headers = sorted(pathlib.Path(folder).rglob("*.hea"))
  if not headers:
    raise FileNotFoundError(f"no WFDB records (*.hea) under {folder}")
  records, names = [], []
  for header in headers:
    base = str(header.with_suffix(""))
    try:
      record = wfdb_io.read_wfdb(base)
    except wfdb_io.RecordError as e:
      raise ValueError(f"cannot read WFDB record {base}: {e}") from e
    records.append((record.signal, float(record.sample_rate)))
    names.append(os.path.relpath(base, folder))
  return records, names


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for flag in (_CHECKPOINT, _INPUT, _OUTPUT):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required")
  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax restore chatter.
  source = os.path.expanduser(_INPUT.value)
  if not os.path.exists(source):
    sys.exit(f"merit_jax.embed: --input {source} does not exist")
  try:
    if os.path.isdir(source):
      records, names = read_wfdb_folder(source)
      emb = embed_records(_CHECKPOINT.value, records, _KIND.value, _BATCH_SIZE.value,
                          _STEP.value, progress=True, windows=_WINDOWS.value)
    else:
      if not source.endswith(".npy"):
        raise ValueError(f"--input {source}: expected a .npy file or a WFDB folder")
      names = None
      emb = embed_ecgs(_CHECKPOINT.value, np.load(source), _SAMPLE_RATE.value, _KIND.value,
                       _BATCH_SIZE.value, _STEP.value, progress=True, windows=_WINDOWS.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"merit_jax.embed: {e}")
  output = os.path.expanduser(_OUTPUT.value)
  # np.save names the file '<output>.npy' when `output` lacks the extension; so does this.
  npy_path = output if output.endswith(".npy") else output + ".npy"
  with atomic_files.replacing(npy_path, suffix=".npy") as tmp:
    np.save(tmp, emb)
  if names is not None:
    atomic_files.write_text(output + ".records.txt", "\n".join(names) + "\n")
  print(f"wrote {emb.shape[0]} embeddings of dim {emb.shape[1]} ({_KIND.value}) to {output}")


def cli_main():
  """The `merit-embed` / `python -m merit_jax.embed` program."""
  app.run(main, flags_parser=cli.make_flags_parser("merit_jax.embed"))


if __name__ == "__main__":
  cli_main()
