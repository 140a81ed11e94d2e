"""The cloud model's host-memory prefix cache: a context switched away from is saved, and a request that comes back
to it restores it instead of decoding its prefix again, with the same results as a backend that never switched."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from floe_edge.cloud.saved_prefixes import SavedPrefixes, common_prefix

llama_cpp = pytest.importorskip("llama_cpp")

from floe_edge.cloud.backend import LlamaBackend  # noqa: E402


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([5, 6], [5, 6, 7]) == 2


def test_best_picks_the_longest_shared_prefix_that_beats_the_live_context() -> None:
    saved = SavedPrefixes(budget_bytes=1 << 20, min_tokens=3)
    saved.put([1, 2, 3, 4, 5], b"a")
    saved.put([1, 2, 3, 9, 9, 9], b"b")
    assert saved.best([1, 2, 3, 4, 5, 6], beat=0)[1:] == (b"a", 5)
    assert saved.best([1, 2, 3, 9, 9, 7], beat=0)[1:] == (b"b", 5)
    assert saved.best([1, 2, 3, 4, 5, 6], beat=5) is None      # the live context shares as much
    assert saved.best([1, 2, 7], beat=0) is None                # 2 shared tokens: under min_tokens
    assert saved.hits == 2


def test_short_states_are_not_kept_and_the_budget_drops_the_least_recently_used() -> None:
    saved = SavedPrefixes(budget_bytes=10, min_tokens=2)
    saved.put([1], b"x")
    assert len(saved) == 0 and not saved.worth_saving([1])
    saved.put([1, 2], b"aaaa")
    saved.put([3, 4], b"bbbb")
    assert saved.best([1, 2, 0], beat=0) is not None            # [1, 2] is now the most recent
    saved.put([5, 6], b"cccc")                                  # 12 bytes > 10: [3, 4] goes
    assert saved.best([3, 4, 0], beat=0) is None and saved.nbytes == 8
    saved.put([7, 8], b"z" * 11)                                # larger than the whole budget: not kept
    assert len(saved) == 2 and saved.worth_saving([7, 8])
    with pytest.raises(ValueError):
        SavedPrefixes(budget_bytes=-1)


@pytest.fixture(scope="module")
def texts() -> tuple[bytes, bytes]:
    return (b"Places:\n" + b"The museum at 5 Long Road is open from 9 to 5. " * 12,
            b"Device APIs:\n" + b"Lamps: power with th.sw(<id>, on|off). " * 12)


def _same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (ta, ia, la), (tb, ib, lb) in zip(a, b):
        assert ta == tb and np.array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)


def test_coming_back_to_a_prefix_restores_it_with_the_results_of_staying(smollm2_path, texts) -> None:
    a, b = texts
    with LlamaBackend(smollm2_path, n_ctx=512) as cached, \
            LlamaBackend(smollm2_path, n_ctx=512, saved_prefix_bytes=0) as stayed:
        first = cached.tokenize(a) + cached.tokenize(b" First question?", add_bos=False)
        other = cached.tokenize(b) + cached.tokenize(b" Another one", add_bos=False)
        again = cached.tokenize(a) + cached.tokenize(b" Second question?", add_bos=False)
        cached.topk(first, 8, n_draft=3)
        cached.topk(other, 8, n_draft=3)            # the switch saves `first`'s context
        assert len(cached.saved) == 1
        n0 = cached.n_evaluated
        got = cached.topk(again, 8, n_draft=3)
        shared = common_prefix(first, again)
        assert shared >= 64 and cached.saved.hits == 1
        assert cached.n_evaluated - n0 == len(again) - shared + 3   # only what differs, and the draft
        stayed.topk(first, 8, n_draft=3)            # the reference never left `first`'s context
        _same(got, stayed.topk(again, 8, n_draft=3))


def test_a_state_the_context_cannot_take_is_decoded_instead(smollm2_path, texts) -> None:
    a, _ = texts
    with LlamaBackend(smollm2_path, n_ctx=512) as cached, \
            LlamaBackend(smollm2_path, n_ctx=512, saved_prefix_bytes=0) as plain:
        seq = cached.tokenize(a) + cached.tokenize(b" A question?", add_bos=False)
        cached.saved.put(seq[:-2], b"\x00" * 64)  # a corrupt state under a matching key
        got = cached.topk(seq, 8, n_draft=2)
        assert cached.n_evaluated == len(seq) + 2
        _same(got, plain.topk(seq, 8, n_draft=2))


@pytest.mark.parametrize("text_session", [False, True])
def test_sessions_share_the_knowledge_entry_not_the_prompt(smollm2_path, texts, text_session) -> None:
    """A new session reuses the cache for the knowledge entry in front of its prompt (the server's own document)
    and decodes its own prompt in full, even one another session sent just before: no prompt is cheaper, or
    faster, because someone else asked it (and a benchmark's ways do not share their prompt's prefill); the entry,
    saved when the context moved on, comes back from the host-memory cache."""
    from fastapi.testclient import TestClient

    from floe_edge.cloud.knowledge import KnowledgeBase, knowledge_id
    from floe_edge.cloud.server import create_app

    entry, other = (t.decode() for t in texts)
    with LlamaBackend(smollm2_path, n_ctx=512) as backend:
        kb = KnowledgeBase.from_contexts([entry, other])
        client = TestClient(create_app(backend, api_key="k" * 16, knowledge=kb))

        def open_session(question: bytes, kid: str) -> int:
            n0 = backend.n_evaluated
            ids = backend.tokenize(question)
            body = {"prompt_b64": base64.b64encode(question).decode()} if text_session else {"prompt": ids}
            r = client.post("/v1/floe/sessions", json={**body, "knowledge": kid, "k": 4},
                            headers={"Authorization": "Bearer " + "k" * 16})
            assert r.status_code == 200, r.text
            return backend.n_evaluated - n0

        def own(question: bytes) -> int:
            """The prompt's tokens (a text session's: from where the entry's own tokenization stops agreeing)."""
            if not text_session:
                return len(backend.tokenize(question, add_bos=False))
            data = (entry + "\n\n").encode()
            model = backend.tokenize(data + question)
            return len(model) - common_prefix(backend.tokenize(data), model)

        q1, q2 = b"When does the museum open?", b"Is it open on Sunday?"
        assert open_session(q1, knowledge_id(entry)) > 64 + own(q1)  # entry and prompt: nothing cached yet
        assert open_session(q1, knowledge_id(entry)) == own(q1)      # the same prompt again: paid again, in full
        assert open_session(q2, knowledge_id(entry)) == own(q2)
        open_session(q1, knowledge_id(other))                        # another entry: the first one is saved
        assert open_session(q2, knowledge_id(entry)) == own(q2) and backend.saved.hits >= 1
