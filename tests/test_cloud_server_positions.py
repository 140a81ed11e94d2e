"""`floe cloud serve` returning only the positions a device asks for: `want` by position, `want_bytes` by byte
offset into a text session's scored text, and the first position along with a session's open (`k`), each against
llama-cpp-python's own log-softmax (fixtures and helpers: test_cloud_server)."""
# ruff: noqa: F811  (the fixtures imported below are what the tests' arguments name)
from __future__ import annotations

import base64

import numpy as np
import pytest

pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("llama_cpp")

from floe_edge.cloud import protocol  # noqa: E402
from test_cloud_server import (AUTH, PROMPT, assert_matches, backend, client, new_session, prompt_ids,  # noqa: E402,F401
                               ref, ref_logprobs, step)


def test_want_returns_only_the_asked_positions(client, backend, ref, prompt_ids) -> None:
    """`want`: the device asks for the positions where its edge is unsure; the rest come back empty (and skip the
    output layer), the asked ones equal to a full scoring."""
    score = backend.tokenize(b" fibonacci(n - 1) + fib", add_bos=False)
    backend.reset()
    sid = new_session(client, prompt=prompt_ids)
    frame = step(client, sid, k=10, score=score, want=[0, 3])
    assert [p.token for p in frame.positions] == score + [-1]
    assert [len(p.ids) for p in frame.positions] == [10 if j in (0, 3) else 0 for j in range(len(score) + 1)]
    lp = ref_logprobs(ref, [prompt_ids, score])
    for j in (0, 3):
        assert_matches(frame.positions[j], lp[len(prompt_ids) - 1 + j], 10)
    for bad in ([len(score) + 1], [1, 1], ["0"]):
        r = client.post(f"/v1/floe/sessions/{sid}/step", json={"score": score, "want": bad}, headers=AUTH)
        assert r.status_code == 400 and "want" in r.json()["error"]["message"]


def test_open_with_k_brings_the_first_position(client, backend, ref, prompt_ids) -> None:
    """A session opened with k answers with the top-k after the prompt (what the first step would return), in the
    format asked for; without k, no such field; a bad k or fmt is a 400 before any model time."""
    for fmt in ("f16", "int8"):
        r = client.post("/v1/floe/sessions", json={"prompt": prompt_ids, "k": 10, "fmt": fmt}, headers=AUTH)
        assert r.status_code == 200, r.text
        first = protocol.decode_step(base64.b64decode(r.json()["first_b64"]), n_vocab=49152)
        assert first.n_past == len(prompt_ids) and len(first.positions) == 1 and first.positions[0].token == -1
        again = step(client, r.json()["session"], k=10, fmt=fmt).positions[0]
        assert list(first.positions[0].ids) == list(again.ids)
        np.testing.assert_allclose(first.positions[0].logprobs, again.logprobs, atol=1e-3)
    assert "first_b64" not in client.post("/v1/floe/sessions", json={"prompt": prompt_ids}, headers=AUTH).json()
    for bad in ({"k": 0}, {"k": "8"}, {"k": 8, "fmt": "f32"}, {"k": 8, "fmt": ["f16"]}):
        r = client.post("/v1/floe/sessions", json={"prompt": prompt_ids, **bad}, headers=AUTH)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text


def test_want_bytes_finds_the_servers_own_positions(client, backend, ref, prompt_ids) -> None:
    """A text session's scored text with `want_bytes`: the positions at those byte offsets (in the server's own
    tokenization) come back as a full scoring has them, the rest empty; an offset inside a token asks for nothing."""
    text = b" fibonacci(n - 1) + fib"
    score = backend.tokenize(text, add_bos=False)
    pieces = [backend.token_bytes(t) for t in score]
    starts = [sum(len(p) for p in pieces[:j]) for j in range(len(score) + 1)]
    sid = new_session(client, prompt_b64=base64.b64encode(PROMPT).decode())
    inside = starts[1] + 1  # within the second token: no position starts there
    assert inside not in starts
    frame = step(client, sid, k=10, score_b64=base64.b64encode(text).decode(),
                 want_bytes=[0, starts[3], inside, starts[-1]])
    asked = {0, 3, len(score)}
    assert [len(p.ids) for p in frame.positions] == [10 if j in asked else 0 for j in range(len(score) + 1)]
    lp = ref_logprobs(ref, [prompt_ids, score])
    for j in asked:
        assert_matches(frame.positions[j], lp[len(prompt_ids) - 1 + j], 10)
