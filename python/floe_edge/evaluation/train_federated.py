"""`floe eval --train federated`: the users of the data folder federate their LoRA adapters on Flower's simulation
runtime (`floe fl sim`: FlexLoRA aggregation, each device at the hardware profile's rank), and each keeps the global
adapter plus a personal one (DESIGN.md; floe_edge.fl.personal), which its edge stacks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from ..data.records import Record
from .options import EvalOptions

__all__ = ["train_federated", "ROUNDS", "STEPS"]

ROUNDS, STEPS = 3, 20  # rounds of the federation, local steps per round (the fl bench's setting)
QUICK_ROUNDS, QUICK_STEPS = 2, 3  # --quick: the whole path (the last round starts from a global adapter)


def train_federated(opts: EvalOptions, history: dict[str, list[Record]], work: Path,
                    say: Callable[[str], None]) -> dict[str, list[Path]]:
    from .. import models
    from ..adapters.store import AdapterStore
    from ..fl.runner import run_simulation
    from ..fl.settings import RunSettings
    from ..profiles import detect

    empty = [u for u, records in history.items() if not records]
    if empty:
        raise ValueError(f"--train federated: user {empty[0]} has no records in train.jsonl")
    profile = opts.hw_profile or detect()[0].name
    rounds, steps = (QUICK_ROUNDS, QUICK_STEPS) if opts.quick else (ROUNDS, STEPS)
    out, root = work / "fl", work / "fl-store"
    settings = RunSettings(num_server_rounds=rounds, steps=steps, clients=",".join(f"{u}:{profile}" for u in history),
                           base_model=str(models.pull(opts.edge_model)), data_dir=str(opts.data), out_dir=str(out),
                           personal_store=str(root))
    # the federation is cached in the work directory by what it ran on, as local adapters are
    digest = hashlib.sha256(json.dumps(settings.as_run_config(), sort_keys=True).encode()
                            + (opts.data / "train.jsonl").read_bytes()).hexdigest()[:16]
    done = root / "federation.json"
    if done.exists() and json.loads(done.read_text()).get("digest") == digest:
        say(f"federated adapters of {len(history)} users ({profile}): cached in {root}")
    else:
        say(f"federating {len(history)} users' adapters ({profile}): {rounds} round(s) of {steps} steps on Flower")
        _, status = run_simulation(settings, out, echo=say)
        if "completed" not in status.lower() or "fail" in status.lower():
            raise RuntimeError(f"the federation ended {status!r}; see {out}")
        done.write_text(json.dumps({"digest": digest, "status": status}) + "\n")
    store = AdapterStore(root)
    adapters: dict[str, list[Path]] = {}
    for user in history:
        stack = [store.active(profile, "fl-global"), store.active(profile, f"fl-personal-{user}")]
        adapters[user] = [p for p in stack if p is not None]
        if not adapters[user]:
            raise RuntimeError(f"the federation stored no adapter for {user} in {root}")
    return adapters
