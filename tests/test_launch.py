"""Launchers: shell syntax and dry-run output (nothing is started)."""

import os
import pathlib
import subprocess

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[1] / "launch"
SCRIPTS = ["local_multiprocess.sh", "slurm_gpu.sbatch", "tpu_pod.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_launcher_parses(script):
  subprocess.run(["bash", "-n", str(LAUNCH / script)], check=True)


def test_local_multiprocess_dry_run_prints_one_command_per_process():
  out = subprocess.run(
      ["bash", str(LAUNCH / "local_multiprocess.sh"), "3", "--dry_run",
       "--config=configs/pretrain.py:quick", "--workdir=/tmp/x"],
      check=True, capture_output=True, text=True).stdout.strip().splitlines()
  assert len(out) == 3
  for i, line in enumerate(out):
    assert f"--process_id={i}" in line and "--num_processes=3" in line
    assert "--coordinator_address=127.0.0.1:" in line and "--workdir=/tmp/x" in line


def test_local_multiprocess_rejects_bad_count():
  res = subprocess.run(["bash", str(LAUNCH / "local_multiprocess.sh"), "zero"],
                       capture_output=True, text=True)
  assert res.returncode == 2 and "usage" in res.stderr


def test_slurm_dry_run():
  env = dict(os.environ, DRY_RUN="1")
  out = subprocess.run(["bash", str(LAUNCH / "slurm_gpu.sbatch"), "--workdir=/w"],
                       check=True, capture_output=True, text=True, env=env).stdout
  assert out.startswith("srun ") and "merit_jax.train --distributed=auto --workdir=/w" in out


def test_tpu_pod_dry_run_creates_runs_and_tears_down():
  out = subprocess.run(
      ["bash", str(LAUNCH / "tpu_pod.sh"), "--dry_run", "merit", "us-central2-b", "v4-32",
       "gs://bucket/run", "--config=configs/pretrain.py"],
      check=True, capture_output=True, text=True).stdout.splitlines()
  assert "tpu-vm create merit" in out[0]
  assert any("merit_jax.train" in line and "--worker=all" in line for line in out)
  assert "tpu-vm delete merit" in out[-1]
