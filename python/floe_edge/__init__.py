"""floe-edge: on-device runtime for hybrid LLM-SLM generation (Floe)."""

from . import kernels
from ._native import Cancelled, ContextOverflowError, GGUFError, ModelError
from .sampling import Sampler
from .slm import ModelClosedError, NativeSLM

__all__ = [
    "Cancelled",
    "ContextOverflowError",
    "GGUFError",
    "ModelClosedError",
    "ModelError",
    "NativeSLM",
    "Sampler",
    "kernels",
    "__version__",
]
__version__ = "0.1.0"
