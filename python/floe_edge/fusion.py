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

Learned gate (``weights=`` a :class:`floe_edge.gate.LearnedGate`, or the preset ``"gate"`` / ``"gate:<app>"``: the
file ``$FLOE_HOME/gates/<app>.json``): per token with cloud evidence, the gate's features (both sides' confidence,
agreement, position) give ``p = P(the cloud is right)`` and the token is fused with the weights ``(1 - p, p)``
(log-linear or linear, as configured); the gate's ``skip_threshold`` is the gate above (None: never gated). The
position is the number of tokens this Fuser fused since :meth:`Fuser.reset`, unless ``fuse(position=...)`` says.
Per-call weights: ``fuse(weights=(w_e, w_c))`` uses them instead of the static or adaptive ones for that call; the
gate threshold still applies (a confident edge is gated either way).

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
from typing import TYPE_CHECKING, Literal, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from . import _native
from .sampling import recent_tokens

if TYPE_CHECKING:
    from .gate import LearnedGate

__all__ = [
    "PRESETS",
    "EdgeStats",
    "FusedSampler",
    "FusedStep",
    "FusedToken",
    "Fuser",
    "FusionWeights",
    "Weights",
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


Weights = Union[tuple[float, float], str, FusionWeights, "LearnedGate"]


def _resolve_weights(weights: Weights) -> tuple[FusionWeights, Optional[LearnedGate]]:
    """The static settings, and the learned gate when `weights` is one (or names one: "gate", "gate:<app>")."""
    from . import gate

    if isinstance(weights, FusionWeights):
        return weights, None
    if isinstance(weights, str) and gate.is_gate_preset(weights):
        weights = gate.load_preset(weights)
    if isinstance(weights, gate.LearnedGate):
        t = weights.skip_threshold
        return FusionWeights(0.5, 0.5, gate=1.1 if t is None else t), weights
    if isinstance(weights, str):
        if weights not in PRESETS:
            raise ValueError(f"unknown weights preset {weights!r} (expected one of {', '.join(PRESETS)}, "
                             f"or gate / gate:<app> for a learned gate)")
        return PRESETS[weights], None
    if isinstance(weights, tuple) and len(weights) == 2:
        return FusionWeights(float(weights[0]), float(weights[1])), None
    raise TypeError("weights must be (w_edge, w_cloud), a preset name, a FusionWeights or a LearnedGate")


class Fuser:
    """Fuses one token position at a time for a vocabulary of ``n_vocab`` tokens (scratch reused across calls)."""

    def __init__(
        self,
        n_vocab: int,
        mode: Mode = "loglinear",
        weights: Weights = (0.5, 0.5),
        top_k: int = 20,
        tail_floor: float = 1e-4,
        normalize: bool = True,
        variant: Optional[str] = None,
    ) -> None:
        self.weights, self.gate = _resolve_weights(weights)  # gate: the LearnedGate, or None
        self.position = 0  # tokens fused since reset(): the learned gate's default position
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
        *,
        weights: Optional[tuple[float, float]] = None,
        position: Optional[int] = None,
    ) -> FusedStep:
        """Fuse the edge logits with the cloud's top-k (ids + log-probs), its dense log-probs, or nothing.
        ``edge_stats``: `edge_stats()` of these logits, when the caller has it: the fusion then makes no exp pass
        over the edge logits of its own (the result is the same). ``weights``: (w_edge, w_cloud) for this call
        only, instead of the static, adaptive or learned ones (module doc). ``position``: the learned gate's
        position feature (default: tokens fused since `reset`)."""
        if position is not None and (isinstance(position, bool) or not isinstance(position, (int, np.integer))
                                     or position < 0):
            raise ValueError(f"position must be an int >= 0, got {position!r}")
        pos = self.position if position is None else int(position)
        self.position += 1
        if self.gate is not None and weights is None:
            edge_stats, weights = self._gate_weights(edge_logits, cloud_ids, cloud_logprobs, cloud_dense,
                                                     edge_stats, pos)
        s = edge_stats
        known = None if s is None else (s.top1, s.max_prob, s.entropy, s.needs_cloud, s.max_logit, s.lse)
        ids, lps, we, wc, gated, normalized, e1, c1, he, hc = self._impl.fuse(
            edge_logits, cloud_ids, cloud_logprobs, cloud_dense, known, weights)
        return FusedStep(ids, lps, we, wc, gated, normalized, e1, None if c1 < 0 else c1,
                         None if he < 0 else he, None if hc < 0 else hc)

    def _gate_weights(self, edge_logits: npt.NDArray[np.float32], cloud_ids: Optional[npt.NDArray[np.int32]],
                      cloud_logprobs: Optional[npt.NDArray[np.float32]], cloud_dense: Optional[npt.NDArray[np.float32]],
                      stats: Optional[EdgeStats], position: int
                      ) -> tuple[Optional[EdgeStats], Optional[tuple[float, float]]]:
        """The learned gate's weights for this token (None: no cloud evidence, or the edge is gated anyway), and
        the edge's statistics, computed here once and passed on to the native fusion."""
        from .gate import gate_features

        assert self.gate is not None
        if cloud_dense is not None and cloud_ids is None:  # the gate reads a top-k: the dense log-probs' own
            cloud_ids, top = _native.topk(cloud_dense, MAX_K)
            cloud_logprobs = (top - np.float32(_native.logsumexp(cloud_dense))).astype(np.float32)
        if cloud_ids is None or cloud_logprobs is None or len(cloud_ids) == 0:
            return stats, None
        stats = stats if stats is not None else self.edge_stats(edge_logits)
        if not stats.needs_cloud:
            return stats, None
        try:
            features = gate_features(edge_logits, cloud_ids, cloud_logprobs, position, edge_stats=stats,
                                     tail_floor=self.tail_floor)
        except ValueError:  # no usable evidence (bad evidence: the native fusion below says what is wrong)
            return stats, None
        return stats, self.gate.weights(features)

    def reset(self) -> None:
        """Start a new sequence: the learned gate's position counts from 0 again."""
        self.position = 0

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
