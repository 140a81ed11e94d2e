"""`floe train lora`: LoRA on the user's own records, at the rank of the device's hardware profile."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from ..data import Record, read_records
from ..profiles import PROJECTIONS
from ._types import Subparsers
from .progress import resolve_model


def _user_records(data: Path, user: Optional[str]) -> tuple[str, list[Record], list[str]]:
    """(user, their train.jsonl records, each record's file:line). A folder of several users needs --user: a device
    trains on its own user's records only."""
    path = data / "train.jsonl"
    if not path.is_file():
        raise ValueError(f"{data}: no train.jsonl (training reads a section 9 data folder's train.jsonl)")
    records = read_records(path)  # a malformed line is a DataError naming the file and the line
    users = sorted({r.user for r in records})
    if user is None:
        if len(users) != 1:
            more = "..." if len(users) > 8 else ""
            raise ValueError(f"{path} holds {len(users)} users ({', '.join(users[:8])}{more}): say whose records to "
                             "train on with --user")
        user = users[0]
    elif user not in users:
        raise ValueError(f"{path}: no records of user {user!r} (users: {', '.join(users[:8])})")
    chosen = [(i, r) for i, r in enumerate(records, start=1) if r.user == user]
    return user, [r for _, r in chosen], [f"{path}:{i}" for i, _ in chosen]


def _test_records(data: Path, user: str) -> list[Record]:
    path = data / "test.jsonl"
    return [r for r in read_records(path) if r.user == user] if path.is_file() else []


def _progress(enabled: bool) -> tuple[Callable[[Any], None], Callable[[], None]]:
    """A per-step callback and a stop function: a rich bar on a terminal, a line every 10 steps otherwise."""
    if not enabled:
        return (lambda info: None), (lambda: None)
    if sys.stderr.isatty():
        try:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            bar = Progress(TextColumn("training"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                           TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("{task.fields[rate]:.0f} tok/s"),
                           TimeRemainingColumn(), transient=True)
            task = bar.add_task("train", total=None, loss=float("nan"), rate=0.0)
            bar.start()
            return (lambda i: bar.update(task, completed=i.step, total=i.total, loss=i.loss,
                                         rate=i.tokens_per_s)), bar.stop
        except ImportError:
            pass

    def line(info: Any) -> None:
        if info.step % 10 == 0 or info.step == info.total:
            print(f"step {info.step}/{info.total} epoch {info.epoch} loss {info.loss:.3f} "
                  f"{info.tokens_per_s:.0f} tok/s", file=sys.stderr, flush=True)

    return line, lambda: None


def _cmd_lora(args: argparse.Namespace) -> int:
    from .. import _native
    from ..profiles import detect, load_profile
    from ..train import TrainConfig, build_examples, train_lora

    if args.hw_profile:
        profile, why = load_profile(args.hw_profile), "given"
    else:
        profile, reasons = detect()
        why = "detected: " + "; ".join(reasons)
    config = TrainConfig.from_profile(
        profile, rank=args.rank, alpha=args.alpha, targets=tuple(args.targets) if args.targets else None,
        epochs=args.epochs, max_steps=args.max_steps, lr=args.lr, batch_tokens=args.batch_tokens,
        max_len=args.max_len, seed=args.seed, dtype=args.dtype, checkpoint_every=args.checkpoint_every,
        activation_checkpointing=False if args.no_activation_checkpointing else None,
        threads=args.threads or min(profile.threads, os.cpu_count() or 1))  # a profile's 4 cores on a 2-core host
    base = Path(resolve_model(args.base))
    user, records, where = _user_records(Path(args.data), args.user)
    examples = build_examples(_native.Tokenizer.from_gguf(str(base)), records, config, where)
    out = Path(args.out)
    checkpoint = Path(args.checkpoint) if args.checkpoint else out.with_name(out.name + ".ckpt")
    if args.restart and checkpoint.exists():
        checkpoint.unlink()
    if not args.json:
        print(f"training a rank-{config.rank} LoRA on {', '.join(config.targets)} ({profile.name}, {why}) on "
              f"{len(examples)} records of {user}, {config.threads} threads", file=sys.stderr)
    step, stop = _progress(not args.json)
    try:
        result = train_lora(base, examples, config, out, checkpoint=checkpoint, progress=step)
    except KeyboardInterrupt:
        stop()
        print(f"interrupted; the same command resumes from {checkpoint}", file=sys.stderr)
        return 130
    stop()
    report: dict[str, Any] = {
        "adapter": str(result.adapter), "user": user, "profile": profile.name, "rank": config.rank,
        "targets": list(config.targets), "records": result.examples, "steps": result.steps,
        "resumed_from_step": result.resumed_from, "tokens": result.tokens,
        "tokens_per_s": round(result.tokens_per_s, 1), "seconds": round(result.seconds, 1),
        "peak_rss_mb": round(result.peak_rss_mb), "first_loss": round(result.first_loss, 4),
        "last_loss": round(result.last_loss, 4)}
    if args.eval:
        report["heldout_top1"] = _heldout(base, Path(args.data), user, out, config.threads)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return 0


def _heldout(base: Path, data: Path, user: str, adapter: Path, threads: int) -> dict[str, Any]:
    from ..train.heldout import heldout_top1

    test = _test_records(data, user)
    if not test:
        raise ValueError(f"{data}: no test.jsonl records of {user} to evaluate on (--eval)")
    return heldout_top1(base, test, adapter, threads=threads).as_dict()


def _print_report(r: dict[str, Any]) -> None:
    resumed = f", resumed at step {r['resumed_from_step']}" if r["resumed_from_step"] else ""
    print(f"wrote {r['adapter']}: {r['steps']} steps{resumed}, {r['tokens']} tokens in {r['seconds']} s "
          f"({r['tokens_per_s']} tok/s), loss {r['first_loss']} -> {r['last_loss']}, peak RSS {r['peak_rss_mb']} MB")
    for task, reads in r.get("heldout_top1", {}).items():
        cells = ", ".join(f"{read} {v['top1']:.1%}" for read, v in reads.items())
        print(f"held-out top-1, {task} ({next(iter(reads.values()))['tokens']} tokens): {cells}")


def register(sub: Subparsers) -> None:
    from .profile import add_profile_option

    p = sub.add_parser("train", help="train on the device: LoRA on the user's own records")
    tsub = p.add_subparsers(dest="train_command", required=True)
    lora = tsub.add_parser("lora", help="train a LoRA adapter on a user's train.jsonl (section 9 format) at the "
                           "profile's rank and export it as a llama.cpp GGUF adapter (needs the train extra)")
    lora.add_argument("--base", default="smollm2-135m", help="base GGUF (path or model name; default smollm2-135m)")
    lora.add_argument("--data", required=True, help="data folder holding train.jsonl (and test.jsonl for --eval)")
    lora.add_argument("--user", help="whose records to train on (required when the folder holds several users)")
    add_profile_option(lora, "--profile", applies="the LoRA rank, alpha, targets and threads",
                       note=" (default: `floe profile detect`)")
    lora.add_argument("--out", required=True, help="the adapter file to write (GGUF)")
    lora.add_argument("--rank", type=int, help="LoRA rank (default: the profile's)")
    lora.add_argument("--alpha", type=float, help="LoRA alpha (default: the profile's)")
    lora.add_argument("--targets", nargs="+", choices=PROJECTIONS, help="projections to adapt (default: the "
                      "profile's)")
    lora.add_argument("--epochs", type=int, help="passes over the records (default 3)")
    lora.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    lora.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    lora.add_argument("--batch-tokens", type=int, help="padded tokens per step; bounds memory (default 512)")
    lora.add_argument("--max-len", type=int, help="tokens per record; longer inputs lose their start (default 512)")
    lora.add_argument("--no-activation-checkpointing", action="store_true", help="keep every activation for the "
                      "backward pass instead of recomputing them: more memory")
    lora.add_argument("--seed", type=int, help="LoRA initialization and record order (default 0)")
    lora.add_argument("--threads", type=int, help="torch threads (default: the profile's)")
    lora.add_argument("--dtype", choices=("f16", "f32"), help="the adapter's tensor type (default f16)")
    lora.add_argument("--checkpoint", help="training state file, for resuming (default: OUT.ckpt)")
    lora.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 20)")
    lora.add_argument("--restart", action="store_true", help="ignore and remove an existing checkpoint")
    lora.add_argument("--eval", action="store_true", help="then score the user's test.jsonl: held-out top-1 of "
                      "the base without and with the private context, and with the adapter")
    lora.add_argument("--json", action="store_true", help="machine-readable report (no progress display)")
    lora.set_defaults(func=_cmd_lora)
