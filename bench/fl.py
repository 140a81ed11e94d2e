#!/usr/bin/env python3
"""Federated LoRA on Flower (`floe fl sim`), the full SmolLM2-135M: clients of three hardware profiles (rpi4 r4 q,v;
rpi5 r8 attention; x86-avx2 r16 all seven), the rpi4 one with little data, 3 rounds; the low-data client's
federated adapter against its local-only one (the same rounds and steps, alone); and the cost of differential
privacy (clipping + Gaussian noise in ΔW space) at one noise level.

    python bench/fl.py                     # writes the "fl" section of BENCHMARKS.md
    python bench/fl.py --steps 10 --no-write

Each run is `floe fl sim` pinned with taskset to the two cores (each virtual client gets both, so clients train one
after another). Held-out top-1: teacher forced on the completion tokens of the user's held-out records (section 9),
the base reading the private context, with the adapter the round starts from and with the one it ends with.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# bench/ goes last on the path: bench/kernels.py must not shadow the `kernels` package transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.append(str(Path(__file__).resolve().parent))
from common import load, machine, write_section  # noqa: E402

CLIENTS = "u1:rpi4:{low},u2:rpi5,u3:x86-avx2"  # u1: the device with little data


def sim(out: Path, data: Path, clients: str, args: argparse.Namespace, *extra: str,
        rounds: int = 0) -> list[dict[str, Any]]:
    """`floe fl sim`'s metrics rows (a run already complete in `out`, from --work, is read, not run again)."""
    rounds = rounds or args.rounds
    done_before = out / "metrics.jsonl"
    if done_before.exists() and sum('"summary": true' in line for line in done_before.read_text().splitlines()) \
            == rounds:
        print(f"reusing {out}", file=sys.stderr)
        wall = out / "wall.json"
        return [json.loads(line) for line in done_before.read_text().splitlines()] + [
            json.loads(wall.read_text()) if wall.exists() else {"wall_s": float("nan")}]
    cmd = ["taskset", "-c", "0,1", sys.executable, "-m", "floe_edge.cli", "fl", "sim", "--clients-list", clients,
           "--rounds", str(rounds), "--data", str(data), "--base", args.base, "--out", str(out), "--steps",
           str(args.steps), "--lr", str(args.lr), "--max-len", "512", "--batch-tokens", "512", "--quiet", "--json",
           *extra]
    print(f"floe fl sim {clients} {' '.join(extra)} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows.append({"wall_s": time.perf_counter() - started})
    (out / "wall.json").write_text(json.dumps(rows[-1]))
    return rows


def used(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status") == "used"]


def by_client(rows: list[dict[str, Any]], rnd: int) -> dict[str, dict[str, Any]]:
    return {r["user"]: r for r in used(rows) if r["round"] == rnd}


def client_table(rows: list[dict[str, Any]], rounds: int) -> list[str]:
    first, last = by_client(rows, 1), by_client(rows, rounds)
    lines = ["| client | profile | rank | train records | private context (base) | start of round 1 | "
             + " | ".join(f"after round {r}" for r in range(1, rounds + 1)) + " | train s / round |",
             "|---|---|---:|---:|---:|---:|" + "---:|" * rounds + "---:|"]
    for user in sorted(last):
        trail = [by_client(rows, r).get(user, {}).get("top1-after") for r in range(1, rounds + 1)]
        secs = statistics.mean(by_client(rows, r)[user]["train-s"] for r in range(1, rounds + 1)
                               if user in by_client(rows, r))
        lines.append(f"| {user} | {last[user]['profile']} | {last[user]['rank']} | {last[user]['examples']} | "
                     f"{first[user]['top1-context']:.3f} | {first[user]['top1-before']:.3f} | "
                     + " | ".join(f"{t:.3f}" if t is not None else "–" for t in trail) + f" | {secs:.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--low", type=int, default=3, help="training records of the low-data client u1")
    parser.add_argument("--train-per-task", type=int, default=6)
    parser.add_argument("--test-per-task", type=int, default=2)
    parser.add_argument("--dp-noise", type=float, default=1.0)
    parser.add_argument("--dp-rounds", type=int, default=0, help="rounds of the DP run (default: --rounds)")
    parser.add_argument("--work", help="keep the runs here (default: a temporary folder); complete ones are reused")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory(prefix="floe-bench-fl-") as tmp:
        work = Path(args.work or tmp)
        from floe_edge.data import generate

        generate(work / "data", users=3, seed=0, train_per_task=args.train_per_task, test_per_task=args.test_per_task)
        clients = CLIENTS.format(low=args.low)
        fed = sim(work / "fed", work / "data", clients, args)
        alone = sim(work / "alone", work / "data", f"u1:rpi4:{args.low}", args)
        clip = statistics.median(r["update-norm"] for r in used(fed) if r["round"] <= (args.dp_rounds or args.rounds))
        dp = sim(work / "dp", work / "data", clients, args, "--clip", f"{clip:.4g}", "--dp-noise",
                 str(args.dp_noise), rounds=args.dp_rounds)
    section = report(args, stamp, fed, alone, dp, clip)
    print(section)
    if not args.no_write:
        write_section("fl", section)


def report(args: argparse.Namespace, stamp: str, fed: list, alone: list, dp: list, clip: float) -> str:
    r, r_dp = args.rounds, args.dp_rounds or args.rounds
    last_fed, last_dp, same_fed = by_client(fed, r), by_client(dp, r_dp), by_client(fed, r_dp)
    raised = all(last_fed[u]["top1-after"] > by_client(fed, 1)[u]["top1-before"] for u in last_fed)
    low_fed, low_alone = last_fed["u1"]["top1-after"], by_client(alone, r)["u1"]["top1-after"]
    noise = next(x["noise-std"] for x in dp if x.get("summary"))
    mean = lambda rows: statistics.mean(v["top1-after"] for v in rows.values())  # noqa: E731
    lines = [
        "## Federated LoRA on Flower (floe fl sim, SmolLM2-135M)", "",
        f"`python bench/fl.py` — {stamp}, {machine()}, load {load()}. Flower 1.42 simulation runtime (a SuperLink "
        f"in simulation mode, one virtual SuperNode per client, each given both cores). Data: `floe data generate "
        f"--users 3 --seed 0 --train-per-task {args.train_per_task} --test-per-task {args.test_per_task}`; u1 keeps "
        f"{args.low} training records. {r} rounds "
        f"of {args.steps} local steps (lr {args.lr}); FlexLoRA SVD aggregation at global rank 16, each projection "
        "averaged over the clients that train it. Held-out top-1, teacher forced on the completion tokens.", "",
        *client_table(fed, r), "",
        f"Every client's held-out top-1 after round {r} above the adapter it started round 1 with: "
        f"**{'yes' if raised else 'no'}**. Wall time {fed[-1]['wall_s'] / 60:.1f} min.", "",
        f"Low-data client u1 ({args.low} records, rpi4 r4) after {r} rounds: federated **{low_fed:.3f}**, "
        f"local-only (same rounds and steps, alone) **{low_alone:.3f}** (private context without adapter "
        f"{by_client(fed, 1)['u1']['top1-context']:.3f}).", "",
        f"Differential privacy: each update clipped to ‖ΔW_i − ΔW_g‖_F ≤ {clip:.3g} (the median update norm of the "
        f"run above over its first {r_dp} round(s)), Gaussian noise multiplier σ = {args.dp_noise}, noise std "
        f"{noise:.3g} per ΔW coordinate (σ·C / n_min). Mean held-out top-1 after round {r_dp}: "
        f"{mean(last_dp):.3f} with DP vs {mean(same_fed):.3f} without (cost {mean(same_fed) - mean(last_dp):+.3f}).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
