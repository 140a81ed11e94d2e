#!/usr/bin/env python3
"""The cost of DP at one round, offline: the round-1 client adapters of a `bench/fl.py --work DIR` run aggregated
with and without DP (clip C, noise multiplier σ; `FederatedCore`, the ServerApp's logic), then each client's held-out
top-1 with the global adapter truncated to its rank and projections (what its round 2 would start from).

    python bench/fl_dp_offline.py DIR C SIGMA     # prints JSON
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from floe_edge import models
from floe_edge.adapters import LoraAdapter
from floe_edge.data import read_records
from floe_edge.fl.adapters import adapter_from_factors, delta_factors
from floe_edge.fl.client import pooled_top1
from floe_edge.fl.rounds import FederatedCore, Reply
from floe_edge.profiles import load_profile
from floe_edge.train.heldout import heldout_top1

USERS = {"u1": ("rpi4", 3), "u2": ("rpi5", 18), "u3": ("x86-avx2", 18)}  # bench/fl.py's clients and train records


def main() -> None:
    work, clip, sigma = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    base = models.pull("smollm2-135m")
    replies = [Reply(u, delta_factors(LoraAdapter.read(work / "fed/clients" / u / "trained-r1.gguf")), float(n))
               for u, (_, n) in USERS.items()]
    test = read_records(work / "data/test.jsonl")
    out: dict = {}
    for name, core in (("no DP", FederatedCore(16)), ("DP", FederatedCore(16, clip_norm=clip, dp_noise=sigma))):
        started = time.time()
        outcome = core.aggregate_round(1, replies)
        out.setdefault("_", {})[name] = {"noise_std": outcome.noise_std, "clipped": outcome.clipped,
                                         "aggregate_s": time.time() - started}
        for user, (profile_name, _) in USERS.items():
            lora = load_profile(profile_name).lora
            mine = core.for_client(lora.rank, lora.targets)
            path = adapter_from_factors("llama", mine, lora.rank, lora.alpha).write(
                work / f"global-{name.replace(' ', '')}-{user}.gguf")
            top1 = heldout_top1(base, [r for r in test if r.user == user], path, threads=2)
            out.setdefault(user, {})[name] = pooled_top1(top1, "private context + LoRA")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
