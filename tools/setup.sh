#!/usr/bin/env bash
# Set up .venv with floe-edge and an extra (demo, test, bench, cloud): `bash tools/setup.sh test`.
# llama-cpp-python (the cloud model and the reference) is built from source once and its wheel cached, with the
# flags below (--no-cache-dir: a wheel pip built earlier with other flags must not stand in); pip then installs it
# from the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=${1:-demo}
python3 -m venv .venv
# AMX tiles off: some VMs advertise AMX but fault on it (ggml's -march=native build then dies with SIGILL on the
# first batched matmul). Our kernels stop at AVX-512; the reference is built to the same ISA.
if [ "$(uname -m)" = x86_64 ]; then
    flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    export CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_C_FLAGS='$flags' -DCMAKE_CXX_FLAGS='$flags'"
fi
key=$(printf '%s' "${CMAKE_ARGS:-}" | sha256sum | cut -c1-12)
wheels="${FLOE_WHEEL_CACHE:-$HOME/.cache/floe/wheels}/llama-$key"
mkdir -p "$wheels"
export PIP_FIND_LINKS="$wheels${PIP_FIND_LINKS:+ $PIP_FIND_LINKS}"  # pip reads a space-separated list
if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python once (about ten minutes on two cores) into $wheels" >&2
    .venv/bin/pip wheel -q --no-deps --no-cache-dir -w "$wheels" "llama-cpp-python>=0.3"
fi
# the cached wheel, also over one an older .venv holds (same version: pip would keep that one)
.venv/bin/pip install -q --no-deps --force-reinstall "$wheels"/llama_cpp_python-*.whl
.venv/bin/pip install -q ".[$extra]"
