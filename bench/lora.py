#!/usr/bin/env python3
"""LoRA on the edge model: decode with an r-rank adapter (f32, and the same values in f16, llama.cpp's
convert_lora_to_gguf default) on all seven projections vs without, ours and llama.cpp (llama-cpp-python,
`lora_path`) on the same GGUF and the same adapter files, in one run; adapter load and swap time.

    python bench/lora.py                 # SmolLM2-135M, r = 8, 1 thread, 5 repetitions
    python bench/lora.py --rank 16 --reps 3 --no-write

Every decode measurement runs in a fresh child process pinned to core 0 with taskset (128 tokens after a 64-token
prompt, one eval call per token, greedy in numpy, as bench/decode.py), the six engines interleaved per repetition;
medians. The adapter is random (A ~ N(0, 1/n_in), B ~ N(0, 0.02)), written by floe_edge.adapters.LoraAdapter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load, machine, write_section  # noqa: E402

DTYPES = ("f32", "f16")
ENGINES = ("ours", "ours+f32", "ours+f16", "llama.cpp", "llama.cpp+f32", "llama.cpp+f16")
PROMPT = list(range(1000, 1064))
PROJECTIONS = {"attn_q": ("dim", "dim"), "attn_k": ("dim", "kv"), "attn_v": ("dim", "kv"),
               "attn_output": ("dim", "dim"), "ffn_gate": ("dim", "ffn"), "ffn_up": ("dim", "ffn"),
               "ffn_down": ("ffn", "dim")}


def write_random_adapter(model: Path, rank: int, out: Path, dtype: str = "f32") -> int:
    """A random adapter on every projection of every layer (seeded: the f16 file holds the f32 file's values
    rounded); returns the number of A/B pairs."""
    from floe_edge import NativeSLM
    from floe_edge.adapters import LoraAdapter

    with NativeSLM(model) as slm:
        c = slm.config
    size = {"dim": int(c["dim"]), "kv": int(c["n_kv_heads"]) * int(c["head_dim"]), "ffn": int(c["ffn_dim"])}
    rng = np.random.default_rng(0)
    np_dtype = {"f32": np.float32, "f16": np.float16}[dtype]
    pairs = {}
    for layer in range(int(c["n_layers"])):
        for proj, (i, o) in PROJECTIONS.items():
            n_in, n_out = size[i], size[o]
            pairs[f"blk.{layer}.{proj}.weight"] = (rng.normal(0, 1 / np.sqrt(n_in), (rank, n_in)).astype(np_dtype),
                                                   rng.normal(0, 0.02, (n_out, rank)).astype(np_dtype))
    LoraAdapter("llama", float(rank), pairs).write(out)
    return len(pairs)


def child(engine: str, model: str, adapter: str) -> dict[str, float]:
    out: dict[str, float] = {}
    if engine.startswith("ours"):
        from floe_edge import NativeSLM

        slm = NativeSLM(model, threads=1, n_ctx=1024)
        if "+" in engine:
            t0 = time.perf_counter()
            a, b = slm.load_adapter(adapter), slm.load_adapter(adapter)
            out["load_ms"] = (time.perf_counter() - t0) / 2 * 1e3
            swaps = []
            for _ in range(200):  # between two loaded adapters, the prefix kept (no recompute)
                t0 = time.perf_counter()
                slm.set_adapters([(a if len(swaps) % 2 else b, 1.0)], keep_cache=True)
                swaps.append(time.perf_counter() - t0)
            out["swap_us"] = statistics.median(swaps) * 1e6
            slm.set_adapters([(a, 1.0)])
        step = lambda ids: slm.eval(ids, logits="last")  # noqa: E731
    else:
        import llama_cpp

        kw = {"lora_path": adapter} if "+" in engine else {}
        ll = llama_cpp.Llama(model_path=model, n_ctx=1024, n_threads=1, n_threads_batch=1, verbose=False, **kw)

        def step(ids: list[int]) -> np.ndarray:
            ll.eval(ids)
            return np.asarray(ll.scores[ll.n_tokens - 1])
    tok = int(np.argmax(step(PROMPT)))
    t0 = time.perf_counter()
    for _ in range(128):
        tok = int(np.argmax(step([tok])))
    out["tok_s"] = 128 / (time.perf_counter() - t0)
    return out


def run_child(engine: str, model: Path, adapters: dict[str, Path]) -> dict[str, float]:
    adapter = adapters[engine.split("+")[1]] if "+" in engine else adapters["f32"]
    cmd = ["taskset", "-c", "0", sys.executable, __file__, "--child", engine, "--model", str(model),
           "--adapter", str(adapter)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        sys.exit(f"child failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="GGUF (default: floe models pull smollm2-135m)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--adapter", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.model, args.adapter)))
        return 0
    from floe_edge import kernels, models

    model = Path(args.model) if args.model else models.pull("smollm2-135m")
    with tempfile.TemporaryDirectory() as tmp:
        adapters = {d: Path(tmp) / f"lora-r{args.rank}-{d}.gguf" for d in DTYPES}
        n_pairs = {d: write_random_adapter(model, args.rank, adapters[d], d) for d in DTYPES}[DTYPES[0]]
        adapter_mb = {d: adapters[d].stat().st_size / 1e6 for d in DTYPES}
        runs: dict[str, list[dict[str, float]]] = {e: [] for e in ENGINES}
        for rep in range(args.reps):
            for e in ENGINES:
                runs[e].append(run_child(e, model, adapters))
                print(f"rep {rep + 1} {e}: {runs[e][-1]}", flush=True)
    med = {e: statistics.median(r["tok_s"] for r in runs[e]) for e in ENGINES}
    # time added: the median over repetitions of each repetition's own ratio (its runs are back to back), which a
    # load change between repetitions does not skew as a ratio of medians can
    cost = {(eng, d): statistics.median(b["tok_s"] / a["tok_s"] - 1 for b, a in zip(runs[eng], runs[f"{eng}+{d}"]))
            for eng in ("ours", "llama.cpp") for d in DTYPES}
    load_ms = {d: statistics.median(r["load_ms"] for r in runs[f"ours+{d}"]) for d in DTYPES}
    swap_us = statistics.median(r["swap_us"] for d in DTYPES for r in runs[f"ours+{d}"])
    model_mb = model.stat().st_size / 1e6
    cmd = "python bench/lora.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"## LoRA on the edge model (r = {args.rank} on all seven projections, decode, 1 thread)", "",
        f"`{cmd.strip()}` — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {machine()}, load {load()}, kernels "
        f"`{kernels.active_variant()}`; {model.name}; median of {args.reps} runs per engine, interleaved, each a "
        "fresh process on core 0. The same adapter files (written by floe_edge.adapters; the f16 file holds the f32 "
        "file's values rounded) for both engines.", "",
        "| | ours tok/s | llama.cpp tok/s | ours vs llama.cpp |", "|---|---:|---:|---:|",
        f"| base | {med['ours']:.1f} | {med['llama.cpp']:.1f} | {med['ours'] / med['llama.cpp']:.2f}x |",
    ]
    for d in DTYPES:
        lines.append(f"| + {d} adapter ({adapter_mb[d]:.1f} MB) | {med[f'ours+{d}']:.1f} | "
                     f"{med[f'llama.cpp+{d}']:.1f} | {med[f'ours+{d}'] / med[f'llama.cpp+{d}']:.2f}x |")
    for d in DTYPES:
        lines.append(f"| decode time added, {d} adapter (median per repetition) | {100 * cost['ours', d]:+.1f}% | "
                     f"{100 * cost['llama.cpp', d]:+.1f}% | |")
    lines += [
        "",
        f"Bytes read per token: the adapter's {adapter_mb['f32']:.1f} MB (f32) or {adapter_mb['f16']:.1f} MB (f16) "
        f"on top of the model's {model_mb:.0f} MB file. Adapter load ({n_pairs} A/B pairs, B repacked): "
        f"{load_ms['f32']:.1f} ms f32, {load_ms['f16']:.1f} ms f16; swap between two loaded adapters (keep_cache, "
        f"no prefix recompute): {swap_us:.1f} µs.",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section("lora", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
