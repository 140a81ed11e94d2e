"""The Raspberry Pi hardware CI: the preflight (fake device trees), the comparison of two runs (bench outputs in the
bench scripts' own table format), and the workflow file itself."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / "targets" / "ci"
_spec = importlib.util.spec_from_file_location("compare_runs", CI / "compare_runs.py")
assert _spec and _spec.loader
compare_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_runs)


# -- preflight --

def preflight(root: Path, *args: str, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CI / "pi_preflight.sh"), "--root", str(root), *args], capture_output=True,
                          text=True, timeout=30, env={"PATH": "/usr/bin:/bin", **(env or {})})


def device_tree(root: Path, model: bytes) -> Path:
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "proc" / "device-tree" / "model").write_bytes(model)
    return root


@pytest.mark.parametrize("model", [b"Raspberry Pi 4 Model B Rev 1.4\x00", b"Raspberry Pi 5 Model B Rev 1.0\x00",
                                   b"Raspberry Pi Compute Module 4 Rev 1.0\x00"])
def test_preflight_accepts_a_pi(tmp_path: Path, model: bytes) -> None:
    out = tmp_path / "github_output"
    done = preflight(device_tree(tmp_path, model), env={"GITHUB_OUTPUT": str(out)})
    name = model.rstrip(b"\x00").decode()
    assert done.returncode == 0 and f"ok: {name}" in done.stdout, done.stderr
    assert out.read_text() == f"model={name}\n"


@pytest.mark.parametrize("model,reason", [
    (None, "no device tree"),
    (b"Pine64 RockPro64 v2.1\x00", "'Pine64 RockPro64 v2.1', not a Raspberry Pi"),
    (b"Hardkernel ODROID-N2Plus (Raspberry Pi clone)\x00", "not a Raspberry Pi"),
    (b"\x00\x00", "is empty"),
])
def test_preflight_refuses_anything_else(tmp_path: Path, model: Optional[bytes], reason: str) -> None:
    root = device_tree(tmp_path, model) if model is not None else tmp_path
    done = preflight(root)
    assert done.returncode == 1 and "refusing to run" in done.stderr and reason in done.stderr, done.stderr
    assert done.stdout == ""


def test_preflight_expected_model(tmp_path: Path) -> None:
    root = device_tree(tmp_path, b"Raspberry Pi 4 Model B Rev 1.4\x00")
    done = preflight(root, "--expect", "Raspberry Pi 5")
    assert done.returncode == 1 and "meant to be 'Raspberry Pi 5'" in done.stderr
    assert preflight(root, env={"FLOE_PI_EXPECT": "Raspberry Pi 5"}).returncode == 1
    assert preflight(root, env={"FLOE_PI_EXPECT": "Raspberry Pi 4"}).returncode == 0
    assert preflight(root, "--nonsense").returncode == 2


# -- the comparison of two runs --

DECODE = """SmolLM2-135M Q4_1 | 1 | decode | 9.0 | 8.0 | 1.12x |  |  | 94
## Decoder: NativeSLM vs llama.cpp

| model | threads | task | ours | llama.cpp | ours vs llama.cpp | % of BW bound (decode) | peak RSS | file MB |
|---|---|---|---|---|---|---|---|---|
| SmolLM2-135M Q4_1 | 1 | decode | {decode} | 8.0 | 1.12x | 55% | 119 / 215 | 94 |
| SmolLM2-135M Q4_1 | 1 | chunk8 | {chunk} | 136.6 | 2.09x |  | 119 / 193 | 94 |
"""
HYBRID = """## Hybrid generation (32 tokens, end to end)

**paper regime: edge throttled to a Pi 4 (40 ms/token), cloud SmolLM2-135M**

| network | edge-only ms (median / p95) | cloud-only ms | floe ms | floe, pace 1.1 ms | floe vs cloud-only (paced) | \
late tokens (edge / cloud / floe / paced) | KB per query (cloud-only / floe / paced) |
|---|---:|---:|---:|---:|---:|---:|---:|
| 30 ms | {edge} / 1400 | 2966 / 3346 | 1015 / 1936 | 791 / 882 | -66% (-73%) | 0 / 18 / 0 / 0 of 256 | 1.6 / 1.1 |
"""


def board(throttled: int = 0, temp: float = 55.0) -> dict[str, Any]:
    names = ["under-voltage", "arm frequency capped", "throttled", "soft temperature limit"]
    return {"version": "0.1.0", "board": {
        "model": "Raspberry Pi 5 Model B Rev 1.0", "governors": {"ondemand": [0, 1, 2, 3]},
        "temperatures_c": {"cpu-thermal": temp},
        "throttling": {"raw": hex(throttled), "now": [n for b, n in enumerate(names) if throttled >> b & 1],
                       "occurred": [n for b, n in enumerate(names) if throttled >> (b + 16) & 1]}}}


def make_run(tmp: Path, name: str, decode: float = 20.0, chunk: float = 60.0, edge: float = 1300.0,
             after: int = 0) -> Path:
    d = tmp / name
    d.mkdir()
    for bench, text in (("decode", DECODE.format(decode=decode, chunk=chunk)), ("hybrid", HYBRID.format(edge=edge))):
        (d / f"{bench}.txt").write_text(text)
        (d / "before.json").write_text(json.dumps(board()))
        (d / "after.json").write_text(json.dumps(board(after, 81.0 if after else 56.0)))
        args = ["collect", str(d / "results.json"), bench, str(d / f"{bench}.txt"),
                "--board-before", str(d / "before.json"), "--board-after", str(d / "after.json")]
        assert compare_runs.main(args) == 0
    return d / "results.json"


def test_figures_parsed_from_the_bench_tables() -> None:
    figs = compare_runs.figures_from_text(DECODE.format(decode=20.5, chunk=60.1) + HYBRID.format(edge=1300))
    assert figs["SmolLM2-135M Q4_1 | 1 threads | decode | ours"] == {"value": 20.5, "unit": "tok/s", "better": "higher"}
    assert figs["SmolLM2-135M Q4_1 | 1 threads | chunk8 | llama.cpp"] == {"value": 136.6, "unit": "ms",
                                                                          "better": "lower"}
    regime = "paper regime: edge throttled to a Pi 4 (40 ms/token), cloud SmolLM2-135M"
    assert figs[f"{regime} | 30 ms | edge-only"]["value"] == 1300  # the median, not the p95
    assert figs[f"{regime} | 30 ms | floe pace 1.1"]["value"] == 791
    assert len(figs) == 4 + 4  # no ratio, late-token or KB column taken for a latency
    # the progress lines the scripts print before the table are not a table
    assert compare_runs.figures_from_text(DECODE.splitlines()[0]) == {}


def test_same_figures_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prev, cur = make_run(tmp_path, "a"), make_run(tmp_path, "b", decode=19.0)  # -5%: within 10%
    assert compare_runs.main(["compare", str(prev), str(cur)]) == 0
    out = capsys.readouterr().out
    assert "| -5.0% | ok |" in out and "no figure worse by more than 10%" in out
    assert "before 55.0 C ondemand throttled=0x0" in out


@pytest.mark.parametrize("kwargs,figure", [({"decode": 15.0}, "decode | ours"),   # a rate falls
                                           ({"chunk": 80.0}, "chunk8 | ours"),    # a time grows
                                           ({"edge": 1600.0}, "30 ms | edge-only")])
def test_a_regression_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str], kwargs: dict[str, float],
                            figure: str) -> None:
    prev, cur = make_run(tmp_path, "a"), make_run(tmp_path, "b", **kwargs)
    md = tmp_path / "summary.md"
    assert compare_runs.main(["compare", str(prev), str(cur), "--markdown", str(md)]) == 1
    bad = [ln for ln in capsys.readouterr().out.splitlines() if "REGRESSION" in ln]
    assert len(bad) == 1 and figure in bad[0], bad
    assert "REGRESSION" in md.read_text()
    assert compare_runs.main(["compare", str(prev), str(cur), "--threshold", "50"]) == 0


def test_improvements_and_new_figures_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prev, cur = make_run(tmp_path, "a"), make_run(tmp_path, "b", decode=30.0, chunk=40.0)
    data = json.loads(prev.read_text())
    del data["benches"]["hybrid"]
    prev.write_text(json.dumps(data))
    assert compare_runs.main(["compare", str(prev), str(cur)]) == 0
    out = capsys.readouterr().out
    assert out.count("| better |") == 2 and out.count("| new |") == 4


def test_a_regression_while_throttled_is_inconclusive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prev = make_run(tmp_path, "a")
    cur = make_run(tmp_path, "b", decode=10.0, after=0x80008)  # soft temperature limit now and since the bench
    assert compare_runs.main(["compare", str(prev), str(cur)]) == 3
    out = capsys.readouterr().out
    assert "REGRESSION (throttled)" in out and "after: soft temperature limit" in out
    assert "during: soft temperature limit" in out and "all while the board was throttled" in out


def test_first_run_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cur = make_run(tmp_path, "b")
    missing = tmp_path / "none" / "results.json"
    assert compare_runs.main(["compare", str(missing), str(cur), "--allow-missing"]) == 0
    assert compare_runs.main(["compare", str(missing), str(cur)]) == 2
    (tmp_path / "junk.json").write_text("[1, 2")
    assert compare_runs.main(["compare", str(tmp_path / "junk.json"), str(cur)]) == 2
    (tmp_path / "other.json").write_text('{"format": 99}')
    assert compare_runs.main(["compare", str(tmp_path / "other.json"), str(cur)]) == 2
    (tmp_path / "empty.txt").write_text("Traceback (most recent call last):\n  ...\n")
    assert compare_runs.main(["collect", str(tmp_path / "r.json"), "decode", str(tmp_path / "empty.txt")]) == 2
    err = capsys.readouterr().err
    assert "no benchmark table found" in err and "not a results file" in err and "cannot read it as JSON" in err


def test_compare_runs_is_standard_library_only() -> None:
    done = subprocess.run([sys.executable, "-I", "-S", str(CI / "compare_runs.py"), "--help"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and "collect" in done.stdout


# -- the workflow --

def test_pi_runner_workflow() -> None:
    wf = yaml.safe_load((CI / "pi-runner.yml").read_text())
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as true
    assert "schedule" in triggers and "workflow_dispatch" in triggers
    job = wf["jobs"]["pi"]
    assert job["runs-on"] == ["self-hosted", "linux", "ARM64", "raspberry-pi"]
    runs = [s.get("run", "") for s in job["steps"]]
    order = ["pi_preflight.sh", "floe info", "ctest", "pytest", "bench/decode.py", "bench/hybrid.py",
             "compare_runs.py compare"]
    at = [next(i for i, r in enumerate(runs) if key in r) for key in order]
    assert at == sorted(at) and at[0] == 1, at  # the preflight first, right after the checkout
    for bench in ("decode", "hybrid"):  # the board state on both sides of every benchmark
        step = next(r for r in runs if f"bench/{bench}.py" in r)
        assert step.count("floe info --json") == 2 and f"collect \"$OUT/results.json\" {bench}" in step
    upload = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload and upload[0]["if"] == "always()" and upload[0]["with"]["path"] == "ci-out/"
    assert job["defaults"]["run"]["shell"] == "bash"  # pipefail: a failing bench is not hidden by tee


# -- docs/boards.md --

def test_boards_doc_names_real_files_and_presets() -> None:
    doc = (ROOT / "docs" / "boards.md").read_text()
    others = {"targets/ci/arm64-rootfs.sh", "targets/ci/nightly.sh",  # the nightly job's files (another change)
              ".github/workflows/pi-runner.yml"}  # where the user copies targets/ci/pi-runner.yml
    paths = set(re.findall(r"`((?:targets|tests|bench|tools|\.ci|\.github)/[\w./-]+)`", doc)) - others
    assert len(paths) > 10 and not [p for p in sorted(paths) if not (ROOT / p.split()[0]).exists()]
    presets = json.loads((ROOT / "CMakePresets.json").read_text())
    names = {p["name"] for kind in ("configurePresets", "testPresets") for p in presets[kind]}
    used = set(re.findall(r"--preset ([\w-]+)", doc)) | set(re.findall(r"`([\w-]+-release(?:-max)?)`", doc))
    assert used and used <= names, used - names
    assert re.search(r"needs the Android NDK[^.]*do not\s+have", doc)  # says the NDK is not on these machines
    assert "[docs/boards.md](docs/boards.md)" in (ROOT / "README.md").read_text()
