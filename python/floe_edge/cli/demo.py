"""`floe demo`: a user with private context asks questions that need both sides; edge-only vs cloud-only vs floe
(the runner is `floe_edge.demo.run_demo`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from ..demo.run import DEMO_PACE
from ..litert.runtime import DELEGATES
from ..netem import PROFILES, Profile
from ..profiles import BACKENDS
from ._types import Subparsers
from .generate import add_budget_option, enforce_memory_budget
from .profile import add_profile_option, apply_profile, given, unset
from .progress import resolve_model


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import EDGE_CTX, DemoOptions, prepare, run_demo

    try:
        from rich.console import Console
    except ImportError:
        print("floe demo needs rich: pip install 'floe-edge[demo]'", file=sys.stderr)
        return 2
    _check_not_a_network_profile(args.hw_profile)
    delegate_fallback = not given(args, "delegate")  # a profile's NPU: only where present
    apply_profile(args)
    enforce_memory_budget(args, resolve_model(args.edge_model), n_ctx=EDGE_CTX, threads=1,
                          override="use a smaller --edge-model")
    net = PROFILES[args.net] if args.net else Profile(rtt_ms=args.rtt, jitter_ms=args.jitter, loss=args.loss)
    opts = DemoOptions(edge_model=args.edge_model, cloud_model=args.cloud_model, net=net, edge_variant=args.variant,
                       deadline_ms=args.deadline_ms, pace=args.pace, fusion=args.fusion, questions=args.questions,
                       prompts=tuple(args.prompt or ()), n=args.n, adapter=not args.no_adapter,
                       train_profile=args.train_profile, backend=args.backend, delegate=args.delegate,
                       delegate_fallback=delegate_fallback)
    console = Console(stderr=args.json)
    if args.prepare:
        prepare(opts, say=lambda text: console.print(text, markup=False))
        return 0
    result = run_demo(opts, console)
    if args.json:  # the display went to stderr
        print(json.dumps(result.as_json()))
    return 0


def _check_not_a_network_profile(name: Optional[str]) -> None:
    """`--profile lte` meant the network before `--net` existed: say so instead of "unknown profile 'lte'"."""
    from ..profiles import list_profiles

    if name in PROFILES and name not in list_profiles():
        raise ValueError(f"--profile is the hardware profile ({', '.join(list_profiles())}); {name!r} is a network "
                         f"profile: use --net {name}")


def _pace(text: str) -> Optional[float]:
    if text.lower() == "none":
        return None
    value = float(text)
    if not value >= 1.0:
        raise argparse.ArgumentTypeError("the pace is a factor >= 1 of the edge's own time, or none")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(sub: Subparsers) -> None:
    from ..demo.user import TRAIN_PROFILE

    p = sub.add_parser("demo", help="a user with private context asks questions that need both sides: edge-only vs "
                                    "cloud-only vs floe, exact match, latency, bytes, and what went up",
                       description="The paper's scenario on one machine: the demo's user (generated personal data "
                                   "in $FLOE_HOME/demo) asks held-out questions whose answers need their private "
                                   "context and the cloud's world knowledge. The edge runs with the user's LoRA "
                                   "adapter (trained once, then cached in the adapter store) and floe fuses with "
                                   "the user's learned gate. Every byte sent upstream is checked for private "
                                   "context.")
    p.add_argument("--edge-model", default="smollm2-135m")
    p.add_argument("--cloud-model", default="gemma3-270m", help="gemma3-270m (another vocabulary) or smollm2-135m")
    p.add_argument("--questions", type=_positive, default=2, metavar="N",
                   help="held-out questions per task, the first N by index (default 2: one novel, one known)")
    p.add_argument("--prompt", action="append", metavar="TEXT",
                   help="a question of your own to the same user, asked as 'User: TEXT / Assistant:' with all their "
                        "private context (repeatable; no expected answer)")
    p.add_argument("-n", type=_positive, default=32, help="tokens per --prompt answer (questions: the expected "
                                                          "answer's length + 8, or up to a newline)")
    p.add_argument("--no-adapter", action="store_true",
                   help="without the user's adapter (and gate): exact match then collapses")
    p.add_argument("--train-profile", default=TRAIN_PROFILE, metavar="NAME",
                   help=f"hardware profile whose LoRA rank the adapter is trained at (default {TRAIN_PROFILE}: "
                        f"minutes on two cores)")
    p.add_argument("--prepare", action="store_true",
                   help="only build what the demo caches (data, adapter, gate), as `tools/setup.sh demo` does")
    p.add_argument("--rtt", type=float, default=30.0, help="network round-trip time in ms (default 30)")
    p.add_argument("--jitter", type=float, default=0.0, help="jitter in ms")
    p.add_argument("--loss", type=float, default=0.0, help="segment loss probability (TCP: retransmission delay)")
    p.add_argument("--net", choices=list(PROFILES), metavar="NAME",
                   help=f"a named network profile instead of --rtt/--jitter/--loss: {', '.join(PROFILES)}")
    p.add_argument("--deadline-ms", type=float, default=unset(200.0), help="per-token deadline")
    p.add_argument("--pace", type=_pace, default=unset(DEMO_PACE), metavar="PACE|none",
                   help=f"floe waits for the cloud only while the whole answer stays within PACE x the edge's own "
                        f"time (default {DEMO_PACE:g}; none: each token waits up to its deadline)")
    p.add_argument("--fusion", default=unset("gate"),
                   help="floe's fusion: gate (the user's learned gate, default), assistant, code, commands, adaptive")
    p.add_argument("--backend", choices=BACKENDS, default=unset("native"),
                   help="the edge's backend: native (default) or litert (the edge exported once to an int8 .tflite "
                        "with the user's adapter merged; needs floe-edge[export])")
    p.add_argument("--delegate", choices=("none", *DELEGATES), default=unset("none"),
                   help="with --backend litert: a GPU or NPU delegate (default none: XNNPACK on the CPU)")
    p.add_argument("--json", action="store_true", help="results as JSON on stdout (display on stderr)")
    add_profile_option(p, "--profile", "--hw-profile", applies="the edge's kernel variant, --deadline-ms and --fusion",
                       note=" (not its threads: the demo pins the edge to one core); the edge model must fit its "
                            "memory_mb")
    add_budget_option(p)
    p.set_defaults(func=_cmd_demo, variant=None)
