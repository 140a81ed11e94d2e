#!/usr/bin/env python3
"""Benchmark results of the Pi hardware CI, and their comparison with the previous run. Standard library only.

    compare_runs.py collect results.json decode bench-decode.txt --board-before b0.json --board-after b1.json
    compare_runs.py compare previous/results.json results.json --threshold 10 --markdown summary.md

`collect` parses the Markdown tables a bench script prints (bench/decode.py: model | threads | task | ours |
llama.cpp | ...; bench/hybrid.py: a **regime** line, then network | edge-only ms (median / p95) | ...) into figures,
each with its unit and which way is better, and stores them in results.json under the bench's name, beside the board
state before and after it (`floe info --json`: governor, throttling, temperatures).

`compare` prints every figure of both runs and the change, and the board state of each bench. Exit status:
0 nothing got worse than --threshold percent; 1 a figure regressed; 3 every regression is in a bench the board
throttled during (under-voltage, frequency cap, thermal limit: the figure says more about the power supply or the
cooling than about the code); 2 unreadable input. No previous file (the first run) is exit 0 with --allow-missing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Optional

FORMAT = 1
HIGHER, LOWER = "higher", "lower"
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


class InputError(ValueError):
    """A results or bench output file that cannot be used."""


# -- Markdown tables of the bench scripts --

def parse_tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every Markdown table in `text`; the title is the nearest heading or bold line above."""
    tables, title, lines = [], "", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("#") or (line.startswith("**") and line.endswith("**") and len(line) > 4):
            title = line.strip("#* ")
        sep = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", sep):
            header = _cells(line)
            i += 2
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            tables.append((title, header, rows))
            continue
        i += 1
    return tables


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _first_number(cell: str) -> Optional[float]:
    match = _NUMBER.search(cell)
    return float(match.group()) if match else None


def figures_from_text(text: str) -> dict[str, dict[str, Any]]:
    """The figures in a bench script's output: key -> {value, unit, better}."""
    out: dict[str, dict[str, Any]] = {}
    for title, header, rows in parse_tables(text):
        low = [h.lower() for h in header]
        if low[:5] == ["model", "threads", "task", "ours", "llama.cpp"]:  # bench/decode.py
            for row in rows:
                if len(row) < 5:
                    continue
                ms = row[2] == "chunk8"  # a time per 8 tokens; the other tasks are rates
                unit, better = ("ms", LOWER) if ms else ("tok/s", HIGHER)
                for col, who in ((3, "ours"), (4, "llama.cpp")):
                    value = _first_number(row[col])
                    if value is not None:
                        out[f"{row[0]} | {row[1]} threads | {row[2]} | {who}"] = {"value": value, "unit": unit,
                                                                                   "better": better}
        elif low and low[0] == "network":  # bench/hybrid.py: latency columns "<way> ms (median / p95)"
            for row in rows:
                for col, name in enumerate(low[1:], start=1):
                    if " ms" not in name or " vs " in name or col >= len(row):
                        continue
                    value = _first_number(row[col])  # the median
                    way = name.split(" ms")[0].replace(",", "").strip()
                    if value is not None:
                        out[f"{title} | {row[0]} | {way}"] = {"value": value, "unit": "ms", "better": LOWER}
    return out


# -- results.json --

def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read it as JSON: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def _board(path: Optional[Path]) -> Optional[dict[str, Any]]:
    """The board part of `floe info --json` (or a bare board object)."""
    if path is None:
        return None
    data = _read_json(path)
    board = data.get("board", data)
    return board if isinstance(board, dict) else None


def collect(results: Path, bench: str, output: Path, before: Optional[Path], after: Optional[Path]) -> int:
    try:
        text = output.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise InputError(f"{output}: cannot read the bench output: {e}") from None
    figures = figures_from_text(text)
    if not figures:
        raise InputError(f"{output}: no benchmark table found (expected bench/decode.py or bench/hybrid.py output)")
    data = _read_json(results) if results.exists() else {"format": FORMAT, "benches": {}}
    data["benches"][bench] = {"figures": figures, "board_before": _board(before), "board_after": _board(after)}
    results.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{results}: {bench}: {len(figures)} figures")
    return 0


def _load_results(path: Path) -> dict[str, Any]:
    data = _read_json(path)
    if data.get("format") != FORMAT or not isinstance(data.get("benches"), dict):
        raise InputError(f"{path}: not a results file of format {FORMAT} (made by compare_runs.py collect)")
    return data


def throttled_during(bench: dict[str, Any]) -> list[str]:
    """Why this bench's figures are suspect: throttling before or after it, or sticky bits that appeared during it."""
    why = []
    states = [(bench.get(k) or {}).get("throttling") or {} for k in ("board_before", "board_after")]
    for label, state in zip(("before", "after"), states):
        if state.get("now"):
            why.append(f"{label}: {', '.join(state['now'])}")
    new = sorted(set(states[1].get("occurred") or []) - set(states[0].get("occurred") or []))
    if new and states[0]:
        why.append(f"during: {', '.join(new)}")
    return why


def _conditions(bench: dict[str, Any]) -> str:
    parts = []
    for label in ("board_before", "board_after"):
        board = bench.get(label) or {}
        temps = board.get("temperatures_c") or {}
        hot = f"{max(temps.values()):.1f} C" if temps else "? C"
        govs = ",".join(board.get("governors") or {}) or "?"
        thr = (board.get("throttling") or {}).get("raw", "?")
        parts.append(f"{label[6:]} {hot} {govs} throttled={thr}")
    return "; ".join(parts)


def compare(prev: dict[str, Any], cur: dict[str, Any], threshold: float) -> tuple[list[str], int]:
    """Markdown lines of the comparison and the exit status."""
    lines = ["| bench | figure | previous | current | change | verdict |", "|---|---|---:|---:|---:|---|"]
    regressed, suspect = 0, 0
    for name, bench in sorted(cur["benches"].items()):
        old = (prev["benches"].get(name) or {}).get("figures", {})
        why = throttled_during(bench)
        for key, fig in sorted(bench["figures"].items()):
            if key not in old or not old[key]["value"]:
                lines.append(f"| {name} | {key} | - | {fig['value']:g} {fig['unit']} | | new |")
                continue
            change = 100.0 * (fig["value"] / old[key]["value"] - 1.0)
            worse = -change if fig["better"] == HIGHER else change
            verdict = "ok"
            if worse > threshold:
                verdict = "REGRESSION" + (" (throttled)" if why else "")
                regressed, suspect = regressed + (not why), suspect + bool(why)
            elif worse < -threshold:
                verdict = "better"
            lines.append(f"| {name} | {key} | {old[key]['value']:g} | {fig['value']:g} {fig['unit']} | "
                         f"{change:+.1f}% | {verdict} |")
        for key in sorted(set(old) - set(bench["figures"])):
            lines.append(f"| {name} | {key} | {old[key]['value']:g} | - | | missing |")
    lines += ["", "| bench | run | board before; after | throttled during |", "|---|---|---|---|"]
    for run, data in (("previous", prev), ("current", cur)):
        for name, bench in sorted(data["benches"].items()):
            lines.append(f"| {name} | {run} | {_conditions(bench)} | {'; '.join(throttled_during(bench)) or 'no'} |")
    status = 1 if regressed else 3 if suspect else 0
    summary = {0: f"no figure worse by more than {threshold:g}%",
               1: f"{regressed} figure(s) worse by more than {threshold:g}% on an unthrottled board",
               3: f"{suspect} figure(s) worse by more than {threshold:g}%, all while the board was throttled"}
    return lines + ["", f"**{summary[status]}**"], status


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="add one bench's figures (parsed from its output) to a results file")
    c.add_argument("results", type=Path)
    c.add_argument("bench", help="a name for the bench (decode, hybrid)")
    c.add_argument("output", type=Path, help="the bench script's standard output")
    c.add_argument("--board-before", type=Path, help="`floe info --json` before the bench")
    c.add_argument("--board-after", type=Path, help="`floe info --json` after the bench")
    k = sub.add_parser("compare", help="compare two results files")
    k.add_argument("previous", type=Path)
    k.add_argument("current", type=Path)
    k.add_argument("--threshold", type=float, default=10.0, help="percent a figure may get worse (default 10)")
    k.add_argument("--markdown", type=Path, help="also write the tables here (e.g. $GITHUB_STEP_SUMMARY)")
    k.add_argument("--allow-missing", action="store_true", help="no previous file (the first run) is not an error")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "collect":
            return collect(args.results, args.bench, args.output, args.board_before, args.board_after)
        if not args.previous.exists() and args.allow_missing:
            print(f"no previous results ({args.previous}): nothing to compare with (first run)")
            return 0
        lines, status = compare(_load_results(args.previous), _load_results(args.current), args.threshold)
    except InputError as e:
        print(f"compare_runs: error: {e}", file=sys.stderr)
        return 2
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.markdown:
        with args.markdown.open("a", encoding="utf-8") as f:
            f.write(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
