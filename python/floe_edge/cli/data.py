"""`floe data generate|check`: personal data in the section 9 format (DESIGN.md)."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Callable

from ..data import TASKS, Record, generate, read_dataset
from ._types import Subparsers


def _counts(records: list[Record]) -> dict[str, dict[str, int]]:
    """Records per user and task; the paper's three tasks first, any other task after them."""
    count = Counter((r.user, r.task) for r in records)
    tasks = [t for t in TASKS if any(k[1] == t for k in count)] + sorted({t for _, t in count} - set(TASKS))
    return {user: {t: count[user, t] for t in tasks if count[user, t]} for user in sorted({u for u, _ in count})}


def _print_counts(summary: dict[str, dict[str, dict[str, int]]]) -> None:
    tasks = list(dict.fromkeys(t for split in summary.values() for row in split.values() for t in row))
    rows = [["split", "user", *tasks, "total"]]
    for split, users in summary.items():
        rows += [[split, user, *(str(row.get(t, 0)) for t in tasks), str(sum(row.values()))]
                 for user, row in users.items()]
        rows.append([split, "all", *(str(sum(r.get(t, 0) for r in users.values())) for t in tasks),
                     str(sum(sum(r.values()) for r in users.values()))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def _cmd_generate(args: argparse.Namespace) -> int:
    data = generate(args.out, users=args.users, seed=args.seed, train_per_task=args.train_per_task,
                    test_per_task=args.test_per_task)
    result = {"train": str(data.train_path), "test": str(data.test_path), "train_records": len(data.train),
              "test_records": len(data.test)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"wrote {len(data.train)} records to {data.train_path}, {len(data.test)} to {data.test_path}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    train, test = read_dataset(args.dir)  # a malformed line raises DataError naming the file and the line
    summary = {"train": _counts(train), "test": _counts(test)}
    if args.json:
        print(json.dumps({"dir": args.dir, "train_records": len(train), "test_records": len(test), **summary},
                         indent=2))
    else:
        print(f"{args.dir}: valid, {len(train)} train and {len(test)} test records")
        _print_counts(summary)
    return 0


def _count(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    parse.__name__ = f"count_from_{least}"
    return parse


def register(sub: Subparsers) -> None:
    p = sub.add_parser("data", help="personal data in the section 9 format: generate, check")
    dsub = p.add_subparsers(dest="data_command", required=True)
    gen = dsub.add_parser("generate", help="write a seeded synthetic data set (train.jsonl, test.jsonl) of several "
                          "users and the tasks commands, qa, code")
    gen.add_argument("--out", required=True, help="folder to write train.jsonl and test.jsonl into")
    gen.add_argument("--users", type=_count(1), default=8, help="number of users (default 8)")
    gen.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    gen.add_argument("--train-per-task", type=_count(0), default=24,
                     help="training records per user and task (default 24)")
    gen.add_argument("--test-per-task", type=_count(1), default=8,
                     help="held-out records per user and task (default 8)")
    gen.add_argument("--json", action="store_true", help="machine-readable output")
    gen.set_defaults(func=_cmd_generate)
    chk = dsub.add_parser("check", help="validate a data folder (every line of train.jsonl and test.jsonl) and "
                          "count its records per user and task")
    chk.add_argument("dir", help="folder holding test.jsonl and optionally train.jsonl")
    chk.add_argument("--json", action="store_true", help="machine-readable output")
    chk.set_defaults(func=_cmd_check)
