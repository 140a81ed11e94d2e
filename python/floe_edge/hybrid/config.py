"""What one generation works with: the settings of the generator and the parts it is made of."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import numpy.typing as npt

from ..cloud.link import CloudBackend
from ..edge import EdgeModel
from ..fusion import FusedSampler, Fuser
from ..scheduler import DeadlineScheduler, Lead
from .clock import Clock, IOLoop


@dataclass(frozen=True)
class Settings:
    k: int = 8                    # cloud top-k per position
    chunk: int = 8                # cloud-led: tokens drafted per request
    lookahead: int = 16           # edge-led: tokens the edge drafts ahead of the head
    lead: Optional[Lead] = None   # a fixed lead (None: the scheduler decides)
    pace: Optional[float] = None  # bound on the whole answer, a factor of the edge's own time per token
    trace: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.chunk <= 16 or not 1 <= self.lookahead <= 64 or not 1 <= self.k <= 64:
            raise ValueError("chunk must be in 1..16, lookahead in 1..64, k in 1..64")
        if self.pace is not None and not self.pace >= 1.0:
            raise ValueError("pace must be >= 1 (a factor of the edge's own time per token) or None")


@dataclass
class Parts:
    edge: EdgeModel
    cloud: Optional[CloudBackend]
    io: Optional[IOLoop]          # runs the cloud link's coroutines (None without a cloud)
    clock: Clock
    fuser: Fuser
    sampler: FusedSampler
    scheduler: DeadlineScheduler
    settings: Settings

    def evaluate(self, ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """The edge's logits after each of ids (2-D); the time taken goes to the scheduler."""
        t = self.clock.now()
        logits = self.edge.eval(ids, logits="all")
        self.scheduler.observe_edge((self.clock.now() - t) * 1e3, len(ids))
        return np.ascontiguousarray(logits, np.float32).reshape(len(ids), -1)

