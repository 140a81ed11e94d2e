"""AdapterStore: versions per profile and app, sha256-checked loads, atomic activation (a real SIGKILL in the middle
of activating leaves the old or the new version active), rollback, verify, and the `floe adapters` commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from floe_edge.adapters import AdapterError, AdapterStore, LoraAdapter
from floe_edge.cli import main


def small_adapter(tmp_path: Path, seed: int, rank: int = 4) -> Path:
    rng = np.random.default_rng(seed)
    pairs = {"blk.0.attn_q.weight": (rng.normal(size=(rank, 576)).astype(np.float32),
                                     rng.normal(size=(576, rank)).astype(np.float32))}
    return LoraAdapter("llama", 8.0, pairs).write(tmp_path / f"adapter{seed}.gguf")


@pytest.fixture
def store(tmp_path: Path) -> AdapterStore:
    return AdapterStore(tmp_path / "store")


def test_add_activate_rollback(store: AdapterStore, tmp_path: Path, smollm2_path: Path) -> None:
    assert store.active("rpi4", "mail") is None and store.list() == []
    v1 = store.add(small_adapter(tmp_path, 1), "rpi4", "mail", base=smollm2_path)
    v2 = store.add(small_adapter(tmp_path, 2, rank=8), "rpi4", "mail")
    assert (v1, v2) == (1, 2) and store.versions("rpi4", "mail") == [1, 2]
    assert store.add(small_adapter(tmp_path, 3), "x86-avx2", "mail") == 1  # versions count per (profile, app)
    assert store.active("rpi4", "mail") is None  # adding does not activate
    store.activate("rpi4", "mail", 1)
    active = store.active("rpi4", "mail")
    assert active is not None and active.read_bytes() == small_adapter(tmp_path, 1).read_bytes()
    store.activate("rpi4", "mail", 2)
    assert store.active_version("rpi4", "mail") == 2
    assert store.rollback("rpi4", "mail") == 1 and store.active_version("rpi4", "mail") == 1
    with pytest.raises(AdapterError, match="no earlier active version"):
        store.rollback("rpi4", "mail")
    entries = {(e.profile, e.app, e.version): e for e in store.list()}
    assert [k for k, e in entries.items() if e.active] == [("rpi4", "mail", 1)]
    first = entries[("rpi4", "mail", 1)]
    assert (first.rank, first.alpha, first.architecture, first.base_model) == (4, 8.0, "llama", smollm2_path.name)
    assert entries[("rpi4", "mail", 2)].rank == 8 and entries[("rpi4", "mail", 2)].base_model is None
    assert store.verify() == []


def test_bad_input_is_refused(store: AdapterStore, tmp_path: Path, smollm2_path: Path) -> None:
    with pytest.raises(AdapterError, match="no version 3"):
        store.activate("rpi4", "mail", 3)
    with pytest.raises(AdapterError, match="profile name '../etc'"):
        store.add(small_adapter(tmp_path, 1), "../etc", "mail")
    with pytest.raises(AdapterError, match="app name ''"):
        store.active("rpi4", "")
    not_an_adapter = tmp_path / "model.gguf"
    not_an_adapter.write_bytes(smollm2_path.read_bytes()[:4096])
    with pytest.raises(AdapterError, match="model.gguf: not a valid GGUF file"):
        store.add(not_an_adapter, "rpi4", "mail")
    with pytest.raises(AdapterError, match="SmolLM2.*not an adapter"):
        store.add(smollm2_path, "rpi4", "mail")
    assert not store.root.exists()  # a refused adapter leaves nothing behind


def test_a_corrupted_adapter_is_an_error_not_used(store: AdapterStore, tmp_path: Path) -> None:
    store.add(small_adapter(tmp_path, 1), "rpi5", "chat")
    store.add(small_adapter(tmp_path, 2), "rpi5", "chat")
    store.activate("rpi5", "chat", 2)
    stored = store.root / "rpi5" / "chat" / "v2" / "adapter.gguf"
    data = bytearray(stored.read_bytes())
    data[-5] ^= 0x40  # one bit of a weight
    stored.write_bytes(bytes(data))
    with pytest.raises(AdapterError, match="v2/adapter.gguf: corrupted"):
        store.active("rpi5", "chat")
    with pytest.raises(AdapterError, match="corrupted"):
        store.activate("rpi5", "chat", 2)
    problems = store.verify()
    assert len(problems) == 1 and problems[0].startswith("rpi5/chat v2: ") and "corrupted" in problems[0]
    store.activate("rpi5", "chat", 1)  # an intact version still activates
    (store.root / "rpi5" / "chat" / "active.json").write_text("{\"version\": ")
    with pytest.raises(AdapterError, match="active.json: unreadable active pointer"):
        store.active("rpi5", "chat")


CHILD = """
import sys
from floe_edge.adapters import AdapterStore
store = AdapterStore(sys.argv[1])
store.activate("rpi4", "mail", 1)
print("ready", flush=True)
while True:
    for version in (2, 1):
        store.activate("rpi4", "mail", version)
"""


def test_kill_during_activate_leaves_old_or_new(store: AdapterStore, tmp_path: Path) -> None:
    """A child activating versions 1 and 2 in a loop is killed with SIGKILL at random moments; after each kill
    the store reads back version 1 or 2, checksummed, and a rollback still works."""
    for seed in (1, 2):
        store.add(small_adapter(tmp_path, seed), "rpi4", "mail")
    expected = {v: store.info("rpi4", "mail", v).sha256 for v in (1, 2)}
    rng = np.random.default_rng(11)
    seen = set()
    for _ in range(12):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(store.root)], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        time.sleep(float(rng.uniform(0.0, 0.15)))
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
        version = store.active_version("rpi4", "mail")
        assert version in (1, 2)
        seen.add(version)
        path = store.active("rpi4", "mail")  # sha256-checked
        assert path is not None and store.info("rpi4", "mail", version).sha256 == expected[version]
        LoraAdapter.read(path)
        assert store.verify() == []
    assert store.rollback("rpi4", "mail") in (1, 2)
    assert {p.name for p in (store.root / "rpi4" / "mail").iterdir()} >= {"v1", "v2", "active.json"}


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], smollm2_path: Path) -> None:
    root = str(tmp_path / "store")
    adapter = str(small_adapter(tmp_path, 1))
    assert main(["adapters", "add", adapter, "--profile", "rpi4", "--app", "mail", "--root", root,
                 "--base", str(smollm2_path), "--json"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert (added["version"], added["active"], added["base_model"]) == (1, False, smollm2_path.name)
    assert main(["adapters", "add", adapter, "--profile", "rpi4", "--app", "mail", "--root", root,
                 "--activate"]) == 0
    assert capsys.readouterr().out == "rpi4/mail v2 (active)\n"
    assert main(["adapters", "activate", "--profile", "rpi4", "--app", "mail", "--root", root, "1"]) == 0
    assert main(["adapters", "rollback", "--profile", "rpi4", "--app", "mail", "--root", root]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "rpi4/mail: back to v2"
    assert main(["adapters", "list", "--root", root, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e["version"], e["active"]) for e in listed] == [(1, False), (2, True)]
    assert main(["adapters", "list", "--root", root]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("* rpi4/mail v2  rank 4")
    assert main(["adapters", "verify", "--root", root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["problems"] == []
    (tmp_path / "store" / "rpi4" / "mail" / "v1" / "adapter.gguf").write_bytes(b"GGUF")
    assert main(["adapters", "verify", "--root", root]) == 1
    assert "rpi4/mail v1: " in capsys.readouterr().out
    assert main(["adapters", "activate", "--profile", "rpi4", "--app", "mail", "--root", root, "7"]) == 2
    assert "floe: error: rpi4/mail: no version 7" in capsys.readouterr().err
    assert main(["adapters", "add", str(tmp_path / "none.gguf"), "--profile", "rpi4", "--app", "mail",
                 "--root", root]) == 2
    assert "none.gguf: no such file" in capsys.readouterr().err


def test_default_root_follows_floe_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLOE_HOME", str(tmp_path))
    assert AdapterStore().root == tmp_path / "adapters"


ADD_AND_HANG = """
import shutil, sys, time
from floe_edge.adapters import AdapterStore
real_copy = shutil.copyfile
def copy_then_hang(src, dst):
    real_copy(src, dst)
    print("copied", flush=True)
    time.sleep(600)
shutil.copyfile = copy_then_hang
AdapterStore(sys.argv[1]).add(sys.argv[2], "rpi4", "mail")
"""


def test_an_interrupted_add_is_reported_and_fixed(store: AdapterStore, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A real `add` killed with SIGKILL half-way leaves its .adding.* directory: while the add is alive it is not a
    leftover (verify --fix leaves it alone); once killed, verify reports it and verify --fix removes it, and only
    it."""
    store.add(small_adapter(tmp_path, 1), "rpi4", "mail")
    store.activate("rpi4", "mail", 1)
    child = subprocess.Popen([sys.executable, "-c", ADD_AND_HANG, str(store.root), str(small_adapter(tmp_path, 2))],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "copied\n"
        app_dir = store.root / "rpi4" / "mail"
        staging = [p for p in app_dir.iterdir() if p.name.startswith(".adding.")]
        assert len(staging) == 1 and (staging[0] / "adapter.gguf").is_file()
        assert store.leftovers() == [] and store.verify() == [] and store.remove_leftovers() == []
        assert staging[0].is_dir()  # an add still running is never removed
    finally:
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    assert store.leftovers() == staging
    problems = store.verify()
    assert problems == [f"rpi4/mail/{staging[0].name}: left by an interrupted add (remove it: `floe adapters verify "
                        "--fix`, or rm -r it)"]
    root = str(store.root)
    assert main(["adapters", "verify", "--root", root]) == 1
    assert capsys.readouterr().out == problems[0] + "\n"
    assert main(["adapters", "verify", "--root", root, "--fix", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"root": root, "problems": [], "removed": [str(staging[0])]}
    assert sorted(p.name for p in app_dir.iterdir()) == ["active.json", "v1"]
    assert store.add(small_adapter(tmp_path, 2), "rpi4", "mail") == 2 and store.verify() == []


def test_stale_pointer_temp_files_are_leftovers(store: AdapterStore, tmp_path: Path) -> None:
    store.add(small_adapter(tmp_path, 1), "rpi5", "chat")
    store.activate("rpi5", "chat", 1)
    app_dir = store.root / "rpi5" / "chat"
    stale, fresh = app_dir / ".active.json.k1ll3d.tmp", app_dir / ".active.json.busy.tmp"
    stale.write_text("{")
    fresh.write_text("{")  # as an activate in progress would have it
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert store.leftovers() == [stale]
    assert store.verify() == ["rpi5/chat/.active.json.k1ll3d.tmp: left by an interrupted activate (remove it: "
                              "`floe adapters verify --fix`, or rm -r it)"]
    assert store.remove_leftovers() == [stale] and not stale.exists() and fresh.exists()
    assert store.verify() == [] and store.active_version("rpi5", "chat") == 1
