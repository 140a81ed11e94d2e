"""`floe fl sim` and `floe fl up`: federated LoRA on Flower (fl extra), in the simulation runtime or as a real
deployment on 127.0.0.1 (SuperLink + one SuperNode per client, driven by `flwr run`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._types import Subparsers
from .progress import resolve_model


def _settings(args: argparse.Namespace) -> Any:
    from ..fl.settings import RunSettings

    clients = args.clients_list
    if clients is None:
        profiles = ["rpi4", "rpi5", "x86-avx2"]
        clients = ",".join(f"u{i + 1}:{profiles[i % 3]}" for i in range(args.clients))
    data = Path(args.data)
    if not (data / "train.jsonl").is_file() or not (data / "test.jsonl").is_file():
        raise ValueError(f"{data}: needs train.jsonl and test.jsonl (`floe data generate`)")
    out = Path(args.out).resolve()
    return RunSettings(num_server_rounds=args.rounds, clients=clients, base_model=str(Path(resolve_model(args.base))
                       .resolve()), data_dir=str(data.resolve()), out_dir=str(out), steps=args.steps, lr=args.lr,
                       method=args.method, global_rank=args.global_rank, clip_norm=args.clip, dp_noise=args.dp_noise,
                       round_timeout=args.round_timeout, threads=args.threads, evaluate=not args.no_eval,
                       max_len=args.max_len, batch_tokens=max(args.batch_tokens, args.max_len),
                       personal_store=str(Path(args.personal_store).resolve()) if args.personal_store else "")


def _cmd(args: argparse.Namespace) -> int:
    from ..fl.report import plot_metrics, read_rows
    from ..fl.runner import run_deployment, run_simulation

    import signal
    import sys

    # SIGTERM (and SIGINT even where a background shell ignores it) end the run through its cleanup, which stops
    # the Flower processes it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    settings = _settings(args)
    out = Path(settings.out_dir)
    echo = print if not args.quiet else None
    runner = run_simulation if args.fl_command == "sim" else run_deployment
    run_id, status = runner(settings, out, timeout=args.timeout, echo=echo)
    metrics = out / "metrics.jsonl"
    rows = read_rows(metrics) if metrics.exists() else []
    png = plot_metrics(metrics, out / "metrics.png") if rows else None
    report = {"run_id": run_id, "status": status, "metrics": str(metrics), "plot": str(png) if png else None,
              "global_adapter": str(out / "global.gguf") if (out / "global.gguf").exists() else None,
              "rounds": [r for r in rows if r.get("summary")]}
    print(json.dumps(report, indent=1) if args.json else
          f"run {run_id}: {status}; metrics {metrics}, plot {png}, global adapter {report['global_adapter']}")
    return 0 if status.endswith("completed") and rows else 1


def register(sub: Subparsers) -> None:
    p = sub.add_parser("fl", help="federated LoRA on Flower: simulation or a loopback deployment (fl extra)")
    fsub = p.add_subparsers(dest="fl_command", required=True)
    for name, help_text in (("sim", "Flower's simulation runtime: one virtual SuperNode per client"),
                            ("up", "a real deployment on 127.0.0.1: flower-superlink, one flower-supernode per "
                                   "client, flwr run")):
        q = fsub.add_parser(name, help=help_text)
        q.add_argument("--clients", type=int, default=3, help="clients u1..uN cycling rpi4, rpi5, x86-avx2 (3)")
        q.add_argument("--clients-list", help="explicit user:profile[:max_train],... (overrides --clients)")
        q.add_argument("--rounds", type=int, default=3, help="federated rounds (3)")
        q.add_argument("--data", required=True, help="section 9 data folder (train.jsonl, test.jsonl)")
        q.add_argument("--base", default="smollm2-135m", help="base GGUF (path or model name)")
        q.add_argument("--out", required=True, help="folder for metrics.jsonl, metrics.png, global.gguf, logs")
        q.add_argument("--steps", type=int, default=20, help="local training steps per round (20)")
        q.add_argument("--lr", type=float, default=2e-3, help="local learning rate (2e-3)")
        q.add_argument("--method", default="svd", choices=("svd", "zeropad", "median", "trimmed_mean"),
                       help="aggregation (svd: FlexLoRA)")
        q.add_argument("--global-rank", type=int, default=16, help="rank of the global adapter (16)")
        q.add_argument("--clip", type=float, default=0.0, help="bound on each client's ‖ΔW_i − ΔW_g‖_F (0: off)")
        q.add_argument("--dp-noise", type=float, default=0.0, help="Gaussian noise multiplier (needs --clip)")
        q.add_argument("--round-timeout", type=float, default=900.0, help="s; a round goes on without late nodes")
        q.add_argument("--timeout", type=float, default=3600.0, help="s for the whole run")
        q.add_argument("--threads", type=int, default=2, help="torch threads per client (2)")
        q.add_argument("--max-len", type=int, default=512, help="tokens per record (512)")
        q.add_argument("--batch-tokens", type=int, default=1024, help="padded tokens per step (1024)")
        q.add_argument("--personal-store", help="AdapterStore folder: after the last round each device stores the "
                       "global adapter it started from (app fl-global) and its personal residual (fl-personal-USER)")
        q.add_argument("--no-eval", action="store_true", help="skip the held-out top-1 before/after each round")
        q.add_argument("--quiet", action="store_true", help="do not echo Flower's log stream")
        q.add_argument("--json", action="store_true", help="machine-readable report")
        q.set_defaults(func=_cmd)
