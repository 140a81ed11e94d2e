#!/usr/bin/env python3
"""Where LiteRT's int8 loses argmax agreement: each part of the model quantized alone, against float.

    python bench/litert_int8.py                  # SmolLM2-135M (all 30 blocks)
    python bench/litert_int8.py --layers 2       # the CI test's 2-block model

The model is written in f32 (the GGUF's Q4_1 weights dequantized: exact) and exported once to a float .tflite with
the residual stream rotated (as `floe export litert --quant int8` does); ai-edge-quantizer then quantizes that file
with one recipe per row: dynamic-range int8 (int8 per-channel weights, activations quantized per row at run time)
or int8 weights with float activations, over the whole model or one part of it (selected by the op names
litert-torch gives them). Each .tflite is compared with NativeSLM on the same f32 weights (float activations):
teacher-forced argmax agreement and the mean |logit difference| over --positions tokens of Python stdlib source.
For scale, two rows without LiteRT: NativeSLM on the original Q4_1 GGUF (int8 activations) against the same f32
reference, and the f32 .tflite itself.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load, machine, write_section  # noqa: E402

# bench/ off the path again: its kernels.py would stand in for the `kernels` package transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

# (row, dynamic or weight-only, op-name regex); names as litert-torch's generative layers call the ops
PARTS = [
    ("every weight", "dynamic", ".*"),
    ("every weight", "weights", ".*"),
    ("attention projections only", "dynamic", "CausalSelfAttention"),
    ("feed-forward only", "dynamic", "GatedFeedForward_ff"),
    ("feed-forward down projection only", "dynamic", "Linear_w2"),
    ("embedding table only", "dynamic", "Embedding_tok_embedding"),
]


def stdlib_ids(tokenize: Callable[[str], list[int]], n: int) -> list[int]:
    import json.decoder
    import textwrap

    text = Path(json.decoder.__file__).read_text() + Path(textwrap.__file__).read_text()
    return tokenize(text)[:n]


def logits_of(lt: Any, ids: list[int]) -> np.ndarray:
    """LiteRT logits for every position, fed in uneven chunks (both prefill signatures, padding, decode)."""
    out, i = [], 0
    while i < len(ids):
        for size in (1, 5, 32, 40, 1, 3):
            if i < len(ids):
                out.append(lt.eval(ids[i:i + size]))
                i += size
    return np.concatenate(out)


def compare(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    return float((got.argmax(1) == want.argmax(1)).mean()), float(np.abs(got - want).mean())


def quantize(f32: Path, out: Path, mode: str, regex: str) -> None:
    """`f32` quantized by one ai-edge-quantizer rule, with a sidecar LiteRTSLM accepts."""
    from ai_edge_quantizer import quantizer, qtyping

    from floe_edge.litert.sidecar import Sidecar, file_sha256

    q = quantizer.Quantizer(str(f32))
    add = q.add_dynamic_config if mode == "dynamic" else q.add_weight_only_config
    add(regex, qtyping.TFLOperationName.ALL_SUPPORTED, 8)
    out.write_bytes(q.quantize().quantized_model)
    card = Sidecar.read(f32)
    replace(card, quant=f"int8 {mode} ({regex})", tflite_sha256=file_sha256(out),
            tflite_bytes=out.stat().st_size).write(out)


def measure(args: argparse.Namespace, work: Path) -> tuple[list[tuple[str, str, float, float, float]], int]:
    from floe_edge import models
    from floe_edge.litert import LiteRTSLM, export_litert
    from floe_edge.make_slm import make_slm
    from floe_edge.slm import NativeSLM

    base = models.pull("smollm2-135m")
    gguf = make_slm(base, args.layers, work / "f32.gguf", f32=True)
    n_ctx = args.positions + 8
    with NativeSLM(gguf, n_ctx=n_ctx) as native:
        ids = stdlib_ids(native.tokenize, args.positions)
        want = native.eval(ids)
    q41 = base if args.layers is None else make_slm(base, args.layers, work / "q4_1.gguf")
    with NativeSLM(q41, n_ctx=n_ctx) as native:
        rows = [("NativeSLM on the Q4_1 GGUF (what the device runs)", "int8 (q8_1 blocks)",
                 *compare(native.eval(ids), want), 0.0)]
    print(rows[-1], flush=True)
    f32 = work / "f32.tflite"
    export_litert(gguf, f32, quant="none", rotate=True, n_ctx=n_ctx, prefill=(8, 32))
    with LiteRTSLM(f32) as lt:
        rows.append(("LiteRT f32 (rotated, not quantized)", "float", *compare(logits_of(lt, ids), want),
                     f32.stat().st_size / 1e6))
    print(rows[-1], flush=True)
    for i, (part, mode, regex) in enumerate(PARTS):
        out = work / f"part{i}.tflite"
        quantize(f32, out, mode, regex)
        with LiteRTSLM(out) as lt:
            rows.append((f"LiteRT int8: {part}", "int8 (per row)" if mode == "dynamic" else "float",
                         *compare(logits_of(lt, ids), want), out.stat().st_size / 1e6))
        out.unlink()
        print(rows[-1], flush=True)
    return rows, len(ids)


def section(args: argparse.Namespace, rows: list[tuple[str, str, float, float, float]], n: int, seconds: float,
            load_before: str) -> str:
    model = "SmolLM2-135M" if args.layers is None else f"SmolLM2-135M's first {args.layers} blocks"
    lines = [
        f"## LiteRT int8: where the agreement goes, {model} (bench/litert_int8.py)",
        "",
        f"`python bench/litert_int8.py{'' if args.layers is None else f' --layers {args.layers}'}` — "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {machine()}, load {load_before} before, {load()} after, "
        f"{seconds / 60:.0f} min. {model}, its Q4_1 weights dequantized to f32; reference: NativeSLM on those f32 "
        f"weights (float activations); {n} positions of Python stdlib source, teacher forced. Each LiteRT row "
        "quantizes one part of the rotated f32 export with ai-edge-quantizer (per-channel int8 weights; dynamic: "
        "activations quantized per row at run time, as `--quant int8` exports; float: weight-only).",
        "",
        "| model | activations | argmax agreement | mean abs logit diff | MB |",
        "|---|---|---:|---:|---:|",
    ]
    for name, acts, agree, diff, mb in rows:
        lines.append(f"| {name} | {acts} | {agree:.1%} | {diff:.3f} | {f'{mb:.0f}' if mb else '-'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, help="the first N blocks only (default: all)")
    p.add_argument("--positions", type=int, default=320, help="teacher-forced positions (default 320)")
    p.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = p.parse_args()
    load_before, started = load(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="floe-litert-int8-") as tmp:
        rows, n = measure(args, Path(tmp))
    text = section(args, rows, n, time.perf_counter() - started, load_before)
    print(text)
    if not args.no_write:
        write_section("litert-int8" if args.layers is None else f"litert-int8-L{args.layers}", text)


if __name__ == "__main__":
    main()
