"""The hybrid generator's per-token policy on a virtual clock, with a scripted edge and cloud (tests/scripted.py):
every decision checked exactly, in virtual milliseconds, without a model, a network or a wall clock."""

from __future__ import annotations

from typing import Optional

import pytest

from floe_edge.hybrid import HybridGenerator, HybridToken, Source
from floe_edge.hybrid.pipeline import MAX_SCORED
from floe_edge.cloud.protocol import MAX_DRAFT
from floe_edge.scheduler import Lead
from scripted import ScriptedCloud, ScriptedEdge, VirtualClock, VirtualIO, beliefs

A, B, C = 5, 6, 7
PROMPT = "hi"  # 2 edge tokens


def world(edge_says, cloud_says=None, *, decode_ms: float = 10.0, **cloud_kw):
    clock = VirtualClock()
    edge = ScriptedEdge(clock, edge_says, decode_ms=decode_ms)
    cloud = ScriptedCloud(clock, cloud_says, **cloud_kw) if cloud_says is not None else None
    return clock, edge, cloud


def generate(clock, edge, cloud, n: int, *, deadline_ms: float = 200.0,
             **kw) -> tuple[list[HybridToken], HybridGenerator]:
    gen = HybridGenerator(edge, cloud, clock=clock, io=VirtualIO(clock) if cloud else None, deadline_ms=deadline_ms,
                          **kw)
    with gen:
        return [t for t in gen.generate(PROMPT, n) if t.id >= 0], gen


def times(toks: list[HybridToken]) -> list[float]:
    return [round(t.t_ms, 6) for t in toks]


def test_confident_tokens_go_out_without_the_cloud() -> None:
    clock, edge, cloud = world(beliefs([A, B, C, A], 0.99), beliefs([B] * 4, 0.99))
    toks, gen = generate(clock, edge, cloud, 4)
    assert [t.id for t in toks] == [A, B, C, A]
    assert {t.source for t in toks} == {Source.EDGE}
    assert cloud.requests == [] and gen.last_stats.requests == 0  # gated upload: the cloud was never asked
    # prefill (10 + 1 x 2 ms), then one 10 ms decode before each next token: no waiting at all
    assert times(toks) == [12.0, 22.0, 32.0, 42.0]


def test_unsure_token_waits_within_its_deadline_and_is_fused() -> None:
    edge_p = [0.99, 0.99, 0.99, 0.4, 0.99]
    clock, edge, cloud = world(beliefs([A, A, A, B, A], edge_p), beliefs([A, A, A, C, A], 0.95), rtt_ms=30.0)
    toks, gen = generate(clock, edge, cloud, 5)
    assert [t.id for t in toks] == [A, A, A, C, A]  # the cloud's confident C beat the edge's unsure B
    assert [t.source for t in toks] == [Source.EDGE] * 3 + [Source.FUSED, Source.EDGE]
    # position 3 waited for one round trip: 30 ms + 1 ms of cloud compute for the 3 appended tokens and the head
    assert toks[3].t_ms - toks[2].t_ms == pytest.approx(10.0 + 30.0 + 4.0)
    assert all(t.late_ms <= 0 for t in toks)
    (sent, accepted, scored, n_draft, want), = cloud.requests
    assert accepted == [A, A, A] and scored == [] and n_draft == 0 and want == [0]


@pytest.mark.parametrize("first_on_open", [True, False])
def test_the_first_token_waits_for_the_session_to_open(first_on_open: bool) -> None:
    """An unsure first token waits for the session to open rather than going out edge-only: a link that brings
    the first position with the open fuses it then (no step at all here), another one waits for the step after the
    open (one round trip more)."""
    edge_p = [0.4] + [0.99] * 3
    clock, edge, cloud = world(beliefs([B, A, A, A], edge_p), beliefs([C, A, A, A], 0.95), rtt_ms=30.0, open_ms=50.0,
                               first_on_open=first_on_open)
    toks, gen = generate(clock, edge, cloud, 4)
    assert [t.id for t in toks] == [C, A, A, A]  # the cloud's confident C beat the edge's unsure B
    assert toks[0].source is Source.FUSED and gen.last_stats.sources[Source.EDGE_ONLY.value] == 0
    # the open was never timed: the edge drafts meanwhile (10 ms a token), so the answer is seen within a token
    if first_on_open:
        assert 50.0 <= toks[0].t_ms <= 60.0 and cloud.requests == []
    else:  # the step right after the open: 30 ms + 1 ms for each token it computes
        assert 50.0 + 31.0 <= toks[0].t_ms <= 60.0 + 36.0 and len(cloud.requests) == 1


def test_late_answer_is_dropped_and_the_edge_decides() -> None:
    unsure = beliefs([A, B] * 8, 0.5)
    clock, edge, cloud = world(unsure, beliefs([C] * 16, 0.95), rtt_ms=300.0, open_ms=5.0)
    toks, gen = generate(clock, edge, cloud, 16, deadline_ms=200.0)
    s = gen.last_stats
    assert [t.id for t in toks] == [A, B] * 8 and {t.source for t in toks} == {Source.EDGE_ONLY}
    assert s.max_late_ms <= 0 and s.deadline_misses == 0  # never past a deadline
    # the first head waited until its deadline (minus the 3 ms margin for emitting), not for the answer
    assert toks[0].t_ms == pytest.approx(12.0 + 200.0 - 3.0)
    assert s.late_answers >= 1
    # once a 300 ms round trip has been seen, an unsure head no longer waits for an answer it cannot get in time
    gaps = [b.t_ms - a.t_ms for a, b in zip(toks, toks[1:])]
    assert gaps[-1] == pytest.approx(10.0)


def test_cloud_led_draft_is_adopted_and_rolled_back_on_disagreement() -> None:
    # a slow (Pi-class) edge, a fast cloud: the cloud drafts, the edge verifies each chunk in one batched eval
    cloud_tokens = [A, B, C, A, B, C, A, B, C, A, B, C]
    edge_tokens = list(cloud_tokens)
    edge_tokens[5] = A  # the edge is sure of A where the cloud drafts C
    edge_p = [0.99 if i == 5 else 0.5 for i in range(12)]
    clock, edge, cloud = world(beliefs(edge_tokens, edge_p), beliefs(cloud_tokens, 0.6), decode_ms=40.0,
                               rtt_ms=10.0, token_ms=1.0)
    toks, gen = generate(clock, edge, cloud, 12, lead=Lead.CLOUD)
    ids = [t.id for t in toks]
    assert ids[:5] == cloud_tokens[:5] and ids[5] == A  # the edge's sure A wins the fused vote (gated)
    assert {t.source for t in toks[:5]} == {Source.CLOUD_DRAFT} and toks[5].source is Source.FUSED
    assert any(n_draft > 0 for _, _, _, n_draft, _ in cloud.requests)
    assert any(len(ids) > 1 for _, ids in edge.evals[1:])  # a cloud draft verified in one batched eval
    assert gen.last_stats.rollbacks > 0 and edge.n_prompt + 5 in edge.truncations  # draft past 5 thrown away
    assert all(t.late_ms <= 0 for t in toks)


def test_outage_breaker_and_probe_recovery() -> None:
    unsure = beliefs([A] * 80, 0.5)
    clock, edge, cloud = world(unsure, beliefs([A] * 80, 0.95), rtt_ms=20.0,
                               down=lambda t: 0.2 <= t < 0.5, breaker=lambda t: 0.3 <= t < 0.4)
    gen = HybridGenerator(edge, cloud, clock=clock, io=VirtualIO(clock), deadline_ms=100.0)
    gen.scheduler.probe_ms = 50.0
    with gen:
        toks = [t for t in gen.generate(PROMPT, 80) if t.id >= 0]
    sent = [ms for ms, *_ in cloud.requests]
    assert not [ms for ms in sent if 300.0 <= ms < 400.0]  # breaker open: nothing sent at all
    failing = [ms for ms in sent if 200.0 <= ms < 500.0]
    assert failing and all(b - a >= 50.0 for a, b in zip(failing, failing[1:]))  # probed, not hammered
    during = [t for t in toks if 260.0 < t.t_ms < 500.0]
    assert during and {t.source for t in during} == {Source.EDGE_ONLY}
    after = [t for t in toks if t.t_ms > 600.0]
    assert after and all(t.source is Source.FUSED for t in after)  # the cloud is back in use
    assert gen.last_stats.cloud_errors > 0 and gen.last_stats.max_late_ms <= 0


def test_pace_bounds_the_whole_answer() -> None:
    # a cloud slower than the edge but within the deadline: unpaced, unsure tokens wait for it
    def run(pace: Optional[float]):
        clock, edge, cloud = world(beliefs([A] * 40, 0.5), beliefs([A] * 40, 0.95), rtt_ms=20.0)
        toks, gen = generate(clock, edge, cloud, 40, pace=pace)
        s = gen.last_stats
        return s.latency_ms - s.prefill_ms, s.cloud_share

    bound = 1.1 * 40 * 10.0 + 10.0  # pace x the edge's own 10 ms per token (+ the last token's own eval)
    unpaced, unpaced_share = run(None)
    paced, paced_share = run(1.1)
    assert unpaced > bound and unpaced_share >= 0.8
    assert paced <= bound and paced_share > 0  # within the bound, and the cloud still decided some tokens


def test_edge_led_requests_stay_within_the_cloud_limit() -> None:
    clock, edge, cloud = world(beliefs([A] * 60, 0.5), beliefs([A] * 60, 0.6), rtt_ms=120.0, token_ms=0.5)
    toks, gen = generate(clock, edge, cloud, 60, deadline_ms=400.0, lookahead=64, lead=Lead.EDGE)
    assert len(toks) == 60
    scored = [len(s) for _, _, s, _, _ in cloud.requests]
    assert max(scored) == MAX_SCORED < MAX_DRAFT  # the edge drafted far ahead; a request scores at most this
    assert max(len(a) + len(s) for _, a, s, _, _ in cloud.requests) <= 64


def test_without_a_cloud_every_token_is_edge_only() -> None:
    clock, edge, _ = world(beliefs([A, B, 0], 0.5))
    toks, gen = generate(clock, edge, None, 5)
    assert [t.id for t in toks] == [A, B] and gen.last_stats.finish_reason == "eog"
    assert {t.source for t in toks} == {Source.EDGE_ONLY}


def test_private_context_reaches_only_the_edge() -> None:
    clock, edge, cloud = world(beliefs([A] * 4, 0.5), beliefs([A] * 4, 0.9))
    with HybridGenerator(edge, cloud, clock=clock, io=VirtualIO(clock)) as gen:
        list(gen.generate(PROMPT, 4, private_context="secret "))
    assert cloud.opened == [edge.tokenize(PROMPT)]
    assert edge.evals[0][1] == edge.tokenize("secret " + PROMPT)
