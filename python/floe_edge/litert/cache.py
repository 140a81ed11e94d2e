"""Edge models exported once and kept (`floe demo --backend litert`, `floe eval --backend litert`): the GGUF with an
adapter set merged, int8, under paths.litert_dir() by the sha256 of the GGUF and of each adapter. An export takes
minutes (the `[export]` extra); a cached model is reused while its context is large enough
and it was made by this version's recipe."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

from .sidecar import LiteRTError, Sidecar, file_sha256

__all__ = ["current", "exported"]


def current(tflite: Path, n_ctx: int = 0) -> bool:
    """Is `tflite` an export of this version's recipe (see `export.RECIPE`) with a context of at least `n_ctx`?"""
    from .export import RECIPE

    try:
        card = Sidecar.read(tflite)
    except LiteRTError:  # missing or unreadable
        return False
    return (tflite.is_file() and card.n_ctx >= n_ctx and isinstance(card.export, dict)
            and card.export.get("recipe") == RECIPE)


def exported(gguf: Path, adapters: Sequence[Path], n_ctx: int, say: Callable[[str], None]) -> Path:
    """The .tflite of `gguf` with `adapters` merged (each at scale 1), exported now unless cached."""
    from .. import paths
    from .export import export_litert

    key = file_sha256(gguf)[:16]
    if adapters:
        key += "-" + hashlib.sha256("".join(sorted(file_sha256(a) for a in adapters)).encode()).hexdigest()[:16]
    out = paths.litert_dir() / f"{gguf.stem}-{key}.tflite"
    if current(out, n_ctx):
        return out
    merged = f" with {len(adapters)} adapter(s) merged" if adapters else ""
    say(f"exporting the edge model{merged} to LiteRT, once (a few minutes): {out}")
    export_litert(gguf, out, adapters=[(a, 1.0) for a in adapters], quant="int8", n_ctx=n_ctx, prefill=(32,),
                  progress=lambda phase: say(f"  {phase}"))
    return out
