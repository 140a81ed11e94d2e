"""NativeSLM's adapter calls on a LiteRT model, whose adapters were merged into its weights at export
(`floe export litert --adapter`): `load_adapter` finds the file among the merged ones, `set_adapters` accepts exactly
the merged set with the scales they were merged at. A .tflite cannot change its weights at run time, so code that
swaps adapters (the demo, the evaluation) runs unchanged on a model exported with the adapters it uses, and any
other request is a clear error instead of silently different logits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

from .sidecar import LiteRTError, Sidecar, file_sha256

__all__ = ["MergedAdapter", "MergedAdapters"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class MergedAdapter:
    """An adapter file merged into the model (what `load_adapter` returns), known by its sha256."""
    path: str
    sha256: str


class MergedAdapters:
    """Mixin for a model with a sidecar (`card`) and a file (`path`)."""

    card: Sidecar
    path: Path

    def load_adapter(self, path: PathLike) -> MergedAdapter:
        digest = file_sha256(path)
        if all(a.get("sha256") != digest for a in self.card.adapters):
            raise LiteRTError(f"{self.path}: the adapter {path} is not merged into this model (a LiteRT model cannot "
                              f"load adapters at run time): export it with `floe export litert --adapter {path}`")
        return MergedAdapter(str(path), digest)

    def set_adapters(self, adapters: Sequence[tuple[MergedAdapter, float]]) -> None:
        want = sorted((a.sha256, round(float(s), 6)) for a, s in adapters)
        have = sorted((str(a.get("sha256")), round(float(a.get("scale", 1.0)), 6)) for a in self.card.adapters)
        if want != have:
            merged = ", ".join(f"{a.get('path')} x {a.get('scale')}" for a in self.card.adapters) or "none"
            raise LiteRTError(f"{self.path}: asked to run with {len(want)} adapter(s), but its weights have exactly "
                              f"these merged: {merged} (a LiteRT model cannot swap adapters at run time; export one "
                              "model per adapter set)")
