"""`floe eval`: every system on the same held-out records of a section 9 data folder (DESIGN.md section 9).

Per user: (1) with `--train local`, a LoRA adapter trained on the user's held-in records (train.jsonl); (2) the
gate and the static weight per task learned on held-in records; (3) every held-out record scored teacher-forced
and answered greedily by every system. The cloud is a local `floe cloud serve` on the other core holding the
records' cloud contexts as its knowledge base (the device names an entry by id and never sees its text); the device
sends it the shared prompt only. Answers go through `floe_edge.netem` at each RTT asked for.

The gate learns from the edge *without* the user's adapter: on held-in records the adapter has seen the answers,
so its confidence there says nothing about held-out ones; the edge before training is what the held-out records'
new knowledge looks like to the adapted one.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from ..data.records import DataError, Record, read_dataset
from .collect import cloud_evidence
from .options import EvalOptions
from .report import Tally
from .train_adapter import train_adapters
from .user import prepare_user, score_user

__all__ = ["Link", "federate_gates", "run_eval", "select"]

Say = Callable[[str], None]


def select(records: Sequence[Record], users: Optional[int], per_task: Optional[int]) -> dict[str, list[Record]]:
    """The records of the first `users` users (in file order), at most `per_task` per user and task."""
    chosen: dict[str, list[Record]] = {}
    counts: dict[tuple[str, str], int] = {}
    for r in records:
        if r.user not in chosen and users is not None and len(chosen) >= users:
            continue
        n = counts.get((r.user, r.task), 0)
        if per_task is not None and n >= per_task:
            continue
        counts[r.user, r.task] = n + 1
        chosen.setdefault(r.user, []).append(r)
    return chosen


@dataclass
class Link:
    """The device's side: the edge model, the IO loop, a direct link for scoring, a link through netem for answers."""

    slm: Any
    io: Any
    scorer: Any       # FloeCloudBackend straight to the cloud (teacher-forced scoring: no RTT to wait for)
    link: Any         # FloeCloudBackend through the netem proxy (answers)
    proxy: Any
    knowledge: Callable[[Record], Optional[str]]
    k: int
    deadline_ms: float

    def generator(self, fusion: Any = None) -> Any:
        from ..hybrid import HybridGenerator

        cloud = self.link if fusion is not None else None
        return HybridGenerator(self.slm, cloud, io=self.io if cloud is not None else None,
                               fusion=fusion if fusion is not None else "assistant", k=self.k,
                               deadline_ms=self.deadline_ms)

    def settle(self) -> None:
        """Wait until the last answer's cloud session is gone (its open finished, the session deleted), so that
        every system starts from an idle link, as a user's next question would."""
        release = getattr(self.link, "release", None)
        if release is not None:
            self.io.run(release(), timeout=60)

    def evidence(self, record: Record, completion_ids: Sequence[int]) -> list[Any]:
        return cloud_evidence(self.io, self.scorer, self.slm, record, completion_ids, k=self.k,
                              knowledge=self.knowledge(record))


@contextlib.contextmanager
def _device(opts: EvalOptions, records: Sequence[Record], work: Path, say: Say) -> Iterator[Link]:
    from .. import models
    from ..backends import open_edge_gguf
    from ..cloud.client import FloeCloudBackend
    from ..cloud.knowledge import knowledge_id
    from ..cloud.local import LocalCloud, other_core
    from ..hybrid.clock import LoopThread
    from ..netem import NetemProxy, Profile
    from .knowledge_file import write_knowledge

    kb = write_knowledge(work / "knowledge.jsonl", records)
    edge_path, cloud_path = models.pull(opts.edge_model), models.pull(opts.cloud_model)
    args = ["--max-sessions-per-key", "64", *(["--knowledge", str(kb)] if kb is not None else [])]
    io = LoopThread()
    try:
        with LocalCloud(cloud_path, core=other_core(0), n_ctx=2048, extra_args=args) as cloud, \
                NetemProxy(upstream=cloud.address, profile=Profile(rtt_ms=opts.rtts[0])) as proxy, \
                open_edge_gguf(opts.backend, edge_path, threads=1, n_ctx=2048, delegate=opts.delegate,
                               say=say) as slm:
            scorer = FloeCloudBackend(cloud.url, slm.tokenizer, api_key=cloud.api_key)
            link = FloeCloudBackend(f"http://127.0.0.1:{proxy.port}", slm.tokenizer, api_key=cloud.api_key)
            name = lambda r: knowledge_id(r.cloud_context) if r.cloud_context else None  # noqa: E731
            yield Link(slm, io, scorer, link, proxy, name, opts.k, opts.deadline_ms)
            for backend in (scorer, link):
                io.run(backend.close(), timeout=5)
    finally:
        io.close()


def federate_gates(prepared: dict[str, Any]) -> str:
    """Every user gets the average of the users' gates, weighted by the positions each learned from (FedAvg)."""
    from ..gate import average

    have = {u: p for u, p in prepared.items() if p.gate is not None}
    if not have:
        return "federated gate: no user had a gate"
    gate = average([p.gate for p in have.values()], [p.positions for p in have.values()])
    for p in prepared.values():
        p.gate = gate
    return f"federated gate: the average of {len(have)} users' gates, weighted by their held-in positions"


def run_eval(opts: EvalOptions, say: Say = lambda _: None) -> dict[str, Any]:
    """Run the evaluation; the result has the JSON shape of `floe eval --json`."""
    train, test = read_dataset(opts.data)
    held_out = select(test, 1 if opts.quick and opts.users is None else opts.users, opts.held_out_per_task)
    if not held_out:
        raise DataError(f"{opts.data}/test.jsonl: no records")
    held_in_all = select([r for r in train if r.user in held_out], None, None)
    held_in = select([r for r in train if r.user in held_out], None, opts.held_in_per_task)
    tally = Tally(opts.rtts)
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        work = opts.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="floe-eval-")))
        work.mkdir(parents=True, exist_ok=True)
        everything = [r for rs in (*held_out.values(), *held_in.values()) for r in rs]
        dev = stack.enter_context(_device(opts, everything, work, say))
        # a federation is every device of the folder (train.jsonl), whichever of them are evaluated
        devices = select(train, None, None) if opts.train == "federated" else held_in_all
        adapters = train_adapters(opts, {u: devices.get(u, []) for u in {**held_out, **devices}
                                         if opts.train == "federated" or u in held_out}, work, say)
        prepared = {}
        for user in held_out:
            say(f"user {user}: the gate from {len(held_in.get(user, []))} held-in records")
            prepared[user] = prepare_user(dev, opts, user, held_in.get(user, []), adapters.get(user, []), work)
            notes += prepared[user].notes
        if opts.train == "federated":
            notes.append(federate_gates(prepared))
        for number, (user, records) in enumerate(held_out.items(), start=1):
            say(f"user {user} ({number}/{len(held_out)}): {len(records)} held-out records")
            score_user(dev, opts, user, records, prepared[user], tally, say)
    result = tally.as_json()
    result["settings"] = {"data": str(opts.data), "train": opts.train, "cloud_model": opts.cloud_model,
                          "edge_model": opts.edge_model,
                          "backend": opts.backend, "rtt_ms": list(opts.rtts), "k": opts.k,
                          "deadline_ms": opts.deadline_ms, "quick": opts.quick, "users": list(held_out),
                          "held_out_records": sum(map(len, held_out.values())),
                          "held_in_records": sum(map(len, held_in.values()))}
    result["notes"] = notes
    return result
