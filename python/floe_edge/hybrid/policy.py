"""The per-token policy of one generation: each step decides one explicit action, and the loop carries it out.

Per token (the head), in order:

1. A request is due (none in flight, some position ahead needs the cloud): ``Send`` it.
2. Cloud evidence for the head arrived: fuse and sample -> ``Emit`` ``fused`` (``cloud-draft`` when the token is the
   cloud's own draft token, cloud-led).
3. The edge is confident (its top probability reaches the fusion preset's gate, or a learned gate's skip threshold),
   and no cloud draft covering the head is due sooner than the edge could decode it: ``Emit`` the edge's token ->
   ``edge`` (gated upload).
4. A request covering the head is in flight and expected (p95) before the head's deadline: ``Draft`` ahead with the
   edge while a whole edge token fits before the answer, else ``Wait`` for the answer until the deadline. While the
   session opens, the open counts as that request: it brings the first position's evidence, and the step sent
   right after it the later ones.
5. Otherwise (cloud late, down or absent, no session yet, or the deadline is here): ``Emit`` the edge's token ->
   ``edge-only``; a late answer is dropped.

The head's deadline is `deadline_ms` after the previous token; with a pace bound it is also at most
``(h + 1) + (pace - 1) x n`` edge token times after the prompt (the edge's best recent time per token, n the tokens
asked for), so the whole answer takes at most pace x the edge's own time, whatever the network. The slack may be
spent anywhere, the first tokens included: they are the ones that wait for the session to open, and the edge drafts
meanwhile, so a wait the cloud agrees with costs little.
"""

from __future__ import annotations

import concurrent.futures
import math
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Union

import numpy as np

from ..cloud.knowledge import check_knowledge_id
from ..edge import reuse_prefix
from ..scheduler import Lead
from .config import Parts
from .pipeline import CloudPipeline, Plan
from .state import SpeculativeState
from .types import HybridStats, HybridToken, Source

__all__ = ["Action", "Draft", "Emit", "Run", "Send", "Wait", "check_knowledge"]


def check_knowledge(parts: Parts, knowledge: Optional[str]) -> None:
    """A knowledge entry id needs a cloud that takes one (`floe cloud serve`): ValueError up front, not a cloud
    error the generation would quietly go on without."""
    check_knowledge_id(knowledge)
    if knowledge is not None and not getattr(parts.cloud, "accepts_knowledge", False):
        raise ValueError("a knowledge id needs a cloud with a knowledge base (`floe cloud serve --knowledge`); "
                         f"{'there is no cloud' if parts.cloud is None else type(parts.cloud).__name__ + ' has none'}")


@dataclass(frozen=True)
class Emit:
    token: int
    source: Source
    logprob: float


@dataclass(frozen=True)
class Draft:
    """Draft one more edge token ahead while the answer is on its way."""


@dataclass(frozen=True)
class Wait:
    future: "concurrent.futures.Future[Any]"
    until: float


@dataclass(frozen=True)
class Send:
    plan: Plan


Action = Union[Emit, Draft, Wait, Send]


class Run:
    """One generation: the speculative state, the cloud pipeline, and the policy loop over them."""

    def __init__(self, parts: Parts, prompt: str, n: int, private_context: str, stats: HybridStats,
                 knowledge: Optional[str] = None) -> None:
        if n < 0:
            raise ValueError("n must be >= 0")
        check_knowledge(parts, knowledge)
        self.parts, self.n, self.stats = parts, n, stats
        edge = parts.edge
        self.shared_ids = edge.tokenize(prompt)
        self.edge_ids = edge.tokenize(private_context + prompt) if private_context else list(self.shared_ids)
        self.state = SpeculativeState(edge, parts.fuser, parts.evaluate, len(self.edge_ids))
        self.t0 = self.t_decode = parts.clock.now()
        self.cloud: Optional[CloudPipeline] = None
        if parts.cloud is not None:
            self.cloud = CloudPipeline(parts, self.state, stats, n, self.shared_ids, prompt.encode(), self.trace,
                                       knowledge)

    # -- the loop ------------------------------------------------------------------------------------------------
    def tokens(self) -> Iterator[HybridToken]:
        p, sch, clock, st = self.parts, self.parts.scheduler, self.parts.clock, self.state
        if len(self.edge_ids) + self.n + p.settings.lookahead > p.edge.n_ctx:
            raise ValueError(f"prompt ({len(self.edge_ids)}) + n ({self.n}) + lookahead exceed the edge context")
        t0 = self.t0 = clock.now()
        if self.cloud is not None:  # the session opens while the edge reads the prompt
            self.cloud.open(clock.now())
        # the private context is the same for all of a user's questions: keep what the cache already holds of it
        self.stats.cached_tokens = kept = reuse_prefix(p.edge, self.edge_ids)
        st.start(np.ascontiguousarray(p.edge.eval(self.edge_ids[kept:], logits="last"), np.float32).reshape(-1))
        self.stats.prompt_tokens = len(self.edge_ids)
        self.stats.prefill_ms = (clock.now() - t0) * 1e3
        stream = p.edge.text_stream()
        last_emit = self.t_decode = clock.now()
        margin = sch.margin_ms / 1e3
        try:
            while st.head < self.n:
                deadline = last_emit + sch.deadline_ms / 1e3
                until = min(deadline, self._pace_line())  # how long the head may wait for the cloud
                if self.cloud is not None:
                    self.cloud.collect(until - margin)
                action = self.decide(clock.now(), until, margin)
                if not isinstance(action, Emit):
                    self._carry_out(action)
                    continue
                if p.edge.is_eog(action.token):
                    self.stats.finish_reason = "eog"
                    break
                out = self._emit(action, deadline, stream)
                last_emit = clock.now()
                yield out
            tail = stream.flush()
            if tail:
                yield HybridToken(-1, tail, Source.EDGE_ONLY, 0.0, (clock.now() - t0) * 1e3, 0.0)
        finally:
            self.stats.latency_ms = (clock.now() - t0) * 1e3
            self.stats.scheduler = sch.summary()
            if self.cloud is not None:
                self.cloud.cancel()

    def trace(self, what: str) -> None:
        if self.parts.settings.trace:
            self.stats.trace.append(f"{(self.parts.clock.now() - self.t0) * 1e3:8.1f} {what}")

    def _carry_out(self, action: Action) -> None:
        clock = self.parts.clock
        if isinstance(action, Send):
            assert self.cloud is not None
            self.cloud.send(action.plan, clock.now())
        elif isinstance(action, Draft):
            self.state.draft_one()
        elif isinstance(action, Wait):
            clock.wait(action.future, action.until - clock.now())

    def _emit(self, action: Emit, deadline: float, stream: Any) -> HybridToken:
        now = self.parts.clock.now()
        self.stats.rollbacks += self.state.commit(action.token)
        late = (now - deadline) * 1e3
        self.stats.count(action.source, late)
        return HybridToken(action.token, stream.feed(action.token), action.source, action.logprob,
                           (now - self.t0) * 1e3, late)

    # -- the decision --------------------------------------------------------------------------------------------
    def decide(self, now: float, deadline: float, margin: float) -> Action:
        """The next action for the head, whose deadline (pace bound included) is `deadline`."""
        p, sch, st, cloud = self.parts, self.parts.scheduler, self.state, self.cloud
        if cloud is not None and cloud.request is None:
            plan = cloud.plan(now)
            if plan is not None:
                return Send(plan)
        ev = st.evidence.get(st.head)
        if ev is not None:
            evidence, cloud_tok = ev
            fused = p.fuser.fuse(st.logits[0], evidence.ids, evidence.logprobs, edge_stats=st.edge_stats(0),
                                 position=st.head)
            tok = p.sampler.sample(fused, st.committed)
            return Emit(tok.token, Source.CLOUD_DRAFT if cloud_tok == tok.token else Source.FUSED, tok.logprob)
        if cloud is None:
            return self._edge_token(Source.EDGE_ONLY)
        if not st.needs_cloud(0) and not self._cloud_draft_soon(now, deadline, margin):
            return self._edge_token(Source.EDGE)
        # the head needs the cloud (or, cloud-led, its draft is due before the edge could decode the head)
        awaited = cloud.awaited(now, st.head)
        if awaited is None:
            return self._edge_token(Source.EDGE_ONLY)
        future, arrival, lead = awaited
        if not sch.wait_for_cloud(now, deadline, arrival if math.isfinite(arrival) else now):  # unknown: hope
            return self._edge_token(Source.EDGE_ONLY)
        # wait: draft ahead while a whole edge token fits before the answer, else wait for it until the deadline
        # (an answer not expected at any known time: one token to spare, as the edge's time is known from few tokens)
        edge_ms = max(sch.edge_token_ms.ewma or 0.0, sch.edge_token_ms.p95 or 0.0)
        until = min(deadline - margin, arrival) if math.isfinite(arrival) else deadline - margin - edge_ms / 1e3
        if lead is Lead.EDGE and len(st.draft) < p.settings.lookahead and now + edge_ms / 1e3 < until:
            return Draft()
        return Wait(future, deadline - margin)

    def _cloud_draft_soon(self, now: float, deadline: float, margin: float) -> bool:
        """Cloud-led: a draft covering the head is in flight and due before the head's deadline, and sooner than
        the edge would decode one token and then the next (waiting for it beats decoding on a slow edge)."""
        r, sch = self.cloud.request if self.cloud else None, self.parts.scheduler
        if r is None or r.lead is not Lead.CLOUD or not r.covers(self.state.head):
            return False
        arrival = r.sent + (sch.expected_ms(r.cost_tokens) or 0.0) / 1e3
        return arrival <= deadline - margin and arrival - now < 2 * (sch.edge_token_ms.ewma or 0.0) / 1e3

    def _edge_token(self, source: Source) -> Emit:
        fused = self.parts.fuser.fuse(self.state.logits[0], edge_stats=self.state.edge_stats(0),
                                      position=self.state.head)
        tok = self.parts.sampler.sample(fused, self.state.committed)
        return Emit(tok.token, source, tok.logprob)

    def _pace_line(self) -> float:
        """The time by which the head is due at the pace bound: inf without one. The edge's time per token is its
        best recent one (as it runs alone: a busy cloud beside it on the same memory system slows it down, and that
        is part of what the bound limits); until the edge has been timed, only the deadline bounds the head (the
        edge's first draft, while it waits, times it)."""
        pace = self.parts.settings.pace
        edge_ms = self.parts.scheduler.edge_token_ms.min
        if pace is None or edge_ms is None:
            return float("inf")
        return self.t_decode + ((self.state.head + 1) + (pace - 1) * self.n) * edge_ms / 1e3

