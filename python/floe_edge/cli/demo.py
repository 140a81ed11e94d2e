"""`floe demo`: edge-only vs cloud-only vs floe on one machine (the runner is `floe_edge.demo.run_demo`)."""

from __future__ import annotations

import argparse
import json
import sys

from ._types import Subparsers
from .profile import add_profile_option, apply_profile, unset


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import PROMPTS, run_demo
    from ..netem import PROFILES, Profile

    try:
        from rich.console import Console
    except ImportError:
        print("floe demo needs rich: pip install 'floe-edge[demo]'", file=sys.stderr)
        return 2
    apply_profile(args)
    if args.profile:
        profile = PROFILES[args.profile]
    else:
        profile = Profile(rtt_ms=args.rtt, jitter_ms=args.jitter, loss=args.loss)
    rows = run_demo(Console(stderr=args.json), edge_model=args.edge_model, cloud_model=args.cloud_model,
                    profile=profile, edge_variant=args.variant, deadline_ms=args.deadline_ms, pace=args.pace,
                    fusion=args.fusion, n=args.n, prompts=args.prompt or PROMPTS)
    if args.json:  # the display went to stderr
        print(json.dumps([row.as_json() for row in rows]))
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("demo", help="edge + local cloud over an emulated network: edge-only vs cloud-only vs floe")
    p.add_argument("--edge-model", default="smollm2-135m")
    p.add_argument("--cloud-model", default="gemma3-270m", help="gemma3-270m (another vocabulary) or smollm2-135m")
    p.add_argument("--rtt", type=float, default=30.0, help="network round-trip time in ms (default 30)")
    p.add_argument("--jitter", type=float, default=0.0, help="jitter in ms")
    p.add_argument("--loss", type=float, default=0.0, help="segment loss probability (TCP: retransmission delay)")
    p.add_argument("--profile", help="a named netem profile instead of --rtt/--jitter/--loss (lan, wifi, lte, ...)")
    p.add_argument("--deadline-ms", type=float, default=unset(200.0), help="per-token deadline")
    p.add_argument("--pace", type=float, default=None,
                   help="floe waits for the cloud only while it stays within PACE x the edge's own time per token")
    p.add_argument("--fusion", default=unset("assistant"), help="fusion preset: assistant, code, commands, adaptive")
    p.add_argument("-n", type=int, default=32, help="tokens per prompt")
    p.add_argument("--prompt", action="append", help="a prompt of your own (repeatable)")
    p.add_argument("--json", action="store_true", help="results as JSON on stdout (display on stderr)")
    # --profile here is the network (netem) profile, as before: the hardware profile is --hw-profile
    add_profile_option(p, "--hw-profile", applies="the edge's kernel variant, --deadline-ms and --fusion",
                       note=" (not its threads: the demo pins the edge to one core)")
    p.set_defaults(func=_cmd_demo, variant=None)
