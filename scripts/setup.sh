#!/usr/bin/env bash
# Usage: scripts/setup.sh [--gpu]   (idempotent: OpenMPI, virtualenv, TensorFlow + poisson_tf, Horovod wheel)
#
# Environment: POISSON_TF_VENV (default: <checkout>/.venv), POISSON_TF_CACHE (Horovod wheel cache, default
# ~/.cache/poisson_tf), PYTHON (default: python3). --gpu installs tensorflow[and-cuda] instead of tensorflow-cpu.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${POISSON_TF_VENV:-$ROOT/.venv}
CACHE=${POISSON_TF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/poisson_tf}
PYTHON=${PYTHON:-python3}
HOROVOD_VERSION=0.28.1
DEVICE=cpu
[ "${1:-}" = "--gpu" ] && DEVICE=gpu

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

apt_install() {  # apt_install WHAT PACKAGES...: installs Debian packages as root, else says how to
  local what=$1; shift
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing $what through apt: $*"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    die "$what is missing; install it with: sudo apt-get install $* (on a cluster: module load openmpi gcc)"
  fi
}

# 1. System packages: a C++ toolchain and OpenMPI (headers + mpirun) to build and run Horovod.
command -v g++ >/dev/null && command -v make >/dev/null || apt_install "a C++ compiler" g++ make
command -v mpicxx >/dev/null && command -v mpirun >/dev/null || apt_install "OpenMPI" libopenmpi-dev openmpi-bin
command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python 3.11 (apt-get install python3 python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))' \
  || die "poisson_tf needs Python 3.11 or 3.12, $PYTHON is $("$PYTHON" -V 2>&1); set PYTHON=/path/to/python3.11"

# 2. The virtualenv.
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  if ! "$PYTHON" -m venv "$VENV"; then
    apt_install "python3-venv" python3-venv
    "$PYTHON" -m venv "$VENV"
  fi
fi
PY=$VENV/bin/python
PIP_LOG=$VENV/pip.log
pip_install() {  # quiet unless it fails; then the log says why
  "$PY" -m pip --disable-pip-version-check -q install "$@" > "$PIP_LOG" 2>&1 \
    || { tail -n 40 "$PIP_LOG" >&2; die "pip install $* failed (full log: $PIP_LOG)"; }
}

# 3. TensorFlow, the package, its tested dependencies and the docs tools (skipped when setup.py has not changed).
stamp=$VENV/.poisson_tf_installed
want="$(cat "$ROOT/setup.py" "$ROOT/scripts/setup.sh" | sha256sum | cut -c1-16)-$DEVICE-$ROOT"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing poisson_tf ($DEVICE) and its pinned dependencies into $VENV"
  extras=test,docs  # the test suite and `make docs` (Sphinx, furo, build, twine)
  [ "$DEVICE" = gpu ] && extras=test,docs,gpu
  pip_install "packaging" "wheel" "cmake<4"  # Horovod's build needs; cmake 4 rejects gloo's CMakeLists
  POISSON_TF_DEVICE=$DEVICE pip_install -e "$ROOT[$extras]"
  echo "$want" > "$stamp"
fi

# 4. Horovod, built once per (Horovod, TensorFlow, Python) against the installed TF, cached outside the checkout.
TF_VERSION=$("$PY" - <<'PYEOF'
import importlib.metadata as metadata
for name in ("tensorflow-cpu", "tensorflow"):
    try:
        print(metadata.version(name))
        break
    except metadata.PackageNotFoundError:
        pass
PYEOF
)
[ -n "$TF_VERSION" ] || die "TensorFlow is not installed in $VENV; delete $VENV/.poisson_tf_installed and re-run"
PY_TAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
WHEELS=$CACHE/wheels/horovod-$HOROVOD_VERSION-tf$TF_VERSION-$PY_TAG-$DEVICE
wheel=$(ls "$WHEELS"/horovod-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  say "building Horovod $HOROVOD_VERSION against TensorFlow $TF_VERSION (once; a few minutes) into $WHEELS"
  mkdir -p "$WHEELS"
  gpu_flags=""
  [ "$DEVICE" = gpu ] && gpu_flags="HOROVOD_GPU_OPERATIONS=NCCL"
  # --no-build-isolation: the build must import the TensorFlow installed above.
  env HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 \
      HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS="-j$(nproc)" $gpu_flags PATH="$VENV/bin:$PATH" \
      "$PY" -m pip --disable-pip-version-check wheel --no-build-isolation --no-deps --no-cache-dir \
      "horovod==$HOROVOD_VERSION" -w "$WHEELS.tmp" \
      > "$CACHE/horovod-build.log" 2>&1 \
    || die "the Horovod build failed; its log is $CACHE/horovod-build.log"
  mv "$WHEELS.tmp"/horovod-*.whl "$WHEELS"/ && rm -rf "$WHEELS.tmp"
  wheel=$(ls "$WHEELS"/horovod-*.whl | head -n 1)
fi
if ! cmp -s "$wheel" "$VENV/.horovod_wheel" 2>/dev/null; then
  say "installing $(basename "$wheel")"
  pip_install --force-reinstall --no-deps "$wheel"
  pip_install cloudpickle psutil pyyaml cffi  # Horovod's runtime requirements
  cp "$wheel" "$VENV/.horovod_wheel"
fi

# 5. Proof: Horovod sees TensorFlow, MPI and Gloo.
check=$("$VENV/bin/horovodrun" --check-build 2>&1) || die "horovodrun --check-build failed: $check"
for item in TensorFlow MPI Gloo; do
  grep -q "\[X\] $item" <<<"$check" || die "Horovod was built without $item:
$check
Delete $WHEELS to rebuild (the build log is $CACHE/horovod-build.log)."
done
say "ready in ${SECONDS} s: $VENV (TensorFlow $TF_VERSION, Horovod $HOROVOD_VERSION with MPI and Gloo)"
