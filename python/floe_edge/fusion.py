"""Token-level fusion of edge logits with cloud evidence, and sampling on the fused distribution (native, SIMD).

Per token the device has its own logits ``x`` (dense, V floats) and, when the cloud answered, either its dense
log-probs (V floats) or its top-k (ids + log-probs, k <= 64). The fused distribution is

* ``"loglinear"``: ``log p_f = w_e log p_e + w_c log p_c - log Z`` (a product of experts; agreement sharpens it)
* ``"linear"``: ``p_f = (w_e p_e + w_c p_c) / (w_e + w_c)`` (a mixture; never sharper than its parts)

with ``p_e = softmax(x)``. A sparse cloud top-k is completed to a distribution: the rest of the vocabulary shares the
remaining mass ``R = max(1 - sum(exp(lp)), tail_floor)`` equally (the "tail value" ``log(R / (V - k))``), and the
whole is renormalized when the top-k claims more than ``1 - tail_floor``.

Weights are static (``(w_e, w_c)`` or a named preset) or adaptive per token: with normalized entropies
``h = H / log V`` each side's confidence is ``1 - h``; ``w ~ prior * confidence ** q`` with ``q = 1`` when the edge's
and cloud's top-1 agree and ``q = disagree_power`` (2) when they differ, which moves weight to the more confident
side; normalized to sum 1 and kept in ``[min_weight, 1 - min_weight]`` (both sides flat, ``r_e + r_c < 1e-6``:
the priors). Gating (U-HLM's uncertainty-gated upload;
SAFE reports that fusing at every token hurts long outputs): when the edge's top probability reaches ``gate`` the
cloud is not used for that token (weights ``(1, 0)``); :meth:`Fuser.edge_stats` gives the same decision before any
upload, so the scheduler can skip the round trip.

Inputs: NaN logits / log-probs count as -inf (probability 0); finite cloud top-k log-probs at or below -9999
(OpenAI's filler for a missing entry, as in :mod:`floe_edge.vocab_map`) are absent: dropped, their tokens get the
tail value; ``+inf`` is a ValueError, and so are edge logits with
no finite value. Arrays are used in place: float32 (int32 for ids), 1-D, C-contiguous, the right length; anything
else raises TypeError (not an ndarray, wrong dtype) or ValueError (layout, length). The GIL is released in every
pass over the vocabulary.

Cost: the edge's normalizer cancels in log-linear fusion and the tokens outside the cloud's top-k share one tail
value, so the fused top-k comes from one compare-only pass over the edge logits. ``normalize=True`` adds one exp pass
for exact log-probs; ``normalize=False`` skips it (log-probs are then normalized over the fused top-k, which is all
greedy / top-k / top-p sampling looks at). Adaptive weights and the gate need the edge entropy: one more exp pass.
Sampling draws from the fused top-k (``top_k`` candidates, at most 64). Terms of an exp pass whose exponent is
below -86 (probability < 4e-38, under float's normal range) count as 0: no subnormal arithmetic; with a dense cloud
in linear mode this is what makes a token that unlikely drop out of the top-k.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from . import _native
from .sampling import recent_tokens

__all__ = [
    "PRESETS",
    "EdgeStats",
    "FusedSampler",
    "FusedStep",
    "FusedToken",
    "Fuser",
    "FusionWeights",
    "log_softmax",
    "logsumexp",
    "remap_topk",
    "topk",
]

Mode = Literal["loglinear", "linear"]
MAX_K = 64


@dataclass(frozen=True)
class FusionWeights:
    """Static weights (edge, cloud), or the priors of the adaptive rule when ``adaptive``; ``gate`` > 1 disables
    gating."""

    edge: float = 0.5
    cloud: float = 0.5
    adaptive: bool = False
    gate: float = 1.1
    disagree_power: float = 2.0
    min_weight: float = 0.05


# Per-application starting points (to be tuned by the accuracy evaluation, bench/fidelity.py & co.):
# assistant: open-domain answers, the cloud LLM knows more; the edge adds personal context.
# code: completion in the user's own code, where a LoRA-personalized edge is often right and most tokens agree.
# commands: on-device commands with personal names and devices only the edge knows; the cloud adds fluency.
PRESETS: dict[str, FusionWeights] = {
    "assistant": FusionWeights(edge=0.3, cloud=0.7, gate=0.9),
    "code": FusionWeights(edge=0.5, cloud=0.5, gate=0.8),
    "commands": FusionWeights(edge=0.75, cloud=0.25, gate=0.7),
    "adaptive": FusionWeights(edge=0.5, cloud=0.5, adaptive=True, gate=0.9),
}


@dataclass(frozen=True)
class FusedStep:
    """One fused token position: the fused top-k (log-probs descending, ties to the lower id) and diagnostics."""

    ids: npt.NDArray[np.int32]
    logprobs: npt.NDArray[np.float32]
    w_edge: float
    w_cloud: float
    gated: bool  # the edge was confident enough: the cloud's evidence was not used
    normalized: bool  # False: log-probs normalized over the top-k only (Fuser(normalize=False))
    edge_top1: int
    cloud_top1: Optional[int]  # None without cloud evidence
    edge_entropy: Optional[float]  # nats; None when this step did not need it
    cloud_entropy: Optional[float]

    @property
    def top1(self) -> int:
        return int(self.ids[0])


@dataclass(frozen=True)
class EdgeStats:
    """The edge's distribution at one position, computed once (one exp pass) and passed on to `Fuser.fuse`."""

    top1: int
    max_prob: float
    entropy: float  # nats
    needs_cloud: bool  # max_prob < gate
    max_logit: float
    lse: float  # log-sum-exp of the logits


@dataclass(frozen=True)
class FusedToken:
    token: int
    logprob: float  # the token's fused log-prob (before repetition penalty and temperature)
    step: FusedStep  # fused top-k, weights used, edge / cloud top-1


def _resolve_weights(weights: Union[tuple[float, float], str, FusionWeights]) -> FusionWeights:
    if isinstance(weights, FusionWeights):
        return weights
    if isinstance(weights, str):
        if weights not in PRESETS:
            raise ValueError(f"unknown weights preset {weights!r} (expected one of {', '.join(PRESETS)})")
        return PRESETS[weights]
    if isinstance(weights, tuple) and len(weights) == 2:
        return FusionWeights(float(weights[0]), float(weights[1]))
    raise TypeError("weights must be (w_edge, w_cloud), a preset name or a FusionWeights")


class Fuser:
    """Fuses one token position at a time for a vocabulary of ``n_vocab`` tokens (scratch reused across calls)."""

    def __init__(
        self,
        n_vocab: int,
        mode: Mode = "loglinear",
        weights: Union[tuple[float, float], str, FusionWeights] = (0.5, 0.5),
        top_k: int = 20,
        tail_floor: float = 1e-4,
        normalize: bool = True,
        variant: Optional[str] = None,
    ) -> None:
        self.weights = _resolve_weights(weights)
        self.mode = mode
        w = self.weights
        self._impl = _native.Fuser(
            n_vocab, mode, w.edge, w.cloud, w.adaptive, w.gate, w.disagree_power, w.min_weight, tail_floor, top_k,
            normalize, variant,
        )
        self.n_vocab, self.top_k, self.tail_floor, self.normalize = n_vocab, top_k, tail_floor, normalize

    @property
    def variant(self) -> str:
        return self._impl.variant

    def fuse(
        self,
        edge_logits: npt.NDArray[np.float32],
        cloud_ids: Optional[npt.NDArray[np.int32]] = None,
        cloud_logprobs: Optional[npt.NDArray[np.float32]] = None,
        cloud_dense: Optional[npt.NDArray[np.float32]] = None,
        edge_stats: Optional[EdgeStats] = None,
    ) -> FusedStep:
        """Fuse the edge logits with the cloud's top-k (ids + log-probs), its dense log-probs, or nothing.
        ``edge_stats``: `edge_stats()` of these logits, when the caller has it: the fusion then makes no exp pass
        over the edge logits of its own (the result is the same)."""
        s = edge_stats
        known = None if s is None else (s.top1, s.max_prob, s.entropy, s.needs_cloud, s.max_logit, s.lse)
        ids, lps, we, wc, gated, normalized, e1, c1, he, hc = self._impl.fuse(
            edge_logits, cloud_ids, cloud_logprobs, cloud_dense, known)
        return FusedStep(ids, lps, we, wc, gated, normalized, e1, None if c1 < 0 else c1,
                         None if he < 0 else he, None if hc < 0 else hc)

    def edge_stats(self, edge_logits: npt.NDArray[np.float32]) -> EdgeStats:
        """Edge confidence and the gate's decision, before asking the cloud (one exp pass)."""
        return EdgeStats(*self._impl.edge_stats(edge_logits))

    def sample(self, fused: FusedStep, sampler: FusedSampler, history: Sequence[int] = ()) -> FusedToken:
        """Draw the next token from the fused top-k (``history``: previous tokens, for the repetition penalty)."""
        return sampler.sample(fused, history)


@dataclass
class FusedSampler:
    """Sampling on a fused top-k, in llama.cpp's order: repetition penalty, top-k, top-p, min-p, temperature;
    temperature 0 is greedy. The repetition penalty applies to tokens among the last ``repeat_last_n`` of the
    history (0: off), by the rule of :func:`floe_edge.sampling.apply_repeat_penalty` (the same native routine): a
    log-prob s (<= 0) becomes ``s * penalty``. Random numbers come from xoshiro256** seeded through
    splitmix64, so a seed gives the same draws on every platform (seed None: a random seed)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: Optional[int] = None
    _impl: _native.FusionSampler = field(init=False, repr=False)

    def __post_init__(self) -> None:
        seed = self.seed if self.seed is not None else int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
        if not 0 <= seed < 2**64:
            raise ValueError("seed must be in 0..2**64-1")
        if self.repeat_last_n < 0:
            raise ValueError("repeat_last_n must be >= 0")
        self._impl = _native.FusionSampler(self.temperature, self.top_k, self.top_p, self.min_p,
                                             self.repeat_penalty, seed)

    def sample(self, fused: FusedStep, history: Sequence[int] = ()) -> FusedToken:
        recent = recent_tokens(history, self.repeat_last_n) if self.repeat_penalty != 1.0 else None
        token, logprob = self._impl.sample(fused.ids, fused.logprobs, recent)
        return FusedToken(token, logprob, fused)


def log_softmax(x: npt.NDArray[np.float32], variant: Optional[str] = None) -> npt.NDArray[np.float32]:
    """x - logsumexp(x) (NaN counts as -inf)."""
    return _native.log_softmax(x, variant)


def logsumexp(x: npt.NDArray[np.float32], variant: Optional[str] = None) -> float:
    return _native.logsumexp(x, variant)


def topk(x: npt.NDArray[np.float32], k: int, variant: Optional[str] = None
         ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """The k (1..128) largest values, descending, ties to the lower index; -inf and NaN are never selected."""
    return _native.topk(x, k, variant)


def remap_topk(ids: npt.NDArray[np.int32], logprobs: npt.NDArray[np.float32], mapping: npt.NDArray[np.int32]
               ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """Cloud top-k ids mapped into the edge vocabulary through ``mapping`` (cloud id -> edge id, -1: none), by the
    rule of :meth:`floe_edge.vocab_map.VocabMap.remap` (``mapping`` is its ``table``), natively: unmapped and absent
    (<= -9999, -inf) entries are dropped, entries landing on the same edge id merged by log-sum-exp; NaN, a
    log-prob above 1e-3 (up to it: rounding, counted as 0) or a top-k claiming a probability above 1.01 is a
    ValueError. The result is sorted as a FusedStep and can be passed to :meth:`Fuser.fuse` as it is."""
    return _native.remap_topk(ids, logprobs, mapping)
