#!/usr/bin/env python3
"""On-device LoRA training: speed and memory per hardware profile, and held-out top-1 before and after, per user and
task.

    python bench/train.py                          # 3 users; three profiles' ranks on u1; writes BENCHMARKS.md
    python bench/train.py --users 2 --profiles rpi4 --no-write

Each run is `floe train lora --json --eval` in a fresh process (so its peak RSS is its own), pinned with taskset to
the threads it uses. The data is generated (`floe data generate`, seed 0: 24 training and 8 held-out records per
user and task, held-out phrasings differ). Held-out top-1 is teacher forced on the completion tokens, on the native
decoder: the base reading the prompt alone, the base reading the private context and the prompt (what the adapter
must beat), and the same with the user's adapter.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

# bench/ goes last on the path: bench/kernels.py must not shadow the `kernels` package transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.append(str(Path(__file__).resolve().parent))
from common import load, machine, write_section  # noqa: E402

READS = ("prompt only", "private context", "private context + LoRA")


def train(model: Path, data: Path, user: str, profile: str, out: Path, threads: int, epochs: int) -> dict[str, Any]:
    cores = ",".join(str(i) for i in range(threads))
    cmd = ["taskset", "-c", cores, sys.executable, "-m", "floe_edge.cli", "train", "lora", "--base", str(model),
           "--data", str(data), "--user", user, "--profile", profile, "--out", str(out), "--threads", str(threads),
           "--epochs", str(epochs), "--eval", "--json", "--restart"]
    print(f"training {user} at {profile} ...", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    report["adapter_bytes"] = out.stat().st_size
    return report


def speed_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| profile | rank | targets | adapter (f16) | steps | tokens | tokens/s | wall time | peak RSS |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for profile, r in runs.items():
        lines.append(f"| {profile} | {r['rank']} | {', '.join(r['targets'])} | {r['adapter_bytes'] / 1e6:.1f} MB | "
                     f"{r['steps']} | {r['tokens']} | {r['tokens_per_s']:.0f} | {r['seconds'] / 60:.1f} min | "
                     f"{r['peak_rss_mb']} MB |")
    return lines


def accuracy_table(users: dict[str, dict[str, Any]]) -> tuple[list[str], bool]:
    """Rows per user and task, then all users; and whether the adapter beat the private context everywhere."""
    lines = ["| user | task | tokens | prompt only | private context | + LoRA | gain |",
             "|---|---|---:|---:|---:|---:|---:|"]
    totals: dict[tuple[str, str], list[float]] = {}
    everywhere = True
    for user, report in users.items():
        for task, reads in report["heldout_top1"].items():
            n = reads[READS[0]]["tokens"]
            rates = [reads[read]["top1"] for read in READS]
            everywhere &= rates[2] > rates[1]
            lines.append(f"| {user} | {task} | {n} | " + " | ".join(f"{x:.1%}" for x in rates) +
                         f" | {100 * (rates[2] - rates[1]):+.1f} pt |")
            for read, rate in zip(READS, rates):
                totals.setdefault((task, read), [0.0, 0.0])
                totals[task, read][0] += rate * n
                totals[task, read][1] += n
    for task in dict.fromkeys(t for t, _ in totals):
        rates = [totals[task, read][0] / totals[task, read][1] for read in READS]
        lines.append(f"| all | {task} | {int(totals[task, READS[0]][1])} | " +
                     " | ".join(f"**{x:.1%}**" for x in rates) + f" | **{100 * (rates[2] - rates[1]):+.1f} pt** |")
    return lines, everywhere


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="base GGUF (default: floe models pull smollm2-135m)")
    ap.add_argument("--users", type=int, default=3, help="users trained at --accuracy-profile")
    ap.add_argument("--profiles", nargs="+", default=["rpi4", "rpi5", "x86-avx512"],
                    help="profiles whose LoRA settings are trained on user u1")
    ap.add_argument("--accuracy-profile", default="x86-avx512", help="the profile every user is trained at")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    from floe_edge import kernels, models
    from floe_edge.data import generate

    model = Path(args.model) if args.model else models.pull("smollm2-135m")
    started = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(data, users=args.users, seed=0)
        runs = {p: train(model, data, "u1", p, Path(tmp) / f"{p}.gguf", args.threads, args.epochs)
                for p in args.profiles}
        users = {"u1": runs[args.accuracy_profile]} if args.accuracy_profile in runs else {}
        for i in range(1, args.users + 1):
            if f"u{i}" not in users:
                users[f"u{i}"] = train(model, data, f"u{i}", args.accuracy_profile, Path(tmp) / f"u{i}.gguf",
                                       args.threads, args.epochs)
    accuracy, everywhere = accuracy_table(users)
    command = " ".join(["python bench/train.py", *(argv if argv is not None else sys.argv[1:])])
    run = (f"`{command}` — {started:%Y-%m-%d %H:%M} UTC, {machine()}, load {load()}, kernels "
           f"`{kernels.active_variant()}` (held-out scoring), torch {args.threads} threads pinned; "
           f"{model.name}; {args.epochs} epochs over each user's 72 training records (24 per task).")
    lines = [
        "## On-device LoRA training (SmolLM2-135M, `floe train lora`)", "", run, "",
        "Speed and memory per profile (user u1; transformers + PEFT on the dequantized GGUF, f32, AdamW; tokens are "
        "all positions read, the loss is on the completion tokens only; peak RSS of the whole process, torch "
        "included):", "", *speed_table(runs), "",
        f"Held-out top-1 on the completion tokens, each user trained at `{args.accuracy_profile}` on their own records "
        f"(8 held-out records per task and user, phrasings unlike the training ones): the adapter "
        f"{'beats' if everywhere else 'does NOT beat'} the base model with the same private context on every user "
        "and task. The held-out records reuse the user's world (the same devices, contacts and helpers, and the device "
        "APIs of the user's history), and some held-out completions occur in training under another phrasing: the "
        "adapter learns the private facts and the cloud facts that recur in the user's history; knowledge absent "
        "from that history stays the cloud's.", "", *accuracy,
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        write_section("train", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
