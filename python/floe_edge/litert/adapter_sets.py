"""Adapter swapping on LiteRT, the only way a .tflite allows: one exported model per adapter set. `PerAdapterSet` is
an `EdgeModel` over the source GGUF; `set_adapters` switches to the model with exactly that set merged (exported and
cached on first use, litert.cache), and everything else goes to the current model. Each model keeps its own KV cache,
so switching back and forth (the evaluation's personalized and generic edge) recomputes nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from .cache import exported
from .merged import MergedAdapter
from .sidecar import LiteRTError, file_sha256

__all__ = ["PerAdapterSet"]

PathLike = Union[str, "os.PathLike[str]"]


class PerAdapterSet:
    """`open_model(tflite)` opens one exported model (a LiteRTSLM); `adapters` is the set the first call runs with."""

    def __init__(self, gguf: PathLike, open_model: Callable[[Path], Any], *, n_ctx: int,
                 adapters: Sequence[PathLike] = (), say: Callable[[str], None] = lambda _: None) -> None:
        self.gguf = Path(gguf)
        self._open_model, self._n_ctx, self._say = open_model, n_ctx, say
        self._models: dict[tuple[str, ...], Any] = {}
        self._wanted = [MergedAdapter(str(a), file_sha256(a)) for a in adapters]
        self._current: Optional[Any] = None

    def load_adapter(self, path: PathLike) -> MergedAdapter:
        if not Path(path).is_file():
            raise LiteRTError(f"adapter {path}: no such file")
        return MergedAdapter(str(path), file_sha256(path))

    def set_adapters(self, adapters: Sequence[tuple[MergedAdapter, float]], keep_cache: bool = False) -> None:
        """Run with exactly these adapters from now on (each at scale 1: a merged adapter has one scale); the
        model of that set keeps its own cache, so keep_cache has nothing to keep."""
        for item in adapters:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], MergedAdapter)):
                raise TypeError("set_adapters takes a list of (adapter, scale) pairs, adapters from load_adapter()")
            if float(item[1]) != 1.0:
                raise LiteRTError(f"adapter {item[0].path} at scale {item[1]}: a LiteRT edge merges adapters at "
                                  "scale 1 only")
        self._wanted = [a for a, _ in adapters]
        self._current = None

    def _model(self) -> Any:
        if self._current is None:
            key = tuple(sorted(a.sha256 for a in self._wanted))
            if key not in self._models:
                tflite = exported(self.gguf, [Path(a.path) for a in self._wanted], self._n_ctx, self._say)
                self._models[key] = self._open_model(tflite)
            self._current = self._models[key]
        return self._current

    def __getattr__(self, name: str) -> Any:  # called only for what this class does not define
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._model(), name)

    def close(self) -> None:
        for model in self._models.values():
            model.close()
        self._models.clear()
        self._current = None

    def __enter__(self) -> "PerAdapterSet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
