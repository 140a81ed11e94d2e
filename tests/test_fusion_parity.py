"""Rules the native fusion code and the Python layer share must give the same results on the same inputs:
the cross-vocabulary remap (fusion.remap_topk vs VocabMap.remap) and the repetition penalty (Sampler on raw
logits vs FusedSampler on a fused top-k)."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floe_edge import _native, fusion
from floe_edge.fusion import FusedSampler, FusedStep
from floe_edge.sampling import Sampler, apply_repeat_penalty
from floe_edge.vocab_map import VocabMap

# Source tokens with collisions (" the" twice, "hello world" and "hello" share a first edge token) and no-bytes
# entries (None, b"") that map to -1.
SOURCE = [b" the", b" the", b"hello world", b"hello", None, b"", b"\xe2", b"x", b"\x00", b" cat", b" dog"]
SPECIAL = [math.nan, math.inf, -math.inf, -9999.0, -9999.5, -1e6, 0.0, -0.0, 5e-4, 1e-3, 2e-3, 0.5, -1e-9, -0.01]


@pytest.fixture(scope="module")
def vmap(smollm2_path) -> VocabMap:
    return VocabMap.between(SOURCE, _native.Tokenizer.from_gguf(str(smollm2_path)), cache=False)


def test_small_map_has_collisions_and_gaps(vmap: VocabMap) -> None:
    t = vmap.table
    assert t[0] == t[1] and t[2] == t[3] and t[4] == t[5] == -1


logprob = st.one_of(st.sampled_from(SPECIAL), st.floats(-30.0, 0.0), st.floats(width=32))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(st.tuples(st.integers(0, len(SOURCE) - 1), logprob), max_size=12))
def test_native_remap_follows_vocab_map_remap(vmap: VocabMap, entries: list[tuple[int, float]]) -> None:
    ids = np.array([i for i, _ in entries], np.int32)
    lps = np.array([x for _, x in entries], np.float32)
    want: Optional[tuple[np.ndarray, np.ndarray]] = None
    got: Optional[tuple[np.ndarray, np.ndarray]] = None
    try:
        r = vmap.remap(ids, lps)
        want = (r.ids, r.logprobs)
    except ValueError:
        pass
    try:
        got = fusion.remap_topk(ids, lps, vmap.table)
    except ValueError:
        pass
    assert (want is None) == (got is None), f"VocabMap.remap {want}, remap_topk {got}"
    if want is not None and got is not None:
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-7)


def test_remap_rejects_what_vocab_map_rejects(vmap: VocabMap) -> None:
    ids = np.array([0, 7], np.int32)
    for bad in ([math.nan, -1.0], [math.inf, -1.0], [0.01, -1.0], [-0.1, -0.1]):
        lps = np.array(bad, np.float32)
        with pytest.raises(ValueError):
            vmap.remap(ids, lps)
        with pytest.raises(ValueError):
            fusion.remap_topk(ids, lps, vmap.table)
    out_ids, out_lps = fusion.remap_topk(np.array([0], np.int32), np.array([5e-4], np.float32), vmap.table)
    assert out_lps.tolist() == [0.0] and out_ids.tolist() == [vmap.table[0]]  # rounding above 0 counts as 0


# ---- repetition penalty --------------------------------------------------------------------------------------------

def llama_cpp_penalty(x: np.ndarray, recent: np.ndarray, penalty: float) -> np.ndarray:
    """llama.cpp's rule written out in numpy (what Sampler did before it shared the native routine)."""
    out = x.astype(np.float64).copy()
    r = np.unique(recent)
    out[r] = np.where(out[r] > 0, out[r] / penalty, out[r] * penalty)
    return out


scores = st.lists(st.one_of(st.floats(-20.0, 20.0), st.sampled_from([0.0, 1.5, -1.5])), min_size=2, max_size=64)


@settings(max_examples=200, deadline=None)
@given(values=scores, data=st.data(), penalty=st.floats(0.2, 5.0), last_n=st.integers(0, 8))
def test_sampler_and_fused_sampler_share_the_penalty(values: list[float], data: st.DataObject, penalty: float,
                                                     last_n: int) -> None:
    x = np.array(values, np.float32)
    history = data.draw(st.lists(st.integers(0, len(values) - 1), max_size=12))
    recent = np.array(history[-last_n:] if last_n else [], np.int32)
    dense = x.astype(np.float64)
    apply_repeat_penalty(dense, recent, penalty)
    np.testing.assert_array_equal(dense, llama_cpp_penalty(x, recent, penalty))
    # greedy after the penalty: the raw-logit sampler and the fused-top-k sampler pick the same token
    ids = np.arange(len(values), dtype=np.int32)
    step = FusedStep(ids, x, 1.0, 0.0, False, True, 0, None, None, None)
    fused = FusedSampler(repeat_penalty=penalty, repeat_last_n=last_n, seed=1).sample(step, history)
    plain = Sampler(repeat_penalty=penalty, repeat_last_n=last_n)(x, history)
    assert fused.token == plain == int(np.argmax(dense))


def test_penalty_changes_the_greedy_choice() -> None:
    x = np.array([2.0, 1.5, -0.5], np.float32)
    step = FusedStep(np.arange(3, dtype=np.int32), x, 1.0, 0.0, False, True, 0, None, None, None)
    assert Sampler(repeat_penalty=2.0)(x, [0]) == FusedSampler(repeat_penalty=2.0, seed=0).sample(step, [0]).token == 1
    with pytest.raises(ValueError, match="outside"):
        Sampler(repeat_penalty=2.0)(x, [3])
