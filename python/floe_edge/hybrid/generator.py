"""`HybridGenerator`: the edge SLM and a cloud LLM generate together, token by token, under a per-token deadline.

The edge model runs on the caller's thread; the cloud link runs on its own asyncio loop in a background thread
(`LoopThread`), so the edge keeps drafting while a request is on the wire. The per-token policy is in `policy`,
the requests in `pipeline`, the speculative state in `state`.

Privacy: ``private_context`` is prepended for the edge model only; the cloud session is opened with the shared
prompt alone, and what goes up afterwards is only the answer: emitted tokens and the edge's draft (or their bytes,
cross-vocabulary). The answer is the shared part of the conversation: a secret the edge writes into it goes up with
it, as it would reach any reader of the answer. ``knowledge`` names the cloud's own context (an entry of
`floe cloud serve --knowledge`): the device sends its id and never receives its text.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

from ..cloud.link import CloudBackend
from ..edge import EdgeModel
from ..fusion import FusedSampler, Fuser, Weights
from ..scheduler import DeadlineScheduler, Lead
from .clock import Clock, IOLoop, LoopThread, RealClock
from .config import Parts, Settings
from .pipeline import release_session
from .policy import Run, check_knowledge
from .types import HybridStats, HybridToken, Source

__all__ = ["HybridGenerator"]


class HybridGenerator:
    """Edge SLM + cloud LLM generation with token-level fusion and a per-token deadline.

    ``edge``: an `EdgeModel` (`NativeSLM`, or one wrapped in `ThrottledEdge`). ``cloud``: a `CloudBackend`
    (`FloeCloudBackend` for `floe cloud serve`, `OpenAICompletionsBackend` for an OpenAI-compatible server), or None
    for edge-only. ``fusion``: a preset name, (w_e, w_c), FusionWeights, or a learned gate (a `LearnedGate`, or
    ``"gate"`` / ``"gate:<app>"`` for ``$FLOE_HOME/gates/<app>.json``). ``pace``: bound the whole answer to this
    factor of the edge's own time per token. ``clock`` / ``io``: the real ones by default (tests pass virtual
    ones). The generator owns the IO thread: use it as a context manager or call close()."""

    def __init__(self, edge: EdgeModel, cloud: Optional[CloudBackend] = None, *,
                 fusion: Weights = "assistant",
                 sampler: Optional[FusedSampler] = None, deadline_ms: float = 200.0, k: int = 8, chunk: int = 8,
                 lookahead: int = 16, lead: Optional[Lead] = None, pace: Optional[float] = None,
                 trace: bool = False, clock: Optional[Clock] = None, io: Optional[IOLoop] = None) -> None:
        settings = Settings(k=k, chunk=chunk, lookahead=lookahead, lead=lead, pace=pace, trace=trace)
        if cloud is not None and io is None:
            io = LoopThread()
        self.parts = Parts(edge, cloud, io, clock or RealClock(), Fuser(edge.n_vocab, weights=fusion, top_k=k),
                           sampler or FusedSampler(), DeadlineScheduler(deadline_ms=deadline_ms), settings)
        self.last_stats = HybridStats()

    @property
    def edge(self) -> EdgeModel:
        return self.parts.edge

    @property
    def cloud(self) -> Optional[CloudBackend]:
        return self.parts.cloud

    @property
    def scheduler(self) -> DeadlineScheduler:
        return self.parts.scheduler

    @property
    def fuser(self) -> Fuser:
        return self.parts.fuser

    def cloud_available(self) -> bool:
        """False while the link's circuit breaker is open (the cloud failed repeatedly)."""
        return self.cloud is not None and self.cloud.available

    def close(self) -> None:
        io, self.parts.io = self.parts.io, None
        if io is not None:
            if self.cloud is not None:
                try:
                    io.run(self.cloud.close(), timeout=2)
                except Exception:  # closing a dead link must not hide the caller's own error
                    pass
            io.close()

    def __enter__(self) -> "HybridGenerator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(self, prompt: str, n: int = 32, private_context: str = "",
                 knowledge: Optional[str] = None) -> Iterator[HybridToken]:
        """Stream n tokens (fewer at end of generation) after prompt. Stats land in last_stats. `knowledge`: the
        id of the cloud's knowledge entry (None: the cloud may retrieve one from the prompt)."""
        self.last_stats = HybridStats()
        self.parts.fuser.reset()
        return Run(self.parts, prompt, n, private_context, self.last_stats, knowledge).tokens()

    def generate_cloud_only(self, prompt: str, n: int = 32, chunk: int = 16,
                            knowledge: Optional[str] = None) -> Iterator[HybridToken]:
        """The cloud-only baseline: the cloud's greedy text, `chunk` tokens per round trip, no edge model in the
        loop (tokens are shown in edge ids). No deadline fallback: late_ms says how late each token was."""
        if self.parts.cloud is None or self.parts.io is None:
            raise ValueError("cloud-only generation needs a cloud")
        check_knowledge(self.parts, knowledge)
        return self._cloud_only(prompt, n, chunk, knowledge)

    def _cloud_only(self, prompt: str, n: int, chunk: int, knowledge: Optional[str]) -> Iterator[HybridToken]:
        cloud, io, clock, edge = self.parts.cloud, self.parts.io, self.parts.clock, self.parts.edge
        assert cloud is not None and io is not None
        stats = self.last_stats = HybridStats()
        stream = edge.text_stream()
        t0 = last = clock.now()
        ids = edge.tokenize(prompt)
        stats.prompt_tokens = len(ids)
        extra: dict[str, Any] = {} if knowledge is None else {"knowledge": knowledge}  # as CloudPipeline.open
        io.run(cloud.open(ids, prompt.encode(), **extra))
        accepted: list[int] = []
        try:
            while stats.tokens < n:
                step = io.run(cloud.step(accepted, edge.detokenize(accepted), k=1,
                                         n_draft=min(chunk, n - stats.tokens), deadline=clock.link_deadline(30.0)))
                stats.requests += 1
                stats.count_traffic(step.bytes_sent, step.bytes_received)
                accepted = list(step.draft[: n - stats.tokens])
                if not accepted:
                    break
                now = clock.now()
                for t in accepted:
                    if edge.is_eog(t):
                        stats.finish_reason = "eog"
                        return
                    late = (now - last) * 1e3 - self.scheduler.deadline_ms
                    last = now
                    stats.count(Source.CLOUD_DRAFT, late)
                    yield HybridToken(t, stream.feed(t), Source.CLOUD_DRAFT, 0.0, (now - t0) * 1e3, late)
        finally:
            stats.latency_ms = (clock.now() - t0) * 1e3
            release_session(cloud, io)
