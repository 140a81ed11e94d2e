"""floe_edge.fusion against a float64 numpy implementation of the documented math, for every kernel variant."""

from __future__ import annotations

import threading
from typing import Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from floe_edge import fusion, kernels
from floe_edge.fusion import FusedSampler, Fuser, FusionWeights

VARIANTS = kernels.variants()
# the numpy reference works with -inf on purpose (log 0, inf - inf guarded by np.where)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


# ---- numpy reference ---------------------------------------------------------------------------------------------

def np_lse(v: np.ndarray) -> float:
    m = v.max()
    return -np.inf if m == -np.inf else float(m + np.log(np.exp(v - m).sum()))


def entropy(lp: np.ndarray) -> float:
    p = np.exp(lp)
    return float(-(p[p > 0] * lp[p > 0]).sum())


def first_argmax(v: np.ndarray) -> int:
    return -1 if v.max() == -np.inf else int(np.argmax(v))


def np_fuse(x: np.ndarray, w: FusionWeights, mode: str = "loglinear", top_k: int = 20, tail_floor: float = 1e-4,
            normalize: bool = True, ids: Optional[np.ndarray] = None, lps: Optional[np.ndarray] = None,
            dense: Optional[np.ndarray] = None) -> dict:
    """The fused distribution over the whole vocabulary, as floe_edge.fusion documents it."""
    V = len(x)
    x = np.where(np.isnan(x), -np.inf, x.astype(np.float64))
    le = x - np_lse(x)
    lc, c1 = None, -1
    if ids is not None and len(ids):
        lp = np.where(np.isnan(lps), -np.inf, lps.astype(np.float64))
        mass, n_rest = np.exp(lp).sum(), V - len(ids)
        rest = max(1.0 - mass, tail_floor) if n_rest else 0.0
        lc = np.full(V, np.log(rest / n_rest) if n_rest else -np.inf) - np.log(mass + rest)
        lc[ids] = lp - np.log(mass + rest)
        c1 = -1 if lp.max() == -np.inf else int(ids[np.lexsort((ids, -lp))[0]])
    elif dense is not None:
        c = np.where(np.isnan(dense), -np.inf, dense.astype(np.float64))
        lc, c1 = c - np_lse(c), first_argmax(c)
    we, wc, gated = 1.0, 0.0, False
    if lc is not None:
        we, wc = w.edge, w.cloud
        if w.gate <= 1 and np.exp(le.max()) >= w.gate:
            we, wc, gated = 1.0, 0.0, True
        elif w.adaptive:
            h_e, h_c = entropy(le) / np.log(V), entropy(lc) / np.log(V)
            q = 1.0 if first_argmax(x) == c1 else w.disagree_power
            r_e, r_c = w.edge * np.clip(1 - h_e, 0, 1) ** q, w.cloud * np.clip(1 - h_c, 0, 1) ** q
            we = r_e / (r_e + r_c) if r_e + r_c >= 1e-6 else w.edge / (w.edge + w.cloud)
            we = float(np.clip(we, w.min_weight, 1 - w.min_weight))
            wc = 1.0 - we
    if mode == "linear" and wc > 0:
        we, wc = we / (we + wc), wc / (we + wc)
    with np.errstate(divide="ignore", invalid="ignore"):
        if wc == 0:
            s = le if mode == "linear" else np.where(le == -np.inf, -np.inf, we * le)
        elif mode == "linear" and dense is not None:  # the SIMD pass: terms below e^-86 count as 0 (documented)
            term = lambda lp, w: np.where(lp + np.log(w) > -86, w * np.exp(lp), 0.0) if w > 0 else 0.0  # noqa: E731
            s = np.log(term(le, we) + term(lc, wc))
        elif mode == "linear":
            s = np.log(we * np.exp(le) + wc * np.exp(lc))
        else:
            s = (np.where(le == -np.inf, -np.inf, we * le) if we > 0 else 0.0) + wc * lc
    lf = s - np_lse(s)
    order = np.lexsort((np.arange(V), -lf))
    order = order[lf[order] > -np.inf][:top_k]
    top = lf[order]
    if not normalize and mode == "loglinear" and len(top):
        top = top - np_lse(top)
    return {"lf": lf, "ids": order, "logprobs": top, "w": (we, wc), "gated": gated, "edge_top1": first_argmax(x),
            "cloud_top1": c1}


def check_step(step: fusion.FusedStep, want: dict, scale: float) -> None:
    tol = 1e-5 + 2e-7 * scale  # float32 rounding of the fused scores grows with the logits' magnitude
    assert len(step.ids) == len(want["ids"])
    np.testing.assert_allclose(step.logprobs, want["logprobs"], rtol=1e-6, atol=tol)
    # same top-k, up to ties within the tolerance: every returned id is as good as numpy's k-th
    ref_lp = want["lf"] if step.normalized else None
    if ref_lp is not None:
        np.testing.assert_allclose(ref_lp[step.ids], step.logprobs, rtol=1e-6, atol=tol)
    if len(step.ids):
        assert want["lf"][step.ids].min() >= want["lf"][want["ids"]].min() - 2 * tol
    assert np.all(np.diff(step.logprobs) <= 0)
    np.testing.assert_allclose((step.w_edge, step.w_cloud), want["w"], rtol=1e-5, atol=1e-5)
    assert step.gated == want["gated"]
    assert step.edge_top1 == want["edge_top1"]
    assert (step.cloud_top1 if step.cloud_top1 is not None else -1) == want["cloud_top1"]


def sparse_cloud(rng: np.random.Generator, V: int, k: int, favour: Optional[np.ndarray] = None):
    ids = (favour[:k] if favour is not None else rng.choice(V, size=k, replace=False)).astype(np.int32)
    p = rng.dirichlet(np.ones(k)) * rng.uniform(0.3, 0.99)
    return ids, np.log(p).astype(np.float32)


# ---- deterministic cases -----------------------------------------------------------------------------------------

WEIGHTS = [FusionWeights(0.5, 0.5), FusionWeights(0.3, 0.7), FusionWeights(1.0, 0.4), FusionWeights(0.0, 1.0),
           FusionWeights(0.5, 0.5, adaptive=True), FusionWeights(0.4, 0.6, adaptive=True, gate=0.5)]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", ["loglinear", "linear"])
@pytest.mark.parametrize("weights", WEIGHTS,
                         ids=lambda w: f"{w.edge}-{w.cloud}-{'ad' if w.adaptive else 'st'}-{w.gate}")
@pytest.mark.parametrize("evidence", ["none", "sparse", "dense"])
def test_fuse_matches_numpy(variant: str, mode: str, weights: FusionWeights, evidence: str,
                            rng: np.random.Generator) -> None:
    V = 49152
    x = (rng.standard_normal(V) * 3).astype(np.float32)
    x[[5, 77]] = [np.nan, -np.inf]
    kw = {}
    if evidence == "sparse":
        kw["cloud_ids"], kw["cloud_logprobs"] = sparse_cloud(rng, V, 20, np.argsort(-x)[3:43:2])
    elif evidence == "dense":
        kw["cloud_dense"] = np.log(rng.dirichlet(np.full(V, 0.1)) + 1e-30).astype(np.float32)
    f = Fuser(V, mode, weights, top_k=32, variant=variant)
    step = f.fuse(x, **kw)
    want = np_fuse(x, weights, mode, 32, ids=kw.get("cloud_ids"), lps=kw.get("cloud_logprobs"),
                   dense=kw.get("cloud_dense"))
    check_step(step, want, 80.0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("V", [1, 7, 64, 151936])
def test_fuse_unnormalized_same_topk(variant: str, V: int, rng: np.random.Generator) -> None:
    x = (rng.standard_normal(V) * 4).astype(np.float32)
    ids, lps = sparse_cloud(rng, V, min(V, 20))
    exact = Fuser(V, weights=(0.6, 0.4), variant=variant).fuse(x, ids, lps)
    fast = Fuser(V, weights=(0.6, 0.4), normalize=False, variant=variant).fuse(x, ids, lps)
    assert not fast.normalized and exact.normalized
    np.testing.assert_array_equal(fast.ids, exact.ids)
    # the same scores, normalized over the top-k instead of the vocabulary
    np.testing.assert_allclose(fast.logprobs - fast.logprobs[0], exact.logprobs - exact.logprobs[0], atol=1e-5)
    check_step(fast, np_fuse(x, FusionWeights(0.6, 0.4), normalize=False, ids=ids, lps=lps), 20.0)


def test_variants_agree(rng: np.random.Generator) -> None:
    V = 262144
    x = (rng.standard_normal(V) * 3).astype(np.float32)
    c = np.log(rng.dirichlet(np.full(V, 0.05)) + 1e-38).astype(np.float32)
    ids, lps = sparse_cloud(rng, V, 20)
    for mode in ("loglinear", "linear"):
        for kw in ({"cloud_dense": c}, {"cloud_ids": ids, "cloud_logprobs": lps}):
            steps = [Fuser(V, mode, "adaptive", top_k=64, variant=v).fuse(x, **kw) for v in VARIANTS]
            for s in steps[1:]:
                np.testing.assert_array_equal(s.ids, steps[0].ids)
                np.testing.assert_allclose(s.logprobs, steps[0].logprobs, atol=1e-5)


# ---- hypothesis properties ---------------------------------------------------------------------------------------

SPECIALS = st.sampled_from([np.nan, -np.inf, 0.0, -1e4, 1e4, 87.0, -104.0])


@st.composite
def fusion_case(draw):
    V = draw(st.integers(1, 300))
    x = draw(hnp.arrays(np.float32, V, elements=st.floats(-60, 60, width=32)))
    for i in draw(st.lists(st.integers(0, V - 1), max_size=5)):
        x[i] = draw(SPECIALS)
    evidence = draw(st.sampled_from(["none", "sparse", "dense"]))
    kw = {}
    if evidence == "sparse":
        k = draw(st.integers(0, min(V, 64)))
        ids = np.array(draw(st.permutations(range(V)))[:k], dtype=np.int32)
        lps = draw(hnp.arrays(np.float32, k, elements=st.floats(-40, 0, width=32)))
        for i in draw(st.lists(st.integers(0, max(k - 1, 0)), max_size=2)) if k else []:
            lps[i] = draw(st.sampled_from([np.nan, -np.inf]))
        kw = {"cloud_ids": ids, "cloud_logprobs": lps}
    elif evidence == "dense":
        c = draw(hnp.arrays(np.float32, V, elements=st.floats(-50, 5, width=32)))
        for i in draw(st.lists(st.integers(0, V - 1), max_size=3)):
            c[i] = draw(st.sampled_from([np.nan, -np.inf]))
        kw = {"cloud_dense": c}
    w = draw(st.sampled_from(WEIGHTS))
    return x, kw, w, draw(st.sampled_from(["loglinear", "linear"])), draw(st.integers(1, 64)), draw(st.booleans())


def expected_error(x: np.ndarray, kw: dict) -> Optional[str]:
    xs = np.where(np.isnan(x), -np.inf, x)
    if xs.max() == -np.inf:
        return "no finite"
    if np.isposinf(x).any():
        return r"\+inf"
    if "cloud_dense" in kw:
        c = np.where(np.isnan(kw["cloud_dense"]), -np.inf, kw["cloud_dense"])
        if c.max() == -np.inf:
            return "no finite"
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=fusion_case(), variant=st.sampled_from(VARIANTS))
def test_fuse_property(case, variant: str) -> None:
    x, kw, w, mode, top_k, normalize = case
    f = Fuser(len(x), mode, w, top_k=top_k, normalize=normalize, variant=variant)
    err = expected_error(x, kw)
    if err:
        with pytest.raises(ValueError, match=err):
            f.fuse(x, **kw)
        return
    want = np_fuse(x, w, mode, top_k, normalize=normalize, ids=kw.get("cloud_ids"), lps=kw.get("cloud_logprobs"),
                   dense=kw.get("cloud_dense"))
    if len(want["ids"]) == 0:
        with pytest.raises(ValueError, match="empty"):
            f.fuse(x, **kw)
        return
    scale = float(np.nanmax(np.abs(np.where(np.isinf(x), 0, x)))) * 2 + 50
    check_step(f.fuse(x, **kw), want, scale)


@settings(max_examples=200, deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(1, 2000), elements=st.floats(-1e4, 1e4, width=32) | SPECIALS),
       variant=st.sampled_from(VARIANTS))
def test_log_softmax_property(x: np.ndarray, variant: str) -> None:
    xs = np.where(np.isnan(x), -np.inf, x.astype(np.float64))
    if xs.max() == -np.inf:
        with pytest.raises(ValueError):
            fusion.log_softmax(x, variant)
        return
    want = xs - np_lse(xs)
    got = fusion.log_softmax(x, variant)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5 + 2e-7 * np.abs(xs[np.isfinite(xs)]).max())
    assert fusion.logsumexp(x, variant) == pytest.approx(np_lse(xs), rel=1e-6, abs=1e-5)
    ids, vals = fusion.topk(x, 17, variant)
    order = np.lexsort((np.arange(len(x)), -xs))
    order = order[xs[order] > -np.inf][:17]
    np.testing.assert_array_equal(ids, order)
    np.testing.assert_array_equal(vals, x[order])


# ---- sampling ----------------------------------------------------------------------------------------------------

M64 = (1 << 64) - 1


class Xoshiro:
    """xoshiro256** seeded through splitmix64: the reference for the native sampler's stream."""

    def __init__(self, seed: int) -> None:
        self.s = []
        for _ in range(4):
            seed = (seed + 0x9E3779B97F4A7C15) & M64
            z = seed
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            self.s.append(z ^ (z >> 31))

    def next(self) -> int:
        rotl = lambda v, r: ((v << r) | (v >> (64 - r))) & M64  # noqa: E731
        s = self.s
        out = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45)  # noqa: E702
        return out

    def uniform(self) -> float:
        return (self.next() >> 11) * 2.0**-53


def np_sample(ids, lps, sampler: FusedSampler, rng: Xoshiro, recent=()) -> int:
    s = lps.astype(np.float64).copy()
    hit = np.isin(ids, np.asarray(recent, dtype=np.int64)) if sampler.repeat_penalty != 1 else np.zeros(len(s), bool)
    s[hit] = np.where(s[hit] > 0, s[hit] / sampler.repeat_penalty, s[hit] * sampler.repeat_penalty)
    order = np.lexsort((ids, -s))
    ids, s = ids[order], s[order]
    if sampler.temperature == 0:
        return int(ids[0])
    n = min(sampler.top_k, len(s)) if sampler.top_k else len(s)
    q = np.exp(s[:n] - s[0])
    if sampler.top_p < 1:
        cum, keep = 0.0, 0
        while keep < n and cum < sampler.top_p * q.sum():
            cum += q[keep]
            keep += 1
        n = max(keep, 1)
    if sampler.min_p > 0:
        n = 1 + int(np.sum(q[1:n] >= sampler.min_p))
    q = np.exp((s[:n] - s[0]) / sampler.temperature)
    r = rng.uniform() * q.sum()
    pick = int(np.searchsorted(np.cumsum(q), r, side="right"))
    return int(ids[min(pick, n - 1)])


@pytest.mark.parametrize("params", [
    dict(temperature=0.0), dict(temperature=0.0, repeat_penalty=1.5),
    dict(temperature=1.0), dict(temperature=0.7, top_k=5), dict(temperature=1.3, top_p=0.8),
    dict(temperature=1.0, min_p=0.05), dict(temperature=0.9, top_k=10, top_p=0.9, min_p=0.02, repeat_penalty=1.3),
])
def test_sampling_matches_reference(params: dict, rng: np.random.Generator) -> None:
    V = 5000
    f = Fuser(V, weights="assistant", top_k=40)
    sampler = FusedSampler(seed=7, **params)
    ref_rng = Xoshiro(7)
    history: list[int] = []
    for _ in range(60):
        x = (rng.standard_normal(V) * 2).astype(np.float32)
        ids, lps = sparse_cloud(rng, V, 20, np.argsort(-x)[:30])
        step = f.fuse(x, ids, lps)
        tok = f.sample(step, sampler, history)
        assert tok.token == np_sample(step.ids, step.logprobs, sampler, ref_rng, history[-64:])
        assert tok.logprob == step.logprobs[list(step.ids).index(tok.token)]
        assert tok.step is step
        history.append(tok.token)


def test_sampling_reproducible(rng: np.random.Generator) -> None:
    V = 1000
    x = (rng.standard_normal(V) * 1.5).astype(np.float32)
    step = Fuser(V, top_k=64).fuse(x)
    a = FusedSampler(temperature=1.0, seed=123)
    b = FusedSampler(temperature=1.0, seed=123)
    assert [a.sample(step).token for _ in range(50)] == [b.sample(step).token for _ in range(50)]
    firsts = {FusedSampler(temperature=1.0, seed=s).sample(step).token for s in range(40)}
    assert len(firsts) > 1  # different seeds, different draws


# ---- gating, adaptive weights, presets ---------------------------------------------------------------------------

def test_gate_skips_cloud_when_edge_confident() -> None:
    V = 100
    x = np.zeros(V, np.float32)
    x[3] = 20.0  # p_e(3) ~ 1
    ids, lps = np.array([7, 8], np.int32), np.log(np.array([0.9, 0.05], np.float32))
    f = Fuser(V, weights=FusionWeights(0.5, 0.5, adaptive=True, gate=0.9))
    stats = f.edge_stats(x)
    assert stats.top1 == 3 and stats.max_prob > 0.99 and not stats.needs_cloud
    step = f.fuse(x, ids, lps)
    assert step.gated and (step.w_edge, step.w_cloud) == (1.0, 0.0) and step.top1 == 3
    x[3] = 0.5  # uncertain edge: the cloud decides
    assert f.edge_stats(x).needs_cloud
    step = f.fuse(x, ids, lps)
    assert not step.gated and step.w_cloud > step.w_edge and step.top1 == 7


def test_adaptive_weights_follow_confidence_and_agreement() -> None:
    V = 1000
    flat = np.zeros(V, np.float32)
    sharp = flat.copy()
    sharp[10] = 12.0
    ids = np.array([10, 20], np.int32)
    f = Fuser(V, weights="adaptive")
    confident_cloud = np.log(np.array([0.97, 0.02], np.float32))
    # a flat edge gets little weight
    s = f.fuse(flat, ids, confident_cloud)
    assert s.w_cloud > 0.9 and s.top1 == 10
    # the same confidences, disagreeing top-1: weight moves further to the more confident side
    edge = flat.copy()
    edge[30] = 7.0
    agree_edge = flat.copy()
    agree_edge[10] = 7.0
    w_agree = f.fuse(agree_edge, ids, confident_cloud).w_cloud
    w_disagree = f.fuse(edge, ids, confident_cloud).w_cloud
    assert w_disagree > w_agree


def test_presets_and_weight_forms() -> None:
    assert set(fusion.PRESETS) >= {"assistant", "code", "commands"}
    for name in ("assistant", "code", "commands"):
        assert Fuser(10, weights=name).weights == fusion.PRESETS[name]
    assert Fuser(10, weights=(0.2, 0.8)).weights == FusionWeights(0.2, 0.8)
    with pytest.raises(ValueError, match="preset"):
        Fuser(10, weights="chat")
    with pytest.raises(TypeError):
        Fuser(10, weights=[0.5, 0.5])  # type: ignore[arg-type]


def test_edge_only_is_edge_distribution(rng: np.random.Generator) -> None:
    x = (rng.standard_normal(300) * 2).astype(np.float32)
    step = Fuser(300, top_k=64).fuse(x)
    want = x.astype(np.float64) - np_lse(x.astype(np.float64))
    np.testing.assert_array_equal(step.ids, np.argsort(-x, kind="stable")[:64])
    np.testing.assert_allclose(step.logprobs, want[step.ids], atol=1e-5)
    assert step.cloud_top1 is None and (step.w_edge, step.w_cloud) == (1.0, 0.0)


def test_edge_best_on_a_zero_probability_cloud_id() -> None:
    """The edge's best token is a cloud id with probability 0, far above the rest: the sum over the other tokens must
    not underflow (it did, relative to the edge's max: log Z = -inf and a log-prob of +inf)."""
    x = np.array([np.nan, 0.0, 0.0, 0.0, 10000.0], np.float32)
    step = Fuser(5, weights=(0.5, 0.5), top_k=1).fuse(x, np.array([4], np.int32), np.array([np.nan], np.float32))
    assert step.ids.tolist() == [1]
    np.testing.assert_allclose(step.logprobs, [np.log(1 / 3)], rtol=1e-6)


def test_remap_topk() -> None:
    mapping = np.array([5, -1, 5, 2, 7], np.int32)
    ids = np.array([0, 1, 2, 3, 4], np.int32)
    lps = np.array([np.log(0.2), np.log(0.3), np.log(0.1), np.log(0.25), -np.inf], np.float32)
    out_ids, out_lps = fusion.remap_topk(ids, lps, mapping)
    np.testing.assert_array_equal(out_ids, [5, 2])  # 0 and 2 merged into 5 (0.3), 1 unmapped, 4 is -inf
    np.testing.assert_allclose(out_lps, np.log([0.3, 0.25]), rtol=1e-6)
    with pytest.raises(ValueError, match="outside"):
        fusion.remap_topk(np.array([9], np.int32), np.zeros(1, np.float32), mapping)


def test_openai_absent_entries_are_tail_tokens(rng: np.random.Generator) -> None:
    """-9999 (OpenAI's filler) means 'not in the cloud's top-k': the same as leaving the entry out."""
    V = 500
    x = (rng.standard_normal(V) * 2).astype(np.float32)
    ids, lps = sparse_cloud(rng, V, 8)
    fuser = Fuser(V, weights=(0.5, 0.5), top_k=30)
    padded_ids = np.concatenate([ids, np.array([3, 7], np.int32)]) if not {3, 7} & set(ids.tolist()) else ids
    padded_lps = np.concatenate([lps, np.full(len(padded_ids) - len(ids), -9999.0, np.float32)])
    with_filler, without = fuser.fuse(x, padded_ids, padded_lps), fuser.fuse(x, ids, lps)
    np.testing.assert_array_equal(with_filler.ids, without.ids)
    np.testing.assert_allclose(with_filler.logprobs, without.logprobs, atol=1e-6)
    out_ids, _ = fusion.remap_topk(np.array([0, 1], np.int32), np.array([-0.1, -9999.0], np.float32),
                                   np.array([4, 5], np.int32))
    np.testing.assert_array_equal(out_ids, [4])


# ---- input validation, GIL ---------------------------------------------------------------------------------------

def test_bad_inputs() -> None:
    V = 50
    f = Fuser(V)
    x = np.zeros(V, np.float32)
    with pytest.raises(TypeError, match="float32"):
        f.fuse(x.astype(np.float64))
    with pytest.raises(TypeError, match="ndarray|numpy"):
        f.fuse(list(x))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="C-contiguous"):
        f.fuse(np.zeros(2 * V, np.float32)[::2])
    with pytest.raises(ValueError, match="elements"):
        f.fuse(np.zeros(V + 1, np.float32))
    with pytest.raises(TypeError, match="int32"):
        f.fuse(x, np.array([1], np.int64), np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="outside"):
        f.fuse(x, np.array([V], np.int32), np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="repeated"):
        f.fuse(x, np.array([1, 1], np.int32), np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="together"):
        f.fuse(x, np.array([1], np.int32))
    with pytest.raises(ValueError, match="not both"):
        f.fuse(x, np.array([1], np.int32), np.zeros(1, np.float32), cloud_dense=x)
    with pytest.raises(ValueError, match="64"):
        Fuser(1000).fuse(np.zeros(1000, np.float32), np.arange(65, dtype=np.int32), np.zeros(65, np.float32))
    with pytest.raises(ValueError, match=r"\+inf"):
        f.fuse(np.full(V, np.inf, np.float32))
    with pytest.raises(ValueError, match=r"\+inf"):
        f.fuse(x, np.array([1], np.int32), np.array([np.inf], np.float32))
    with pytest.raises(ValueError, match="no finite"):
        f.fuse(np.full(V, np.nan, np.float32))
    with pytest.raises(ValueError, match="mode"):
        Fuser(V, mode="geometric")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weights"):
        Fuser(V, weights=(0.0, 0.0))
    with pytest.raises(ValueError, match="top_k"):
        Fuser(V, top_k=65)
    with pytest.raises(ValueError, match="variant"):
        Fuser(V, variant="sse9")
    with pytest.raises(ValueError, match="top_p"):
        FusedSampler(temperature=1.0, top_p=0.0)


def test_threads_share_nothing(rng: np.random.Generator) -> None:
    V = 151936
    x = (rng.standard_normal(V) * 3).astype(np.float32)
    c = np.log(rng.dirichlet(np.ones(V))).astype(np.float32)
    f = Fuser(V, weights="adaptive")
    want = f.fuse(x, cloud_dense=c)
    results = []
    threads = [threading.Thread(target=lambda: results.extend(f.fuse(x, cloud_dense=c) for _ in range(5)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 15
    for r in results:
        np.testing.assert_array_equal(r.ids, want.ids)
        np.testing.assert_array_equal(r.logprobs, want.logprobs)


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_cancellation_when_cloud_holds_edge_mass(variant: str) -> None:
    """The cloud's top-k holds the edge's whole mass: the tail sum must not be a total minus those terms."""
    x = np.full(32, -20.0, np.float32)
    x[1] = 0.0
    ids, lps = np.array([1], np.int32), np.array([-19.0], np.float32)
    for top_k in (1, 32):
        step = Fuser(32, weights=(0.5, 0.5), top_k=top_k, variant=variant).fuse(x, ids, lps)
        want = np_fuse(x, FusionWeights(0.5, 0.5), top_k=top_k, ids=ids, lps=lps)
        np.testing.assert_allclose(step.logprobs, want["logprobs"], atol=2e-6)
