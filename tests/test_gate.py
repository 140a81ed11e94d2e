"""The learned per-token gate (floe_edge.gate): its features on hand-made distributions, fitting on synthetic data
where the right side is predictable from confidence (it must beat both sides and static fusion), its file format,
federated averaging. Fuser / HybridGenerator / CLI / AdapterStore use: test_gate_use.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from floe_edge.fusion import Fuser
from floe_edge.gate import FEATURES, LOGPROB_FLOOR, GateError, LearnedGate, average, complete_topk, gate_features

N = len(FEATURES)


def logits_of(p: list[float]) -> np.ndarray:
    return np.log(np.asarray(p, dtype=np.float64)).astype(np.float32)


def ids_lps(ids: list[int], p: list[float]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(ids, np.int32), np.log(np.asarray(p, dtype=np.float64)).astype(np.float32)


def feature(f: np.ndarray, name: str) -> float:
    return float(f[FEATURES.index(name)])


# -- features ------------------------------------------------------------------------------------------------------

def test_features_on_a_hand_made_pair() -> None:
    edge = logits_of([0.5, 0.25, 0.125, 0.125])
    ids, lps = ids_lps([1, 0], [0.6, 0.2])  # mass 0.8: the two other tokens share 0.2, 0.1 each
    f = gate_features(edge, ids, lps, 3)
    ln4 = math.log(4)
    want = {"edge_p1": 0.5, "edge_entropy": 1.75 * math.log(2) / ln4, "edge_margin": 0.25, "cloud_p1": 0.6,
            "cloud_entropy": -(0.6 * math.log(0.6) + 0.2 * math.log(0.2) + 0.2 * math.log(0.1)) / ln4,
            "cloud_margin": 0.4, "agree": 0.0, "edge_lp_of_cloud_top1": math.log(0.25),
            "cloud_lp_of_edge_top1": math.log(0.2), "log1p_position": math.log(4)}
    assert list(want) == list(FEATURES)
    np.testing.assert_allclose(f, list(want.values()), rtol=1e-5, atol=1e-6)


def test_features_tail_floor_absent_entries_and_floors() -> None:
    edge = logits_of([0.05, 0.05, 0.8, 0.1])  # the edge's top-1 (2) is not in the cloud's top-k: the tail value
    ids = np.array([0, 1, 3], np.int32)
    lps = np.array([math.log(0.9), math.log(0.09995), -9999.0], np.float32)  # 3 absent; mass 0.99995
    f = gate_features(edge, ids, lps, 0, tail_floor=1e-3)
    z = 0.99995 + 1e-3  # the tail keeps tail_floor: renormalized
    assert feature(f, "cloud_p1") == pytest.approx(0.9 / z, rel=1e-5)
    assert feature(f, "cloud_lp_of_edge_top1") == pytest.approx(math.log(1e-3 / 2 / z), rel=1e-5)  # 2 tail tokens
    assert feature(f, "cloud_margin") == pytest.approx((0.9 - 0.09995) / z, rel=1e-4)
    assert feature(f, "agree") == 0.0 and feature(f, "log1p_position") == 0.0
    # a token the edge gives probability 0 is at the floor, not -inf
    edge0 = np.array([0.0, -np.inf, 1.0, 0.5], np.float32)
    f0 = gate_features(edge0, np.array([1], np.int32), np.array([-0.01], np.float32), 5)
    assert feature(f0, "edge_lp_of_cloud_top1") == LOGPROB_FLOOR and np.all(np.isfinite(f0))
    # a one-entry top-k: the margin is to the tail value
    f1 = gate_features(edge, np.array([2], np.int32), np.array([math.log(0.7)], np.float32), 1)
    assert feature(f1, "cloud_margin") == pytest.approx(0.7 - 0.1, rel=1e-5)
    assert feature(f1, "agree") == 1.0


def test_features_from_edge_stats_match_the_numpy_path(rng) -> None:
    fuser = Fuser(5000)
    for pos in range(5):
        x = (rng.standard_normal(5000) * 3).astype(np.float32)
        lp = x.astype(np.float64) - np.logaddexp.reduce(x.astype(np.float64))
        ids = np.argsort(-lp)[:20].astype(np.int32)
        cloud_lps = (lp[ids] - 0.3).astype(np.float32)  # another distribution: sharper than the edge's
        a = gate_features(x, ids, cloud_lps, pos)
        b = gate_features(x, ids, cloud_lps, pos, edge_stats=fuser.edge_stats(x))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_features_reject_bad_input() -> None:
    edge = logits_of([0.5, 0.5])
    with pytest.raises(ValueError, match="no cloud evidence"):
        gate_features(edge, np.array([0], np.int32), np.array([-9999.0], np.float32), 0)
    with pytest.raises(ValueError, match="in 0..1"):
        gate_features(edge, np.array([2], np.int32), np.array([-0.1], np.float32), 0)
    with pytest.raises(ValueError, match="repeated"):
        gate_features(edge, np.array([0, 0], np.int32), np.array([-1, -1], np.float32), 0)
    with pytest.raises(ValueError, match=r"\+inf"):
        gate_features(edge, np.array([0], np.int32), np.array([np.inf], np.float32), 0)
    with pytest.raises(ValueError, match="position"):
        gate_features(edge, np.array([0], np.int32), np.array([-0.1], np.float32), -1)
    with pytest.raises(ValueError, match="finite"):
        gate_features(np.full(2, -np.inf, np.float32), np.array([0], np.int32), np.array([-0.1], np.float32), 0)
    assert complete_topk([0], [-np.inf], 2) is None


# -- fitting on synthetic data ---------------------------------------------------------------------------------------

V, K = 300, 20


def _side(rng: np.random.Generator, t: int, knows: bool, right: tuple[float, float],
          wrong: tuple[float, float]) -> np.ndarray:
    """Logits with a bump on the right token (the side knows it) or on a wrong one; bump sizes overlap."""
    x = rng.normal(0, 1.0, V)
    if knows:
        x[t] += rng.uniform(*right)
    else:
        x[(t + 1 + rng.integers(V - 1)) % V] += rng.uniform(*wrong)
    return x


def synthetic(n: int, seed: int) -> list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
    """Complementary knowledge with different calibration: the edge knows the early (personal) tokens best and is
    modest; the cloud is often confidently wrong. Rows: (target, position, edge logits, cloud ids, log-probs)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        pos, t = int(rng.integers(0, 40)), int(rng.integers(V))
        edge = _side(rng, t, rng.random() < (0.7 if pos < 10 else 0.35), (2.0, 6.0), (0.0, 4.0)).astype(np.float32)
        c = _side(rng, t, rng.random() < 0.45, (3.0, 8.0), (2.0, 8.0))
        lp = c - np.logaddexp.reduce(c)
        ids = np.argsort(-lp, kind="stable")[:K].astype(np.int32)
        rows.append((t, pos, edge, ids, lp[ids].astype(np.float32)))
    return rows


def fit_on(rows: list, **kw: float) -> LearnedGate:
    feats = np.array([gate_features(e, ids, lps, pos) for _, pos, e, ids, lps in rows])
    edge_right = np.array([int(np.argmax(e)) == t for t, _, e, _, _ in rows])
    cloud_right = np.array([int(ids[0]) == t for t, _, _, ids, _ in rows])
    return LearnedGate.fit(feats, cloud_right, edge_right, **kw)


def fused_accuracy(rows: list, fuser: Fuser) -> float:
    return float(np.mean([fuser.fuse(e, ids, lps, position=pos).top1 == t for t, pos, e, ids, lps in rows]))


@pytest.fixture(scope="module")
def trained() -> LearnedGate:
    return fit_on(synthetic(3000, 1))


def test_gate_beats_both_sides_and_static_fusion(trained: LearnedGate) -> None:
    test = synthetic(2000, 2)
    edge = float(np.mean([int(np.argmax(e)) == t for t, _, e, _, _ in test]))
    cloud = float(np.mean([int(ids[0]) == t for t, _, _, ids, _ in test]))
    static = {w: fused_accuracy(test, Fuser(V, weights=(1 - w, w))) for w in np.linspace(0.1, 0.9, 9)}
    adaptive = fused_accuracy(test, Fuser(V, weights="adaptive"))
    gated = fused_accuracy(test, Fuser(V, weights=trained))
    # measured: edge 0.332, cloud 0.439, best static 0.478 (w_c 0.5), adaptive 0.507, gate 0.535
    assert gated >= max(edge, cloud) + 0.07, (gated, edge, cloud)
    assert gated >= max(static.values()) + 0.04, (gated, static)
    assert gated >= adaptive + 0.015, (gated, adaptive)
    assert trained.meta["pick_accuracy"] > 0.75


def test_fit_is_deterministic_and_learns_the_calibration(trained: LearnedGate) -> None:
    again = fit_on(synthetic(3000, 1))
    assert again.to_json() == trained.to_json()
    coef = dict(zip(FEATURES, trained.coef))
    assert coef["edge_p1"] < 0 < coef["cloud_p1"]  # a confident edge pulls weight to it, a confident cloud to it
    assert coef["log1p_position"] > 0  # the edge knows the early tokens best
    stronger = fit_on(synthetic(3000, 1), l2=1e4)  # heavy L2: coefficients shrink
    assert np.abs(stronger.coef).sum() < 0.2 * np.abs(trained.coef).sum()


def test_skip_threshold_keeps_the_edge_right_where_it_skips() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    p1 = rng.uniform(0, 1, n)
    edge_right = rng.random(n) < p1 ** 0.25  # better than calibrated near the top
    feats = rng.normal(size=(n, N))
    feats[:, FEATURES.index("edge_p1")] = p1
    cloud_right = ~edge_right | (rng.random(n) < 0.3)
    gate = LearnedGate.fit(feats, cloud_right, edge_right)
    t = gate.skip_threshold
    assert t is not None and 0.5 < t < 1.0
    above = p1 >= t
    assert above.sum() >= 50 and edge_right[above].mean() >= 0.99
    lower = p1 >= t - 0.05  # the threshold is the lowest that holds (here: lower ones do not)
    assert edge_right[lower].mean() < 0.99 or lower.sum() == above.sum()
    # nowhere near 99%: disabled
    never = LearnedGate.fit(feats, cloud_right, rng.random(n) < 0.5)
    assert never.skip_threshold is None and never.meta["skip_share"] == 0.0


def test_fit_rejects_data_it_cannot_learn_from() -> None:
    feats = np.zeros((10, N))
    with pytest.raises(ValueError, match="exactly one side is right"):
        LearnedGate.fit(feats, np.ones(10, bool), np.ones(10, bool))
    with pytest.raises(ValueError, match="shape"):
        LearnedGate.fit(np.zeros((10, N - 1)), np.ones(10, bool), np.zeros(10, bool))
    with pytest.raises(ValueError, match="one value per row"):
        LearnedGate.fit(feats, np.ones(9, bool), np.zeros(10, bool))
    bad = feats.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        LearnedGate.fit(bad, np.ones(10, bool), np.zeros(10, bool))


def test_weights_and_cloud_weight(trained: LearnedGate) -> None:
    rows = synthetic(5, 3)
    feats = np.array([gate_features(e, ids, lps, pos) for _, pos, e, ids, lps in rows])
    p = trained.cloud_weight(feats)
    assert p.shape == (5,) and np.all((p > 0) & (p < 1))
    for i in range(5):
        we, wc = trained.weights(feats[i])
        assert wc == pytest.approx(p[i]) and we + wc == pytest.approx(1.0)
        assert trained.cloud_weight(feats[i]) == pytest.approx(p[i])
    with pytest.raises(ValueError, match="shape"):
        trained.cloud_weight(np.zeros(N + 1))


# -- files ---------------------------------------------------------------------------------------------------------

def test_save_load_round_trip(trained: LearnedGate, tmp_path) -> None:
    path = tmp_path / "g.json"
    trained.save(path)
    back = LearnedGate.load(path)
    assert back.to_json() == trained.to_json()
    x = np.linspace(-1, 1, N)
    assert back.cloud_weight(x) == trained.cloud_weight(x)
    obj = json.loads(path.read_text())
    assert obj["format"] == "floe-gate" and obj["version"] == 1 and obj["features"] == list(FEATURES)
    assert [p.name for p in tmp_path.iterdir()] == ["g.json"]  # no temporary file left


@pytest.mark.parametrize("change, message", [
    (lambda o: o.update(format="other"), "not a floe gate"),
    (lambda o: o.update(version=2), "version 2"),
    (lambda o: o.update(features=list(reversed(FEATURES))), "features"),
    (lambda o: o.update(coef=o["coef"][:-1]), "coef must be a list of 10"),
    (lambda o: o["mean"].__setitem__(0, "x"), "mean must be a list of 10"),
    (lambda o: o.update(scale=[0.0] * N), "scale must be > 0"),
    (lambda o: o.update(intercept=None), "intercept"),
    (lambda o: o.update(skip_threshold=1.5), "skip_threshold"),
    (lambda o: o.update(meta=[1]), "meta"),
])
def test_bad_gate_files(trained: LearnedGate, tmp_path, change, message) -> None:
    obj = trained.to_json()
    change(obj)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(GateError, match=message) as e:
        LearnedGate.load(path)
    assert str(path) in str(e.value)


def test_unreadable_gate_files(tmp_path) -> None:
    with pytest.raises(GateError, match="no such gate file"):
        LearnedGate.load(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(GateError, match="not JSON"):
        LearnedGate.load(tmp_path / "x.json")
    (tmp_path / "nan.json").write_text('{"format": "floe-gate", "version": 1, "kind": "logistic", "coef": NaN}')
    with pytest.raises(GateError):
        LearnedGate.load(tmp_path / "nan.json")


# -- federation ----------------------------------------------------------------------------------------------------

def test_average_is_the_weighted_mean_of_every_parameter(trained: LearnedGate) -> None:
    other = fit_on(synthetic(1500, 7))
    other.skip_threshold = 0.9
    trained_t = LearnedGate(trained.mean, trained.scale, trained.coef, trained.intercept, 0.98)
    avg = average([trained_t, other], [1.0, 3.0])
    for name in ("mean", "scale", "coef"):
        np.testing.assert_allclose(getattr(avg, name), 0.25 * getattr(trained, name) + 0.75 * getattr(other, name))
    assert avg.intercept == pytest.approx(0.25 * trained.intercept + 0.75 * other.intercept)
    assert avg.skip_threshold == pytest.approx(0.25 * 0.98 + 0.75 * 0.9)
    same = average([trained, trained, trained])
    np.testing.assert_allclose(same.coef, trained.coef)
    assert same.skip_threshold == pytest.approx(trained.skip_threshold)
    never = LearnedGate(trained.mean, trained.scale, trained.coef, trained.intercept, None)
    assert average([trained_t, never]).skip_threshold == pytest.approx(0.98)  # over the gates that have one
    assert average([never, never]).skip_threshold is None
    # an averaged gate still works as a gate
    test = synthetic(800, 2)
    assert fused_accuracy(test, Fuser(V, weights=average([trained, other]))) > \
        fused_accuracy(test, Fuser(V, weights=(0.5, 0.5)))


def test_average_rejects_bad_weights(trained: LearnedGate) -> None:
    with pytest.raises(ValueError, match="at least one"):
        average([])
    for w in ([1.0], [-1.0, 2.0], [0.0, 0.0], [np.nan, 1.0]):
        with pytest.raises(ValueError, match="weights"):
            average([trained, trained], w)
