"""The learned gate in use: Fuser(weights=gate | "gate"), per-call weights, HybridGenerator with the fake cloud of
test_hybrid.py, `floe generate --fusion gate [--gate FILE]`, and gates stored with adapter versions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_adapters_store import small_adapter
from test_hybrid import PROMPT, FakeCloud, greedy_reference, run

from floe_edge import NativeSLM, paths
from floe_edge.adapters import AdapterError, AdapterStore
from floe_edge.fusion import Fuser, FusionWeights
from floe_edge.gate import FEATURES, GateError, LearnedGate, gate_features, gate_path
from floe_edge.hybrid import HybridGenerator, Source

N = len(FEATURES)
V = 50


def hand_gate(skip: float | None = 0.9) -> LearnedGate:
    """p = sigmoid(2 cloud_p1 - 2 edge_p1 + 0.1 log1p(position))."""
    coef = np.zeros(N)
    coef[FEATURES.index("cloud_p1")], coef[FEATURES.index("edge_p1")] = 2.0, -2.0
    coef[FEATURES.index("log1p_position")] = 0.1
    return LearnedGate(np.zeros(N), np.ones(N), coef, 0.0, skip)


class RecordingGate(LearnedGate):
    """Remembers the position of every token it weighed."""

    def weights(self, features):  # type: ignore[no-untyped-def]
        self.__dict__.setdefault("positions", []).append(round(math.expm1(features[-1])))
        return super().weights(features)


def evidence(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    edge = rng.normal(0, 1, V).astype(np.float32)
    c = rng.normal(0, 2, V)
    lp = c - np.logaddexp.reduce(c)
    ids = np.argsort(-lp)[:8].astype(np.int32)
    return edge, ids, lp[ids].astype(np.float32)


# -- Fuser -----------------------------------------------------------------------------------------------------------

def test_fuser_fuses_with_the_gates_weights_per_position(rng) -> None:
    gate = hand_gate()
    fuser = Fuser(V, weights=gate)
    assert fuser.gate is gate and fuser.weights.gate == 0.9
    for pos in range(4):
        edge, ids, lps = evidence(rng)
        step = fuser.fuse(edge, ids, lps)
        we, wc = gate.weights(gate_features(edge, ids, lps, pos))
        assert (step.w_edge, step.w_cloud) == pytest.approx((we, wc), abs=1e-6) and not step.gated
        # the same weights given per call give the same step
        same = Fuser(V).fuse(edge, ids, lps, weights=(we, wc))
        np.testing.assert_array_equal(same.ids, step.ids)
        np.testing.assert_allclose(same.logprobs, step.logprobs, atol=1e-6)
    assert fuser.position == 4
    edge, ids, lps = evidence(rng)
    assert fuser.fuse(edge, ids, lps, position=0).w_cloud == pytest.approx(gate.weights(
        gate_features(edge, ids, lps, 0))[1], abs=1e-6)
    fuser.reset()
    assert fuser.position == 0
    with pytest.raises(ValueError, match="position"):
        fuser.fuse(edge, ids, lps, position=-2)


def test_gate_skip_threshold_gates_and_drives_needs_cloud() -> None:
    fuser = Fuser(V, weights=hand_gate(skip=0.9))
    sure = np.zeros(V, np.float32)
    sure[3] = 10.0  # p1 ~ 0.998
    unsure = np.zeros(V, np.float32)
    unsure[3] = 2.0
    ids, lps = np.array([7, 3], np.int32), np.log(np.array([0.6, 0.3])).astype(np.float32)
    assert not fuser.edge_stats(sure).needs_cloud and fuser.edge_stats(unsure).needs_cloud
    step = fuser.fuse(sure, ids, lps)
    assert step.gated and (step.w_edge, step.w_cloud) == (1.0, 0.0) and step.top1 == 3
    assert not fuser.fuse(unsure, ids, lps).gated
    never = Fuser(V, weights=hand_gate(skip=None))
    assert never.edge_stats(sure).needs_cloud and not never.fuse(sure, ids, lps).gated
    # no cloud evidence: the edge alone, as with any weights
    alone = fuser.fuse(unsure)
    assert alone.top1 == 3 and alone.cloud_top1 is None and alone.w_cloud == 0.0


def test_gate_with_dense_cloud_reads_its_top_k(rng) -> None:
    gate = hand_gate(skip=None)
    edge = rng.normal(0, 1, V).astype(np.float32)
    c = rng.normal(0, 2, V)
    dense = (c - np.logaddexp.reduce(c)).astype(np.float32)
    step = Fuser(V, weights=gate).fuse(edge, cloud_dense=dense)
    top = np.argsort(-dense, kind="stable")[:64].astype(np.int32)
    assert step.w_cloud == pytest.approx(gate.weights(gate_features(edge, top, dense[top], 0))[1], abs=1e-5)


def test_per_call_weights_override() -> None:
    fuser = Fuser(V, weights=FusionWeights(0.5, 0.5, adaptive=True, gate=0.9))
    edge = np.zeros(V, np.float32)
    edge[1] = 1.0
    ids, lps = np.array([2], np.int32), np.array([-0.05], np.float32)
    step = fuser.fuse(edge, ids, lps, weights=(0.0, 1.0))  # adaptive off for this call: the cloud alone
    assert (step.w_edge, step.w_cloud) == (0.0, 1.0) and step.top1 == 2
    assert fuser.fuse(edge, ids, lps).w_cloud not in (0.0, 1.0)  # the configured rule again
    edge[1] = 20.0  # a confident edge is gated whatever the override says
    gated = fuser.fuse(edge, ids, lps, weights=(0.0, 1.0))
    assert gated.gated and gated.top1 == 1
    for bad in ((-1.0, 1.0), (0.0, 0.0), (float("nan"), 1.0)):
        with pytest.raises(ValueError, match="weights"):
            fuser.fuse(edge, ids, lps, weights=bad)


def test_gate_preset_reads_floe_home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FLOE_HOME", str(tmp_path))
    assert paths.gates_dir() == tmp_path / "gates" and gate_path("code") == tmp_path / "gates" / "code.json"
    with pytest.raises(GateError, match="floe eval") as e:
        Fuser(V, weights="gate")
    assert str(tmp_path / "gates" / "default.json") in str(e.value)
    (tmp_path / "gates").mkdir()
    hand_gate(0.8).save(tmp_path / "gates" / "default.json")
    hand_gate(0.7).save(tmp_path / "gates" / "commands.json")
    assert Fuser(V, weights="gate").weights.gate == pytest.approx(0.8)
    assert Fuser(V, weights="gate:commands").weights.gate == pytest.approx(0.7)
    with pytest.raises(ValueError, match="bad app name"):
        Fuser(V, weights="gate:../x")
    with pytest.raises(ValueError, match="gate:<app>"):
        Fuser(V, weights="nope")


# -- HybridGenerator and the CLI -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def edge(smollm2_path):
    with NativeSLM(smollm2_path, n_ctx=512) as slm:
        yield slm


def test_hybrid_generator_with_a_learned_gate(edge, smollm2_path) -> None:
    """The cloud is the same model: any weights keep the argmax, so greedy output is the edge's; the gate weighed
    every fused token at its position in the answer, and its skip threshold let confident tokens skip the cloud."""
    want = greedy_reference(edge, PROMPT, 24)
    base = hand_gate(skip=0.9)
    gate = RecordingGate(base.mean, base.scale, base.coef, base.intercept, base.skip_threshold)
    with HybridGenerator(edge, FakeCloud(smollm2_path), fusion=gate, deadline_ms=1000) as gen:
        got = run(gen)
        assert gen.fuser.gate is gate
    assert [t.id for t in got] == want
    fused_at = [i for i, t in enumerate(got) if t.source in (Source.FUSED, Source.CLOUD_DRAFT)]
    s = gen.last_stats
    assert fused_at and s.sources[Source.EDGE.value] > 0 and s.deadline_misses == 0
    assert gate.positions == fused_at  # type: ignore[attr-defined]


def test_cli_generate_with_gate(smollm2_path, tmp_path, monkeypatch, capsys) -> None:
    from floe_edge.cli import main
    from floe_edge.cloud.server import CloudServer

    monkeypatch.setenv("FLOE_HOME", str(tmp_path / "home"))
    common = ["generate", "--model", str(smollm2_path), "--prompt", "The three primary colors are", "-n", "8"]
    # no gate yet: a clear error naming where it should be, before any model is loaded or cloud asked
    assert main([*common, "--cloud", "http://127.0.0.1:9", "--fusion", "gate"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "home" / "gates" / "default.json") in err and "floe eval" in err
    assert main([*common, "--cloud", "http://127.0.0.1:9", "--gate", str(tmp_path / "none.json")]) == 2
    assert "no such gate file" in capsys.readouterr().err
    hand_gate().save(tmp_path / "g.json")
    assert main([*common, "--cloud", "http://127.0.0.1:9", "--fusion", "code", "--gate", str(tmp_path / "g.json")]) \
        == 2
    assert "--gate FILE goes with --fusion gate" in capsys.readouterr().err
    with CloudServer(smollm2_path, api_key="k", n_ctx=512) as server:
        rc = main([*common, "--cloud", server.url, "--api-key", "k", "--deadline-ms", "400", "--json",
                   "--gate", str(tmp_path / "g.json")])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["tokens"] == len(out["ids"]) == 8


# -- gates stored with adapter versions ------------------------------------------------------------------------------

def test_adapter_store_keeps_a_gate_per_version(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "store")
    v1 = store.add(small_adapter(tmp_path, 1), "x86-avx2", "commands")
    v2 = store.add(small_adapter(tmp_path, 2), "x86-avx2", "commands")
    assert store.get_gate("x86-avx2", "commands") is None  # nothing active
    store.activate("x86-avx2", "commands", v2)
    assert store.get_gate("x86-avx2", "commands") is None  # active, no gate
    g1, g2 = hand_gate(0.8), hand_gate(0.95)
    store.put_gate("x86-avx2", "commands", v1, g1)
    path = store.put_gate("x86-avx2", "commands", v2, g2)
    assert path == tmp_path / "store" / "x86-avx2" / "commands" / "v2" / "gate.json"
    assert store.get_gate("x86-avx2", "commands").to_json() == g2.to_json()
    assert store.get_gate("x86-avx2", "commands", v1).to_json() == g1.to_json()
    store.activate("x86-avx2", "commands", v1)  # the gate follows the active version
    assert store.get_gate("x86-avx2", "commands").skip_threshold == 0.8
    assert store.verify() == []
    with pytest.raises(AdapterError, match="no version 7"):
        store.put_gate("x86-avx2", "commands", 7, g1)
    path.write_text("{broken")
    with pytest.raises(GateError, match="not JSON"):
        store.get_gate("x86-avx2", "commands", v2)
    problems = store.verify()
    assert len(problems) == 1 and "v2" in problems[0] and "gate.json" in problems[0]
