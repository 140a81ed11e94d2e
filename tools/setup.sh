#!/usr/bin/env bash
# Set up .venv with floe-edge and an extra (demo, test, bench, cloud, train, fl, litert, export):
# `bash tools/setup.sh test`.
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
# export: litert-converter's xdsl declares typing-extensions < 4.13, so pip downgrades it under the pydantic of
# FastAPI (the cloud server), which then fails to import (it needs >= 4.16): `floe demo --backend litert` needs both.
# xdsl runs with the newer one (tests/test_litert.py exports through it); pip warns of the declared conflict.
if [ "$extra" = export ] && .venv/bin/pip show -q pydantic >/dev/null 2>&1; then
    .venv/bin/pip install -q "typing-extensions>=4.16"
fi
# train: also llama.cpp's own LoRA converter (convert_lora_to_gguf.py and what it imports), from the source of the
# llama-cpp-python version above, so that tests can check that adapters llama.cpp writes load in ours
if [ "$extra" = train ]; then
    version=$(basename "$(ls "$wheels"/llama_cpp_python-*.whl | head -1)" | cut -d- -f2)
    convert="${FLOE_WHEEL_CACHE:-$HOME/.cache/floe/wheels}/llama.cpp-convert-$version"
    if [ ! -f "$convert/convert_lora_to_gguf.py" ]; then
        echo "fetching llama.cpp's LoRA converter (llama-cpp-python $version source) into $convert" >&2
        src=$(mktemp -d)
        .venv/bin/pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$src"
        rm -rf "$convert.tmp" && mkdir -p "$convert.tmp"
        tar xzf "$src"/llama_cpp_python-*.tar.gz -C "$convert.tmp" --strip-components=3 --wildcards \
            '*/vendor/llama.cpp/convert_lora_to_gguf.py' '*/vendor/llama.cpp/convert_hf_to_gguf.py' \
            '*/vendor/llama.cpp/conversion/*' '*/vendor/llama.cpp/gguf-py/*'
        mv "$convert.tmp" "$convert" && rm -rf "$src"
    fi
fi
# demo: the demo user's data, adapter (a few minutes of training, once) and gate, so `floe demo` starts at once
if [ "$extra" = demo ]; then
    .venv/bin/floe demo --prepare
fi
