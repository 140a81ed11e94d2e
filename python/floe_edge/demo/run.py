"""The `floe demo` runner: the paper's scenario on one machine.

A user with private context (their devices, bookings, contacts, own helper functions) asks questions whose answers
need both sides: a span only their private context holds and one only the cloud's knowledge holds. The edge (pinned
to core 0) runs the small model with the user's LoRA adapter; the cloud is a local `floe cloud serve` on the other
core holding the world knowledge, reached through `floe_edge.netem` at the chosen RTT. Every question is answered
edge-only (private context + adapter), cloud-only (the knowledge entry, no private context) and with floe (fused
per token with the user's learned gate), as `floe eval` answers (`floe_edge.evaluation.greedy.answer`), streamed with
each token's source; then the table, and a check over every byte that went up that no private line was among them.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from ..data.records import Record
from ..netem import Profile
from ..profiles import BACKENDS
from .privacy import PrivacyCheck, check_private, private_items
from .show import WAYS, Row, Shown, summary
from .user import TRAIN_PROFILE, DemoUser, load_user, novel, own_question, user_adapter, user_gate

__all__ = ["DEMO_PACE", "DemoOptions", "DemoResult", "EDGE_CTX", "CAPTURE_BYTES", "run_demo", "prepare"]

EDGE_CTX = 1024           # the edge's context: a private context, the prompt and the answer
CLOUD_CTX = 2048          # the cloud's: a knowledge entry, the prompt and the answer
CAPTURE_BYTES = 8 << 20   # upstream bytes kept for the privacy check (a bound; a few KB per question are used)
# floe's whole answer within this factor of the edge's own time: the slack goes to the first tokens, which wait
# for the cloud session to open (RTT + the cloud's prefill) while the edge drafts (BENCHMARKS.md, "floe demo")
DEMO_PACE = 3.0
NO_ADAPTER_NOTE = ("without the user's adapter: exact match collapses (the base model does not know the answer "
                   "formats: `floe eval` measured 0% for every system)")


@dataclass(frozen=True)
class DemoOptions:
    edge_model: str = "smollm2-135m"
    cloud_model: str = "gemma3-270m"
    net: Profile = field(default_factory=lambda: Profile(rtt_ms=30.0))
    edge_variant: Optional[str] = None
    deadline_ms: float = 200.0
    pace: Optional[float] = DEMO_PACE
    fusion: str = "gate"        # "gate": the user's learned gate; any other fusion preset is used as it is
    questions: int = 2          # held-out records per task (by index: one novel, one known per two)
    prompts: tuple[str, ...] = ()   # questions of the user's own instead (-n tokens each)
    n: int = 32
    adapter: bool = True
    train_profile: str = TRAIN_PROFILE
    teacher_forced: bool = True  # also score each way's top-1 on the expected answer (about a second a question)
    backend: str = "native"      # or "litert": the edge exported to .tflite with the adapter merged (cached)
    delegate: str = "none"       # litert: XNNPACK on the CPU, or the gpu / npu delegate
    delegate_fallback: bool = False  # litert: a delegate a profile chose runs on the CPU where it is absent

    def __post_init__(self) -> None:
        if self.questions < 1 or self.n < 1:
            raise ValueError("--questions and -n must be >= 1")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")


@dataclass
class DemoResult:
    rows: list[Row]
    privacy: PrivacyCheck
    fusion: str
    adapter: Optional[str]

    def as_json(self) -> dict[str, Any]:
        p = self.privacy
        return {"rows": [r.as_json() for r in self.rows], "fusion": self.fusion, "adapter": self.adapter,
                "privacy": {"bytes_sent": p.bytes_sent, "checked": p.checked, "leaked": list(p.leaked),
                            "unparsed_bytes": p.unparsed, "dropped_bytes": p.dropped, "ok": p.ok}}


def _pin_to(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and core in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {core})


@contextlib.contextmanager
def _device(opts: DemoOptions, knowledge: Optional[Path], adapter: Optional[Path], say: Any) -> Iterator[Any]:
    """The edge (core 0) and a local cloud with the knowledge (the other core), behind netem capturing what goes
    up; yields `floe_edge.evaluation.runner.Link` (its scorer bypasses netem: the gate's held-in scoring). `adapter`:
    the user's, which a LiteRT edge has merged (the native one loads it at run time)."""
    from .. import models
    from ..cloud.client import FloeCloudBackend
    from ..cloud.knowledge import knowledge_id
    from ..cloud.local import LocalCloud, other_core
    from ..evaluation.runner import Link
    from ..hybrid.clock import LoopThread
    from ..netem import NetemProxy

    edge_path, cloud_path = models.pull(opts.edge_model), models.pull(opts.cloud_model)
    args = ["--max-sessions-per-key", "64", *(["--knowledge", str(knowledge)] if knowledge is not None else [])]
    io = LoopThread()
    try:
        with LocalCloud(cloud_path, core=other_core(0), n_ctx=CLOUD_CTX, extra_args=args) as cloud, \
                NetemProxy(upstream=cloud.address, profile=opts.net, capture_up=CAPTURE_BYTES) as proxy, \
                _open_edge(opts, edge_path, adapter, say) as slm:
            _pin_to(0)
            scorer = FloeCloudBackend(cloud.url, slm.tokenizer, api_key=cloud.api_key)
            link = FloeCloudBackend(proxy.url(), slm.tokenizer, api_key=cloud.api_key)
            name = lambda r: knowledge_id(r.cloud_context) if r.cloud_context else None  # noqa: E731
            yield Link(slm, io, scorer, link, proxy, name, 8, opts.deadline_ms)
            for backend in (scorer, link):
                io.run(backend.close(), timeout=5)
    finally:
        io.close()


def _open_edge(opts: DemoOptions, edge_path: Path, adapter: Optional[Path], say: Any) -> Any:
    from ..backends import open_edge_gguf

    return open_edge_gguf(opts.backend, edge_path, adapters=[adapter] if adapter is not None else [], threads=1,
                          n_ctx=EDGE_CTX, variant=opts.edge_variant, delegate=opts.delegate,
                          delegate_fallback=opts.delegate_fallback, say=say)


def _on_litert(opts: DemoOptions) -> str:
    if opts.backend != "litert":
        return ""
    return " on LiteRT (XNNPACK)" if opts.delegate == "none" else f" on LiteRT ({opts.delegate} delegate)"


def _knowledge(user: DemoUser) -> Optional[Path]:
    from .. import paths
    from ..evaluation.knowledge_file import write_knowledge

    return write_knowledge(paths.demo_dir() / "knowledge.jsonl", [*user.history, *user.held_out])


def _fusion(opts: DemoOptions, dev: Any, user: DemoUser, trained: Optional[tuple[Path, str, int]],
            say: Any) -> tuple[Any, str]:
    """What floe fuses with, and its name: the user's gate (learned once; none without the adapter) or a preset."""
    if opts.fusion != "gate":
        return opts.fusion, opts.fusion
    if trained is None:
        say("floe fuses with the 'assistant' preset: the user's gate comes with their adapter")
        return "assistant", "assistant"
    gate = user_gate(dev, user, trained[1], trained[2], opts.cloud_model, say)
    if gate is None:
        say("no gate could be learned: floe fuses with the 'assistant' preset")
        return "assistant", "assistant"
    return gate, "the user's gate"


def prepare(opts: DemoOptions, say: Any = print) -> None:
    """Build what the demo caches (the user's data, adapter and gate) without running it (`floe demo --prepare`)."""
    user = load_user()
    trained = user_adapter(user.history, opts.edge_model, opts.train_profile, say)
    with _device(opts, _knowledge(user), trained[0], say) as dev:
        _fusion(opts, dev, user, trained, say)
    say(f"demo ready: user data in {user.data}, adapter {trained[0]}")


def _questions(opts: DemoOptions, user: DemoUser) -> list[Record]:
    return [own_question(user, p) for p in opts.prompts] if opts.prompts else user.questions(opts.questions)


def _teacher_forced(dev: Any, record: Record, adapters: list[Any], fuser: Any) -> dict[str, Any]:
    """Per way, which expected-answer tokens its top-1 gets right given the expected answer before them (as `floe
    eval` scores: the edge with the user's adapter, the cloud's evidence over the direct link, fused by floe's
    fusion)."""
    import numpy as np

    from ..evaluation.collect import edge_rows, record_tokens
    from ..evaluation.teacher import cloud_hits, fused_hits

    tokens = record_tokens(dev.slm, record)
    targets = list(tokens.completion_ids)
    rows = edge_rows(dev.slm, tokens, adapters)
    evidence = dev.evidence(record, targets)
    fuser.reset()
    return {"edge-only": rows.argmax(-1) == np.asarray(targets), "cloud-only": cloud_hits(evidence, targets),
            "floe": fused_hits(fuser, rows, evidence, targets)}


def _ask(dev: Any, record: Record, number: int, gens: Sequence[tuple[str, Any, str]], console: Any,
         n: int, scoring: Optional[tuple[list[Any], Any]]) -> list[Row]:
    from ..evaluation.collect import record_tokens
    from ..evaluation.greedy import answer, budget

    expected = record.completion or None
    tokens = budget(len(record_tokens(dev.slm, record).completion_ids)) if expected else n
    kid = dev.knowledge(record)
    if scoring is not None and expected is not None:  # scoring reads the knowledge entry into the cloud's cache
        hits = _teacher_forced(dev, record, *scoring)
    else:
        hits = {}
        if kid is not None:  # as a server holds its documents' KV: cloud-only and floe then start alike
            dev.io.run(dev.scorer.open([], b"", knowledge=kid))
            dev.io.run(dev.scorer.release())
    rows = []
    for way, gen, kind in gens:
        shown: Any = Shown(gen, console, way)  # answer() reads generate*, last_stats: what Shown has
        a = answer(shown, record, tokens, way=kind, knowledge=kid)
        dev.settle()  # the next way starts from an idle link
        h = hits.get(way)
        rows.append(Row(number, way, record.task, novel(record), record.prompt, expected, a,
                        None if h is None else (int(h.sum()), len(h))))
    if expected is not None:
        marks = "  ".join(f"{r.way} {'[green]✓[/]' if r.exact else '[red]✗[/]'}" for r in rows)
        console.print(f"{'expected':>10}  {expected.strip()}", markup=False, style="dim")
        console.print(f"{'':>10}  {marks}")
    return rows


def run_demo(opts: DemoOptions, console: Any = None) -> DemoResult:
    """Answer the questions three ways, streamed to `console` (a rich Console), then print the table and the
    privacy check."""
    from ..fusion import Fuser
    from ..hybrid import HybridGenerator

    if console is None:
        from rich.console import Console

        console = Console()
    say = lambda text: console.print(text, style="dim", markup=False)  # noqa: E731
    user = load_user()
    trained = user_adapter(user.history, opts.edge_model, opts.train_profile, say) if opts.adapter else None
    if trained is None:
        console.print(f"[yellow]{NO_ADAPTER_NOTE}[/]")
    records = _questions(opts, user)
    rows: list[Row] = []
    with _device(opts, _knowledge(user), trained[0] if trained is not None else None, say) as dev:
        fusion, fusion_name = _fusion(opts, dev, user, trained, say)
        adapter = dev.slm.load_adapter(trained[0]) if trained is not None else None
        adapters = [(adapter, 1.0)] if adapter is not None else []
        scoring = (adapters, Fuser(dev.slm.n_vocab, weights=fusion, top_k=dev.k)) if opts.teacher_forced else None
        console.print(f"[bold]floe demo[/]: user {records[0].user}, edge {opts.edge_model}"
                      f"{_on_litert(opts)}"
                      f"{' + their adapter' if adapter is not None else ' (no adapter)'} (core 0), cloud "
                      f"{opts.cloud_model} with the world knowledge, network {opts.net.describe()}, deadline "
                      f"{opts.deadline_ms:g} ms/token, floe fuses with {fusion_name}")
        common = dict(io=dev.io, k=dev.k, deadline_ms=opts.deadline_ms, pace=opts.pace)
        solo = HybridGenerator(dev.slm, None, deadline_ms=opts.deadline_ms)
        cloud = HybridGenerator(dev.slm, dev.link, fusion="assistant", **common)
        floe = HybridGenerator(dev.slm, dev.link, fusion=fusion, **common)
        list(cloud.generate_cloud_only(records[0].prompt, 2))  # warm-up: vocabulary download, model caches
        gens = list(zip(WAYS, (solo, cloud, floe), ("edge", "cloud", "floe")))
        for number, record in enumerate(records, start=1):
            kind = novel(record)
            novelty = "" if kind is None else ", novel: the history never mentions it" if kind else ", known"
            console.rule(f"question {number}/{len(records)} ({record.task}{novelty})")
            console.print(record.prompt, style="dim", markup=False)
            dev.slm.set_adapters(adapters)
            rows += _ask(dev, record, number, gens, console, opts.n, scoring)
        capture = dev.proxy.captured_up()
        items = private_items([r.private_context for r in records],
                              [*(r.prompt for r in records), *(row.answer.text for row in rows)])
        privacy = check_private(items, capture.connections, dev.slm.detokenize, capture.dropped)
    summary(console, rows, f"user {records[0].user}: {len(records)} questions, network {opts.net.describe()}")
    console.print(f"sent upstream while answering: {privacy.bytes_sent} bytes in {len(capture.connections)} "
                  f"connection(s), HTTP headers included; {privacy.verdict()}",
                  style="bold" if privacy.ok else "bold red")
    if trained is None:
        console.print(f"[yellow]{NO_ADAPTER_NOTE}[/]")
    return DemoResult(rows, privacy, fusion_name, str(trained[0]) if trained is not None else None)
