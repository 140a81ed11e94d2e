#!/usr/bin/env python3
"""Quantized matvec benchmark: floe-edge kernels vs ggml's own CPU kernels, in the same process.

    pip install -e '.[bench]'          # floe-edge + llama-cpp-python (bundles libggml-cpu.so) + rich
    python bench/kernels.py            # full run, writes the "Kernels" section of BENCHMARKS.md
    python bench/kernels.py --quick --no-write          # CI smoke: few reps, checks ours == ggml

For every shape x type x thread count it times y = W @ x *including* the quantization of x (q8_0, or q8_1 for
q4_1), as ggml does. Both sides are timed the same way: one Python call per matvec (floe_edge.kernels.matvec
through pybind11; ggml through ctypes into bench/ggml_ref.c, which calls ggml_vec_dot_* per row over a thread pool
like ours), perf_counter around each call, median over many calls, the two interleaved in rounds so host noise
hits both alike. By default each call reads a different copy of W, cycling through >= --footprint MiB, so the
weights come from DRAM as in a real decode step (--hot keeps one cache-resident copy). The script pins itself
(core 0 for 1 thread, cores 0..n-1 for n threads) and measures the read bandwidth of the same cores.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.metadata
import importlib.util
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from floe_edge import kernels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_MD, load, machine, simd_flags, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- kernels:begin -->", "<!-- kernels:end -->"
# rows x cols: one matrix bigger than any cache, then SmolLM2-135M's down, gate/up and tied-embedding (lm head).
DEFAULT_SHAPES = ["8192x8192", "576x1536", "1536x576", "49152x576"]
GGML_TYPES = {"q4_0": 0, "q4_1": 1, "q8_0": 2}  # enum order in ggml_ref.c
VERIFY_RTOL = 1e-4  # max |ours - ggml| / max |ggml|: same quantization, only the summation order differs


@dataclass
class Result:
    shape: tuple[int, int]
    qtype: str
    threads: int
    weight_bytes: int
    ours_s: float
    ggml_s: float
    read_gbs: float
    rel_err: float
    reps: int
    repack_s: Optional[float] = None  # ggml's mul_mat on CPU_REPACK weights (None: not measured)
    repacked: bool = False            # whether ggml rewrote the weights (it has repacked kernels for few types)

    @property
    def ours_gbs(self) -> float:
        return self.weight_bytes / self.ours_s / 1e9

    @property
    def ggml_gbs(self) -> float:
        return self.weight_bytes / self.ggml_s / 1e9


# ---- ggml reference -------------------------------------------------------------------------------------------


def ggml_lib_dir() -> Path:
    """llama_cpp/lib of the installed llama-cpp-python, located without importing llama_cpp."""
    spec = importlib.util.find_spec("llama_cpp")
    lib = Path(next(iter(spec.submodule_search_locations or []), "")) / "lib" if spec else None
    if lib is None or not (lib / "libggml-cpu.so").exists():
        sys.exit(
            "bench/kernels.py needs ggml's CPU library from llama-cpp-python (llama_cpp/lib/libggml-cpu.so), "
            "not found.\nInstall it with:  pip install llama-cpp-python   (or: pip install -e '.[bench]')"
        )
    return lib


def build_ggml_ref(lib_dir: Path) -> ctypes.CDLL:
    """Compile bench/ggml_ref.c and bench/ggml_repack.c against llama-cpp-python's ggml libraries (and headers)
    into bench/build/ and load them."""
    here = Path(__file__).parent
    out = here / "build" / "ggml_ref.so"
    out.parent.mkdir(exist_ok=True)
    # the wheel installs ggml's headers beside the package (site-packages/include)
    include = next((d for d in (lib_dir.parent / "include", lib_dir.parent.parent / "include")
                    if (d / "ggml-backend.h").exists()), None)
    repack = [str(here / "ggml_repack.c"), f"-I{include}", "-lggml"] if include else []
    if not include:
        print("note: no ggml headers beside llama-cpp-python: ggml's CPU_REPACK mul_mat is not measured",
              file=sys.stderr)
    cmd = [os.environ.get("CC", "cc"), "-O3", "-march=native", "-shared", "-fPIC", "-o", str(out),
           str(here / "ggml_ref.c"), *repack, f"-L{lib_dir}", "-lggml-cpu", "-lggml-base", f"-Wl,-rpath,{lib_dir}",
           "-lpthread"]
    subprocess.run(cmd, check=True)
    lib = ctypes.CDLL(str(out))
    i64, vp, c_int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.ggml_matvec.argtypes = [c_int, i64, i64, vp, vp, vp, c_int]
    lib.has_repack = bool(include)
    if include:
        lib.repack_open.restype = vp
        lib.repack_open.argtypes = [c_int, i64, i64, vp, ctypes.c_size_t, c_int, c_int, c_int]
        lib.repack_close.argtypes = [vp]
        lib.repack_is_repacked.argtypes = lib.repack_graphs.argtypes = [vp]
        lib.repack_run.argtypes = [vp, c_int, vp, i64, vp]
    lib.read_bandwidth.argtypes = [ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_double)]
    if not lib.ggml_ref_init():
        print("warning: this libggml-cpu.so has no AVX2 kernels (ggml_cpu_has_avx2() == 0)", file=sys.stderr)
    return lib


def ggml_version(lib_dir: Path) -> str:
    try:
        wheel = f"llama-cpp-python {importlib.metadata.version('llama_cpp_python')}"
    except importlib.metadata.PackageNotFoundError:
        wheel = "llama-cpp-python (version unknown)"
    so = sorted(p.name for p in lib_dir.glob("libggml-cpu.so.*.*"))  # the wheel keeps copies, not symlinks
    return f"{wheel} (ggml {so[-1].removeprefix('libggml-cpu.so.') if so else 'version unknown'})"


# ---- measurements ---------------------------------------------------------------------------------------------


def pin(allowed: list[int], threads: int) -> list[int]:
    """Pin this thread (and the pool threads it starts later) to the first `threads` of the allowed cores."""
    cores = allowed[:threads]
    if len(cores) < threads:
        sys.exit(f"--threads {threads}: only {len(allowed)} cores available ({allowed})")
    os.sched_setaffinity(0, cores)
    return cores


def read_bandwidth(lib: ctypes.CDLL, threads: int, mib: int, reps: int) -> float:
    """GB/s summing a fresh mib-MiB buffer with `threads` threads (median of reps)."""
    secs = (ctypes.c_double * reps)()
    if lib.read_bandwidth(mib << 20, threads, reps, secs) != 0:
        sys.exit("read_bandwidth failed (allocation or checksum)")
    return (mib << 20) / statistics.median(secs) / 1e9


def timed_calls(call: Callable[[int], object], first: int, n: int) -> list[float]:
    out = []
    for i in range(first, first + n):
        t0 = time.perf_counter()
        call(i)
        out.append(time.perf_counter() - t0)
    return out


def bench_one(lib: ctypes.CDLL, w_q: np.ndarray, qtype: str, rows: int, cols: int, x: np.ndarray, threads: int,
              args: argparse.Namespace, read_gbs: float) -> Result:
    nbytes = w_q.size
    copies = 1 if args.hot else max(1, math.ceil((args.footprint << 20) / nbytes / REPACK_PER_GRAPH)) * REPACK_PER_GRAPH
    pool = np.empty((copies, nbytes), dtype=np.uint8)
    pool[:] = w_q  # distinct physical copies of the same bytes (pages touched here, not during timing)
    views = list(pool)
    base, y = pool.ctypes.data, np.empty(rows, dtype=np.float32)
    gtype, xp, yp = GGML_TYPES[qtype], x.ctypes.data, y.ctypes.data

    def ours(i: int) -> object:
        return kernels.matvec(views[i % copies], qtype, rows, cols, x, variant=args.variant, threads=threads)

    def ggml(i: int) -> object:
        return lib.ggml_matvec(gtype, rows, cols, base + (i % copies) * nbytes, xp, yp, threads)

    # Same result on both sides, or the comparison means nothing.
    if ggml(0) != 0:
        sys.exit(f"ggml_matvec failed for {qtype} {rows}x{cols}")
    ref = y.copy()
    rel_err = float(np.max(np.abs(ours(0) - ref)) / max(float(np.max(np.abs(ref))), 1e-30))
    if not rel_err <= VERIFY_RTOL:
        sys.exit(f"{qtype} {rows}x{cols}: ours differs from ggml (max rel err {rel_err:.2e} > {VERIFY_RTOL:g})")
    sides = [("ours", ours), ("ggml", ggml)]
    per_call = {"ours": 1, "ggml": 1}
    repack = None if args.no_repack or not lib.has_repack else open_repack(lib, gtype, rows, cols, pool, threads)
    if repack is not None:
        n_graphs, per_call["repack"] = lib.repack_graphs(repack), copies // lib.repack_graphs(repack)

        def repacked(i: int) -> object:
            return lib.repack_run(repack, i % n_graphs, xp, cols, yp)

        if not repacked(0):
            sys.exit(f"ggml CPU_REPACK graph failed for {qtype} {rows}x{cols}")
        err = float(np.max(np.abs(y - ref)) / max(float(np.max(np.abs(ref))), 1e-30))
        if not err <= VERIFY_RTOL:
            sys.exit(f"{qtype} {rows}x{cols}: ggml CPU_REPACK differs from ggml (max rel err {err:.2e})")
        sides.append(("repack", repacked))

    # Calibrate: enough calls for ~budget seconds per side, split into rounds alternating which side goes first.
    est = statistics.median(timed_calls(ours, 0, 5) + timed_calls(ggml, 0, 5))
    reps = int(min(args.max_reps, max(args.min_reps, args.budget / est)))
    rounds = max(1, min(args.rounds, reps // 5))
    per_round = math.ceil(reps / rounds)
    times: dict[str, list[float]] = {name: [] for name, _ in sides}
    k = 0
    for r in range(rounds):
        for name, call in sides if r % 2 == 0 else sides[::-1]:
            time.sleep(0.005)  # let the other side's pool stop spinning (~1.5 ms of pauses on Zen 1) and sleep
            timed_calls(call, k, 2)  # then wake ours up: the first calls after a sleep pay the futex wake-up
            n = max(1, per_round // per_call[name])  # a repack call is per_call matvecs
            times[name] += [t / per_call[name] for t in timed_calls(call, k + 2, n)]
            k += per_round + 2
    result = Result((rows, cols), qtype, threads, nbytes, statistics.median(times["ours"]),
                    statistics.median(times["ggml"]), read_gbs, rel_err, len(times["ours"]))
    if repack is not None:
        result.repack_s, result.repacked = statistics.median(times["repack"]), bool(lib.repack_is_repacked(repack))
        lib.repack_close(repack)
    return result


REPACK_PER_GRAPH = 8  # matvecs per ggml graph: a graph's fixed cost spread as over a decode step's matrices


def open_repack(lib: ctypes.CDLL, gtype: int, rows: int, cols: int, pool: np.ndarray, threads: int) -> Optional[int]:
    """ggml's own copies of the weights in its CPU_REPACK buffer (None, with a note, where this ggml has none)."""
    copies = pool.shape[0]
    per_graph = REPACK_PER_GRAPH if copies % REPACK_PER_GRAPH == 0 else 1
    handle = lib.repack_open(gtype, rows, cols, pool.ctypes.data, pool.shape[1], copies, per_graph, threads)
    if not handle:
        print("note: this ggml has no CPU_REPACK buffer type: its repacked kernels are not measured", file=sys.stderr)
    return handle


# ---- report ---------------------------------------------------------------------------------------------------


COLUMNS = ["shape", "type", "thr", "ours µs", "ours GB/s", "% read BW", "ggml µs", "ggml GB/s",
           "speedup vs ggml", "ours t1/t2", "ggml t1/t2", "ggml mul_mat µs", "speedup vs mul_mat"]


def table_rows(results: list[Result]) -> list[list[str]]:
    by_key = {(r.shape, r.qtype, r.threads): r for r in results}
    out = []
    for r in results:
        one = by_key.get((r.shape, r.qtype, 1))
        scale = lambda a, b: f"{a / b:.2f}x" if one and r.threads > 1 else ""  # noqa: E731
        out.append([f"{r.shape[0]}x{r.shape[1]}", r.qtype, str(r.threads), f"{r.ours_s * 1e6:.1f}",
                    f"{r.ours_gbs:.2f}", f"{100 * r.ours_gbs / r.read_gbs:.0f}%", f"{r.ggml_s * 1e6:.1f}",
                    f"{r.ggml_gbs:.2f}", f"{r.ggml_s / r.ours_s:.2f}x",
                    scale(one.ours_s, r.ours_s) if one else "", scale(one.ggml_s, r.ggml_s) if one else "",
                    *repack_cells(r)])
    return out


def repack_cells(r: Result) -> list[str]:
    if r.repack_s is None:
        return ["", ""]
    mark = " (repacked)" if r.repacked else ""
    return [f"{r.repack_s * 1e6:.1f}{mark}", f"{r.repack_s / r.ours_s:.2f}x"]


def print_table(results: list[Result], title: str) -> None:
    rows = table_rows(results)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title, *(" | ".join(row) for row in [COLUMNS, *rows]), sep="\n")
        return
    table = Table(title=title)
    for i, c in enumerate(COLUMNS):
        table.add_column(c, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 150).print(table)


def markdown(results: list[Result], args: argparse.Namespace, bw: dict[int, float], ggml: str, cmd: str,
             loads: str) -> str:
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    reps = sorted({r.reps for r in results})
    bw_text = ", ".join(f"{t} thread{'s' * (t > 1)} {g:.2f} GB/s" for t, g in sorted(bw.items()))
    err = max(r.rel_err for r in results)
    lines = [
        BEGIN,
        "## Kernels: quantized matvec vs ggml",
        "",
        f"- Command: `{cmd}` (pins itself: core 0 for 1 thread, cores 0-1 for 2 threads)",
        f"- Date: {date}",
        f"- Machine: {machine()}; flags: {simd_flags()}; load average (1/5/15 min) {loads}",
        f"- floe-edge variant: `{args.variant or kernels.active_variant()}` "
        f"(available: {', '.join(kernels.variants())})",
        f"- ggml: {ggml}, its `ggml_vec_dot_*` + `quantize_row_q8_*` called from `bench/ggml_ref.c`",
        f"- Read bandwidth (sum of a {args.bw_mib} MiB buffer, median of {args.bw_reps}): {bw_text}",
        f"- Outputs checked: ours vs ggml max relative difference {err:.1e}",
        "",
        "y = W·x including the quantization of x. Times are medians of "
        f"{reps[0]}–{reps[-1]} calls per cell (one Python call per matvec on both sides, pybind11 vs ctypes, "
        "interleaved in rounds). "
        + ("Each call reads W from a single cache-resident copy (`--hot`)." if args.hot else
           f"Each call reads a different copy of W (copies cycling through ≥ {args.footprint} MiB), so weights "
           "stream from DRAM as in a decode step; for the small SmolLM2 shapes the per-call overhead (activation "
           "quantization, thread wake-up, ~1–2 µs of call overhead) is a visible part of the time.")
        + " The ggml columns call its per-row `vec_dot` kernels directly (bench/ggml_ref.c). The mul_mat columns "
        "are ggml's `mul_mat` as llama.cpp runs a decode: a graph of "
        f"{REPACK_PER_GRAPH} matvecs on the CPU backend (bench/ggml_repack.c; time per matvec, the graph's fixed "
        "cost included), the weights in the CPU_REPACK buffer type where ggml has a repacked kernel for them "
        "(\"repacked\": rows rewritten into interleaved groups stored block by block, q4_0 as q4_0x8 on "
        "AVX2/AVX-512, so one gemv streams a single array), else in the plain CPU buffer, where mul_mat takes its "
        "own route to the kernels."
        + " GB/s counts weight bytes only; % read BW is against the read bandwidth of the same number of threads; "
        "speedup = ggml time / our time (> 1: we are faster); t1/t2 = 1-thread time / 2-thread time.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|",
        *("| " + " | ".join(row) + " |" for row in table_rows(results)),
        END,
    ]
    return "\n".join(lines)


# ---- main -----------------------------------------------------------------------------------------------------


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="ROWSxCOLS (default: %(default)s)")
    p.add_argument("--types", nargs="+", default=list(GGML_TYPES), choices=list(GGML_TYPES))
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--variant", help="floe kernel variant (default: the active one)")
    p.add_argument("--quick", action="store_true", help="few repetitions (CI smoke)")
    p.add_argument("--hot", action="store_true", help="one cache-resident copy of W instead of streaming copies")
    p.add_argument("--footprint", type=int, default=256, help="MiB of W copies to cycle through (default 256)")
    p.add_argument("--budget", type=float, default=1.5, help="seconds of timed calls per side and cell")
    p.add_argument("--no-repack", action="store_true", help="leave out ggml's CPU_REPACK mul_mat")
    p.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    a = p.parse_args(argv)
    a.min_reps, a.max_reps, a.rounds, a.bw_mib, a.bw_reps = 50, 20000, 10, 512, 15
    if a.quick:
        a.budget, a.min_reps, a.rounds, a.bw_mib, a.bw_reps, a.footprint = 0.05, 5, 2, 128, 3, min(a.footprint, 64)
    return a


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    lib_dir = ggml_lib_dir()
    lib = build_ggml_ref(lib_dir)
    shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(max(c for _, c in shapes)).astype(np.float32)
    allowed, load_start = sorted(os.sched_getaffinity(0)), load()
    if os.getloadavg()[0] > 0.5:
        print(f"warning: load average {load_start}: other processes share these cores, figures will be noisy",
              file=sys.stderr)
    thread_counts = sorted(set(args.threads))
    bw: dict[int, float] = {}
    for threads in thread_counts:
        cores = pin(allowed, threads)
        bw[threads] = read_bandwidth(lib, threads, args.bw_mib, args.bw_reps)
        print(f"{threads} thread(s) on cores {cores}: read bandwidth {bw[threads]:.2f} GB/s", flush=True)
    results: list[Result] = []
    gc.disable()  # no collector pauses inside timed calls
    for rows, cols in shapes:
        w = rng.standard_normal((rows, cols), dtype=np.float32)
        for qtype in args.types:
            w_q = kernels.quantize(w, qtype)
            for threads in thread_counts:
                pin(allowed, threads)
                res = bench_one(lib, w_q, qtype, rows, cols, x[:cols].copy(), threads, args, bw[threads])
                results.append(res)
                print(f"  {rows}x{cols} {qtype} {threads}t: ours {res.ours_s * 1e6:.1f} µs, "
                      f"ggml {res.ggml_s * 1e6:.1f} µs, speedup {res.ggml_s / res.ours_s:.2f}x, "
                      f"max rel diff {res.rel_err:.1e}"
                      + (f"; ggml mul_mat {res.repack_s * 1e6:.1f} µs" + " (repacked)" * res.repacked
                         if res.repack_s else ""), flush=True)
    lib.ggml_ref_shutdown()
    print_table(results, f"floe-edge `{args.variant or kernels.active_variant()}` vs ggml ({ggml_version(lib_dir)})")
    if not args.no_write:
        cmd = shlex.join(["python", os.path.relpath(__file__, ROOT), *(sys.argv[1:] if argv is None else argv)])
        loads = f"{load_start} at start, {load()} at end"
        write_section("kernels", markdown(results, args, bw, ggml_version(lib_dir), cmd, loads))
        print(f"wrote {BENCH_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
