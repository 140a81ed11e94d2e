"""What a LoRA training run is: the profile's rank, alpha and targets, and the optimization settings."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

from ..profiles import PROJECTIONS, Profile

__all__ = ["PEFT_TARGETS", "TrainConfig"]

# profile projection name -> the module name in transformers' llama (what PEFT's target_modules takes)
PEFT_TARGETS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj", "up": "up_proj",
                "down": "down_proj"}  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q", "k", "v", "o")  # profile names (PROJECTIONS)
    epochs: int = 3
    max_steps: Optional[int] = None  # stops earlier than the epochs when set
    lr: float = 1e-3  # LoRA's usual range is 1e-4..2e-3; the records are few, so the higher end
    warmup_steps: int = 10
    weight_decay: float = 0.0
    batch_tokens: int = 512  # records per step: as many as fit in this many (padded) tokens; bounds memory
    activation_checkpointing: bool = True  # measured with r = 32 on SmolLM2: peak RSS 3.5 -> 1.7 GB, not slower
    max_len: int = 512  # a record's tokens; longer inputs lose their start (the completion is kept)
    seed: int = 0
    threads: int = 2
    dtype: str = "f16"  # of the exported adapter: llama.cpp's converter default, half the bytes per token
    checkpoint_every: int = 20  # steps
    end_with_eos: bool = True  # the model's EOS follows each completion in training: the adapter learns to stop

    def __post_init__(self) -> None:
        for key in ("rank", "epochs", "batch_tokens", "max_len", "threads", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        if not self.lr > 0 or not self.alpha > 0:
            raise ValueError("lr and alpha must be positive")
        if not self.targets or any(t not in PROJECTIONS for t in self.targets):
            raise ValueError(f"targets must be some of {', '.join(PROJECTIONS)}, got {list(self.targets)}")
        if self.dtype not in ("f16", "f32"):
            raise ValueError(f"dtype must be f16 or f32, got {self.dtype!r}")
        if self.batch_tokens < self.max_len:
            raise ValueError(f"batch_tokens ({self.batch_tokens}) must hold one record of max_len ({self.max_len})")

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "TrainConfig":
        """The profile's LoRA rank, alpha and targets and its thread count, then the overrides (None: not given)."""
        base = cls(rank=profile.lora.rank, alpha=profile.lora.alpha, targets=tuple(profile.lora.targets),
                   threads=profile.threads)
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def peft_targets(self) -> list[str]:
        return [PEFT_TARGETS[t] for t in self.targets]

    def fingerprint(self, *parts: str) -> str:
        """A digest of what decides the trained weights (not threads, dtype or checkpoint spacing) and of `parts`
        (the base model's and the data's digests): a checkpoint resumes only the run it was made by."""
        decisive = {k: v for k, v in asdict(self).items()
                    if k not in ("threads", "dtype", "checkpoint_every", "activation_checkpointing")}
        text = json.dumps([decisive, *parts], sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
