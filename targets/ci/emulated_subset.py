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

_ignored: list[str] = []


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    need = IMPORT_REASONS.get(collection_path.name)
    if need is not None and importlib.util.find_spec(need[0]) is None:
        _ignored.append(f"{collection_path.name}: no module {need[0]}: {need[1]}")
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        reason = MODULE_REASONS.get(item.path.name)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"emulated run: {reason}"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    err = call.excinfo
    if report.failed and err is not None and err.errisinstance(ModuleNotFoundError):
        reason = MISSING_MODULE_REASONS.get(getattr(err.value, "name", None) or "")
        if reason is not None:
            report.outcome = "skipped"
            report.longrepr = (str(item.path), (item.location[1] or 0) + 1, f"emulated run: {reason}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _ignored:
        terminalreporter.write_line(f"NOT COLLECTED (emulated run) {line}")
