"""`floe demo`: the paper's scenario end to end on the real models, its JSON, and the privacy check over what went
up (which must really fail when private text is sent)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from floe_edge.demo import check_private, private_items
from floe_edge.demo.privacy import uploaded_texts

PRIVATE = "My devices:\n- study blinds: Themior L1, id dev.she84\n- tea maker: Klourou A3, id hw.ste43"
LINE = "- study blinds: Themior L1, id dev.she84"


def _detok(ids: Any) -> bytes:
    return bytes(ids)  # the fake vocabulary: one token per byte


def _request(body: dict[str, Any], path: str = "/v1/floe/sessions") -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def _ids(text: str) -> list[int]:
    return list(text.encode())


def test_private_items_are_the_lines_not_in_a_prompt_or_answer() -> None:
    items = private_items([PRIVATE, PRIVATE], ["User: switch it on\nCommand:", " answer: My devices:"])
    assert items == [LINE, "- tea maker: Klourou A3, id hw.ste43"]  # distinct, "My devices:" is in the answer


@pytest.mark.parametrize("how", ["ids", "b64", "raw", "split"])
def test_the_check_fails_when_private_text_went_up(how: str) -> None:
    prompt = _request({"prompt": _ids("User: hi\nAssistant:")})
    if how == "ids":
        leak = [_request({"prompt": _ids(f"{LINE}\n\nUser: hi")})]
    elif how == "b64":
        leak = [_request({"prompt_b64": base64.b64encode(LINE.encode()).decode()})]
    elif how == "raw":
        leak = [b"GET /?q=" + LINE.encode() + b" HTTP/1.1\r\n\r\n"]
    else:  # spread over two steps of one session
        leak = [_request({"append": _ids(LINE[:10]), "base": 5}, "/v1/floe/sessions/s/step"),
                _request({"append": _ids(LINE[10:]), "base": 15}, "/v1/floe/sessions/s/step")]
    items = private_items([PRIVATE], [])
    check = check_private(items, [prompt + b"".join(leak)], _detok)
    assert check.leaked == (LINE,) and not check.ok
    assert check.verdict() == f"private context sent: YES (1 of {len(items)} items)"


def test_the_check_passes_a_clean_capture_and_says_how_much_it_saw() -> None:
    stream = _request({"prompt": _ids("User: hi\nAssistant:")}) + _request({"append": _ids(" dev.she84"), "k": 8})
    check = check_private(private_items([PRIVATE], []), [stream], _detok)
    assert check.ok and check.leaked == () and check.unparsed == 0 and check.bytes_sent == len(stream)
    assert check.verdict() == "private context sent: no (checked 3 items)"
    texts, _ = uploaded_texts([stream], _detok)
    assert "User: hi\nAssistant: dev.she84" in texts  # the session's text, joined in order


def test_a_truncated_capture_is_not_called_clean() -> None:
    check = check_private(private_items([PRIVATE], []), [_request({"prompt": [65]})], _detok, dropped=10)
    assert not check.ok and "unknown" in check.verdict()


def _run(home: Path, smollm2_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    (home / "models").mkdir(parents=True, exist_ok=True)
    link = home / "models" / smollm2_path.name
    if not link.exists():
        link.symlink_to(smollm2_path)
    r = subprocess.run([sys.executable, "-m", "floe_edge.cli", "demo", "--cloud-model", "smollm2-135m", "--rtt", "10",
                        "--json", *args], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, FLOE_HOME=str(home), COLUMNS="200"))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout), r.stderr


def test_floe_demo_end_to_end(smollm2_path: Path, tmp_path: Path) -> None:
    """Real models (SmolLM2 both sides), no adapter, one question per task; in a subprocess: it pins itself."""
    out, err = _run(tmp_path, smollm2_path, "--no-adapter", "--questions", "1")
    rows = out["rows"]
    assert [(r["question"], r["way"]) for r in rows] == [(q, w) for q in (1, 2, 3)
                                                         for w in ("edge-only", "cloud-only", "floe")]
    assert [r["task"] for r in rows[::3]] == ["commands", "qa", "code"] and all(r["novel"] is True for r in rows)
    keys = {"text", "expected", "exact", "latency_ms", "cloud_share", "kb_sent", "kb_received", "teacher_forced_top1"}
    assert all(keys <= set(r) and isinstance(r["exact"], bool) and r["expected"] for r in rows)
    test = [json.loads(line) for line in (tmp_path / "demo" / "data" / "test.jsonl").read_text().splitlines()]
    assert rows[0]["expected"] == test[0]["completion"]  # held-out record 0 of u1, chosen by index
    edge, cloud, floe = rows[:3]
    assert all(0 <= r["teacher_forced_top1"] <= 1 for r in rows)
    assert edge["kb_sent"] == 0 and edge["cloud_share"] == 0 and cloud["kb_received"] > 0 and cloud["kb_sent"] > 0
    assert out["adapter"] is None and out["fusion"] == "assistant"
    p = out["privacy"]
    assert p["ok"] and p["checked"] >= 6 and p["leaked"] == [] and p["unparsed_bytes"] == 0
    assert p["bytes_sent"] >= sum(r["kb_sent"] for r in rows) * 1e3 * 0.5
    assert f"private context sent: no (checked {p['checked']} items)" in err
    assert "exact match collapses" in err and "exact" in err and "KB up/down" in err


def test_floe_demo_own_question(smollm2_path: Path, tmp_path: Path) -> None:
    out, err = _run(tmp_path, smollm2_path, "--no-adapter", "--prompt", "When is my haircut?", "-n", "4")
    rows = out["rows"]
    assert [r["way"] for r in rows] == ["edge-only", "cloud-only", "floe"]
    assert all(r["expected"] is None and r["exact"] is None and r["teacher_forced_top1"] is None and r["tokens"] <= 4
               for r in rows)
    assert rows[0]["prompt"] == "User: When is my haircut?\nAssistant:" and out["privacy"]["ok"]


def test_the_summary_shows_each_way_against_edge_only() -> None:
    """The demo's latency claim is read off the table: each way's median over edge-only's."""
    from rich.console import Console

    from floe_edge.demo.show import Row, summary
    from floe_edge.evaluation.greedy import Answer

    def row(q: int, way: str, ms: float) -> Row:
        return Row(q, way, "qa", None, "p", "e", Answer("e", True, ms, 10, 0, 0.5, 100, 100))

    times = {"edge-only": (100, 120, 140), "cloud-only": (500, 520, 540), "floe": (150, 180, 420)}
    console = Console(record=True, width=200)
    summary(console, [row(q, w, ms[q]) for w, ms in times.items() for q in range(3)], "t")
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in console.export_text().splitlines()
             if line.startswith("│ ")]
    assert [c[:4] for c in cells] == [["edge-only", "3/3", "120", "1.0x"], ["cloud-only", "3/3", "520", "4.3x"],
                                      ["floe", "3/3", "180", "1.5x"]]
