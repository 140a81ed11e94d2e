"""pytest plugin for the emulated board runs (targets/ci/arm64-rootfs.sh loads it with `-p emulated_subset`).

It skips, with the reason in the skip message (`pytest -rs` lists them), the tests that cannot run in the emulated
Debian userland. Each rule names what is missing and why it is not installed there; everything else runs. A test
skipped here still runs in the x86 suite (`.ci/run`), so no behaviour goes untested, only untested on ARM.
"""
from __future__ import annotations

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        reason = MODULE_REASONS.get(item.path.name)
        if reason is None:
            used = set(getattr(item, "fixturenames", ()))
            reason = next((why for name, why in FIXTURE_REASONS.items() if name in used), None)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"emulated run: {reason}"))
