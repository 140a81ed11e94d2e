"""The edge model as the hybrid generator sees it: the `EdgeModel` Protocol, and a throttle around any edge model.

`NativeSLM` implements the Protocol; other backends (llama.cpp, LiteRT) and test fakes implement it too, so the
generator never asks which one it has.
"""

from __future__ import annotations

import time
from typing import Callable, Literal, Optional, Protocol, Sequence, Union, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["EdgeModel", "TextStream", "ThrottledEdge", "reuse_prefix"]


@runtime_checkable
class TextStream(Protocol):
    """Token ids in, text out only as UTF-8 characters complete."""

    def feed(self, id: int) -> str: ...
    def flush(self) -> str: ...


@runtime_checkable
class EdgeModel(Protocol):
    """A decoder with a KV cache: eval() appends tokens and returns their logits; truncate()/reset() rewind.
    Optionally `cached_tokens` (the ids in the cache) lets a generation keep a shared prefix: `reuse_prefix`."""

    @property
    def n_vocab(self) -> int: ...
    @property
    def n_ctx(self) -> int: ...
    def tokenize(self, text: Union[str, bytes], add_bos: bool = True, special: bool = True) -> list[int]: ...
    def detokenize(self, ids: Sequence[int], special: bool = False) -> bytes: ...
    def is_eog(self, id: int) -> bool: ...
    def text_stream(self) -> TextStream: ...
    def eval(self, ids: Sequence[int], logits: Literal["all", "last"] = "all",
             timeout_s: Optional[float] = None) -> npt.NDArray[np.float32]: ...
    def truncate(self, n_past: int) -> None: ...
    def reset(self) -> None: ...


def reuse_prefix(edge: EdgeModel, ids: Sequence[int]) -> int:
    """Ready edge's KV cache for a sequence `ids` evaluated from position 0: keep the longest common prefix of the
    cached tokens and ids, at most len(ids) - 1 of them (the last id must be evaluated for its logits), or reset when
    the edge does not expose its cache (an optional `cached_tokens`, as `NativeSLM`). Returns the count kept: the
    caller evaluates ids[kept:]. The cache's own token list is read, so tokens another caller evaluated in between
    are seen; a cache made stale by an adapter swap is recomputed by the native side on the next eval (one swapped
    with keep_cache keeps the old adapters' keys and values, as asked)."""
    cached: Sequence[int] = getattr(edge, "cached_tokens", None) or []
    limit = min(len(cached), len(ids) - 1)
    keep = 0
    if limit > 0:
        differ = np.flatnonzero(np.asarray(cached[:limit], np.int64) != np.asarray(ids[:limit], np.int64))
        keep = int(differ[0]) if differ.size else limit
    if keep:
        edge.truncate(keep)
    else:
        edge.reset()
    return keep


def _sleep_until(t: float) -> None:
    while (left := t - time.perf_counter()) > 0:
        time.sleep(left)


class ThrottledEdge:
    """An edge model padded to a slower device's cost (the paper's regime: a Pi-class edge beside a fast cloud).

    decode_ms: one token; batch_ms_per_token: each further token of a batched eval (verification, prefill).
    `now` / `sleep_until` are the clock (the real one by default; the policy tests pass a virtual one)."""

    def __init__(self, edge: EdgeModel, decode_ms: float, batch_ms_per_token: float, *,
                 now: Callable[[], float] = time.perf_counter,
                 sleep_until: Callable[[float], None] = _sleep_until) -> None:
        if decode_ms < 0 or batch_ms_per_token < 0:
            raise ValueError("throttle times must be >= 0")
        self.inner, self.decode_ms, self.batch_ms_per_token = edge, decode_ms, batch_ms_per_token
        self._now, self._sleep_until = now, sleep_until

    @property
    def n_vocab(self) -> int:
        return self.inner.n_vocab

    @property
    def n_ctx(self) -> int:
        return self.inner.n_ctx

    @property
    def cached_tokens(self) -> list[int]:
        """The wrapped edge's cached token ids; AttributeError when it does not expose them (no prefix reuse)."""
        return list(getattr(self.inner, "cached_tokens"))

    def tokenize(self, text: Union[str, bytes], add_bos: bool = True, special: bool = True) -> list[int]:
        return self.inner.tokenize(text, add_bos, special)

    def detokenize(self, ids: Sequence[int], special: bool = False) -> bytes:
        return self.inner.detokenize(ids, special)

    def is_eog(self, id: int) -> bool:
        return self.inner.is_eog(id)

    def text_stream(self) -> TextStream:
        return self.inner.text_stream()

    def eval(self, ids: Sequence[int], logits: Literal["all", "last"] = "all",
             timeout_s: Optional[float] = None) -> npt.NDArray[np.float32]:
        started = self._now()
        out = self.inner.eval(ids, logits, timeout_s)
        self._sleep_until(started + (self.decode_ms + self.batch_ms_per_token * max(len(ids) - 1, 0)) / 1e3)
        return out

    def truncate(self, n_past: int) -> None:
        self.inner.truncate(n_past)

    def reset(self) -> None:
        self.inner.reset()
