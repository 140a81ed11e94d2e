"""One user's part of `floe eval`: the gate from the held-in records, then every system on the held-out ones
(teacher-forced top-1, greedy answers at each RTT)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..data.records import Record
from .collect import edge_rows, record_tokens
from .greedy import answer, budget
from .options import EvalOptions
from .report import Tally
from .teacher import GRID, StaticGrid, cloud_hits, fused_hits

__all__ = ["novel", "HeldIn", "Prepared", "learn_held_in", "prepare_user", "score_user", "static_preset"]

Say = Callable[[str], None]
FLOE_SYSTEMS = ("floe-static", "floe-adaptive", "floe-gate")


def novel(record: Record) -> Optional[bool]:
    """`meta.novel` of a generated record (its world knowledge is one the user's history never needed), None for
    data without it."""
    meta = record.extra.get("meta")
    return bool(meta["novel"]) if isinstance(meta, dict) and "novel" in meta else None


class HeldIn:
    """What the held-in records teach: per task, top-1 of each static cloud weight; the gate's training set."""

    def __init__(self) -> None:
        self.grid: dict[str, dict[float, list[int]]] = {}
        self.features: list[np.ndarray] = []
        self.edge_right: list[np.ndarray] = []
        self.cloud_right: list[np.ndarray] = []

    def static_weight(self, task: str) -> float:
        """The cloud weight with the best held-in top-1 for the task (ties: the lower weight; none seen: 0.5)."""
        rows = self.grid.get(task)
        if not rows:
            return 0.5
        return max(GRID, key=lambda w: (rows[w][0] / max(rows[w][1], 1), -w))


def learn_held_in(dev: Any, records: Sequence[Record], grid: StaticGrid) -> HeldIn:
    from ..gate import gate_features

    learned = HeldIn()
    for record in records:
        tokens = record_tokens(dev.slm, record)
        rows = edge_rows(dev.slm, tokens)
        targets = list(tokens.completion_ids)
        evidence = dev.evidence(record, targets)
        for w, hits in grid.hits(rows, evidence, targets).items():
            row = learned.grid.setdefault(record.task, {}).setdefault(w, [0, 0])
            row[0] += int(hits.sum())
            row[1] += len(hits)
        cloud = cloud_hits(evidence, targets)
        edge = rows.argmax(-1) == np.asarray(targets)
        for j, ev in enumerate(evidence):
            if ev is None or not len(ev.ids):
                continue
            learned.features.append(gate_features(rows[j], ev.ids, ev.logprobs, position=j))
            learned.edge_right.append(edge[j])
            learned.cloud_right.append(cloud[j])
    return learned


def _fit_gate(learned: HeldIn) -> Any:
    from ..gate import LearnedGate

    if not learned.features:
        return None
    return LearnedGate.fit(np.stack(learned.features), np.array(learned.cloud_right), np.array(learned.edge_right))


@dataclass
class Prepared:
    """What a user's held-in records gave: the edge's adapters (stacked), the gate and how many positions it saw."""

    adapters: list[Path]
    gate: Any
    positions: int
    notes: list[str] = field(default_factory=list)


def prepare_user(dev: Any, opts: EvalOptions, user: str, held_in: Sequence[Record], adapters: list[Path],
                 work: Path) -> Prepared:
    """Learn the user's gate (and report the best static weight) from their held-in records."""
    learned = learn_held_in(dev, held_in, StaticGrid(dev.slm.n_vocab, top_k=opts.k))
    gate = _fit_gate(learned)
    tasks = list(dict.fromkeys(r.task for r in held_in))
    notes = [f"{user}: the static cloud weight with the best held-in top-1 (edge without adapter) would be "
             + ", ".join(f"{t} {learned.static_weight(t):g}" for t in tasks) + "; floe-static uses the "
             "application presets"] if tasks else []
    if gate is None:
        notes.append(f"{user}: no held-in record with cloud evidence: floe-gate not measured")
    else:
        gate.save(work / f"gate-{user}.json")
    return Prepared(adapters, gate, len(learned.features), notes)


def score_user(dev: Any, opts: EvalOptions, user: str, held_out: Sequence[Record], prepared: Prepared, tally: Tally,
               say: Say) -> None:
    """Score every system on the user's held-out records."""
    from ..fusion import Fuser

    n_vocab = dev.slm.n_vocab
    grid = StaticGrid(n_vocab, top_k=opts.k)
    edge_adapters = [(dev.slm.load_adapter(path), 1.0) for path in prepared.adapters]
    gate = prepared.gate
    fusers = {"floe-adaptive": Fuser(n_vocab, weights="adaptive", top_k=opts.k)}
    fusers.update({f"floe-static:{task}": Fuser(n_vocab, weights=static_preset(task), top_k=opts.k)
                   for task in dict.fromkeys(r.task for r in held_out)})
    if gate is not None:
        fusers["floe-gate"] = Fuser(n_vocab, weights=gate, top_k=opts.k)
    for number, record in enumerate(held_out, start=1):
        say(f"  {user} record {number}/{len(held_out)} ({record.task})")
        _teacher_forced(dev, opts, record, edge_adapters, grid, fusers, tally)
        _answers(dev, opts, record, edge_adapters, gate, tally, latency=number <= opts.latency_records)


def static_preset(task: str) -> str:
    """The fusion preset an application of this task ships with (floe-static): `commands` and `code` have their
    own, anything else is an assistant."""
    return task if task in ("commands", "code") else "assistant"


def _teacher_forced(dev: Any, opts: EvalOptions, record: Record, edge_adapters: list[Any], grid: StaticGrid,
                    fusers: dict[str, Any], tally: Tally) -> None:
    is_novel = novel(record)
    tokens = record_tokens(dev.slm, record)
    targets = list(tokens.completion_ids)
    generic = edge_rows(dev.slm, record_tokens(dev.slm, record, generic=True))
    rows = edge_rows(dev.slm, tokens, edge_adapters)  # last: the private context stays cached for the answers
    evidence = dev.evidence(record, targets)
    want = np.asarray(targets)
    edge, cloud = rows.argmax(-1) == want, cloud_hits(evidence, targets)
    grid_hits = grid.hits(rows, evidence, targets)
    hits = {"edge": edge, "edge-generic": generic.argmax(-1) == want, "cloud": cloud, "oracle": edge | cloud}
    if edge_adapters:
        hits["edge-lora"] = edge
    for name, fuser in fusers.items():
        if name.startswith("floe-static:") and name != f"floe-static:{record.task}":
            continue
        fuser.reset()
        hits[name.split(":")[0]] = fused_hits(fuser, rows, evidence, targets)
    for name, h in hits.items():
        if name in opts.systems or name == "edge-lora":
            tally.add_hits(name, record.task, is_novel, h)
    if "oracle" in opts.systems:
        tally.add_exact("oracle", record.task, is_novel, bool(hits["oracle"].all()))
    for w, h in grid_hits.items():
        tally.add_grid(w, h)


def _answers(dev: Any, opts: EvalOptions, record: Record, edge_adapters: list[Any], gate: Any, tally: Tally,
             latency: bool) -> None:
    from ..netem import Profile

    is_novel = novel(record)
    n = budget(len(record_tokens(dev.slm, record).completion_ids))
    kid = dev.knowledge(record)
    fusion = {"floe-static": static_preset(record.task), "floe-adaptive": "adaptive",
              "floe-gate": gate}
    for i, rtt in enumerate(opts.rtts):
        if i > 0 and not latency:
            break
        dev.proxy.set_profile(Profile(rtt_ms=rtt))
        # The order keeps every personalized way warm, as on a device answering its user: the user's private context
        # stays in the edge's KV cache (reused, floe_edge.edge.reuse_prefix); the generic edge, which reads the
        # prompt alone, goes last. The edge does not use the network: answered once, the same at every RTT.
        ways: list[tuple[str, Any, str]] = [("edge", None, "edge")] if i == 0 else []
        ways += [(name, fusion[name], "floe") for name in FLOE_SYSTEMS if fusion[name] is not None]
        ways += [("cloud", "assistant", "cloud")]
        ways += [("edge-generic", None, "edge-generic")] if i == 0 else []
        for name, fuse, way in ways:
            if name not in opts.systems:
                continue
            dev.slm.set_adapters([] if name == "edge-generic" else edge_adapters)
            gen = dev.generator(fuse)
            a = answer(gen, record, n, way=way, knowledge=kid)
            dev.settle()
            if i == 0 and name.startswith("edge"):
                for r in opts.rtts:
                    tally.add_answer(name, record.task, is_novel, r, a, swept=latency)
                if name == "edge" and edge_adapters:
                    tally.add_answer("edge-lora", record.task, is_novel, opts.rtts[0], a)
            else:
                tally.add_answer(name, record.task, is_novel, rtt, a, swept=latency)
