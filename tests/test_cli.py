"""`floe info` and variant selection, run as a user would (a subprocess)."""

import json
import os
import subprocess
import sys

from floe_edge import kernels


def run_floe(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "floe_edge.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60, check=True)


def test_info_json() -> None:
    info = json.loads(run_floe("info", "--json").stdout)
    assert info["variants"] == kernels.variants()
    assert info["variants"][-1] == "ref"
    assert info["active_variant"] == info["variants"][0]
    assert info["threads"] >= 1
    if info["arch"] == "x86_64":
        assert ("avx2" in info["variants"]) == all(f in info["cpu_features"] for f in ("avx2", "fma", "f16c"))


def test_info_text() -> None:
    out = run_floe("info").stdout
    assert "active_variant" in out and kernels.active_variant() in out


def test_force_ref() -> None:
    info = json.loads(run_floe("info", "--json", env={"FLOE_FORCE_REF": "1"}).stdout)
    assert info["active_variant"] == "ref" and info["force_ref"]


def test_this_cpu_gets_its_best_variant() -> None:
    features = kernels.cpu_features()
    if features["avx2"] and features["fma"] and features["f16c"]:
        assert kernels.variants()[0] in ("avx512", "avx2")
    if features["neon"]:
        assert kernels.variants()[0] in ("neon_dotprod" if features["dotprod"] else "neon",)
