"""floe-edge: on-device runtime for hybrid LLM-SLM generation (Floe)."""

from . import kernels

__all__ = ["kernels", "__version__"]
__version__ = "0.1.0"
