"""`floe eval --train local`: the user's LoRA adapter, trained on their held-in records at the hardware profile's
rank and targets, cached in the work directory by what it was trained from."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

from ..data.records import Record
from .options import EvalOptions

__all__ = ["train_user_adapter"]


def train_user_adapter(opts: EvalOptions, user: str, records: Sequence[Record], work: Path,
                       say: Callable[[str], None]) -> Path:
    from .. import _native, models
    from ..profiles import detect, load_profile
    from ..train import TrainConfig, build_examples, train_lora

    if not records:
        raise ValueError(f"--train {opts.train}: user {user} has no records in train.jsonl to train an adapter on")
    profile = load_profile(opts.hw_profile) if opts.hw_profile else detect()[0]
    config = TrainConfig.from_profile(profile, threads=min(profile.threads, os.cpu_count() or 1))
    base = models.pull(opts.edge_model)
    examples = build_examples(_native.Tokenizer.from_gguf(str(base)), list(records), config)
    digest = hashlib.sha256(repr([(e.input_ids, e.completion_ids) for e in examples]).encode()).hexdigest()[:12]
    out = work / f"adapter-{user}-{profile.name}-r{config.rank}-{digest}.gguf"
    if out.exists():
        say(f"  {user}: adapter {out.name} (cached)")
        return out
    say(f"  {user}: training a rank-{config.rank} LoRA ({profile.name}) on {len(examples)} held-in records")
    result = train_lora(base, examples, config, out)
    say(f"  {user}: trained in {result.seconds:.0f} s, loss {result.first_loss:.2f} -> {result.last_loss:.2f}")
    return out


def train_adapters(opts: EvalOptions, history: dict[str, list[Record]], work: Path,
                   say: Callable[[str], None]) -> dict[str, list[Path]]:
    """Per user, the adapters the edge stacks: none (`--train none`), the user's own (`local`), or the federation's
    global adapter plus the user's personal one (`federated`: Flower simulation over all the users)."""
    if opts.train == "none":
        return {}
    if opts.train == "local":
        return {user: [train_user_adapter(opts, user, records, work, say)] for user, records in history.items()}
    from .train_federated import train_federated

    return train_federated(opts, history, work, say)
