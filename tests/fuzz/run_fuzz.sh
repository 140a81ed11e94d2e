#!/usr/bin/env bash
# Build the GGUF reader's libFuzzer target with clang (ASan + UBSan) and fuzz it for a bounded time.
#   bash tests/fuzz/run_fuzz.sh [seconds=60] [extra libFuzzer flags...]
# Seeds: tests/gguf_corpus (tests/gguf_crafted.py). Fails on any crash, sanitizer report, leak, timeout or OOM;
# the reproducer is left in build/fuzz/artifacts/ (replay: build/fuzz/fuzz_gguf <file>).
set -euo pipefail
cd "$(dirname "$0")/../.."

secs=${1:-60}
shift || true
build=${FLOE_FUZZ_BUILD_DIR:-build/fuzz}
gen=()
if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null; then gen=(-G Ninja); fi

cmake -S . -B "$build" "${gen[@]}" -DCMAKE_CXX_COMPILER="${FUZZ_CXX:-clang++}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DFLOE_BUILD_FUZZ=ON -DFLOE_BUILD_PYTHON=OFF -DFLOE_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" --target fuzz_gguf

mkdir -p "$build/corpus" "$build/artifacts"
set +e
"$build/fuzz_gguf" "$build/corpus" tests/gguf_corpus -dict=tests/fuzz/gguf.dict -max_total_time="$secs" \
    -max_len=8192 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -artifact_prefix="$build/artifacts/" \
    -print_final_stats=1 "$@" 2>&1 | tee "$build/fuzz.log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    echo "fuzz_gguf FAILED (exit $status); reproducer(s):" >&2
    ls -l "$build/artifacts/" >&2
    exit "$status"
fi
echo "fuzz_gguf: no crash; $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second\(s\)' "$build/fuzz.log" | tail -1)"
