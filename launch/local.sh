#!/usr/bin/env bash
# Usage: [DRY_RUN=1] launch/local.sh NUM_WORKERS [poisson-tf-train flags...]
#
# NUM_WORKERS Horovod workers on this host (MPI; GLOO=1 selects Gloo), each with cores/NUM_WORKERS TF threads.
# --resume=auto: the same command continues an interrupted run (flags after it override, e.g. --overwrite).
# DRY_RUN=1 prints the exact command instead of running it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${POISSON_TF_VENV:-$ROOT/.venv}
NP=${1:?usage: launch/local.sh NUM_WORKERS [poisson-tf-train flags...]}
shift
THREADS=$(( $(nproc) / NP > 0 ? $(nproc) / NP : 1 ))
cmd=("$VENV/bin/horovodrun" -np "$NP" -H "localhost:$NP" ${GLOO:+--gloo}
     "$VENV/bin/python" -m poisson_tf.train --resume=auto --threads="$THREADS" "$@")
if [ "${DRY_RUN:-0}" = 1 ]; then printf '%q ' "${cmd[@]}"; echo; else exec "${cmd[@]}"; fi
