"""Opening the edge model of a backend: `native` (NativeSLM on a GGUF) or `litert` (LiteRTSLM on an exported
.tflite). Both are `EdgeModel`s with the same generate(), so the callers (`floe generate`, the hybrid generator) do
not ask which one they have."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

from .profiles import BACKENDS as BACKEND_NAMES
from .slm import NativeSLM

if TYPE_CHECKING:
    from .litert import LiteRTSLM
    from .litert.adapter_sets import PerAdapterSet

__all__ = ["BACKEND_NAMES", "open_edge", "open_edge_gguf"]

PathLike = Union[str, "os.PathLike[str]"]


def open_edge(backend: str, model: PathLike, *, threads: int = 1, n_ctx: int = 2048, variant: Optional[str] = None,
              tokenizer: Optional[PathLike] = None, delegate: str = "none",
              delegate_fallback: bool = False) -> "Union[NativeSLM, LiteRTSLM]":
    """The edge model. litert: `model` is the .tflite (its context size is the export's; n_ctx and variant do not
    apply), `tokenizer` its source GGUF when not where the sidecar says; `delegate_fallback`: run on the CPU
    (XNNPACK) with a note on stderr when the delegate is absent (a profile's choice), instead of an error."""
    if backend == "native":
        if str(model).endswith(".tflite"):
            raise ValueError(f"{model} is a LiteRT model: run it with --backend litert")
        return NativeSLM(model, threads=threads, n_ctx=n_ctx, variant=variant)
    if backend != "litert":
        raise ValueError(f"backend must be one of {', '.join(BACKEND_NAMES)}, got {backend!r}")
    from .litert import DelegateError, LiteRTSLM

    if not str(model).endswith(".tflite"):
        raise ValueError(f"{model} is not a .tflite: the litert backend runs a .tflite; make one with "
                         f"`floe export litert --model {model} --out edge.tflite`")
    try:
        return LiteRTSLM(model, threads=threads, tokenizer=tokenizer, delegate=delegate)
    except DelegateError as e:
        if not delegate_fallback:
            raise
        print(f"floe: {e}; running on the CPU", file=sys.stderr)
        return LiteRTSLM(model, threads=threads, tokenizer=tokenizer, delegate="none")


def open_edge_gguf(backend: str, gguf: PathLike, *, adapters: Sequence[PathLike] = (), threads: int = 1,
                   n_ctx: int = 2048, variant: Optional[str] = None, delegate: str = "none",
                   delegate_fallback: bool = False,
                   say: Callable[[str], None] = lambda _: None) -> "Union[NativeSLM, PerAdapterSet]":
    """The edge model of a GGUF on either backend, for code that swaps adapters (the demo, the evaluation).
    litert: the GGUF exported once per adapter set it is asked to run with (`adapters` first), each set's model
    cached under paths.litert_dir() (litert.adapter_sets); native: the GGUF itself, which loads adapters at run
    time (`adapters` is then the caller's to load)."""
    if backend == "litert":
        from .litert.adapter_sets import PerAdapterSet

        return PerAdapterSet(gguf, lambda tflite: open_edge("litert", tflite, threads=threads, delegate=delegate,
                                                            delegate_fallback=delegate_fallback),
                             n_ctx=n_ctx, adapters=adapters, say=say)
    edge = open_edge(backend, gguf, threads=threads, n_ctx=n_ctx, variant=variant)
    assert isinstance(edge, NativeSLM)  # the only other backend
    return edge
