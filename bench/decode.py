#!/usr/bin/env python3
"""Decode / prefill speed and memory: floe-edge's NativeSLM vs llama.cpp (llama-cpp-python), same GGUF.

    python bench/decode.py                # SmolLM2-135M and an 8-layer make-slm model, threads 1 and 2
    python bench/decode.py --quick --no-write

Every measurement runs in a fresh child process pinned with taskset (core 0; cores 0-1 for 2 threads), ours and
llama.cpp alternating, each repeated --reps times (median), so both see the same machine state; the child reports
its own peak RSS. Both sides are driven through their Python API the same way: one eval call per token, greedy
argmax of the last position's logits in numpy.
  decode     128 tokens after a 64-token prompt          -> tok/s
  prefill    64 and 512 prompt tokens in one call        -> tok/s
  chunk8     8 tokens with logits for all 8 after 64     -> ms (chunk verification in hybrid generation)
Bandwidth bound: bytes of weights read per token / read GB/s measured by bench/ggml_ref.c on the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load, machine, simd_flags, write_section  # noqa: E402

TASKS = ("decode", "prefill64", "prefill512", "chunk8")
PROMPT = list(range(1000, 1000 + 512))  # fixed ids: tokenization is not what is measured here


# ---- child: one engine, one task --------------------------------------------------------------------------------


class Ours:
    def __init__(self, path: str, threads: int) -> None:
        from floe_edge import NativeSLM

        self.m = NativeSLM(path, threads=threads, n_ctx=1024)

    def eval_last(self, ids: list[int]) -> np.ndarray:
        return self.m.eval(ids, logits="last")

    def eval_all(self, ids: list[int]) -> np.ndarray:
        return self.m.eval(ids, logits="all")

    def reset(self) -> None:
        self.m.reset()


class Llama:
    def __init__(self, path: str, threads: int) -> None:
        import llama_cpp

        self.ll = llama_cpp.Llama(model_path=path, n_ctx=1024, n_batch=512, n_threads=threads,
                                  n_threads_batch=threads, logits_all=True, verbose=False)

    def eval_last(self, ids: list[int]) -> np.ndarray:
        self.ll.eval(ids)
        return self.ll.scores[self.ll.n_tokens - 1]

    def eval_all(self, ids: list[int]) -> np.ndarray:
        start = self.ll.n_tokens
        self.ll.eval(ids)
        return self.ll.scores[start:self.ll.n_tokens]

    def reset(self) -> None:
        self.ll.reset()


def child(engine: str, path: str, threads: int, task: str) -> dict[str, float]:
    base_mb = peak_rss_mb()  # the interpreter and numpy, before any model code
    e = Ours(path, threads) if engine == "ours" else Llama(path, threads)
    e.eval_last(PROMPT[:8])  # warm up: page in the weights, start the threads
    e.reset()
    out: dict[str, float] = {}
    if task == "decode":
        tok = int(np.argmax(e.eval_last(PROMPT[:64])))
        t0 = time.perf_counter()
        for _ in range(128):
            tok = int(np.argmax(e.eval_last([tok])))
        out["value"] = 128 / (time.perf_counter() - t0)
    elif task.startswith("prefill"):
        n = int(task.removeprefix("prefill"))
        t0 = time.perf_counter()
        e.eval_last(PROMPT[:n])
        out["value"] = n / (time.perf_counter() - t0)
    elif task == "chunk8":
        e.eval_last(PROMPT[:64])
        t0 = time.perf_counter()
        e.eval_all(PROMPT[64:72])
        out["value"] = (time.perf_counter() - t0) * 1e3
    out["rss_mb"] = peak_rss_mb()
    out["base_mb"] = base_mb
    return out


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it is not inherited from the parent over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- parent -------------------------------------------------------------------------------------------------------


def run_child(engine: str, path: Path, threads: int, task: str) -> dict[str, float]:
    cores = ",".join(str(c) for c in range(threads))
    cmd = ["taskset", "-c", cores, sys.executable, __file__, "--child", engine, "--model", str(path),
           "--threads", str(threads), "--task", task]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        sys.exit(f"child failed: {shlex.join(cmd)}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def weight_bytes_per_token(path: Path) -> int:
    """Bytes of weights one decode step reads: every tensor once (tied embeddings: the lm head reads the whole
    token_embd; the embedding lookup reads one row, ignored)."""
    from floe_edge._native import GGUFFile

    return sum(int(t["nbytes"]) for t in GGUFFile(str(path)).tensors)


def read_gbs(threads: int) -> Optional[float]:
    try:
        import kernels as kbench  # bench/kernels.py: builds bench/ggml_ref.c against llama-cpp-python's ggml

        lib = kbench.build_ggml_ref(kbench.ggml_lib_dir())
        os.sched_setaffinity(0, list(range(threads)))
        gbs = kbench.read_bandwidth(lib, threads, 512, 5)
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
        return gbs
    except Exception as e:  # noqa: BLE001 - report without the bound rather than fail the whole run
        print(f"warning: no read bandwidth ({e})", file=sys.stderr)
        return None


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="GGUF (default: floe models pull smollm2-135m)")
    ap.add_argument("--slm-layers", type=int, default=8, help="also bench a make-slm model of N layers (0: skip)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 rep, decode + prefill64 only")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child", choices=["ours", "llama"], help=argparse.SUPPRESS)
    ap.add_argument("--task", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.model, int(args.threads), args.task)))
        return 0

    from floe_edge import kernels, models

    base = Path(args.model) if args.model else models.pull("smollm2-135m")
    reps, tasks = (1, ["decode", "prefill64"]) if args.quick else (args.reps, args.tasks.split(","))
    threads = [int(t) for t in args.threads.split(",")]
    tmp = tempfile.TemporaryDirectory()
    model_list = [("SmolLM2-135M Q4_1", base)]
    if args.slm_layers:
        from floe_edge.make_slm import make_slm

        model_list.append((f"make-slm {args.slm_layers} layers", make_slm(base, args.slm_layers,
                                                                          Path(tmp.name) / "slm.gguf")))
    bw = {t: read_gbs(t) for t in threads}
    rows = []
    for label, path in model_list:
        size_mb = path.stat().st_size / 2**20
        wbytes = weight_bytes_per_token(path)
        for t in threads:
            for task in tasks:
                samples: dict[str, list[dict[str, float]]] = {"ours": [], "llama": []}
                for _ in range(reps):
                    for engine in ("ours", "llama"):
                        samples[engine].append(run_child(engine, path, t, task))
                med = {e: statistics.median(s["value"] for s in v) for e, v in samples.items()}
                rss = {e: max(s["rss_mb"] - s["base_mb"] for s in v) for e, v in samples.items()}
                # decode/prefill are rates (higher is better), chunk8 a time (lower is better)
                ratio = med["ours"] / med["llama"] if task != "chunk8" else med["llama"] / med["ours"]
                bound = ""
                if task == "decode" and bw[t]:
                    bound = f"{100 * med['ours'] * wbytes / (bw[t] * 1e9):.0f}%"
                rows.append([label, str(t), task, f"{med['ours']:.1f}", f"{med['llama']:.1f}", f"{ratio:.2f}x",
                             bound, f"{rss['ours']:.0f} / {rss['llama']:.0f}", f"{size_mb:.0f}"])
                print(" | ".join(rows[-1]), flush=True)

    cmd = "python bench/decode.py " + " ".join(argv if argv is not None else sys.argv[1:])
    head = ["model", "threads", "task", "ours", "llama.cpp", "ours vs llama.cpp", "% of BW bound (decode)",
            "peak RSS - interpreter, MB: ours / llama.cpp", "file MB"]
    lines = [
        "## Decoder: NativeSLM vs llama.cpp", "",
        f"`{cmd.strip()}` — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {machine()} (flags: {simd_flags()}), "
        f"load {load()}, "
        f"kernels `{kernels.active_variant()}`, median of {reps} runs per cell, each in a fresh process pinned "
        "with taskset.", "",
        "Units: decode and prefill in tokens/s (ratio > 1: we are faster), chunk8 in ms for 8 tokens with all "
        "logits after a 64-token prompt (ratio = llama.cpp ms / ours). Read bandwidth (bench/ggml_ref.c, same "
        "cores): " + ", ".join(f"{t} thread(s) {bw[t]:.1f} GB/s" for t in threads if bw[t]) + ". Memory: peak "
        "resident set (VmHWM) of the child minus its size before loading any model code (Python + numpy, ~27 MB), "
        "with a 1024-token context; it includes the mmapped weights, which become resident as they are read.", "",
        "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
    ] + ["| " + " | ".join(r) + " |" for r in rows]
    if not args.no_write:
        write_section("decode", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
