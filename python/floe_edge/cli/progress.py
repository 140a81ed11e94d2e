"""Progress display for long CLI work, and model names resolved with it."""

from __future__ import annotations

import sys
from typing import Callable

from .. import models


def byte_progress(label: str) -> Callable[[int, int], None]:
    """A byte-progress callback: a rich bar on a terminal, nothing otherwise."""
    if not sys.stderr.isatty():
        return lambda done, total: None
    try:
        from rich.progress import Progress
    except ImportError:
        return lambda done, total: print(f"\r{label} {100 * done // max(total, 1)}%", end="", file=sys.stderr)
    bar = Progress(transient=True)
    task = bar.add_task(label, total=None)
    bar.start()

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)
        if done >= total:
            bar.stop()

    return update


def resolve_model(name_or_path: str) -> str:
    """`models.resolve_model` with a progress bar while a registry model is pulled."""
    progress = byte_progress(f"pulling {name_or_path}") if name_or_path in models.MODELS else None
    return models.resolve_model(name_or_path, progress=progress)
