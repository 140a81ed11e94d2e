"""The README's Python examples are documentation that runs: each ```python block, alone, in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(markdown: str) -> list[tuple[str, str]]:
    """(the section heading above it, code) for every ```python fenced block."""
    blocks, heading = [], "top"
    for part in re.split(r"^(```python\n.*?^```)$", markdown, flags=re.MULTILINE | re.DOTALL):
        if part.startswith("```python\n"):
            blocks.append((heading, part[len("```python\n"):-3]))
        else:
            heading = ([h for h in re.findall(r"^#+ (.+)$", part, re.MULTILINE)] or [heading])[-1]
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_readme_has_examples() -> None:
    assert [h for h, _ in BLOCKS] == ["Hybrid generation", "The edge model", "Kernels from Python", "Fusion"]


@pytest.mark.parametrize("code", [c for _, c in BLOCKS], ids=[h for h, _ in BLOCKS])
def test_readme_example_runs(code: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-3000:]}"
