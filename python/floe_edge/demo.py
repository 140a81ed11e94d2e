"""The `floe demo` runner: edge SLM + cloud LLM on one machine, three ways (edge-only, cloud-only, floe), side by side.

The cloud is a local `floe cloud serve` in its own process on the other core, reached through `floe_edge.netem` with
the chosen network profile; the edge runs here, pinned to core 0. Every prompt is generated edge-only, cloud-only
(the cloud's greedy text, 16 tokens per round trip) and with floe (fusion under a per-token deadline), streamed live
with each token's source, then summarized: latency, deadline misses, cloud share, KB per query, and a quality proxy,
the teacher-forced agreement of the text with the cloud model's own top-1 (the cloud-only text scores ~100% by
construction; it says how much of the LLM's judgement reached the answer, not whether the answer is right).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

from .hybrid import HybridGenerator, HybridStats, HybridToken, Source
from .hybrid.pipeline import MAX_SCORED
from .netem import Profile

PROMPTS = [
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The three primary colors are",
    "Here is a short packing list for a weekend hiking trip:\n1.",
]
EDGE_CTX = 1024  # the edge's context in the demo: room for a prompt and its answer
STYLE = {Source.FUSED: "bold green", Source.CLOUD_DRAFT: "bold cyan", Source.EDGE: "white",
         Source.EDGE_ONLY: "yellow"}


@dataclass
class Row:
    prompt: int
    way: str
    text: str
    stats: HybridStats
    agreement: Optional[float] = None

    def as_json(self) -> dict[str, Any]:
        """The row as `floe demo --json` prints it."""
        s = self.stats
        return {"prompt": self.prompt, "way": self.way, "text": self.text, "latency_ms": s.latency_ms,
                "tokens": s.tokens, "deadline_misses": s.deadline_misses, "cloud_share": s.cloud_share,
                "kb_sent": s.bytes_sent / 1e3, "kb_received": s.bytes_received / 1e3,
                "cloud_agreement": self.agreement, "sources": s.sources}


def _pin_to(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and core in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {core})


def _agreement(gen: HybridGenerator, prompt: str, ids: list[int]) -> Optional[float]:
    """Fraction of the text's tokens that are the cloud's own top-1 given the text before them (where the cloud's
    positions align with the edge's tokens)."""
    if not ids:
        return None
    io, cloud = gen.parts.io, gen.cloud
    assert io is not None and cloud is not None
    io.run(cloud.open(gen.edge.tokenize(prompt), prompt.encode()))
    hits = total = 0
    done: list[int] = []
    for i in range(0, len(ids), MAX_SCORED):  # within the server's limit in another vocabulary too
        part = ids[i: i + MAX_SCORED]
        step = io.run(cloud.step(done, gen.edge.detokenize(done), k=1, score_edge_ids=part,
                                 score_bytes=gen.edge.detokenize(part), deadline=time.monotonic() + 60))
        for j, tok in enumerate(part):
            ev = step.evidence[j]
            if ev is not None and len(ev.ids):
                total += 1
                hits += int(ev.ids[0]) == tok
        done = part
    return hits / total if total else None


def _stream(tokens: Iterator[HybridToken], console: Any, label: str) -> tuple[str, list[int]]:
    """Show the tokens as they come (live on a terminal, at the end otherwise), coloured by source."""
    from rich.live import Live
    from rich.text import Text

    text, ids, shown = "", [], Text(f"{label:>10}  ", style="dim")
    with Live(shown, console=console, auto_refresh=False) if console.is_terminal else contextlib.nullcontext() as live:
        for t in tokens:
            text += t.text
            if t.id >= 0:
                ids.append(t.id)
            shown.append(t.text, style=STYLE[t.source])
            if live is not None:
                live.update(shown, refresh=True)
    if not console.is_terminal:
        console.print(shown)
    return text, ids


def run_demo(console: Any = None, *, edge_model: str = "smollm2-135m", cloud_model: str = "gemma3-270m",
             net: Optional[Profile] = None, edge_variant: Optional[str] = None, deadline_ms: float = 200.0,
             pace: Optional[float] = None, fusion: str = "assistant", n: int = 32,
             prompts: Sequence[str] = PROMPTS) -> list[Row]:
    """Generate every prompt three ways, streamed to `console` (a rich Console), then print the summary table.

    The network between edge and cloud is `net` (a netem profile; default: 30 ms round trip); the edge runs the
    kernels of `edge_variant` (default: the best this CPU runs). Returns one Row per prompt and way.
    """
    from . import models
    from .cloud.client import CloudError, FloeCloudBackend
    from .cloud.local import LocalCloud, other_core
    from .netem import NetemProxy
    from .slm import NativeSLM

    if console is None:
        from rich.console import Console

        console = Console()
    net = net if net is not None else Profile(rtt_ms=30.0)
    edge_path = models.pull(edge_model)
    cloud_path = models.pull(cloud_model)
    cloud_core = other_core(0)
    console.print(f"[bold]floe demo[/]: edge {edge_model} (core 0), cloud {cloud_model} "
                  f"(core {cloud_core if cloud_core is not None else 'shared'}), network {net}, "
                  f"deadline {deadline_ms:g} ms/token, fusion '{fusion}'")
    rows: list[Row] = []
    with LocalCloud(cloud_path, core=cloud_core, n_ctx=1024, extra_args=["--max-sessions-per-key", "64"]) as cloud, \
            NetemProxy(upstream=cloud.address, profile=net) as proxy, \
            NativeSLM(edge_path, threads=1, n_ctx=EDGE_CTX, variant=edge_variant) as edge:
        _pin_to(0)
        url = f"http://127.0.0.1:{proxy.port}"
        link = FloeCloudBackend(url, edge.tokenizer, api_key=cloud.api_key)
        direct = FloeCloudBackend(cloud.url, edge.tokenizer, api_key=cloud.api_key)
        with HybridGenerator(edge, link, fusion=fusion, deadline_ms=deadline_ms, pace=pace) as gen, \
                HybridGenerator(edge, direct) as judge, HybridGenerator(edge, None) as solo:
            list(gen.generate_cloud_only(prompts[0], 2))  # warm-up: vocabulary download, model caches
            for i, prompt in enumerate(prompts):
                console.rule(f"prompt {i + 1}")
                console.print(prompt, style="dim", markup=False)
                ways = [("edge-only", solo, lambda g=solo, p=prompt: g.generate(p, n)),
                        ("cloud-only", gen, lambda g=gen, p=prompt: g.generate_cloud_only(p, n)),
                        ("floe", gen, lambda g=gen, p=prompt: g.generate(p, n))]
                for way, g, make in ways:
                    text, ids = _stream(make(), console, way)
                    try:
                        agreement = _agreement(judge, prompt, ids)
                    except CloudError as e:  # a measurement only: the table shows "-"
                        console.print(f"(cloud agreement not measured: {e})", style="dim")
                        agreement = None
                    rows.append(Row(i, way, text, g.last_stats, agreement))
    _summary(console, rows, n)
    return rows


def _summary(console: Any, rows: list[Row], n: int) -> None:
    from rich.table import Table

    t = Table(title=f"{n} tokens per prompt; medians over {len({r.prompt for r in rows})} prompts",
              caption="ms: whole answer; late: tokens past their deadline; cloud: share of tokens decided with "
                      "cloud evidence; agree: teacher-forced agreement with the cloud model's top-1")
    for col in ("", "ms", "ms/tok", "late", "cloud", "KB up/down", "agree"):
        t.add_column(col, justify="right", no_wrap=True)
    for way in ("edge-only", "cloud-only", "floe"):
        rs = [r for r in rows if r.way == way]
        med = lambda xs: sorted(xs)[len(xs) // 2] if xs else float("nan")  # noqa: E731
        agree = [r.agreement for r in rs if r.agreement is not None]
        t.add_row(way, f"{med([r.stats.latency_ms for r in rs]):.0f}",
                  f"{med([r.stats.ms_per_token for r in rs]):.1f}",
                  str(sum(r.stats.deadline_misses for r in rs)),
                  f"{med([r.stats.cloud_share for r in rs]):.0%}",
                  f"{med([r.stats.bytes_sent for r in rs]) / 1e3:.1f}/"
                  f"{med([r.stats.bytes_received for r in rs]) / 1e3:.1f}",
                  f"{med(agree):.0%}" if agree else "-")
    console.print(t)
    console.print("[bold green]fused[/] with cloud evidence  [bold cyan]cloud draft[/] accepted  "
                  "[white]edge[/] confident  [yellow]edge-only[/] (cloud late/down)")
