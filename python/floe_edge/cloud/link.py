"""The device's cloud link: the interface the hybrid generator calls (`CloudBackend`), what a step returns
(`CloudStep`, `Evidence`), and what both backends share (`CloudLink`). The backends: `client.FloeCloudBackend` (the
floe protocol of `floe cloud serve`) and `openai_backend.OpenAICompletionsBackend` (any OpenAI-compatible raw
completions server).

API::

    first = await link.open(prompt_ids_edge, prompt_bytes, deadline=None, knowledge=None)  # the shared prompt
    step = await link.step(accepted_edge_ids, accepted_bytes, k=20, n_draft=8, deadline=t)       # cloud-led
    step = await link.step(accepted_edge_ids, accepted_bytes, k=20, score_edge_ids=d,
                           score_bytes=b, want=[2, 3], deadline=t)                               # edge-led
    await link.release()          # optional (FloeCloudBackend): the generation is over, delete its session now
    await link.close()                                                      # end the session, drop the connection

`deadline` is an absolute `time.monotonic()` instant. `accepted_*` are the tokens committed since the previous step()
call, each passed exactly once (also when that call fails: the link keeps the whole history and resends what the
cloud may have missed). A `CloudStep` holds, in EDGE ids, `draft` (the cloud's greedy draft re-tokenized for the edge,
or the scored edge draft) and `evidence`, len(draft) + 1 entries: `evidence[i]` is the cloud's top-k for the token
after draft[:i] (`Evidence`: edge ids and log-probs, descending), or None where the cloud has no distribution at that
point or it was not asked for. `want` lists the positions whose top-k the caller needs (default all): the cloud
skips the others' output layer (a text session names them by byte offset: the server finds its own positions).
`open` returns None, or, from a link with `first_on_open` called with `k=`, the `Evidence` of the answer's first
position (the cloud's prefill computes it: no second round trip before the first token). Errors are `CloudError`
subclasses (`errors`), never anything else from the network:
`CloudTimeout` (the deadline passed; the request was abandoned), `CloudUnavailable` (circuit breaker open: refused
without a round trip), `CloudConnectionError`, `CloudHTTPError` (an error status), `CloudProtocolError` (a malformed
or lying answer). Bad arguments are ValueError. `link.available` says whether a step would be let through now;
`link.can_score` whether it can score an edge draft (edge-led steps), `link.accepts_knowledge` whether open() takes
the id of a cloud knowledge entry (`floe cloud serve --knowledge`). Bytes are counted per step
(`CloudStep.bytes_*`) and cumulatively (`link.stats`).
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, TypeVar, Union, runtime_checkable

import numpy as np
import numpy.typing as npt

from .breaker import CircuitBreaker
from .transport import LinkStats, Transport

__all__ = ["CloudBackend", "CloudLink", "CloudStep", "Evidence", "LinkStats", "StepMeter"]

L = TypeVar("L", bound="CloudLink")


@dataclass(frozen=True)
class Evidence:
    """The cloud's distribution at one edge position: a sparse top-k in edge ids, log-prob descending."""

    ids: npt.NDArray[np.int32]
    logprobs: npt.NDArray[np.float32]
    kept: float = 1.0  # fraction of the cloud's top-k probability mass that maps to these edge ids


@dataclass(frozen=True)
class CloudStep:
    draft: list[int]                   # edge ids: the cloud's draft re-tokenized, or the scored edge draft
    evidence: list[Optional[Evidence]]  # len(draft) + 1: after draft[:i]; None where nothing aligns
    rtt_ms: float                      # wall time of the step() call
    bytes_sent: int                    # this step's traffic (including retries and a reopen)
    bytes_received: int
    requests: int = 1                  # HTTP requests this step made
    server_ms: Optional[float] = None  # server compute time, when it reports one (Server-Timing: dur)


@runtime_checkable
class CloudBackend(Protocol):
    """What the scheduler / HybridGenerator calls. See the module docstring."""

    can_score: bool  # supports edge-led scoring (score_edge_ids)
    accepts_knowledge: bool  # open() takes a knowledge entry id

    @property
    def available(self) -> bool: ...
    @property
    def stats(self) -> LinkStats: ...
    async def open(self, prompt_ids_edge: Sequence[int], prompt_bytes: bytes, *,
                   deadline: Optional[float] = None, knowledge: Optional[str] = None) -> Optional[Evidence]: ...
    async def step(self, accepted_edge_ids: Sequence[int], accepted_bytes: bytes, *, k: int, n_draft: int = 0,
                   score_edge_ids: Sequence[int] = (), score_bytes: bytes = b"",
                   want: Optional[Sequence[int]] = None, deadline: float) -> CloudStep: ...
    async def close(self) -> None: ...


class StepMeter:
    """Wall time and traffic of one step() call, retries and reopened sessions included."""

    def __init__(self, stats: LinkStats) -> None:
        self._stats, self._t0 = stats, time.monotonic()
        self._sent, self._received, self._requests = stats.bytes_sent, stats.bytes_received, stats.requests

    def result(self, draft: list[int], evidence: list[Optional[Evidence]],
               server_ms: Optional[float]) -> CloudStep:
        s = self._stats
        return CloudStep(draft, evidence, (time.monotonic() - self._t0) * 1e3, s.bytes_sent - self._sent,
                         s.bytes_received - self._received, s.requests - self._requests, server_ms)


class CloudLink:
    """What both backends share: a `Transport` (given, or made from base_url, api_key, verify and breaker), whose
    circuit breaker says `available` and whose counters are `stats`; `async with`; close() drops the connection.
    Subclasses set `can_score` and add open() and step() (see `CloudBackend`)."""

    can_score: bool
    accepts_knowledge: bool = False

    def __init__(self, base_url: str, *, api_key: Optional[str] = None,
                 verify: Union[bool, str, ssl.SSLContext] = True, breaker: Optional[CircuitBreaker] = None,
                 transport: Optional[Transport] = None) -> None:
        self.transport = transport or Transport(base_url, api_key=api_key, verify=verify, breaker=breaker)

    @property
    def available(self) -> bool:
        return self.transport.available

    @property
    def breaker(self) -> CircuitBreaker:
        return self.transport.breaker

    @property
    def stats(self) -> LinkStats:
        return self.transport.stats

    def meter(self) -> StepMeter:
        """Start measuring a step."""
        return StepMeter(self.stats)

    async def __aenter__(self: L) -> L:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.transport.aclose()
