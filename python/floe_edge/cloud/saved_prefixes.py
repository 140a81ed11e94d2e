"""KV states of contexts the cloud's model moved away from, kept in host memory by their tokens.

One llama context serves every session, so a session whose prefix differs (another knowledge entry in front, another
user) evicts the one before, and coming back to it would decode its whole prefix again: about 350 ms for a 200-token
knowledge entry of Gemma 3 270M on one core, longer than an edge answer. Before a context switch discards a long
prefix, the backend saves that sequence's KV state here (a few MB); a later request sharing a longer prefix with a
saved state than with the live context restores it and decodes only the rest. llama.cpp's server does the same with
its host-memory prompt cache (`--cache-ram`). Least recently used states go first when the byte budget is full.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

__all__ = ["SavedPrefixes", "common_prefix"]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of two token sequences."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class SavedPrefixes:
    """Saved sequence states by their tokens, LRU within `budget_bytes`; states under `min_tokens` are not worth it."""

    def __init__(self, budget_bytes: int = 256 << 20, min_tokens: int = 64) -> None:
        if budget_bytes < 0 or min_tokens < 1:
            raise ValueError("budget_bytes must be >= 0 and min_tokens >= 1")
        self.budget_bytes, self.min_tokens = budget_bytes, min_tokens
        self._states: "OrderedDict[tuple[int, ...], bytes]" = OrderedDict()
        self._bytes = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._states)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def worth_saving(self, tokens: Sequence[int]) -> bool:
        return len(tokens) >= self.min_tokens and tuple(tokens) not in self._states

    def put(self, tokens: Sequence[int], state: bytes) -> None:
        key = tuple(int(t) for t in tokens)
        if len(state) > self.budget_bytes or len(key) < self.min_tokens:
            return
        old = self._states.pop(key, None)
        self._bytes -= len(old) if old is not None else 0
        self._states[key] = state
        self._bytes += len(state)
        while self._bytes > self.budget_bytes:
            _, dropped = self._states.popitem(last=False)
            self._bytes -= len(dropped)

    def best(self, tokens: Sequence[int], beat: int) -> Optional[tuple[tuple[int, ...], bytes, int]]:
        """The saved state sharing the longest prefix with `tokens`, if that prefix is at least `min_tokens` long
        and longer than `beat` (what the live context already shares): (its tokens, its state, the shared length)."""
        best: Optional[tuple[tuple[int, ...], bytes, int]] = None
        for key, state in self._states.items():
            n = common_prefix(key, tokens)
            if n >= self.min_tokens and n > beat and (best is None or n > best[2]):
                best = (key, state, n)
        if best is not None:
            self._states.move_to_end(best[0])
            self.hits += 1
        return best
