"""A fake cloud for the device's cloud link tests (tests/test_cloud_client.py).

`FakeCloud` speaks the floe protocol (protocol.encode_step / encode_vocab) and OpenAI's /v1/completions over raw
asyncio HTTP/1.1 on 127.0.0.1, in a background thread, with toy vocabularies (`ToyVocab`, greedy longest match) and a
scripted continuation. Faults are queued per route: 503, 500, 404, hang, slow, reset / close before the response,
drip-fed or reset bodies, and lying bodies.
"""
from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import struct
import threading
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union


from floe_edge.cloud import protocol

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
            if "k" in j:  # the first position, as a step without append would give it
                first = self._step(self.sessions[sid], {"k": j["k"], "fmt": j.get("fmt", "f16")})
                out["first_b64"] = base64.b64encode(first).decode()
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
            if "want_bytes" in j:  # the positions starting at these offsets of the scored text
                starts = [sum(len(self.vocab.pieces[t]) for t in toks[:i]) for i in range(len(toks) + 1)]
                positions = [p if starts[i] in j["want_bytes"] else (p[0], [], []) for i, p in enumerate(positions)]
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
