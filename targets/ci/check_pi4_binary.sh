#!/usr/bin/env bash
# Fails if an aarch64 build holds an instruction a Pi 4 (Cortex-A72: armv8.0-a + crc/crypto) would execute and
# cannot: dot product / int8 matrix multiply (sdot, udot, usdot, sudot, smmla, ummla, usmmla), rounding doubling
# multiply-accumulate (armv8.1 RDM: sqrdmlah/sqrdmlsh) or LSE atomics (armv8.1: ld{add,clr,eor,set,smax,...}, their
# st* aliases, swp, cas, casp). Such an instruction raises SIGILL on a Pi 4 the first time it runs.
#
#   targets/ci/check_pi4_binary.sh [--portable] [file...]   (default: build/pi4-release/floe_native_tests)
#
# file: an ELF executable, shared library or object, or a wheel (.whl: every .so inside is checked).
# Default mode (the pi4-release build): none of those instructions anywhere.
# --portable (a multi-variant build: the aarch64 wheel, aarch64-release): dotprod/RDM instructions are allowed only
#   inside the functions of a dispatched variant, which dispatch.cpp offers only when HWCAP says the CPU has them,
#   and i8mm instructions (smmla, ummla, usmmla) only inside the i8mm variant's: a Pi 5 has dotprod but not i8mm.
#   Those functions are recognised by name: the variant's kernels are templates instantiated with its Dot policy
#   (DotSdot in arch/arm/neon_sdot.h, DotI8mm in arch/arm/neon_i8mm.cpp), so every function compiled for it carries
#   that name. Anything else
#   (a baseline kernel, an inline function the linker took from the variant's object file) fails. The symbol table
#   is needed for this (an unstripped build: pyproject keeps it in aarch64 wheels).
# LSE atomics: nowhere, in both modes. GCC's outline-atomics helpers (__aarch64_ldadd4_acq_rel & co.) would be
#   safe (an HWCAP test guards their LSE path) but CMakeLists builds aarch64 with -mno-outline-atomics, so the rule
#   stays simple: no LSE instruction in the file at all.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
objdump=${OBJDUMP:-aarch64-linux-gnu-objdump}
# Demangled names of the functions a dispatched variant may run SDOT (any variant) and SMMLA (i8mm only) in.
variant_re=${FLOE_VARIANT_FUNCTIONS:-'floe::\(anonymous namespace\)::Dot(Sdot|I8mm)[,>:]'}
i8mm_re=${FLOE_I8MM_FUNCTIONS:-'floe::\(anonymous namespace\)::DotI8mm[,>:]'}

variant_only='^(sdot|udot|usdot|sudot|sqrdmlah|sqrdmlsh)$'
i8mm_only='^(smmla|ummla|usmmla)$'
lse='^(ld(add|clr|eor|set|smax|smin|umax|umin)(a|al|l)?(b|h)?'
lse+='|st(add|clr|eor|set|smax|smin|umax|umin)(l)?(b|h)?'
lse+='|swp(a|al|l)?(b|h)?|casp?(a|al|l)?(b|h)?)$'

portable=0
if [ "${1:-}" = "--portable" ]; then portable=1; shift; fi
if [ "$#" -eq 0 ]; then
    set -- "$root/build/pi4-release/floe_native_tests"
fi
command -v "$objdump" >/dev/null || { echo "error: $objdump not found (apt: binutils-aarch64-linux-gnu)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Prints "<function>\t<instruction line>" for each offending instruction, then one line "#allowed N total M".
scan() {
    "$objdump" -d -C --no-show-raw-insn "$1" | awk -F'\t' -v variant_only="$variant_only" -v lse="$lse" \
        -v portable="$portable" -v variant_re="$variant_re" -v i8mm_only="$i8mm_only" -v i8mm_re="$i8mm_re" '
        /^[0-9a-f]+ <.*>:$/ { fn = $0; sub(/^[0-9a-f]+ /, "", fn); next }
        NF >= 2 && $1 ~ /^ *[0-9a-f]+:$/ {
            n++; m = $2; sub(/ +$/, "", m)
            if (m ~ lse) print fn "\t" $0
            else if (m ~ variant_only) { if (portable && fn ~ variant_re) allowed++; else print fn "\t" $0 }
            else if (m ~ i8mm_only) { if (portable && fn ~ i8mm_re) allowed++; else print fn "\t" $0 }
        }
        END { printf "#allowed %d total %d\n", allowed, n }'
}

check_elf() {
    local bin=$1 label=$2
    if ! "$objdump" -f "$bin" 2>/dev/null | grep -q 'architecture: aarch64'; then
        echo "error: $label is not an aarch64 ELF file" >&2
        return 2
    fi
    if [ "$portable" = 1 ] && "$objdump" -t "$bin" | grep -q "^no symbols"; then
        # without .symtab, objdump names only exported functions: a variant's kernel would look like its neighbour
        echo "error: $label is stripped: --portable needs the symbol table to tell the variants' functions apart" >&2
        return 2
    fi
    local out hits summary allowed total count
    out=$(scan "$bin") || { echo "error: $objdump cannot read $label" >&2; return 2; }
    summary=$(printf '%s\n' "$out" | tail -n1)
    hits=$(printf '%s\n' "$out" | sed '$d')
    read -r _ allowed _ total <<< "$summary"
    if [ "$total" -eq 0 ]; then
        echo "error: no aarch64 instructions disassembled from $label" >&2
        return 2
    fi
    count=$(printf '%s' "$hits" | grep -c . || true)
    if [ "$count" -ne 0 ]; then
        echo "FAIL $label: $count instruction(s) a Cortex-A72 cannot run$([ "$portable" = 1 ] && echo ', outside a dispatched variant'):"
        printf '%s\n' "$hits" | head -n 40
        return 1
    fi
    if [ "$portable" = 1 ]; then
        echo "ok   $label: armv8.0 baseline; $allowed dotprod/i8mm instruction(s), all inside variant functions;" \
             "no LSE atomics; $total instructions"
    else
        echo "ok   $label: armv8.0 only (no dotprod/i8mm/RDM, no LSE atomics) in $total instructions"
    fi
}

status=0
for file in "$@"; do
    if [ ! -f "$file" ]; then
        echo "error: $file not found (build it first: the pi4-release preset, or the wheel)" >&2
        exit 2
    fi
    if [[ $file == *.whl ]]; then
        dir=$tmp/$(basename "$file")
        mkdir -p "$dir"
        python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$file" "$dir"
        mapfile -t libs < <(find "$dir" -name '*.so' | sort)
        if [ "${#libs[@]}" -eq 0 ]; then echo "error: no .so in $file" >&2; exit 2; fi
        for lib in "${libs[@]}"; do
            check_elf "$lib" "$(basename "$file"):${lib#"$dir"/}" || { rc=$?; [ $rc -gt $status ] && status=$rc; }
        done
    else
        check_elf "$file" "$file" || { rc=$?; [ $rc -gt $status ] && status=$rc; }
    fi
done
exit $status
