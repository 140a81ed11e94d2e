"""`floe netem`: run the userspace network emulator (`floe_edge.netem`) in front of a loopback server."""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace

from ..netem import OUTAGE_MODES, PROFILES, NetemProxy, NetemStats, Profile, get_profile
from ._types import Subparsers


def _hostport(text: str) -> tuple[str, int]:
    """'127.0.0.1:8080', '[::1]:8080', 'localhost:8080' or '8080' (on 127.0.0.1)."""
    host, _, port = text.rpartition(":")
    try:
        return (host.strip("[]") or "127.0.0.1"), int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}") from None


def _window(text: str) -> tuple[float, float]:
    start, _, end = text.partition(":")
    try:
        return float(start), float(end)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END seconds, got {text!r}") from None


# Profile fields set by flags of the same name; a flag left unset keeps the named profile's value.
_OVERRIDES = ("rtt_ms", "jitter_ms", "jitter_dist", "bandwidth_kbps", "drip_bytes", "drip_interval_ms", "loss",
              "reset_after_bytes", "outage_mode", "seed")  # fmt: skip


def profile_from_args(args: argparse.Namespace) -> Profile:
    """The profile `floe netem` flags describe: --profile (or no faults), then each flag given."""
    overrides: dict[str, object] = {name: getattr(args, name) for name in _OVERRIDES if getattr(args, name) is not None}
    if args.blackhole:
        overrides["blackhole"] = True
    if args.drop:
        overrides["drop"] = True
    if args.outage:
        overrides["outages"] = tuple(args.outage)
    base = get_profile(args.profile) if args.profile else Profile()
    return replace(base, **overrides)  # type: ignore[arg-type]


def _cmd_netem(args: argparse.Namespace) -> int:
    try:
        proxy = NetemProxy(args.upstream, profile_from_args(args), listen=args.listen)
        proxy.start()
    except (ValueError, OSError) as e:
        print(f"floe {e}", file=sys.stderr)  # "floe netem: ..."
        return 1
    with proxy:
        host, port = proxy.address
        print(f"netem: {host}:{port} -> {proxy.upstream[0]}:{proxy.upstream[1]}, profile {args.profile or '-'}: "
              f"{proxy.profile.describe()}", flush=True)  # fmt: skip
        deadline = time.monotonic() + args.duration if args.duration else math.inf
        last = NetemStats()
        try:
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(args.stats_interval, left))
                if proxy.stats != last:
                    last = proxy.stats
                    print(f"netem: {last}", flush=True)
        except KeyboardInterrupt:
            pass
    print(f"netem: stopped; {proxy.stats}", flush=True)
    return 0


def register(subparsers: Subparsers) -> None:
    """Add `floe netem` to a parser's subcommands."""
    p = subparsers.add_parser("netem", help="a TCP proxy on loopback adding latency, jitter, loss, outages")
    p.add_argument("--listen", type=_hostport, default=("127.0.0.1", 0), help="HOST:PORT to listen on (loopback)")
    p.add_argument("--upstream", type=_hostport, required=True, help="HOST:PORT to forward to (loopback)")
    p.add_argument("--profile", choices=list(PROFILES), help="a named link to start from (default: no faults)")
    p.add_argument("--rtt-ms", type=float, help="round-trip latency added, half per direction")
    p.add_argument("--jitter-ms", type=float, help="round-trip spread (never reorders bytes)")
    p.add_argument("--jitter-dist", choices=("uniform", "normal"))
    p.add_argument("--loss", type=float, help="segment loss probability (costs a retransmission timeout)")
    p.add_argument("--bandwidth-kbps", type=float, help="per-direction cap, kilobits/s")
    p.add_argument("--drip-bytes", type=int, help="forward in pieces of at most this many bytes")
    p.add_argument("--drip-interval-ms", type=float, help="pause between drip pieces")
    p.add_argument("--reset-after-bytes", type=int, help="RST each client after this many bytes downstream")
    p.add_argument("--blackhole", action="store_true", help="accept, read, never answer")
    p.add_argument("--drop", action="store_true", help="accept then close at once")
    p.add_argument("--outage", type=_window, action="append", metavar="START:END", help="outage window, s from start")
    p.add_argument("--outage-mode", choices=OUTAGE_MODES)
    p.add_argument("--seed", type=int, help="seed of the jitter/loss RNG")
    p.add_argument("--stats-interval", type=float, default=5.0, help="seconds between stats lines")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: until Ctrl-C)")
    p.set_defaults(func=_cmd_netem)
