"""The device's cloud link (floe_edge.cloud: client, openai_backend, transport, breaker) against a fake cloud.

`FakeCloud` speaks the floe protocol (protocol.encode_step / encode_vocab) and OpenAI's /v1/completions over raw
asyncio HTTP/1.1 on 127.0.0.1, in a background thread, with toy vocabularies (`ToyVocab`, greedy longest match) and a
scripted continuation. Faults are queued per route: 503, 500, 404, hang, slow, reset / close before the response,
drip-fed or reset bodies, and lying bodies.
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
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import pytest

from floe_edge.cloud import protocol
from floe_edge.cloud.breaker import BreakerState, CircuitBreaker
from floe_edge.cloud import (CloudConnectionError, CloudHTTPError, CloudProtocolError, CloudTimeout, CloudUnavailable,
                             FloeCloudBackend, OpenAICompletionsBackend)
from floe_edge.cloud.align import align_positions
from floe_edge.cloud.transport import Transport
from floe_edge.vocab_map import VocabMap

SLACK = 0.05  # a step must end by its deadline + this (2 shared cores)
LPS = [-(0.5 + j) for j in range(32)]  # exact in f16; probabilities add up to < 1


# -- toy vocabularies ---------------------------------------------------------------------------------------------

class ToyVocab:
    """A TokenVocab: pieces by id, greedy longest-match tokenization."""

    def __init__(self, pieces: Sequence[Union[str, bytes]], control: Sequence[int] = (), eog: Sequence[int] = ()):
        self.pieces = [p.encode() if isinstance(p, str) else p for p in pieces]
        self.control, self.eog = set(control), set(eog)
        self.eos_id = min(self.eog) if self.eog else None

    @property
    def n_vocab(self) -> int:
        return len(self.pieces)

    def token_bytes(self, id: int) -> bytes:
        return self.pieces[id]

    def is_control(self, id: int) -> bool:
        return id in self.control

    def is_eog(self, id: int) -> bool:
        return id in self.eog

    def tokenize(self, text: Union[str, bytes], add_bos: bool = False, special: bool = False) -> list[int]:
        data = text.encode() if isinstance(text, str) else bytes(text)
        out, i = [], 0
        while i < len(data):
            best = max((t for t in range(self.n_vocab) if t not in self.control and data.startswith(self.pieces[t], i)
                        and self.pieces[t]), key=lambda t: len(self.pieces[t]), default=None)
            if best is None:  # a byte outside the toy vocabulary: skipped
                i += 1
                continue
            out.append(best)
            i += len(self.pieces[best])
        return out

    def frame(self) -> bytes:
        n = self.n_vocab
        return protocol.encode_vocab([None if i in self.control else self.pieces[i] for i in range(n)],
                                     [i in self.control for i in range(n)], [i in self.eog for i in range(n)])


EDGE = ToyVocab(["<eos>", "a", "b", "c", " ", "ab", "abc", " a", "ca", "x", "\xe9", b"\xc3", b"\xa9"],
                control=[0], eog=[0])
CLOUD = ToyVocab(["</s>", "a", "b", "c", " ", "bc", " ab", "cab", "x", b"\xc3", b"\xa9"], control=[0], eog=[0])
E_ACUTE = "\xe9".encode()  # two bytes: the cloud has only byte tokens for them, the edge also a whole token


# -- the fake cloud -----------------------------------------------------------------------------------------------

@dataclass
class Fault:
    kind: str                 # 503 500 404 hang slow reset close | drip reset_body body ctype
    route: str = "step"       # step | sessions | vocab | completions | delete
    arg: Any = None


@dataclass
class Session:
    ids: Optional[list[int]]  # id session
    text: Optional[bytes]     # text session


def _route(method: str, path: str) -> str:
    if path.endswith("/step"):
        return "step"
    if method == "DELETE":
        return "delete"
    return {"/v1/floe/sessions": "sessions", "/v1/floe/vocab": "vocab", "/v1/completions": "completions"}.get(
        path, "other")


class FakeCloud:
    def __init__(self, vocab: ToyVocab, script: bytes = b"abc abcab", tls: Optional[ssl.SSLContext] = None) -> None:
        self.vocab, self.script, self.tls = vocab, script, tls
        self.sessions: dict[str, Session] = {}
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, Any]] = []  # (method, path, JSON body)
        self.encoded: list[tuple[int, list[int], list[float]]] = []  # the last step's positions
        self.completions_shape = "legacy"  # or "content"
        self._n = 0

    # server lifecycle: its own loop in a thread
    def __enter__(self) -> "FakeCloud":
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", 0, ssl=self.tls))
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="fake-cloud", daemon=True)
        self.thread.start()
        ready.wait(5)
        self.url = f"http{'s' if self.tls else ''}://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self.server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def routes(self, route: str) -> list[tuple[str, str, Any]]:
        return [r for r in self.log if _route(r[0], r[1]) == route]

    # HTTP/1.1, keep-alive
    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ")
                headers = dict((k.lower(), v) for k, v in (ln.split(": ", 1) for ln in lines[1:] if ln))
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                j = json.loads(body) if body else None
                self.log.append((method, path, j))
                route = _route(method, path)
                fault = next((f for f in self.faults if f.route == route), None)
                if fault is not None:
                    self.faults.remove(fault)
                if not await self._serve(method, path, j, fault, reader, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _serve(self, method: str, path: str, j: Any, fault: Optional[Fault], reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bool:
        kind = fault.kind if fault else None
        if kind == "hang":  # until the client gives up (closes) or 5 s
            try:
                await asyncio.wait_for(reader.read(1), 5)
            except asyncio.TimeoutError:
                pass
            return False
        if kind in ("reset", "close"):
            if kind == "reset":
                _rst(writer)
            return False
        if kind in ("503", "500", "404"):
            status = int(kind)
            code = {503: "overloaded", 500: "model_error", 404: "unknown_session"}[status]
            await _send(writer, status, json.dumps({"error": {"code": code, "message": "fake"}}).encode())
            return True
        if kind == "slow":
            await asyncio.sleep(fault.arg)
        status, ctype, body = self._answer(method, path, j)
        if kind == "body":
            body = fault.arg(body) if callable(fault.arg) else fault.arg
        if kind == "ctype":
            ctype = fault.arg
        if kind == "drip":  # headers now, the body one byte at a time
            writer.write(_head(status, ctype, len(body)))
            for b in body:
                writer.write(bytes([b]))
                await writer.drain()
                await asyncio.sleep(fault.arg)
            return True
        if kind == "reset_body":
            writer.write(_head(status, ctype, len(body)) + body[: len(body) // 2])
            await writer.drain()
            await asyncio.sleep(0.02)
            _rst(writer)
            return False
        await _send(writer, status, body, ctype)
        return True

    # the protocol
    def _topk(self, top1: int, k: int, seed: int) -> tuple[list[int], list[float]]:
        others = [t for t in range(self.vocab.n_vocab) if t != top1 and t not in self.vocab.control]
        rot = seed % len(others)
        ids = [top1] + (others[rot:] + others[:rot])[: k - 1]
        return ids, LPS[: len(ids)]

    def _greedy(self, context: Sequence[int]) -> int:
        return (sum(context) * 7 + len(context)) % (self.vocab.n_vocab - 1) + 1  # never the control id 0

    def _answer(self, method: str, path: str, j: Any) -> tuple[int, str, bytes]:
        route = _route(method, path)
        if route == "vocab":
            return 200, "application/octet-stream", self.vocab.frame()
        if route == "sessions":
            self._n += 1
            sid = f"s{self._n}"
            if "prompt" in j:
                self.sessions[sid] = Session(list(j["prompt"]), None)
                n_past = len(j["prompt"])
            else:
                text = base64.b64decode(j["prompt_b64"])
                self.sessions[sid] = Session(None, text)
                n_past = len(self.vocab.tokenize(text))
            out = {"session": sid, "n_past": n_past, "n_vocab": self.vocab.n_vocab, "model": "fake", "max_k": 20,
                   "idle_expiry_s": 300.0, "fingerprint": protocol.vocab_fingerprint(self.vocab.frame())}
            return 200, "application/json", json.dumps(out).encode()
        if route == "delete":
            self.sessions.pop(path.split("/")[-1], None)
            return 200, "application/json", b'{"closed": true}'
        if route == "step":
            s = self.sessions.get(path.split("/")[-2])
            if s is None:
                return 404, "application/json", b'{"error": {"code": "unknown_session", "message": "no"}}'
            return 200, "application/octet-stream", self._step(s, j)
        if route == "completions":
            return 200, "application/json", json.dumps(self._completion(j)).encode()
        return 404, "application/json", b'{"error": {"code": "not_found", "message": "no"}}'

    def _step(self, s: Session, j: dict[str, Any]) -> bytes:
        k, n_draft = j.get("k", 20), j.get("n_draft", 0)
        positions: list[tuple[int, list[int], list[float]]] = []
        if s.ids is not None:  # id session: a deterministic toy model
            new = j.get("append", [])
            done = len(s.ids) - j.get("base", len(s.ids))  # as floe cloud serve: an append applies once
            s.ids += new[done:] if 0 <= done <= len(new) and s.ids[len(s.ids) - done:] == new[:done] else new
            seq = list(s.ids)
            scored = j.get("score", [])
            for i in range(len(scored) if scored else n_draft):
                ids, lps = self._topk(self._greedy(seq), k, len(seq))
                tok = scored[i] if scored else ids[0]
                positions.append((tok, ids, lps))
                seq.append(tok)
            ids, lps = self._topk(self._greedy(seq), k, len(seq))
            positions.append((-1, ids, lps))
            n_past = len(s.ids)
            if "want" in j:  # the others come back without entries
                positions = [p if i in j["want"] else (p[0], [], []) for i, p in enumerate(positions)]
        else:  # text session: the cloud continues with self.script (then </s>)
            new_b = base64.b64decode(j.get("append_b64", ""))
            done = len(s.text) - j.get("base", len(s.text))
            s.text += new_b[done:] if 0 <= done <= len(new_b) and s.text[len(s.text) - done:] == new_b[:done] \
                else new_b
            if "score_b64" in j:
                toks = self.vocab.tokenize(base64.b64decode(j["score_b64"]))
                nxt = toks + [0]
            else:
                nxt = self.vocab.tokenize(self.script) + [0] * (n_draft + 1)
                toks = nxt[:n_draft]
            for i in range(len(toks) + 1):
                ids, lps = self._topk(nxt[i], k, i)
                positions.append((toks[i] if i < len(toks) else -1, ids, lps))
            n_past = len(self.vocab.tokenize(s.text))
        self.encoded = positions
        return protocol.encode_step(n_past, positions, k, j.get("fmt", "f16"))

    def _completion(self, j: dict[str, Any]) -> dict[str, Any]:
        """llama-cpp-python's shape: strings decoded alone with errors="ignore", char text_offset, EOS left out."""
        toks = self.vocab.tokenize(self.script)[: j["max_tokens"]]
        k = j["logprobs"]
        pieces = [self.vocab.pieces[t] for t in toks]
        text = b"".join(pieces).decode("utf-8", "ignore")
        tops: list[Any] = []
        for i, t in enumerate(toks):
            ids, lps = self._topk(t, k, i)
            if self.completions_shape == "content":  # exact bytes
                tops.append([{"token": self.vocab.pieces[x].decode("utf-8", "replace"), "logprob": lp,
                              "bytes": list(self.vocab.pieces[x])} for x, lp in zip(ids, lps)])
            else:  # colliding keys keep the last entry, as llama-cpp-python's dict does
                tops.append({self.vocab.pieces[x].decode("utf-8", "ignore"): lp for x, lp in zip(ids, lps)})
        if self.completions_shape == "content":
            content = [{"token": p.decode("utf-8", "replace"), "bytes": list(p), "logprob": -0.5, "top_logprobs": top}
                       for p, top in zip(pieces, tops)]
            lp: dict[str, Any] = {"content": content}
        else:
            n = len(j["prompt"])
            lp = {"tokens": [p.decode("utf-8", "ignore") for p in pieces], "top_logprobs": tops,
                  "token_logprobs": [-0.5] * len(toks),
                  "text_offset": [n + len(b"".join(pieces[:i]).decode("utf-8", "ignore")) for i in range(len(toks))]}
        self.last_tops = tops
        return {"id": "cmpl-1", "object": "text_completion", "model": "fake",
                "choices": [{"text": text, "index": 0, "logprobs": lp,
                             "finish_reason": "length" if len(toks) == j["max_tokens"] else "stop"}]}


def _head(status: int, ctype: str, n: int) -> bytes:
    return (f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {n}\r\n\r\n").encode()


async def _send(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str = "application/json") -> None:
    writer.write(_head(status, ctype, len(body)) + body)
    await writer.drain()


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


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
        assert time.monotonic() - t < 0.1 and tr.stats.retries >= 2 and tr.stats.failures == 1
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
