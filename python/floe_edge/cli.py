"""The `floe` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from . import __version__, kernels


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
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            print(f"{key:<{width}}  {shown}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="floe", description="floe-edge: hybrid LLM-SLM generation on the device")
    parser.add_argument("--version", action="version", version=f"floe-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="CPU features, kernel variants available and chosen, threads")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
