"""Hybrid generation: the edge SLM and a cloud LLM, fused per token under a deadline (see `generator`).

Layout: `types` (tokens, stats), `state` (committed tokens, draft, per-position edge statistics and cloud
evidence), `pipeline` (the session and the requests), `policy` (the per-token decision as explicit actions and the
loop), `clock` (real or virtual time and IO), `generator` (`HybridGenerator`, the public entry).
"""

from ..edge import EdgeModel, ThrottledEdge
from .clock import Clock, IOLoop, RealClock
from .generator import HybridGenerator
from .types import HybridStats, HybridToken, Source

__all__ = ["Clock", "EdgeModel", "HybridGenerator", "HybridStats", "HybridToken", "IOLoop", "RealClock", "Source",
           "ThrottledEdge"]
