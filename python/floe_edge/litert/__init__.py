"""The LiteRT backend: `floe export litert` (`export_litert`, the `[export]` extra) and `LiteRTSLM` (the `[litert]`
extra), an `EdgeModel` on an exported .tflite. Importing this package needs neither extra: they are imported when
used, and a missing one is a `LiteRTError` (`LiteRTMissingError` for the runtime) saying what to install."""

from __future__ import annotations

from .export import QUANTS, export_litert
from .runtime import DELEGATES, DelegateError, LiteRTMissingError
from .sidecar import LiteRTError, Sidecar
from .slm import LiteRTSLM

__all__ = ["DELEGATES", "DelegateError", "QUANTS", "LiteRTError", "LiteRTMissingError", "LiteRTSLM", "Sidecar",
           "export_litert"]
