"""Launchers: shell syntax and dry-run output (nothing is started)."""

import os
import pathlib
import re
import subprocess

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[1] / "launch"
SCRIPTS = ["local_multiprocess.sh", "slurm_gpu.sbatch", "tpu_pod.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_launcher_parses(script):
  subprocess.run(["bash", "-n", str(LAUNCH / script)], check=True)


def test_local_multiprocess_dry_run_prints_one_command_per_process():
  env = dict(os.environ, PORT="23999", DEVICES_PER_PROCESS="2", HEARTBEAT_TIMEOUT_S="15")
  out = subprocess.run(
      ["bash", str(LAUNCH / "local_multiprocess.sh"), "3", "--dry_run",
       "--config=configs/pretrain.py:quick", "--workdir=/tmp/x y"],
      check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()
  assert len(out) == 3
  for i, line in enumerate(out):
    assert line.startswith("XLA_FLAGS=--xla_force_host_platform_device_count=2 ")
    assert "-m merit_jax.train --distributed=explicit" in line
    assert f"--process_id={i}" in line and "--num_processes=3" in line
    assert "--coordinator_address=127.0.0.1:23999" in line and "--heartbeat_timeout_s=15" in line
    assert line.endswith(r"--config=configs/pretrain.py:quick --workdir=/tmp/x\ y")


def _train_flag_names():
  """The absl flags merit_jax.train defines (parsed from its source: no JAX start-up)."""
  source = (LAUNCH.parent / "merit_jax" / "train.py").read_text()
  names = set(re.findall(r'flags\.DEFINE_\w+\(\s*"(\w+)"', source))
  names |= set(re.findall(r'config_flags\.DEFINE_config_file\(\s*"(\w+)"', source))
  return names


def test_launchers_only_pass_flags_that_train_defines():
  defined = _train_flag_names()
  assert {"config", "workdir", "distributed", "coordinator_address", "num_processes",
          "process_id", "heartbeat_timeout_s"} <= defined
  for script in SCRIPTS:
    text = (LAUNCH / script).read_text().replace("\\\n", " ")  # Join continued lines.
    calls = [line.split("merit_jax.train", 1)[1] for line in text.splitlines()
             if "-m merit_jax.train" in line]
    passed = {flag for call in calls for flag in re.findall(r"--(\w+)=", call)}
    assert "distributed" in passed, script
    assert passed <= defined, f"{script} passes {passed - defined}, unknown to merit_jax.train"


def test_local_multiprocess_rejects_bad_count():
  res = subprocess.run(["bash", str(LAUNCH / "local_multiprocess.sh"), "zero"],
                       capture_output=True, text=True)
  assert res.returncode == 2 and "usage" in res.stderr


def test_slurm_dry_run():
  env = dict(os.environ, DRY_RUN="1")
  out = subprocess.run(["bash", str(LAUNCH / "slurm_gpu.sbatch"), "--workdir=/w"],
                       check=True, capture_output=True, text=True, env=env).stdout
  assert out.startswith("srun ") and "exec python -m merit_jax.train --distributed=auto" in out
  assert "--heartbeat_timeout_s=120 --workdir=/w" in out


def test_tpu_pod_dry_run_creates_runs_and_tears_down():
  out = subprocess.run(
      ["bash", str(LAUNCH / "tpu_pod.sh"), "--dry_run", "merit", "us-central2-b", "v4-32",
       "gs://bucket/run", "--config=configs/pretrain.py"],
      check=True, capture_output=True, text=True).stdout.splitlines()
  assert "tpu-vm create merit" in out[0]
  assert any("merit_jax.train" in line and "--worker=all" in line for line in out)
  assert "tpu-vm delete merit" in out[-1]
