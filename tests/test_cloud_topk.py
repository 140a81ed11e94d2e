"""`topk_logprobs`, which every cloud answer goes through, against a full sort: the k largest logits in descending
order, ties broken by the lower id, with their log-softmax; on random rows, rows full of ties, and rows shorter than
the candidate block."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from floe_edge.cloud.backend import topk_logprobs


def reference(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.lexsort((np.arange(x.size), -x))[:k]
    lse = np.log(np.exp(x.astype(np.float64) - x.max()).sum()) + x.max()
    return ids, (x[ids].astype(np.float64) - lse).astype(np.float32)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 2000), k=st.integers(1, 40), levels=st.integers(1, 6), seed=st.integers(0, 2**32 - 1),
       ties=st.booleans())
def test_topk_matches_a_full_sort(n: int, k: int, levels: int, seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.integers(-levels, levels, n) if ties else rng.standard_normal(n) * 5).astype(np.float32)
    ids, lps = topk_logprobs(x, k)
    want_ids, want_lps = reference(x, min(k, n))
    assert list(ids) == list(want_ids)
    np.testing.assert_allclose(lps, want_lps, rtol=1e-5, atol=1e-5)


def test_topk_on_a_gemma_sized_row_with_the_winners_in_one_block() -> None:
    x = np.full(262144, -30.0, np.float32)
    x[1000:1008] = np.arange(8, dtype=np.float32)  # all of the top 8 in one 256-wide block
    x[5] = 7.0  # tied with the best: the lower id first
    ids, lps = topk_logprobs(x, 8)
    assert list(ids) == [5, 1007, 1006, 1005, 1004, 1003, 1002, 1001]
    assert np.all(np.diff(lps) <= 0) and lps[0] < 0
