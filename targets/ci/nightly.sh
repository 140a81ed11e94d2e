#!/usr/bin/env bash
# What does not fit in `bash .ci/run` (60 minutes on a fresh clone): the emulated board userlands, run in full.
#   1. arm64 as a Pi 4 (QEMU_CPU=cortex-a72): the wheel built inside, the Python tests, floe generate vs x86
#      (and the same wheel's neon_dotprod variant under QEMU_CPU=max);
#   2. the disassembly check of that wheel (dotprod only inside its variant, no LSE atomics);
#   3. armhf (32-bit Raspberry Pi OS userland, QEMU_CPU=cortex-a7): the same, where the toolchain allows.
# The log of the last run goes to targets/ci/nightly-last.log (date, host CPU, commit, durations, pass/fail counts,
# skip reasons). Exit status: 0 when every run passed.
#
#   targets/ci/nightly.sh [--quick] [--arch arm64|armhf ...]   (default: arm64 then armhf; needs root)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=$here/nightly-last.log
cache=${FLOE_ROOTFS_CACHE:-$HOME/.cache/floe/rootfs}

quick=()
arches=()
while (($#)); do
    case $1 in
        --quick) quick=(--quick); shift ;;
        --arch) arches+=("${2:?}"); shift 2 ;;
        *) echo "usage: $0 [--quick] [--arch arm64|armhf ...]" >&2; exit 2 ;;
    esac
done
((${#arches[@]})) || arches=(arm64 armhf)

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{
    echo "# targets/ci/nightly.sh ${quick[*]} ${arches[*]}"
    echo "date:   $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host:   $(lscpu | sed -n 's/^Model name: *//p' | head -n1), $(nproc --all) cores, $(uname -r)"
    echo "commit: $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD || echo ' (+ uncommitted changes)')"
    echo "qemu:   $(qemu-aarch64-static --version | head -n1)"
} > "$tmp"

status=0
for arch in "${arches[@]}"; do
    t0=$SECONDS
    run_log=$cache/nightly-$arch.log
    mkdir -p "$cache"
    if "$here/arm64-rootfs.sh" --arch "$arch" "${quick[@]}" > "$run_log" 2>&1; then rc=0; else rc=$?; status=1; fi
    {
        echo
        echo "## $arch: exit $rc in $((SECONDS - t0)) s (full log: $run_log)"
        grep -E '^\[..:..:..\] (rootfs|venv|wheel|tests|generate|error)' "$run_log" | sed 's/^/  /' || true
        grep '^RESULT' "$run_log" || echo "RESULT arch=$arch status=FAIL (no result line: see the errors above)"
        # skip reasons with their counts (pytest -rs lines: "SKIPPED [N] file:line: reason", or "file: reason" for
        # a skip marked at collection)
        if [ -f "$cache/tests-$arch.log" ]; then
            echo "  skipped, by reason:"
            sed -n 's/^SKIPPED \[\([0-9]*\)\] [^:]*\(:[0-9]*\)\{0,1\}: /\1\t/p' "$cache/tests-$arch.log" \
                | awk -F'\t' '{n[$2] += $1} END {for (r in n) printf "    %4d  %s\n", n[r], r}' | sort -rn
            grep -E '^(FAILED|ERROR|NOT COLLECTED) ' "$cache/tests-$arch.log" | sed 's/^/  /' || true
        fi
    } >> "$tmp"
    wheel=$(sed -n 's/^RESULT .* wheel=\([^ ]*\) .*/\1/p' "$run_log")
    if [ "$arch" = arm64 ] && [ -n "$wheel" ]; then
        if check=$(bash "$here/check_pi4_binary.sh" --portable "$wheel" 2>&1); then :; else status=1; fi
        printf '  disassembly: %s\n' "$check" >> "$tmp"
    fi
done
echo >> "$tmp"
echo "overall: $([ $status = 0 ] && echo pass || echo FAIL)" >> "$tmp"
cp "$tmp" "$out"
cat "$out"
exit $status
