"""The Flower app end to end on a 2-layer model cut from SmolLM2 (fl extra: flwr + the train extra): `floe fl sim`
with three clients of three profiles (ranks 4, 8, 16; targets q,v / attention / all seven) completes and writes
per-round metrics, a plot and a global adapter that loads on the base; a loopback deployment (flower-superlink + 2
flower-supernodes + flwr run) completes a round; and a SuperNode killed mid-round neither stalls the server nor
spoils the global adapter. Each run is bounded in time."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from floe_edge.adapters import LoraAdapter
from floe_edge.data import generate
from floe_edge.make_slm import make_slm

pytestmark = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("flwr", "torch", "peft")),
                                reason="needs the fl extra (flwr, torch, transformers, peft)")

SMALL = ["--steps", "3", "--max-len", "256", "--batch-tokens", "512", "--lr", "5e-3"]


@pytest.fixture(scope="module")
def tiny(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_slm(smollm2_path, 2, tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    generate(folder, users=3, seed=5, train_per_task=2, test_per_task=1)
    return folder


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def floe(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "floe_edge.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_floe_fl_sim_three_heterogeneous_clients(tiny: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sim"
    done = floe("fl", "sim", "--clients", "3", "--rounds", "2", "--data", str(data), "--base", str(tiny),
                "--out", str(out), "--json", "--quiet", "--round-timeout", "300", "--timeout", "600", *SMALL,
                timeout=660)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["status"] == "finished:completed" and len(report["rounds"]) == 2
    used = [r for r in rows(out) if r.get("status") == "used"]
    assert sorted((r["round"], r["user"], r["rank"]) for r in used) == [
        (1, "u1", 4), (1, "u2", 8), (1, "u3", 16), (2, "u1", 4), (2, "u2", 8), (2, "u3", 16)]
    for r in used:
        assert 0 <= r["top1-before"] <= 1 and 0 <= r["top1-after"] <= 1 and r["loss-last"] > 0
    assert all(r["used"] == 3 and r["missing"] == 0 for r in report["rounds"])
    glob = LoraAdapter.read(out / "global.gguf")
    glob.check_base(tiny)
    assert glob.rank == 16 and len(glob.pairs) == 2 * 7  # the union of the profiles' targets: all seven, 2 layers
    assert (out / "metrics.png").stat().st_size > 10_000


def _settings(tiny: Path, data: Path, out: Path, **over: object):
    from floe_edge.fl.settings import RunSettings

    return RunSettings(num_server_rounds=1, clients="u1:rpi4,u2:rpi5", base_model=str(tiny), data_dir=str(data),
                       out_dir=str(out), steps=3, max_len=256, batch_tokens=512, lr=5e-3, **over)


def test_loopback_deployment_superlink_and_two_supernodes(tiny: Path, data: Path, tmp_path: Path) -> None:
    from floe_edge.fl.runner import run_deployment

    out = tmp_path / "up"
    started = time.monotonic()
    run_id, status = run_deployment(_settings(tiny, data, out, round_timeout=300.0), out, timeout=420)
    assert status == "finished:completed", (out / "run.log").read_text()[-3000:]
    assert sorted(r["user"] for r in rows(out) if r.get("status") == "used") == ["u1", "u2"]
    LoraAdapter.read(out / "global.gguf").check_base(tiny)
    assert time.monotonic() - started < 420


def test_a_supernode_killed_mid_round_does_not_stall_the_server(tiny: Path, data: Path, tmp_path: Path) -> None:
    from floe_edge.fl.runner import Federation, run_deployment

    out = tmp_path / "kill"
    killed: list[float] = []

    def kill_u2(fed: Federation) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (out / "clients" / "u2").exists():  # u2's ClientApp is training
            time.sleep(0.2)
        proc = fed.processes["supernode-1"]
        os.killpg(proc.pid, signal.SIGKILL)  # the SuperNode and its ClientApp, as a power cut would
        killed.append(time.monotonic())

    run_id, status = run_deployment(_settings(tiny, data, out, round_timeout=90.0, node_wait=120.0), out,
                                    timeout=420, during=kill_u2)
    assert killed, "u2 never started training"
    assert status == "finished:completed", (out / "run.log").read_text()[-3000:]
    table = rows(out)
    assert [r["user"] for r in table if r.get("status") == "used"] == ["u1"]
    summary = next(r for r in table if r.get("summary"))
    assert summary["used"] == 1 and summary["missing"] + summary["failed"] == 1
    glob = LoraAdapter.read(out / "global.gguf")  # written atomically from u1's update alone
    glob.check_base(tiny)
    assert all(".attn_k." not in name for name in glob.pairs)  # u2 (rpi5) would have brought k and o
