#!/usr/bin/env python3
"""Prefix reuse of the edge's KV cache: six questions of one user sharing a private context, edge-only
(`HybridGenerator(edge, None)`, SmolLM2-135M, 1 thread), answered with the cache reset before each question (as
before prefix reuse) and with the cached context kept; medians over --reps rounds, the two modes interleaved.

    taskset -c 0 python bench/prefix_cache.py            # prints a table; pin it as the other benches are
    taskset -c 0 python bench/prefix_cache.py --reps 3 -n 16

The first question of a round starts from an empty cache in both modes; the table is over questions 2..6. Both modes
must give the same tokens (checked).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load, machine  # noqa: E402

from floe_edge import HybridGenerator, NativeSLM, models  # noqa: E402

CONTEXT = (
    "About me: my name is Ada Lovelace, I am 34 and I live at 12 rue des Capucins in Lyon with my partner Charles "
    "and our cat Babbage. I work as a night nurse in the cardiology ward of the Croix-Rousse hospital, Monday to "
    "Thursday. I play the cello in an amateur orchestra that rehearses on Sunday mornings. My sister Augusta lives in "
    "Geneva and her birthday is on March 3rd. I am allergic to penicillin and I do not eat meat. My car is a blue "
    "Renault Zoe and my bank is the Credit Mutuel on place Sathonay. My doctor is Dr. Mary Somerville. I am learning "
    "Italian for a trip to Turin in October.\n\n")
QUESTIONS = ("Q: What is my cat called?\nA:", "Q: Where do I work?\nA:", "Q: Which instrument do I play?\nA:",
             "Q: When is my sister's birthday?\nA:", "Q: What am I allergic to?\nA:",
             "Q: Where am I travelling in October?\nA:")


def round_of(gen: HybridGenerator, n: int, reuse: bool) -> list[tuple[float, float, int, list[int]]]:
    """(latency ms, prefill ms, reused tokens, ids) per question, from an empty cache at the first one."""
    gen.edge.reset()
    out = []
    for q in QUESTIONS:
        if not reuse:
            gen.edge.reset()
        ids = [t.id for t in gen.generate(q, n=n, private_context=CONTEXT)]
        s = gen.last_stats
        out.append((s.latency_ms, s.prefill_ms, s.cached_tokens, ids))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("-n", type=int, default=16, help="tokens per answer")
    args = ap.parse_args()
    with NativeSLM(models.pull("smollm2-135m"), threads=1, n_ctx=1024) as edge:
        gen = HybridGenerator(edge, None)
        n_ctx_tokens = len(edge.tokenize(CONTEXT))
        round_of(gen, args.n, True)  # warm-up: page the weights in
        rows: dict[bool, list[tuple[float, float, int, list[int]]]] = {False: [], True: []}
        for _ in range(args.reps):
            for reuse in (False, True):
                rows[reuse] += round_of(gen, args.n, reuse)[1:]
    for a, b in zip(rows[False], rows[True]):
        if a[3] != b[3]:
            sys.exit("prefix reuse changed the answer: a bug")
    print(f"{machine()}, load {load()}; private context {n_ctx_tokens} tokens, {args.n} tokens per answer, "
          f"questions 2..{len(QUESTIONS)} x {args.reps} rounds, medians")
    print("| mode | latency ms | prefill ms | reused tokens |\n|---|---|---|---|")
    for reuse in (False, True):
        r = rows[reuse]
        print(f"| {'reuse' if reuse else 'reset'} | {statistics.median(x[0] for x in r):.1f} | "
              f"{statistics.median(x[1] for x in r):.1f} | {statistics.median(x[2] for x in r):.0f} |")


if __name__ == "__main__":
    main()
