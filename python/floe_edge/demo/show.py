"""What `floe demo` shows: each answer streamed with its tokens coloured by source, and the summary table."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from ..evaluation.greedy import Answer
from ..hybrid import HybridToken, Source

__all__ = ["Row", "Shown", "WAYS", "STYLE", "summary"]

WAYS = ("edge-only", "cloud-only", "floe")
STYLE = {Source.FUSED: "bold green", Source.CLOUD_DRAFT: "bold cyan", Source.EDGE: "white",
         Source.EDGE_ONLY: "yellow"}


@dataclass
class Row:
    """One way's answer to one question."""

    question: int
    way: str
    task: str
    novel: Optional[bool]
    prompt: str
    expected: Optional[str]  # None: a question of the user's own (--prompt)
    answer: Answer
    teacher_forced: Optional[tuple[int, int]] = None  # expected-answer tokens whose top-1 is right, of how many

    @property
    def exact(self) -> Optional[bool]:
        return None if self.expected is None else self.answer.exact

    def as_json(self) -> dict[str, Any]:
        """The row as `floe demo --json` prints it."""
        a = self.answer
        return {"question": self.question, "task": self.task, "novel": self.novel, "way": self.way,
                "prompt": self.prompt, "text": a.text, "expected": self.expected, "exact": self.exact,
                "latency_ms": a.latency_ms, "tokens": a.tokens, "deadline_misses": a.deadline_misses,
                "cloud_share": a.cloud_share, "kb_sent": a.bytes_sent / 1e3, "kb_received": a.bytes_received / 1e3,
                "teacher_forced_top1": None if self.teacher_forced is None
                else self.teacher_forced[0] / max(self.teacher_forced[1], 1)}


class Shown:
    """A HybridGenerator whose tokens are also shown as they come (live on a terminal, at the end otherwise), for
    `floe_edge.evaluation.greedy.answer`, which reads only `generate`, `generate_cloud_only` and `last_stats`."""

    def __init__(self, gen: Any, console: Any, label: str) -> None:
        self.gen, self.console, self.label = gen, console, label

    @property
    def last_stats(self) -> Any:
        return self.gen.last_stats

    def generate(self, *args: Any, **kwargs: Any) -> Iterator[HybridToken]:
        return self._show(self.gen.generate(*args, **kwargs))

    def generate_cloud_only(self, *args: Any, **kwargs: Any) -> Iterator[HybridToken]:
        return self._show(self.gen.generate_cloud_only(*args, **kwargs))

    def _show(self, tokens: Iterator[HybridToken]) -> Iterator[HybridToken]:
        from rich.live import Live
        from rich.text import Text

        console = self.console
        shown = Text(f"{self.label:>10}  ", style="dim")
        live_or_not = Live(shown, console=console, auto_refresh=False) if console.is_terminal \
            else contextlib.nullcontext()
        try:
            with live_or_not as live:
                for t in tokens:
                    shown.append(t.text.replace("\n", "⏎"), style=STYLE[t.source])
                    if live is not None:
                        live.update(shown, refresh=True)
                    yield t
        finally:
            close = getattr(tokens, "close", None)
            if close is not None:
                close()  # answer() stops early at a newline: the run ends (stats, cloud session) before it returns
            if not console.is_terminal:
                console.print(shown)


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2] if xs else float("nan")


def _exact_cell(rows: list[Row]) -> str:
    scored = [r for r in rows if r.exact is not None]
    if not scored:
        return "-"
    cell = f"{sum(bool(r.exact) for r in scored)}/{len(scored)}"
    novel = [r for r in scored if r.novel]
    known = [r for r in scored if r.novel is False]
    if novel and known:
        cell += f" ({sum(bool(r.exact) for r in novel)}/{len(novel)} novel, {sum(bool(r.exact) for r in known)}/" \
                f"{len(known)} known)"
    return cell


def _tf_cell(rows: list[Row]) -> str:
    scored = [r.teacher_forced for r in rows if r.teacher_forced is not None]
    total = sum(n for _, n in scored)
    return f"{sum(k for k, _ in scored) / total:.0%}" if total else "-"


def summary(console: Any, rows: list[Row], title: str) -> None:
    """Per way: exact match, latency p50, ms per token, deadline misses, cloud share, KB up/down per query."""
    from rich.table import Table

    t = Table(title=title, caption="exact: the answer equals the expected one (whitespace-normalized); ms: whole "
                                   "answer, median; x edge: that median over edge-only's; late: tokens past their "
                                   "deadline; cloud: share of tokens decided with cloud evidence (mean); KB: per "
                                   "query, mean; top-1 tf: "
                                   "expected-answer tokens whose top-1 is right given the expected text before them")
    for col in ("", "exact", "ms p50", "x edge", "ms/tok", "late", "cloud", "KB up/down", "top-1 tf"):
        t.add_column(col, justify="right", no_wrap=True)
    edge_ms = _median([r.answer.latency_ms for r in rows if r.way == WAYS[0]])
    for way in WAYS:
        rs = [r for r in rows if r.way == way]
        if not rs:
            continue
        answers = [r.answer for r in rs]
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        p50 = _median([a.latency_ms for a in answers])
        t.add_row(way, _exact_cell(rs), f"{p50:.0f}", f"{p50 / edge_ms:.1f}x" if edge_ms > 0 else "-",
                  f"{_median([a.latency_ms / max(a.tokens, 1) for a in answers]):.1f}",
                  str(sum(a.deadline_misses for a in answers)), f"{mean([a.cloud_share for a in answers]):.0%}",
                  f"{mean([a.bytes_sent for a in answers]) / 1e3:.1f}/"
                  f"{mean([a.bytes_received for a in answers]) / 1e3:.1f}", _tf_cell(rs))
    console.print(t)
    console.print("[bold green]fused[/] with cloud evidence  [bold cyan]cloud draft[/] accepted  "
                  "[white]edge[/] confident  [yellow]edge-only[/] (cloud late/down)")
