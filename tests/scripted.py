"""A scripted world for the hybrid policy: an edge and a cloud that say given things at given positions, with given
costs, on a virtual clock. The generator runs on it unchanged (its Clock and IOLoop are the only seams), so a test
states what each side believes and how long everything takes, and checks the decisions exactly, in milliseconds of
virtual time, without a model, a network or a wall clock.

Tokens: a vocabulary of 16; id 0 ends the generation. A side's belief at generated position p is (token, probability);
the rest of the probability is spread evenly over the other tokens.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, Generator, Optional, Sequence, TypeVar, Union

import numpy as np

from floe_edge.cloud import CloudStep, CloudTimeout, Evidence, LinkStats

T = TypeVar("T")
V = 16
EOG = 0
Belief = Callable[[int], tuple[int, float]]  # generated position -> (token, probability)


def beliefs(tokens: Sequence[int], probs: Union[float, Sequence[float]]) -> Belief:
    """A side that says tokens[p] with probability probs[p] (or one probability for all); past the end, token 1."""
    def at(p: int) -> tuple[int, float]:
        prob = probs if isinstance(probs, float) else probs[min(p, len(probs) - 1)]
        return (tokens[p] if p < len(tokens) else 1), prob
    return at


def log_probs(token: int, prob: float) -> np.ndarray:
    lp = np.full(V, math.log((1.0 - prob) / (V - 1)), np.float32)
    lp[token] = math.log(prob)
    return lp


# -- time and IO ---------------------------------------------------------------------------------------------------
class VirtualClock:
    """Seconds of virtual time; events (cloud answers) fire as time passes over them."""

    def __init__(self) -> None:
        self.t = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.t

    def call_at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._events, (t, next(self._seq), fn))

    def advance(self, seconds: float) -> None:
        self.sleep_until(self.t + seconds)

    def sleep_until(self, t: float) -> None:
        while self._events and self._events[0][0] <= t:
            self._fire()
        self.t = max(self.t, t)

    def wait(self, future: "concurrent.futures.Future[Any]", timeout: float) -> None:
        end = self.t + max(timeout, 0.0)
        while not future.done() and self._events and self._events[0][0] <= end:
            self._fire()
        if not future.done():
            self.t = max(self.t, end)

    def link_deadline(self, seconds: float) -> float:
        return self.t + seconds

    def _fire(self) -> None:
        t, _, fn = heapq.heappop(self._events)
        self.t = max(self.t, t)
        fn()


class _Sleep:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __await__(self) -> Generator["_Sleep", None, None]:
        yield self


def sleep(seconds: float) -> _Sleep:
    """What a scripted coroutine awaits to take virtual time."""
    return _Sleep(seconds)


class VirtualIO:
    """Runs coroutines that await only `sleep`, on the virtual clock."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock

    def submit(self, coro: Coroutine[Any, Any, T]) -> "concurrent.futures.Future[T]":
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._step(coro, fut)
        return fut

    def _step(self, coro: Coroutine[Any, Any, T], fut: "concurrent.futures.Future[T]") -> None:
        if fut.cancelled():
            coro.close()
            return
        try:
            req = coro.send(None)
        except StopIteration as stop:
            fut.set_result(stop.value)
            return
        except Exception as e:
            fut.set_exception(e)
            return
        assert isinstance(req, _Sleep), f"scripted coroutines await only sleep(), not {req!r}"
        self.clock.call_at(self.clock.t + req.seconds, lambda: self._step(coro, fut))

    def run(self, coro: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        fut = self.submit(coro)
        self.clock.wait(fut, 3600.0 if timeout is None else timeout)
        return fut.result(0)

    def close(self) -> None:
        pass


# -- the two sides -------------------------------------------------------------------------------------------------
class _Text:
    def feed(self, id: int) -> str:
        return chr(ord("a") + id)

    def flush(self) -> str:
        return ""


@dataclass
class ScriptedEdge:
    """An EdgeModel whose logits at generated position p come from `says`; an eval of n tokens takes
    decode_ms + (n - 1) x batch_ms of virtual time."""

    clock: VirtualClock
    says: Belief
    decode_ms: float = 10.0
    batch_ms: float = 2.0
    n_ctx: int = 512
    n_vocab: int = V
    seq: list[int] = field(default_factory=list)     # what the KV cache holds
    n_prompt: int = 0
    evals: list[tuple[float, list[int]]] = field(default_factory=list)  # (virtual ms, ids) of each eval
    truncations: list[int] = field(default_factory=list)

    def tokenize(self, text: Union[str, bytes], add_bos: bool = True, special: bool = True) -> list[int]:
        data = text.encode() if isinstance(text, str) else text
        return [1 + b % (V - 1) for b in data]

    def detokenize(self, ids: Sequence[int], special: bool = False) -> bytes:
        return bytes(ord("a") + i for i in ids)

    def is_eog(self, id: int) -> bool:
        return id == EOG

    def text_stream(self) -> _Text:
        return _Text()

    def eval(self, ids: Sequence[int], logits: str = "all", timeout_s: Optional[float] = None) -> np.ndarray:
        if not self.seq:
            self.n_prompt = len(ids)  # the first eval after reset is the prompt
        self.evals.append((self.clock.t * 1e3, list(ids)))
        rows = []
        for t in ids:
            self.seq.append(int(t))
            p = len(self.seq) - self.n_prompt  # < 0 inside the prompt: no belief
            rows.append(log_probs(*self.says(p)) if p >= 0 else np.full(V, -math.log(V), np.float32))
        self.clock.advance((self.decode_ms + self.batch_ms * (len(ids) - 1)) / 1e3)
        return np.stack(rows) if logits == "all" else rows[-1]

    def truncate(self, n_past: int) -> None:
        self.truncations.append(n_past)
        del self.seq[n_past:]

    def reset(self) -> None:
        self.seq = []


@dataclass
class ScriptedCloud:
    """A CloudBackend whose distribution at generated position p comes from `says`. A step takes rtt_ms plus
    token_ms per token it computes (appended, scored or drafted), opening the session open_ms; `down(t)` (virtual
    seconds) makes a step fail after rtt_ms; `breaker(t)` makes the link unavailable; a step past its deadline fails
    with CloudTimeout there.
    Every request is recorded as (virtual ms sent, accepted, scored, n_draft, want)."""

    clock: VirtualClock
    says: Belief
    rtt_ms: float = 30.0
    token_ms: float = 1.0
    open_ms: Optional[float] = None  # opening the session (default: rtt_ms)
    down: Callable[[float], bool] = lambda t: False
    breaker: Callable[[float], bool] = lambda t: False
    can_score: bool = True
    first_on_open: bool = False  # open(k=) returns the first position's evidence
    generated: list[int] = field(default_factory=list)  # the committed tokens the cloud has been sent
    requests: list[tuple[float, list[int], list[int], int, Optional[list[int]]]] = field(default_factory=list)
    opened: list[list[int]] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return not self.breaker(self.clock.t)

    @property
    def stats(self) -> LinkStats:
        return LinkStats(requests=len(self.requests))

    def _evidence(self, p: int, k: int) -> Evidence:
        token, prob = self.says(p)
        lp = log_probs(token, prob)
        ids = np.argsort(-lp, kind="stable")[:k].astype(np.int32)
        return Evidence(ids, lp[ids])

    async def open(self, prompt_ids_edge: Sequence[int], prompt_bytes: bytes, *,
                   deadline: Optional[float] = None, k: Optional[int] = None) -> Optional[Evidence]:
        assert k is None or self.first_on_open, "k given to a link without first_on_open"
        self.opened.append(list(prompt_ids_edge))
        self.generated = []
        await sleep((self.rtt_ms if self.open_ms is None else self.open_ms) / 1e3)
        return None if k is None else self._evidence(0, k)

    async def step(self, accepted_edge_ids: Sequence[int], accepted_bytes: bytes, *, k: int, n_draft: int = 0,
                   score_edge_ids: Sequence[int] = (), score_bytes: bytes = b"",
                   want: Optional[Sequence[int]] = None, deadline: float) -> CloudStep:
        now = self.clock.t
        self.requests.append((now * 1e3, list(accepted_edge_ids), list(score_edge_ids), n_draft,
                              None if want is None else list(want)))
        self.generated += accepted_edge_ids
        base = len(self.generated)
        draft = [self.says(base + j)[0] for j in range(n_draft)] if n_draft else list(score_edge_ids)
        n_tok = len(accepted_edge_ids) + (n_draft if n_draft else len(draft) + 1)
        took = (self.rtt_ms + self.token_ms * n_tok) / 1e3
        if self.down(now):
            await sleep(self.rtt_ms / 1e3)
            raise ConnectionResetError("scripted outage")
        if now + took > deadline:
            await sleep(max(deadline - now, 0.0))
            raise CloudTimeout("scripted step deadline")
        await sleep(took)
        evidence: list[Optional[Evidence]] = [self._evidence(base + j, k) if want is None or j in want else None
                                              for j in range(len(draft) + 1)]
        return CloudStep(draft, evidence, took * 1e3, 100, 40 * len(evidence), server_ms=self.token_ms * n_tok)

    async def close(self) -> None:
        pass
