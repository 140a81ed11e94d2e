#!/usr/bin/env python3
"""Fusion benchmark: floe_edge.fusion (native, SIMD) vs a clean numpy implementation of the same math, same run.

    python bench/fusion.py                 # full run, writes the "fusion" section of BENCHMARKS.md
    python bench/fusion.py --quick --no-write

Per vocabulary size V (SmolLM2 49152, Qwen 151936, Gemma 262144) and cloud evidence (sparse top-20, dense V log-probs)
it times one token's fusion: static log-linear weights, fused top-20 with log-probs. Ours with normalize=True (exact
log-probs over V) against numpy computing the same exact result; ours with normalize=False (log-probs over the
top-20, all greedy / top-k / top-p need) against numpy doing the same. numpy: log-softmax of the edge in float32,
the cloud completed to V (tail value) or taken dense, w_e * log p_e + w_c * log p_c, argpartition for the top-20,
log-sum-exp over V (or the top-20). Both sides: one Python call per token, median of interleaved rounds, one thread,
pinned to core 0. Also: our log-softmax over V floats against one plain read of them (numpy max).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from floe_edge import fusion, kernels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load, machine, write_section  # noqa: E402

VOCABS = [49152, 151936, 262144]
K_CLOUD, TOP_K, W = 20, 20, (0.4, 0.6)


def np_lse(v: np.ndarray) -> np.float32:
    m = v.max()
    return m + np.log(np.exp(v - m).sum())


def numpy_fuse(x: np.ndarray, ids: Optional[np.ndarray], lps: Optional[np.ndarray], dense: Optional[np.ndarray],
               normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """The same fused top-20 as Fuser.fuse, written plainly in numpy (float32 throughout, as ours)."""
    V = len(x)
    le = x - np_lse(x)
    if dense is not None:
        lc = dense
    else:
        mass = np.exp(lps.astype(np.float64)).sum()
        rest = max(1.0 - mass, 1e-4)
        lc = np.full(V, np.log(rest / (V - len(ids))), np.float32)
        lc[ids] = lps
    s = W[0] * le + W[1] * lc
    top = np.argpartition(-s, TOP_K)[:TOP_K]
    top = top[np.argsort(-s[top], kind="stable")]
    lz = np_lse(s) if normalize else np_lse(s[top])
    return top, s[top] - lz


def timeit(fns: dict[str, Callable[[], object]], rounds: int, per_round: int) -> dict[str, float]:
    """Median µs per call, the functions interleaved round by round so host noise hits all alike."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(rounds):
        for name, f in fns.items():
            t = time.perf_counter()
            for _ in range(per_round):
                f()
            samples[name].append((time.perf_counter() - t) / per_round * 1e6)
    return {k: statistics.median(v) for k, v in samples.items()}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few rounds (smoke test)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    rounds, per_round = (3, 5) if args.quick else (15, 20)
    rng = np.random.default_rng(1)
    rows = []
    for V in VOCABS:
        x = (rng.standard_normal(V) * 3).astype(np.float32)
        ids = rng.choice(V, K_CLOUD, replace=False).astype(np.int32)
        lps = np.log(rng.dirichlet(np.ones(K_CLOUD)) * 0.9).astype(np.float32)
        dense = np.log(rng.dirichlet(np.full(V, 0.1)) + 1e-30).astype(np.float32)
        for name, kw in (("top-20", {"cloud_ids": ids, "cloud_logprobs": lps}), ("dense", {"cloud_dense": dense})):
            exact = fusion.Fuser(V, weights=W, top_k=TOP_K)
            fast = fusion.Fuser(V, weights=W, top_k=TOP_K, normalize=False)
            a, b = exact.fuse(x, **kw), numpy_fuse(x, kw.get("cloud_ids"), kw.get("cloud_logprobs"),
                                                   kw.get("cloud_dense"), True)
            assert np.array_equal(a.ids, b[0]) and np.allclose(a.logprobs, b[1], atol=1e-4), (V, name)
            t = timeit({
                "ours": lambda: exact.fuse(x, **kw),
                "numpy": lambda: numpy_fuse(x, kw.get("cloud_ids"), kw.get("cloud_logprobs"), kw.get("cloud_dense"),
                                            True),
                "ours_fast": lambda: fast.fuse(x, **kw),
                "numpy_fast": lambda: numpy_fuse(x, kw.get("cloud_ids"), kw.get("cloud_logprobs"),
                                                 kw.get("cloud_dense"), False),
            }, rounds, per_round)
            rows.append((V, name, t))
            print(f"V={V:6d} {name:6s} exact: ours {t['ours']:7.1f} µs numpy {t['numpy']:7.1f} µs "
                  f"({t['numpy'] / t['ours']:.1f}x)   top-k normalized: ours {t['ours_fast']:7.1f} µs "
                  f"numpy {t['numpy_fast']:7.1f} µs ({t['numpy_fast'] / t['ours_fast']:.1f}x)", flush=True)
    lsm = []
    for V in VOCABS:
        x = (rng.standard_normal(V) * 3).astype(np.float32)
        t = timeit({"log_softmax": lambda: fusion.log_softmax(x), "read": lambda: x.max(),
                    "numpy": lambda: x - np_lse(x)}, rounds, per_round)
        lsm.append((V, t))
        print(f"V={V:6d} log-softmax: ours {t['log_softmax']:.1f} µs, read {t['read']:.1f} µs, "
              f"numpy {t['numpy']:.1f} µs", flush=True)

    lines = [
        "## Fusion (µs per token, 1 thread)", "",
        f"`python bench/fusion.py` on {machine()}; load {load()}; kernel variant {kernels.active_variant()}; "
        f"numpy {np.__version__}. Static log-linear weights {W}, fused top-{TOP_K} with log-probs; cloud evidence "
        f"a sparse top-{K_CLOUD} or dense V log-probs. *exact*: log-probs normalized over V (ours: top-k pass + one "
        "exp pass); *top-k*: normalized over the fused top-k (ours: no exp over V; numpy still computes its "
        "log-softmax). Medians of interleaved rounds, pinned to core 0.", "",
        "| V | cloud | ours exact | numpy exact | speed-up | ours top-k | numpy top-k | speed-up |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for V, name, t in rows:
        lines.append(f"| {V} | {name} | {t['ours']:.1f} | {t['numpy']:.1f} | {t['numpy'] / t['ours']:.1f}x | "
                     f"{t['ours_fast']:.1f} | {t['numpy_fast']:.1f} | {t['numpy_fast'] / t['ours_fast']:.1f}x |")
    lines += ["", "| V | our log-softmax | one read of V floats (numpy max) | numpy log-softmax |",
              "|---:|---:|---:|---:|"]
    for V, t in lsm:
        lines.append(f"| {V} | {t['log_softmax']:.1f} | {t['read']:.1f} | {t['numpy']:.1f} |")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("fusion", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
