"""The federation's round logic without training: the codec between factors and Flower arrays, what each client is
sent, screening (a NaN or wrong-shape client is refused and the round goes on), clipping relative to the global
adapter, the FlexLoRA mean over the clients that train a projection, DP noise, and the Flower strategy on fake
replies (an error reply and a node that never answers do not stop the round)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from floe_edge.fl.aggregate import update_norm
from floe_edge.fl.client import FlConfigError, parse_clients, spec_for_node
from floe_edge.fl.codec import CodecError, arrays_to_factors, factors_to_arrays
from floe_edge.fl.rounds import FederatedCore, Reply, projection_names, truncate
from floe_edge.fl.settings import RunSettings

N_OUT, N_IN, LAYERS = 40, 32, 2
TARGETS = {"rpi4": (4, ("q", "v")), "rpi5": (8, ("q", "k", "v", "o")), "x86": (12, ("q", "k", "v", "o", "up"))}


def client_factors(seed: int, rank: int, targets: tuple[str, ...]) -> dict:
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal((rank, N_IN)), rng.standard_normal((N_OUT, rank)) * 0.1)
            for name in projection_names(targets, LAYERS)}


def dense(pair) -> np.ndarray:
    return np.asarray(pair[1], np.float64) @ np.asarray(pair[0], np.float64)


def replies() -> list[Reply]:
    return [Reply(f"c{i}", client_factors(i, *TARGETS[p]), float(10 * (i + 1)), {"profile": p})
            for i, p in enumerate(TARGETS)]


def test_codec_round_trip_and_errors() -> None:
    factors = client_factors(0, 4, ("q", "down"))
    back = arrays_to_factors(factors_to_arrays(factors))
    assert back.keys() == factors.keys()
    for name, (a, b) in factors.items():
        np.testing.assert_array_equal(back[name][0], a.astype(np.float32))
        np.testing.assert_array_equal(back[name][1], b.astype(np.float32))
    with pytest.raises(CodecError, match="no B factor"):
        arrays_to_factors({"blk.0.attn_q.weight/A": np.zeros((2, 3))})
    with pytest.raises(CodecError, match="expected"):
        arrays_to_factors({"blk.0.attn_q.weight/C": np.zeros((2, 3))})


@pytest.mark.skipif(importlib.util.find_spec("flwr") is None, reason="needs the fl extra (flwr)")
def test_codec_through_a_flower_array_record() -> None:
    from floe_edge.fl.codec import from_record, to_record

    factors = client_factors(1, 8, ("q", "k"))
    back = from_record(to_record(factors))
    for name, (a, b) in factors.items():
        np.testing.assert_allclose(back[name][0], a, rtol=1e-6)
        np.testing.assert_allclose(back[name][1], b, rtol=1e-6)


def test_the_global_is_the_mean_over_the_clients_that_train_each_projection() -> None:
    core = FederatedCore(global_rank=24)  # ≥ the sum of ranks: the SVD truncation is exact
    got = replies()
    outcome = core.aggregate_round(1, got)
    assert outcome.used == ["c0", "c1", "c2"] and not outcome.refused and outcome.changed
    for name, pair in core.global_factors.items():
        holders = [r for r in got if name in r.factors]
        expect = sum(r.weight * dense(r.factors[name]) for r in holders) / sum(r.weight for r in holders)
        np.testing.assert_allclose(dense(pair), expect, atol=1e-4)
    assert sum(".ffn_up." in n for n in core.global_factors) == LAYERS  # only x86 trains up: kept at full size


def test_each_client_is_sent_its_own_projections_at_its_rank() -> None:
    core = FederatedCore(global_rank=16)
    assert core.for_client(4, ("q", "v")) == {}  # before the first aggregation: a fresh LoRA
    core.aggregate_round(1, replies())
    mine = core.for_client(4, ("q", "v"))
    assert sorted(mine) == sorted(projection_names(("q", "v"), LAYERS))
    assert all(a.shape == (4, N_IN) and b.shape == (N_OUT, 4) for a, b in mine.values())
    full = truncate(core.global_factors, 16)
    assert len(full) == len(core.global_factors)


def test_a_nan_client_and_a_wrong_shape_client_are_refused_and_the_round_goes_on() -> None:
    got = replies()
    name = next(iter(got[0].factors))
    a, b = got[0].factors[name]
    got[0].factors[name] = (a, np.where(np.arange(b.size).reshape(b.shape) == 3, np.nan, b))
    got.append(Reply("wide", {n: (np.ones((4, N_IN + 1)), np.ones((N_OUT, 4))) for n in got[1].factors}, 5.0))
    got.append(Reply("empty", {}, 5.0))
    got.append(Reply("zero-weight", client_factors(9, 4, ("q",)), 0.0))
    core = FederatedCore(global_rank=8)
    outcome = core.aggregate_round(1, got)
    refused = dict(outcome.refused)
    assert outcome.used == ["c1", "c2"] and outcome.changed
    assert "NaN" in refused["c0"] and "ΔW shape" in refused["wide"] and "no adapter" in refused["empty"]
    assert "weight" in refused["zero-weight"]
    assert all(np.isfinite(a).all() and np.isfinite(b).all() for a, b in core.global_factors.values())
    # a later round: a client whose shapes disagree with the global adapter's is refused even when alone
    late = FederatedCore(global_rank=8, global_factors=core.global_factors)
    lone = {n: (np.ones((4, N_IN + 3)), np.ones((N_OUT, 4))) for n in projection_names(("q",), LAYERS)}
    outcome = late.aggregate_round(2, [Reply("lone", lone, 1.0)])
    assert outcome.used == [] and not outcome.changed and late.global_factors is not None


def test_clipping_bounds_each_update_relative_to_the_global_adapter() -> None:
    core = FederatedCore(global_rank=24)
    core.aggregate_round(1, replies()[:1])
    start = {n: dense(p) for n, p in core.global_factors.items()}
    clip = FederatedCore(global_rank=24, clip_norm=0.5, global_factors=core.global_factors)
    big = Reply("big", {n: (a, b * 10) for n, (a, b) in client_factors(7, 4, ("q", "v")).items()}, 1.0)
    outcome = clip.aggregate_round(2, [big])
    assert outcome.clipped == ["big"] and outcome.norms["big"] > 0.5
    moved = np.sqrt(sum(np.sum((dense(clip.global_factors[n]) - start[n]) ** 2) for n in start))
    assert moved == pytest.approx(0.5, rel=1e-3)
    assert update_norm(*big.factors[next(iter(big.factors))]) > 0.5  # the reply itself is left as it was


def test_dp_noise_is_calibrated_to_the_clip_and_the_fewest_holders() -> None:
    with pytest.raises(ValueError, match="clipping bound"):
        FederatedCore(dp_noise=1.0)
    core = FederatedCore(global_rank=8, clip_norm=1.0, dp_noise=0.8, seed=3)
    outcome = core.aggregate_round(1, replies())
    assert outcome.noise_std == pytest.approx(0.8 * 1.0 / 1)  # ffn_up is trained by one client only
    quiet = FederatedCore(global_rank=8, clip_norm=1.0)
    quiet.aggregate_round(1, replies())
    name = projection_names(("q",), 1)[0]
    assert not np.allclose(dense(core.global_factors[name]), dense(quiet.global_factors[name]), atol=1e-3)


def test_clients_list_and_node_config() -> None:
    specs = parse_clients("u1:rpi4, u2:rpi5,u3:x86-avx2:6")
    assert [(s.user, s.profile, s.max_train) for s in specs] == [("u1", "rpi4", None), ("u2", "rpi5", None),
                                                                 ("u3", "x86-avx2", 6)]
    assert spec_for_node(specs, {"partition-id": 2, "num-partitions": 3}).user == "u3"
    assert spec_for_node(specs, {"user": "u9", "profile": "rpi5"}).user == "u9"
    for bad in ("u1", "u1:rpi4:0", "u1::3"):
        with pytest.raises(FlConfigError):
            parse_clients(bad)
    with pytest.raises(FlConfigError, match="partition-id"):
        spec_for_node(specs, {"partition-id": 3})
    with pytest.raises(FlConfigError, match="unknown"):
        RunSettings.from_run_config({"num-rounds": 3})
    assert RunSettings.from_run_config({"steps": 4, "lr": 1}).lr == 1.0


@pytest.mark.skipif(importlib.util.find_spec("flwr") is None, reason="needs the fl extra (flwr)")
def test_strategy_goes_on_without_a_silent_node_and_an_error_reply(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from floe_edge.fl.codec import to_record
    from floe_edge.fl.server_app import FloeStrategy

    class FakeGrid:
        def get_node_ids(self) -> list[int]:
            return [11, 12, 13, 14]

    for key, value in (("_run_id", 1), ("_task_id", 1), ("_node_id", 0)):  # what a running ServerApp has
        monkeypatch.setattr(TaskIdentity, key, value, raising=False)
    strategy = FloeStrategy(FederatedCore(global_rank=8), tmp_path, min_nodes=4, node_wait=0)
    sent = {m.metadata.dst_node_id: m for m in strategy.configure_train(1, None, ConfigRecord(), FakeGrid())}
    assert sorted(sent) == [11, 12, 13, 14]
    for m in sent.values():
        m.metadata.__dict__["_message_id"] = m.object_id  # what the grid does when it pushes them
    out = []
    for node, (profile, (rank, targets)) in zip((11, 12), list(TARGETS.items())[:2]):
        content = RecordDict({"arrays": to_record(client_factors(node, rank, targets)),
                              "metrics": MetricRecord({"examples": 8, "rank": rank}),
                              "info": ConfigRecord({"user": f"u{node}", "profile": profile,
                                                    "targets": ",".join(targets), "architecture": "llama"})})
        out.append(Message(content=content, reply_to=sent[node]))
    from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message

    out.append(create_message_error_unavailable_res_message(sent[13].metadata, "node went away"))  # 14: silent
    arrays, metrics = strategy.aggregate_train(1, out)
    assert arrays is not None and metrics["used"] == 2 and metrics["missing"] == 1 and metrics["failed"] == 1
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    status = {r["client"]: r["status"] for r in rows if "client" in r}
    assert status["u11"] == "used" and status["node-14"] == "no reply" and "Node Unavailable" in status["node-13"]
    assert (tmp_path / "global.gguf").exists()
    again = {m.metadata.dst_node_id: m for m in strategy.configure_train(2, None, ConfigRecord(), FakeGrid())}
    from floe_edge.fl.codec import from_record

    assert all(a.shape[0] == 4 for a, _ in from_record(again[11].content["arrays"]).values())  # u11: rpi4, r4
    assert all(a.shape[0] == 8 for a, _ in from_record(again[14].content["arrays"]).values())  # unknown: rank R
