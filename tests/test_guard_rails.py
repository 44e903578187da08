"""Guard rails: abort after too many non-finite steps; refuse checkpoints of another model.

One in-process run with an absurd learning rate blows the parameters up after its first step,
so every later step is skipped as non-finite until the run aborts; its workdir (with a
checkpoint of the tiny test model) then serves the config-mismatch checks on resume, in
`load_for_inference` and on the command line.
"""

import json
import shutil
import subprocess
import sys

import pytest

from configs import pretrain
from merit_jax import checkpoint as checkpoint_lib
from merit_jax import train
from tests import train_procs

LIMIT = 3


def _config(data_root):
  config = pretrain.get_config("test")
  config.data.name = "synthetic_ecg"
  config.data.config = train_procs.DATA_CONFIG
  config.data.data_dir = str(data_root / "tfds")
  config.data.manual_dir = str(data_root / "manual")
  config.total_steps = 8
  config.log_every = 2
  config.checkpoint_every = 2
  config.eval_every = 8
  config.max_consecutive_nonfinite = LIMIT
  return config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return train_procs.build_synthetic(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def diverged_run(tmp_path_factory, data_root):
  """(workdir, abort message) of a run whose steps 2.. are all non-finite."""
  workdir = tmp_path_factory.mktemp("diverged") / "run"
  config = _config(data_root)
  config.optim.lr = 1e30  # Step 1 moves every weight by ~1e30: the next forward overflows.
  config.optim.warmup_steps = 0
  with pytest.raises(FloatingPointError) as error:
    train.train_and_evaluate(config, str(workdir))
  return workdir, str(error.value)


def test_run_aborts_after_max_consecutive_nonfinite_steps(diverged_run):
  workdir, message = diverged_run
  # Step 1 is finite, 2..4 are skipped; the check at the step-4 log sees 3 in a row.
  assert "aborting at step 4" in message
  assert f"last {LIMIT} consecutive steps (steps 2-4" in message
  assert f"config.max_consecutive_nonfinite={LIMIT}" in message
  logged = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [e["step"] for e in logged] == [2, 4]
  # Logged values are means over the log window: steps 1-2 (one skipped), 3-4 (both).
  assert [e["skipped"] for e in logged] == [0.5, 1.0]
  assert checkpoint_lib.Checkpointer(str(workdir)).latest_step() == 2  # Saved before abort.


def test_resume_with_another_model_is_refused_naming_the_fields(diverged_run, data_root):
  workdir, _ = diverged_run
  before = (workdir / "config.json").read_text()
  config = _config(data_root)
  config.model.width = 64
  config.data.preprocess.num_samples = 500
  with pytest.raises(checkpoint_lib.IncompatibleCheckpointError) as error:
    train.train_and_evaluate(config, str(workdir))
  message = str(error.value)
  assert "model.width: checkpoint 32, config 64" in message
  assert "data.preprocess.num_samples: checkpoint 1000, config 500" in message
  assert "model.depth" not in message and "checkpoints/2" in message
  assert (workdir / "config.json").read_text() == before  # Refused before any write.


def test_compute_only_keys_may_change():
  saved = checkpoint_lib.config_to_json(pretrain.get_config("test"))
  current = pretrain.get_config("test")
  current.model.remat = True
  current.model.dtype = "bfloat16"
  current.optim.lr = 1.0  # Not a model key either.
  assert checkpoint_lib.config_differences(saved, checkpoint_lib.config_to_json(current)) == []
  current.model.text.depth = 3
  assert checkpoint_lib.config_differences(
      saved, checkpoint_lib.config_to_json(current)) == ["model.text.depth: checkpoint 1, "
                                                         "config 3"]


def test_a_key_added_after_the_checkpoint_counts_as_its_default():
  saved = checkpoint_lib.config_to_json(pretrain.get_config("test"))
  del saved["model"]["text"]["tune_blocks"]  # A run written before the key existed.
  current = pretrain.get_config("test")
  checkpoint_lib.check_compatible(saved, current, "old-run")
  current.model.text.tune_blocks = 2
  with pytest.raises(checkpoint_lib.IncompatibleCheckpointError,
                     match="model.text.tune_blocks: checkpoint 0, config 2"):
    checkpoint_lib.check_compatible(saved, current, "old-run")


def test_load_for_inference_refuses_a_config_json_of_another_model(diverged_run, tmp_path):
  workdir = tmp_path / "copy"
  shutil.copytree(diverged_run[0], workdir)
  config = json.loads((workdir / "config.json").read_text())
  config["model"]["depth"] = 4
  (workdir / "config.json").write_text(json.dumps(config))
  with pytest.raises(checkpoint_lib.IncompatibleCheckpointError,
                     match=r"model.depth: checkpoint 2, config 4"):
    checkpoint_lib.load_for_inference(str(workdir))


def test_command_line_refusal_is_one_clear_message(diverged_run, data_root, tmp_path):
  workdir, _ = diverged_run
  env = train_procs.child_env(tmp_path / "cache", 1)
  result = subprocess.run(
      [sys.executable, "-m", "merit_jax.train",
       *train_procs.train_flags(workdir, data_root, "--config.model.heads=4")],
      cwd=train_procs.REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1, result.stderr[-3000:]
  assert "merit_jax.train: checkpoint" in result.stderr
  assert "model.heads: checkpoint 2, config 4" in result.stderr
  assert "Traceback" not in result.stderr


def test_missing_config_file_is_one_line(tmp_path):
  # ml_collections only reports a missing file when the flag is first read, as a traceback.
  env = train_procs.child_env(tmp_path / "cache", 1)
  result = subprocess.run(
      [sys.executable, "-m", "merit_jax.train", "--config=configs/no_such_file.py",
       f"--workdir={tmp_path / 'run'}"],
      cwd=train_procs.REPO, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  assert "--config: config file 'configs/no_such_file.py' does not exist" in result.stderr
  assert not (tmp_path / "run").exists()
