#!/usr/bin/env python3
"""The paper's table on our models: edge-only, cloud-only and floe on held-out personal data (`floe eval`).

    python bench/eval.py                                  # both clouds, --train none and local; writes BENCHMARKS.md
    python bench/eval.py --clouds gemma3-270m --train local --users 3 --per-task 4
    python bench/eval.py --from-json                      # rewrite the section from bench/eval/*.json (no run)
    python bench/eval.py --train local federated --reuse  # run only the configurations without a JSON yet

Data: `floe data generate --users U --seed S` (every other held-out record is novel: it needs world knowledge the
user's history lacks). Each configuration runs `floe_edge.evaluation.run_eval` (the code behind `floe eval`) with the
edge on core 0 and the cloud on core 1, and the results go into the "eval" section of BENCHMARKS.md (one per CPU),
with the JSON and plots under bench/eval/. Adapters are cached in --work-dir between configurations and runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

# bench/ goes last on the path: bench/kernels.py must not shadow the `kernels` package transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.append(str(Path(__file__).resolve().parent))
from common import load, machine, write_section  # noqa: E402

OUT = Path(__file__).resolve().parent / "eval"


def _run(args: argparse.Namespace, data: Path, cloud: str, train: str) -> tuple[dict[str, Any], float]:
    from floe_edge.evaluation import EvalOptions, run_eval, write_plots

    opts = EvalOptions(data=data, train=train, cloud_model=cloud, rtts=tuple(args.rtt), users=args.users,
                       per_task=args.per_task, gate_records=args.gate_records,
                       latency_records=args.latency_records, hw_profile=args.hw_profile,
                       work_dir=Path(args.work_dir))
    t0 = time.perf_counter()
    result = run_eval(opts, lambda line: print(line, file=sys.stderr, flush=True))
    seconds = result["seconds"] = round(time.perf_counter() - t0, 1)
    result["measured"] = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load {load()} at the end"
    OUT.mkdir(exist_ok=True)
    name = f"{cloud}_{train}"
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_plots(result, OUT, prefix=name)
    return result, seconds


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clouds", nargs="+", default=["gemma3-270m", "smollm2-135m"])
    ap.add_argument("--train", nargs="+", default=["local", "none"], choices=["none", "local", "federated"])
    ap.add_argument("--users", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-task", type=int, default=4, help="held-out records per user and task")
    ap.add_argument("--gate-records", type=int, default=8, help="held-in records per user and task for the gate")
    ap.add_argument("--latency-records", type=int, default=4, help="records per user answered at every RTT")
    ap.add_argument("--rtt", type=float, nargs="+", default=[30.0, 10.0, 80.0, 250.0])
    ap.add_argument("--hw-profile", default="x86-avx512")
    ap.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "floe-bench-eval"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--from-json", action="store_true",
                    help="rebuild the section from the JSON files a previous run left in bench/eval/")
    ap.add_argument("--reuse", action="store_true",
                    help="take a configuration's results from bench/eval/ when a previous run left them there")
    args = ap.parse_args(argv)

    from floe_edge import kernels
    from floe_edge.data import generate
    from floe_edge.evaluation import markdown_table, verdict

    data = Path(args.work_dir) / f"data-u{args.users}-s{args.seed}"
    if not args.from_json:
        generate(data, users=args.users, seed=args.seed)
    command = " ".join(["python bench/eval.py", *(a for a in (argv if argv is not None else sys.argv[1:])
                                                  if a != "--from-json")])
    lines = ["## Evaluation: the paper's table on our models (`floe eval`)", "",
             f"`{command}` — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {machine()}, load {load()}, kernels "
             f"`{kernels.active_variant()}`. Data: `floe data generate --users {args.users} --seed {args.seed}`; "
             f"{args.per_task} held-out records per user and task (half of them novel: world knowledge the user's "
             f"history lacks), the gate and static weights learned on {args.gate_records} held-in records per user "
             f"and task. Edge SmolLM2-135M Q4_1 (1 thread, core 0; with `--train local` a LoRA per user at the "
             f"`{args.hw_profile}` profile; with `--train federated` the users federate on Flower, 3 rounds of 20 "
             f"steps, each edge stacking the global and its personal adapter, the gates averaged), cloud on core 1 "
             f"with the records' cloud contexts as its knowledge base, "
             f"top-8 per position, 200 ms/token deadline. Exact match and cost at the first RTT; latency p50 over "
             f"all records, the other RTTs on {args.latency_records} records per user.", ""]
    for cloud in args.clouds:
        for train in args.train:
            stored = OUT / f"{cloud}_{train}.json"
            if args.from_json or (args.reuse and stored.exists()):
                result = json.loads(stored.read_text())
                seconds = result.get("seconds", float("nan"))
            else:
                result, seconds = _run(args, data, cloud, train)
            when = result.get("measured", "measured by an earlier run of this command")
            lines += [f"### cloud {cloud}, adapter: {train} ({seconds / 60:.0f} min; {when})", "",
                      *markdown_table(result, args.rtt[0]), "", *(f"- {line}" for line in verdict(result)),
                      *(f"- {note}" for note in result["notes"]), "",
                      "Latency p50 (ms) against RTT, over the records answered at every RTT: " + "; ".join(
                          f"{name} " + ", ".join(f"{r} ms: {v:.0f}" for r, v in s["latency_by_rtt_p50_ms"].items()
                                                 if v is not None)
                          for name, s in result["systems"].items() if s.get("latency_by_rtt_p50_ms")), "",
                      f"Plots: `bench/eval/{cloud}_{train}_{{accuracy,latency,weights,bytes}}.png`; JSON: "
                      f"`bench/eval/{cloud}_{train}.json`.", ""]
            report = "\n".join(lines)
            print(report)
            if not args.no_write:  # after every configuration: a long run keeps what it measured
                write_section("eval", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
