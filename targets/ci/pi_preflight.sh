#!/usr/bin/env bash
# Preflight of the Raspberry Pi hardware CI (targets/ci/pi-runner.yml): refuse to run anywhere but a Raspberry Pi,
# so that no other board's figures end up compared with a Pi's.
#
#   targets/ci/pi_preflight.sh [--root DIR] [--expect TEXT]
#
# Reads DIR/proc/device-tree/model (DIR defaults to /; tests point it at a fake tree). The model must start with
# "Raspberry Pi"; with --expect (or FLOE_PI_EXPECT) it must also contain TEXT ("Raspberry Pi 5": a runner registered
# for a Pi 5 must not quietly be a Pi 4). Prints the model and exits 0, or says why not and exits 1 (2: bad usage).
# In GitHub Actions it also writes model=... to $GITHUB_OUTPUT.
set -euo pipefail

root=/
expect=${FLOE_PI_EXPECT:-}
while [ "$#" -gt 0 ]; do
    case "$1" in
        --root) [ "$#" -ge 2 ] || { echo "pi_preflight: --root needs a directory" >&2; exit 2; }; root=$2; shift 2 ;;
        --expect) [ "$#" -ge 2 ] || { echo "pi_preflight: --expect needs a text" >&2; exit 2; }; expect=$2; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "pi_preflight: unknown argument $1 (use --root DIR, --expect TEXT)" >&2; exit 2 ;;
    esac
done

file="${root%/}/proc/device-tree/model"
refuse() {
    echo "pi_preflight: refusing to run: $*" >&2
    echo "pi_preflight: this job measures a Raspberry Pi; run it on a self-hosted runner on one (docs/boards.md)" >&2
    exit 1
}

[ -e "$file" ] || refuse "no $file (no device tree: an x86 machine, a VM or a container without /proc/device-tree)"
[ -r "$file" ] && [ -f "$file" ] || refuse "$file cannot be read"
# the device tree's strings end in a NUL byte; keep printable characters only
model=$(tr -d '\000' < "$file" | tr -cd '[:print:]' | sed 's/[[:space:]]*$//')
[ -n "$model" ] || refuse "$file is empty"
case "$model" in
    "Raspberry Pi"*) ;;
    *) refuse "the board is '$model', not a Raspberry Pi" ;;
esac
if [ -n "$expect" ] && [[ "$model" != *"$expect"* ]]; then
    refuse "the board is '$model', but this runner is meant to be '$expect'"
fi

echo "pi_preflight: ok: $model ($(uname -m), $(nproc 2>/dev/null || echo '?') cores)"
if [ -n "${GITHUB_OUTPUT:-}" ]; then
    echo "model=$model" >> "$GITHUB_OUTPUT"
fi
