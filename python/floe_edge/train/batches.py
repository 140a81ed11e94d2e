"""Training examples and the order they are seen in: tokenized records, shuffled per epoch, packed into batches that
fit a token budget (which, with the record length cap, bounds the memory a step needs)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, Sequence

from ..data.tokens import RecordTokens

__all__ = ["Batch", "epoch_batches", "IGNORE"]

IGNORE = -100  # the label transformers' loss ignores: input and padding positions


@dataclass(frozen=True)
class Batch:
    """Padded ids, attention mask and labels (the completion tokens; IGNORE elsewhere), as nested lists."""

    ids: list[list[int]]
    mask: list[list[int]]
    labels: list[list[int]]

    @property
    def n_scored(self) -> int:
        return sum(label != IGNORE for row in self.labels for label in row)

    @property
    def n_tokens(self) -> int:
        return sum(map(sum, self.mask))


def make_batch(examples: Sequence[RecordTokens], pad_id: int) -> Batch:
    width = max(map(len, examples))
    ids, mask, labels = [], [], []
    for ex in examples:
        pad = width - len(ex)
        ids.append(ex.ids + [pad_id] * pad)
        mask.append([1] * len(ex) + [0] * pad)
        labels.append([IGNORE] * len(ex.input_ids) + list(ex.completion_ids) + [IGNORE] * pad)
    return Batch(ids, mask, labels)


def epoch_batches(examples: Sequence[RecordTokens], epoch: int, seed: int, batch_tokens: int,
                  pad_id: int) -> list[Batch]:
    """The batches of one epoch: the examples in an order fixed by (seed, epoch), cut into batches whose padded size
    (rows × longest row) stays within batch_tokens. Deterministic, so a resumed run sees what the first one would."""
    order = list(range(len(examples)))
    random.Random(f"{seed}/{epoch}").shuffle(order)
    return [make_batch([examples[i] for i in group], pad_id) for group in _pack(examples, order, batch_tokens)]


def _pack(examples: Sequence[RecordTokens], order: list[int], batch_tokens: int) -> Iterator[list[int]]:
    group: list[int] = []
    width = 0
    for i in order:
        n = len(examples[i])
        if group and max(width, n) * (len(group) + 1) > batch_tokens:
            yield group
            group, width = [], 0
        group.append(i)
        width = max(width, n)
    if group:
        yield group
