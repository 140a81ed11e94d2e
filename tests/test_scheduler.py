"""DeadlineScheduler and RunningStat: the estimates and decisions the hybrid policy relies on."""

from __future__ import annotations

import math

import pytest

from floe_edge.scheduler import DeadlineScheduler, Lead, RunningStat


def test_running_stat_ewma_p95_min_and_recent() -> None:
    s = RunningStat(alpha=0.5, window=4)
    assert s.ewma is None and s.p95 is None and s.min is None and s.recent() is None and s.n == 0
    for x in (10.0, 20.0, 30.0):
        s.add(x)
    assert s.ewma == pytest.approx(22.5)  # 10 -> 15 -> 22.5
    assert s.p95 == 30.0 and s.min == 10.0 and s.recent() == 20.0
    for x in (40.0, 50.0):  # the window keeps the last 4
        s.add(x)
    assert s.n == 4 and s.min == 20.0
    s.add(1000.0)  # one outlier moves the median of the last 3 no further than the one before it
    assert s.recent() == 50.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_running_stat_ignores_impossible_samples(bad: float) -> None:
    s = RunningStat()
    s.add(5.0)
    s.add(bad)
    assert s.n == 1 and s.ewma == 5.0


def test_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DeadlineScheduler(deadline_ms=0)


def test_expected_time_is_network_plus_cloud_compute_per_token() -> None:
    sch = DeadlineScheduler(deadline_ms=100)
    assert sch.expected_ms(4) is None and sch.cloud_useful(4)  # before any observation: try
    sch.observe_cloud(40.0, 4, server_ms=8.0)  # 32 ms of network, 2 ms per token
    assert sch.expected_ms(10) == pytest.approx(32.0 + 2.0 * 10)
    assert sch.cloud_useful(30) and not sch.cloud_useful(40)  # 92 <= 97 < 112


def test_without_server_timing_the_fastest_step_is_the_network() -> None:
    sch = DeadlineScheduler()
    sch.observe_cloud(30.0, 1)
    sch.observe_cloud(50.0, 5)  # 20 ms above the network floor for 5 tokens: 4 ms per token
    assert sch.network.min == 30.0 and sch.cloud_token_ms.ewma == pytest.approx(4.0)


def test_failures_count_until_an_answer_clears_them() -> None:
    sch = DeadlineScheduler(deadline_ms=100, probe_ms=250)
    sch.observe_cloud(20.0, 1, server_ms=1.0)
    sch.observe_failure(400.0)
    assert sch.failing and sch.expected_ms(1) is not None and sch.expected_ms(1) >= 19.0
    sch.observe_failure(400.0)
    sch.observe_failure(400.0)
    assert not sch.cloud_useful(1)  # three slow failures: the median network time is past the deadline
    sch.observe_cloud(25.0, 1, server_ms=1.0)  # the cloud is back: what the failures taught is forgotten
    assert not sch.failing and sch.expected_ms(1) == pytest.approx(24.0 + 1.0)


def test_probe_interval() -> None:
    sch = DeadlineScheduler(probe_ms=250)
    assert sch.should_probe(0.0)
    sch.request_sent(10.0)
    assert not sch.should_probe(10.2) and sch.should_probe(10.25)


def test_wait_only_for_an_answer_due_before_the_deadline_less_margin() -> None:
    sch = DeadlineScheduler(margin_ms=3.0)
    assert sch.wait_for_cloud(now=0.0, head_deadline=0.1, expected_arrival=0.097)
    assert not sch.wait_for_cloud(now=0.0, head_deadline=0.1, expected_arrival=0.098)
    assert not sch.wait_for_cloud(now=0.097, head_deadline=0.1, expected_arrival=0.05)  # no time left


def test_lead_follows_who_writes_faster() -> None:
    sch = DeadlineScheduler(slow_edge_ms=25.0)
    assert sch.lead() is Lead.EDGE  # nothing measured
    sch.observe_edge(10.0)
    assert sch.lead() is Lead.EDGE  # a fast edge, the cloud's drafting not timed: edge-led
    slow = DeadlineScheduler(slow_edge_ms=25.0)
    slow.observe_edge(40.0)
    assert slow.lead() is Lead.CLOUD  # a Pi-class edge tries cloud-led first
    slow.observe_cloud(60.0, 10, server_ms=50.0, n_drafted=10)  # 5 ms per cloud draft token < 40
    assert slow.lead() is Lead.CLOUD
    sch.observe_cloud(60.0, 2, server_ms=50.0, n_drafted=2)  # 25 ms per draft token > the edge's 10
    assert sch.lead() is Lead.EDGE


def test_batched_edge_evals_are_timed_per_token_apart() -> None:
    sch = DeadlineScheduler()
    sch.observe_edge(10.0, 1)
    sch.observe_edge(24.0, 8)
    assert sch.edge_token_ms.ewma == 10.0 and sch.edge_batch_ms.ewma == 3.0
