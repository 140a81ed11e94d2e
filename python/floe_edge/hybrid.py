"""Hybrid generation: the edge SLM and a cloud LLM generate together, token by token, under a per-token deadline.

The edge model runs on this thread; the cloud link runs on its own asyncio loop in a background thread, so the
edge keeps drafting while a request is on the wire. Per token (the *head*):

1. Cloud evidence for the head arrived: fuse (``Fuser``) and sample -> ``fused`` (``cloud-draft`` when the token is
   the cloud's own draft token, cloud-led).
2. The edge is confident (its top probability reaches the fusion preset's gate): emit it -> ``edge`` (gated upload:
   the cloud is not needed for that token).
3. A request covering the head is in flight and expected (p95) before the head's deadline: keep drafting ahead
   with the edge while there is time, then wait for the answer until the deadline.
4. Otherwise (cloud late, down or absent, or the deadline is here): the edge alone -> ``edge-only``.

Besides the per-token deadline, an optional *pace* bounds the whole generation: with ``pace=1.1`` the head token h
waits for the cloud only until ``pace x (h + 1)`` edge token times after the prompt (the edge's own ms per token,
as measured: its best recent time), so waiting for the cloud adds at most ~10% to the edge's own time, whatever the
network (a cloud computing beside the edge on a shared memory system can still slow the edge itself); where the
cloud is slower than the edge (this machine) that is what keeps fusion from costing latency, at the price of fewer
fused tokens. Time lost to a rolled-back draft counts against the same budget.

Requests (at most one in flight, one persistent connection): the committed tokens the cloud has not seen yet, plus
either the edge's draft to score (edge-led) or a request for a cloud draft of ``chunk`` tokens (cloud-led, when the
cloud decodes faster than the edge: the edge then verifies the draft in one batched eval). Every position of an
answer is fused against the edge's logits at that position; tokens are sampled from the fused distribution at each
position and the speculative prefix is kept while the sample equals the drafted token (exact for any sampler: the
draft only decides which edge KV is precomputed). Answers for a prefix that has changed meanwhile are dropped.

Privacy: ``private_context`` is prepended for the edge model only; the cloud session is opened with the shared
prompt alone, and what goes up afterwards is only the answer: emitted tokens and the edge's draft (or their bytes,
cross-vocabulary). The answer is the shared part of the conversation: a secret the edge writes into it goes up with
it, as it would reach any reader of the answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Coroutine, Iterator, Optional, TypeVar, Union

import numpy as np
import numpy.typing as npt

from .cloud.protocol import MAX_DRAFT
from .fusion import FusedSampler, Fuser, FusionWeights
from .scheduler import DeadlineScheduler, Lead
from .slm import NativeSLM

T = TypeVar("T")


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


@dataclass(frozen=True)
class EdgeThrottle:
    """Pads edge evals to a slower device's cost (the paper's regime: a Pi-class edge beside a fast cloud).
    decode_ms: one token; batch_ms_per_token: each further token of a batched eval (verification, prefill)."""

    decode_ms: float
    batch_ms_per_token: float

    def pad(self, started: float, n_tokens: int) -> None:
        target = started + (self.decode_ms + self.batch_ms_per_token * max(n_tokens - 1, 0)) / 1e3
        while (left := target - time.perf_counter()) > 0:
            time.sleep(left)


def _new_stream(edge: NativeSLM) -> Any:
    from . import _native

    return _native.StreamDecoder(edge.tokenizer)


class _LoopThread:
    """An asyncio loop on a daemon thread: the cloud link's IO runs there while the edge computes here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="floe-cloud-io", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> "concurrent.futures.Future[T]":
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            try:  # the executor's threads (asyncio.to_thread) end with the loop, not after it
                self.submit(self.loop.shutdown_default_executor()).result(5)
            except Exception:
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self.loop.is_running():
            self.loop.close()


@dataclass
class _Request:
    future: "concurrent.futures.Future[Any]"
    base: int               # generated tokens committed when it was sent
    tokens: list[int]       # edge tokens scored after base (edge-led); empty for cloud-led
    lead: Lead
    sent: float
    want: Optional[set[int]] = None  # positions (from base) asked for; None: all
    n_appended: int = 0
    n_draft: int = 0        # cloud-led: tokens drafted from base ...
    cached: int = 0         # ... the first `cached` of them drafted by the previous request (no cloud compute)

    @property
    def cost_tokens(self) -> int:
        """Tokens the cloud computes for this request."""
        return self.n_appended + (self.n_draft - self.cached if self.lead is Lead.CLOUD else len(self.tokens) + 1)

    def covers(self, head: int) -> bool:
        j = head - self.base
        if self.lead is Lead.CLOUD:
            return 0 <= j <= self.n_draft
        return 0 <= j <= len(self.tokens) and (self.want is None or j in self.want)


class HybridGenerator:
    """Edge SLM + cloud LLM generation with token-level fusion and a per-token deadline.

    ``cloud``: a cloud backend (``floe_edge.cloud.client``: the floe protocol or an OpenAI-compatible server), or
    None for edge-only. ``fusion``: a preset name, (w_e, w_c) or FusionWeights. The generator owns the IO thread;
    use it as a context manager or call close()."""

    def __init__(self, edge: NativeSLM, cloud: Any = None, *, fusion: Union[str, tuple[float, float],
                 FusionWeights] = "assistant", sampler: Optional[FusedSampler] = None, deadline_ms: float = 200.0,
                 k: int = 8, chunk: int = 8, lookahead: int = 16, lead: Optional[Lead] = None,
                 throttle: Optional[EdgeThrottle] = None, pace: Optional[float] = None, trace: bool = False) -> None:
        if not 1 <= chunk <= 16 or not 1 <= lookahead <= 64 or not 1 <= k <= 64:
            raise ValueError("chunk must be in 1..16, lookahead in 1..64, k in 1..64")
        if pace is not None and not pace >= 1.0:
            raise ValueError("pace must be >= 1 (a factor of the edge's own time per token) or None")
        self.edge, self.cloud = edge, cloud
        self.fuser = Fuser(edge.n_vocab, weights=fusion, top_k=min(k, 64))
        self.sampler = sampler or FusedSampler()
        self.scheduler = DeadlineScheduler(deadline_ms=deadline_ms)
        self.k, self.chunk, self.lookahead, self.fixed_lead, self.throttle = k, chunk, lookahead, lead, throttle
        self.pace = pace
        self.trace = trace
        self._io = _LoopThread() if cloud is not None else None
        self.last_stats = HybridStats()

    def cloud_available(self) -> bool:
        """False while the link's circuit breaker is open (the cloud failed repeatedly)."""
        return self.cloud is not None and bool(getattr(self.cloud, "available", True))

    def close(self) -> None:
        if self._io is not None:
            try:
                self._io.run(self.cloud.close(), timeout=2)
            except Exception:  # closing a dead link must not hide the caller's own error
                pass
            self._io.close()
            self._io = None

    def __enter__(self) -> "HybridGenerator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- edge ------------------------------------------------------------------------------------------------------
    def _eval(self, ids: list[int]) -> npt.NDArray[np.float32]:
        """Logits after each of ids (2-D) and the time taken into the scheduler."""
        t = time.perf_counter()
        logits = self.edge.eval(ids, logits="all")
        if self.throttle:
            self.throttle.pad(t, len(ids))
        self.scheduler.observe_edge((time.perf_counter() - t) * 1e3, len(ids))
        return np.ascontiguousarray(logits, np.float32).reshape(len(ids), -1)

    # -- generation ------------------------------------------------------------------------------------------------
    def generate(self, prompt: str, n: int = 32, private_context: str = "") -> Iterator[HybridToken]:
        """Stream n tokens (fewer at end of generation) after prompt. Stats land in last_stats."""
        return _Run(self, prompt, n, private_context).tokens()

    def generate_cloud_only(self, prompt: str, n: int = 32, chunk: int = 16) -> Iterator[HybridToken]:
        """The cloud-only baseline: the cloud's greedy text, `chunk` tokens per round trip, no edge model in the
        loop (tokens are shown in edge ids). No deadline fallback: late_ms says how late each token was."""
        if self.cloud is None or self._io is None:
            raise ValueError("cloud-only generation needs a cloud")
        stats = self.last_stats = HybridStats()
        stream = _new_stream(self.edge)
        t0 = last = time.perf_counter()
        ids = self.edge.tokenize(prompt)
        stats.prompt_tokens = len(ids)
        self._io.run(self.cloud.open(ids, prompt.encode()))
        accepted: list[int] = []
        try:
            while stats.tokens < n:
                deadline = time.monotonic() + 30.0
                step = self._io.run(self.cloud.step(accepted, self.edge.detokenize(accepted), k=1,
                                                    n_draft=min(chunk, n - stats.tokens), deadline=deadline))
                stats.requests += 1
                stats.bytes_sent += step.bytes_sent
                stats.bytes_received += step.bytes_received
                accepted = [t for t in step.draft[: n - stats.tokens]]
                if not accepted:
                    break
                now = time.perf_counter()
                for t in accepted:
                    if self.edge.tokenizer.is_eog(t):
                        stats.finish_reason = "eog"
                        return
                    late = (now - last) * 1e3 - self.scheduler.deadline_ms
                    last = now
                    stats.tokens += 1
                    stats.sources[Source.CLOUD_DRAFT.value] += 1
                    stats.deadline_misses += late > 0
                    stats.max_late_ms = max(stats.max_late_ms, late)
                    yield HybridToken(t, stream.feed(t), Source.CLOUD_DRAFT, 0.0, (now - t0) * 1e3, late)
        finally:
            stats.latency_ms = (time.perf_counter() - t0) * 1e3


class _Run:
    """One generation: the speculative state (committed, draft, evidence) and the per-token loop."""

    def __init__(self, g: HybridGenerator, prompt: str, n: int, private_context: str) -> None:
        if n < 0:
            raise ValueError("n must be >= 0")
        self.g, self.n = g, n
        self.stats = g.last_stats = HybridStats()
        self.shared_ids = g.edge.tokenize(prompt)
        self.edge_ids = g.edge.tokenize(private_context + prompt) if private_context else list(self.shared_ids)
        self.prompt_bytes = prompt.encode()
        self.committed: list[int] = []
        self.draft: list[int] = []
        self.logits: list[npt.NDArray[np.float32]] = []   # logits at head + j, j = 0..len(draft)
        self.stats_cache: dict[int, bool] = {}             # position -> edge needs the cloud
        self.evidence: dict[int, tuple[Any, Optional[int]]] = {}  # position -> (Evidence, cloud draft token)
        self.synced = 0
        self.request: Optional[_Request] = None
        self.cloud_ok = g.cloud is not None
        self.opening: Optional["concurrent.futures.Future[Any]"] = None
        self.opened = False

    # -- helpers ---------------------------------------------------------------------------------------------------
    @property
    def head(self) -> int:
        return len(self.committed)

    def _needs_cloud(self, j: int) -> bool:
        pos = self.head + j
        if pos not in self.stats_cache:
            self.stats_cache[pos] = self.g.fuser.edge_stats(self.logits[j]).needs_cloud
        return self.stats_cache[pos]

    def _draft_one(self) -> None:
        t = int(self.g.fuser.fuse(self.logits[-1]).ids[0])  # the edge's greedy choice: a guess, verified later
        self.draft.append(t)
        self.logits.append(self.g._eval([t])[0])

    def _trace(self, what: str) -> None:
        if self.g.trace:
            self.stats.trace.append(f"{(time.perf_counter() - self.t0) * 1e3:8.1f} {what}")

    def _open(self, now: float) -> None:
        self.opening = self.g._io.submit(self.g.cloud.open(list(self.shared_ids), self.prompt_bytes))
        self.g.scheduler.request_sent(now)

    def _session_ready(self, now: float) -> bool:
        """Is the cloud session open? A failed open is retried at the probe interval."""
        if self.opened:
            return True
        if self.opening is not None and self.opening.done():
            if self.opening.cancelled() or self.opening.exception() is not None:
                self.stats.cloud_errors += 1
                self.opening = None
            else:
                self.opened, self.synced = True, 0
                return True
        if self.opening is None and self.g.scheduler.should_probe(now):
            self._open(now)
        return False

    def _lead(self) -> Lead:
        g = self.g
        if not getattr(g.cloud, "can_score", True):  # plain OpenAI completions cannot score given text
            return Lead.CLOUD
        return g.fixed_lead or g.scheduler.lead()

    def _uncertain(self) -> list[int]:
        """Draft positions (0 = head) where the edge is unsure and no evidence is at hand."""
        return [j for j in range(len(self.draft) + 1)
                if self.head + j not in self.evidence and self._needs_cloud(j)]

    def _maybe_send(self, now: float) -> bool:
        """Send a request when none is in flight and some position ahead needs the cloud: edge-led, the draft up to
        the last unsure position the time budget allows (only those positions asked for); cloud-led, a chunk."""
        g, sch = self.g, self.g.scheduler
        if self.request is not None or not self._session_ready(now) or not g.cloud_available():
            return False
        if sch.failing and not sch.should_probe(now):  # a failing cloud is probed, not hammered
            return False
        lead = self._lead()
        accepted = self.committed[self.synced:]
        n_draft = cached = 0
        if lead is Lead.EDGE:
            unsure = self._uncertain()
            if not unsure:  # edge-led, only unsure positions need the cloud
                return False
            # at most 12 edge tokens scored: within the server's 16 once another vocabulary re-tokenizes them
            fits = [j for j in unsure if j <= 12 and sch.cloud_useful(len(accepted) + j + 1)]
            probe = not fits
            if probe and not sch.should_probe(now):
                return False
            last = fits[-1] if fits else unsure[0]
            score, want = self.draft[:last], set(fits or unsure[:1])
        else:  # cloud-led, the cloud is the faster writer: keep it drafting, past the draft it sent before (which
            # the edge is verifying meanwhile; the server holds its KV: no compute) by the longest chunk that comes
            # back within a deadline (at least 1)
            cached = len(self.draft)
            room = min(MAX_DRAFT, self.n - self.head) - cached
            if room <= 0:
                return False
            n_new = next((n for n in range(min(g.chunk, room), 0, -1) if sch.cloud_useful(len(accepted) + n)), 0)
            probe = n_new == 0
            if probe and not sch.should_probe(now):
                return False
            n_draft = cached + max(n_new, 1)
            score, want = [], {j for j in range(n_draft + 1) if self.head + j not in self.evidence}
        # no token waits past its own deadline; the answer may still serve later positions. A probe (the cloud
        # looks late or down) gets longer: it is what brings the estimates back, and it catches the cloud up.
        catch_up = (sch.expected_ms(len(accepted) + len(score) + n_draft - cached + 1) or 0.0) / 1e3
        budget = min(max(1.0, 4 * sch.deadline_ms / 1e3, 2 * catch_up), 5.0) if probe else 2 * sch.deadline_ms / 1e3
        coro = g.cloud.step(accepted, g.edge.detokenize(accepted), k=g.k,
                            n_draft=n_draft if lead is Lead.CLOUD else 0, score_edge_ids=score,
                            score_bytes=g.edge.detokenize(score) if score else b"",
                            want=sorted(want) if want is not None else None,
                            deadline=time.monotonic() + budget)
        self.request = _Request(g._io.submit(coro), self.head, list(score), lead, now, want, len(accepted),
                                n_draft, cached)
        self._trace(f"send {lead.value} head {self.head} append {len(accepted)} score {len(score)} want {want}"
                    f"{' (probe)' if probe else ''}")
        self.synced = self.head
        sch.request_sent(now)
        self.stats.requests += 1
        return True

    def _collect(self, deadline: float, margin: float) -> None:
        """Take a finished answer: evidence for the positions whose prefix still matches what it scored."""
        r = self.request
        if r is None or not r.future.done():
            return
        self.request = None
        try:
            step = r.future.result()
        except Exception:  # timeouts, resets, breaker open, a lying cloud: the edge goes on alone
            self.stats.cloud_errors += 1
            self.g.scheduler.observe_failure((time.perf_counter() - r.sent) * 1e3)
            self._trace(f"error after {(time.perf_counter() - r.sent) * 1e3:.0f} ms: {r.future.exception()!r}")
            return
        self.stats.bytes_sent += step.bytes_sent
        self.stats.bytes_received += step.bytes_received
        drafted = max(len(step.draft) - r.cached, 0) if r.lead is Lead.CLOUD else 0
        n_tok = r.n_appended + (drafted if r.lead is Lead.CLOUD else len(r.tokens) + 1)
        self.g.scheduler.observe_cloud((time.perf_counter() - r.sent) * 1e3, n_tok, getattr(step, "server_ms", None),
                                       drafted)
        self._trace(f"answer base {r.base} head {self.head} after {(time.perf_counter() - r.sent) * 1e3:.0f} ms "
                    f"(server {getattr(step, 'server_ms', None)}) evidence "
                    f"{[j for j, e in enumerate(step.evidence) if e is not None and len(e.ids)]}")
        tokens = list(step.draft) if r.lead is Lead.CLOUD else r.tokens
        seq = self.committed + self.draft
        if r.base < self.head - len(tokens) or r.base > self.head:
            self.stats.late_answers += 1
            return
        if r.lead is Lead.CLOUD and tokens:  # the edge may have emitted some of the cloud's tokens meanwhile
            done = self.head - r.base
            ahead = tokens[done:]
            if self.committed[r.base:] == tokens[:done] and self.draft == ahead[:len(self.draft)]:
                self._adopt_cloud_draft(ahead[len(self.draft):], deadline - margin)
                seq = self.committed + self.draft
        used = False
        for j, ev in enumerate(step.evidence):
            pos = r.base + j
            if seq[r.base: pos] != tokens[:j]:
                break  # the prefix changed: this and later positions are stale
            if pos >= self.head and ev is not None and len(ev.ids):
                self.evidence[pos] = (ev, tokens[j] if r.lead is Lead.CLOUD and j < len(tokens) else None)
                used = True
        if not used:
            self.stats.late_answers += 1

    def _adopt_cloud_draft(self, tokens: list[int], until: float) -> None:
        """Extend the draft with the cloud's tokens, verified later position by position: one batched edge eval,
        of as many tokens as fit before the head's deadline (`until`). The next cloud draft is asked for first, so
        the cloud writes on while the edge verifies (a pipeline of two)."""
        sch = self.g.scheduler
        first, more = sch.edge_token_ms.ewma or 0.0, sch.edge_batch_ms.ewma or sch.edge_token_ms.ewma or 0.0
        fit = int((until - time.perf_counter()) * 1e3 - first) // max(int(more), 1) + 1 if first else len(tokens)
        tokens = tokens[: max(min(self.n - self.head - len(self.draft) - 1, fit), 0)]
        if not tokens:
            return
        self.draft += tokens
        if self.cloud_ok and self.request is None and self._lead() is Lead.CLOUD:
            self._maybe_send(time.perf_counter())
        self.logits += list(self.g._eval(tokens))

    def _emit(self, token: int, source: Source, logprob: float, deadline: float, t0: float,
              stream: Any) -> HybridToken:
        now = time.perf_counter()
        if self.draft and self.draft[0] == token:
            self.draft.pop(0)
            self.logits.pop(0)
        else:  # the fused choice left the draft: drop it and its KV, evaluate the chosen token
            if self.draft:
                self.stats.rollbacks += len(self.draft)
            self.g.edge.truncate(len(self.edge_ids) + self.head)
            self.draft = []
            self.logits = [self.g._eval([token])[0]]
            self.evidence, self.stats_cache = {}, {}  # all computed on the abandoned prefix
        self.committed.append(token)
        self.evidence = {p: e for p, e in self.evidence.items() if p >= self.head}
        late = (now - deadline) * 1e3
        s = self.stats
        s.tokens += 1
        s.sources[source.value] += 1
        s.max_late_ms = max(s.max_late_ms, late)
        s.deadline_misses += late > 0
        return HybridToken(token, stream.feed(token), source, logprob, (now - t0) * 1e3, late)

    # -- the loop --------------------------------------------------------------------------------------------------
    def tokens(self) -> Iterator[HybridToken]:
        g, sch = self.g, self.g.scheduler
        if len(self.edge_ids) + self.n + g.lookahead > g.edge.n_ctx:
            raise ValueError(f"prompt ({len(self.edge_ids)}) + n ({self.n}) + lookahead exceed the edge context")
        t0 = self.t0 = time.perf_counter()
        if self.cloud_ok:  # the session opens while the edge reads the prompt
            self._open(time.perf_counter())
        g.edge.reset()
        self.logits = [self._prefill()]
        self.stats.prompt_tokens = len(self.edge_ids)
        self.stats.prefill_ms = (time.perf_counter() - t0) * 1e3
        stream = _new_stream(g.edge)
        last_emit = self.t_decode = time.perf_counter()
        margin = sch.margin_ms / 1e3
        try:
            while self.head < self.n:
                deadline = last_emit + sch.deadline_ms / 1e3
                until = min(deadline, self._pace_line())  # how long the head may wait for the cloud
                self._collect(until, margin)
                if self.cloud_ok:
                    self._maybe_send(time.perf_counter())
                tok = self._decide(until, margin)
                if tok is None:
                    continue
                token, source, lp = tok
                if g.edge.tokenizer.is_eog(token):
                    self.stats.finish_reason = "eog"
                    break
                out = self._emit(token, source, lp, deadline, t0, stream)
                last_emit = time.perf_counter()
                yield out
            tail = stream.flush()
            if tail:
                yield HybridToken(-1, tail, Source.EDGE_ONLY, 0.0, (time.perf_counter() - t0) * 1e3, 0.0)
        finally:
            self.stats.latency_ms = (time.perf_counter() - t0) * 1e3
            self.stats.scheduler = sch.summary()
            if self.request is not None:
                self.request.future.cancel()

    def _pace_line(self) -> float:
        """The time by which the head is due at the pace bound: inf without one. The edge's time per token is its
        best recent one (as it runs alone: a busy cloud beside it on the same memory system slows it down, and that
        is part of what the bound limits); until the edge has been timed, the head does not wait."""
        if self.g.pace is None:
            return float("inf")
        edge_ms = self.g.scheduler.edge_token_ms.min or 0.0
        return self.t_decode + self.g.pace * (self.head + 1) * edge_ms / 1e3

    def _prefill(self) -> npt.NDArray[np.float32]:
        g = self.g
        t = time.perf_counter()
        logits = g.edge.eval(self.edge_ids, logits="last")
        if g.throttle:
            g.throttle.pad(t, len(self.edge_ids))
        return np.ascontiguousarray(logits, np.float32).reshape(-1)

    def _decide(self, deadline: float, margin: float) -> Optional[tuple[int, Source, float]]:
        """The head token and its source, or None after doing some work (draft, send, wait) first."""
        g, sch = self.g, self.g.scheduler
        now = time.perf_counter()
        ev = self.evidence.get(self.head)
        if ev is not None:
            evidence, cloud_tok = ev
            fused = g.fuser.fuse(self.logits[0], evidence.ids, evidence.logprobs)
            tok = g.sampler.sample(fused, self.committed)
            src = Source.CLOUD_DRAFT if cloud_tok == tok.token else Source.FUSED
            return tok.token, src, tok.logprob
        if not self.cloud_ok:
            return self._edge_token(Source.EDGE_ONLY)
        if not self._needs_cloud(0) and not self._cloud_draft_soon(now, deadline, margin):
            return self._edge_token(Source.EDGE)
        # the head needs the cloud (or, cloud-led, its draft is due before the edge could decode the head)
        if not self._session_ready(now):
            if self.opening is not None and sch.wait_for_cloud(now, deadline, deadline):
                try:  # the session is opening: wait for it while the head's deadline allows
                    self.opening.exception(timeout=max(deadline - margin - now, 0.0))
                    return None
                except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                    pass
            return self._edge_token(Source.EDGE_ONLY)
        if self.request is None and self._maybe_send(now):
            return None
        r = self.request
        if r is None or not r.covers(self.head):
            return self._edge_token(Source.EDGE_ONLY)
        expected = sch.expected_ms(r.cost_tokens)
        arrival = r.sent + (expected or 0.0) / 1e3  # no observation yet: hope, bounded by the deadline
        if not sch.wait_for_cloud(now, deadline, arrival):
            return self._edge_token(Source.EDGE_ONLY)
        # wait: draft ahead while a whole edge token fits before the deadline, else block on the answer
        edge_ms = max(sch.edge_token_ms.ewma or 0.0, sch.edge_token_ms.p95 or 0.0)
        if (r.lead is Lead.EDGE and len(self.draft) < g.lookahead
                and now + edge_ms / 1e3 < min(deadline - margin, arrival)):
            self._draft_one()
            return None
        try:
            r.future.exception(timeout=max(deadline - margin - time.perf_counter(), 0.0))
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            return self._edge_token(Source.EDGE_ONLY)
        return None

    def _cloud_draft_soon(self, now: float, deadline: float, margin: float) -> bool:
        """Cloud-led: a draft covering the head is in flight and due before the head's deadline, and sooner than
        the edge would decode one token and then the next (waiting for it beats decoding on a slow edge)."""
        r, sch = self.request, self.g.scheduler
        if r is None or r.lead is not Lead.CLOUD or not r.covers(self.head):
            return False
        arrival = r.sent + (sch.expected_ms(r.cost_tokens) or 0.0) / 1e3
        return arrival <= deadline - margin and arrival - now < 2 * (sch.edge_token_ms.ewma or 0.0) / 1e3

    def _edge_token(self, source: Source) -> tuple[int, Source, float]:
        fused = self.g.fuser.fuse(self.logits[0])
        tok = self.g.sampler.sample(fused, self.committed)
        return tok.token, source, tok.logprob
