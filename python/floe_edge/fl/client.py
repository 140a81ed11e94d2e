"""One device's part of a federated round, without Flower: start from the global adapter at the profile's rank and
targets, train on the user's own records (`train_lora`), measure held-out top-1 before and after, and answer with
the trained adapter's ΔW factors, the example count and the metrics. Records never leave this function."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..adapters.lora_file import LoraAdapter, open_gguf
from ..adapters.store import AdapterStore
from ..data import read_records
from ..data.records import Record
from ..profiles import load_profile
from ..train import TrainConfig, build_examples, train_lora
from ..train.heldout import Top1, heldout_top1
from .adapters import adapter_from_factors, delta_factors
from .aggregate import Factors
from .personal import store_personal
from .rounds import truncate

__all__ = ["ClientSettings", "ClientSpec", "FlConfigError", "local_round", "parse_clients", "pooled_top1",
           "spec_for_node"]

Metric = Union[int, float, str]


class FlConfigError(ValueError):
    """A federation setting (clients list, node config) that cannot be used: the message says which."""


@dataclass(frozen=True)
class ClientSpec:
    user: str  # the `user` field of the records this device holds
    profile: str  # hardware profile name: its LoRA rank, alpha and targets
    max_train: Optional[int] = None  # keep only this many training records (a device with little data)


@dataclass(frozen=True)
class ClientSettings:
    base: Path  # the base model GGUF
    data_dir: Path  # holds train.jsonl and test.jsonl (section 9 format)
    work_dir: Path  # where this device writes its adapters
    steps: int = 20  # local training steps per round
    lr: float = 2e-3
    threads: int = 2
    batch_tokens: int = 1024
    max_len: int = 512


def parse_clients(text: str) -> list[ClientSpec]:
    """"u1:rpi4,u2:rpi5,u3:x86-avx2:6" → one ClientSpec per comma-separated user:profile[:max_train]."""
    specs = []
    for item in (part.strip() for part in text.split(",")):
        fields = item.split(":")
        if len(fields) not in (2, 3) or not all(fields):
            raise FlConfigError(f"client {item!r}: expected user:profile or user:profile:max_train")
        max_train = None
        if len(fields) == 3:
            if not fields[2].isdigit() or int(fields[2]) < 1:
                raise FlConfigError(f"client {item!r}: max_train must be a positive integer")
            max_train = int(fields[2])
        specs.append(ClientSpec(fields[0], fields[1], max_train))
    if not specs:
        raise FlConfigError("no clients")
    return specs


def user_records(path: Path, spec: ClientSpec, limit: Optional[int] = None) -> list[Record]:
    records = [r for r in read_records(path) if r.user == spec.user]
    if not records:
        raise FlConfigError(f"{path}: no records of user {spec.user!r}")
    return records[:limit] if limit else records


def pooled_top1(top1: Top1, read: str) -> float:
    """Top-1 over all tasks' completion tokens for one read (weighted by tokens)."""
    correct = sum(c for (_, r), (c, _) in top1.counts.items() if r == read)
    scored = sum(s for (_, r), (_, s) in top1.counts.items() if r == read)
    return correct / scored if scored else float("nan")


def local_round(spec: ClientSpec, settings: ClientSettings, received: Mapping[str, Factors], server_round: int,
                evaluate: bool = True, personal_store: Optional[Path] = None
                ) -> tuple[dict[str, Factors], int, dict[str, Metric]]:
    """Train this device's adapter for one round from `received` (the global factors; {} in the first round: a
    fresh LoRA) and return (its ΔW factors, training examples, metrics). With `personal_store` (an AdapterStore
    root), the global adapter it started from and its personal residual are stored there (`personal`)."""
    profile = load_profile(spec.profile)
    config = TrainConfig.from_profile(profile, epochs=1000, max_steps=settings.steps, lr=settings.lr,
                                      threads=settings.threads, batch_tokens=settings.batch_tokens,
                                      max_len=settings.max_len, seed=server_round, dtype="f32")
    train = user_records(settings.data_dir / "train.jsonl", spec, spec.max_train)
    test = user_records(settings.data_dir / "test.jsonl", spec)
    work = settings.work_dir / spec.user
    work.mkdir(parents=True, exist_ok=True)
    init = _initial(settings.base, received, config)
    init_path = init.write(work / f"start-r{server_round}.gguf") if init is not None else None
    metrics: dict[str, Metric] = {"rank": config.rank, "profile": spec.profile, "user": spec.user}
    started = time.perf_counter()
    if evaluate:
        before = heldout_top1(settings.base, test, init_path, threads=settings.threads)
        metrics["top1-context"] = pooled_top1(before, "private context")
        metrics["top1-before"] = pooled_top1(before, "private context + LoRA") if init_path else \
            metrics["top1-context"]  # a fresh LoRA has B = 0: exactly the base
    from .. import _native

    examples = build_examples(_native.Tokenizer.from_gguf(str(settings.base)), train, config)
    t_train = time.perf_counter()
    result = train_lora(settings.base, examples, config, work / f"trained-r{server_round}.gguf", init=init)
    metrics.update({"train-s": time.perf_counter() - t_train, "loss-first": result.first_loss,
                    "loss-last": result.last_loss, "examples": len(examples)})
    if evaluate:
        after = heldout_top1(settings.base, test, result.adapter, threads=settings.threads)
        metrics["top1-after"] = pooled_top1(after, "private context + LoRA")
    metrics["client-s"] = time.perf_counter() - started
    trained = LoraAdapter.read(result.adapter)
    if personal_store is not None:
        start = delta_factors(init) if init is not None else {}
        store_personal(AdapterStore(personal_store), spec.profile, spec.user, settings.base, trained.architecture,
                       start, delta_factors(trained), config.rank, config.alpha, work / "personal")
    return delta_factors(trained), len(examples), metrics


def _initial(base: Path, received: Mapping[str, Factors], config: TrainConfig) -> Optional[LoraAdapter]:
    """The received global factors as an adapter of this run's rank, alpha and targets (None when empty)."""
    mine = truncate(received, config.rank, config.targets)
    if not mine:
        return None
    architecture = str(open_gguf(base, f"base model {base}").metadata.get("general.architecture"))
    return adapter_from_factors(architecture, mine, config.rank, config.alpha)


def spec_for_node(specs: Sequence[ClientSpec], node_config: Mapping[str, object]) -> ClientSpec:
    """This node's client: node config `user`/`profile` when given, else entry `partition-id` of the list."""
    if "user" in node_config and "profile" in node_config:
        limit = node_config.get("max-train")
        return ClientSpec(str(node_config["user"]), str(node_config["profile"]), int(str(limit)) if limit else None)
    pid = node_config.get("partition-id")
    pid = int(pid) if isinstance(pid, str) and pid.isdigit() else pid  # some Flower paths give it as a string
    if not isinstance(pid, int) or not 0 <= pid < len(specs):
        raise FlConfigError(f"node config partition-id {pid!r}: needs an index into the {len(specs)} clients")
    return specs[pid]
