"""Between whole LoRA adapters (floe_edge.adapters.LoraAdapter: per projection (A, B) and alpha, ΔW = (alpha/r)·B·A)
and the per-projection aggregation of aggregate.py.

A client that adapts fewer projections than the others counts as ΔW = 0 for the ones it lacks (it left them as the
base has them), with its full weight in the mean; every output adapter has the union of the clients' projections.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np

from ..adapters.lora_file import AdapterError, LoraAdapter
from .aggregate import AggregationError, Factors, aggregate

__all__ = ["adapter_from_factors", "aggregate_adapters", "delta_factors"]


def delta_factors(adapter: LoraAdapter) -> dict[str, Factors]:
    """For each projection of `adapter`, (A, s·B) as float64 with s = alpha / r: B@A of the pair is its ΔW."""
    return {name: _delta(adapter, name) for name in adapter.pairs}


def adapter_from_factors(architecture: str, factors: Mapping[str, Factors], rank: int, alpha: float) -> LoraAdapter:
    """A float32 LoraAdapter of `rank` and `alpha` whose ΔW per projection is B@A of `factors` (it stores B / s,
    s = alpha / rank, so that llama.cpp's scale gives the factors back)."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise AggregationError(f"rank {rank!r}: must be a positive integer")
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha == 0:
        raise AggregationError(f"alpha {alpha!r}: must be finite and not zero")
    scale = alpha / int(rank)
    pairs = {}
    for name, (a, b) in factors.items():
        a, b = np.asarray(a), np.asarray(b)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != rank or b.shape[1] != rank:
            raise AggregationError(f"{name}: factors A {a.shape}, B {b.shape} are not of rank {rank}")
        pairs[name] = (np.asarray(a, np.float32), (np.asarray(b, np.float64) / scale).astype(np.float32))
    adapter = LoraAdapter(architecture, float(alpha), pairs)
    try:
        adapter.validate("aggregated adapter")
    except AdapterError as e:
        raise AggregationError(str(e)) from None
    return adapter


def aggregate_adapters(adapters: Sequence[LoraAdapter], weights: Sequence[float], out_ranks: Sequence[int],
                       method: str = "svd", alphas: Optional[Sequence[float]] = None,
                       trim: float = 0.2) -> list[LoraAdapter]:
    """One aggregated LoraAdapter per rank in `out_ranks` (same order), projection by projection (one projection's
    updates in memory at a time). `alphas`: the alpha of each output (the receiving profile's); default 2 × rank,
    the profiles' rule. Raises AggregationError naming the client or the projection."""
    if not adapters:
        raise AggregationError("no adapters to aggregate")
    if len(weights) != len(adapters):
        raise AggregationError(f"{len(adapters)} adapters but {len(weights)} weights")
    alphas = [2.0 * r for r in out_ranks] if alphas is None else list(alphas)
    if len(alphas) != len(out_ranks):
        raise AggregationError(f"{len(out_ranks)} out ranks but {len(alphas)} alphas")
    architecture = adapters[0].architecture
    for i, adapter in enumerate(adapters):
        try:
            adapter.validate(f"client {i}")
        except AdapterError as e:
            raise AggregationError(str(e)) from None
        if adapter.architecture != architecture:
            raise AggregationError(f"client {i}: architecture {adapter.architecture!r}, client 0 has {architecture!r}")
    names = list(dict.fromkeys(name for adapter in adapters for name in adapter.pairs))  # the union, first-seen order
    outputs: list[dict[str, Factors]] = [{} for _ in out_ranks]
    for name in names:
        a_ref, b_ref = next(adapter.pairs[name] for adapter in adapters if name in adapter.pairs)
        updates = [_delta(adapter, name) if name in adapter.pairs else
                   (np.zeros((adapter.rank, a_ref.shape[1])), np.zeros((b_ref.shape[0], adapter.rank)))
                   for adapter in adapters]
        try:
            merged = aggregate(updates, weights, out_ranks, method, trim)
        except AggregationError as e:
            raise AggregationError(f"{name}: {e}") from None
        for output, pair in zip(outputs, merged):
            output[name] = pair
    return [adapter_from_factors(architecture, output, rank, alpha)
            for output, rank, alpha in zip(outputs, out_ranks, alphas)]


def _delta(adapter: LoraAdapter, name: str) -> Factors:
    a, b = adapter.pairs[name]
    return np.asarray(a, np.float64), np.asarray(b, np.float64) * adapter.scale
