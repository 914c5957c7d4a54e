#!/usr/bin/env bash
# Usage: scripts/demo.sh [poisson-tf-train flags]   (the README's main job; run through `make demo`)
#
# The embedded default: poisson-tf-train's defaults (single-level training at 64^3, 800 steps, the `small` preset) on
# DEMO_WORKERS (default 2) Horovod workers on this host, then the validation rel_l2 against the AMG reference.
# --resume=auto: a second demo continues an interrupted one, or reports the finished run (--overwrite retrains).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${POISSON_TF_VENV:-$ROOT/.venv}
WORKERS=${DEMO_WORKERS:-2}
exec "$VENV/bin/horovodrun" -np "$WORKERS" -H "localhost:$WORKERS" \
  "$VENV/bin/poisson-tf-train" --resume=auto --model_dir="$ROOT/runs/demo" "$@"
