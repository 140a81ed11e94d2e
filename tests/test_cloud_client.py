"""The device's cloud link (floe_edge.cloud: client, openai_backend, transport, breaker) against a fake cloud.

`FakeCloud` (tests/fake_http_cloud.py) speaks the floe protocol and OpenAI's /v1/completions over raw asyncio
HTTP/1.1 on 127.0.0.1, with toy vocabularies and a scripted continuation; faults are queued per route.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from typing import Any, Callable

import numpy as np
import pytest

from floe_edge.cloud import protocol
from floe_edge.cloud.breaker import BreakerState, CircuitBreaker
from floe_edge.cloud import (CloudConnectionError, CloudHTTPError, CloudProtocolError, CloudTimeout, CloudUnavailable,
                             FloeCloudBackend, OpenAICompletionsBackend)
from floe_edge.cloud.align import align_positions
from floe_edge.cloud.transport import Transport
from floe_edge.vocab_map import VocabMap
from fake_http_cloud import CLOUD, E_ACUTE, EDGE, LPS, Fault, FakeCloud

SLACK = 0.05  # a step must end by its deadline + this (2 shared cores)


# -- helpers ------------------------------------------------------------------------------------------------------

@pytest.fixture
def cloud():
    with FakeCloud(EDGE) as c:
        yield c


@pytest.fixture
def xcloud():
    with FakeCloud(CLOUD) as c:
        yield c


def run(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(coro_fn())


def soon(s: float = 2.0) -> float:
    return time.monotonic() + s


def link(c: FakeCloud, tmp_path, **kw: Any) -> FloeCloudBackend:
    kw.setdefault("breaker", CircuitBreaker(failure_threshold=3, cooldown_s=0.1))
    return FloeCloudBackend(c.url, kw.pop("edge", EDGE), cache_dir=tmp_path, **kw)


PROMPT = [1, 2, 3]


def same_topk(ev: Any, pos: tuple[int, list[int], list[float]], k: int = 20) -> bool:
    return ev is not None and ev.ids.tolist() == pos[1][:k] and ev.logprobs.tolist() == pos[2][:k]


# -- same vocabulary ----------------------------------------------------------------------------------------------

def test_same_vocab_draft_and_score(cloud, tmp_path):
    async def main() -> None:
        async with link(cloud, tmp_path) as b:
            await b.open(PROMPT, b"abc")
            assert b.mode == "ids"  # decided from the vocabulary frame
            st = await b.step([4], b" ", k=5, n_draft=3, deadline=soon())
            assert st.draft == [p[0] for p in cloud.encoded[:-1]] and len(st.evidence) == 4
            assert all(same_topk(ev, pos, 5) for ev, pos in zip(st.evidence, cloud.encoded))
            assert st.evidence[0].ids.dtype == np.int32 and st.evidence[0].logprobs.dtype == np.float32
            assert cloud.sessions["s1"].ids == PROMPT + [4]
            assert st.bytes_sent > 100 and st.bytes_received > 12 + 4 * (4 + 5 * 6) and st.requests == 1
            st = await b.step([], b"", k=3, score_edge_ids=[5, 6], score_bytes=b"ababc", deadline=soon())
            assert st.draft == [5, 6] and [p[0] for p in cloud.encoded] == [5, 6, -1]
            assert all(same_topk(ev, pos, 3) for ev, pos in zip(st.evidence, cloud.encoded))
            st = await b.step([1, 1], b"aa", k=2, deadline=soon())  # int8 would round; f16 is exact here
            assert cloud.log[-1][2] == {"k": 2, "fmt": "f16", "append": [1, 1], "base": len(PROMPT) + 1}
            assert len(st.evidence) == 1
            st = await b.step([], b"", k=4, n_draft=3, want=[2, 0], deadline=soon())  # only positions 0 and 2
            assert cloud.log[-1][2]["want"] == [0, 2] and len(st.draft) == 3
            assert [e is not None for e in st.evidence] == [True, False, True, False]
            assert same_topk(st.evidence[2], cloud.encoded[2], 4)
            for bad in ([4], [1, 1], [-1]):
                with pytest.raises(ValueError):
                    await b.step([], b"", k=4, n_draft=3, want=bad, deadline=soon())
            assert b.stats.bytes_sent >= sum(1 for _ in cloud.log) * 100
        assert "s1" not in cloud.sessions  # closed with DELETE
    run(main)


def test_release_deletes_the_session_before_the_next_open(cloud, tmp_path):
    """A generation that is over releases its session: the next open is a single request (its DELETE is not on the
    next question's critical path); without a release, the next open deletes the old session first."""
    async def main() -> None:
        async with link(cloud, tmp_path) as b:
            await b.open(PROMPT, b"abc")
            await b.step([4], b" ", k=2, deadline=soon())
            await b.release()
            assert cloud.log[-1][0] == "DELETE" and cloud.sessions == {}
            n = len(cloud.log)
            await b.open(PROMPT, b"abc")
            assert [r[0] for r in cloud.log[n:]] == ["POST"] and len(cloud.sessions) == 1
            n = len(cloud.log)
            await b.open(PROMPT, b"abc")  # not released: deleted by the open, before its POST
            assert [r[0] for r in cloud.log[n:]] == ["DELETE", "POST"] and len(cloud.sessions) == 1
    run(main)


def test_an_open_ended_in_flight_deletes_the_session_it_makes(cloud, tmp_path):
    """A generation that ends (or a new question) while its session is still opening does not cancel the request
    mid-flight (the server would keep a session nobody can name, counted against the key's limit): the open
    finishes in the background and deletes its session; release() waits for that; the next open works."""
    async def main() -> None:
        async with link(cloud, tmp_path, same_vocab=True) as b:
            cloud.faults.append(Fault("slow", "sessions", 0.3))
            with pytest.raises(CloudTimeout):
                await b.open(PROMPT, b"abc", deadline=time.monotonic() + 0.05)
            await b.release()  # waits for the open in flight, which deletes what it made
            assert cloud.sessions == {} and cloud.log[-1][0] == "DELETE"
            await b.open(PROMPT, b"abc")
            st = await b.step([4], b" ", k=2, deadline=soon())
            assert len(cloud.sessions) == 1 and len(st.evidence) == 1
            cloud.faults.append(Fault("slow", "sessions", 0.3))
            opening = asyncio.ensure_future(b.open(PROMPT, b"abd"))
            await asyncio.sleep(0.05)
            await b.open(PROMPT, b"abe")  # a new question while the last one's session opens
            await asyncio.gather(opening, return_exceptions=True)
            await b.release()
            assert cloud.sessions == {} and len(cloud.routes("sessions")) == 4
    run(main)


def test_int8_frames_are_renormalized(cloud, tmp_path):
    async def main() -> None:
        async with link(cloud, tmp_path, same_vocab=True, fmt="int8") as b:
            await b.open(PROMPT, b"abc")
            st = await b.step([], b"", k=20, n_draft=2, deadline=soon())
            for ev, pos in zip(st.evidence, cloud.encoded):
                assert ev.ids.tolist() == pos[1]
                assert np.allclose(ev.logprobs, pos[2], atol=0.1) and np.exp(ev.logprobs.astype(float)).sum() <= 1.0001
    run(main)


def test_draft_stops_before_end_of_generation(cloud, tmp_path):
    async def main() -> None:
        async with link(cloud, tmp_path, same_vocab=True) as b:
            await b.open(PROMPT, b"abc")
            cloud.faults.append(Fault("body", arg=lambda body: protocol.encode_step(
                3, [(2, [2], [-0.5]), (0, [0, 1], [-0.5, -1.5]), (3, [3], [-0.5]), (-1, [1], [-0.5])], 4)))
            st = await b.step([], b"", k=4, n_draft=3, deadline=soon())
            assert st.draft == [2] and len(st.evidence) == 2 and st.evidence[1].ids.tolist() == [0, 1]
    run(main)


# -- cross vocabulary ---------------------------------------------------------------------------------------------

def test_alignment_rule():
    # edge tokens "abc"|" a"|"b"|"ca"|"b", cloud tokens "a"|"bc"|" ab"|"cab" of "abc abcab"
    assert align_positions([0, 3, 5, 6, 8, 9], [0, 1, 3, 6, 9]) == [0, 2, None, 3, None, 4]
    assert align_positions([0, 1, 1, 2], [0, 1, 2, 2]) == [0, 1, None, 2]  # repeated offsets: the first only
    assert align_positions([0, None, 2], [0, 2]) == [0, None, 1]


def test_cross_vocab_draft_aligned_by_bytes(xcloud, tmp_path):
    async def main() -> None:
        async with link(xcloud, tmp_path) as b:
            await b.open(PROMPT, b"abc")
            assert b.mode == "text" and xcloud.log[1][2] == {"prompt_b64": base64.b64encode(b"abc").decode()}
            st = await b.step([4, 1], b" a", k=6, n_draft=4, deadline=soon())
            assert xcloud.log[-1][2]["append_b64"] == base64.b64encode(b" a").decode()
            # cloud "a"|"bc"|" ab"|"cab" at 0,1,3,6,9; edge re-tokenization "abc"|" a"|"b"|"ca"|"b" at 0,3,5,6,8,9
            assert st.draft == [6, 7, 2, 8, 2]
            vmap = VocabMap.between(CLOUD, EDGE, cache=False)
            for i, j in enumerate([0, 2, None, 3, None, 4]):
                if j is None:
                    assert st.evidence[i] is None
                else:
                    ids, lps = xcloud.encoded[j][1], xcloud.encoded[j][2]
                    want = vmap.remap(np.array(ids), np.array(lps, np.float32))
                    assert st.evidence[i].ids.tolist() == want.ids.tolist()
                    assert np.allclose(st.evidence[i].logprobs, want.logprobs)
            assert st.evidence[1].ids[0] == 7  # cloud " ab" -> its first edge token " a"
            xcloud.script = b"abc"  # then </s>: the draft stops before it, the end stays in the evidence
            st = await b.step([], b"", k=3, n_draft=4, deadline=soon())
            assert st.draft == [6] and len(st.evidence) == 2 and st.evidence[1].ids[0] == 0  # edge <eos>
            st = await b.step([], b"", k=3, score_edge_ids=[6, 7, 2, 8, 2], score_bytes=b"abc abcab",
                              deadline=soon())
            assert [e is not None for e in st.evidence] == [True, True, False, True, False, True]
            # an open asked for k brings the first position, remapped to edge ids as a step's position 0 is
            first = await b.open(PROMPT, b"abc", k=3)
            st = await b.step([], b"", k=3, deadline=soon())
            assert first is not None and first.ids.tolist() == st.evidence[0].ids.tolist()
            assert np.allclose(first.logprobs, st.evidence[0].logprobs) and "k" in xcloud.log[-2][2]
            # only the positions the device wants, named by byte offset: the server finds its own positions there
            st = await b.step([], b"", k=3, score_edge_ids=[6, 7, 2, 8, 2], score_bytes=b"abc abcab", want=[0, 3],
                              deadline=soon())
            assert xcloud.log[-1][2]["want_bytes"] == [0, 6] and "want" not in xcloud.log[-1][2]
            assert [e is not None for e in st.evidence] == [True, False, False, True, False, False]
        # a second link (a new process) finds the vocabulary on disk: no second download
        VocabMap.clear_memory_cache()
        async with link(xcloud, tmp_path) as b2:
            await b2.open(PROMPT, b"abc")
            assert b2.mode == "text" and len(xcloud.routes("vocab")) == 1
    run(main)


def test_cross_vocab_cache_notices_a_new_model(xcloud, tmp_path):
    async def main() -> None:
        async with link(xcloud, tmp_path) as b:
            await b.open(PROMPT, b"abc")
        xcloud.vocab = EDGE  # the server now runs the edge's model: fingerprint changes
        async with link(xcloud, tmp_path) as b:
            await b.open(PROMPT, b"abc")
            assert b.mode == "ids" and len(xcloud.routes("vocab")) == 2
            assert "prompt" in xcloud.routes("sessions")[-1][2]
    run(main)


# -- deadlines ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", [Fault("hang"), Fault("drip", arg=0.02), Fault("slow", arg=1.0)],
                         ids=["hang", "drip", "slow"])
def test_deadline_bounds_the_step(cloud, tmp_path, fault):
    async def main() -> None:
        async with link(cloud, tmp_path, same_vocab=True) as b:
            await b.open(PROMPT, b"abc")
            cloud.faults.append(fault)
            t = time.monotonic()
            with pytest.raises(CloudTimeout):
                await b.step([], b"", k=20, n_draft=4, deadline=t + 0.15)
            assert time.monotonic() - t < 0.15 + SLACK
            st = await b.step([], b"", k=20, deadline=soon())  # the link recovers on a new connection
            assert len(st.evidence) == 1
    run(main)


def test_deadline_while_the_session_opens(cloud, tmp_path):
    async def main() -> None:
        async with link(cloud, tmp_path, same_vocab=True) as b:
            cloud.faults.append(Fault("slow", "sessions", 0.4))
            t = time.monotonic()
            with pytest.raises(CloudTimeout):
                await b.open(PROMPT, b"abc", deadline=t + 0.1)
            with pytest.raises(CloudTimeout):  # still opening: the step does not wait past its deadline
                await b.step([4], b" ", k=5, deadline=time.monotonic() + 0.1)
            assert time.monotonic() - t < 0.2 + 2 * SLACK
            await asyncio.sleep(0.3)
            st = await b.step([5], b"ab", k=5, deadline=soon())  # the session opened in the background
            assert cloud.sessions["s1"].ids == PROMPT + [4, 5] and len(st.evidence) == 1
            assert len(cloud.routes("sessions")) == 1
    run(main)


def test_nothing_listening(tmp_path):
    async def main() -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        tr = Transport(f"http://127.0.0.1:{port}")
        t = time.monotonic()
        with pytest.raises(CloudConnectionError):  # retried while the deadline leaves room, then given up
            await tr.call("GET", "/health", deadline=t + 0.1, parse=lambda r: r)
        assert time.monotonic() - t < 0.1 + SLACK and tr.stats.retries >= 2 and tr.stats.failures == 1
        b = FloeCloudBackend(f"http://127.0.0.1:{port}", EDGE, same_vocab=True, cache_dir=tmp_path)
        t = time.monotonic()
        with pytest.raises(CloudConnectionError):  # the open gives up after max_retries (5)
            await b.open(PROMPT, b"abc")
        assert time.monotonic() - t < 1.0 and b.stats.retries == 5
        await b.close()
        await tr.aclose()
    run(main)


# -- retries ------------------------------------------------------------------------------------------------------

def test_503_retried_with_backoff(cloud, tmp_path):
    async def main() -> None:
        async with link(cloud, tmp_path, same_vocab=True) as b:
            await b.open(PROMPT, b"abc")
            cloud.faults += [Fault("503")] * 3
            t = time.monotonic()
            st = await b.step([4], b" ", k=5, deadline=t + 1.0)
            assert 0.07 <= time.monotonic() - t < 1.0  # 10-20 + 20-40 + 40-80 ms of backoff
            assert len(cloud.routes("step")) == 4 and b.stats.retries == 3 and st.requests == 4
            assert cloud.sessions["s1"].ids == PROMPT + [4] and b.breaker.state is BreakerState.CLOSED
            cloud.faults += [Fault("503")] * 20  # retries stop when the deadline leaves no room
            t = time.monotonic()
            with pytest.raises(CloudHTTPError) as e:
                await b.step([], b"", k=5, deadline=t + 0.1)
            assert e.value.status == 503 and time.monotonic() - t < 0.1 + SLACK
    run(main)


def test_reset_before_response_is_retried(cloud, tmp_path):
    async def main() -> None:
        async with link(cloud, tmp_path, same_vocab=True) as b:
            await b.open(PROMPT, b"abc")
            cloud.faults.append(Fault("close"))
            st = await b.step([], b"", k=5, deadline=soon())  # idempotent: retried as is
            assert len(st.evidence) == 1 and len(cloud.routes("step")) == 2
            cloud.faults.append(Fault("reset"))
            st = await b.step([4, 5], b" ab", k=5, deadline=soon())  # an append carries its base: retried as is
            assert [r[2].get("append") for r in cloud.routes("step")[-2:]] == [[4, 5], [4, 5]]
            assert cloud.sessions["s1"].ids == PROMPT + [4, 5]  # applied once
            assert b.stats.reopened == 0 and len(st.evidence) == 1
    run(main)


def test_reset_mid_body_is_an_error_not_retried(cloud, tmp_path):
    async def main() -> None:
        async with link(cloud, tmp_path, same_vocab=True) as b:
            await b.open(PROMPT, b"abc")
            cloud.faults.append(Fault("reset_body"))
            with pytest.raises(CloudConnectionError) as e:
                await b.step([4], b" ", k=20, n_draft=4, deadline=soon())
            assert e.value.response_started and len(cloud.routes("step")) == 1
            # the append was applied, its answer lost: sent again with its base, it is applied once
            st = await b.step([5], b"ab", k=5, deadline=soon())
            assert cloud.log[-1][2]["append"] == [4, 5] and cloud.log[-1][2]["base"] == len(PROMPT)
            assert cloud.sessions["s1"].ids == PROMPT + [4, 5] and len(st.evidence) == 1
    run(main)


def test_404_reopens_transparently(cloud, tmp_path):
    async def main() -> None:
        async with link(cloud, tmp_path, same_vocab=True) as b:
            await b.open(PROMPT, b"abc")
            cloud.sessions.clear()  # expired on the server
            st = await b.step([4], b" ", k=5, n_draft=1, deadline=soon())
            assert len(st.draft) == 1 and cloud.routes("sessions")[-1][2] == {"prompt": PROMPT + [4]}
            assert b.stats.reopened == 1 and b.breaker.consecutive_failures == 0
            b._session.idle_expiry_s = 0.05  # idle past the server's expiry: reopened without the 404 round trip
            await asyncio.sleep(0.05)
            n = len(cloud.routes("step"))
            await b.step([5], b"ab", k=5, deadline=soon())
            assert len(cloud.routes("step")) == n + 1 and cloud.routes("sessions")[-1][2] == {"prompt": PROMPT + [4, 5]}
    run(main)


# -- circuit breaker ----------------------------------------------------------------------------------------------

def test_breaker_opens_probes_and_closes(cloud, tmp_path):
    async def main() -> None:
        async with link(cloud, tmp_path, same_vocab=True) as b:
            await b.open(PROMPT, b"abc")
            cloud.faults += [Fault("500")] * 3
            for _ in range(3):
                with pytest.raises(CloudHTTPError):
                    await b.step([], b"", k=5, deadline=soon())
            assert b.breaker.state is BreakerState.OPEN and not b.available
            n, t = len(cloud.log), time.monotonic()
            with pytest.raises(CloudUnavailable):
                await b.step([4], b" ", k=5, deadline=soon())
            assert time.monotonic() - t < 0.005 and len(cloud.log) == n  # refused without a round trip
            await asyncio.sleep(0.11)
            assert b.breaker.state is BreakerState.HALF_OPEN and b.available
            cloud.faults.append(Fault("500"))  # the probe fails: open again, cooldown doubled
            with pytest.raises(CloudHTTPError):
                await b.step([], b"", k=5, deadline=soon())
            assert b.breaker.state is BreakerState.OPEN and b.breaker.cooldown == pytest.approx(0.2)
            await asyncio.sleep(0.11)
            with pytest.raises(CloudUnavailable):
                await b.step([], b"", k=5, deadline=soon())
            await asyncio.sleep(0.1)
            st = await b.step([5], b"ab", k=5, deadline=soon())  # the probe succeeds
            assert b.breaker.state is BreakerState.CLOSED and b.breaker.cooldown == pytest.approx(0.1)
            assert cloud.sessions["s1"].ids == PROMPT + [4, 5] and len(st.evidence) == 1  # nothing lost
    run(main)


def test_breaker_unit():
    now = [0.0]
    br = CircuitBreaker(failure_threshold=2, cooldown_s=1.0, max_cooldown_s=3.0, clock=lambda: now[0])
    br.record_failure()
    assert br.allow() and br.state is BreakerState.CLOSED
    br.record_failure()
    assert not br.allow() and br.retry_in() == 1.0
    now[0] = 1.0
    assert br.allow() and not br.allow()  # one probe only
    br.release()  # cancelled: the next request probes
    assert br.allow()
    for cooldown in (2.0, 3.0, 3.0):  # doubling up to the cap
        br.record_failure()
        assert br.cooldown == cooldown
        now[0] += cooldown
        assert br.allow()
    br.record_success()
    assert br.state is BreakerState.CLOSED and br.cooldown == 1.0


# -- lying clouds -------------------------------------------------------------------------------------------------

def _patch(offset: int, fmt: str, value: Any) -> Callable[[bytes], bytes]:
    def f(body: bytes) -> bytes:
        b = bytearray(body)
        struct.pack_into(fmt, b, offset, value)
        return bytes(b)
    return f


K = 5
ID0 = 12 + 4 + 1      # first id of position 0: header, token, entry count
LP0 = ID0 + 4 * K     # its first log-prob (f16)
LIES = {
    "bad magic": lambda body: b"FLSX" + body[4:],
    "truncated": lambda body: body[:-3],
    "trailing bytes": lambda body: body + b"\0",
    "NaN log-prob": _patch(LP0, "<H", 0x7E00),
    "positive log-prob": _patch(LP0, "<H", 0x3C00),
    "unsorted": _patch(LP0 + 2, "<H", 0x0000),  # second entry 0.0 > first
    "mass above 1": lambda body: protocol.encode_step(3, [(-1, [1, 2], [-0.01, -0.02])], K),
    "id out of range": _patch(ID0, "<I", 10_000),
    "more entries than k": _patch(16, "<B", K + 1),
    "entries beyond the request's k": lambda body: protocol.encode_step(3, [(-1, list(range(1, 8)), LPS[:7])], 9),
    "too many positions": lambda body: protocol.encode_step(3, [(1, [1], [-1.0])] * 4, K),
    "wrong n_past": _patch(8, "<I", 99),
    "JSON instead": lambda body: b'{"ok": true}',
}


@pytest.mark.parametrize("lie", list(LIES), ids=list(LIES))
def test_lying_cloud_is_a_protocol_error(cloud, tmp_path, lie):
    async def main() -> None:
        async with link(cloud, tmp_path, same_vocab=True) as b:
            await b.open(PROMPT, b"abc")
            cloud.faults.append(Fault("body", arg=LIES[lie]))
            with pytest.raises(CloudProtocolError):
                await b.step([], b"", k=K, n_draft=2, deadline=soon())
            assert b.breaker.consecutive_failures == 1
            st = await b.step([], b"", k=K, n_draft=2, deadline=soon())  # and the link goes on
            assert len(st.evidence) == 3
    run(main)


def test_wrong_content_type(cloud, tmp_path):
    async def main() -> None:
        async with link(cloud, tmp_path, same_vocab=True) as b:
            await b.open(PROMPT, b"abc")
            cloud.faults.append(Fault("ctype", arg="text/html"))
            with pytest.raises(CloudProtocolError):
                await b.step([4], b" ", k=K, deadline=soon())
            cloud.faults.append(Fault("ctype", "sessions", "text/plain"))
            await b.close()
            with pytest.raises(CloudProtocolError):
                await b.open(PROMPT, b"abc")
    run(main)


# -- OpenAI-compatible completions --------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["legacy", "content"])
def test_openai_backend(xcloud, shape):
    xcloud.completions_shape = shape
    vmap = VocabMap.between([None], EDGE, cache=False)

    async def main() -> None:
        async with OpenAICompletionsBackend(xcloud.url, EDGE, model="fake", api_key="sk-test",
                                            vocab_map=vmap) as b:
            assert not b.can_score
            await b.open(PROMPT, b"abc")
            st = await b.step([4, 1], b" a", k=4, n_draft=3, deadline=soon())
            req = xcloud.log[-1][2]
            assert req == {"prompt": "abc a", "max_tokens": 4, "logprobs": 4, "temperature": 0, "echo": False,
                           "n": 1, "stream": False, "model": "fake"}
            # 4 cloud tokens "a"|"bc"|" ab"|"cab": a draft of the first 3 ("abc ab"), 4 distributions
            assert st.draft == [6, 7, 2] and len(st.evidence) == 4
            for i, j in enumerate([0, 2, None, 3]):  # edge at 0,3,5,6; cloud at 0,1,3,6
                if j is None:
                    assert st.evidence[i] is None
                else:
                    want = vmap.map_strings(xcloud.last_tops[j])
                    assert st.evidence[i].ids.tolist() == want.ids.tolist()
            assert st.bytes_sent > len(json.dumps(req)) and st.bytes_received > 200
            with pytest.raises(NotImplementedError):
                await b.step([], b"", k=4, score_edge_ids=[1], score_bytes=b"a", deadline=soon())
            # a character split over two cloud tokens ("\xc3" "\xa9": strings "" "") cannot be located by its
            # strings; its bytes (the content shape) locate it
            xcloud.script = b"a" + E_ACUTE + b" ab"  # cloud "a"|"\xc3"|"\xa9"|" ab"
            st = await b.step([], b"", k=4, n_draft=3, deadline=soon())
            if shape == "legacy":  # positions after "" strings are unknown: the draft ends at the last known one
                assert st.draft == [1] and len(st.evidence) == 2 and all(st.evidence)
            else:  # edge "a"|"\xe9" at 0,1,3; cloud at 0,1,2,3
                assert st.draft == [1, 10] and len(st.evidence) == 3 and all(st.evidence)
    run(main)


def test_openai_held_back_partial_character(xcloud):
    async def main() -> None:
        async with OpenAICompletionsBackend(xcloud.url + "/v1", EDGE) as b:
            await b.open(PROMPT, b"abc \xc3")  # the history ends inside a character: "\xc3" is held back
            xcloud.script = b"ab"  # the cloud does not continue that character: nothing usable
            st = await b.step([], b"", k=4, n_draft=1, deadline=soon())
            assert xcloud.log[-1][1] == "/v1/completions" and xcloud.log[-1][2]["prompt"] == "abc "
            assert st.draft == [] and st.evidence == [None]
            xcloud.script = E_ACUTE + b"ab"  # cloud "\xc3"|"\xa9"|"a" (content shape: exact bytes) at 0,1,2
            xcloud.completions_shape = "content"
            st = await b.step([], b"", k=4, n_draft=3, deadline=soon())  # cloud positions at 0,1,2,3
            # the edge goes on after its "\xc3": "\xa9"|"a", positions at 1,2,3 (counting the held-back byte)
            assert st.draft == [12, 1] and len(st.evidence) == 3 and all(st.evidence)
            assert st.evidence[0].ids[0] == 12  # cloud position 1 predicted "\xa9"
    run(main)


# -- resources ----------------------------------------------------------------------------------------------------

def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_threads_or_sockets_left_behind(cloud, xcloud, tmp_path):
    threads, fds = set(threading.enumerate()), _fds()

    async def main() -> None:
        b = link(cloud, tmp_path)
        await b.open(PROMPT, b"abc")
        await b.step([4], b" ", k=5, n_draft=2, deadline=soon())
        cloud.faults.append(Fault("hang"))
        with pytest.raises(CloudTimeout):
            await b.step([], b"", k=5, deadline=time.monotonic() + 0.05)
        await b.step([], b"", k=5, deadline=soon())
        await b.close()
        x = link(xcloud, tmp_path)
        await x.open(PROMPT, b"abc")
        await x.step([], b"", k=5, n_draft=2, deadline=soon())
        await x.close()
        o = OpenAICompletionsBackend(xcloud.url, EDGE)
        await o.step([], b"", k=3, n_draft=1, deadline=soon())
        await o.close()

    run(main)
    t = time.monotonic()
    while _fds() != fds and time.monotonic() - t < 2:  # the server side closes its end when it reads EOF
        time.sleep(0.01)
    assert _fds() == fds
    assert set(threading.enumerate()) == threads


def test_tls_with_a_private_ca(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command for a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def main() -> None:
        async with link(c, tmp_path, same_vocab=True, verify=str(cert)) as b:
            await b.open(PROMPT, b"abc")
            assert len((await b.step([4], b" ", k=3, deadline=soon())).evidence) == 1
        async with link(c, tmp_path, same_vocab=True) as b:  # the system CAs do not know it
            with pytest.raises(CloudConnectionError):
                await b.open(PROMPT, b"abc", deadline=soon(1.0))

    with FakeCloud(EDGE, tls=ctx) as c:
        run(main)


def test_transport_rejects_bad_urls():
    with pytest.raises(ValueError):
        Transport("ftp://example.com")
