"""The package version, from one place: pyproject.toml's `version`, as the installed package's metadata carries it."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["__version__"]

_UNKNOWN = "0+unknown"


def _from_source_tree() -> str:
    """Not installed (e.g. the sources on PYTHONPATH): read pyproject.toml next to python/floe_edge, if there."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return _UNKNOWN
    project = text.partition("[project]")[2].split("\n[", 1)[0]  # the [project] table only
    found = re.search(r'^version\s*=\s*"([^"]+)"', project, re.MULTILINE)
    return found.group(1) if found else _UNKNOWN


try:
    __version__ = version("floe-edge")
except PackageNotFoundError:
    __version__ = _from_source_tree()
