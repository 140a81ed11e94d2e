"""bench/kernels.py's smoke run: it builds its ggml harness (ggml_ref.c, ggml_repack.c) against llama-cpp-python's
libraries and exits non-zero unless ours, ggml's vec_dot path and ggml's CPU_REPACK mul_mat give the same outputs."""

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_kernels_bench_agrees_with_both_ggml_paths(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="bench/kernels.py measures against llama-cpp-python's ggml")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "kernels.py"), "--quick", "--no-write", "--shapes",
                        "256x512", "--threads", "1", "--footprint", "8"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    progress = {line.split()[1]: line for line in r.stdout.splitlines() if line.startswith("  256x512 ")}
    assert sorted(progress) == ["q4_0", "q4_1", "q8_0"] and all("ggml mul_mat" in p for p in progress.values())
    if platform.machine() == "x86_64":  # ggml repacks q4_0 (q4_0x8) on AVX2 and up, q4_1 nowhere
        assert "(repacked)" in progress["q4_0"] and "(repacked)" not in progress["q4_1"]
