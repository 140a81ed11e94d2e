"""targets/ci/check_pi4_binary.sh catches what a Pi 4 cannot run: small aarch64 objects built to break each rule
(SDOT outside a dispatched variant, an LSE atomic, GCC's outline-atomics helpers, a stripped library in --portable
mode, a wheel) must fail it, and clean ones must pass. Needs the cross compiler that .ci/run installs."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "targets" / "ci" / "check_pi4_binary.sh"
CXX = "aarch64-linux-gnu-g++"

pytestmark = pytest.mark.skipif(shutil.which(CXX) is None or shutil.which("aarch64-linux-gnu-objdump") is None,
                                reason=f"{CXX} / binutils-aarch64-linux-gnu not installed (.ci/run installs them)")

NEON = """
#include <arm_neon.h>
extern "C" int32x4_t plain_mla(int32x4_t acc, int16x4_t a, int16x4_t b) { return vmlal_s16(acc, a, b); }
"""
# SDOT in a function of the dotprod variant: named after its Dot policy, as in src/floe_native/arch/arm
IN_VARIANT = """
#include <arm_neon.h>
namespace floe { namespace { struct DotSdot {
    __attribute__((noinline)) static int32x4_t dot(int32x4_t acc, int8x16_t a, int8x16_t b) {
        return vdotq_s32(acc, a, b); }
}; }
int32x4_t use_variant(int32x4_t acc, int8x16_t a, int8x16_t b) { return DotSdot::dot(acc, a, b); }
}
"""
# SMMLA (i8mm) in the i8mm variant's function, and in the dotprod variant's, whose CPUs (a Pi 5) may lack i8mm
I8MM = """
#include <arm_neon.h>
namespace floe { namespace { struct POLICY {
    __attribute__((noinline)) static int32x4_t mm(int32x4_t acc, int8x16_t a, int8x16_t b) {
        return vmmlaq_s32(acc, a, b); }
}; }
int32x4_t use_mm(int32x4_t acc, int8x16_t a, int8x16_t b) { return POLICY::mm(acc, a, b); }
}
"""
# the same instruction in a function with no variant in its name: what a stray -march=armv8.2-a+dotprod gives
OUTSIDE_VARIANT = """
#include <arm_neon.h>
namespace floe { __attribute__((noinline)) int32x4_t dot_anywhere(int32x4_t acc, int8x16_t a, int8x16_t b) {
    return vdotq_s32(acc, a, b); } }
"""
# an atomic add: LDADDAL with -march=armv8.1-a, even inside a variant's function
ATOMIC = """
#include <atomic>
namespace floe { namespace { struct DotSdot {
    __attribute__((noinline)) static int bump(std::atomic<int>& n) { return n.fetch_add(1); }
}; }
int use_atomic(std::atomic<int>& n) { return DotSdot::bump(n); }
}
"""


def build(tmp: Path, name: str, source: str, *flags: str, shared: bool = False) -> Path:
    src = tmp / f"{name}.cpp"
    src.write_text(source)
    out = tmp / (f"lib{name}.so" if shared else f"{name}.o")
    kind = ["-shared", "-fPIC"] if shared else ["-c"]
    subprocess.run([CXX, "-O2", *kind, *flags, str(src), "-o", str(out)], check=True, capture_output=True)
    return out


def check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CHECK), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_clean_armv8_object_passes_both_modes(tmp_path: Path) -> None:
    obj = build(tmp_path, "neon", NEON, "-march=armv8-a")
    assert check(obj).returncode == 0
    portable = check("--portable", obj)
    assert portable.returncode == 0, portable.stdout + portable.stderr
    assert "0 dotprod/i8mm instruction(s)" in portable.stdout


def test_sdot_is_allowed_only_inside_the_variant_in_portable_mode(tmp_path: Path) -> None:
    inside = build(tmp_path, "inside", IN_VARIANT, "-march=armv8.2-a+dotprod")
    outside = build(tmp_path, "outside", OUTSIDE_VARIANT, "-march=armv8.2-a+dotprod")
    ok = check("--portable", inside)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "1 dotprod/i8mm instruction(s), all inside variant functions" in ok.stdout
    bad = check("--portable", outside)
    assert bad.returncode == 1
    assert "floe::dot_anywhere" in bad.stdout and "sdot" in bad.stdout
    # the Pi 4-only build admits no SDOT at all, variant or not
    strict = check(inside)
    assert strict.returncode == 1 and "sdot" in strict.stdout


def test_smmla_is_allowed_only_inside_the_i8mm_variant(tmp_path: Path) -> None:
    flags = "-march=armv8.2-a+dotprod+i8mm"
    inside = build(tmp_path, "i8mm", I8MM.replace("POLICY", "DotI8mm"), flags)
    ok = check("--portable", inside)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "1 dotprod/i8mm instruction(s), all inside variant functions" in ok.stdout
    in_dotprod = check("--portable", build(tmp_path, "sdot_mm", I8MM.replace("POLICY", "DotSdot"), flags))
    assert in_dotprod.returncode == 1 and "smmla" in in_dotprod.stdout and "DotSdot" in in_dotprod.stdout
    assert check(inside).returncode == 1  # and none at all in a Pi 4 build


def test_lse_atomic_fails_everywhere(tmp_path: Path) -> None:
    obj = build(tmp_path, "atomic", ATOMIC, "-march=armv8.1-a")
    for args in ([obj], ["--portable", obj]):
        result = check(*args)
        assert result.returncode == 1, result.stdout
        assert "ldaddal" in result.stdout


def test_outline_atomics_helpers_fail_and_no_outline_atomics_passes(tmp_path: Path) -> None:
    """GCC's default on aarch64 links __aarch64_ldadd4_acq_rel (LSE behind an HWCAP test) into a library that uses
    an atomic: the check rejects it, which is why CMakeLists builds with -mno-outline-atomics."""
    helpers = build(tmp_path, "outline", ATOMIC, "-march=armv8-a", "-moutline-atomics", shared=True)
    result = check("--portable", helpers)
    assert result.returncode == 1 and "__aarch64_" in result.stdout
    llsc = build(tmp_path, "llsc", ATOMIC, "-march=armv8-a", "-mno-outline-atomics", shared=True)
    assert check("--portable", llsc).returncode == 0


def test_wheel_is_unpacked_and_stripped_libraries_are_refused(tmp_path: Path) -> None:
    good = build(tmp_path, "good", IN_VARIANT, "-march=armv8.2-a+dotprod", shared=True)
    bad = build(tmp_path, "bad", OUTSIDE_VARIANT, "-march=armv8.2-a+dotprod", shared=True)
    for name, lib in (("good", good), ("bad", bad)):
        with zipfile.ZipFile(tmp_path / f"{name}-0-cp311-cp311-linux_aarch64.whl", "w") as whl:
            whl.write(lib, "floe_edge/_native.cpython-311-aarch64-linux-gnu.so")
    ok = check("--portable", tmp_path / "good-0-cp311-cp311-linux_aarch64.whl")
    assert ok.returncode == 0 and "floe_edge/_native" in ok.stdout, ok.stdout + ok.stderr
    assert check("--portable", tmp_path / "bad-0-cp311-cp311-linux_aarch64.whl").returncode == 1
    subprocess.run(["aarch64-linux-gnu-strip", str(good)], check=True)
    stripped = check("--portable", good)
    assert stripped.returncode == 2 and "stripped" in stripped.stderr


def test_not_aarch64_is_an_error(tmp_path: Path) -> None:
    host = tmp_path / "host.o"
    (tmp_path / "host.cpp").write_text("int f() { return 1; }\n")
    subprocess.run(["c++", "-c", str(tmp_path / "host.cpp"), "-o", str(host)], check=True)
    # an x86-64 object on any host (on an aarch64 one, e.g. the emulated board run, c++ makes aarch64 code): the
    # ELF header's e_machine (bytes 18-19, little-endian) says EM_X86_64
    elf = bytearray(host.read_bytes())
    elf[18:20] = (62).to_bytes(2, "little")
    host.write_bytes(bytes(elf))
    result = check(host)
    assert result.returncode == 2 and "not an aarch64 ELF" in result.stderr
