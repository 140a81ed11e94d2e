"""What `floe eval` is asked to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..profiles import BACKENDS

__all__ = ["EvalOptions", "SYSTEMS", "TRAIN_MODES", "CLOUD_MODELS"]

SYSTEMS = ("cloud", "edge", "edge-generic", "floe-static", "floe-adaptive", "floe-gate", "oracle")
TRAIN_MODES = ("none", "local", "federated")
CLOUD_MODELS = ("smollm2-135m", "gemma3-270m")


@dataclass(frozen=True)
class EvalOptions:
    data: Path
    systems: tuple[str, ...] = SYSTEMS
    train: str = "none"
    cloud_model: str = "smollm2-135m"
    edge_model: str = "smollm2-135m"
    rtts: tuple[float, ...] = (30.0,)
    quick: bool = False
    users: Optional[int] = None          # evaluate the first N users of test.jsonl (None: all)
    per_task: Optional[int] = None       # held-out records per user and task (None: all; --quick: 2)
    gate_records: Optional[int] = None   # held-in records per user and task the gate learns from (--quick: 3)
    latency_records: int = 8             # records per user answered again at each further RTT
    k: int = 8                           # cloud top-k per position
    deadline_ms: float = 200.0
    hw_profile: Optional[str] = None     # for --train: the profile's LoRA rank and targets (default: detected)
    work_dir: Optional[Path] = None      # adapters and gates (default: a temporary directory)
    backend: str = "native"              # the edge's: native (the GGUF) or litert (exported per adapter set)
    delegate: str = "none"               # litert: XNNPACK on the CPU, or the gpu / npu delegate
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown:
            raise ValueError(f"unknown system {unknown[0]!r} (expected some of {', '.join(SYSTEMS)})")
        if self.train not in TRAIN_MODES:
            raise ValueError(f"--train must be one of {', '.join(TRAIN_MODES)}, got {self.train!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not self.rtts or any(not r >= 0 for r in self.rtts):
            raise ValueError("--rtt takes one or more round-trip times in ms, each >= 0")
        for name in ("users", "per_task", "gate_records"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")

    @property
    def held_out_per_task(self) -> Optional[int]:
        return self.per_task if self.per_task is not None else (2 if self.quick else None)

    @property
    def held_in_per_task(self) -> Optional[int]:
        return self.gate_records if self.gate_records is not None else (3 if self.quick else None)
