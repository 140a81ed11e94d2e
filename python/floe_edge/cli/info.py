"""`floe info`: what this CPU offers, which kernel variant runs, the board (model, cores, governor, throttling,
temperatures) and the hardware profile chosen for it."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from typing import Mapping, Optional, Union

from .. import __version__, kernels
from ..board import read_board
from ..host import Host
from ..profiles import ProfileError, detect
from ._types import Subparsers


def _print_table(table: Union[Mapping[str, object], list[tuple[str, object]]]) -> None:
    rows = list(table.items()) if isinstance(table, Mapping) else table
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        print(f"{key:<{width}}  {shown}")


def _cmd_info(args: argparse.Namespace) -> int:
    features = kernels.cpu_features()
    info: dict[str, object] = {
        "version": __version__,
        "arch": features.pop("arch"),
        "cpu_features": sorted(name for name, on in features.items() if on),
        "variants": kernels.variants(),
        "active_variant": kernels.active_variant(),
        "force_ref": os.environ.get("FLOE_FORCE_REF", "") not in ("", "0"),
        "threads": os.cpu_count() or 1,
    }
    board = read_board(args.root)
    # the profile for the CPU this runs on, with the board model (and core count) read from the same root
    host = replace(Host.read(args.root), cores=board.cores or (os.cpu_count() or 1))
    try:
        profile, reasons = detect(host)
        name: Optional[str] = profile.name
    except ProfileError as e:  # no shipped profiles found (a broken install): still report the rest
        name, reasons = None, [str(e)]
    if args.json:
        print(json.dumps({**info, "profile": name, "profile_reasons": reasons, "board": board.as_dict()}, indent=2))
        return 0
    _print_table(list(info.items()) + list(board.rows()) + [("profile", f"{name} ({'; '.join(reasons)})")])
    return 0


def register(sub: Subparsers) -> None:
    info = sub.add_parser("info", help="CPU features, kernel variants, the board (model, cores, governor, "
                                       "throttling, temperatures) and the hardware profile chosen")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--root", default="/", metavar="DIR",
                      help="read /proc and /sys under DIR instead of / (a copied tree: tests, an SD card image); "
                           "vcgencmd is only run for /")
    info.set_defaults(func=_cmd_info)
