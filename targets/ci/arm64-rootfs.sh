#!/usr/bin/env bash
# The Python package on an emulated board userland: a Debian arm64 (or armhf) root filesystem made by debootstrap,
# run under qemu-user-static through binfmt_misc with QEMU_CPU (cortex-a72 = a Pi 4: NEON, no dotprod, no LSE).
# Inside it: build the wheel (portable baseline, runtime dispatch), install it in a venv, run the Python tests
# (the subset targets/ci/emulated_subset.py selects, each exclusion with its reason) and `floe generate` on the real
# SmolLM2-135M, whose greedy token ids must equal the same command's on this x86 host.
#
#   targets/ci/arm64-rootfs.sh [--arch arm64|armhf] [--cpu CPU] [--quick] [--keep-going]
#     --quick        tests: only the native-backed core modules (QUICK_TESTS below); generate: 16 tokens
#     --setup-only   stop after the rootfs and its venv (to warm the cache)
#     --cpu CPU      the emulated CPU (QEMU_CPU); default cortex-a72 (arm64) / cortex-a7 (armhf, a Pi 2/3 in 32 bits)
#
# Needs root (chroot, mounts), network to a Debian mirror and PyPI. Cached under ~/.cache/floe/rootfs: the rootfs
# (keyed by a hash of suite, arch and package lists), the wheel (keyed by the source tree and the rootfs). Every
# phase runs under `timeout`. The summary line "RESULT ..." is what targets/ci/nightly.sh records.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

arch=arm64
cpu=""
quick=0
setup_only=0
suite=bookworm
mirror=${FLOE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${FLOE_ROOTFS_CACHE:-$HOME/.cache/floe/rootfs}
# Debian packages: the build toolchain, and the test dependencies that Debian ships at versions pyproject accepts
# (numpy 1.24, pytest 7, hypothesis 6); ca-certificates for pip.
deb_packages="python3 python3-venv python3-dev python3-pip g++ cmake ninja-build ca-certificates
python3-numpy python3-pytest python3-hypothesis python3-yaml python3-tqdm"
# From PyPI into the venv: the build backend (not in bookworm at these versions) and the runtime/test deps
# pyproject asks for that bookworm lacks or ships too old (httpx 0.23 < 0.25). All pure Python or with arm wheels.
pip_packages="scikit-build-core>=0.10 pybind11>=3.0 httpx>=0.25 gguf>=0.10 rich>=13 pybind11-stubgen>=2.5"
QUICK_TESTS="tests/test_matvec.py tests/test_quantize.py tests/test_ops.py tests/test_fusion.py tests/test_tokenizer.py
tests/test_gguf.py tests/test_imports.py"
# greedy, not repetitive for 48 tokens (code: every step depends on the exact logits of many candidates)
PROMPT=$'Write a Python function that checks whether a number is prime.\n'

# Time bounds per phase (seconds, each overridable from the environment): debootstrap's second stage and the C++
# build run emulated (~10x slower); the full test suite needs T_TESTS above an hour.
T_ROOTFS=${T_ROOTFS:-2700} T_VENV=${T_VENV:-1200} T_WHEEL=${T_WHEEL:-3600} T_TESTS=${T_TESTS:-3600} T_GENERATE=${T_GENERATE:-1200}

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 2; }

parse_args() {
    while (($#)); do
        case $1 in
            --arch) arch=${2:?}; shift 2 ;;
            --cpu) cpu=${2:?}; shift 2 ;;
            --quick) quick=1; shift ;;
            --setup-only) setup_only=1; shift ;;
            -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
            *) die "unknown argument $1 (see --help)" ;;
        esac
    done
    case $arch in
        arm64) qemu_name=aarch64; cpu=${cpu:-cortex-a72}; pip_packages+=" safetensors>=0.4" ;;
        armhf) qemu_name=arm; cpu=${cpu:-cortex-a7} ;;  # safetensors: no armv7 wheel (a Rust build under qemu)
        *) die "--arch must be arm64 or armhf" ;;
    esac
}

# binfmt_misc must send foreign ELF files to a *static* qemu with the F flag (opened at registration), so that it
# works inside the chroot where /usr/bin/qemu-* does not exist.
setup_binfmt() {
    [ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and bind mounts need it)"
    command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install debootstrap"
    [ -x "/usr/bin/qemu-$qemu_name-static" ] || die "qemu-$qemu_name-static missing: apt-get install qemu-user-static"
    local bm=/proc/sys/fs/binfmt_misc
    [ -e "$bm/register" ] || mount -t binfmt_misc binfmt_misc "$bm" \
        || die "cannot mount binfmt_misc (a container without CAP_SYS_ADMIN?): emulated userland impossible here"
    if [ ! -e "$bm/qemu-$qemu_name" ]; then
        local conf=/usr/lib/binfmt.d/qemu-$qemu_name.conf
        [ -f "$conf" ] || die "$conf missing (qemu-user-static registers it)"
        # update-binfmts (binfmt-support) may be absent: write systemd's line to the kernel directly
        cat "$conf" > "$bm/register" || die "cannot register $conf with binfmt_misc"
    fi
    grep -q '^flags: .*F' "$bm/qemu-$qemu_name" \
        || die "binfmt entry qemu-$qemu_name lacks the F flag (qemu-user-binfmt?): install qemu-user-static"
}

rootfs_key() {
    printf '%s\n' "$suite" "$arch" "$mirror" "$deb_packages" | sha256sum | cut -c1-12
}

# Mount what a chroot needs; umount_all undoes it (also on error, from the EXIT trap).
mounted=()
mount_chroot() {
    local r=$1
    mount -t proc proc "$r/proc" && mounted+=("$r/proc")
    mount --rbind /dev "$r/dev" && mount --make-rslave "$r/dev" && mounted+=("$r/dev")
    mount -t sysfs sysfs "$r/sys" && mounted+=("$r/sys")
    cp -L /etc/resolv.conf "$r/etc/resolv.conf"
    # debootstrap writes no /etc/hosts: without it "localhost" does not resolve (tests bind to it)
    grep -qs '^127\.0\.0\.1[[:space:]].*localhost' "$r/etc/hosts" || printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >> "$r/etc/hosts"
    # pip inside trusts what the host trusts (the host may reach PyPI through a TLS-inspecting proxy)
    cp -L "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$r/etc/ssl/certs/floe-host-ca.crt"
}
umount_all() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -R "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}"; done
    mounted=()
}

# Run a command in the rootfs as the emulated CPU, bounded by a timeout.
in_root() {
    local secs=$1; shift
    timeout -k 30 "$secs" env -i HOME=/root PATH=/opt/floe-venv/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        QEMU_CPU="$cpu" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CERT=/etc/ssl/certs/floe-host-ca.crt chroot "$root" "$@"
}

make_rootfs() {
    root=$cache/$arch-$suite-$(rootfs_key)
    if [ -f "$root/.floe-rootfs-complete" ]; then
        log "rootfs: cached $root"
        return
    fi
    local tmp=$root.partial
    [ -d "$tmp" ] && { log "rootfs: removing an unfinished $tmp"; rm -rf --one-file-system "$tmp"; }
    mkdir -p "$cache"
    log "rootfs: debootstrap $suite $arch (minbase) into $tmp"
    local t0=$SECONDS
    timeout -k 30 "$T_ROOTFS" debootstrap --variant=minbase --arch="$arch" \
        --include="$(echo $deb_packages | tr ' ' ',')" "$suite" "$tmp" "$mirror" > "$cache/debootstrap-$arch.log" 2>&1 \
        || die "debootstrap failed or timed out; see $cache/debootstrap-$arch.log"
    chroot "$tmp" apt-get clean
    mv "$tmp" "$root"
    touch "$root/.floe-rootfs-complete"
    log "rootfs: done in $((SECONDS - t0)) s"
}

make_venv() {
    # keyed by the pip package list: changing it rebuilds the venv, not the rootfs
    local stamp=$root/opt/floe-venv/.floe-complete
    [ "$(cat "$stamp" 2>/dev/null)" = "$pip_packages" ] && { log "venv: cached"; return; }
    local t0=$SECONDS
    log "venv: /opt/floe-venv (system site packages) + $pip_packages"
    rm -rf "$root/opt/floe-venv"
    in_root "$T_VENV" python3 -m venv --system-site-packages /opt/floe-venv
    # shellcheck disable=SC2086  # word splitting of the package list is wanted
    in_root "$T_VENV" pip install -q $pip_packages || die "pip install in the rootfs failed"
    echo "$pip_packages" > "$stamp"
    log "venv: done in $((SECONDS - t0)) s"
}

# The source: HEAD plus uncommitted changes to tracked files (git stash create), as a git archive in the rootfs.
copy_source() {
    local rev
    rev=$(git -C "$repo" stash create 2>/dev/null || true)
    rev=${rev:-HEAD}
    # the wheel's cache key: the files that go into it (README.md only gives its long description: left out, so a
    # documentation commit does not cost a 15-30 minute emulated rebuild)
    tree=$(git -C "$repo" ls-tree -r "$rev" -- src python CMakeLists.txt pyproject.toml targets/profiles \
        | sha256sum | cut -c1-16)
    rm -rf "$root/work/src" && mkdir -p "$root/work/src"
    git -C "$repo" archive "$rev" | tar -x -C "$root/work/src"
    log "source: $(git -C "$repo" rev-parse --short "$rev") copied to /work/src (wheel key $tree)"
}

# Build the wheel in the emulated userland (Debian's native gcc: -march=armv8-a baseline, dotprod only in its
# variant file; -mno-outline-atomics comes from CMakeLists), cached by its sources and the rootfs.
build_wheel() {
    local out=$cache/wheels/$arch/$tree-$(rootfs_key)
    wheel=$(compgen -G "$out/floe_edge-*.whl" | head -n1 || true)
    if [ -n "$wheel" ]; then
        log "wheel: cached $wheel"
        wheel_secs=0
        return
    fi
    local t0=$SECONDS
    log "wheel: pip wheel in the emulated userland (QEMU_CPU=$cpu), this is the slow part"
    rm -rf "$root/work/wheel" && mkdir -p "$root/work/wheel"
    in_root "$T_WHEEL" env CMAKE_BUILD_PARALLEL_LEVEL=2 pip wheel --no-deps --no-build-isolation -w /work/wheel \
        /work/src > "$cache/wheel-$arch.log" 2>&1 || die "wheel build failed or timed out; see $cache/wheel-$arch.log"
    mkdir -p "$out"
    cp "$root"/work/wheel/floe_edge-*.whl "$out/"
    wheel=$(compgen -G "$out/floe_edge-*.whl" | head -n1)
    wheel_secs=$((SECONDS - t0))
    log "wheel: $wheel in $wheel_secs s"
}

install_wheel() {
    mkdir -p "$root/work/wheel" && cp "$wheel" "$root/work/wheel/"
    in_root "$T_VENV" pip install -q --force-reinstall --no-deps "/work/wheel/$(basename "$wheel")"
    in_root "$T_VENV" pip check >/dev/null || log "warning: pip check reports missing dependencies"
    # the model, without network to the hub: the host's pulled copy
    local gguf=$HOME/.cache/floe/models/SmolLM2-135M-Instruct.Q4_1.gguf
    [ -f "$gguf" ] || die "$gguf missing: run \`floe models pull smollm2-135m\` on the host first"
    mkdir -p "$root/root/.cache/floe/models"
    cmp -s "$gguf" "$root/root/.cache/floe/models/$(basename "$gguf")" || cp "$gguf" "$root/root/.cache/floe/models/"
}

run_tests() {
    local t0=$SECONDS files
    files=$([ "$quick" = 1 ] && echo $QUICK_TESTS || echo tests)
    log "tests: pytest $( [ "$quick" = 1 ] && echo "(quick) " )under QEMU_CPU=$cpu"
    set +e
    # shellcheck disable=SC2086
    in_root "$T_TESTS" sh -c "cd /work/src && PYTHONPATH=/work/src/targets/ci python -m pytest -q -rs -p no:cacheprovider \
        -p emulated_subset $files" > "$cache/tests-$arch.log" 2>&1
    test_rc=$?
    set -e
    test_secs=$((SECONDS - t0))
    test_summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error)' "$cache/tests-$arch.log" | tail -n1 | tr -d '=' || true)
    log "tests: rc=$test_rc in $test_secs s: $test_summary (log $cache/tests-$arch.log)"
}

# Greedy ids from `floe generate --json`, the same command here (x86, the host venv) and in the rootfs.
compare_generate() {
    local n t0=$SECONDS host_py=${FLOE_HOST_PYTHON:-$repo/.venv/bin/python}
    n=$([ "$quick" = 1 ] && echo 16 || echo 48)
    local args=(-m floe_edge.cli generate --prompt "$PROMPT" -n "$n" --temperature 0 --threads 1 --json)
    [ -x "$host_py" ] || host_py=/work/main/.venv/bin/python
    "$host_py" "${args[@]}" > "$cache/generate-x86.json" || die "floe generate failed on the host ($host_py)"
    in_root "$T_GENERATE" python "${args[@]}" > "$cache/generate-$arch.json" \
        || die "floe generate failed in the rootfs"
    gen_result=$(python3 "$here/compare_tokens.py" "$cache/generate-x86.json" "$cache/generate-$arch.json") \
        && gen_ok=1 || gen_ok=0
    log "generate: QEMU_CPU=$cpu: $gen_result"
    if [ "$arch" = arm64 ]; then
        # the same wheel's other kernel tables, on an emulated CPU that has their instructions: SDOT (a Pi 5) and
        # SMMLA in the prompt's two-column tiles (a Snapdragon 8 Gen 2)
        local cpu_main=$cpu variant result
        cpu=max
        for variant in neon_dotprod neon_i8mm; do
            in_root "$T_GENERATE" python "${args[@]}" --variant "$variant" > "$cache/generate-$arch-$variant.json" \
                || die "floe generate --variant $variant failed in the rootfs (QEMU_CPU=max)"
            result=$(python3 "$here/compare_tokens.py" "$cache/generate-x86.json" \
                "$cache/generate-$arch-$variant.json") || gen_ok=0
            log "generate: QEMU_CPU=max --variant $variant: $result"
            if [ "$variant" = neon_dotprod ]; then gen_dotprod=$result; else gen_i8mm=$result; fi
        done
        cpu=$cpu_main
    fi
    gen_secs=$((SECONDS - t0))
}

main() {
    parse_args "$@"
    local t_start=$SECONDS
    setup_binfmt
    trap umount_all EXIT
    make_rootfs
    mount_chroot "$root"
    make_venv
    if [ "$setup_only" = 1 ]; then umount_all; log "setup only: $root ready"; return; fi
    copy_source
    build_wheel
    install_wheel
    run_tests
    compare_generate
    umount_all
    local ok=$((test_rc == 0 && gen_ok == 1))
    echo "RESULT arch=$arch cpu=$cpu quick=$quick status=$([ $ok = 1 ] && echo pass || echo FAIL)" \
        "wheel=$wheel wheel_build_s=$wheel_secs tests_s=$test_secs tests=\"$test_summary\"" \
        "generate_s=$gen_secs tokens=\"$gen_result\" tokens_dotprod=\"${gen_dotprod:-n/a}\"" \
        "tokens_i8mm=\"${gen_i8mm:-n/a}\" total_s=$((SECONDS - t_start))"
    [ $ok = 1 ]
}

main "$@"; exit  # one line: bash has parsed it all before main runs, so editing this file mid-run is safe
