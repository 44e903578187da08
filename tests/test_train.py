"""End-to-end tests of merit_jax/train.py on a tiny synthetic dataset.

Training runs are subprocesses of `python -m merit_jax.train` (the real entry point) sharing a
persistent XLA compilation cache, so only the first one pays for compilation. One run of 8
steps serves the output checks; a second is SIGKILLed after its first checkpoint and restarted,
and must end with the same parameters as the uninterrupted one.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import matplotlib.image
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TOTAL_STEPS = 8
DATA_CONFIG = "n64_s0"  # 64 synthetic records (52 train / 6 validation / 6 test).


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
  """64 synthetic ECG-report records built once as TFDS ArrayRecord (+ tokenizer)."""
  from merit_jax.data import build  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("synthetic")
  build.build("synthetic_ecg", manual_dir=str(root / "manual"), data_dir=str(root / "tfds"),
              config=DATA_CONFIG, tokenizer_vocab_size=300)
  return root


@pytest.fixture(scope="module")
def run_env(tmp_path_factory):
  cache = tmp_path_factory.mktemp("xla_cache")
  # One device: these runs test the run directory and resume, not collectives (covered by
  # test_step / test_fsdp / test_multihost). With 2 simulated CPU devices a run aborted once
  # in XLA's in-process AllGather (AwaitAndLogIfStuck) before it could be killed.
  return dict(os.environ, JAX_PLATFORMS="cpu",
              XLA_FLAGS="--xla_force_host_platform_device_count=1",
              JAX_COMPILATION_CACHE_DIR=str(cache),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def _command(workdir, data_root, *extra):
  return [sys.executable, "-m", "merit_jax.train", "--config=configs/pretrain.py:test",
          f"--workdir={workdir}",
          "--config.data.name=synthetic_ecg", f"--config.data.config={DATA_CONFIG}",
          f"--config.data.data_dir={data_root / 'tfds'}",
          f"--config.data.manual_dir={data_root / 'manual'}",
          f"--config.total_steps={TOTAL_STEPS}", "--config.checkpoint_every=2",
          "--config.eval_every=4", "--config.log_every=2", *extra]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synthetic_data, run_env):
  workdir = tmp_path_factory.mktemp("run") / "uninterrupted"
  # With the linear probe of config.evals: an evaluator with every=0 runs at the end only.
  result = subprocess.run(
      _command(workdir, synthetic_data,
               "--config.eval.evaluators=('retrieval', 'linear_probe')"),
      cwd=REPO, env=run_env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def _final_params(workdir, step=TOTAL_STEPS):
  path = pathlib.Path(workdir) / "checkpoints" / str(step) / "state"
  restored = ocp.PyTreeCheckpointer().restore(str(path))
  return jax.tree.map(np.asarray, restored["params"])


def test_run_directory_contents(finished_run):
  workdir = finished_run
  entries = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  train = [e for e in entries if "split" not in e]
  val = [e for e in entries if e.get("split") == "validation"]
  assert [e["step"] for e in train] == [2, 4, 6, 8]
  for e in train:
    assert np.isfinite(e["loss"]) and "mi_signal_nats" in e and "mi_text_nats" in e
    assert "lr" in e and "steps_per_sec" in e
  assert [e["step"] for e in val] == [4, 8]
  for e in val:
    assert np.isfinite(e["val_loss"]) and np.isfinite(e["val_rec_loss"])
    # The retrieval evaluator of config.evals, on the validation split.
    assert 0 <= e["retrieval/ecg_to_report/R@1"] <= 1
    # Chance level of R@1 over N distinct reports is about 1/N.
    assert 0 < e["retrieval/chance/ecg_to_report/R@1"] <= 1 / e["val_records"] * 2
  events = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert events and events[0].stat().st_size > 0
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                if p.name.isdigit()) == [4, 6, 8]  # keep_checkpoints=3 of every 2 steps
  assert len([p for p in (workdir / "checkpoints_best").iterdir() if p.name.isdigit()]) == 1
  pngs = sorted((workdir / "plots").glob("reconstruction_*.png"))
  assert [p.name for p in pngs] == ["reconstruction_0000004.png", "reconstruction_0000008.png"]
  images = [matplotlib.image.imread(str(p))[..., :3] for p in pngs]
  for image in images:
    red, green, blue = np.moveaxis(image, -1, 0)
    # Originals in black, reconstructions in (semi-transparent, antialiased) red, masked
    # patches shaded light grey (0.9).
    assert (image.max(-1) < 0.2).sum() > 1000
    assert (red - np.maximum(green, blue) > 0.3).sum() > 1000
    assert (np.abs(image - 0.9).max(-1) < 0.02).sum() > 10_000
  # Four more steps changed the reconstructions.
  assert images[0].shape == images[1].shape and np.abs(images[0] - images[1]).max() > 0.3
  config = json.load(open(workdir / "config.json"))
  assert config["data"]["config"] == DATA_CONFIG and config["model"]["text"]["vocab_size"] > 4
  assert (workdir / "tokenizer.model").stat().st_size > 0
  summary = json.load(open(workdir / "summary.json"))
  assert summary["final_step"] == TOTAL_STEPS and summary["resumed_from"] == 0
  assert summary["evals"]["retrieval"]["retrieval"]["num_queries"] == val[-1]["val_records"]
  probe_key = "linear_probe/superdiagnostic/1.0/macro_auroc"
  assert probe_key not in val[0] and 0 <= val[1][probe_key] <= 1
  probe = summary["evals"]["linear_probe"]["linear_probe"]["superdiagnostic"]["1.0"]
  assert probe["macro_auroc"]["mean"] == val[1][probe_key]
  assert probe["runs"][0]["subset_size"] == 52  # Every training record of n64_s0.


@pytest.mark.filterwarnings("ignore:Sharding info not provided")
def test_sigkill_then_resume_matches_uninterrupted_run(finished_run, synthetic_data, run_env,
                                                       tmp_path):
  workdir = tmp_path / "killed"
  ckpt_dir = workdir / "checkpoints"
  log_path = tmp_path / "killed_run.log"
  log = open(log_path, "w")
  # The same training as the uninterrupted run; its validation (steps 4 and 8) without the
  # reconstruction plots and the evaluators, which test_run_directory_contents checks and which
  # do not touch the training state: the final parameters must match all the same.
  command = _command(workdir, synthetic_data, "--config.eval.num_plot_ecgs=0",
                     "--config.eval.evaluators=()")
  proc = subprocess.Popen(command, cwd=REPO, env=run_env, stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
      if ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir()):
        break
      time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
    log.close()
  assert proc.returncode == -signal.SIGKILL, (
      f"the run ended (rc {proc.returncode}) before it could be killed:\n"
      + log_path.read_text()[-3000:])
  complete = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
  assert complete and complete[-1] < TOTAL_STEPS

  result = subprocess.run(command, cwd=REPO, env=run_env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.load(open(workdir / "summary.json"))
  assert 0 < summary["resumed_from"] < TOTAL_STEPS
  resumed, reference = _final_params(workdir), _final_params(finished_run)
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(reference)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
  # The resumed run logged the remaining steps with the same losses.
  def losses(w):
    return {e["step"]: e["loss"] for e in map(json.loads, open(w / "metrics.jsonl"))
            if "split" not in e}
  resumed_losses, reference_losses = losses(workdir), losses(finished_run)
  for step in range(summary["resumed_from"] + 2, TOTAL_STEPS + 1, 2):
    np.testing.assert_allclose(resumed_losses[step], reference_losses[step], rtol=1e-5)
