"""Loading the LiteRT interpreter: ai-edge-litert, or tflite-runtime where only that exists, and its delegates."""

from __future__ import annotations

import os
from typing import Any, Optional

from .sidecar import LiteRTError

__all__ = ["DELEGATES", "DelegateError", "LiteRTMissingError", "interpreter_module", "load_delegate",
           "open_interpreter"]

# delegate -> the shared libraries tried in turn (the dynamic loader's search path, or FLOE_LITERT_<NAME>_DELEGATE)
DELEGATES: dict[str, tuple[str, ...]] = {
    "gpu": ("libLiteRtGpuAccelerator.so", "libtensorflowlite_gpu_delegate.so"),
    "npu": ("libQnnTFLiteDelegate.so", "libLiteRtDispatch_Qualcomm.so"),  # Qualcomm Hexagon (QNN)
}


class LiteRTMissingError(LiteRTError, ImportError):
    """Neither ai-edge-litert nor tflite-runtime is installed."""


class DelegateError(LiteRTError):
    """The gpu/npu delegate asked for is not on this machine."""


def interpreter_module() -> Any:
    """`ai_edge_litert.interpreter`, or `tflite_runtime.interpreter` (older boards, Python <= 3.11)."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter
        except ImportError:
            raise LiteRTMissingError("the LiteRT backend needs ai-edge-litert (or tflite-runtime): "
                                     "pip install 'floe-edge[litert]'") from None
    return interpreter


def load_delegate(name: str, module: Any, library: Optional[str] = None) -> Optional[Any]:
    """The delegate `name` (gpu, npu) from `library` or the usual libraries; None for "none". A LiteRTError saying
    which libraries were tried when none loads: the CPU (XNNPACK) path needs no delegate."""
    if name == "none":
        return None
    if name not in DELEGATES:
        raise ValueError(f"delegate must be gpu, npu or none, got {name!r}")
    env = os.environ.get(f"FLOE_LITERT_{name.upper()}_DELEGATE")
    candidates = [library] if library else ([env] if env else list(DELEGATES[name]))
    errors = []
    for lib in candidates:
        try:
            return module.load_delegate(lib)
        except (ValueError, OSError, RuntimeError) as e:
            errors.append(f"{lib}: {e}".strip())
    raise DelegateError(f"no {name.upper()} delegate on this machine (tried {'; '.join(errors)}); install the "
                      f"vendor's LiteRT delegate, point FLOE_LITERT_{name.upper()}_DELEGATE at it, or use "
                      "--delegate none (XNNPACK on the CPU)")


def open_interpreter(path: str, threads: int, delegate: str = "none", library: Optional[str] = None) -> Any:
    """An interpreter for the .tflite at `path` with `threads` CPU threads (XNNPACK) and the delegate, tensors
    allocated. A file the runtime cannot read is a LiteRTError naming it."""
    module = interpreter_module()
    delegates = [d for d in [load_delegate(delegate, module, library)] if d is not None]
    try:
        interp = module.Interpreter(model_path=path, num_threads=threads, experimental_delegates=delegates or None)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise LiteRTError(f"{path}: LiteRT cannot load it (corrupt, truncated or not a .tflite?): {e}") from None
    return interp
