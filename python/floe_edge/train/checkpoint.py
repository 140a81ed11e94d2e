"""A training run's state on disk, so that an interrupted run (Ctrl-C, kill, power loss) goes on where it stopped.

Written atomically (the old checkpoint or the new one, never half of one) every few steps and on Ctrl-C; removed when
the adapter is exported. It holds the LoRA tensors, the optimizer's moments, the step reached and the losses so far,
and the fingerprint of the run (settings, base model, data) that made it: another run refuses to resume from it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..files import write_atomic
from .model import TrainError

__all__ = ["Checkpoint", "load_checkpoint", "save_checkpoint"]


@dataclass
class Checkpoint:
    fingerprint: str
    step: int  # optimizer steps done
    lora: dict[str, Any]  # parameter name -> tensor
    optimizer: dict[str, Any]
    losses: list[float] = field(default_factory=list)  # per step
    tokens: int = 0  # tokens processed so far (all positions, padding excluded)
    seconds: float = 0.0  # training time so far, over every session of the run


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(ckpt.__dict__, buffer)
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path, fingerprint: str) -> Optional[Checkpoint]:
    """The checkpoint at `path` (None when there is none); TrainError when it is unreadable or of another run."""
    if not path.exists():
        return None
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        ckpt = Checkpoint(**state)
    except Exception as e:  # a truncated or foreign file: torch raises many types
        raise TrainError(f"{path}: not a readable training checkpoint ({e}); remove it or train with --restart") \
            from None
    if ckpt.fingerprint != fingerprint:
        raise TrainError(f"{path}: a checkpoint of another run (other base model, data or settings); remove it or "
                         "train with --restart")
    return ckpt
