#!/usr/bin/env python3
"""The LiteRT backend vs NativeSLM vs llama.cpp on the same edge model (SmolLM2-135M Q4_1), same run.

    python bench/litert.py                       # exports SmolLM2-135M (int8, --ctx 1024) once, then measures
    python bench/litert.py --llama-python /path/to/python --no-write

Every measurement runs in a fresh child process pinned with taskset (core 0; cores 0-1 for 2 threads), the three
engines alternating, each repeated --reps times (median). All are driven the same way: one eval call per token,
greedy argmax of the last logits in numpy.
  decode     64 tokens after a 64-token prompt   -> tok/s
  prefill64  64 prompt tokens in one eval call    -> tok/s
Also: file sizes, the export's time and peak memory (from its sidecar), and the teacher-forced argmax agreement of
LiteRT with NativeSLM over 256 positions of real text (NativeSLM runs Q4_1 with int8 activations, LiteRT the
dequantized weights re-quantized to int8 per channel: neither is the reference of the other).
`--llama-python`: the interpreter whose environment has llama-cpp-python (default this one).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load, machine, write_section  # noqa: E402

PROMPT = list(range(1000, 1000 + 128))  # fixed ids: tokenization is not what is measured
ENGINES = ("litert", "native", "llama")
TASKS = ("decode", "prefill64")


def open_engine(engine: str, path: str, threads: int) -> Any:
    if engine == "litert":
        from floe_edge.litert import LiteRTSLM

        return LiteRTSLM(path, threads=threads, verify=False)
    if engine == "native":
        from floe_edge import NativeSLM

        return NativeSLM(path, threads=threads, n_ctx=1024)
    import llama_cpp

    class Llama:
        def __init__(self) -> None:
            self.ll = llama_cpp.Llama(model_path=path, n_ctx=1024, n_batch=512, n_threads=threads,
                                      n_threads_batch=threads, logits_all=True, verbose=False)

        def eval(self, ids: list[int], logits: str = "last") -> np.ndarray:
            self.ll.eval(ids)
            return self.ll.scores[self.ll.n_tokens - 1]

        def reset(self) -> None:
            self.ll.reset()

    return Llama()


def child(engine: str, path: str, threads: int, task: str) -> dict[str, float]:
    e = open_engine(engine, path, threads)
    e.eval(PROMPT[:8], logits="last")  # warm up: page in the weights, start the threads
    e.reset()
    if task == "decode":
        tok = int(np.argmax(e.eval(PROMPT[:64], logits="last")))
        t0 = time.perf_counter()
        for _ in range(64):
            tok = int(np.argmax(e.eval([tok], logits="last")))
        value = 64 / (time.perf_counter() - t0)
    else:
        t0 = time.perf_counter()
        e.eval(PROMPT[:64], logits="last")
        value = 64 / (time.perf_counter() - t0)
    rss = int(next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM")).split()[1])
    return {"value": value, "rss_mb": rss / 1024}


def run_child(python: str, engine: str, path: Path, threads: int, task: str) -> dict[str, float]:
    cores = ",".join(str(c) for c in range(threads))
    cmd = ["taskset", "-c", cores, python, __file__, "--child", engine, "--model", str(path), "--threads",
           str(threads), "--task", task]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        sys.exit(f"child failed: {shlex.join(cmd)}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def agreement(gguf: Path, tflite: Path, n: int = 256) -> float:
    import json.decoder

    from floe_edge import NativeSLM
    from floe_edge.litert import LiteRTSLM

    with NativeSLM(gguf, n_ctx=1024) as native, LiteRTSLM(tflite, verify=False) as lt:
        ids = native.tokenize(Path(json.decoder.__file__).read_text())[:n]
        return float((native.eval(ids).argmax(1) == lt.eval(ids).argmax(1)).mean())


def measure(args: argparse.Namespace, gguf: Path, tflite: Path) -> dict[tuple[str, str, int], dict[str, float]]:
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    for threads in (1, 2):
        for task in TASKS:
            for _ in range(args.reps):
                for engine in ENGINES:
                    python = args.llama_python if engine == "llama" else sys.executable
                    r = run_child(python, engine, tflite if engine == "litert" else gguf, threads, task)
                    results.setdefault((engine, task, threads), []).append(r)
                    print(f"{engine:7s} {task:9s} t={threads} {r['value']:8.1f}", file=sys.stderr, flush=True)
    return {k: {"value": statistics.median(r["value"] for r in v), "rss_mb": max(r["rss_mb"] for r in v)}
            for k, v in results.items()}


def section(gguf: Path, tflite: Path, res: dict[tuple[str, str, int], dict[str, float]], agree: float,
            load_before: str) -> str:
    card = json.loads(Path(str(tflite) + ".json").read_text())
    rows = []
    for threads in (1, 2):
        for task in TASKS:
            v = {e: res[(e, task, threads)]["value"] for e in ENGINES}
            rows.append(f"| {task} | {threads} | {v['litert']:.1f} | {v['native']:.1f} | {v['llama']:.1f} | "
                        f"{v['litert'] / v['native']:.2f} | {v['litert'] / v['llama']:.2f} |")
    rss = {e: max(res[(e, t, n)]["rss_mb"] for t in TASKS for n in (1, 2)) for e in ENGINES}
    return "\n".join([
        "## LiteRT backend vs NativeSLM vs llama.cpp (bench/litert.py)", "",
        f"{machine()}; {datetime.now(timezone.utc):%Y-%m-%d}; load before {load_before}, after {load()}. "
        f"SmolLM2-135M-Instruct: GGUF Q4_1 for NativeSLM and llama.cpp, `floe export litert` {card['quant']} "
        f"(XNNPACK, no delegate) for LiteRT; tok/s, median of the runs, each in a fresh process pinned with taskset.",
        "", "| task | threads | LiteRT | NativeSLM | llama.cpp | LiteRT / native | LiteRT / llama.cpp |",
        "|---|---|---|---|---|---|---|", *rows, "",
        f"Files: GGUF {gguf.stat().st_size / 1e6:.1f} MB, .tflite {card['tflite_bytes'] / 1e6:.1f} MB. Peak RSS: "
        f"LiteRT {rss['litert']:.0f} MB, NativeSLM {rss['native']:.0f} MB, llama.cpp {rss['llama']:.0f} MB. Export: "
        f"{card['export']['seconds']:.0f} s, peak RSS {card['export']['peak_rss_mb']:.0f} MB (on a loaded machine: "
        f"see load). Teacher-forced argmax agreement LiteRT vs NativeSLM, 256 positions of stdlib text: "
        f"{100 * agree:.1f}%.", ""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", choices=ENGINES)
    p.add_argument("--model", help="(child) the model file")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--task", choices=TASKS)
    p.add_argument("--tflite", type=Path, default=Path("build/bench/smollm2-135m-int8.tflite"))
    p.add_argument("--quant", default="int8")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--llama-python", default=sys.executable)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.threads, args.task)))
        return
    from floe_edge import models
    from floe_edge.litert import export_litert

    gguf = models.pull("smollm2-135m")
    if not args.tflite.exists():
        export_litert(gguf, args.tflite, quant=args.quant, n_ctx=1024, prefill=(8, 64),
                      progress=lambda s: print(f".. {s}", file=sys.stderr, flush=True))
    load_before = load()
    agree = agreement(gguf, args.tflite)
    text = section(gguf, args.tflite, measure(args, gguf, args.tflite), agree, load_before)
    print(text)
    if not args.no_write:
        write_section("litert", text)


if __name__ == "__main__":
    main()
