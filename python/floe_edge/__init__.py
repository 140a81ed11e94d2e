"""floe-edge: on-device runtime for hybrid LLM-SLM generation (Floe).

    from floe_edge import FloeCloudBackend, HybridGenerator, NativeSLM

The cloud server (FastAPI, uvicorn) and llama-cpp-python are optional extras: importing this package needs neither.
"""

from . import fusion, kernels
from ._native import Cancelled, ContextOverflowError, GGUFError, ModelError
from ._version import __version__
from .cloud.client import FloeCloudBackend
from .cloud.openai_backend import OpenAICompletionsBackend
from .fusion import FusedSampler, Fuser
from .hybrid import HybridGenerator
from .sampling import Sampler
from .slm import ModelClosedError, NativeSLM

__all__ = [
    "Cancelled",
    "ContextOverflowError",
    "FloeCloudBackend",
    "FusedSampler",
    "Fuser",
    "GGUFError",
    "HybridGenerator",
    "ModelClosedError",
    "ModelError",
    "NativeSLM",
    "OpenAICompletionsBackend",
    "Sampler",
    "fusion",
    "kernels",
    "__version__",
]
