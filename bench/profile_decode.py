#!/usr/bin/env python3
"""Where the time of a decode step goes: perf samples of NativeSLM decoding SmolLM2-135M, grouped by what the code
does, each group beside its bound.

    apt-get install linux-perf                    # perf; it samples the cpu-clock, so no hardware counters needed
    pip install -e . -C cmake.define.FLOE_KEEP_SYMBOLS=ON -C install.strip=false   # kernel names in the samples
    python bench/profile_decode.py                # 1 and 2 threads, writes the "Decode profile" section
    python bench/profile_decode.py --threads 1 --tokens 100 --no-write           # a quick look

The child loads the model, evaluates a 32-token prompt, then decodes --tokens tokens greedily; perf records only
that loop (its --control fifo, which the child enables), at 4 kHz on every thread. Each sampled function goes into
one group (matvecs by weight format, attention, the small ops, thread hand-off, Python); a group's share of the
samples times the CPU time per token gives its CPU ms per token. The matvec groups and attention have a bound: the
bytes they read (weights; the KV cache) over the read bandwidth of the same cores (bench/kernels.py measures it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load, machine, simd_flags, write_section  # noqa: E402

PROMPT = list(range(1000, 1032))

# (group, pattern on the demangled symbol); the first match wins
GROUPS = [
    ("matvec q4_1 (layer weights)", r"Q4_1|FmtQ4_1|gemm_q4_1"),
    ("matvec q4_0 (layer weights)", r"Q4_0|FmtQ4_0|gemm_q4_0"),
    ("matvec q8_0 (output layer, tied embeddings)", r"Q8_0|FmtQ8_0|gemm_q8_0"),
    ("activation quantization (q8_0 / q8_1)", r"quantize_q8_[01]|quantize_row_q8"),
    ("attention: f16 gemms (q.K, p.V)", r"gemm_dense|gemm_f16|dot_f16_f32|gemm_f<"),
    ("attention: scale, softmax, f16 rounding", r"Decoder::attention|softmax|fp32_to_fp16|fp16_to_fp32|round_to_f16"),
    ("KV cache writes", r"quantize_f16"),
    ("norms, RoPE, SwiGLU, residuals, embedding row", r"rmsnorm|rope|swiglu|Decoder::forward|dequantize"),
    ("LoRA", r"lora"),
    ("thread pool: hand-off and waiting", r"ThreadPool|cpu_relax|futex|pthread_cond|__sched_yield|std::condition"),
    ("Python, numpy, bindings", r"^_?Py|libpython|numpy|pybind11|^PyArray|_PyEval|argmax|ufunc"),
]


def group_of(symbol: str, dso: str) -> str:
    for name, pattern in GROUPS:
        if re.search(pattern, symbol):
            return name
    if "libpython" in dso or "numpy" in dso or "_multiarray" in dso:
        return "Python, numpy, bindings"
    if dso.startswith("[kernel"):
        return "operating system (page faults, scheduling)"
    return "other"


# ---- child: decode under perf's control fifo --------------------------------------------------------------------


def child(model: str, threads: int, tokens: int) -> None:
    import numpy as np

    from floe_edge import NativeSLM

    m = NativeSLM(model, threads=threads, n_ctx=1024)
    logits = m.eval(PROMPT, logits="last")
    for _ in range(8):  # warm: pages of the weights, the pool's threads
        logits = m.eval([int(np.argmax(logits))], logits="last")
    ctl, ack = os.environ.get("FLOE_PERF_CTL"), os.environ.get("FLOE_PERF_ACK")

    def perf(cmd: str) -> None:
        if ctl and ack:
            with open(ctl, "w") as c:
                c.write(cmd + "\n")
            with open(ack) as a:
                a.readline()

    perf("enable")
    t0 = time.perf_counter()
    for _ in range(tokens):
        logits = m.eval([int(np.argmax(logits))], logits="last")
    seconds = time.perf_counter() - t0
    perf("disable")
    print(json.dumps({"tok_s": tokens / seconds, "context": len(PROMPT) + 8 + tokens}))


# ---- parent ----------------------------------------------------------------------------------------------------


def profile(model: Path, threads: int, tokens: int, tmp: Path) -> tuple[dict[str, float], float, int]:
    """Samples per group, tokens/s, total samples."""
    ctl, ack, data = tmp / f"ctl{threads}", tmp / f"ack{threads}", tmp / f"perf{threads}.data"
    for fifo in (ctl, ack):
        if not fifo.exists():
            os.mkfifo(fifo)
    cpus = ",".join(str(c) for c in range(threads))
    cmd = ["taskset", "-c", cpus, "perf", "record", "-q", "-e", "cpu-clock", "-F", "4000", "-D", "-1",
           "--control", f"fifo:{ctl},{ack}", "-o", str(data), "--", sys.executable, __file__, "--child",
           "--model", str(model), "--threads", str(threads), "--tokens", str(tokens)]
    env = dict(os.environ, FLOE_PERF_CTL=str(ctl), FLOE_PERF_ACK=str(ack))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        sys.exit(f"profiled child failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,sym",
                             "--percent-limit", "0", "-F", "sample,dso,sym"],
                            capture_output=True, text=True, check=True).stdout
    samples: dict[str, float] = defaultdict(float)
    total = 0
    for line in report.splitlines():
        m = re.match(r"^\s*(\d+)\s+(\S+)\s+\[[.k]\]\s+(.*)$", line)
        if not m:
            continue
        n, dso, sym = int(m.group(1)), m.group(2), m.group(3).strip()
        samples[group_of(sym, dso)] += n
        total += n
    if total == 0:
        sys.exit("perf recorded no samples: is perf_event_paranoid too high? (sysctl kernel.perf_event_paranoid=1)")
    return samples, float(result["tok_s"]), total


def bytes_per_token(model: Path, tokens: int) -> dict[str, int]:
    """What a decode step reads, by what reads it: each weight format's tensors once, and attention the f16 K and V
    of every layer over the run's mean context."""
    from floe_edge import NativeSLM
    from floe_edge._native import GGUFFile

    names = {2: "q4_0", 3: "q4_1", 8: "q8_0"}
    out: dict[str, int] = defaultdict(int)
    for t in GGUFFile(str(model)).tensors:
        out[names.get(int(t["type"]), "other")] += int(t["nbytes"])
    with NativeSLM(model, n_ctx=64) as m:
        c = m.config
    mean_context = len(PROMPT) + 8 + tokens / 2
    kv_dim = int(c["n_kv_heads"]) * int(c["head_dim"])  # type: ignore[call-overload]
    out["kv"] = int(int(c["n_layers"]) * 2 * mean_context * kv_dim * 2)  # type: ignore[call-overload]
    return out


def symbols_present() -> bool:
    import floe_edge._native as native

    nm = subprocess.run(["nm", "-C", native.__file__], capture_output=True, text=True)
    return "gemm_quant" in nm.stdout or "gemm_q<" in nm.stdout


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GGUF (default: SmolLM2-135M-Instruct Q4_1 from floe_edge.models)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.model, args.threads[0], args.tokens)
        return 0
    if shutil.which("perf") is None:
        sys.exit("perf not found: apt-get install linux-perf")
    if not symbols_present():
        sys.exit("the installed floe_edge._native has no symbol table, so kernels cannot be named: reinstall with\n"
                 "  pip install -e . -C cmake.define.FLOE_KEEP_SYMBOLS=ON -C install.strip=false")

    from floe_edge import kernels, models

    model = Path(args.model) if args.model else models.pull("smollm2-135m")
    fmt_bytes = bytes_per_token(model, args.tokens)
    bound_format = {"matvec q4_1": "q4_1", "matvec q4_0": "q4_0", "matvec q8_0": "q8_0",
                    "attention: f16 gemms": "kv"}
    start_load = load()
    from decode import read_gbs  # bench/decode.py: the read bandwidth of the same cores

    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            gbs = read_gbs(threads)
            samples, tok_s, total = profile(model, threads, args.tokens, Path(tmp))
            cpu_ms = 1000.0 / tok_s * threads  # CPU time per token, all threads
            rows = []
            for name, n in sorted(samples.items(), key=lambda kv: -kv[1]):
                ms = cpu_ms * n / total
                fmt = next((f for prefix, f in bound_format.items() if name.startswith(prefix)), None)
                bound = fmt_bytes.get(fmt, 0) / (gbs * 1e9) * 1e3 * threads if fmt and gbs else None
                rows.append((name, 100.0 * n / total, ms, bound))
            tables.append((threads, tok_s, cpu_ms, gbs, total, rows))
            print(f"\n{threads} thread(s): {tok_s:.1f} tok/s, {cpu_ms:.2f} CPU ms per token, {total} samples")
            for name, share, ms, bound in rows:
                b = f"  (bound {bound:.2f} ms)" if bound else ""
                print(f"  {share:5.1f}%  {ms:6.3f} ms  {name}{b}")

    if args.no_write:
        return 0
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python bench/profile_decode.py" + (" " + " ".join(argv) if argv else "")
    lines = [
        "## Decode profile: where a SmolLM2-135M token's time goes (NativeSLM)", "",
        f"`{cmd}` — {when}, {machine()} (flags: {simd_flags()}), load {start_load}, "
        f"kernels `{kernels.active_variant()}`, "
        f"{args.tokens} greedy tokens after a {len(PROMPT)}-token prompt (context {len(PROMPT) + 8}.."
        f"{len(PROMPT) + 8 + args.tokens}), perf cpu-clock samples at 4 kHz of the decode loop only.", "",
        "CPU ms per token: a group's share of the samples times the CPU time per token (all threads; with 2 threads "
        "it includes the time a thread waits for the other). Bound: the bytes the group reads per token at the read "
        "bandwidth of the same cores (bench/ggml_ref.c), times the threads: its weights for a matvec, for attention "
        "the f16 K and V of every layer over the run's mean context.", "",
    ]
    for threads, tok_s, cpu_ms, gbs, total, rows in tables:
        bw = f", read bandwidth {gbs:.1f} GB/s" if gbs else ""
        lines += [f"**{threads} thread(s)**: {tok_s:.1f} tok/s, {cpu_ms:.2f} CPU ms per token{bw}, {total} samples", "",
                  "| group | share | CPU ms / token | bound ms / token |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {share:.1f}% | {ms:.3f} | {f'{bound:.3f}' if bound else ''} |"
                  for name, share, ms, bound in rows]
        lines.append("")
    write_section("profile", "\n".join(lines))
    print("wrote BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
