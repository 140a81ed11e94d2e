"""`floe info`: what this CPU offers and which kernel variant runs."""

from __future__ import annotations

import argparse
import json
import os

from .. import __version__, kernels
from ._types import Subparsers


def _print_table(info: dict[str, object]) -> None:
    width = max(len(k) for k in info)
    for key, value in info.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        print(f"{key:<{width}}  {shown}")


def _cmd_info(args: argparse.Namespace) -> int:
    features = kernels.cpu_features()
    info = {
        "version": __version__,
        "arch": features.pop("arch"),
        "cpu_features": sorted(name for name, on in features.items() if on),
        "variants": kernels.variants(),
        "active_variant": kernels.active_variant(),
        "force_ref": os.environ.get("FLOE_FORCE_REF", "") not in ("", "0"),
        "threads": os.cpu_count() or 1,
    }
    print(json.dumps(info, indent=2)) if args.json else _print_table(info)
    return 0


def register(sub: Subparsers) -> None:
    info = sub.add_parser("info", help="CPU features, kernel variants available and chosen, threads")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_cmd_info)
