"""`floe eval --train federated --quick`: every device of the folder federates its LoRA adapter on Flower's simulation
runtime, each evaluated edge stacks the global and its personal adapter, and the users' gates are averaged (FedAvg).
Needs the `fl` extra (flwr, torch): .ci/run runs it after `tools/setup.sh fl`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr")
pytest.importorskip("torch")
pytest.importorskip("peft")

from floe_edge.data import generate  # noqa: E402


def test_federated_quick_eval_stacks_global_and_personal_adapters(tmp_path: Path, smollm2_path: Path) -> None:
    data, work, out = tmp_path / "data", tmp_path / "work", tmp_path / "eval.json"
    generate(data, users=2, seed=9138, train_per_task=4, test_per_task=2)
    r = subprocess.run([sys.executable, "-m", "floe_edge.cli", "eval", "--data", str(data), "--quick", "--train",
                        "federated", "--hw-profile", "rpi4", "--systems", "edge,edge-generic,cloud,floe-gate,oracle",
                        "--work-dir", str(work), "--json", str(out)],
                       capture_output=True, text=True, timeout=1800, env={**os.environ})
    assert r.returncode == 0, r.stderr[-3000:]
    # both devices trained in both rounds, though --quick evaluates only the first user
    rounds = [json.loads(line) for line in (work / "fl" / "metrics.jsonl").read_text().splitlines()]
    trained = [(m["round"], m["client"]) for m in rounds if "client" in m]
    assert sorted(trained) == [(1, "u1"), (1, "u2"), (2, "u1"), (2, "u2")]
    assert all(m["status"] == "used" and m["rank"] == 4 for m in rounds if "client" in m)
    stored = sorted(p.name for p in (work / "fl-store" / "rpi4").iterdir())
    assert {"fl-global", "fl-personal-u1", "fl-personal-u2"} <= set(stored)
    result = json.loads(out.read_text())
    systems = result["systems"]
    assert result["settings"]["train"] == "federated" and result["settings"]["users"] == ["u1"]
    # "edge-lora" names the edge with its adapters; it is the personalized edge, scored on the same tokens
    assert systems["edge-lora"]["n_tokens"] == systems["edge"]["n_tokens"] > 20
    assert systems["oracle"]["top1"] >= max(systems["edge"]["top1"], systems["cloud"]["top1"])
    assert any(note.startswith("federated gate: the average of") for note in result["notes"]), result["notes"]
