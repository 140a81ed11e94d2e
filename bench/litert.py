#!/usr/bin/env python3
"""The LiteRT backend vs NativeSLM vs llama.cpp on the same edge model (SmolLM2-135M Q4_1), same run.

    python bench/litert.py                       # exports SmolLM2-135M (int8 and int8-weights, --ctx 1024) once
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

# bench/ off the path again: its kernels.py would stand in for the `kernels` package transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

PROMPT = list(range(1000, 1000 + 128))  # fixed ids: tokenization is not what is measured
QUANTS = ("int8", "int8-weights")
ENGINES = (*(f"litert-{q}" for q in QUANTS), "native", "llama")
TASKS = ("decode", "prefill64")


def open_engine(engine: str, path: str, threads: int) -> Any:
    if engine.startswith("litert"):
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


def tflite_of(args: argparse.Namespace, engine: str) -> Path:
    return args.dir / f"smollm2-135m-{engine.removeprefix('litert-')}.tflite"


def agreement(gguf: Path, tflite: Path, n: int = 256) -> float:
    import json.decoder

    from floe_edge import NativeSLM
    from floe_edge.litert import LiteRTSLM

    with NativeSLM(gguf, n_ctx=1024) as native, LiteRTSLM(tflite, verify=False) as lt:
        ids = native.tokenize(Path(json.decoder.__file__).read_text())[:n]
        return float((native.eval(ids).argmax(1) == lt.eval(ids).argmax(1)).mean())


def measure(args: argparse.Namespace, gguf: Path) -> dict[tuple[str, str, int], dict[str, float]]:
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    for threads in (1, 2):
        for task in TASKS:
            for _ in range(args.reps):
                for engine in ENGINES:
                    python = args.llama_python if engine == "llama" else sys.executable
                    model = tflite_of(args, engine) if engine.startswith("litert") else gguf
                    r = run_child(python, engine, model, threads, task)
                    results.setdefault((engine, task, threads), []).append(r)
                    print(f"{engine:19s} {task:9s} t={threads} {r['value']:8.1f}", file=sys.stderr, flush=True)
    return {k: {"value": statistics.median(r["value"] for r in v), "rss_mb": max(r["rss_mb"] for r in v)}
            for k, v in results.items()}


def section(args: argparse.Namespace, gguf: Path, res: dict[tuple[str, str, int], dict[str, float]],
            agree: dict[str, float], load_before: str) -> str:
    cards = {q: json.loads(Path(str(tflite_of(args, f"litert-{q}")) + ".json").read_text()) for q in QUANTS}
    rows = []
    for threads in (1, 2):
        for task in TASKS:
            v = {e: res[(e, task, threads)]["value"] for e in ENGINES}
            lt = " | ".join(f"{v[f'litert-{q}']:.1f}" for q in QUANTS)
            ratio = " | ".join(f"{v[f'litert-{q}'] / v['native']:.2f}" for q in QUANTS)
            rows.append(f"| {task} | {threads} | {lt} | {v['native']:.1f} | {v['llama']:.1f} | {ratio} |")
    rss = {e: max(res[(e, t, n)]["rss_mb"] for t in TASKS for n in (1, 2)) for e in ENGINES}
    head_lt = " | ".join(f"LiteRT {q}" for q in QUANTS)
    head_ratio = " | ".join(f"{q} / native" for q in QUANTS)
    files = ", ".join(f".tflite {q} {c['tflite_bytes'] / 1e6:.1f} MB (export {c['export']['seconds']:.0f} s, peak RSS "
                      f"{c['export']['peak_rss_mb']:.0f} MB)" for q, c in cards.items())
    return "\n".join([
        "## LiteRT backend vs NativeSLM vs llama.cpp (bench/litert.py)", "",
        f"{machine()}; {datetime.now(timezone.utc):%Y-%m-%d}; load before {load_before}, after {load()}. "
        "SmolLM2-135M-Instruct: GGUF Q4_1 for NativeSLM and llama.cpp, `floe export litert` for LiteRT (XNNPACK, "
        "no delegate); tok/s, median of the runs, each in a fresh process pinned with taskset. A load above 1 means "
        "other processes shared these cores (the 2-thread rows most): the figures then understate every engine, the "
        "ratios of one row hold best.", "",
        f"| task | threads | {head_lt} | NativeSLM | llama.cpp | {head_ratio} |",
        "|---|---|" + "---|" * (2 * len(QUANTS) + 2), *rows, "",
        f"Files: GGUF {gguf.stat().st_size / 1e6:.1f} MB, {files}. Peak RSS while measuring: "
        + ", ".join(f"{e} {rss[e]:.0f} MB" for e in ENGINES) + ". Teacher-forced argmax agreement with NativeSLM, "
        "256 positions of stdlib text: " + ", ".join(f"{q} {100 * a:.1f}%" for q, a in agree.items()) + ".", ""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", choices=ENGINES)
    p.add_argument("--model", help="(child) the model file")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--task", choices=TASKS)
    p.add_argument("--dir", type=Path, default=Path("build/bench"), help="where the exported models are kept")
    p.add_argument("--export-only", action="store_true", help="export the models, measure nothing")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--llama-python", default=sys.executable)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.threads, args.task)))
        return
    from floe_edge import models
    from floe_edge.litert.cache import current

    gguf = models.pull("smollm2-135m")
    for q in QUANTS:  # each export in a process of its own: its peak RSS is its own
        if not current(tflite_of(args, f"litert-{q}")):  # missing, or made by an older recipe
            subprocess.run([sys.executable, "-m", "floe_edge.cli", "export", "litert", "--model", str(gguf), "--out",
                            str(tflite_of(args, f"litert-{q}")), "--quant", q, "--ctx", "1024", "--prefill", "8",
                            "--prefill", "64"], check=True)
    if args.export_only:
        return
    load_before = load()
    agree = {q: agreement(gguf, tflite_of(args, f"litert-{q}")) for q in QUANTS}
    text = section(args, gguf, measure(args, gguf), agree, load_before)
    print(text)
    if not args.no_write:
        write_section("litert", text)


if __name__ == "__main__":
    main()
