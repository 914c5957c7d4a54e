#!/usr/bin/env bash
# Usage: scripts/demo.sh   (the README's main job on the embedded default; run through `make demo`)
#
# Until multigrid training lands, the most complete real thing: a KL diffusivity sample solved by the
# AMG reference solver at 64^3, written to runs/demo/solution.h5 + .xdmf for ParaView.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${POISSON_TF_VENV:-$ROOT/.venv}
exec "$VENV/bin/poisson-tf-solve" --coeffs=1.0,-2.0,1.5,0.5 --resolution=64 --output="$ROOT/runs/demo/solution.h5" "$@"
