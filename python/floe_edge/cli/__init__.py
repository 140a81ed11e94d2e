"""The `floe` command line: every argparse definition lives in this package; the library never imports it.

One module per command group (info, models + make-slm, generate, cloud, demo, netem, profile, data, adapters,
train, fl, eval, export); each has `register(sub)`, which adds its parser(s) and sets `func`, the command to run with
the parsed arguments.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .. import __version__
from . import adapters, cloud, data, demo, eval, export, fl, generate, info, models, netem, profile, train

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="floe", description="floe-edge: hybrid LLM-SLM generation on the device")
    parser.add_argument("--version", action="version", version=f"floe-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in (info.register, models.register, generate.register, cloud.register, demo.register,  # the order
                     netem.register, models.register_make_slm, profile.register, data.register,  # of `floe --help`
                     adapters.register, train.register, fl.register, eval.register, export.register):
        register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # clear one-line errors, no traceback
        print(f"floe: error: {e}", file=sys.stderr)
        return 2
