"""LoRA training on one user's records: the loop, with progress, checkpoints and resume.

    from floe_edge.train import TrainConfig, train_lora
    result = train_lora("SmolLM2.gguf", records, TrainConfig.from_profile(load_profile("rpi5")), "me.gguf")

The loss is the mean cross-entropy of the completion tokens (the input, private context included, is read but not
learned), AdamW with a linear warmup and decay, gradients clipped at norm 1. The order of the records is fixed by the
seed, so a resumed run trains exactly what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

import numpy as np

from ..adapters import LoraAdapter
from ..files import file_sha256
from ..data.records import Record
from ..data.tokens import RecordTokens, tokenize_record
from .batches import IGNORE, Batch, epoch_batches
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .model import (TrainError, attach_lora, export_adapter, load_adapter_into, load_base, lora_state,
                    require_train_extra)

if TYPE_CHECKING:
    import torch

__all__ = ["StepInfo", "TrainResult", "build_examples", "train_lora"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class StepInfo:
    step: int  # done, 1-based
    total: int
    epoch: int
    loss: float
    tokens_per_s: float  # so far in this session


@dataclass(frozen=True)
class TrainResult:
    adapter: Path
    steps: int
    resumed_from: int  # the step the run resumed at (0: a fresh run)
    examples: int
    tokens: int  # positions processed (padding excluded), over the whole run
    scored_tokens_per_epoch: int
    seconds: float  # training time, over the whole run
    peak_rss_mb: float  # this process
    first_loss: float
    last_loss: float  # mean of the last epoch's worth of steps (at most 10)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def build_examples(tokenizer: object, records: Sequence[Record], config: TrainConfig,
                   where: Sequence[str] = ()) -> list[RecordTokens]:
    """The records tokenized as the edge reads them, with the model's EOS after each completion when
    `config.end_with_eos` (answers then end where the completion does: without it an adapter learns to go on, and
    an answer that is right and then carries on is not an exact match); a record that cannot be trained on is a
    TrainError naming it (`where[i]`, e.g. "train.jsonl:12", else its index)."""
    eos = getattr(tokenizer, "eos_id", None) if config.end_with_eos else None
    examples = []
    for i, record in enumerate(records):
        try:
            tokens = tokenize_record(tokenizer, record, max_tokens=config.max_len - (eos is not None))  # type: ignore[arg-type]
            if eos is not None:
                tokens = RecordTokens(tokens.input_ids, (*tokens.completion_ids, eos))
            examples.append(tokens)
        except ValueError as e:
            raise TrainError(f"{where[i] if i < len(where) else f'record {i + 1}'}: {e}") from None
    if not examples:
        raise TrainError("no training records")
    return examples


def train_lora(base_gguf: PathLike, examples: Sequence[RecordTokens], config: TrainConfig, out: PathLike,
               checkpoint: Optional[PathLike] = None, progress: Optional[Callable[[StepInfo], None]] = None,
               init: Optional[LoraAdapter] = None) -> TrainResult:
    """Train a LoRA on `examples` and write it to `out` as a GGUF adapter for `base_gguf`. With `checkpoint` (a
    file), the state is saved there every `config.checkpoint_every` steps and on Ctrl-C, a run finding its own
    checkpoint resumes from it, and the file is removed once the adapter is written. With `init` (an adapter of the
    config's rank and alpha), training starts from its weights instead of a fresh LoRA."""
    require_train_extra()
    import torch

    base_gguf, out = Path(base_gguf), Path(out)
    ckpt_path = Path(checkpoint) if checkpoint else None
    fingerprint = config.fingerprint(_file_digest(base_gguf), _examples_digest(examples), _adapter_digest(init))
    state = load_checkpoint(ckpt_path, fingerprint) if ckpt_path else None
    torch.set_num_threads(config.threads)
    model = attach_lora(load_base(base_gguf), config)
    if init is not None:
        load_adapter_into(model, init, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    plan = _Plan(examples, config)
    if state is None:
        state = Checkpoint(fingerprint, 0, {}, {})
    else:
        if model.load_state_dict(state.lora, strict=False).unexpected_keys:
            raise TrainError(f"{ckpt_path}: its LoRA tensors do not fit this model; remove it or train with --restart")
        optimizer.load_state_dict(state.optimizer)
    resumed_from, prior_seconds = state.step, state.seconds
    model.train()
    session_tokens, started = 0, time.perf_counter()
    try:
        for step in range(state.step, plan.total):
            epoch, batch = plan.batch(step)
            _set_lr(optimizer, config, step, plan.total)
            loss = _step(model, optimizer, params, batch)
            state.step, state.tokens = step + 1, state.tokens + batch.n_tokens
            state.losses.append(loss)
            session_tokens += batch.n_tokens
            if progress:
                progress(StepInfo(step + 1, plan.total, epoch + 1, loss,
                                  session_tokens / max(time.perf_counter() - started, 1e-9)))
            if ckpt_path and (step + 1) % config.checkpoint_every == 0 and step + 1 < plan.total:
                _save(ckpt_path, state, model, optimizer, prior_seconds + time.perf_counter() - started)
    except KeyboardInterrupt:
        if ckpt_path:
            _save(ckpt_path, state, model, optimizer, prior_seconds + time.perf_counter() - started)
        raise
    seconds = prior_seconds + time.perf_counter() - started
    model.eval()
    export_adapter(model, base_gguf, config.dtype).write(out)
    if ckpt_path and ckpt_path.exists():
        ckpt_path.unlink()
    tail = state.losses[-min(10, plan.steps_per_epoch):]
    return TrainResult(out, plan.total, resumed_from, len(examples), state.tokens, plan.scored_per_epoch, seconds,
                       resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, state.losses[0],
                       sum(tail) / len(tail))


class _Plan:
    """Which batch each step trains on: the epochs' batches in order, cut at max_steps. Epochs may differ in their
    number of batches (each packs its own shuffle into the token budget), so the steps are laid out once."""

    def __init__(self, examples: Sequence[RecordTokens], config: TrainConfig) -> None:
        epochs = [epoch_batches(examples, e, config.seed, config.batch_tokens, pad_id=0) for e in range(config.epochs)]
        self.steps_per_epoch = len(epochs[0])
        self.scored_per_epoch = sum(b.n_scored for b in epochs[0])
        self._steps = [(e, b) for e, batches in enumerate(epochs) for b in batches]
        self.total = len(self._steps) if config.max_steps is None else min(len(self._steps), config.max_steps)

    def batch(self, step: int) -> tuple[int, Batch]:
        return self._steps[step]


def _step(model: object, optimizer: object, params: list, batch: Batch) -> float:
    import torch

    optimizer.zero_grad(set_to_none=True)  # type: ignore[attr-defined]
    loss = completion_loss(model, batch)
    if not torch.isfinite(loss):
        raise TrainError(f"the loss became {loss.item()}: lower the learning rate (--lr)")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()  # type: ignore[attr-defined]
    return float(loss.item())


def completion_loss(model: object, batch: Batch) -> "torch.Tensor":
    """Mean cross-entropy of the completion tokens. The output layer (49152 × 576 for SmolLM2) runs on the scored
    positions only: the others need no logits, and their logits would be most of a step's memory."""
    import torch

    causal_lm = model.get_base_model()  # type: ignore[attr-defined]  # the LoRA layers are in it
    hidden = causal_lm.model(input_ids=torch.tensor(batch.ids),
                             attention_mask=torch.tensor(batch.mask)).last_hidden_state
    targets = torch.tensor(batch.labels)[:, 1:]
    scored = targets != IGNORE
    logits = causal_lm.lm_head(hidden[:, :-1][scored])
    return torch.nn.functional.cross_entropy(logits.float(), targets[scored])


def _set_lr(optimizer: object, config: TrainConfig, step: int, total: int) -> None:
    """Linear warmup over warmup_steps, then linear decay to a tenth of lr at the last step."""
    warm = min(config.warmup_steps, max(total - 1, 1))
    if step < warm:
        factor = (step + 1) / warm
    else:
        factor = 1.0 - 0.9 * (step - warm) / max(total - warm, 1)
    for group in optimizer.param_groups:  # type: ignore[attr-defined]
        group["lr"] = config.lr * factor


def _save(path: Path, state: Checkpoint, model: object, optimizer: object, seconds: float) -> None:
    state.lora = lora_state(model)
    state.optimizer = optimizer.state_dict()  # type: ignore[attr-defined]
    state.seconds = seconds
    save_checkpoint(path, state)


def _file_digest(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as e:
        raise TrainError(f"{path}: cannot read the base model: {e}") from None


def _examples_digest(examples: Sequence[RecordTokens]) -> str:
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(repr((ex.input_ids, ex.completion_ids)).encode())
    return digest.hexdigest()



def _adapter_digest(adapter: Optional[LoraAdapter]) -> str:
    if adapter is None:
        return ""
    digest = hashlib.sha256(f"{adapter.architecture}/{adapter.alpha}".encode())
    for name in sorted(adapter.pairs):
        digest.update(name.encode())
        for array in adapter.pairs[name]:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
