"""Helpers shared by the bench/ scripts: machine description, load, BENCHMARKS.md sections."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_MD = ROOT / "BENCHMARKS.md"


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    field = lambda k: (re.findall(rf"^{k}\s*:\s*(.+)$", info, re.M) or [""])[0].strip()  # noqa: E731
    model = field("model name") or field("Model") or platform.processor() or platform.machine()
    detail = f" (family {field('cpu family')}, model {field('model')})" if field("cpu family") else ""
    l3 = Path("/sys/devices/system/cpu/cpu0/cache/index3/size")
    cache = f", L3 {l3.read_text().strip()}" if l3.exists() else ""
    return f"{model}{detail}, {os.cpu_count()} cores{cache}, Linux {platform.release()}"


# The CPU flags the kernel variants are chosen by (x86 /proc/cpuinfo "flags", ARM "Features").
SIMD_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
              "amx_int8", "asimd", "asimddp", "i8mm", "sve", "neon")


def simd_flags() -> str:
    """The kernel-relevant flags this CPU reports, e.g. "avx2 fma f16c avx512f ... avx512_vnni"."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    have = set((re.findall(r"^(?:flags|Features)\s*:\s*(.+)$", info, re.M) or [""])[0].split())
    return " ".join(f for f in SIMD_FLAGS if f in have) or "none reported"


def load() -> str:
    """Load average: other processes on the same cores skew every figure."""
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def cpu_key() -> str:
    """A short name of this CPU for section markers: one table per benchmark and CPU (e.g. amd-epyc-f25-m17)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    field = lambda k: (re.findall(rf"^{k}\s*:\s*(.+)$", info, re.M) or [""])[0].strip()  # noqa: E731
    vendor = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(field("vendor_id"), platform.machine())
    family = f"-f{field('cpu family')}-m{field('model')}" if field("cpu family") else ""
    return f"{vendor}{family}".lower()


def write_section(name: str, section: str) -> None:
    """Replace the text between <!-- name@cpu:begin --> and <!-- name@cpu:end --> in BENCHMARKS.md for this CPU, or
    add it after the other CPUs' sections of the same benchmark (or at the end): each CPU keeps its own table."""
    key = f"{name}@{cpu_key()}"
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    section = section if section.startswith(begin) else f"{begin}\n{section.rstrip()}\n{end}"
    text = BENCH_MD.read_text() if BENCH_MD.exists() else (
        "# Benchmarks\n\nFigures measured by the scripts in `bench/`; each section is rewritten by its script.\n")
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        ends = [m.end() for m in re.finditer(rf"<!-- {re.escape(name)}@[\w-]+:end -->", text)]
        at = ends[-1] if ends else len(text.rstrip("\n"))
        text = text[:at] + "\n\n" + section + text[at:] + ("" if ends else "\n")
    BENCH_MD.write_text(text)
