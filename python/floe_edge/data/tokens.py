"""Records as token ids on the edge's tokenization, and the teacher-forced top-1 that training and evaluation score.

One rule for both (DESIGN.md section 9): the input (by default what the edge reads: private context + prompt) is
tokenized with BOS, the completion on its own without BOS, and appended as it is; the completion's tokens are the
ones scored. Training computes its loss on exactly these tokens, evaluation its top-1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

from .records import Record, edge_input

__all__ = ["EvalModel", "RecordTokens", "Tokenize", "record_hits", "teacher_forced_hits", "tokenize_record"]


class Tokenize(Protocol):
    def tokenize(self, text: str, add_bos: bool = ..., special: bool = ...) -> list[int]: ...


class EvalModel(Protocol):
    def reset(self) -> None: ...
    def eval(self, ids: Sequence[int]) -> np.ndarray: ...


@dataclass(frozen=True)
class RecordTokens:
    """A record as ids: the input, then the completion (the scored part)."""

    input_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]

    @property
    def ids(self) -> list[int]:
        return [*self.input_ids, *self.completion_ids]

    def __len__(self) -> int:
        return len(self.input_ids) + len(self.completion_ids)


def tokenize_record(tokenizer: Tokenize, record: Record, read: Callable[[Record], str] = edge_input,
                    max_tokens: Optional[int] = None) -> RecordTokens:
    """The record on the edge's tokenization. With `max_tokens`, the input loses tokens from its start (after BOS)
    until the whole fits: the prompt's end and the completion are what is learned and scored. A completion that
    does not fit on its own is a ValueError."""
    input_ids = tokenizer.tokenize(read(record), add_bos=True, special=False)
    completion_ids = tokenizer.tokenize(record.completion, add_bos=False, special=False)
    if not completion_ids:
        raise ValueError(f"completion {record.completion!r} has no tokens")
    if max_tokens is not None and len(input_ids) + len(completion_ids) > max_tokens:
        keep = max_tokens - len(completion_ids) - 1  # BOS stays
        if keep < 1:
            raise ValueError(f"completion of {len(completion_ids)} tokens does not fit in {max_tokens} tokens")
        input_ids = input_ids[:1] + input_ids[len(input_ids) - keep:]
    return RecordTokens(tuple(input_ids), tuple(completion_ids))


def teacher_forced_hits(logits: np.ndarray, tokens: RecordTokens) -> np.ndarray:
    """Per completion token: is the argmax of the logits before it that token? `logits` has one row per id of
    `tokens.ids` (the row of position i predicts id i + 1)."""
    n_in, completion = len(tokens.input_ids), np.asarray(tokens.completion_ids)
    predicted = np.asarray(logits)[n_in - 1: n_in - 1 + len(completion)].argmax(-1)
    return predicted == completion


def record_hits(slm: EvalModel, tokens: RecordTokens) -> np.ndarray:
    """`teacher_forced_hits` of a model with `reset` and `eval(ids) -> logits of every position` (NativeSLM)."""
    slm.reset()
    return teacher_forced_hits(slm.eval(tokens.ids), tokens)

