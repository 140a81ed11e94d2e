"""Prefix reuse of the edge's KV cache across generations (the user's private context is the same for all of their
questions): with the real SmolLM2-135M, a generation that keeps the cached prefix emits exactly the tokens and
log-probs of one from an empty cache, after an adapter swap and after another caller's eval too."""

from __future__ import annotations

from typing import Optional

import pytest
from test_lora import random_pairs, write_adapter

from floe_edge import HybridGenerator, NativeSLM
from floe_edge.edge import ThrottledEdge, reuse_prefix

CONTEXT = ("My name is Ada Lovelace. I live in Lyon with my cat Babbage. I work as a nurse at the Croix-Rousse "
           "hospital and I play the cello on Sundays.\n\n")
QUESTIONS = ("Q: What is the name of my cat?\nA:", "Q: Where do I work?\nA:", "Q: Which instrument do I play?\nA:")


@pytest.fixture(scope="module")
def edge(smollm2_path):
    with NativeSLM(smollm2_path, n_ctx=512) as slm:
        yield slm


def answer(gen: HybridGenerator, question: str, fresh: bool = False, n: int = 12) -> tuple[list, int]:
    """(id, logprob) of each token, and the count of prompt tokens reused; from an empty cache when fresh."""
    if fresh:
        gen.edge.reset()
    out = [(t.id, t.logprob) for t in gen.generate(question, n=n, private_context=CONTEXT)]
    assert len(out) == n  # a whole answer to compare, not an empty one
    return out, gen.last_stats.cached_tokens


def edge_ids(edge: NativeSLM, question: str) -> list[int]:
    return edge.tokenize(CONTEXT + question)


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def test_questions_sharing_a_context_reuse_it(edge) -> None:
    gen = HybridGenerator(edge, None)
    fresh = [answer(gen, q, fresh=True)[0] for q in QUESTIONS]
    edge.reset()
    first, kept = answer(gen, QUESTIONS[0])
    assert kept == 0 and first == fresh[0]
    for i, q in enumerate(QUESTIONS[1:], 1):
        before = edge.cached_tokens
        out, kept = answer(gen, q)
        assert out == fresh[i]  # same ids and exactly the same log-probs
        assert kept == common_prefix(before, edge_ids(edge, q)) and kept >= len(edge.tokenize(CONTEXT)) - 2
        assert gen.last_stats.prompt_tokens == len(edge_ids(edge, q))


def test_identical_second_call_evaluates_only_the_last_prompt_token(edge) -> None:
    gen = HybridGenerator(edge, None)
    once, _ = answer(gen, QUESTIONS[1], fresh=True)
    again, kept = answer(gen, QUESTIONS[1])
    assert again == once and kept == len(edge_ids(edge, QUESTIONS[1])) - 1


def test_adapter_swap_recomputes_the_kept_prefix(edge, tmp_path) -> None:
    adapter = edge.load_adapter(write_adapter(tmp_path / "a.gguf", random_pairs(edge.config, 8, 11)))
    gen = HybridGenerator(edge, None)
    edge.set_adapters([(adapter, 1.0)])
    adapted, _ = answer(gen, QUESTIONS[1], fresh=True)
    edge.set_adapters([])
    base, _ = answer(gen, QUESTIONS[0], fresh=True)
    assert adapted != answer(gen, QUESTIONS[1], fresh=True)[0]  # the adapter changes the answer
    answer(gen, QUESTIONS[0])
    recomputed = edge._live().recomputed_tokens
    edge.set_adapters([(adapter, 1.0)])  # no keep_cache: the cached context is stale
    out, kept = answer(gen, QUESTIONS[1])
    assert out == adapted and kept > 0
    assert edge._live().recomputed_tokens == recomputed + kept  # only the kept prefix is recomputed
    edge.set_adapters([])
    assert answer(gen, QUESTIONS[0])[0] == base


def test_foreign_eval_in_between_is_seen_through_the_cache(edge) -> None:
    gen = HybridGenerator(edge, None)
    fresh, _ = answer(gen, QUESTIONS[2], fresh=True)
    answer(gen, QUESTIONS[0])
    n_context = len(edge.tokenize(CONTEXT))
    edge.truncate(n_context // 2)  # another caller rewinds into the context and reads something else
    edge.eval(edge.tokenize("The weather in Paris is mild today.", add_bos=False), logits="last")
    out, kept = answer(gen, QUESTIONS[2])
    assert out == fresh and kept == n_context // 2
    edge.reset()
    foreign = edge.tokenize("My name is Bob and I like tea.")  # shares its first words with the context
    edge.eval(foreign, logits="last")
    out, kept = answer(gen, QUESTIONS[2])
    assert out == fresh and kept == common_prefix(foreign, edge_ids(edge, QUESTIONS[2])) > 0


def test_native_generate_reuses_the_prefix(edge) -> None:
    prompts = [CONTEXT + q for q in QUESTIONS[:2]]
    edge.reset()
    fresh = []
    for p in prompts:
        edge.reset()
        fresh.append([(t.id, t.logprob) for t in edge.generate(p, n=8)])
        assert edge.last_stats.cached_tokens == 0
    for p, expected in zip(prompts, fresh):
        assert [(t.id, t.logprob) for t in edge.generate(p, n=8)] == expected
    assert edge.last_stats.cached_tokens >= len(edge.tokenize(CONTEXT)) - 2


class Cacheless:
    """An edge model that does not expose its cache: reset, never truncated to a prefix."""

    def __init__(self, tokens: Optional[list[int]] = None) -> None:
        self.calls: list[tuple[str, int]] = []
        if tokens is not None:
            self.cached_tokens = tokens

    def truncate(self, n_past: int) -> None:
        self.calls.append(("truncate", n_past))

    def reset(self) -> None:
        self.calls.append(("reset", 0))


def test_reuse_prefix_keeps_at_most_all_but_the_last_id() -> None:
    cases = [(None, [1, 2, 3], 0), ([], [1, 2, 3], 0), ([1, 2, 3, 4], [1, 2, 3], 2), ([1, 2, 9], [1, 2, 3, 4], 2),
             ([1, 2], [1, 2, 3], 2), ([7], [1, 2], 0), ([1, 2, 3], [1], 0)]
    for cached, ids, keep in cases:
        fake = Cacheless(cached)
        assert reuse_prefix(fake, ids) == keep, (cached, ids)  # type: ignore[arg-type]
        assert fake.calls == [("truncate", keep) if keep else ("reset", 0)]


def test_throttled_edge_forwards_the_cache_only_when_it_has_one(edge) -> None:
    edge.reset()
    edge.eval([1, 2, 3], logits="last")
    assert ThrottledEdge(edge, 0, 0).cached_tokens == [1, 2, 3] == edge.cached_tokens
    assert getattr(ThrottledEdge(Cacheless(), 0, 0), "cached_tokens", None) is None  # type: ignore[arg-type]
    throttled = ThrottledEdge(Cacheless([1, 2]), 0, 0)  # type: ignore[arg-type]
    assert reuse_prefix(throttled, [1, 2, 3]) == 2 and throttled.inner.calls == [("truncate", 2)]
