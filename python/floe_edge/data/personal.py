"""A seeded generator of personal data in the section 9 format: several users' private worlds and the paper's three
tasks (on-device commands, conversational QA, code completion).

Every name, id, address and API is coined from syllables (seeded), so neither model knows it beforehand. Records of
one user share one private world (devices, contacts and bookings, own helper functions); the world knowledge (vendor
APIs, places, libraries) is shared by all users and shows up only in `cloud_context`. Each completion needs both
sides: it holds a span found only in `private_context` (a device id, a booking time, a helper name) and one found
only in `cloud_context` (an API function, an address or closing time, a library function); the record's extra key
`meta` names both spans and the prompt template. Held-out (test) prompts come from templates never used in train
(`TEMPLATES[task][intent].test` vs `.train`), so the held-out split measures more than recall of seen phrasings.

Every other held-out record is *novel* (`meta.novel`): it concerns a device, booking, contact or library that the
user's history (train) never mentions in a completion, so the world knowledge it needs (a vendor's functions, a
place's address or hours, a library's API) is nowhere in what the device could learn from: an adapter trained on the
history cannot know it, only the cloud can. The other held-out records reuse known entities with new phrasings.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from .names import Coiner, Draft, Phrasings, TaskKind
from .records import Record, write_records
from .task_code import TASK as CODE
from .task_commands import TASK as COMMANDS
from .task_qa import TASK as QA

__all__ = ["generate", "GeneratedData", "TEMPLATES", "TASK_KINDS", "needs_both"]

TASK_KINDS: tuple[TaskKind, ...] = (COMMANDS, QA, CODE)
TEMPLATES: dict[str, dict[str, Phrasings]] = {t.name: dict(t.templates) for t in TASK_KINDS}
_ATTEMPTS = 50  # drafts tried for one record before a collision of spans is called a bug


@dataclass(frozen=True)
class GeneratedData:
    train_path: Path
    test_path: Path
    train: list[Record]
    test: list[Record]


def needs_both(draft: Draft) -> bool:
    """Whether the completion needs the private and the cloud context: its private span occurs in the private
    context only (not in the cloud context nor in the prompt), its cloud span in the cloud context only."""
    return (draft.private_span in draft.completion and draft.private_span in draft.private_context
            and draft.private_span not in draft.cloud_context and draft.private_span not in draft.prompt
            and draft.cloud_span in draft.completion and draft.cloud_span in draft.cloud_context
            and draft.cloud_span not in draft.private_context and draft.cloud_span not in draft.prompt)


def _record(user: str, task: str, draft: Draft, novel: bool) -> Record:
    meta = {"template": f"{task}/{draft.template}", "private_span": draft.private_span, "cloud_span": draft.cloud_span,
            "novel": novel}
    return Record(user, task, draft.private_context, draft.cloud_context, draft.prompt, draft.completion,
                  extra={"meta": meta})


def _records(kind: TaskKind, rng: random.Random, user: str, world: object, catalogue: object, split: str,
             count: int) -> list[Record]:
    records = []
    for number in range(count):
        novel = split == "test" and number % 2 == 0
        for _ in range(_ATTEMPTS):
            draft = kind.draft(rng, world, catalogue, split, novel)
            if needs_both(draft):
                break
        else:
            raise RuntimeError(f"{kind.name}: no draft needing both contexts in {_ATTEMPTS} tries")
        records.append(_record(user, kind.name, draft, novel))
    return records


def generate(out_dir: Union[str, Path], users: int = 8, seed: int = 0, train_per_task: int = 24,
             test_per_task: int = 8) -> GeneratedData:
    """Write `train.jsonl` and `test.jsonl` under out_dir (created if needed): for each of `users` users (u1, u2, ...)
    and each task, `train_per_task` training and `test_per_task` held-out records. The same arguments give the same
    bytes; another seed gives other worlds."""
    for name, value, least in (("users", users, 1), ("train_per_task", train_per_task, 0),
                               ("test_per_task", test_per_task, 1)):
        if not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    coin = Coiner(random.Random(f"floe-data:{seed}:names"))
    catalogues = {k.name: k.catalogue(random.Random(f"floe-data:{seed}:{k.name}:catalogue"), coin) for k in TASK_KINDS}
    train: list[Record] = []
    test: list[Record] = []
    for number in range(1, users + 1):
        user = f"u{number}"
        for kind in TASK_KINDS:
            world = kind.world(random.Random(f"floe-data:{seed}:{user}:{kind.name}:world"), coin,
                               catalogues[kind.name])
            for split, count, into in (("train", train_per_task, train), ("test", test_per_task, test)):
                rng = random.Random(f"floe-data:{seed}:{user}:{kind.name}:{split}")
                into.extend(_records(kind, rng, user, world, catalogues[kind.name], split, count))
    out.mkdir(parents=True, exist_ok=True)
    write_records(out / "train.jsonl", train)
    write_records(out / "test.jsonl", test)
    return GeneratedData(out / "train.jsonl", out / "test.jsonl", train, test)
