"""Tests for merit_jax/embed.py: API vs CLI, preprocessing, WFDB folders, clear errors."""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from merit_jax import embed
from merit_jax.data import preprocess as preprocess_lib
from tests.test_checkpoint import make_fake_run

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("embed_run")
  config, state, _ = make_fake_run(workdir, seed=3)
  return workdir, config, state


@pytest.fixture(scope="module")
def signals():
  rng = np.random.default_rng(0)
  t = np.arange(1000) / 100.0
  base = np.sin(2 * np.pi * 1.2 * t)[None, :, None] * rng.uniform(0.5, 1.5, (5, 1, 12))
  return (base + 0.05 * rng.standard_normal((5, 1000, 12))).astype(np.float32)


def _reference(run_dir, signals, sample_rate, kind):
  """What the model gives for the preprocessed, leads-major signals."""
  workdir, config, state = run_dir
  from merit_jax.models import merit as merit_lib  # pylint: disable=g-import-not-at-top
  model = merit_lib.build_model(config)
  cfg = preprocess_lib.PreprocessConfig.from_config(config.data.preprocess)
  ecg = np.stack([preprocess_lib.preprocess(s.T, sample_rate, cfg) for s in signals])
  params = jax.device_get(state.params)
  return np.asarray(model.apply({"params": params}, ecg, method=model.embed_ecg)[kind])


@pytest.mark.parametrize("kind", ["pooled", "projected"])
def test_api_matches_model_on_preprocessed_input(run_dir, signals, kind):
  emb = embed.embed_ecgs(str(run_dir[0]), signals, sample_rate=100, kind=kind, batch_size=2)
  assert emb.shape[0] == 5 and emb.dtype == np.float32
  np.testing.assert_allclose(emb, _reference(run_dir, signals, 100, kind), atol=1e-5)
  if kind == "projected":
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", ["pooled", "projected"])
def test_long_recording_averages_every_window(run_dir, signals, kind):
  # 25 s at 100 Hz: windows 0-10 s, 10-20 s and 15-25 s (the last aligned to the end).
  long = np.concatenate([signals[0], signals[1], signals[2][:500]], axis=0)[None]
  assert long.shape == (1, 2500, 12)
  got = embed.embed_ecgs(str(run_dir[0]), long, sample_rate=100, kind=kind)
  windows = [long[:, :1000], long[:, 1000:2000], long[:, 1500:]]
  per_window = np.concatenate([_reference(run_dir, w, 100, kind) for w in windows])
  expected = per_window.mean(axis=0, keepdims=True)
  if kind == "projected":
    expected /= np.linalg.norm(expected)
  np.testing.assert_allclose(got, expected, atol=1e-5)
  # The old behaviour, kept by flag: the centred 10 s only.
  centre = embed.embed_ecgs(str(run_dir[0]), long, sample_rate=100, kind=kind, windows="center")
  np.testing.assert_allclose(centre, _reference(run_dir, long[:, 750:1750], 100, kind),
                             atol=1e-5)


def test_no_orbax_metadata_warning(tmp_path_factory, signals, caplog):
  # A fresh run (the module fixture's checkpoint is already loaded and cached by embed).
  workdir = tmp_path_factory.mktemp("embed_quiet")
  make_fake_run(workdir, seed=4)
  with caplog.at_level("WARNING"):
    embed.embed_ecgs(str(workdir), signals[:1], sample_rate=100)
  assert not [r for r in caplog.records if "Metadata file does not exist" in r.getMessage()]


def test_other_sample_rate_is_resampled(run_dir, signals):
  # 500 Hz input of the same 10 s: resampled to the checkpoint's 100 Hz internally.
  t = np.arange(5000) / 500.0
  fast = np.repeat(np.sin(2 * np.pi * 1.2 * t)[None, :, None], 12, axis=2).astype(np.float32)
  emb = embed.embed_ecgs(str(run_dir[0]), fast, sample_rate=500)
  np.testing.assert_allclose(emb, _reference(run_dir, fast, 500, "pooled"), atol=1e-5)


def test_cli_matches_api(run_dir, signals, tmp_path):
  np.save(tmp_path / "ecgs.npy", signals)
  out = tmp_path / "emb.npy"
  result = subprocess.run(
      [sys.executable, "-m", "merit_jax.embed", f"--checkpoint={run_dir[0]}",
       f"--input={tmp_path / 'ecgs.npy'}", f"--output={out}", "--batch_size=2"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stderr[-3000:]
  np.testing.assert_allclose(np.load(out), embed.embed_ecgs(str(run_dir[0]), signals,
                                                            batch_size=2), atol=1e-6)


def test_wfdb_folder(run_dir, signals, tmp_path):
  import wfdb  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "records"
  folder.mkdir()
  names = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
  for i in range(2):
    wfdb.wrsamp(f"rec{i}", fs=100, units=["mV"] * 12, sig_name=names,
                p_signal=signals[i].astype(np.float64), fmt=["16"] * 12, adc_gain=[1000.0] * 12,
                baseline=[0] * 12, write_dir=str(folder))
  records, record_names = embed.read_wfdb_folder(str(folder))
  assert record_names == ["rec0", "rec1"]
  emb = embed.embed_records(str(run_dir[0]), records)
  np.testing.assert_allclose(emb, embed.embed_ecgs(str(run_dir[0]), signals[:2]), atol=1e-3)


def test_clear_errors(run_dir, tmp_path):
  ckpt = str(run_dir[0])
  with pytest.raises(ValueError, match=r"expected an array of shape \(N, samples, 12\).*"
                                       r"leads-major"):
    embed.embed_ecgs(ckpt, np.zeros((2, 12, 1000)))
  with pytest.raises(ValueError, match="one ECG of shape"):
    embed.embed_ecgs(ckpt, np.zeros((1000, 12)))
  with pytest.raises(ValueError, match="sample_rate must be > 0"):
    embed.embed_ecgs(ckpt, np.zeros((1, 1000, 12)), sample_rate=0)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    embed.embed_ecgs(str(tmp_path / "nope"), np.zeros((1, 1000, 12)))
  with pytest.raises(FileNotFoundError, match="no WFDB records"):
    embed.read_wfdb_folder(str(tmp_path))
  result = subprocess.run(
      [sys.executable, "-m", "merit_jax.embed", f"--checkpoint={ckpt}",
       f"--input={tmp_path / 'missing.npy'}", f"--output={tmp_path / 'o.npy'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode != 0 and "missing.npy does not exist" in result.stderr


def test_bad_flag_is_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "merit_jax.embed", "--checkpoint=x", "--input=y", "--output=z",
       "--windows=all"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  assert "merit_jax.embed:" in result.stderr and "--windows" in result.stderr
