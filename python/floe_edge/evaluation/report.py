"""The evaluation's figures: tallies per system, the JSON `floe eval --json` writes, the table in the paper's shape
and the plots.

Top-1 is micro-averaged over completion tokens; exact match over records; latency percentiles over records' whole
answers; bytes per query are what one answer sent and received over the link (HTTP bodies and headers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from .greedy import Answer

__all__ = ["Tally", "PAPER", "SYSTEM_ORDER", "headroom", "markdown_table", "verdict"]

SYSTEM_ORDER = ("edge-generic", "edge", "edge-lora", "cloud", "floe-static", "floe-adaptive", "floe-gate", "oracle")
# Tian et al., Table (edge-only / cloud-only / Floe): what the paper reports, to set ours beside
PAPER: dict[str, dict[str, Optional[float]]] = {
    "edge": {"latency_ms": 210, "top1": 71.0, "gain": 3.0, "kb_per_query": 0.0},
    "cloud": {"latency_ms": 480, "top1": 78.0, "gain": None, "kb_per_query": 1500.0},
    "floe": {"latency_ms": 120, "top1": 84.0, "gain": 9.0, "kb_per_query": 30.0}}


def _pct(num: float, den: float) -> Optional[float]:
    return round(100.0 * num / den, 2) if den else None


@dataclass
class _Counts:
    right: int = 0
    scored: int = 0
    exact: int = 0
    answered: int = 0

    def as_json(self) -> dict[str, Optional[float]]:
        return {"top1": _pct(self.right, self.scored), "exact": _pct(self.exact, self.answered),
                "n_tokens": self.scored, "n_records": self.answered}


@dataclass
class _System:
    all: _Counts = field(default_factory=_Counts)
    by_task: dict[str, _Counts] = field(default_factory=dict)
    by_novelty: dict[str, _Counts] = field(default_factory=dict)
    answers: dict[float, list[Answer]] = field(default_factory=dict)  # rtt -> answers measured at it
    swept: dict[float, list[Answer]] = field(default_factory=dict)  # rtt -> the answers of records measured at all

    def rows(self, task: str, novel: Optional[bool]) -> list[_Counts]:
        rows = [self.all, self.by_task.setdefault(task, _Counts())]
        if novel is not None:
            rows.append(self.by_novelty.setdefault("novel" if novel else "known", _Counts()))
        return rows


def _percentile(xs: list[float], q: float) -> Optional[float]:
    return round(float(np.percentile(xs, q)), 1) if xs else None


class Tally:
    """Everything measured, per system. `add_hits` once per record and system (teacher forced); `add_answer` once
    per record, system and RTT (the first RTT's answers are the ones exact match counts)."""

    def __init__(self, rtts: Iterable[float]) -> None:
        self.rtts = list(rtts)
        self.systems: dict[str, _System] = {}
        self.grid: dict[float, list[int]] = {}  # static cloud weight -> [right, scored]

    def _system(self, name: str) -> _System:
        return self.systems.setdefault(name, _System())

    def add_hits(self, system: str, task: str, novel: Optional[bool], hits: np.ndarray) -> None:
        for row in self._system(system).rows(task, novel):
            row.right += int(np.count_nonzero(hits))
            row.scored += len(hits)

    def add_exact(self, system: str, task: str, novel: Optional[bool], exact: bool) -> None:
        for row in self._system(system).rows(task, novel):
            row.exact += int(exact)
            row.answered += 1

    def add_answer(self, system: str, task: str, novel: Optional[bool], rtt: float, answer: Answer,
                   swept: bool = False) -> None:
        """`swept`: the record is answered at every RTT (latency against RTT compares those records only)."""
        self._system(system).answers.setdefault(rtt, []).append(answer)
        if swept:
            self._system(system).swept.setdefault(rtt, []).append(answer)
        if rtt == self.rtts[0]:
            self.add_exact(system, task, novel, answer.exact)

    def add_grid(self, weight: float, hits: np.ndarray) -> None:
        row = self.grid.setdefault(weight, [0, 0])
        row[0] += int(np.count_nonzero(hits))
        row[1] += len(hits)

    def _cost(self, s: _System) -> dict[str, Any]:
        latency = {f"{rtt:g}": {"p50": _percentile([a.latency_ms for a in s.answers[rtt]], 50),
                                "p95": _percentile([a.latency_ms for a in s.answers[rtt]], 95),
                                "n": len(s.answers[rtt])} for rtt in self.rtts if s.answers.get(rtt)}
        sweep = {f"{rtt:g}": _percentile([a.latency_ms for a in s.swept[rtt]], 50) for rtt in self.rtts
                 if s.swept.get(rtt)}
        first = s.answers.get(self.rtts[0], [])
        if not first:
            return {"latency_ms": latency}
        mean = lambda xs: round(float(np.mean(xs)), 3)  # noqa: E731
        return {"latency_ms": latency, "latency_by_rtt_p50_ms": sweep,
                "deadline_misses": sum(a.deadline_misses for a in first),
                "cloud_errors": sum(bool(a.error) for rtt in self.rtts for a in s.answers.get(rtt, [])),
                "cloud_share": mean([a.cloud_share for a in first]),
                "kb_up_per_query": mean([a.bytes_sent / 1e3 for a in first]),
                "kb_down_per_query": mean([a.bytes_received / 1e3 for a in first]),
                "kb_per_query": mean([(a.bytes_sent + a.bytes_received) / 1e3 for a in first])}

    def as_json(self) -> dict[str, Any]:
        systems = {}
        for name in sorted(self.systems, key=lambda n: SYSTEM_ORDER.index(n) if n in SYSTEM_ORDER else 99):
            s = self.systems[name]
            systems[name] = {**s.all.as_json(), "by_task": {t: c.as_json() for t, c in s.by_task.items()},
                             "by_novelty": {k: c.as_json() for k, c in s.by_novelty.items()}, **self._cost(s)}
        grid = {f"{w:g}": _pct(r, n) for w, (r, n) in sorted(self.grid.items())}
        return {"systems": systems, "static_weight_sweep": grid}


def _fmt(x: Optional[float], unit: str = "%") -> str:
    return "-" if x is None else f"{x:.1f}{unit}" if unit == "%" else f"{x:.0f}{unit}"


def markdown_table(result: Mapping[str, Any], rtt: float) -> list[str]:
    """The paper's table (latency, top-1, personalization gain, data per query) for our systems, the paper's
    figures beside, then top-1 / exact match per task."""
    systems = result["systems"]
    generic = systems.get("edge-generic", {}).get("top1")
    lines = [f"| system | latency p50 / p95 (ms, RTT {rtt:g} ms) | top-1 | exact match | gain over generic | "
             "cloud share | KB per query (up / down) | paper: latency, top-1, gain, KB |", "|---" * 8 + "|"]
    paper_of = {"edge": "edge", "cloud": "cloud", "floe-gate": "floe"}
    for name, s in systems.items():
        lat = s.get("latency_ms", {}).get(f"{rtt:g}", {})
        gain = None if generic is None or s.get("top1") is None else s["top1"] - generic
        p = PAPER.get(paper_of.get(name, ""), None)
        paper = "" if p is None else (f"{p['latency_ms']:g} ms, {p['top1']:.0f}%, "
                                      f"{'-' if p['gain'] is None else '+%g' % p['gain']}, {p['kb_per_query']:g}")
        kb = "-" if "kb_per_query" not in s else (f"{s['kb_per_query']:.1f} ({s['kb_up_per_query']:.1f} / "
                                                   f"{s['kb_down_per_query']:.1f})")
        share = "-" if "cloud_share" not in s else f"{100 * s['cloud_share']:.0f}%"
        lines.append(f"| {name} | {_fmt(lat.get('p50'), '')} / {_fmt(lat.get('p95'), '')} | {_fmt(s.get('top1'))} | "
                     f"{_fmt(s.get('exact'))} | {'-' if gain is None else f'{gain:+.1f}'} | {share} | {kb} | {paper} |")
    tasks = list(dict.fromkeys(t for s in systems.values() for t in s.get("by_task", {})))
    lines += ["", "| system | " + " | ".join(f"{t} top-1 / exact" for t in tasks) + " | novel top-1 | known top-1 |",
              "|---|" + "---|" * (len(tasks) + 2)]
    for name, s in systems.items():
        cells = [f"{_fmt(s['by_task'].get(t, {}).get('top1'))} / {_fmt(s['by_task'].get(t, {}).get('exact'))}"
                 for t in tasks]
        nov = s.get("by_novelty", {})
        cells += [_fmt(nov.get("novel", {}).get("top1")), _fmt(nov.get("known", {}).get("top1"))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def headroom(result: Mapping[str, Any], system: str = "floe-gate", metric: str = "top1",
             task: Optional[str] = None) -> Optional[float]:
    """The share of the oracle's gain over the better single side (edge or cloud) that `system` reaches."""
    def get(name: str) -> Optional[float]:
        s = result["systems"].get(name, {})
        value = s.get("by_task", {}).get(task, {}).get(metric) if task else s.get(metric)
        return None if value is None else float(value)

    edge, cloud, oracle, ours = get("edge"), get("cloud"), get("oracle"), get(system)
    if None in (edge, cloud, oracle, ours):
        return None
    best = max(edge, cloud)  # type: ignore[type-var]
    gap = oracle - best  # type: ignore[operator]
    return None if gap <= 0 else round((ours - best) / gap, 3)  # type: ignore[operator]


def verdict(result: Mapping[str, Any], system: str = "floe-gate") -> list[str]:
    """Where `system` beats both single sides (top-1 and exact match, overall and per task), and its share of the
    oracle's headroom: the issue's acceptance, said per row."""
    systems = result["systems"]
    if system not in systems or "edge" not in systems or "cloud" not in systems:
        return []
    lines = []
    tasks = list(systems[system].get("by_task", {}))
    for metric in ("top1", "exact"):
        for task in (None, *tasks):
            def get(name: str) -> Optional[float]:
                s = systems[name]
                return s.get("by_task", {}).get(task, {}).get(metric) if task else s.get(metric)

            ours, edge, cloud = get(system), get("edge"), get("cloud")
            if None in (ours, edge, cloud):
                continue
            best = max(edge, cloud)  # type: ignore[type-var]
            word = "beats" if ours > best else "ties" if ours == best else "is below"  # type: ignore[operator]
            share = headroom(result, system, metric, task) if metric == "top1" else None
            lines.append(f"{system} {word} the better single side on {metric} ({task or 'all tasks'}): "
                         f"{ours:.1f}% vs edge {edge:.1f}% / cloud {cloud:.1f}%"
                         + (f"; {100 * share:.0f}% of the oracle's headroom" if share is not None else ""))
    return lines
