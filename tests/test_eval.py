"""`floe eval`: selection of records, the tallies and the paper-shaped table, clear errors on bad folders, and a quick
run on real models over a data folder it has never seen (SmolLM2 edge and cloud, the cloud's knowledge on the server).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from floe_edge.data import Record, generate
from floe_edge.evaluation import EvalOptions, markdown_table
from floe_edge.evaluation.greedy import Answer, normalize
from floe_edge.evaluation.report import Tally
from floe_edge.evaluation.runner import select
from floe_edge.evaluation.user import HeldIn

REC = {"user": "u1", "task": "qa", "private_context": "p", "cloud_context": "c", "prompt": "User: q\nAssistant:",
       "completion": " a."}


def _floe(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "floe_edge.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ})


def test_select_takes_first_users_and_caps_per_task() -> None:
    recs = [Record(**{**REC, "user": u, "task": t}) for u in ("u2", "u1", "u3") for t in ("qa", "code")
            for _ in range(3)]
    chosen = select(recs, users=2, per_task=2)
    assert list(chosen) == ["u2", "u1"]
    assert [r.task for r in chosen["u2"]] == ["qa", "qa", "code", "code"]
    assert sum(map(len, select(recs, None, None).values())) == len(recs)


def _answer(exact: bool, ms: float, sent: int = 1000, share: float = 0.5) -> Answer:
    return Answer("x", exact, ms, 5, 1, share, sent, 2 * sent)


def test_tally_counts_tokens_records_latency_and_bytes() -> None:
    t = Tally([30.0, 80.0])
    t.add_hits("edge", "qa", True, np.array([True, False, True, True]))
    t.add_hits("edge", "code", False, np.array([False, False]))
    t.add_answer("edge", "qa", True, 30.0, _answer(True, 100.0))
    t.add_answer("edge", "code", False, 30.0, _answer(False, 300.0))
    t.add_answer("edge", "code", False, 80.0, _answer(True, 900.0))  # not the first RTT: latency only
    t.add_grid(0.5, np.array([True, False]))
    out = t.as_json()
    edge = out["systems"]["edge"]
    assert edge["top1"] == 50.0 and edge["n_tokens"] == 6
    assert edge["by_task"]["qa"]["top1"] == 75.0 and edge["by_task"]["code"]["top1"] == 0.0
    assert edge["by_novelty"]["novel"]["top1"] == 75.0 and edge["by_novelty"]["known"]["n_tokens"] == 2
    assert edge["exact"] == 50.0 and edge["by_task"]["qa"]["exact"] == 100.0
    assert edge["latency_ms"]["30"]["p50"] == 200.0 and edge["latency_ms"]["80"]["n"] == 1
    assert edge["kb_up_per_query"] == 1.0 and edge["kb_per_query"] == 3.0 and edge["deadline_misses"] == 2
    assert out["static_weight_sweep"] == {"0.5": 50.0}


def test_markdown_table_has_paper_columns_and_every_system() -> None:
    t = Tally([30.0])
    for name, hits in (("edge-generic", [False, False]), ("edge", [True, False]), ("floe-gate", [True, True])):
        t.add_hits(name, "qa", None, np.array(hits))
        t.add_answer(name, "qa", None, 30.0, _answer(True, 50.0))
    lines = markdown_table(t.as_json(), 30.0)
    assert "paper" in lines[0] and "RTT 30 ms" in lines[0]
    floe = next(line for line in lines if line.startswith("| floe-gate |"))
    assert "100.0%" in floe and "+100.0" in floe and "120 ms, 84%" in floe  # ours, gain, the paper's row
    assert any(line.startswith("| edge |") and "+50.0" in line for line in lines)


def test_static_weight_is_the_best_held_in_one() -> None:
    h = HeldIn()
    h.grid["qa"] = {w: [0, 10] for w in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)}
    h.grid["qa"][0.3] = [7, 10]
    h.grid["qa"][0.7] = [7, 10]
    assert h.static_weight("qa") == 0.3  # a tie goes to the lower cloud weight
    assert h.static_weight("code") == 0.5  # nothing learned: the middle


def test_normalize_is_whitespace_only() -> None:
    assert normalize("  set_dim(dev.k41,\n 30) ") == "set_dim(dev.k41, 30)"
    assert normalize("A") != normalize("a")


@pytest.mark.parametrize("kwargs, match", [({"systems": ("edge", "nope")}, "unknown system 'nope'"),
                                           ({"train": "cloud"}, "--train"), ({"rtts": ()}, "--rtt"),
                                           ({"users": 0}, "users"), ({"backend": "tpu"}, "--backend")])
def test_options_are_checked(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EvalOptions(data=Path("."), **kwargs)


def test_bad_folders_are_clear_errors(tmp_path: Path) -> None:
    r = _floe("eval", "--data", str(tmp_path / "nowhere"), "--quick")
    assert r.returncode == 2 and "not a directory" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "test.jsonl").write_text(json.dumps(REC) + "\n{oops\n", encoding="utf-8")
    r = _floe("eval", "--data", str(tmp_path), "--quick")
    assert r.returncode == 2 and f"{tmp_path / 'test.jsonl'}:2: not JSON" in r.stderr
    (tmp_path / "test.jsonl").write_text("", encoding="utf-8")
    r = _floe("eval", "--data", str(tmp_path), "--quick")
    assert r.returncode == 2 and "no records" in r.stderr
    r = _floe("eval", "--data", str(tmp_path), "--systems", "edge,bogus")
    assert r.returncode == 2 and "expected a comma-separated list" in r.stderr


def test_quick_eval_on_an_unseen_folder(tmp_path: Path, smollm2_path: Path) -> None:
    """A seed no test uses elsewhere; every system scored, the JSON in the issue's shape, the cloud helped."""
    data = tmp_path / "data"
    generate(data, users=2, seed=9137, train_per_task=4, test_per_task=2)
    out = tmp_path / "eval.json"
    r = _floe("eval", "--data", str(data), "--quick", "--json", str(out), "--plots", str(tmp_path / "plots"),
              timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    systems = result["systems"]
    assert set(systems) == {"cloud", "edge", "edge-generic", "floe-static", "floe-adaptive", "floe-gate", "oracle"}
    n = systems["edge"]["n_tokens"]
    assert n > 20 and all(s["n_tokens"] == n for s in systems.values())
    for s in systems.values():
        assert set(s["by_task"]) == {"commands", "qa", "code"} and 0 <= s["top1"] <= 100
    # the oracle is the ceiling of every single side, and the sides know different things
    assert systems["oracle"]["top1"] >= max(systems["edge"]["top1"], systems["cloud"]["top1"])
    assert systems["oracle"]["top1"] > min(systems["edge"]["top1"], systems["cloud"]["top1"])
    assert systems["edge"]["top1"] > systems["edge-generic"]["top1"]  # the private context helps the edge
    assert systems["edge"]["kb_per_query"] == 0 and systems["cloud"]["kb_per_query"] > 0
    assert systems["floe-gate"]["latency_ms"]["30"]["n"] == 6 and result["settings"]["users"] == ["u1"]
    assert "| floe-gate |" in r.stdout and sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "eval_accuracy.png", "eval_bytes.png", "eval_latency.png", "eval_weights.png"]


def test_verdict_and_headroom_say_where_the_gate_wins() -> None:
    def system(top1: float, exact: float, qa: float) -> dict[str, Any]:
        return {"top1": top1, "exact": exact, "by_task": {"qa": {"top1": qa, "exact": exact}}}

    result = {"systems": {"edge": system(80, 20, 70), "cloud": system(60, 0, 75), "oracle": system(90, 30, 95),
                          "floe-gate": system(85, 20, 72)}}
    from floe_edge.evaluation import headroom, verdict

    assert headroom(result) == 0.5 and headroom(result, task="qa") == -0.15
    lines = verdict(result)
    assert lines[0].startswith("floe-gate beats the better single side on top1 (all tasks): 85.0% vs edge 80.0%")
    assert "50% of the oracle's headroom" in lines[0]
    assert any(line.startswith("floe-gate is below the better single side on top1 (qa)") for line in lines)
    assert any(line.startswith("floe-gate ties the better single side on exact (all tasks)") for line in lines)
