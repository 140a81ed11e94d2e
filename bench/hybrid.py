#!/usr/bin/env python3
"""Hybrid generation benchmark: edge-only vs cloud-only vs floe, 32 tokens end to end, under emulated networks.

    python bench/hybrid.py                  # both regimes, writes the "hybrid" section of BENCHMARKS.md + a PNG
    python bench/hybrid.py --quick --no-write

The cloud is `floe cloud serve` in its own process on core 1, reached through floe_edge.netem; the edge runs here on
core 0. Per network profile (RTT 10 / 30 / 80 / 250±50 ms, 30 ms with 1% loss, 30 ms with a 1 s outage starting
150 ms into each generation) every prompt is generated four ways, interleaved so that the host's drifting speed
falls on all of them alike: edge-only (no network), cloud-only (the cloud's greedy text, 16 tokens per round trip),
floe (fusion under the per-token deadline) and floe with a pace bound (`--pace`, waiting for the cloud only within
that factor of the edge's own time per token). Latency is from the request to the last token, prompt included; a
deadline miss is a token emitted more than 5 ms after its deadline (the previous token + deadline_ms). KB per query
counts HTTP bytes both ways (headers included). Two regimes:

* this machine: edge SmolLM2-135M as it runs here (~13-20 ms/token), cloud Gemma 3 270M (another vocabulary;
  slower per token than the edge on one core).
* paper: the edge padded to a Raspberry Pi 4's cost (ThrottledEdge: 40 ms per decoded token, 8 ms per further token
  of a batch; a model of the Pi, not a measurement: SmolLM2's 94 MB of weights per token over the Pi 4's few GB/s
  of memory bandwidth), the cloud SmolLM2-135M in llama.cpp (same vocabulary; ~30 ms per greedy token on one core
  of this host, so only a little faster than that edge).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from floe_edge import NativeSLM, models
from floe_edge.cloud.client import FloeCloudBackend
from floe_edge.cloud.local import LocalCloud, other_core
from floe_edge.hybrid import HybridGenerator, HybridStats, ThrottledEdge
from floe_edge.netem import NetemProxy, Profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, load, machine, write_section  # noqa: E402

PROMPTS = [
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The three primary colors are",
    "Here is a short packing list for a weekend hiking trip:\n1.",
    "import json\n\ndef load_config(path):\n",
]
NETWORKS = [
    ("10 ms", Profile(rtt_ms=10), False),
    ("30 ms", Profile(rtt_ms=30), False),
    ("80 ms", Profile(rtt_ms=80), False),
    ("250±50 ms", Profile(rtt_ms=250, jitter_ms=50, seed=1), False),
    ("30 ms, 1% loss", Profile(rtt_ms=30, loss=0.01, seed=2), False),
    ("30 ms, 1 s outage", Profile(rtt_ms=30), True),
]
READING = """Reading the tables. *This machine*: the cloud (Gemma 3 270M in llama.cpp on one core) takes longer to
read a token (prefill) than the edge takes to write one, so it falls behind whatever the scheduler does; unbounded floe
waits for it on unsure tokens (fused share up to ~30%) and pays in latency, while `pace` keeps floe within ~1.1x of
edge-only by giving up those waits (fused share ~0%). *Paper regime*: the throttled edge is slower than the cloud, so
floe runs cloud-led (the cloud drafts, the edge verifies each chunk in one batch, the next draft requested before the
verification): its floor is the cloud's own drafting time plus the last verification, which the cloud-only baseline
(16 greedy tokens per round trip, no verification) does not pay; floe lands near edge-only at low RTT and
below cloud-only only where round trips dominate (250 ms, outage). Cloud-led top-k for every drafted position is
what takes floe past 5 KB per query there."""
PI4 = (40.0, 8.0)  # ThrottledEdge: ms per decoded token, ms per further token of a batched eval
LATE_MS = 5.0


@dataclass
class Runs:
    latency: list[float] = field(default_factory=list)
    misses: int = 0
    tokens: int = 0
    kb: list[float] = field(default_factory=list)
    share: list[float] = field(default_factory=list)

    def add(self, s: HybridStats, late: list[float]) -> None:
        self.latency.append(s.latency_ms)
        self.misses += sum(x > LATE_MS for x in late)
        self.tokens += s.tokens
        self.kb.append((s.bytes_sent + s.bytes_received) / 1e3)
        self.share.append(s.cloud_share)

    @property
    def median(self) -> float:
        return statistics.median(self.latency)

    @property
    def p95(self) -> float:
        xs = sorted(self.latency)
        return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


WAYS = ("edge-only", "cloud-only", "floe", "floe-paced")


def run_one(gens: dict[str, HybridGenerator], way: str, prompt: str, n: int, out: Runs) -> None:
    gen = gens[way]
    it = gen.generate_cloud_only(prompt, n) if way == "cloud-only" else gen.generate(prompt, n)
    late = [t.late_ms for t in it if t.id >= 0]
    out.add(gen.last_stats, late)


def regime(name: str, cloud_model: str, throttle: Optional[tuple[float, float]], args: argparse.Namespace,
           ) -> dict[str, dict[str, Runs]]:
    """Per network profile, every way on every prompt, interleaved (edge-only too: the host's speed drifts)."""
    prompts = PROMPTS[: args.prompts]
    table: dict[str, dict[str, Runs]] = {}
    # every run opens a session; those left behind a faulty link wait for the idle expiry
    with LocalCloud(models.pull(cloud_model), core=args.cloud_core, n_ctx=1024,
                    extra_args=["--max-sessions-per-key", "256"]) as cloud, \
            NativeSLM(models.pull("smollm2-135m"), threads=1, n_ctx=1024) as native:
        edge = ThrottledEdge(native, *throttle) if throttle else native
        for label, profile, outage in NETWORKS[: args.networks]:
            with NetemProxy(upstream=cloud.address, profile=profile) as proxy:
                def floe(pace: Optional[float]) -> HybridGenerator:
                    link = FloeCloudBackend(proxy.url(), native.tokenizer, api_key=cloud.api_key)
                    return HybridGenerator(edge, link, fusion=args.fusion, deadline_ms=args.deadline_ms, pace=pace)

                gens = {"edge-only": HybridGenerator(edge, None), "floe": floe(None),
                        "floe-paced": floe(args.pace)}
                gens["cloud-only"] = gens["floe"]
                try:
                    for g in (gens["floe"], gens["floe-paced"]):
                        list(g.generate_cloud_only(prompts[0], 2))  # connection, vocabulary, caches
                    row = table[label] = {way: Runs() for way in WAYS}
                    for _ in range(args.reps):
                        for p in prompts:
                            for way in WAYS:
                                timer = threading.Timer(0.15, proxy.outage, args=(1.0,)) \
                                    if outage and way != "edge-only" else None
                                if timer:
                                    timer.start()
                                run_one(gens, way, p, args.n, row[way])
                                if timer:
                                    timer.cancel()
                                    time.sleep(1.0)  # the outage is over before the next run
                finally:
                    for g in gens.values():
                        g.close()
            print(f"[{name}] {label:>18}: " + ", ".join(
                f"{way} {row[way].median:.0f} ms ({row[way].misses} late, share "
                f"{statistics.median(row[way].share):.0%}, {statistics.median(row[way].kb):.1f} KB)"
                for way in WAYS), flush=True)
    return table


def markdown(name: str, table: dict[str, dict[str, Runs]], args: argparse.Namespace) -> list[str]:
    lines = [f"**{name}**", "",
             f"| network | edge-only ms (median / p95) | cloud-only ms | floe ms | floe, pace {args.pace:g} ms | "
             "floe vs cloud-only (paced) | floe vs edge-only (paced) | late tokens (edge / cloud / floe / paced) | "
             "cloud share (floe / paced) | KB per query (cloud-only / floe / paced) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, row in table.items():
        e, c, f, fp = (row[w] for w in WAYS)
        share = statistics.median
        lines.append(
            f"| {label} | {e.median:.0f} / {e.p95:.0f} | {c.median:.0f} / {c.p95:.0f} | {f.median:.0f} / {f.p95:.0f} | "
            f"{fp.median:.0f} / {fp.p95:.0f} | {100 * (f.median / c.median - 1):+.0f}% "
            f"({100 * (fp.median / c.median - 1):+.0f}%) | {f.median / e.median:.2f}x ({fp.median / e.median:.2f}x) | "
            f"{e.misses} / {c.misses} / {f.misses} / {fp.misses} of {f.tokens} | "
            f"{share(f.share):.0%} / {share(fp.share):.0%} | "
            f"{share(c.kb):.1f} / {share(f.kb):.1f} / {share(fp.kb):.1f} |")
    return lines + [""]


def plot(results: list[tuple[str, dict[str, dict[str, Runs]]]], path: Path, pace: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.2), squeeze=False)
    colors = {"edge-only": "#999999", "cloud-only": "#4c72b0", "floe": "#55a868", "floe-paced": "#c44e52"}
    for ax, (name, table) in zip(axes[0], results):
        labels = list(table)
        w = 0.2
        for i, way in enumerate(WAYS):
            ax.bar([x + (i - 1.5) * w for x in range(len(labels))], [table[k][way].median for k in labels], w,
                   label=f"floe, pace {pace:g}" if way == "floe-paced" else way, color=colors[way])
        ax.set_xticks(list(range(len(labels))), labels, rotation=25, ha="right", fontsize=8)
        ax.set_ylabel("32-token latency, median (ms)")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 prompts, 1 repetition, 3 networks")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--regime", choices=("machine", "paper", "both"), default="both")
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--deadline-ms", type=float, default=200.0)
    ap.add_argument("--fusion", default="assistant")
    ap.add_argument("--pace", type=float, default=1.1, help="pace of the paced floe column (HybridGenerator(pace=))")
    args = ap.parse_args(argv)
    args.prompts, args.reps, args.networks = (2, 1, 3) if args.quick else (len(PROMPTS), 2, len(NETWORKS))
    args.cloud_core = other_core(0)  # before this process pins itself to core 0, which the cloud would inherit
    if args.cloud_core is None:
        print("warning: one core only, the cloud shares the edge's core", file=sys.stderr)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    results = []
    if args.regime in ("machine", "both"):
        name = "this machine: edge SmolLM2-135M, cloud Gemma 3 270M (another vocabulary)"
        results.append((name, regime(name, "gemma3-270m", None, args)))
    if args.regime in ("paper", "both"):
        name = "paper regime: edge throttled to a Pi 4 (40 ms/token), cloud SmolLM2-135M"
        results.append((name, regime(name, "smollm2-135m", PI4, args)))
    png = ROOT / "bench" / "hybrid.png"
    if not args.no_write:
        plot(results, png, args.pace)
    lines = ["## Hybrid generation (32 tokens, end to end)", "",
             f"`python bench/hybrid.py` on {machine()}; load {load()}. Edge on core 0, cloud (`floe cloud serve`, "
             f"1 thread) on core 1, between them `floe_edge.netem`. Deadline {args.deadline_ms:g} ms per token, "
             f"fusion preset `{args.fusion}`, greedy; {args.prompts} prompts x {args.reps} repetitions per cell "
             f"(median / p95). A late token is one emitted more than {LATE_MS:g} ms after its deadline. "
             "Plot: `bench/hybrid.png`.", ""]
    for name, table in results:
        lines += markdown(name, table, args)
    lines.append(READING)
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("hybrid", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
