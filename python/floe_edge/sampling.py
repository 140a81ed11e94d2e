"""Token sampling on a logit vector: greedy, temperature, top-k, top-p, min-p, repetition penalty, seedable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import numpy.typing as npt

from . import _native

__all__ = ["Sampler", "apply_repeat_penalty", "log_softmax", "recent_tokens"]


def log_softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    x = logits.astype(np.float64)
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def recent_tokens(history: Sequence[int], last_n: int) -> Optional[npt.NDArray[np.int32]]:
    """The last ``last_n`` tokens of history, the ones a repetition penalty applies to (None when there are none:
    an empty history or last_n 0)."""
    if last_n <= 0 or not len(history):
        return None
    return np.asarray(list(history)[-last_n:], dtype=np.int32)


def apply_repeat_penalty(scores: npt.NDArray[np.float64], recent: npt.NDArray[np.int32], penalty: float,
                         ids: Optional[npt.NDArray[np.int32]] = None) -> None:
    """llama.cpp's repetition penalty, in place, on the scores of the distinct tokens in ``recent``: a positive
    score is divided by ``penalty``, any other multiplied by it. ``scores[i]`` is token ``ids[i]``'s score, or token
    ``i``'s without ids. The native routine :class:`FusedSampler <floe_edge.fusion.FusedSampler>` applies too."""
    _native.apply_repeat_penalty(scores, recent, penalty, ids)


@dataclass
class Sampler:
    """Sampling settings; temperature 0 means greedy. The order of the filters follows llama.cpp's default chain:
    repetition penalty (:func:`apply_repeat_penalty` on the logits of the last ``repeat_last_n`` tokens of the
    history; 0: off), top-k, top-p, min-p, temperature."""

    temperature: float = 0.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: Optional[int] = None
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or not 0 <= self.min_p < 1 or self.top_k < 0:
            raise ValueError("need temperature >= 0, 0 < top_p <= 1, 0 <= min_p < 1, top_k >= 0")
        if self.repeat_penalty <= 0:
            raise ValueError("repeat_penalty must be positive")
        if self.repeat_last_n < 0:
            raise ValueError("repeat_last_n must be >= 0")
        self._rng = np.random.default_rng(self.seed)

    def __call__(self, logits: npt.NDArray[np.float32], history: Sequence[int] = ()) -> int:
        x = np.array(logits, dtype=np.float64, order="C")  # a copy
        recent = recent_tokens(history, self.repeat_last_n) if self.repeat_penalty != 1.0 else None
        if recent is not None:
            apply_repeat_penalty(x, recent, self.repeat_penalty)
        if self.temperature == 0.0:
            return int(np.argmax(x))
        order = np.argsort(-x, kind="stable")
        if self.top_k:
            order = order[: self.top_k]
        p = np.exp(x[order] - x[order[0]])
        p /= p.sum()
        if self.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(p), self.top_p) + 1)
            order, p = order[:keep], p[:keep]
        if self.min_p > 0.0:
            keep = p >= self.min_p * p[0]
            order, p = order[keep], p[keep]
        p = np.exp(np.log(p) / self.temperature)
        return int(order[self._rng.choice(len(order), p=p / p.sum())])
