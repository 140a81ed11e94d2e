"""The emulated board run's pytest plugin (targets/ci/emulated_subset.py) leaves out only what it names: a test it lists
is skipped with its reason, a failure is turned into a skip only when llama-cpp-python is really missing and the
failure says so, and any other failure stays a failure."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TESTS = '''
import subprocess, sys

def test_slow_cloud_never_delays_a_token():
    raise AssertionError("would fail: listed as deadline-driven")

def test_cloud_subprocess_without_llama_cpp():
    raise RuntimeError("the local cloud exited (1): floe: `floe cloud serve` needs llama-cpp-python: pip install")

def test_other_failure():
    raise RuntimeError("a real bug")

def test_passes():
    pass
'''


def test_the_plugin_skips_what_it_names_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "test_hybrid.py").write_text(TESTS)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider", "-p",
                           "emulated_subset", str(tmp_path / "test_hybrid.py")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={"PYTHONPATH": str(ROOT / "targets" / "ci"), "PATH": "/usr/bin:/bin"})
    out = done.stdout
    llama_missing = importlib.util.find_spec("llama_cpp") is None
    assert "emulated run: deadline-driven" in out, out
    assert "FAILED test_hybrid.py::test_other_failure" in out, out
    if llama_missing:  # the subprocess failure is the missing module: skipped with the module's reason
        assert "2 skipped" in out and "1 failed" in out and "needs llama-cpp-python (the reference)" in out, out
    else:  # llama-cpp-python is installed: the same message is a real failure
        assert "1 skipped" in out and "FAILED test_hybrid.py::test_cloud_subprocess_without_llama_cpp" in out, out
    assert "1 passed" in out, out
