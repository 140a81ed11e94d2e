"""`floe cloud serve` (floe_edge.cloud.server / backend) against the real SmolLM2-135M, checked against
llama-cpp-python itself: top-1 = llama's greedy token, drafts = llama's greedy continuation, scored positions = the
reference log-softmax per position, prefix reuse decodes only new tokens, frames decode, limits give clear 4xx.

The reference evaluates the same way the server does (prompt in one batch, drafts one token at a time): llama.cpp's
one-token and batched paths differ by up to ~0.7 nats on some top-20 log-probs (KL < 0.01), so only like is
compared with like.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
llama_cpp = pytest.importorskip("llama_cpp")

from fastapi.testclient import TestClient  # noqa: E402

from floe_edge.cloud import protocol  # noqa: E402
from floe_edge.cloud.backend import LlamaBackend, topk_logprobs  # noqa: E402
from floe_edge.cli.cloud import register_serve  # noqa: E402
from floe_edge.cloud.server import CloudServer, Limits, create_app  # noqa: E402

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
N_CTX = 512
PROMPT = b"def fibonacci(n):\n    if n < 2:\n        return n\n    return"


@pytest.fixture(scope="module")
def backend(smollm2_path) -> LlamaBackend:
    b = LlamaBackend(smollm2_path, n_ctx=N_CTX, n_threads=1)
    yield b
    b.close()


@pytest.fixture(scope="module")
def ref(smollm2_path) -> Any:
    """llama-cpp-python's own Llama, keeping every position's logits."""
    r = llama_cpp.Llama(model_path=str(smollm2_path), n_ctx=N_CTX, n_threads=1, logits_all=True, verbose=False)
    yield r
    r.close()


@pytest.fixture(scope="module")
def client(backend) -> TestClient:
    return TestClient(create_app(backend, api_key=KEY, limits=Limits(max_sessions_per_key=64)))


@pytest.fixture(scope="module")
def prompt_ids(backend) -> list[int]:
    return backend.tokenize(PROMPT)


def ref_logprobs(ref: Any, chunks: Sequence[Sequence[int]]) -> np.ndarray:
    """Reference log-softmax (float64) for every position, evaluating `chunks` one batch after the other."""
    ref.reset()
    for c in chunks:
        ref.eval(list(c))
    x = ref.scores[: ref.n_tokens].astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def ref_greedy(ref: Any, tokens: list[int], n: int) -> list[int]:
    ref.reset()
    gen = ref.generate(tokens, temp=0.0)
    return [next(gen) for _ in range(n)]


def new_session(client: TestClient, **body: Any) -> str:
    r = client.post("/v1/floe/sessions", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()["session"]


def step(client: TestClient, sid: str, **body: Any) -> protocol.StepFrame:
    r = client.post(f"/v1/floe/sessions/{sid}/step", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert float(r.headers["server-timing"].split("dur=")[1]) >= 0
    return protocol.decode_step(r.content, n_vocab=49152)


def assert_matches(pos: protocol.Position, lp_row: np.ndarray, k: int) -> None:
    """A decoded f16 position against a reference log-softmax row: same ids, log-probs within f16 precision."""
    ids, lps = topk_logprobs(lp_row.astype(np.float32), k)
    assert list(pos.ids) == list(ids)
    np.testing.assert_allclose(pos.logprobs, lps, rtol=2e-3, atol=2e-3)


# ----------------------------------------------------------------------------------------------------------------
# Real model behaviour

def test_step_top1_is_llamas_greedy_token(client, backend, ref, prompt_ids) -> None:
    backend.reset()
    sid = new_session(client, prompt=prompt_ids)
    frame = step(client, sid, k=20)
    assert frame.n_past == len(prompt_ids) and len(frame.positions) == 1
    pos = frame.positions[0]
    assert pos.token == -1 and len(pos.ids) == 20 and np.all(np.diff(pos.logprobs) <= 0)
    assert pos.ids[0] == ref_greedy(ref, prompt_ids, 1)[0]
    assert_matches(pos, ref_logprobs(ref, [prompt_ids])[-1], 20)


def test_draft_is_llamas_greedy_continuation(client, backend, ref, prompt_ids) -> None:
    backend.reset()
    sid = new_session(client, prompt=prompt_ids)
    frame = step(client, sid, k=8, n_draft=8)
    greedy = ref_greedy(ref, prompt_ids, 8)  # prompt in one batch, then one token at a time, as the server
    assert [p.token for p in frame.positions] == greedy + [-1]
    assert [int(p.ids[0]) for p in frame.positions[:8]] == greedy
    lp = ref.scores[: ref.n_tokens].astype(np.float64)  # the rows generate computed (prompt + 7 drafts)
    lp = lp - lp.max(1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(1, keepdims=True))
    for j in range(8):
        assert_matches(frame.positions[j], lp[len(prompt_ids) - 1 + j], 8)
    assert frame.n_past == len(prompt_ids)  # drafts are not committed


def test_scoring_gives_each_positions_topk(client, backend, ref, prompt_ids) -> None:
    score = backend.tokenize(b" fibonacci(n - 1) + fib", add_bos=False)
    assert len(score) >= 4
    backend.reset()
    sid = new_session(client, prompt=prompt_ids)
    frame = step(client, sid, k=10, score=score)
    assert [p.token for p in frame.positions] == score + [-1]
    lp = ref_logprobs(ref, [prompt_ids, score])  # the scored tokens in one batch, as the server
    for j, pos in enumerate(frame.positions):
        assert_matches(pos, lp[len(prompt_ids) - 1 + j], 10)
    assert step(client, sid, k=1).n_past == len(prompt_ids)  # scored tokens are not committed


def test_append_with_base_applies_once(client, backend, prompt_ids) -> None:
    """A device that lost an answer sends the same append again with the same base: applied once; a base that
    matches nothing the session holds is a 409."""
    sid = new_session(client, prompt=prompt_ids)
    extra = backend.tokenize(b" and more", add_bos=False)
    n = len(prompt_ids)
    assert step(client, sid, k=1, append=extra, base=n).n_past == n + len(extra)
    assert step(client, sid, k=1, append=extra, base=n).n_past == n + len(extra)  # the retry
    assert step(client, sid, k=1, append=extra + extra[:1], base=n).n_past == n + len(extra) + 1  # and more
    r = client.post(f"/v1/floe/sessions/{sid}/step", json={"append": extra, "base": 1}, headers=AUTH)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    tsid = new_session(client, prompt_b64=base64.b64encode(PROMPT).decode())
    for _ in range(2):
        frame = step(client, tsid, k=1, append_b64=base64.b64encode(b" and more").decode(), base=len(PROMPT))
    assert frame.n_past == len(backend.tokenize(PROMPT + b" and more"))


def test_prefix_reuse_decodes_only_new_tokens(client, backend, prompt_ids) -> None:
    backend.reset()
    n0 = backend.n_evaluated

    def spent() -> int:
        nonlocal n0
        d, n0 = backend.n_evaluated - n0, backend.n_evaluated
        return d

    sid = new_session(client, prompt=prompt_ids)
    assert spent() == len(prompt_ids)                      # the prompt, once, at creation
    step(client, sid)
    assert spent() == 0                                    # its logits were kept
    extra = backend.tokenize(b" fibonacci(n - 1)", add_bos=False)
    assert step(client, sid, append=extra).n_past == len(prompt_ids) + len(extra)
    assert spent() == len(extra)                           # only the appended tokens
    draft = [p.token for p in step(client, sid, n_draft=4).positions[:4]]
    assert spent() == 4
    step(client, sid, append=draft[:2])                    # accepting draft tokens costs nothing
    assert spent() == 0
    other = next(t for t in range(100, 200) if t != draft[2])
    step(client, sid, append=[other])                      # a rejected draft: KV cut after the accepted part
    assert spent() == 1
    # Another session with the same prompt pays for all of it (sessions share knowledge entries only: a prompt is
    # never cheaper, or faster, because another session sent it); back to the first, only the difference.
    new_session(client, prompt=prompt_ids + backend.tokenize(b" 42", add_bos=False))
    assert spent() == len(prompt_ids) + len(backend.tokenize(b" 42", add_bos=False))
    step(client, sid)
    assert spent() == len(extra) + 3


def test_f16_and_int8_frames_decode_within_format_precision(client, backend, prompt_ids) -> None:
    sid = new_session(client, prompt=prompt_ids)
    exact = backend.topk(prompt_ids, 20, n_draft=3)
    f16 = step(client, sid, k=20, n_draft=3, fmt="f16")
    i8 = step(client, sid, k=20, n_draft=3, fmt="int8")
    for (tok, ids, lps), a, b in zip(exact, f16.positions, i8.positions):
        assert a.token == b.token == tok
        assert list(a.ids) == list(b.ids) == list(ids)
        np.testing.assert_allclose(a.logprobs, lps, rtol=2 ** -10, atol=1e-4)
        scale = -float(lps.min()) / 254
        assert np.abs(b.logprobs - lps).max() <= scale / 2 + 1e-6


def test_text_session_equals_id_session(client, backend, prompt_ids) -> None:
    text_sid = new_session(client, prompt_b64=base64.b64encode(PROMPT).decode())
    id_sid = new_session(client, prompt=prompt_ids)
    a, b = step(client, text_sid, k=20), step(client, id_sid, k=20)
    assert a.n_past == b.n_past == len(prompt_ids)
    assert a.positions[0].ids[0] == b.positions[0].ids[0]
    np.testing.assert_array_equal(a.positions[0].logprobs, b.positions[0].logprobs)
    # Appended bytes are re-tokenized with the committed text: "fib" + "onacci" is one token sequence
    more = b" fib"
    a = step(client, text_sid, append_b64=base64.b64encode(more).decode(), k=5)
    a = step(client, text_sid, append_b64=base64.b64encode(b"onacci(n").decode(), k=5)
    full = backend.tokenize(PROMPT + b" fibonacci(n")
    b = step(client, id_sid, append=full[len(prompt_ids):], k=5)
    assert a.n_past == b.n_past == len(full)
    assert list(a.positions[0].ids) == list(b.positions[0].ids)
    s = step(client, text_sid, score_b64=base64.b64encode(b" - 1)").decode(), k=3)
    assert [p.token for p in s.positions] == backend.tokenize(b" - 1)", add_bos=False) + [-1]


def test_vocab_frame(client, backend) -> None:
    r = client.get("/v1/floe/vocab", headers=AUTH)
    assert r.status_code == 200
    tokens, control, eog = protocol.decode_vocab(r.content)
    assert len(tokens) == backend.n_vocab == 49152
    assert r.headers["x-floe-fingerprint"] == protocol.vocab_fingerprint(r.content)
    fp = client.post("/v1/floe/sessions", json={"prompt": [1]}, headers=AUTH).json()["fingerprint"]
    assert fp == protocol.vocab_fingerprint(r.content)
    for t in backend.tokenize(PROMPT):
        assert tokens[t] == backend.token_bytes(t)
    assert eog[2] and control[2] and tokens[2] is None  # <|im_end|>


def test_completions_openai_shape(client, backend, ref, prompt_ids) -> None:
    backend.reset()
    prompt = PROMPT.decode()
    r = client.post("/v1/completions", headers=AUTH,
                    json={"model": "x", "prompt": prompt, "max_tokens": 4, "temperature": 0, "logprobs": 5})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "text_completion" and out["usage"]["prompt_tokens"] == len(prompt_ids)
    ch = out["choices"][0]
    lp = ch["logprobs"]
    greedy = ref_greedy(ref, prompt_ids, 4)
    assert lp["tokens"] == [backend.token_bytes(t).decode() for t in greedy]
    assert ch["text"] == "".join(lp["tokens"]) and ch["finish_reason"] == "length"
    assert lp["text_offset"][0] == len(prompt) and lp["text_offset"] == sorted(lp["text_offset"])
    for tok, tlp, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert len(top) <= 5 and max(top, key=top.get) == tok and top[tok] == pytest.approx(tlp)
    body = {"prompt": prompt, "max_tokens": 6, "temperature": 1.0, "seed": 7}
    a, b = (client.post("/v1/completions", json=body, headers=AUTH).json() for _ in range(2))
    assert a["choices"][0]["text"] == b["choices"][0]["text"] and a["choices"][0]["logprobs"] is None


# ----------------------------------------------------------------------------------------------------------------
# Security and limits

ROUTES = [("GET", "/v1/floe/vocab", None), ("POST", "/v1/floe/sessions", {"prompt": [1, 2]}),
          ("POST", "/v1/floe/sessions/x/step", {}), ("DELETE", "/v1/floe/sessions/x", None),
          ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 1})]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                                     {"Authorization": f"Basic {KEY}"}, {"Authorization": f"Bearer {KEY}x"}])
def test_every_route_but_health_needs_the_key(client, headers) -> None:
    assert client.get("/health", headers=headers).json()["status"] == "ok"
    for method, path, body in ROUTES:
        r = client.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (method, path)
        assert r.json()["error"]["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"


def _invalid_cases(prompt_ids: list[int]) -> list[tuple[str, str, Any, int, str]]:
    s = "{sid}"
    step_ = f"/v1/floe/sessions/{s}/step"
    long_text = base64.b64encode(b"word " * 2000).decode()
    return [
        ("POST", step_, {"k": 21}, 400, "invalid_request"),
        ("POST", step_, {"k": 0}, 400, "invalid_request"),
        ("POST", step_, {"k": "3"}, 400, "invalid_request"),
        ("POST", step_, {"k": True}, 400, "invalid_request"),
        ("POST", step_, {"n_draft": 17}, 400, "invalid_request"),
        ("POST", step_, {"n_draft": -1}, 400, "invalid_request"),
        ("POST", step_, {"append": [-1]}, 400, "bad_token"),
        ("POST", step_, {"append": [49152]}, 400, "bad_token"),
        ("POST", step_, {"append": [1.5]}, 400, "bad_token"),
        ("POST", step_, {"append": ["7"]}, 400, "bad_token"),
        ("POST", step_, {"append": [True]}, 400, "bad_token"),
        ("POST", step_, {"append": 5}, 400, "invalid_request"),
        ("POST", step_, {"score": list(range(17))}, 400, "too_long"),
        ("POST", step_, {"score": [5, 6], "n_draft": 2}, 400, "invalid_request"),
        ("POST", step_, {"append_b64": "aGk="}, 400, "invalid_request"),
        ("POST", step_, {"fmt": "f32"}, 400, "invalid_request"),
        ("POST", step_, {"bogus": 1}, 400, "invalid_request"),
        ("POST", step_, {"append": [5] * (N_CTX + 1 - len(prompt_ids))}, 400, "context_full"),
        ("POST", step_, {"append": [5] * (N_CTX - len(prompt_ids)), "n_draft": 1}, 400, "context_full"),
        ("POST", step_, "{not json", 400, "invalid_json"),
        ("POST", step_, "[1, 2]", 400, "invalid_json"),
        ("POST", step_, '{"k": NaN}', 400, "invalid_json"),
        ("POST", "/v1/floe/sessions/nope/step", {}, 404, "unknown_session"),
        ("DELETE", "/v1/floe/sessions/nope", None, 404, "unknown_session"),
        ("POST", "/v1/floe/sessions", {"prompt": [1] * (N_CTX + 1)}, 400, "too_long"),
        ("POST", "/v1/floe/sessions", {"prompt_b64": long_text}, 400, "context_full"),
        ("POST", "/v1/floe/sessions", {"prompt_b64": "not base64!"}, 400, "invalid_base64"),
        ("POST", "/v1/floe/sessions", {"prompt_b64": "aGk"}, 400, "invalid_base64"),
        ("POST", "/v1/floe/sessions", {"prompt": [1], "prompt_b64": "aGk="}, 400, "invalid_request"),
        ("POST", "/v1/floe/sessions", {}, 400, "invalid_request"),
        ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": -1}, 400, "invalid_request"),
        ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 10 ** 9}, 400, "invalid_request"),
        ("POST", "/v1/completions", {"prompt": "hi", "logprobs": 21}, 400, "invalid_request"),
        ("POST", "/v1/completions", {"prompt": "hi", "temperature": -1}, 400, "invalid_request"),
        ("POST", "/v1/completions", {"prompt": "hi", "echo": True}, 400, "unsupported"),
        ("POST", "/v1/completions", {"prompt": "hi", "n": 2}, 400, "unsupported"),
        ("POST", "/v1/completions", {"prompt": 5}, 400, "invalid_request"),
        ("POST", "/v1/completions", {"prompt": "word " * 600, "max_tokens": 1}, 400, "context_full"),
        ("GET", "/v1/nothing", None, 404, "not_found"),
    ]


def test_bad_requests_get_clear_4xx_and_the_server_stays_healthy(client, prompt_ids) -> None:
    sid = new_session(client, prompt=prompt_ids)
    for method, path, body, status, code in _invalid_cases(prompt_ids):
        kw = {"content": body} if isinstance(body, str) else {"json": body}
        r = client.request(method, path.replace("{sid}", sid), headers=AUTH, **kw)
        assert r.status_code == status, (path, body, r.text)
        err = r.json()["error"]
        assert err["code"] == code and err["message"], (path, body, err)
    assert client.get("/health").json()["status"] == "ok"
    frame = step(client, sid, k=3, n_draft=1)  # the session is untouched by the failed steps
    assert frame.n_past == len(prompt_ids) and len(frame.positions) == 2


def test_body_cap_by_length_and_by_streamed_size(backend) -> None:
    app = create_app(backend, api_key=KEY)
    pulled = []

    async def body(n_chunks: int, size: int = 64 * 1024):
        for i in range(n_chunks):
            pulled.append(i)
            yield b"x" * size

    async def run() -> tuple[Any, Any]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            by_length = await c.post("/v1/floe/sessions", headers={**AUTH, "content-length": str(10 << 20)},
                                     content=body(160))
            n_length = len(pulled)
            streamed = await c.post("/v1/floe/sessions", headers=AUTH, content=body(160))
            return (by_length, n_length), (streamed, len(pulled) - n_length)

    (by_length, n1), (streamed, n2) = asyncio.run(run())
    assert by_length.status_code == streamed.status_code == 413
    assert by_length.json()["error"]["code"] == "body_too_large"
    assert n1 <= 1          # refused on its Content-Length: (almost) nothing read
    assert n2 <= 2          # refused as soon as the count passed 64 KiB, not after 10 MB


def test_sessions_per_key_and_owner(backend, prompt_ids) -> None:
    c = TestClient(create_app(backend, api_key=[KEY, "other-key"], limits=Limits(max_sessions_per_key=2)))
    other = {"Authorization": "Bearer other-key"}
    sids = [new_session(c, prompt=prompt_ids) for _ in range(2)]
    r = c.post("/v1/floe/sessions", json={"prompt": prompt_ids}, headers=AUTH)
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_sessions"
    assert c.post("/v1/floe/sessions", json={"prompt": [1]}, headers=other).status_code == 200  # own quota
    assert c.post(f"/v1/floe/sessions/{sids[0]}/step", json={}, headers=other).status_code == 404  # not theirs
    assert c.delete(f"/v1/floe/sessions/{sids[0]}", headers=AUTH).json() == {"closed": True}
    assert c.post(f"/v1/floe/sessions/{sids[0]}/step", json={}, headers=AUTH).status_code == 404
    new_session(c, prompt=prompt_ids)  # room again


def test_idle_sessions_expire(backend) -> None:
    c = TestClient(create_app(backend, api_key=KEY, limits=Limits(idle_expiry_s=0.2, max_sessions_per_key=1)))
    sid = new_session(c, prompt=[1, 2, 3])
    assert c.post("/v1/floe/sessions", json={"prompt": [1]}, headers=AUTH).status_code == 429
    time.sleep(0.3)
    r = c.post(f"/v1/floe/sessions/{sid}/step", json={}, headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_session"
    new_session(c, prompt=[1])  # the expired one no longer counts


def test_health_answers_during_a_long_step(backend) -> None:
    app = create_app(backend, api_key=KEY)
    long_prompt = backend.tokenize(b"x = 1\n" * 40)  # about 160 tokens: a few hundred ms
    backend.reset()

    async def run() -> tuple[float, float, int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            t0 = time.perf_counter()
            long = asyncio.create_task(c.post("/v1/floe/sessions", json={"prompt": long_prompt}, headers=AUTH))
            await asyncio.sleep(0.02)
            h = await c.get("/health")
            t_health = time.perf_counter() - t0
            assert not long.done() and h.json()["status"] == "ok"
            r = await long
            return t_health, time.perf_counter() - t0, r.status_code

    t_health, t_long, status = asyncio.run(run())
    assert status == 200 and t_health < t_long


class FakeBackend:
    """Duck-typed backend: a 'model' whose next token is always (last + 1) % 10."""

    name, n_vocab, n_ctx = "fake", 10, 64

    def __init__(self, fail: bool = False, delay: float = 0.0) -> None:
        self.fail, self.delay = fail, delay

    def vocab_frame(self) -> bytes:
        return protocol.encode_vocab([str(i).encode() for i in range(10)], [False] * 10, [False] * 10)

    def tokenize(self, text: bytes, add_bos: bool = True) -> list[int]:
        return [int(c) for c in text.decode() if c.isdigit()]

    def token_bytes(self, id: int) -> bytes:
        return str(id).encode()

    def is_eog(self, id: int) -> bool:
        return False

    def _row(self, last: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        return np.array([(last + 1 + i) % 10 for i in range(k)]), np.array([-0.1 * (i + 1) for i in range(k)])

    def topk(self, tokens: Sequence[int], k: int, n_draft: int = 0, score: Sequence[int] = ()) -> list:
        if self.fail:
            raise RuntimeError("secret prompt content must not leak")
        time.sleep(self.delay)
        out, last = [], tokens[-1]
        for j in range(n_draft + len(score)):
            ids, lps = self._row(last, k)
            tok = int(score[j]) if score else int(ids[0])
            out.append((tok, ids, lps))
            last = tok
        return out + [(-1, *self._row(last, k))]

    def generate(self, tokens: Sequence[int], max_tokens: int, k: int, temperature: float = 0.0,
                 seed: Optional[int] = None) -> list:
        return [(t, ids, lps) for t, ids, lps in self.topk(tokens, max(k, 1), n_draft=max_tokens)[:-1]]


def test_duck_typed_backend_and_model_errors(caplog) -> None:
    c = TestClient(create_app(FakeBackend(), api_key=KEY))
    sid = new_session(c, prompt=[3])
    frame = step(c, sid, k=2, n_draft=3)
    assert [p.token for p in frame.positions] == [4, 5, 6, -1]
    out = c.post("/v1/completions", json={"prompt": "1", "max_tokens": 3, "logprobs": 1}, headers=AUTH).json()
    assert out["choices"][0]["text"] == "234"
    bad = TestClient(create_app(FakeBackend(fail=True), api_key=KEY))
    with caplog.at_level(logging.DEBUG):
        r = bad.post("/v1/floe/sessions", json={"prompt": [3]}, headers=AUTH)
    assert r.status_code == 500 and r.json()["error"]["code"] == "model_error"
    assert "secret" not in caplog.text and "secret" not in r.text
    assert bad.get("/health").json()["status"] == "ok"


def test_overload_is_503_then_passes_again() -> None:
    app = create_app(FakeBackend(delay=0.3), api_key=KEY, limits=Limits(max_queue=1))

    async def run() -> tuple[list[int], int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            posts = [c.post("/v1/floe/sessions", json={"prompt": [1]}, headers=AUTH) for _ in range(2)]
            both = await asyncio.gather(*posts)
            after = await c.post("/v1/floe/sessions", json={"prompt": [1]}, headers=AUTH)
            return sorted(r.status_code for r in both), after.status_code

    both, after = asyncio.run(run())
    assert both == [200, 503] and after == 200


# ----------------------------------------------------------------------------------------------------------------
# Real HTTP: the background-thread server, TLS, the CLI

def test_cloud_server_over_http_with_raw_oversized_request(backend, prompt_ids, caplog) -> None:
    with caplog.at_level(logging.DEBUG), CloudServer(backend, port=0, api_key=KEY) as s:
        assert s.url.startswith("http://127.0.0.1:") and s.port > 0
        with httpx.Client(base_url=s.url, headers=AUTH, timeout=30) as c:
            sid = c.post("/v1/floe/sessions", json={"prompt": prompt_ids}).json()["session"]
            frame = protocol.decode_step(c.post(f"/v1/floe/sessions/{sid}/step", json={"k": 4}).content)
            assert frame.n_past == len(prompt_ids)
        # 10 MB announced, nothing sent: the answer comes at once, without waiting for the body.
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
            sock.sendall(b"POST /v1/floe/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                         + b"\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\n\r\n{")
            assert sock.recv(4096).startswith(b"HTTP/1.1 413")
        with httpx.Client(base_url=s.url) as c:  # no Nagle / delayed-ACK stall (that would be >= 40 ms each)
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                assert c.get("/health").json()["status"] == "ok"
                times.append(time.perf_counter() - t0)
            assert sorted(times)[2] < 0.030
        thread = s._thread
    assert thread is not None and not thread.is_alive()  # clean shutdown
    assert not [r for r in caplog.records if r.name.startswith("uvicorn.access")]
    assert "logprob" not in caplog.text.lower() and "fibonacci" not in caplog.text


def _self_signed(tmp_path) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("needs the `cryptography` package or the openssl command to make a self-signed cert")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        return str(cert), str(key)
    import ipaddress

    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
         .sign(k, hashes.SHA256()))
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return str(cert), str(key)


def test_tls(tmp_path) -> None:
    cert, key = _self_signed(tmp_path)
    with CloudServer(FakeBackend(), api_key=KEY, tls_cert=cert, tls_key=key) as s:
        assert s.url.startswith("https://")
        import ssl

        ctx = ssl.create_default_context(cafile=cert)
        assert httpx.get(s.url + "/health", verify=ctx).json()["model"] == "fake"
        r = httpx.post(s.url + "/v1/floe/sessions", json={"prompt": [1]}, headers=AUTH, verify=ctx)
        assert r.status_code == 200
        with pytest.raises(httpx.ConnectError):  # an unverified certificate is refused
            httpx.get(s.url + "/health")


def test_cli_serve(smollm2_path) -> None:
    parser = argparse.ArgumentParser()
    register_serve(parser.add_subparsers())
    args = parser.parse_args(["serve", "--model", "m"])
    assert (args.host, args.max_k, args.max_sessions_per_key, args.idle_expiry_s, args.max_body_bytes) == \
        ("127.0.0.1", 20, 8, 300.0, 65536) and callable(args.func)
    code = ("import argparse, sys; from floe_edge.cli.cloud import register_serve; p = argparse.ArgumentParser(); "
            "register_serve(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--model", str(smollm2_path), "--port", "0",
                             "--ctx", "256", "--threads", "1", "--api-key", KEY, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["n_vocab"] == 49152 and info["auth"] is True
        assert httpx.get(info["url"] + "/health", timeout=10).json()["status"] == "ok"
        assert httpx.get(info["url"] + "/v1/floe/vocab", timeout=10).status_code == 401
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "logprob" not in proc.stderr.read().lower()
