"""Heterogeneous-rank LoRA aggregation (floe_edge.fl): the SVD aggregate is the weighted mean of B·A and its best
rank-r approximations, zero-padding is not, median / trimmed mean resist a poisoned client, bad updates are refused
naming the client, clipping bounds ‖B·A‖_F, and whole adapters (in memory and as GGUF files) aggregate the same way."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from floe_edge.adapters import LoraAdapter
from floe_edge.fl import (AggregationError, adapter_from_factors, aggregate, aggregate_adapters, clip_update,
                          delta_factors, screen, update_norm)

N_OUT, N_IN = 1536, 576  # SmolLM2-135M's ffn_up
RANKS = (4, 8, 16)
WEIGHTS = [120.0, 35.0, 300.0]  # example counts


def updates(rng: np.random.Generator, ranks: tuple[int, ...] = RANKS, n_out: int = N_OUT,
            n_in: int = N_IN) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(rng.normal(0, 1 / math.sqrt(n_in), (r, n_in)).astype(np.float32),
             rng.normal(0, 0.05, (n_out, r)).astype(np.float32)) for r in ranks]


def weighted_mean(factors: list[tuple[np.ndarray, np.ndarray]], weights: list[float]) -> np.ndarray:
    dense = [b.astype(np.float64) @ a.astype(np.float64) for a, b in factors]
    return sum(w * d for w, d in zip(weights, dense)) / sum(weights)


def truncations(matrix: np.ndarray) -> Callable[[int], np.ndarray]:
    """r -> the best rank-r approximation of `matrix` (numpy's dense SVD, computed once)."""
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    return lambda r: (u[:, :r] * s[:r]) @ vt[:r]


def product(pair: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    a, b = pair
    return b.astype(np.float64) @ a.astype(np.float64)


def rel(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.linalg.norm(x - y) / np.linalg.norm(y))


# ---- FlexLoRA (svd) ----------------------------------------------------------------------------------------------

def test_svd_untruncated_is_the_weighted_mean_and_each_rank_the_best_approximation(rng: np.random.Generator) -> None:
    factors = updates(rng)
    mean = weighted_mean(factors, WEIGHTS)
    total = sum(RANKS)  # ΔW has rank ≤ Σ r_i: asking for it loses nothing
    out = aggregate(factors, WEIGHTS, [total, *RANKS])
    assert [(a.shape, b.shape) for a, b in out] == [((r, N_IN), (N_OUT, r)) for r in (total, *RANKS)]
    assert all(a.dtype == np.float32 and b.dtype == np.float32 for a, b in out)
    assert rel(product(out[0]), mean) < 1e-5
    best = truncations(mean)
    for (a, b), r in zip(out[1:], RANKS):
        assert rel(product((a, b)), best(r)) < 1e-5
        assert rel(product((a, b)), mean) > 0.1  # truncation does drop something: the comparison can fail
        # singular values split evenly: row j of A and column j of B both have norm √s_j
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=0), rtol=1e-4)


@st.composite
def small_case(draw: st.DrawFn) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[float], int]:
    n_out, n_in = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    ranks = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    seed = draw(st.integers(0, 2**32 - 1))
    weights = draw(st.lists(st.floats(1e-3, 1e3), min_size=len(ranks), max_size=len(ranks)))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-6, 1.0, 1e3]))
    factors = [(rng.normal(size=(r, n_in)), rng.normal(0, scale, (n_out, r))) for r in ranks]
    if draw(st.booleans()):  # a client whose B is still zero (trained nothing)
        factors[0] = (factors[0][0], np.zeros_like(factors[0][1]))
    return factors, weights, draw(st.integers(1, min(n_out, n_in)))


@settings(max_examples=150, deadline=None)
@given(case=small_case())
def test_svd_is_an_optimal_truncation_of_the_mean(case: tuple[list, list[float], int]) -> None:
    """Eckart-Young: B·A has rank ≤ r and misses the weighted mean by exactly the tail of its singular values (a
    check that holds even when singular values tie and the best approximation is not unique)."""
    factors, weights, r = case
    mean = weighted_mean(factors, weights)
    a, b = aggregate(factors, weights, [r])[0]
    s = np.linalg.svd(mean, compute_uv=False)
    scale = max(float(s[0]), 1e-300)
    assert a.shape == (r, mean.shape[1]) and b.shape == (mean.shape[0], r)
    got = product((a, b))
    assert abs(np.linalg.norm(mean - got) - math.sqrt(float(np.sum(s[r:] ** 2)))) <= 1e-5 * scale
    if r >= np.linalg.matrix_rank(mean):
        assert np.linalg.norm(mean - got) <= 1e-5 * scale


def test_slots_beyond_the_rank_of_the_mean_stay_trainable(rng: np.random.Generator) -> None:
    """A rank above ΔW's: the same ΔW, zero B columns, and A rows orthogonal to the rest with a fresh row's norm
    (with A row and B column both zero, training could never use the slot)."""
    factors = updates(rng, (2, 3), 64, 40)
    a, b = aggregate(factors, [1.0, 1.0], [12])[0]
    assert rel(product((a, b)), weighted_mean(factors, [1.0, 1.0])) < 1e-5
    assert not b[:, 5:].any() and np.abs(b[:, :5]).min(axis=0).max() > 0
    np.testing.assert_allclose(np.linalg.norm(a[5:], axis=1), 1 / math.sqrt(3), rtol=1e-5)
    gram = a.astype(np.float64) @ a.T.astype(np.float64)
    assert np.abs(gram[5:, :5]).max() < 1e-6 and np.abs(gram[5:, 5:] - np.eye(7) / 3).max() < 1e-6
    # nothing trained yet (all B zero): ΔW = 0 and every slot fresh
    a0, b0 = aggregate([(f[0], np.zeros_like(f[1])) for f in factors], [1.0, 2.0], [4])[0]
    assert not b0.any() and np.allclose(a0.astype(np.float64) @ a0.T, np.eye(4) / 3, atol=1e-6)


# ---- HetLoRA (zeropad) -------------------------------------------------------------------------------------------

def test_zeropad_averages_factors_separately_and_is_inexact(rng: np.random.Generator) -> None:
    factors = updates(rng, RANKS, 96, 64)
    mean = weighted_mean(factors, WEIGHTS)
    w = np.array(WEIGHTS) / sum(WEIGHTS)
    a_pad = sum(wi * np.pad(a.astype(np.float64), ((0, 16 - a.shape[0]), (0, 0))) for (a, _), wi in zip(factors, w))
    b_pad = sum(wi * np.pad(b.astype(np.float64), ((0, 0), (0, 16 - b.shape[1]))) for (_, b), wi in zip(factors, w))
    out = aggregate(factors, WEIGHTS, [16, 4], method="zeropad")
    np.testing.assert_allclose(out[0][0], a_pad, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[1][1], b_pad[:, :4], rtol=1e-6, atol=1e-7)
    assert rel(product(out[0]), mean) > 0.3  # the mean of products is not the product of the means
    assert rel(product(aggregate(factors, WEIGHTS, [sum(RANKS)])[0]), mean) < 1e-5  # where svd is exact
    one = aggregate(factors[2:], [1.0], [16], method="zeropad")[0]  # one client at its own rank: exact
    assert rel(product(one), weighted_mean(factors[2:], [1.0])) < 1e-6


# ---- robust methods ----------------------------------------------------------------------------------------------

def test_median_and_trimmed_mean_ignore_a_poisoned_client(rng: np.random.Generator) -> None:
    n_out, n_in = 300, 80  # more rows than one block of the dense path
    common = updates(rng, (4,), n_out, n_in)[0]
    honest = [(common[0] + rng.normal(0, 0.01, common[0].shape), common[1]) for _ in range(5)]
    honest = [(a.astype(np.float32), b) for a, b in honest]
    a_bad, b_bad = updates(rng, (8,), n_out, n_in)[0]
    factors = [*honest[:2], (a_bad * 100, b_bad * 100), *honest[2:]]
    truth = weighted_mean(honest, [1.0] * 5)
    weights = [1.0, 1.0, 1000.0, 1.0, 1.0, 1.0]  # the attacker also claims many examples
    assert rel(product(aggregate(factors, weights, [4])[0]), truth) > 100
    for method in ("median", "trimmed_mean"):
        got = product(aggregate(factors, weights, [4], method=method)[0])
        assert rel(got, truth) < 0.05, method
    # the same clients without the attacker: the robust estimates are close to the plain mean
    assert rel(product(aggregate(honest, [1.0] * 5, [4], method="trimmed_mean")[0]), truth) < 0.05


def test_trimmed_mean_trims_per_side_and_coordinate() -> None:
    values = [1.0, 2.0, 4.0, 100.0, -50.0]

    def update(v: float) -> tuple[np.ndarray, np.ndarray]:  # ΔW = [[v, 0], [0, 0]]
        return np.array([[v, 0.0]]), np.array([[1.0], [0.0]])

    def top_left(method: str, trim: float, vals: list[float]) -> float:
        pair = aggregate([update(v) for v in vals], [1.0] * len(vals), [1], method=method, trim=trim)[0]
        return float(product(pair)[0, 0])

    assert top_left("trimmed_mean", 0.2, values) == pytest.approx((1 + 2 + 4) / 3)  # 0.2·5 = 1 per side
    assert top_left("trimmed_mean", 0.0, values) == pytest.approx(sum(values) / 5)  # trim 0: the plain mean
    assert top_left("trimmed_mean", 0.1, values[:3]) == pytest.approx(2.0)  # n = 3: at least one per side
    assert top_left("trimmed_mean", 0.2, values[:2]) == pytest.approx(1.5)  # n = 2: nothing to trim
    assert top_left("median", 0.2, values) == pytest.approx(2.0)
    assert top_left("median", 0.2, values[:4]) == pytest.approx(3.0)
    with pytest.raises(AggregationError, match="trim 0.5"):
        top_left("trimmed_mean", 0.5, values)


# ---- validation --------------------------------------------------------------------------------------------------

def test_screen_refuses_bad_updates_naming_them(rng: np.random.Generator) -> None:
    good = updates(rng, (4, 8, 2, 3, 5, 6, 7), 32, 16)
    nan_b = good[1][1].copy()
    nan_b[3, 2] = np.nan
    factors = list(good)
    factors[1] = (good[1][0], nan_b)
    factors[2] = (good[2][0], good[3][1])  # B of rank 3 with A of rank 2
    factors[4] = updates(rng, (5,), 32, 17)[0]  # another n_in
    factors[6] = (good[6][0][0], good[6][1])  # a 1-D A
    weights = [1.0, 1.0, 1.0, 0.0, 2.0, 3.0, 1.0]
    kept, refused = screen(factors, weights)
    assert kept == [0, 5]
    reasons = dict(refused)
    assert sorted(reasons) == [1, 2, 3, 4, 6]
    assert "NaN" in reasons[1] and "disagree on the rank" in reasons[2] and "weight 0.0" in reasons[3]
    assert "(32, 17) differs" in reasons[4] and "2-D" in reasons[6]
    for bad_weight in (-1.0, math.inf, math.nan, True, "3"):
        assert screen(good[:1], [bad_weight]) == ([], [(0, f"weight {bad_weight!r} is not a positive finite number")])
    with pytest.raises(AggregationError, match="client 1: B holds NaN.*client 2: A"):
        aggregate(factors, weights, [2])
    assert screen([factors[0], factors[4], factors[4]], [1.0] * 3)[1][0][0] == 0  # the majority shape wins


def test_aggregate_refuses_bad_requests(rng: np.random.Generator) -> None:
    factors = updates(rng, (2, 3), 10, 6)
    for ranks, what in (([0], "out rank 0"), ([7], "out rank 7.*= 6"), ([2.0], "out rank 2.0"), ([True], "True")):
        with pytest.raises(AggregationError, match=what):
            aggregate(factors, [1.0, 1.0], ranks)
    with pytest.raises(AggregationError, match="no updates"):
        aggregate([], [], [1])
    with pytest.raises(AggregationError, match="2 updates but 1 weights"):
        aggregate(factors, [1.0], [1])
    with pytest.raises(AggregationError, match="unknown aggregation method 'mean'"):
        aggregate(factors, [1.0, 1.0], [1], method="mean")
    inf_a = factors[0][0].copy()
    inf_a[0, 0] = np.inf
    with pytest.raises(AggregationError, match="client 0: A holds NaN or infinite"):
        aggregate([(inf_a, factors[0][1]), factors[1]], [1.0, 1.0], [1])
    huge = (np.full((1, 6), 1e40), np.full((10, 1), 1e40))  # finite in float64, factors of √s ≈ 1e41 are not in f32
    with pytest.raises(AggregationError, match="overflows float32"):
        aggregate([huge], [1.0], [1])
    assert aggregate(factors, [1e308, 1e308], [5])[0][0].shape == (5, 6)  # huge weights: normalized, no overflow


# ---- clipping ----------------------------------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rank=st.integers(1, 8), scale=st.sampled_from([1e-3, 1.0, 50.0]),
       max_norm=st.floats(1e-3, 1e3))
def test_clip_bounds_the_frobenius_norm(seed: int, rank: int, scale: float, max_norm: float) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(rank, 24)), rng.normal(0, scale, (40, rank))
    dense = float(np.linalg.norm(b @ a))
    assert update_norm(a, b) == pytest.approx(dense, rel=1e-10)
    assert update_norm(a, b) == pytest.approx(math.sqrt(np.trace((b.T @ b) @ (a @ a.T))), rel=1e-8)
    a2, b2, norm = clip_update(a, b, max_norm)
    assert norm == pytest.approx(dense, rel=1e-10) and a2.dtype == b2.dtype == np.float32
    got = float(np.linalg.norm(b2.astype(np.float64) @ a2.astype(np.float64)))
    assert got <= max_norm * (1 + 1e-12)
    assert got == pytest.approx(min(dense, max_norm), rel=1e-5)
    if dense > max_norm:  # the direction is kept: only a scale
        assert rel(b2.astype(np.float64) @ a2, b @ a * (max_norm / dense)) < 1e-5


def test_clip_refuses_bad_input(rng: np.random.Generator) -> None:
    a, b = updates(rng, (3,), 8, 5)[0]
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(AggregationError, match="max_norm"):
            clip_update(a, b, bad)
    with pytest.raises(AggregationError, match="disagree on the rank"):
        clip_update(a, b[:, :2], 1.0)


# ---- whole adapters ----------------------------------------------------------------------------------------------

SHAPES = {"blk.0.attn_q.weight": (576, 576), "blk.0.attn_k.weight": (192, 576), "blk.1.ffn_up.weight": (1536, 576),
          "blk.1.ffn_down.weight": (576, 1536)}  # fmt: skip


def random_adapter(rng: np.random.Generator, rank: int, names: tuple[str, ...] = tuple(SHAPES)) -> LoraAdapter:
    pairs = {name: (rng.normal(0, 1 / math.sqrt(SHAPES[name][1]), (rank, SHAPES[name][1])).astype(np.float32),
                    rng.normal(0, 0.05, (SHAPES[name][0], rank)).astype(np.float32)) for name in names}
    return LoraAdapter("llama", 2.0 * rank, pairs)


def test_delta_factors_and_adapter_from_factors_round_trip(rng: np.random.Generator) -> None:
    adapter = random_adapter(rng, 8)
    deltas = delta_factors(adapter)
    for name, (a, b) in adapter.pairs.items():
        np.testing.assert_allclose(product(deltas[name]), adapter.scale * product((a, b)), rtol=1e-12)
    back = adapter_from_factors("llama", deltas, 8, alpha=4.0)
    assert back.alpha == 4.0 and back.scale == 0.5
    for name in adapter.pairs:
        assert rel(back.scale * product(back.pairs[name]), product(deltas[name])) < 1e-6
    with pytest.raises(AggregationError, match="not of rank 4"):
        adapter_from_factors("llama", deltas, 4, alpha=8.0)
    with pytest.raises(AggregationError, match="alpha 0.0"):
        adapter_from_factors("llama", deltas, 8, alpha=0.0)


def test_aggregate_adapters_of_one_adapter_at_its_own_rank_keeps_its_delta(rng: np.random.Generator) -> None:
    adapter = random_adapter(rng, 8, ("blk.0.attn_q.weight", "blk.0.attn_k.weight"))  # the dense paths cost
    for method in ("svd", "zeropad", "median", "trimmed_mean"):
        (out,) = aggregate_adapters([adapter], [5.0], [8], method=method, alphas=[3.0])
        assert out.rank == 8 and out.alpha == 3.0 and list(out.pairs) == list(adapter.pairs)
        for name, pair in adapter.pairs.items():
            assert rel(out.scale * product(out.pairs[name]), adapter.scale * product(pair)) < 1e-5, (method, name)


def test_aggregate_adapters_heterogeneous_with_a_missing_projection(rng: np.random.Generator) -> None:
    names = tuple(SHAPES)
    clients = [random_adapter(rng, 4), random_adapter(rng, 16, names[1:]), random_adapter(rng, 8)]
    weights = [2.0, 1.0, 1.0]
    outs = aggregate_adapters(clients, weights, [4, 16])
    assert [o.rank for o in outs] == [4, 16] and [o.alpha for o in outs] == [8.0, 32.0]  # default alpha = 2·r
    for out in outs:
        assert list(out.pairs) == list(names)  # the union, client 0's order
    for name in names:
        # client 1 lacks blk.0.attn_q: ΔW = 0 there, still with its weight in the mean
        dense = [c.scale * product(c.pairs[name]) if name in c.pairs else 0.0 for c in clients]
        best = truncations(sum(w * d for w, d in zip(weights, dense)) / sum(weights))
        for out in outs:
            assert rel(out.scale * product(out.pairs[name]), best(out.rank)) < 1e-5, (name, out.rank)


def test_aggregate_adapters_refuses_naming_client_and_projection(rng: np.random.Generator) -> None:
    a, b = random_adapter(rng, 4), random_adapter(rng, 4)
    with pytest.raises(AggregationError, match="client 1: architecture 'qwen2'"):
        aggregate_adapters([a, LoraAdapter("qwen2", b.alpha, b.pairs)], [1.0, 1.0], [4])
    pairs = dict(b.pairs)
    pairs["blk.0.attn_k.weight"] = random_adapter(rng, 4).pairs["blk.0.attn_q.weight"]  # (576, 576), not (192, 576)
    with pytest.raises(AggregationError, match=r"blk.0.attn_k.weight: client 1: ΔW shape .* \(576, 576\) differs"):
        aggregate_adapters([a, LoraAdapter("llama", 8.0, pairs)], [1.0, 1.0], [4])
    with pytest.raises(AggregationError, match="client 1: weight -1"):
        aggregate_adapters([a, b], [1.0, -1], [4])
    with pytest.raises(AggregationError, match="2 adapters but 1 weights"):
        aggregate_adapters([a, b], [1.0], [4])
    with pytest.raises(AggregationError, match="2 out ranks but 1 alphas"):
        aggregate_adapters([a, b], [1.0, 1.0], [4, 8], alphas=[8.0])


def test_written_adapters_read_back_and_aggregate(tmp_path: Path, rng: np.random.Generator) -> None:
    """Real GGUF adapter files of ranks 4/8/16 (f16 for one): read, aggregated, written, read again."""
    clients = [random_adapter(rng, r) for r in RANKS]
    clients[1] = LoraAdapter("llama", 16.0, {n: (a.astype(np.float16), b.astype(np.float16))
                                             for n, (a, b) in clients[1].pairs.items()})
    paths = [c.write(tmp_path / f"client{i}.gguf") for i, c in enumerate(clients)]
    read = [LoraAdapter.read(p) for p in paths]
    outs = aggregate_adapters(read, WEIGHTS, [4, 8, 16])
    backs = [LoraAdapter.read(out.write(tmp_path / f"global_r{out.rank}.gguf")) for out in outs]
    assert [(b.rank, b.alpha) for b in backs] == [(4, 8.0), (8, 16.0), (16, 32.0)]
    for name in SHAPES:
        best = truncations(weighted_mean([(c.pairs[name][0], c.scale * c.pairs[name][1].astype(np.float64))
                                          for c in read], WEIGHTS))
        for back in backs:
            assert rel(back.scale * product(back.pairs[name]), best(back.rank)) < 1e-5, (name, back.rank)
