"""What hybrid generation returns: tokens with their source and timing, and the statistics of one generation."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional


class Source(str, Enum):
    FUSED = "fused"              # edge x cloud evidence
    CLOUD_DRAFT = "cloud-draft"  # a cloud draft token accepted by the fused verification
    EDGE = "edge"                # edge confident: the cloud was not needed
    EDGE_ONLY = "edge-only"      # the cloud was late, down or absent


@dataclass(frozen=True)
class HybridToken:
    id: int
    text: str             # the complete UTF-8 characters this token finishes (may be "" mid-character)
    source: Source
    logprob: float        # fused log-prob of the token (edge log-prob when the cloud had no say)
    t_ms: float           # emission time since generation started
    late_ms: float        # emission time minus the token's deadline (<= 0: in time)


@dataclass
class HybridStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0           # of the edge's prompt, reused from its KV cache (not evaluated again)
    tokens: int = 0
    latency_ms: float = 0.0          # first request to last token, prefill included
    prefill_ms: float = 0.0
    deadline_misses: int = 0
    max_late_ms: float = float("-inf")
    sources: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in Source})
    requests: int = 0
    cloud_errors: int = 0
    late_answers: int = 0            # answers that came after their tokens were emitted (dropped)
    rollbacks: int = 0               # drafted tokens thrown away after a fused choice differed
    bytes_sent: int = 0
    bytes_received: int = 0
    finish_reason: str = "length"    # "length" (n tokens) or "eog" (the model ended the text)
    scheduler: dict[str, Optional[float]] = field(default_factory=dict)
    trace: list[str] = field(default_factory=list)  # cloud requests and answers, when the generator traces

    @property
    def ms_per_token(self) -> float:
        return self.latency_ms / self.tokens if self.tokens else 0.0

    @property
    def cloud_share(self) -> float:
        """Fraction of tokens decided with cloud evidence."""
        used = self.sources[Source.FUSED.value] + self.sources[Source.CLOUD_DRAFT.value]
        return used / self.tokens if self.tokens else 0.0

    def count(self, source: Source, late_ms: float) -> None:
        """One emitted token: its source and how late it was against its deadline."""
        self.tokens += 1
        self.sources[source.value] += 1
        self.max_late_ms = max(self.max_late_ms, late_ms)
        self.deadline_misses += late_ms > 0

    def count_traffic(self, bytes_sent: int, bytes_received: int) -> None:
        self.bytes_sent += bytes_sent
        self.bytes_received += bytes_received
