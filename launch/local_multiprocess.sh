#!/usr/bin/env bash
# Starts N local JAX processes on 127.0.0.1 that train one run together through
# jax.distributed (CPU collectives: gloo). Every process runs the same command; process 0
# logs and shows progress.
#
#   launch/local_multiprocess.sh N [--dry_run] <merit_jax.train flags...>
#   e.g. launch/local_multiprocess.sh 2 --config=configs/pretrain.py:quick --workdir=/tmp/merit_mp
#
# Environment: PORT (coordinator port, default 12355), DEVICES_PER_PROCESS (simulated CPU
# devices per process, default 1), PYTHON (default python), HEARTBEAT_TIMEOUT_S (seconds after
# which the survivors of a dead process stop, default 60).
#
# SIGTERM/SIGINT to this script is forwarded to every process: they agree on a step, save a
# checkpoint and exit 0; rerunning the same command resumes. The exit status is the first
# non-zero status of the processes (0 when all succeed).
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
heartbeat=${HEARTBEAT_TIMEOUT_S:-60}
coordinator="127.0.0.1:${port}"
# The user's flags, each quoted once, so values with spaces survive `bash -c`.
user_flags=""
if [[ $# -gt 0 ]]; then user_flags=$(printf ' %q' "$@"); fi

commands=()
for ((i = 0; i < num_processes; i++)); do
  commands+=("XLA_FLAGS=--xla_force_host_platform_device_count=${devices} JAX_PLATFORMS=cpu \
exec ${python} -m merit_jax.train --distributed=explicit --coordinator_address=${coordinator} \
--num_processes=${num_processes} --process_id=${i} --heartbeat_timeout_s=${heartbeat}${user_flags}")
done

if [[ $dry_run -eq 1 ]]; then
  printf '%s\n' "${commands[@]}"
  exit 0
fi

pids=()
forward() { for p in "${pids[@]}"; do kill -s "$1" "$p" 2>/dev/null || true; done; }
# Forward SIGTERM/SIGINT to every process so they agree on a step, checkpoint and exit.
trap 'forward TERM' TERM
trap 'forward INT' INT
for ((i = 0; i < num_processes; i++)); do
  bash -c "${commands[$i]}" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do
  while true; do
    rc=0
    wait "$p" || rc=$?
    # A trapped signal interrupts `wait` (rc > 128) while the process still runs: wait again.
    if kill -0 "$p" 2>/dev/null; then continue; fi
    break
  done
  if [[ $rc -ne 0 && $status -eq 0 ]]; then status=$rc; fi
done
exit $status
