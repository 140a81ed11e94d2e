"""Latency-aware scheduling for hybrid generation: per token, wait for the cloud or go on without it.

Every token has a deadline: ``deadline_ms`` after the previous token was emitted (after the prompt, for the first).
The scheduler keeps two running estimates:

* the cloud's response time (RTT): an EWMA and a windowed p95 of observed step times, split into a network part
  (the smallest time seen recently, which a step with almost no compute approaches) and a compute part per token;
* the edge's compute time per token (decode) and per token of a batched verification, measured as it runs (so a
  loaded or throttled device shows up as a slower edge).

Decisions (`DeadlineScheduler`):

* ``open_ms``: how long opening a session took (recent median): what the first tokens of an answer wait for.
* ``expected_ms(n_tokens)``: recent network time + cloud compute per token x tokens of the request (appended, scored or
  drafted); failed and timed-out steps count as network samples of their elapsed time (lower bounds) until an answer
  comes back, which clears them (the network changed).
* ``wait_for_cloud(now, head_deadline, expected_arrival)``: the head token is uncertain and a request that covers it
  is in flight. Wait only when the answer is expected (p95) before the head's deadline minus a margin for fusing and
  emitting; otherwise the token is emitted edge-only now. A late answer is dropped, never waited for.
* ``lead()``: cloud-led (the cloud drafts a chunk with top-k per position, the edge verifies it in one batch) when the
  cloud decodes faster than the edge (the paper's regime: a Pi-class edge, a GPU cloud); edge-led (the edge drafts,
  the cloud scores the draft in one batch) when the edge is the faster one (this machine).
* ``should_probe(now)``: in edge-only stretches (cloud late or down) a request is still sent every ``probe_ms`` so
  recovery is seen: the first answer back in time puts the cloud back in use.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Deque, Optional


class Lead(str, Enum):
    CLOUD = "cloud-led"
    EDGE = "edge-led"


@dataclass
class RunningStat:
    """EWMA and windowed p95 / min of a latency in ms."""

    alpha: float = 0.25
    window: int = 32
    ewma: Optional[float] = None
    _recent: Deque[float] = field(default_factory=deque, repr=False)

    def add(self, ms: float) -> None:
        if not math.isfinite(ms) or ms < 0:
            return
        self.ewma = ms if self.ewma is None else (1 - self.alpha) * self.ewma + self.alpha * ms
        self._recent.append(ms)
        if len(self._recent) > self.window:
            self._recent.popleft()

    def clear(self) -> None:
        self.ewma = None
        self._recent.clear()

    @property
    def n(self) -> int:
        return len(self._recent)

    @property
    def p95(self) -> Optional[float]:
        if not self._recent:
            return None
        xs = sorted(self._recent)
        return xs[min(len(xs) - 1, math.ceil(0.95 * len(xs)) - 1)]

    def recent(self, n: int = 3) -> Optional[float]:
        """Median of the last n samples: follows a change within n // 2 + 1 samples, shrugs off one outlier."""
        if not self._recent:
            return None
        xs = sorted(list(self._recent)[-n:])
        return xs[len(xs) // 2]

    @property
    def min(self) -> Optional[float]:
        return min(self._recent) if self._recent else None


@dataclass
class DeadlineScheduler:
    deadline_ms: float = 200.0
    margin_ms: float = 3.0         # fusing + sampling + emitting a token after the answer arrives
    probe_ms: float = 250.0        # in edge-only stretches, one request at most this often
    slow_edge_ms: float = 25.0     # an edge slower than this per token tries cloud-led first
    rtt: RunningStat = field(default_factory=RunningStat)          # whole step time (network + cloud compute)
    network: RunningStat = field(default_factory=RunningStat)      # step time minus the cloud's estimated compute
    cloud_token_ms: RunningStat = field(default_factory=RunningStat)   # cloud compute per request token
    cloud_draft_ms: RunningStat = field(default_factory=RunningStat)   # cloud compute per greedy draft token
    edge_token_ms: RunningStat = field(default_factory=RunningStat)    # edge decode, per token
    edge_batch_ms: RunningStat = field(default_factory=RunningStat)    # edge batched verification, per token
    open_ms: RunningStat = field(default_factory=RunningStat)          # opening a cloud session (RTT + prefill)
    _last_request: float = -math.inf
    _failing: bool = False

    def __post_init__(self) -> None:
        if not self.deadline_ms > 0:
            raise ValueError("deadline_ms must be > 0")

    # -- observations -------------------------------------------------------------------------------------------
    def observe_edge(self, ms: float, n_tokens: int = 1) -> None:
        (self.edge_token_ms if n_tokens == 1 else self.edge_batch_ms).add(ms / max(n_tokens, 1))

    def observe_cloud(self, step_ms: float, n_tokens: int, server_ms: Optional[float] = None,
                      n_drafted: int = 0) -> None:
        """A step that took step_ms end to end for n_tokens appended, scored or drafted, n_drafted of them greedy
        cloud draft tokens (server_ms: its compute time, if the server reported it)."""
        self.observe_success()
        self.rtt.add(step_ms)
        if server_ms is not None:
            self.network.add(max(step_ms - server_ms, 0.0))
            if n_tokens:
                self.cloud_token_ms.add(server_ms / n_tokens)
            if n_drafted:
                self.cloud_draft_ms.add(server_ms / n_drafted)
            return
        base = self.network.min if self.network.n else None
        if base is None or step_ms < base:
            self.network.add(step_ms)
        elif n_tokens:
            self.cloud_token_ms.add((step_ms - base) / n_tokens)

    def observe_open(self, ms: float) -> None:
        """A cloud session opened after ms (the round trip and the cloud's prefill of the prompt)."""
        self.open_ms.add(ms)

    def observe_failure(self, elapsed_ms: float) -> None:
        """A step that failed or passed its deadline after elapsed_ms: a lower bound of the response time, put on
        the network (the cloud's compute per token is not what changed)."""
        self.rtt.add(elapsed_ms)
        self.network.add(elapsed_ms)
        self._failing = True

    def observe_success(self) -> None:
        """An answer came back after failures: the network changed, forget what the failures taught."""
        if self._failing:
            self.rtt.clear()
            self.network.clear()
            self._failing = False

    def request_sent(self, now: float) -> None:
        self._last_request = now

    # -- decisions ---------------------------------------------------------------------------------------------
    def expected_ms(self, n_tokens: int) -> Optional[float]:
        """Expected time of a step over n_tokens (appended, scored or drafted): the network's recent time (median of
        the last 3 steps, so a recovered cloud is back in use after two answers) plus the cloud's compute per token;
        None before any observation."""
        base = self.network.recent() if self.network.n else self.rtt.recent()
        if base is None:
            return None
        return base + (self.cloud_token_ms.ewma or 0.0) * n_tokens

    def wait_for_cloud(self, now: float, head_deadline: float, expected_arrival: float) -> bool:
        """Wait (until min(arrival, deadline)) for an in-flight answer covering the head token?"""
        return expected_arrival <= head_deadline - self.margin_ms / 1e3 and now < head_deadline - self.margin_ms / 1e3

    def cloud_useful(self, n_tokens: int) -> bool:
        """Can a step over n_tokens come back within one token deadline (p95)? True before any observation."""
        e = self.expected_ms(n_tokens)
        return e is None or e <= self.deadline_ms - self.margin_ms

    def should_probe(self, now: float) -> bool:
        return (now - self._last_request) * 1e3 >= self.probe_ms

    @property
    def failing(self) -> bool:
        """The last step failed: until one succeeds, every request is a probe (at most one per probe_ms)."""
        return self._failing

    def lead(self) -> Lead:
        """Cloud-led when the cloud drafts faster than the edge decodes. Until a cloud draft has been timed, only
        a slow edge (> slow_edge_ms per token, a Pi-class device) tries cloud-led, which then measures it."""
        edge, cloud = self.edge_token_ms.ewma, self.cloud_draft_ms.ewma
        if edge is None:
            return Lead.EDGE
        if cloud is None:
            return Lead.CLOUD if edge > self.slow_edge_ms else Lead.EDGE
        return Lead.CLOUD if cloud < edge else Lead.EDGE

    def summary(self) -> dict[str, Optional[float]]:
        return {"rtt_ewma_ms": self.rtt.ewma, "rtt_p95_ms": self.rtt.p95, "network_ms": self.network.min,
                "cloud_ms_per_token": self.cloud_token_ms.ewma, "edge_ms_per_token": self.edge_token_ms.ewma}
