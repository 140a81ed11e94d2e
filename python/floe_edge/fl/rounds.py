"""The server's round logic without Flower: the global adapter as ΔW factors at the federation's rank, what each
client is sent (its own projections, truncated to its rank), and one round's aggregation of the clients' adapters:
screen (refuse and log an update with NaN/inf, a rank mismatch or shapes that do not fit), clip each client's update
relative to the global adapter, aggregate projection by projection (`aggregate`: FlexLoRA SVD by default, or a
robust method), optionally with Gaussian noise for differential privacy.

A projection is averaged over the clients that train it: a client whose profile does not adapt the FFN says nothing
about the FFN (counting it as ΔW = 0, as `aggregate_adapters` does, would shrink the FFN part of the global adapter
by the share of such clients every round).

Clipping: client i's update is U_i = ΔW_i − ΔW_g over all its projections; with ‖U_i‖_F > C (the whole adapter's
Frobenius norm) it is scaled to C. In factors, ΔW_g + c·U_i = [c·B_i, (1−c)·B_g] @ [A_i; A_g], so no dense matrix.

Differential privacy (dp_noise σ > 0, needs clip_norm C > 0): uniform weights, the mean clipped update of each
projection plus N(0, (σ·C/n_min)²) per coordinate, n_min the fewest clients sharing a projection (the ℓ2
sensitivity of the whole release to one client is at most C/n_min), then the rank-R truncation (post-processing,
costs no privacy). The noise is added to the dense ΔW: noise on the A, B factors would not be a Gaussian mechanism
on the update, and the SVD re-factorization is not linear in the factors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from ..adapters.peft_import import PEFT_MODULES
from ..train.config import PEFT_TARGETS
from .aggregate import METHODS, AggregationError, Factors, aggregate, screen, update_norm

__all__ = ["FederatedCore", "Reply", "RoundOutcome", "projection_names", "truncate"]

Metric = Union[int, float, str]


@dataclass
class Reply:
    """One client's answer to a training round."""

    client: str  # for logs: the user, or the node id
    factors: dict[str, Factors]  # its trained adapter as ΔW factors (LoRA scale folded into B)
    weight: float  # its training examples
    metrics: dict[str, Metric] = field(default_factory=dict)


@dataclass
class RoundOutcome:
    round: int
    used: list[str]
    refused: list[tuple[str, str]]  # (client, why)
    norms: dict[str, float]  # ‖ΔW_i − ΔW_g‖_F per used client, before clipping
    clipped: list[str]
    noise_std: float  # per ΔW coordinate; 0 without DP
    changed: bool  # False: nothing usable came back, the global adapter stays as it was


def projection_names(targets: Iterable[str], n_layers: int) -> list[str]:
    """GGUF tensor names of `targets` (profile names: q, k, v, o, gate, up, down) in every layer."""
    gguf = {short: PEFT_MODULES[PEFT_TARGETS[short]] for short in PEFT_TARGETS}
    return [f"blk.{i}.{gguf[t]}.weight" for i in range(n_layers) for t in targets]


def _target_of(name: str) -> str:
    gguf_to_short = {PEFT_MODULES[peft]: short for short, peft in PEFT_TARGETS.items()}
    parts = name.split(".")
    return gguf_to_short.get(parts[2], "") if len(parts) == 4 else ""


def truncate(factors: Mapping[str, Factors], rank: int, targets: Optional[Iterable[str]] = None) -> dict[str, Factors]:
    """The factors of the projections in `targets` (all when None), each at its best rank-`rank` approximation."""
    wanted = None if targets is None else set(targets)
    return {name: aggregate([pair], [1.0], [rank])[0] for name, pair in factors.items()
            if wanted is None or _target_of(name) in wanted}


class FederatedCore:
    """The global adapter and the per-round aggregation (see the module docstring)."""

    def __init__(self, global_rank: int = 16, method: str = "svd", clip_norm: float = 0.0, dp_noise: float = 0.0,
                 trim: float = 0.2, seed: int = 0, global_factors: Optional[dict[str, Factors]] = None) -> None:
        if method not in METHODS:
            raise AggregationError(f"unknown aggregation method {method!r}; one of {', '.join(METHODS)}")
        if not (isinstance(global_rank, int) and global_rank >= 1):
            raise AggregationError(f"global rank {global_rank!r}: must be a positive integer")
        if not (clip_norm >= 0 and dp_noise >= 0 and math.isfinite(clip_norm) and math.isfinite(dp_noise)):
            raise AggregationError("clip_norm and dp_noise must be finite and not negative")
        if dp_noise > 0 and clip_norm <= 0:
            raise AggregationError("differential privacy (dp_noise > 0) needs a clipping bound (clip_norm > 0)")
        self.global_rank, self.method, self.clip_norm, self.dp_noise, self.trim = (
            global_rank, method, float(clip_norm), float(dp_noise), trim)
        self.rng = np.random.default_rng(seed)
        self.global_factors: dict[str, Factors] = dict(global_factors or {})

    def for_client(self, rank: int, targets: Optional[Iterable[str]] = None) -> dict[str, Factors]:
        """What a client of this rank and these targets starts from: {} before the first aggregation."""
        return truncate(self.global_factors, rank, targets)

    def screen_replies(self, replies: Sequence[Reply]) -> tuple[list[int], list[tuple[int, str]]]:
        """Indices of usable replies and (index, why) for the others: each pair must pass `screen` and have the ΔW
        shape of the global adapter's projection (or of most clients', for a projection the global lacks)."""
        bad: dict[int, str] = {}
        for i, reply in enumerate(replies):
            if not reply.factors:
                bad[i] = "no adapter factors in the reply"
        names = list(dict.fromkeys(n for r in replies for n in r.factors))
        for name in names:
            holders = [i for i, r in enumerate(replies) if name in r.factors and i not in bad]
            for i in holders:
                _, refused = screen([replies[i].factors[name]], [replies[i].weight])
                if refused:
                    bad[i] = f"{name}: {refused[0][1]}"
            holders = [i for i in holders if i not in bad]
            shapes = {i: (replies[i].factors[name][1].shape[0], replies[i].factors[name][0].shape[1])
                      for i in holders}
            if name in self.global_factors:
                ga, gb = self.global_factors[name]
                expected = (gb.shape[0], ga.shape[1])
            elif shapes:
                values = list(shapes.values())
                expected = max(values, key=values.count)  # ties: the first seen
            else:
                continue
            for i, shape in shapes.items():
                if shape != expected:
                    bad[i] = f"{name}: ΔW shape {shape} does not fit the federation's {expected}"
        return [i for i in range(len(replies)) if i not in bad], sorted(bad.items())

    def aggregate_round(self, server_round: int, replies: Sequence[Reply]) -> RoundOutcome:
        """Screen, clip and aggregate `replies` into a new global adapter (kept when none is usable)."""
        kept, refused = self.screen_replies(replies)
        outcome = RoundOutcome(server_round, [replies[i].client for i in kept],
                               [(replies[i].client, why) for i, why in refused], {}, [], 0.0, False)
        if not kept:
            return outcome
        clipped: list[dict[str, Factors]] = []
        for i in kept:
            factors, norm, was_clipped = self._clip(replies[i].factors)
            clipped.append(factors)
            outcome.norms[replies[i].client] = norm
            if was_clipped:
                outcome.clipped.append(replies[i].client)
        weights = [1.0] * len(kept) if self.dp_noise > 0 else [float(replies[i].weight) for i in kept]
        names = list(dict.fromkeys(n for f in clipped for n in f))
        n_min = min(sum(name in f for f in clipped) for name in names)
        outcome.noise_std = self.dp_noise * self.clip_norm / n_min if self.dp_noise > 0 else 0.0
        new_global = dict(self.global_factors)
        for name in names:
            pairs = [(f[name], w) for f, w in zip(clipped, weights) if name in f]
            if outcome.noise_std > 0:
                new_global[name] = self._noisy([p for p, _ in pairs], outcome.noise_std)
            else:
                new_global[name] = aggregate([p for p, _ in pairs], [w for _, w in pairs], [self.global_rank],
                                             self.method, self.trim)[0]
        self.global_factors = new_global
        outcome.changed = True
        return outcome

    def _clip(self, factors: Mapping[str, Factors]) -> tuple[dict[str, Factors], float, bool]:
        """The client's factors with its update ΔW_i − ΔW_g scaled to norm ≤ clip_norm; the norm before."""
        diffs = {}
        for name, (a, b) in factors.items():
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            g = self.global_factors.get(name)
            diffs[name] = (a, b) if g is None else (np.concatenate([a, g[0]]), np.concatenate([b, -g[1]], axis=1))
        norm = math.sqrt(sum(update_norm(a, b) ** 2 for a, b in diffs.values()))
        if self.clip_norm <= 0 or norm <= self.clip_norm:
            return {name: (np.asarray(a, np.float64), np.asarray(b, np.float64)) for name, (a, b) in factors.items()}, \
                norm, False
        c = self.clip_norm / norm
        out = {}
        for name, (a, b) in factors.items():
            g = self.global_factors.get(name)
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            out[name] = (a, c * b) if g is None else (np.concatenate([a, g[0]]),
                                                      np.concatenate([c * b, (1 - c) * g[1]], axis=1))
        return out, norm, True

    def _noisy(self, pairs: Sequence[Factors], std: float) -> Factors:
        """Rank-R truncation of ΔW_g + mean(ΔW'_i − ΔW_g) + Gaussian noise, densely (see the module docstring)."""
        mean: np.ndarray = np.mean([b @ a for a, b in pairs], axis=0)
        mean = mean + self.rng.normal(0.0, std, size=mean.shape)  # the global part cancels: mean of ΔW'_i + noise
        u, s, vt = np.linalg.svd(mean, full_matrices=False)  # its best rank-R factors, then `aggregate` for the
        k = min(self.global_rank, len(s))  # dead-slot handling (exact: the pair already has rank ≤ R)
        root = np.sqrt(s[:k])
        return aggregate([(root[:, None] * vt[:k], u[:, :k] * root)], [1.0], [self.global_rank])[0]
