"""floe-edge: on-device runtime for hybrid LLM-SLM generation (Floe)."""

from . import fusion, kernels
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
    "fusion",
    "kernels",
    "__version__",
]
__version__ = "0.1.0"
