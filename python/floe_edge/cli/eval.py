"""`floe eval`: every system (cloud, edge, floe with static / adaptive / gated fusion, the oracle) on the held-out
records of a section 9 data folder: teacher-forced top-1, exact match, latency at each RTT, bytes per query."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._types import Subparsers


def _systems(text: str) -> tuple[str, ...]:
    from ..evaluation import SYSTEMS

    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in names if s not in SYSTEMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(SYSTEMS)}")
    return names


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..evaluation import SYSTEMS, EvalOptions, markdown_table, run_eval, verdict, write_plots

    opts = EvalOptions(data=Path(args.data), systems=args.systems or SYSTEMS, train=args.train,
                       cloud_model=args.cloud_model, rtts=tuple(args.rtt or (30.0,)), quick=args.quick,
                       users=args.users, per_task=args.per_task, hw_profile=args.hw_profile,
                       work_dir=Path(args.work_dir) if args.work_dir else None, k=args.k,
                       deadline_ms=args.deadline_ms, backend=args.backend, delegate=args.delegate)
    # progress on stderr; with --json only on a terminal (an export or adapter training takes minutes)
    show = not args.json or sys.stderr.isatty()
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if show else (lambda line: None)
    result = run_eval(opts, say)
    if args.json:
        text = json.dumps(result, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    if args.json != "-":
        print("\n".join(markdown_table(result, opts.rtts[0])))
        for line in verdict(result):
            print(f"- {line}")
        for note in result["notes"]:
            print(f"note: {note}")
    if args.plots:
        for path in write_plots(result, Path(args.plots)):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def register(sub: Subparsers) -> None:
    from ..evaluation.options import CLOUD_MODELS
    from ..litert.runtime import DELEGATES
    from ..profiles import BACKENDS

    p = sub.add_parser("eval", help="evaluate edge, cloud and floe on a personal-data folder",
                       description=__doc__)
    p.add_argument("--data", required=True, help="a folder with test.jsonl (and train.jsonl): DESIGN.md section 9")
    p.add_argument("--systems", type=_systems, default=None,
                   help="comma-separated: cloud, edge, edge-generic, floe-static, floe-adaptive, floe-gate, oracle "
                        "(default: all)")
    p.add_argument("--train", choices=("none", "local", "federated"), default="none",
                   help="the edge's adapter: none; local (a LoRA per user on their train.jsonl records, needs the "
                        "train extra); federated (the users federate on Flower, each keeps global + personal "
                        "adapters, the gates are averaged; needs the fl extra)")
    p.add_argument("--cloud-model", choices=CLOUD_MODELS, default="smollm2-135m",
                   help="the cloud model (gemma3-270m: another vocabulary, top-k mapped by bytes)")
    p.add_argument("--rtt", type=float, nargs="+", metavar="MS",
                   help="round-trip times to answer at (default 30); exact match counts the first")
    p.add_argument("--backend", choices=BACKENDS, default="native",
                   help="the edge's backend: native (default) or litert (the edge exported to an int8 .tflite once "
                        "per adapter set it runs with, cached: minutes each; the [export] and [litert] extras)")
    p.add_argument("--delegate", choices=("none", *DELEGATES), default="none",
                   help="with --backend litert: a GPU or NPU delegate (default none: XNNPACK on the CPU)")
    p.add_argument("--quick", action="store_true", help="1 user, 2 held-out and 3 held-in records per task (CI)")
    p.add_argument("--users", type=int, default=None, help="evaluate the first N users of test.jsonl")
    p.add_argument("--per-task", type=int, default=None, help="held-out records per user and task")
    p.add_argument("--k", type=int, default=8, help="cloud top-k per position (default 8)")
    p.add_argument("--deadline-ms", type=float, default=200.0, help="per-token deadline of floe's answers")
    p.add_argument("--hw-profile", help="hardware profile for --train (LoRA rank, targets; default: detected)")
    p.add_argument("--work-dir", help="where adapters and gates are kept (default: a temporary directory)")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots into DIR (needs matplotlib)")
    p.add_argument("--json", nargs="?", const="-", metavar="OUT",
                   help="write the result as JSON to OUT (or stdout without OUT)")
    p.set_defaults(func=_cmd_eval)
