"""The device's side of cloud knowledge: FloeCloudBackend.open(knowledge=...) over real HTTP to `floe cloud serve`
(a byte-level fake model, tests/knowledge_fakes.py, and the real SmolLM2-135M), reopened sessions asking for the same
entry, HybridGenerator passing the id through, and no reply carrying the entry's text."""
from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from floe_edge.cloud import CloudHTTPError, FloeCloudBackend, OpenAICompletionsBackend  # noqa: E402
from floe_edge.cloud import protocol  # noqa: E402
from floe_edge.cloud.knowledge import KnowledgeBase, KnowledgeEntry, knowledge_id  # noqa: E402
from floe_edge.cloud.server import CloudServer, create_app  # noqa: E402
from knowledge_fakes import BOS, ENTRIES, ByteModel, kb  # noqa: E402

KEY = "knowledge-link-key"
QUESTION = b"In short, the capital of Aland="
PREFIX = ENTRIES[0].text.encode() + b"\n\n"


def soon(s: float = 5.0) -> float:
    return time.monotonic() + s


def spy(link: Any) -> tuple[list[Any], list[bytes]]:
    """Record the JSON of every request the link sends and the body of every reply it gets."""
    sent: list[Any] = []
    received: list[bytes] = []
    call, once = link.transport.call, link.transport._once

    async def spy_call(method: str, path: str, **kw: Any) -> Any:
        sent.append((method, path, kw.get("json")))
        return await call(method, path, **kw)

    async def spy_once(*a: Any, **kw: Any) -> Any:
        reply = await once(*a, **kw)
        received.append(reply.content)
        return reply

    link.transport.call, link.transport._once = spy_call, spy_once
    return sent, received


def creates(sent: list[Any]) -> list[dict[str, Any]]:
    return [body for method, path, body in sent if path == "/v1/floe/sessions"]


def no_runs_of(text: str, bodies: list[bytes], n: int = 12) -> bool:
    data = text.encode()
    return not any(data[i: i + n] in b for i in range(len(data) - n + 1) for b in bodies)


@pytest.fixture
def server():
    model = ByteModel()
    with CloudServer(model, api_key=KEY, knowledge=kb()) as s:
        s.model = model
        yield s


def delete_session(server: Any, link: FloeCloudBackend) -> None:
    """The server loses the session (as an expiry or a restart would)."""
    assert link._session is not None
    r = httpx.delete(f"{server.url}/v1/floe/sessions/{link._session.sid}", headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 200


@pytest.mark.parametrize("same_vocab", [None, False], ids=["ids", "text"])
def test_link_names_the_entry_and_a_reopened_session_too(server: Any, tmp_path: Path, same_vocab: Any) -> None:
    edge = ByteModel()
    link = FloeCloudBackend(server.url, edge, api_key=KEY, same_vocab=same_vocab, cache_dir=tmp_path)
    sent, received = spy(link)

    async def go() -> None:
        async with link:
            await link.open(edge.tokenize(QUESTION), QUESTION, knowledge="aland")
            first = await link.step([], b"", k=4, deadline=soon())
            assert int(first.evidence[0].ids[0]) == ord("Q") and link.knowledge_used == "aland"
            delete_session(server, link)
            accepted = list(b"Q, and its river is the")
            again = await link.step(accepted, bytes(accepted), k=4, deadline=soon())
            assert link.stats.reopened == 1 and again.evidence[0] is not None
            assert int(again.evidence[0].ids[0]) == ByteModel.next_token(server.model.seen[-1])

    asyncio.run(go())
    assert link.mode == ("ids" if same_vocab is None else "text")
    assert [b.get("knowledge") for b in creates(sent)] == ["aland", "aland"]
    assert server.model.seen[-1] == [BOS, *PREFIX, *QUESTION, *b"Q, and its river is the"]
    assert no_runs_of(ENTRIES[0].text, received) and len(received) >= 5


def test_a_lost_answer_is_resent_and_applied_once(server: Any, tmp_path: Path) -> None:
    """The server applies an append, its answer is lost: the link resends it with its base (its own count, not the
    entry's), the server skips what it has, and the next step's n_past agrees with the link's."""
    from floe_edge.cloud.errors import CloudConnectionError

    edge = ByteModel()
    link = FloeCloudBackend(server.url, edge, api_key=KEY, cache_dir=tmp_path)
    once = link.transport._once
    lose: list[int] = []
    steps: list[Any] = []

    async def lossy(method: str, path: str, body: Any, *a: Any, **kw: Any) -> Any:
        reply = await once(method, path, body, *a, **kw)
        if path.endswith("/step"):
            steps.append((body.get("append"), body.get("base"), reply.status))
        if path.endswith("/step") and lose:
            lose.pop()
            raise CloudConnectionError("lost after the server applied it", maybe_delivered=True)
        return reply

    link.transport._once = lossy
    accepted = list(b"Q, river")

    async def go() -> None:
        async with link:
            await link.open(edge.tokenize(QUESTION), QUESTION, knowledge="aland")
            await link.step([], b"", k=1, deadline=soon())
            lose.append(1)
            first = await link.step(accepted, bytes(accepted), k=1, deadline=soon())
            assert not lose and link.stats.reopened == 0 and first.evidence[0] is not None
            await link.step(list(b" is"), b" is", k=1, deadline=soon())  # n_past checked by the link
            assert link._session is not None and link._session.n_past == 1 + len(QUESTION) + len(accepted) + 3

    asyncio.run(go())
    n = 1 + len(QUESTION)
    assert steps == [(None, None, 200), (accepted, n, 200), (accepted, n, 200), (list(b" is"), n + len(accepted), 200)]
    assert server.model.seen[-1] == [BOS, *PREFIX, *QUESTION, *accepted, *b" is"]


def test_a_retrieved_entry_stays_the_sessions_entry(server: Any, tmp_path: Path) -> None:
    """No id named: the server retrieves from the prompt and names the entry; a reopened session, whose prompt now
    holds the answer so far (here about another entry), asks for that same entry."""
    edge = ByteModel()
    link = FloeCloudBackend(server.url, edge, api_key=KEY, cache_dir=tmp_path)
    sent, _ = spy(link)
    accepted = list(b"Q. But Bland has the river Zee and mountain Zop")
    assert KnowledgeBase(ENTRIES).retrieve((QUESTION + bytes(accepted)).decode()).id == "bland"

    async def go() -> None:
        async with link:
            await link.open(edge.tokenize(QUESTION), QUESTION)
            await link.step([], b"", k=1, deadline=soon())
            assert link.knowledge_used == "aland"
            delete_session(server, link)
            await link.step(accepted, bytes(accepted), k=1, deadline=soon())
            await link.open(edge.tokenize(b"nothing here"), b"nothing here")  # a new generation retrieves again
            await link.step([], b"", k=1, deadline=soon())
            assert link.knowledge_used is None
            delete_session(server, link)
            await link.step(list(b" Bland Zee Zop"), b" Bland Zee Zop", k=1, deadline=soon())

    asyncio.run(go())
    assert [b.get("knowledge", "-") for b in creates(sent)] == ["-", "aland", "-", None]
    assert server.model.seen[-1] == [BOS, *b"nothing here Bland Zee Zop"]  # null: still no entry


def test_unknown_or_bad_ids(server: Any, tmp_path: Path) -> None:
    edge = ByteModel()
    link = FloeCloudBackend(server.url, edge, api_key=KEY, cache_dir=tmp_path)

    async def go() -> None:
        async with link:
            with pytest.raises(CloudHTTPError) as exc:
                await link.open(edge.tokenize(QUESTION), QUESTION, knowledge="dland")
            assert (exc.value.status, exc.value.code) == (404, "unknown_knowledge")
            for bad in ("", "x" * 129, 7):
                with pytest.raises(ValueError, match="knowledge"):
                    await link.open(edge.tokenize(QUESTION), QUESTION, knowledge=bad)  # type: ignore[arg-type]
        openai = OpenAICompletionsBackend(server.url, edge)
        with pytest.raises(ValueError, match="no knowledge base"):
            await openai.open([], b"x", knowledge="aland")
        await openai.open([], b"x")  # None is fine
        await openai.close()

    asyncio.run(go())
    assert not server.model.seen or server.model.seen[-1][: len(PREFIX) + 1] != [BOS, *PREFIX]


# ----------------------------------------------------------------------------------------------------------------
# The real model

REAL = KnowledgeEntry("floe", "Floe project facts: the secret code word of the Floe project is 'marmalade'.")
REAL_PROMPT = b"Q: What is the secret code word of the Floe project?\nA: The secret code word is '"


@pytest.fixture(scope="module")
def llama(smollm2_path: Path) -> Any:
    from floe_edge.cloud.backend import LlamaBackend

    b = LlamaBackend(smollm2_path, n_ctx=512, n_threads=1)
    yield b
    b.close()


def test_real_model_reads_the_entry(llama: Any) -> None:
    """SmolLM2 answers the question from the entry only when the session reads it; a session reading it gives the
    same top-k as one whose prompt spells the entry out (ids: the entry's tokens in front; text: its bytes)."""
    base = KnowledgeBase([REAL, KnowledgeEntry("other", "Unrelated: the tide tables of Brest.")])
    c = TestClient(create_app(llama, api_key=KEY, knowledge=base))
    auth = {"Authorization": f"Bearer {KEY}"}

    def top(body: dict[str, Any], **step: Any) -> tuple[protocol.StepFrame, dict[str, Any]]:
        s = c.post("/v1/floe/sessions", json=body, headers=auth).json()
        r = c.post(f"/v1/floe/sessions/{s['session']}/step", json={"k": 8, **step}, headers=auth)
        assert r.status_code == 200, r.text
        return protocol.decode_step(r.content, n_vocab=llama.n_vocab), s

    ids = llama.tokenize(REAL_PROMPT)
    spelled = llama.tokenize(REAL.text.encode() + b"\n\n", False) + ids  # SmolLM2 adds no BOS
    with_kb, s = top({"prompt": ids, "knowledge": "floe"}, n_draft=3)
    without, _ = top({"prompt": ids, "knowledge": None}, n_draft=3)
    reference, _ = top({"prompt": spelled, "knowledge": None}, n_draft=3)
    assert s["knowledge"] == "floe" and s["n_past"] == len(ids) == with_kb.n_past
    answer = b"".join(llama.token_bytes(p.token) for p in with_kb.positions[:-1])
    assert answer.startswith(b"marm"), answer
    assert b"marm" not in b"".join(llama.token_bytes(p.token) for p in without.positions[:-1])
    for a, b in zip(with_kb.positions, reference.positions):
        assert list(a.ids) == list(b.ids)
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=2e-3)
    retrieved, s = top({"prompt": ids}, n_draft=3)  # no id: retrieved from the prompt's words
    assert s["knowledge"] == "floe" and [p.token for p in retrieved.positions] == [p.token for p in
                                                                                    with_kb.positions]
    text, s = top({"prompt_b64": base64.b64encode(REAL_PROMPT).decode(), "knowledge": "floe"})
    text_ref, _ = top({"prompt_b64": base64.b64encode(REAL.text.encode() + b"\n\n" + REAL_PROMPT).decode(),
                       "knowledge": None})
    assert list(text.positions[0].ids) == list(text_ref.positions[0].ids)
    assert s["n_past"] == len(llama.tokenize(REAL_PROMPT)) and text.n_past == s["n_past"]


def test_hybrid_generator_passes_the_id(smollm2_path: Path, tmp_path: Path) -> None:
    from floe_edge import NativeSLM
    from floe_edge.hybrid import HybridGenerator

    data = tmp_path / "kb.jsonl"
    data.write_text(f'{{"id": "{knowledge_id(REAL.text)}", "text": "{REAL.text}"}}\n')
    entry = knowledge_id(REAL.text)
    prompt = REAL_PROMPT.decode()
    with CloudServer(smollm2_path, api_key=KEY, n_ctx=512, knowledge=KnowledgeBase.load(data)) as server, \
            NativeSLM(smollm2_path, n_ctx=512) as edge:
        link = FloeCloudBackend(server.url, edge.tokenizer, api_key=KEY, cache_dir=tmp_path)
        with HybridGenerator(edge, link, deadline_ms=2000) as gen:
            _, received = spy(link)
            text = "".join(t.text for t in gen.generate_cloud_only(prompt, 4, knowledge=entry))
            assert text.startswith("marm") and link.knowledge_used == entry, text

            def session_entry() -> Any:  # the session may still be opening when a short generation ends
                assert gen.parts.io is not None
                gen.parts.io.run(link.step([], b"", k=1, deadline=soon()))
                return link.knowledge_used

            hybrid = [t for t in gen.generate(prompt, 6, knowledge=entry) if t.id >= 0]
            s = gen.last_stats  # fused tokens may end the text early: the cloud's evidence depends on timing
            assert (len(hybrid) == 6 or s.finish_reason == "eog") and s.cloud_errors == 0 and session_entry() == entry
            assert len([t for t in gen.generate(prompt, 4) if t.id >= 0]) == 4 or gen.last_stats.finish_reason == "eog"
            assert session_entry() == entry  # no id: retrieved from the prompt
        assert no_runs_of(REAL.text, received) and len(received) >= 3
        with HybridGenerator(edge, None) as alone, pytest.raises(ValueError, match="no cloud"):
            alone.generate(prompt, 2, knowledge=entry)
        openai = OpenAICompletionsBackend(server.url, edge.tokenizer)
        with HybridGenerator(edge, openai) as gen, pytest.raises(ValueError, match="OpenAICompletionsBackend"):
            gen.generate_cloud_only(prompt, 2, knowledge=entry)


# ----------------------------------------------------------------------------------------------------------------
# The command line

def test_cli_knowledge(smollm2_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`floe cloud serve --knowledge FILE` (a bad file fails at once, naming its line) and `floe generate
    --knowledge ID` (only with a floe cloud)."""
    import json

    from floe_edge.cli import main
    from floe_edge.cloud.local import LocalCloud

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\n{"id": "a", "text": "again"}\n')
    assert main(["cloud", "serve", "--model", "no-such-model", "--knowledge", str(bad)]) == 2
    assert f"{bad}:2: duplicate id 'a'" in capsys.readouterr().err
    for extra in ([], ["--cloud", "http://127.0.0.1:9", "--openai"]):
        assert main(["generate", "--prompt", "x", "--knowledge", "a", *extra]) == 2
        assert "--knowledge" in capsys.readouterr().err
    kb_file = tmp_path / "kb.jsonl"
    kb_file.write_text(json.dumps({"id": "floe", "text": REAL.text}) + "\n")
    with LocalCloud(smollm2_path, n_ctx=512, extra_args=["--knowledge", str(kb_file)]) as cloud:
        assert cloud.info["knowledge_entries"] == 1
        monkeypatch.setenv("FLOE_API_KEY", cloud.api_key)
        assert main(["generate", "--model", str(smollm2_path), "--cloud", cloud.url, "--knowledge", "floe",
                     "--prompt", REAL_PROMPT.decode(), "-n", "4", "--ctx", "512", "--deadline-ms", "3000",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["tokens"] == 4 and out["cloud_errors"] == 0, out
