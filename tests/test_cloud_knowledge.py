"""The cloud's knowledge base (floe_edge.cloud.knowledge) and `floe cloud serve` sessions that read it, against a
byte-level fake model that answers from an entry only when the entry is in front of the prompt
(tests/knowledge_fakes.py). The device side (FloeCloudBackend, HybridGenerator) and the real model are in
tests/test_cloud_knowledge_link.py."""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from floe_edge.cloud import knowledge as K  # noqa: E402
from floe_edge.cloud import protocol  # noqa: E402
from floe_edge.cloud.knowledge import (KnowledgeBase, KnowledgeEntry, KnowledgeError, UnknownKnowledge,  # noqa: E402
                                       knowledge_id)
from floe_edge.cloud.server import Limits, create_app  # noqa: E402
from floe_edge.data import generate, read_dataset  # noqa: E402
from knowledge_fakes import BOS, ENTRIES, UNKNOWN, ByteModel, kb  # noqa: E402

KEY = "knowledge-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUESTION = b"In short, the capital of Aland="
PREFIX = ENTRIES[0].text.encode() + b"\n\n"


# ----------------------------------------------------------------------------------------------------------------
# The knowledge base

def test_knowledge_id_is_the_sha256_prefix() -> None:
    text = "Device APIs:\nLumo lamps: lu_dim(<id>, <percent>) \u00e9"
    assert knowledge_id(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    assert len(knowledge_id("x")) == 16 and knowledge_id("x") != knowledge_id("y")


def test_load_jsonl_and_lookup(tmp_path: Path) -> None:
    path = tmp_path / "kb.jsonl"
    path.write_text("".join(json.dumps({"id": e.id, "text": e.text}) + "\n" for e in ENTRIES))
    base = KnowledgeBase.load(path)
    assert len(base) == 3 and [e.id for e in base] == ["aland", "bland", "cland"]
    assert base.lookup("bland") == ENTRIES[1] and "cland" in base and "dland" not in base
    with pytest.raises(UnknownKnowledge, match="dland") as exc:
        base.lookup("dland")
    assert not isinstance(exc.value, KeyError)  # a clear error type, not a bare KeyError


def test_load_personal_data_folder_and_file(tmp_path: Path) -> None:
    """Section 9 data: each distinct non-empty cloud_context is an entry named by knowledge_id."""
    generate(tmp_path / "d", users=2, seed=3, train_per_task=2, test_per_task=2)
    train, test = read_dataset(tmp_path / "d")
    contexts = list(dict.fromkeys(r.cloud_context for r in [*train, *test] if r.cloud_context))
    base = KnowledgeBase.load(tmp_path / "d")
    assert [e.id for e in base] == [knowledge_id(c) for c in contexts]
    for r in test:
        assert base.lookup(knowledge_id(r.cloud_context)).text == r.cloud_context
    one = KnowledgeBase.load(tmp_path / "d" / "test.jsonl")
    assert len(one) == len(dict.fromkeys(r.cloud_context for r in test if r.cloud_context))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "test.jsonl").write_text(json.dumps(test[0].to_json()) + "\n{\n")
    with pytest.raises(KnowledgeError, match=r"test.jsonl:2: not JSON"):
        KnowledgeBase.load(tmp_path / "bad")


BAD_LINES = [
    (b"{", "not JSON"),
    (b"   ", "blank line"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"id": "a"}', "missing ['text']"),
    (b'{"id": "a", "text": "t", "extra": 1}', "unknown ['extra']"),
    (b'{"id": 7, "text": "t"}', "id must be a string"),
    (b'{"id": "", "text": "t"}', "id must be a string"),
    (json.dumps({"id": "x" * 129, "text": "t"}).encode(), "1..128 characters"),
    (b'{"id": "a\\nb", "text": "t"}', "control characters"),
    (b'{"id": "a", "text": "  "}', "non-empty"),
    (b'{"id": "a", "text": 3}', "non-empty string"),
    (b'{"id": "a", "text": "\\ud800"}', "lone surrogates"),
    (json.dumps({"id": "a", "text": "x" * (K.MAX_TEXT_BYTES + 1)}).encode(), "at most 32768"),
    (b'{"id": "a", "text": "\xff"}', "not UTF-8"),
    (b'{"id": "a", "text": "t"}', "duplicate id 'a'"),
]


@pytest.mark.parametrize("line,message", BAD_LINES, ids=[m for _, m in BAD_LINES])
def test_loader_errors_name_file_and_line(tmp_path: Path, line: bytes, message: str) -> None:
    path = tmp_path / "kb.jsonl"
    path.write_bytes(b'{"id": "a", "text": "fine"}\n' + line + b"\n")
    with pytest.raises(KnowledgeError) as exc:
        KnowledgeBase.load(path)
    assert str(exc.value).startswith(f"{path}:2: ") and message in str(exc.value), str(exc.value)


def test_loader_bounds_and_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KnowledgeError, match="no such file"):
        KnowledgeBase.load(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(KnowledgeError, match="no entries"):
        KnowledgeBase.load(tmp_path / "empty.jsonl")
    monkeypatch.setattr(K, "MAX_ENTRIES", 2)
    with pytest.raises(KnowledgeError, match="more than 2 entries"):
        KnowledgeBase(ENTRIES)
    monkeypatch.setattr(K, "MAX_FILE_BYTES", 10)
    (tmp_path / "big.jsonl").write_text('{"id": "a", "text": "0123456789"}\n')
    with pytest.raises(KnowledgeError, match="at most 10 allowed"):
        KnowledgeBase.load(tmp_path / "big.jsonl")


def test_retrieve_picks_the_entry_sharing_rare_words() -> None:
    base = kb()
    assert base.retrieve("What is the capital of Aland?") == ENTRIES[0]
    assert base.retrieve("rivers: is the Zee near mountain Zop") == ENTRIES[1]
    assert base.retrieve("WOOL from cland") == ENTRIES[2]  # case-insensitive
    # words every entry holds (capital, facts) or stop words do not pick one; nor do words none holds
    assert base.retrieve("the capital facts of it") is None
    assert base.retrieve("completely unrelated sentence") is None
    assert base.retrieve("") is None
    # ties go to the entry loaded first, every time
    twins = KnowledgeBase([KnowledgeEntry("b", "zebra yak"), KnowledgeEntry("a", "yak zebra"),
                           KnowledgeEntry("c", "other words")])
    assert {twins.retrieve("yak zebra").id for _ in range(5)} == {"b"}
    assert twins.retrieve("yak zebra", min_score=100.0) is None


# ----------------------------------------------------------------------------------------------------------------
# Sessions reading an entry (the fake model, in process)

def app_client(model: ByteModel, base: Any = "default", **limits: Any) -> TestClient:
    return TestClient(create_app(model, api_key=KEY, limits=Limits(max_sessions_per_key=64, **limits),
                                 knowledge=kb() if base == "default" else base))


def create(c: TestClient, status: int = 200, **body: Any) -> dict[str, Any]:
    r = c.post("/v1/floe/sessions", json=body, headers=AUTH)
    assert r.status_code == status, r.text
    return r.json()


def step(c: TestClient, sid: str, status: int = 200, **body: Any) -> Any:
    r = c.post(f"/v1/floe/sessions/{sid}/step", json=body, headers=AUTH)
    assert r.status_code == status, r.text
    return protocol.decode_step(r.content, n_vocab=257) if status == 200 else r.json()["error"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_named_entry_reaches_the_model_but_not_the_accounting() -> None:
    """Id session: the model reads BOS, the entry, a blank line, the prompt; n_past and `base` count the prompt."""
    m = ByteModel()
    c = app_client(m)
    prompt = [BOS, *QUESTION]
    plain = create(c, prompt=prompt, knowledge=None)
    assert plain["knowledge"] is None and step(c, plain["session"], k=4).positions[0].ids[0] == UNKNOWN
    s = create(c, prompt=prompt, knowledge="aland")
    assert s["knowledge"] == "aland" and s["n_past"] == len(prompt)
    assert m.seen[-1] == [BOS, *PREFIX, *QUESTION]
    f = step(c, s["session"], k=4, n_draft=2)
    assert f.n_past == len(prompt) and [p.token for p in f.positions] == [ord("Q"), ord("u"), -1]  # "Quu" last
    # an append carries the client's base; sent again after a lost answer it is applied once
    more = list(b"Q. Its river is the")
    for _ in range(2):
        f = step(c, s["session"], k=4, append=more, base=len(prompt))
        assert f.n_past == len(prompt) + len(more)
    assert m.seen[-1] == [BOS, *PREFIX, *QUESTION, *more]
    assert f.positions[0].ids[0] == ByteModel.next_token(m.seen[-1])
    # a base that counted the entry would be a conflict
    assert step(c, s["session"], 409, append=[1], base=len(prompt) + len(more) + len(PREFIX))["code"] == "conflict"
    f = step(c, s["session"], k=2, score=list(b" Quu"), base=len(prompt) + len(more))
    assert [p.token for p in f.positions] == [*b" Quu", -1] and f.n_past == len(prompt) + len(more)


def test_prompt_without_bos_and_model_without_bos() -> None:
    for bos in (True, False):
        m = ByteModel(bos=bos)
        c = app_client(m)
        s = create(c, prompt=list(QUESTION), knowledge="aland")
        assert m.seen[-1] == [BOS] * bos + [*PREFIX, *QUESTION] and s["n_past"] == len(QUESTION)
        assert step(c, s["session"], k=1).positions[0].ids[0] == ord("Q")


def test_text_session_prefixes_the_text() -> None:
    m = ByteModel()
    c = app_client(m)
    s = create(c, prompt_b64=b64(QUESTION), knowledge="bland")
    assert m.seen[-1] == [BOS, *ENTRIES[1].text.encode(), *b"\n\n", *QUESTION]
    s = create(c, prompt_b64=b64(QUESTION), knowledge="aland")
    f = step(c, s["session"], k=3, n_draft=1)
    assert s["n_past"] == f.n_past == 1 + len(QUESTION)  # the client's own tokens (BOS + its bytes)
    assert f.positions[0].token == ord("Q")
    tail = b"Q, river"
    for _ in range(2):  # byte offsets: the client's own bytes; a resent append applies once
        f = step(c, s["session"], k=3, append_b64=b64(tail), base=len(QUESTION))
    assert f.n_past == 1 + len(QUESTION) + len(tail)
    assert m.seen[-1] == [BOS, *PREFIX, *QUESTION, *tail]
    assert step(c, s["session"], 409, append_b64=b64(b"x"), base=len(PREFIX) + len(QUESTION))["code"] == "conflict"


def test_retrieval_from_the_prompt_in_both_modes() -> None:
    m = ByteModel()
    c = app_client(m)
    q = b"So is the Zee river in Bland="
    s = create(c, prompt=[BOS, *q])  # ids: detokenized (BOS left out) and matched
    assert s["knowledge"] == "bland" and m.seen[-1][: 1 + len(ENTRIES[1].text)] == [BOS, *ENTRIES[1].text.encode()]
    assert step(c, s["session"], k=1).positions[0].ids[0] == ord("Z")
    assert create(c, prompt_b64=b64(b"wool of cland"))["knowledge"] == "cland"
    s = create(c, prompt_b64=b64(b"nothing to match here"))
    assert s["knowledge"] is None and m.seen[-1] == [BOS, *b"nothing to match here"]
    assert create(c, prompt=[BOS, *q], knowledge=None)["knowledge"] is None  # null: no entry, no retrieval
    assert m.seen[-1] == [BOS, *q]
    no_kb = app_client(m, base=None)
    assert create(no_kb, prompt=[BOS, *q])["knowledge"] is None and m.seen[-1] == [BOS, *q]


HOSTILE = [(7, 400, "invalid_request"), ([], 400, "invalid_request"), ({"id": "aland"}, 400, "invalid_request"),
           (True, 400, "invalid_request"), ("", 400, "invalid_request"), ("a" * 129, 400, "too_long"),
           ("dland", 404, "unknown_knowledge"), ("../../etc/passwd", 404, "unknown_knowledge"),
           ("aland\x00", 404, "unknown_knowledge"), ("ALAND", 404, "unknown_knowledge")]


@pytest.mark.parametrize("value,status,code", HOSTILE, ids=[repr(v)[:20] for v, _, _ in HOSTILE])
def test_unknown_and_hostile_ids(value: Any, status: int, code: str) -> None:
    m = ByteModel()
    c = app_client(m)
    r = c.post("/v1/floe/sessions", json={"prompt": [BOS, 65], "knowledge": value}, headers=AUTH)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert not m.seen  # refused before any model time
    if isinstance(value, str) and len(value) > 3:
        assert value not in r.text  # not echoed
    assert c.get("/health").json()["status"] == "ok"


def test_a_server_without_knowledge_refuses_an_id() -> None:
    c = app_client(ByteModel(), base=None)
    r = c.post("/v1/floe/sessions", json={"prompt": [BOS], "knowledge": "aland"}, headers=AUTH)
    assert r.status_code == 404 and r.json()["error"] == {"code": "unknown_knowledge",
                                                          "message": "this server has no knowledge base"}


def test_context_counts_the_entry() -> None:
    n_ctx = len(PREFIX) + len(QUESTION) + 4
    c = app_client(ByteModel(n_ctx=n_ctx))
    s = create(c, prompt=[BOS, *QUESTION], knowledge="aland")  # BOS + entry + question: n_ctx - 3
    assert step(c, s["session"], 400, k=1, n_draft=4)["code"] == "context_full"
    assert step(c, s["session"], k=1, n_draft=3).positions[-1].token == -1
    big = [BOS] + [65] * (n_ctx - 2)  # fits alone, not behind the entry
    assert create(c, 400, prompt=big, knowledge="aland")["error"]["code"] == "context_full"
    assert create(c, prompt=big, knowledge=None)["n_past"] == len(big)


def test_no_response_carries_the_entrys_text() -> None:
    """Every reply of a session that reads an entry, errors included: no 12-byte run of the entry's text."""
    c = app_client(ByteModel())
    text = ENTRIES[0].text.encode()
    runs = {text[i: i + 12] for i in range(len(text) - 11)}
    bodies = []
    for body in ({"prompt": [BOS, *QUESTION], "knowledge": "aland"}, {"prompt_b64": b64(QUESTION)}):
        r = c.post("/v1/floe/sessions", json=body, headers=AUTH)
        bodies.append(r.content)
        sid = r.json()["session"]
        text_session = "prompt_b64" in body
        for req in ({"k": 8, "n_draft": 16}, {"k": 8, "base": 0, **({"append_b64": b64(b"x")} if text_session
                                                                     else {"append": [1]})},
                    {"k": 8, "n_draft": 10 ** 6}):
            bodies.append(c.post(f"/v1/floe/sessions/{sid}/step", json=req, headers=AUTH).content)
    bodies += [c.get("/health").content, c.get("/v1/floe/vocab", headers=AUTH).content]
    assert all(r not in b for r in runs for b in bodies)
