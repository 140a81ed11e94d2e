"""`floe export litert`: the edge GGUF (LoRA adapters merged) as a LiteRT .tflite, with a progress display."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator

from ._types import Subparsers
from .progress import resolve_model


def parse_adapter(text: str) -> tuple[str, float]:
    """PATH or PATH:SCALE (scale 1 by default)."""
    path, _, scale = text.rpartition(":")
    if path:
        try:
            return path, float(scale)
        except ValueError:
            pass
    return text, 1.0


@contextmanager
def _phases() -> Iterator[Callable[[str], None]]:
    """A phase callback: a rich status line with the elapsed time on a terminal, plain lines otherwise."""
    started = time.perf_counter()
    if sys.stderr.isatty():
        try:
            from rich.console import Console
        except ImportError:
            pass
        else:
            with Console(stderr=True).status("starting") as status:
                yield lambda phase: status.update(f"{phase} [dim]({time.perf_counter() - started:.0f} s so far)")
            return
    yield lambda phase: print(f"[{time.perf_counter() - started:5.0f} s] {phase}", file=sys.stderr, flush=True)


def _cmd_export_litert(args: argparse.Namespace) -> int:
    from ..litert import export_litert

    model = Path(resolve_model(args.model))
    adapters = [parse_adapter(a) for a in args.adapter or []]
    with _phases() as phase:
        card = export_litert(model, args.out, adapters=adapters, quant=args.quant, n_ctx=args.ctx,
                             prefill=args.prefill or [32], progress=phase)
    if args.json:
        print(json.dumps({"out": str(args.out), "bytes": card.tflite_bytes, "sha256": card.tflite_sha256,
                          **card.export}))
    else:
        print(f"{args.out}: {card.tflite_bytes / 1e6:.1f} MB, {card.quant}, n_ctx {card.n_ctx}, "
              f"{card.export['seconds']} s, peak {card.export['peak_rss_mb']} MB; sidecar {args.out}.json")
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("export", help="export the edge model for another runtime (LiteRT)")
    targets = p.add_subparsers(dest="export_target", required=True)
    lt = targets.add_parser("litert", help="a GGUF (+ LoRA adapters, merged) as a LiteRT .tflite with prefill and "
                                           "decode signatures and an external KV cache (needs floe-edge[export])")
    lt.add_argument("--model", default="smollm2-135m", help="model name or GGUF path (default smollm2-135m)")
    lt.add_argument("--adapter", action="append", metavar="PATH[:SCALE]",
                    help="a LoRA adapter (llama.cpp GGUF) to merge, at SCALE (default 1); repeatable")
    lt.add_argument("--out", type=Path, required=True, help="the .tflite to write (and OUT.json, its sidecar)")
    lt.add_argument("--quant", choices=("int8", "int8-weights", "fp16", "none"), default="int8",
                    help="int8: dynamic range, int8 weights and activations, the residual stream rotated first "
                         "(default); int8-weights: int8 weights, float activations (closer to the GGUF, far more "
                         "memory at run time); fp16; none (f32)")
    lt.add_argument("--ctx", type=int, default=1024, help="context size (tokens) of the KV cache (default 1024)")
    lt.add_argument("--prefill", type=int, action="append", metavar="N",
                    help="a prefill signature's length (repeatable; default 32): batched evals go in chunks of it")
    lt.add_argument("--json", action="store_true", help="the result as JSON")
    lt.set_defaults(func=_cmd_export_litert)
