"""floe-edge: on-device runtime for hybrid LLM-SLM generation (Floe).

    from floe_edge import FloeCloudBackend, HybridGenerator, NativeSLM

The cloud server (FastAPI, uvicorn) and llama-cpp-python are optional extras: importing this package needs neither.
The hybrid generator and the cloud link (httpx) are imported on first use: an edge-only script does not load them.
"""

from typing import TYPE_CHECKING, Any

from . import fusion, kernels
from ._native import Cancelled, ContextOverflowError, GGUFError, ModelError
from ._version import __version__
from .fusion import FusedSampler, Fuser
from .sampling import Sampler
from .slm import ModelClosedError, NativeSLM

if TYPE_CHECKING:
    from .cloud import FloeCloudBackend, OpenAICompletionsBackend
    from .hybrid import HybridGenerator

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


def __getattr__(name: str) -> Any:
    if name == "HybridGenerator":
        from .hybrid import HybridGenerator

        return HybridGenerator
    if name in ("FloeCloudBackend", "OpenAICompletionsBackend"):
        from . import cloud

        return getattr(cloud, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
