"""Requests to the cloud during one generation: the session, at most one request in flight, and its answer.

A request carries the committed tokens the cloud has not seen yet, plus either the edge's draft to score (edge-led:
only up to the last unsure position the time budget allows, and only those positions asked for) or a request for
a cloud draft (cloud-led: the cloud is the faster writer). An answer becomes evidence at each position whose prefix
still matches what it scored; answers for a prefix that has changed meanwhile are dropped. A cloud draft that
still fits the committed tokens is adopted into the edge's draft and verified in one batched edge eval, after the
next cloud draft has been asked for (a pipeline of two).
"""

from __future__ import annotations

import concurrent.futures
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..cloud.link import CloudBackend, CloudStep
from ..cloud.protocol import MAX_DRAFT
from ..scheduler import Lead
from .clock import IOLoop
from .config import Parts
from .state import SpeculativeState
from .types import HybridStats

__all__ = ["MAX_SCORED", "CloudPipeline", "Plan", "Request", "release_session"]

# Edge-led: at most this many edge tokens scored per request. The cloud takes MAX_DRAFT tokens per step, and a
# cloud with another vocabulary re-tokenizes the scored text into more tokens than the edge's: a quarter is left
# for that.
MAX_SCORED = MAX_DRAFT * 3 // 4


@dataclass(frozen=True)
class Plan:
    """What the next request asks for."""

    lead: Lead
    accepted: list[int]     # committed tokens the cloud has not seen
    score: list[int]        # edge-led: draft tokens to score
    want: set[int]          # positions (from the head) asked for
    n_draft: int            # cloud-led: tokens drafted from the head ...
    cached: int             # ... the first `cached` of them drafted by the previous request (no cloud compute)
    probe: bool             # the cloud looks late or down: this request is a probe
    budget_s: float         # the request's own deadline, from now


@dataclass
class Request:
    future: "concurrent.futures.Future[CloudStep]"
    base: int               # generated tokens committed when it was sent
    tokens: list[int]       # edge tokens scored after base (edge-led); empty for cloud-led
    lead: Lead
    sent: float
    want: Optional[set[int]] = None  # positions (from base) asked for; None: all
    n_appended: int = 0
    n_draft: int = 0
    cached: int = 0

    @property
    def cost_tokens(self) -> int:
        """Tokens the cloud computes for this request."""
        return self.n_appended + (self.n_draft - self.cached if self.lead is Lead.CLOUD else len(self.tokens) + 1)

    def covers(self, head: int) -> bool:
        j = head - self.base
        if self.lead is Lead.CLOUD:
            return 0 <= j <= self.n_draft
        return 0 <= j <= len(self.tokens) and (self.want is None or j in self.want)


class CloudPipeline:
    def __init__(self, parts: Parts, state: SpeculativeState, stats: HybridStats, n: int, shared_ids: list[int],
                 prompt_bytes: bytes, trace: Callable[[str], None], knowledge: Optional[str] = None) -> None:
        if parts.cloud is None or parts.io is None:
            raise ValueError("a cloud pipeline needs a cloud and an IO loop")
        self.cloud: CloudBackend = parts.cloud
        self.io: IOLoop = parts.io
        self.parts, self.state, self.stats, self.n = parts, state, stats, n
        self.shared_ids, self.prompt_bytes, self.trace = shared_ids, prompt_bytes, trace
        self.knowledge = knowledge  # the cloud knowledge entry's id (None: the server may retrieve one)
        self.request: Optional[Request] = None
        self.synced = 0  # committed tokens the cloud has been sent
        self.opening: Optional["concurrent.futures.Future[Any]"] = None
        self.opening_since = 0.0
        self.opened = False
        self.first_asked = False  # the open carries the answer's first position

    # -- the session ---------------------------------------------------------------------------------------------
    def open(self, now: float) -> None:
        """Open the cloud session with the shared prompt (the edge reads the private context meanwhile), asking
        for the answer's first position along with it where the link can."""
        # keywords only where they apply: a backend without knowledge support keeps working
        extra: dict[str, Any] = {} if self.knowledge is None else {"knowledge": self.knowledge}
        self.first_asked = getattr(self.cloud, "first_on_open", False) and self.state.head == 0
        if self.first_asked:
            extra["k"] = self.parts.settings.k
        self.opening = self.io.submit(self.cloud.open(list(self.shared_ids), self.prompt_bytes, **extra))
        self.opening_since = now
        self.parts.scheduler.request_sent(now)
        self.trace("open")

    def session_ready(self, now: float) -> bool:
        """Is the cloud session open? A failed open is retried at the probe interval. The open's evidence for the
        answer's first position is taken while that position is still the head."""
        if self.opened:
            return True
        if self.opening is not None and self.opening.done():
            if self.opening.cancelled() or self.opening.exception() is not None:
                self.stats.cloud_errors += 1
                self.opening = None
            else:
                self.opened, self.synced = True, 0
                self.parts.scheduler.observe_open((now - self.opening_since) * 1e3)
                first = self.opening.result()
                if first is not None and self.state.head == 0:
                    self.state.add_evidence(0, first, None)
                self.trace(f"opened after {(now - self.opening_since) * 1e3:.0f} ms"
                           f"{' with position 0' if first is not None else ''}")
                return True
        if self.opening is None and self.parts.scheduler.should_probe(now):
            self.open(now)
        return False

    def awaited(self, now: float, head: int) -> Optional[tuple["concurrent.futures.Future[Any]", float, Lead]]:
        """What will bring the head's evidence, when it is expected (inf: not known yet, hoped for by the head's
        deadline), and who drafts: the request in flight that covers it, or, while the session opens, the open (the
        first position comes with it; a later one with the step sent right after it). None: nothing will."""
        sch, st = self.parts.scheduler, self.state
        if not self.session_ready(now):
            if self.opening is None:
                return None
            took = sch.open_ms.recent()
            if took is None:  # never timed: hoped for by the deadline, the edge drafting meanwhile
                return self.opening, math.inf, Lead.EDGE
            opened = self.opening_since + took / 1e3
            if head == 0 and self.first_asked:
                return self.opening, opened, Lead.EDGE
            return self.opening, opened + (sch.expected_ms(head + len(st.draft) + 1) or 0.0) / 1e3, Lead.EDGE
        r = self.request
        if r is None or not r.covers(head):
            return None
        return r.future, r.sent + (sch.expected_ms(r.cost_tokens) or 0.0) / 1e3, r.lead  # no observation: hope

    def lead(self) -> Lead:
        if not self.cloud.can_score:  # plain OpenAI completions cannot score given text
            return Lead.CLOUD
        return self.parts.settings.lead or self.parts.scheduler.lead()

    # -- sending -------------------------------------------------------------------------------------------------
    def plan(self, now: float) -> Optional[Plan]:
        """The request to send now, if one is due: none in flight, the session open, the cloud not known to be
        down (a failing cloud is probed, not hammered), and some position ahead needs it."""
        sch = self.parts.scheduler
        if self.request is not None or not self.session_ready(now) or not self.cloud.available:
            return None
        if sch.failing and not sch.should_probe(now):
            return None
        lead = self.lead()
        accepted = self.state.committed[self.synced:]
        plan = self._plan_edge_led(accepted) if lead is Lead.EDGE else self._plan_cloud_led(accepted)
        if plan is None or (plan.probe and not sch.should_probe(now)):
            return None
        return plan

    def _plan_edge_led(self, accepted: list[int]) -> Optional[Plan]:
        """Score the draft up to the last unsure position whose answer can come back within a deadline."""
        sch, st = self.parts.scheduler, self.state
        unsure = st.uncertain()
        if not unsure:  # only unsure positions need the cloud
            return None
        fits = [j for j in unsure if j <= MAX_SCORED and sch.cloud_useful(len(accepted) + j + 1)]
        last = fits[-1] if fits else unsure[0]
        score = st.draft[:last]
        return Plan(Lead.EDGE, accepted, score, set(fits or unsure[:1]), 0, 0, not fits,
                    self._budget(not fits, len(accepted) + len(score) + 1))

    def _plan_cloud_led(self, accepted: list[int]) -> Optional[Plan]:
        """Keep the cloud drafting past the draft it sent before (which the edge is verifying meanwhile; the server
        holds its KV: no compute), by the longest chunk that comes back within a deadline (at least 1)."""
        sch, st = self.parts.scheduler, self.state
        cached = len(st.draft)
        room = min(MAX_DRAFT, self.n - st.head) - cached
        if room <= 0:
            return None
        n_new = next((n for n in range(min(self.parts.settings.chunk, room), 0, -1)
                      if sch.cloud_useful(len(accepted) + n)), 0)
        n_draft = cached + max(n_new, 1)
        want = {j for j in range(n_draft + 1) if st.head + j not in st.evidence}
        return Plan(Lead.CLOUD, accepted, [], want, n_draft, cached, n_new == 0,
                    self._budget(n_new == 0, len(accepted) + n_draft - cached + 1))

    def _budget(self, probe: bool, n_tokens: int) -> float:
        """No token waits past its own deadline (the answer may still serve later positions). A probe (the cloud
        looks late or down) gets longer: it is what brings the estimates back, and it catches the cloud up."""
        sch = self.parts.scheduler
        if not probe:
            return 2 * sch.deadline_ms / 1e3
        catch_up = (sch.expected_ms(n_tokens) or 0.0) / 1e3
        return min(max(1.0, 4 * sch.deadline_ms / 1e3, 2 * catch_up), 5.0)

    def send(self, plan: Plan, now: float) -> None:
        edge, st = self.parts.edge, self.state
        coro = self.cloud.step(plan.accepted, edge.detokenize(plan.accepted), k=self.parts.settings.k,
                               n_draft=plan.n_draft, score_edge_ids=plan.score,
                               score_bytes=edge.detokenize(plan.score) if plan.score else b"",
                               want=sorted(plan.want), deadline=self.parts.clock.link_deadline(plan.budget_s))
        self.request = Request(self.io.submit(coro), st.head, list(plan.score), plan.lead, now, plan.want,
                               len(plan.accepted), plan.n_draft, plan.cached)
        self.trace(f"send {plan.lead.value} head {st.head} append {len(plan.accepted)} score {len(plan.score)} "
                   f"want {plan.want}{' (probe)' if plan.probe else ''}")
        self.synced = st.head
        self.parts.scheduler.request_sent(now)
        self.stats.requests += 1

    def send_if_due(self, now: float) -> None:
        plan = self.plan(now)
        if plan is not None:
            self.send(plan, now)

    # -- answers -------------------------------------------------------------------------------------------------
    def collect(self, until: float) -> None:
        """Take a finished answer: evidence for the positions whose prefix still matches what it scored. A cloud
        draft is adopted as far as its batched edge eval fits before `until` (the head's deadline, less margin)."""
        r = self.request
        if r is None or not r.future.done():
            return
        self.request = None
        clock, sch, st = self.parts.clock, self.parts.scheduler, self.state
        elapsed_ms = (clock.now() - r.sent) * 1e3
        try:
            step = r.future.result()
        except Exception:  # timeouts, resets, breaker open, a lying cloud: the edge goes on alone
            self.stats.cloud_errors += 1
            sch.observe_failure(elapsed_ms)
            self.trace(f"error after {elapsed_ms:.0f} ms: {r.future.exception()!r}")
            return
        self.stats.count_traffic(step.bytes_sent, step.bytes_received)
        drafted = max(len(step.draft) - r.cached, 0) if r.lead is Lead.CLOUD else 0
        n_tok = r.n_appended + (drafted if r.lead is Lead.CLOUD else len(r.tokens) + 1)
        sch.observe_cloud(elapsed_ms, n_tok, step.server_ms, drafted)
        self.trace(f"answer base {r.base} head {st.head} after {elapsed_ms:.0f} ms (server {step.server_ms}) "
                   f"evidence {[j for j, e in enumerate(step.evidence) if e is not None and len(e.ids)]}")
        tokens = list(step.draft) if r.lead is Lead.CLOUD else r.tokens
        if r.base < st.head - len(tokens) or r.base > st.head:
            self.stats.late_answers += 1
            return
        if r.lead is Lead.CLOUD and tokens:  # the edge may have emitted some of the cloud's tokens meanwhile
            done = st.head - r.base
            ahead = tokens[done:]
            if st.committed[r.base:] == tokens[:done] and st.draft == ahead[:len(st.draft)]:
                self._adopt_cloud_draft(ahead[len(st.draft):], until)
        if not self._take_evidence(r, step, tokens):
            self.stats.late_answers += 1

    def _take_evidence(self, r: Request, step: CloudStep, tokens: list[int]) -> bool:
        st = self.state
        seq = st.committed + st.draft
        used = False
        for j, ev in enumerate(step.evidence):
            pos = r.base + j
            if seq[r.base: pos] != tokens[:j]:
                break  # the prefix changed: this and later positions are stale
            if pos >= st.head and ev is not None and len(ev.ids):
                st.add_evidence(pos, ev, tokens[j] if r.lead is Lead.CLOUD and j < len(tokens) else None)
                used = True
        return used

    def _adopt_cloud_draft(self, tokens: list[int], until: float) -> None:
        """Extend the draft with the cloud's tokens, as many as one batched edge eval fits before `until`. The next
        cloud draft is asked for first, so the cloud writes on while the edge verifies."""
        sch, st, clock = self.parts.scheduler, self.state, self.parts.clock
        first, more = sch.edge_token_ms.ewma or 0.0, sch.edge_batch_ms.ewma or sch.edge_token_ms.ewma or 0.0
        fit = int((until - clock.now()) * 1e3 - first) // max(int(more), 1) + 1 if first else len(tokens)
        tokens = tokens[: max(min(self.n - st.head - len(st.draft) - 1, fit), 0)]
        if not tokens:
            return
        st.extend_draft(tokens)
        if self.request is None and self.lead() is Lead.CLOUD:
            self.send_if_due(clock.now())
        st.eval_pending()

    def cancel(self) -> None:
        """The generation is over: drop the request in flight, and let the link end the session in the background
        (the next question's open then does not wait for that)."""
        if self.request is not None:
            self.request.future.cancel()
        release_session(self.cloud, self.io)


def release_session(cloud: CloudBackend, io: IOLoop) -> None:
    release = getattr(cloud, "release", None)
    if release is not None:
        io.submit(release())
