#!/usr/bin/env bash
# Fails if the Pi 4 build contains an instruction a Cortex-A72 (armv8.0-a + crc/crypto) cannot execute:
# dot product / int8 matrix multiply (sdot, udot, usdot, sudot, smmla, ummla, usmmla) or LSE atomics (armv8.1:
# ldadd/ldclr/ldeor/ldset/ld{s,u}{max,min}, their st* aliases, swp, cas, casp). Such an instruction raises SIGILL
# on a Pi 4 the first time it runs, so it must not be in the binary at all, runtime check or not.
#
#   targets/ci/check_pi4_binary.sh [binary...]   (default: build/pi4-release/floe_native_tests)
# Build first: cmake --preset pi4-release && cmake --build --preset pi4-release
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
objdump=${OBJDUMP:-aarch64-linux-gnu-objdump}
if [ "$#" -eq 0 ]; then
    set -- "$root/build/pi4-release/floe_native_tests"
fi
command -v "$objdump" >/dev/null || { echo "error: $objdump not found (apt: binutils-aarch64-linux-gnu)" >&2; exit 2; }

forbidden='^(sdot|udot|usdot|sudot|smmla|ummla|usmmla'
forbidden+='|ld(add|clr|eor|set|smax|smin|umax|umin)(a|al|l)?(b|h)?'
forbidden+='|st(add|clr|eor|set|smax|smin|umax|umin)(l)?(b|h)?'
forbidden+='|swp(a|al|l)?(b|h)?|casp?(a|al|l)?(b|h)?)$'

status=0
for bin in "$@"; do
    if [ ! -f "$bin" ]; then
        echo "error: $bin not found; build the pi4-release preset first" >&2
        exit 2
    fi
    if ! "$objdump" -f "$bin" 2>/dev/null | grep -q 'architecture: aarch64'; then
        echo "error: $bin is not an aarch64 ELF file" >&2
        exit 2
    fi
    listing=$(mktemp)
    trap 'rm -f "$listing"' EXIT
    "$objdump" -d -C --no-show-raw-insn "$bin" > "$listing" || { echo "error: $objdump cannot read $bin" >&2; exit 2; }
    # Instruction lines are "<addr>:\t<mnemonic>\t<operands>"; remember the enclosing function for the report.
    hits=$(awk -F'\t' -v re="$forbidden" '
        /^[0-9a-f]+ <.*>:$/ { fn = $0; sub(/^[0-9a-f]+ /, "", fn); next }
        NF >= 2 && $1 ~ /^ *[0-9a-f]+:$/ { n++; m = $2; sub(/ +$/, "", m); if (m ~ re) print fn "\t" $0 }
        END { if (n == 0) print "NO-INSTRUCTIONS" }' "$listing")
    if [ "$hits" = "NO-INSTRUCTIONS" ]; then
        echo "error: no aarch64 instructions disassembled from $bin" >&2
        exit 2
    fi
    count=$(printf '%s' "$hits" | grep -c . || true)
    if [ "$count" -ne 0 ]; then
        echo "FAIL $bin: $count instruction(s) a Cortex-A72 cannot run:"
        printf '%s\n' "$hits" | head -n 40
        status=1
    else
        echo "ok   $bin: armv8.0 only (no dotprod/i8mm, no LSE atomics) in $(grep -c $'^ *[0-9a-f]*:\t' "$listing") instructions"
    fi
    rm -f "$listing"
done
exit $status
