"""The demo's edge on LiteRT (`floe demo --backend litert`): the edge GGUF with the user's adapter merged, exported
once to an int8 .tflite (minutes; the `[export]` extra) and cached under the demo folder by the sha256 of both."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

__all__ = ["litert_edge"]


def litert_edge(edge_path: Path, adapter: Optional[Path], n_ctx: int, say: Callable[[str], None]) -> Path:
    from .. import paths
    from ..files import file_sha256
    from ..litert import LiteRTError, Sidecar, export_litert

    key = file_sha256(edge_path)[:16] + (f"-{file_sha256(adapter)[:16]}" if adapter is not None else "")
    out = paths.demo_dir() / "litert" / f"{edge_path.stem}-{key}.tflite"
    if out.is_file():
        try:
            if Sidecar.read(out).n_ctx >= n_ctx:
                return out
        except LiteRTError:
            pass  # an unreadable sidecar: export again
    with_adapter = " with the user's adapter merged" if adapter is not None else ""
    say(f"exporting the edge model{with_adapter} to LiteRT, once (a few minutes): {out}")
    export_litert(edge_path, out, adapters=[(adapter, 1.0)] if adapter is not None else [], quant="int8",
                  n_ctx=n_ctx, prefill=(32,), progress=lambda phase: say(f"  {phase}"))
    return out
