#!/usr/bin/env bash
# Starts N local JAX processes on 127.0.0.1 that train one run together through
# jax.distributed (CPU collectives: gloo). Every process runs the same command; process 0
# logs and shows progress.
#
#   launch/local_multiprocess.sh N [--dry_run] <merit_jax.train flags...>
#
# Environment: PORT (coordinator port, default 12355), DEVICES_PER_PROCESS (simulated CPU
# devices per process, default 1), PYTHON (default python).
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ || "$1" -lt 1 ]]; then
  echo "usage: $0 N [--dry_run] <merit_jax.train flags...>   (N = number of processes >= 1)" >&2
  exit 2
fi
num_processes=$1; shift
dry_run=0
if [[ "${1:-}" == "--dry_run" ]]; then dry_run=1; shift; fi

port=${PORT:-12355}
devices=${DEVICES_PER_PROCESS:-1}
python=${PYTHON:-python}
coordinator="127.0.0.1:${port}"

commands=()
for ((i = 0; i < num_processes; i++)); do
  commands+=("XLA_FLAGS=--xla_force_host_platform_device_count=${devices} JAX_PLATFORMS=cpu \
${python} -m merit_jax.train --coordinator_address=${coordinator} \
--num_processes=${num_processes} --process_id=${i} $*")
done

if [[ $dry_run -eq 1 ]]; then
  printf '%s\n' "${commands[@]}"
  exit 0
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
# Forward SIGTERM/SIGINT to every process so they agree on a step, checkpoint and exit.
trap cleanup TERM INT
for ((i = 0; i < num_processes; i++)); do
  bash -c "${commands[$i]}" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
exit $status
