#!/usr/bin/env bash
# Cloud TPU pod job: create the TPU VM, install merit_jax on every worker, start the same
# training command on all workers, stream worker 0's log, tear the TPU down at the end.
#
#   launch/tpu_pod.sh [--dry_run] NAME ZONE ACCELERATOR_TYPE GCS_WORKDIR <merit_jax.train flags...>
#   e.g. launch/tpu_pod.sh merit-v4 us-central2-b v4-32 gs://bucket/runs/merit --config=configs/pretrain.py
#
# Environment: TPU_VERSION (runtime, default tpu-ubuntu2204-base), REPO_URL (git URL of
# merit_jax), KEEP_TPU=1 to skip the teardown, SPOT=1 for a spot/preemptible VM,
# HEARTBEAT_TIMEOUT_S (default 120: survivors of a dead worker stop instead of hanging).
# A maintenance event or spot preemption sends SIGTERM: the workers agree on a step, write a
# checkpoint to GCS_WORKDIR and exit 0; rerun this script with the same GCS_WORKDIR to resume.
set -euo pipefail

dry_run=0
if [[ "${1:-}" == "--dry_run" ]]; then dry_run=1; shift; fi
if [[ $# -lt 4 ]]; then
  echo "usage: $0 [--dry_run] NAME ZONE ACCELERATOR_TYPE GCS_WORKDIR <train flags...>" >&2
  exit 2
fi
name=$1 zone=$2 accel=$3 workdir=$4; shift 4
version=${TPU_VERSION:-tpu-ubuntu2204-base}
repo_url=${REPO_URL:-https://github.com/merit-jax/merit_jax.git}
spot_flag=""; [[ "${SPOT:-0}" == "1" ]] && spot_flag="--spot"

run() {
  if [[ $dry_run -eq 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

run gcloud compute tpus tpu-vm create "$name" --zone="$zone" \
  --accelerator-type="$accel" --version="$version" $spot_flag
run gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command \
  "git clone ${repo_url} merit_jax || (cd merit_jax && git pull); cd merit_jax && \
pip install -r requirements.txt 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
# jax.distributed.initialize() auto-detects the TPU pod topology: the same command on all workers.
user_flags=""
if [[ $# -gt 0 ]]; then user_flags=$(printf ' %q' "$@"); fi
run gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command \
  "cd merit_jax && nohup python -m merit_jax.train --distributed=auto \
--heartbeat_timeout_s=${HEARTBEAT_TIMEOUT_S:-120} --workdir=${workdir}${user_flags} > train.log 2>&1 &"
run gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=0 --command \
  "tail -n +1 -F merit_jax/train.log & while pgrep -f merit_jax.train >/dev/null; do sleep 30; done; kill %1"
if [[ "${KEEP_TPU:-0}" != "1" ]]; then
  run gcloud compute tpus tpu-vm delete "$name" --zone="$zone" --quiet
fi
