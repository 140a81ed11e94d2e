"""pytest plugin for the emulated board runs (targets/ci/arm64-rootfs.sh loads it with `-p emulated_subset`).

It leaves out, with the reason, the tests that cannot run in the emulated Debian userland; everything else runs.
Tests are reported as skipped (listed by `pytest -rs`); a module whose imports are not installed there is not
collected and is named with its reason in the terminal summary. Everything left out here still runs in the x86
suite (`.ci/run`), so no behaviour goes untested, only untested on ARM.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Generator

import pytest

# a module not installed in the rootfs -> why; a test that fails with exactly "No module named <it>" (in setup
# or in its body, e.g. test_tokenizer's load_llama) is reported as skipped with this reason, nothing else is
MISSING_MODULE_REASONS = {
    "llama_cpp": "needs llama-cpp-python (the reference): PyPI has no ARM wheel and building llama.cpp under qemu "
                 "takes over an hour",
}

# test module file name -> why the whole module is left out
MODULE_REASONS = {
    "test_structure.py": "source-layout checks (lizard, file sizes): the same text on every architecture",
}

# test module -> a module it imports at the top that may be missing in the rootfs, and why it is not installed
IMPORT_REASONS = {
    "test_adapters_peft.py": ("safetensors", "safetensors has no armv7 wheel on PyPI (a Rust build under qemu)"),
}

# test (file::name) -> why it is left out: tests whose premise is the speed of a real CPU. Under qemu the edge and
# its in-process cloud run 20-50x slower (a cloud token took 2.4-2.9 s in the arm64 run of 2026-12-06), so the
# deadline scheduler rightly keeps the cloud out and "the cloud was used" / "within pace" cannot hold.
_SLOW = ("deadline-driven: under qemu a cloud token takes seconds, so the scheduler rightly keeps the cloud out "
         "(the behaviour under test needs a cloud that answers within the deadline)")
TEST_REASONS = {
    "test_gate_use.py::test_hybrid_generator_with_a_learned_gate": _SLOW,
    "test_hybrid.py::test_fused_with_same_model_cloud": _SLOW,
    "test_hybrid.py::test_pace_bounds_the_whole_generation": _SLOW,
    "test_hybrid.py::test_slow_cloud_never_delays_a_token": _SLOW,
    "test_hybrid.py::test_outage_falls_back_and_recovers": _SLOW,
    "test_memory_budget.py::test_the_estimate_bounds_the_real_peak":
        "qemu-user's own memory (its translated code) counts in the process's peak RSS: 202.7 MiB measured "
        "against the 189.1 MiB the estimate bounds",
}

# what a test that needs llama-cpp-python says when it runs a subprocess (`floe cloud serve`, the README examples)
# instead of importing it: such failures are the missing module too, when it is missing
LLAMA_CPP_MESSAGES = ("needs llama-cpp-python", "No module named 'llama_cpp'")

_ignored: list[str] = []


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    need = IMPORT_REASONS.get(collection_path.name)
    if need is not None and importlib.util.find_spec(need[0]) is None:
        _ignored.append(f"{collection_path.name}: no module {need[0]}: {need[1]}")
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        reason = MODULE_REASONS.get(item.path.name) or TEST_REASONS.get(f"{item.path.name}::{item.originalname}")
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"emulated run: {reason}"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    err = call.excinfo
    if report.failed and err is not None and (err.errisinstance(ModuleNotFoundError) or _llama_cpp_missing(report)):
        name = "llama_cpp" if _llama_cpp_missing(report) else getattr(err.value, "name", None)
        reason = MISSING_MODULE_REASONS.get(name or "")
        if reason is not None:
            report.outcome = "skipped"
            report.longrepr = (str(item.path), (item.location[1] or 0) + 1, f"emulated run: {reason}")


def _llama_cpp_missing(report: pytest.TestReport) -> bool:
    return importlib.util.find_spec("llama_cpp") is None and any(m in report.longreprtext for m in LLAMA_CPP_MESSAGES)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _ignored:
        terminalreporter.write_line(f"NOT COLLECTED (emulated run) {line}")
