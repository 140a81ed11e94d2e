"""pytest plugin for the emulated board runs (targets/ci/arm64-rootfs.sh loads it with `-p emulated_subset`).

It leaves out, with the reason, the tests that cannot run in the emulated Debian userland; everything else runs.
Tests are skipped (listed by `pytest -rs`); a module whose imports are not installed there is not collected and is
named with its reason in the terminal summary. Everything left out here still runs in the x86 suite (`.ci/run`), so
no behaviour goes untested, only untested on ARM.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# fixture name -> why tests using it are left out
FIXTURE_REASONS = {
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
        if reason is None:
            used = set(getattr(item, "fixturenames", ()))
            reason = next((why for name, why in FIXTURE_REASONS.items() if name in used), None)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"emulated run: {reason}"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _ignored:
        terminalreporter.write_line(f"NOT COLLECTED (emulated run) {line}")
