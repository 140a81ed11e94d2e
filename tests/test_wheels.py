"""The wheel configuration keeps its promises: every platform the issue asks for is built, nothing CPU-specific gets
into a wheel's compile flags (CMake refuses it under FLOE_PORTABLE), and the wheels are tested. cibuildwheel itself
needs docker (not on these machines): this checks the configuration, the workflow and the CMake guard."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
NATIVE = re.compile(r"-m(arch|cpu|tune)=native")


@pytest.fixture(scope="module")
def cibw() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cibuildwheel"]


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return yaml.safe_load((ROOT / ".github" / "workflows" / "wheels.yml").read_text())


def test_every_platform_is_built(cibw: dict[str, Any]) -> None:
    assert set(cibw["linux"]["archs"]) == {"x86_64", "aarch64", "armv7l"}
    assert cibw["manylinux-x86_64-image"] == cibw["manylinux-aarch64-image"] == "manylinux_2_28"
    assert cibw["manylinux-armv7l-image"].startswith("manylinux_2_")
    assert "arm64_v8a" in cibw["android"]["archs"]
    assert "*-manylinux_*" not in str(cibw.get("skip", "")) and "*android*" not in str(cibw.get("skip", ""))


def test_the_wheels_are_portable(cibw: dict[str, Any]) -> None:
    assert cibw["config-settings"]["cmake.define.FLOE_PORTABLE"] == "ON"
    text = (ROOT / "pyproject.toml").read_text() + (ROOT / ".github" / "workflows" / "wheels.yml").read_text()
    assert not NATIVE.search(text), NATIVE.search(text)
    # CMake: the baseline takes no -march/-mcpu; only SIMD variant sources get -m flags (per-file COMPILE_OPTIONS),
    # none of them native (the FLOE_PORTABLE guard names the flags it refuses: not a flag set)
    cmake = (ROOT / "CMakeLists.txt").read_text()
    flag_lines = [ln for ln in cmake.splitlines()
                  if re.search(r"add_compile_options|set\(CMAKE_C(XX)?_FLAGS|target_compile_options", ln)]
    assert flag_lines and not [ln for ln in flag_lines if re.search(r"-m(arch|cpu|tune)=", ln)]
    per_file = re.findall(r'COMPILE_OPTIONS "([^"]*)"', cmake)
    assert any("-mavx2" in o for o in per_file) and not [o for o in per_file if "native" in o]


def test_the_wheels_are_tested(cibw: dict[str, Any]) -> None:
    for command in (cibw["test-command"], cibw["android"]["test-command"]):
        assert command.startswith("python -m pytest ")  # Android runs Python commands only
        for test in re.findall(r"tests/\S+\.py", command):
            assert (ROOT / test).is_file(), test
    assert "pytest>=7" in cibw["test-requires"] and cibw["test-sources"] == ["tests", "targets/profiles"]
    # only armv7l skips its tests (no numpy armv7l wheels on PyPI), and says so
    assert cibw["linux"]["test-skip"] == "*_armv7l" and "test-skip" not in cibw


def test_workflow_runs_every_build(workflow: dict[str, Any]) -> None:
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as true
    assert "workflow_dispatch" in triggers and "tags" in triggers["push"]
    linux = workflow["jobs"]["linux"]
    runners = {m["arch"]: m["runner"] for m in linux["strategy"]["matrix"]["include"]}
    assert set(runners) == {"x86_64", "aarch64", "armv7l"}
    assert "arm" in runners["aarch64"], "aarch64 builds on an ARM runner, not under qemu"
    steps = [s.get("uses", "") for s in linux["steps"]]
    assert any(u.startswith("pypa/cibuildwheel@") for u in steps) and any("setup-qemu" in u for u in steps)
    android = workflow["jobs"]["android"]
    assert "arm64_v8a" in android["strategy"]["matrix"]["arch"]
    cibw_steps = [s for s in android["steps"] if s.get("uses", "").startswith("pypa/cibuildwheel@")]
    assert cibw_steps and cibw_steps[0]["env"]["CIBW_PLATFORM"] == "android"
    # nothing in the workflow turns the tests off
    assert "CIBW_TEST_SKIP" not in str(workflow) and "CIBW_TEST_COMMAND" not in str(workflow)
    for job in workflow["jobs"].values():
        assert any(s.get("uses", "").startswith("actions/upload-artifact@") for s in job["steps"])


# a CPU-specific -march the host's compiler accepts (gcc rejects another architecture's before CMake's check runs)
_ISA_FLAG = ("-march=native" if sys.platform == "darwin" else
             "-march=armv8.2-a+dotprod" if platform.machine() in ("aarch64", "arm64") else "-march=x86-64-v3")


def configure(tmp_path: Path, cxxflags: str) -> subprocess.CompletedProcess:
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []  # a userland may have ninja and no make
    return subprocess.run(["cmake", "-S", str(ROOT), "-B", str(tmp_path / "build"), *generator, "-DFLOE_PORTABLE=ON",
                           f"-DCMAKE_CXX_FLAGS={cxxflags}"], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
@pytest.mark.parametrize("flags,refused", [("-O2 -march=native", "-march=native"), ("-mtune=native", "-mtune=native"),
                                           (_ISA_FLAG, "-march=")])
def test_cmake_refuses_cpu_specific_flags(tmp_path: Path, flags: str, refused: str) -> None:
    done = configure(tmp_path, flags)
    assert done.returncode != 0 and "FLOE_PORTABLE" in done.stderr and refused in done.stderr, done.stderr[-2000:]


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_accepts_portable_flags(tmp_path: Path) -> None:
    done = configure(tmp_path, "-O2 -mtune=generic -fno-plt")
    assert done.returncode == 0, done.stderr[-2000:]
