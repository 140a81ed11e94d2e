"""Federated LoRA on the server side: heterogeneous-rank aggregation in ΔW space (FlexLoRA's SVD truncation, HetLoRA's
zero-padding to compare, coordinate-wise median and trimmed mean against hostile clients), screening of bad updates,
norm clipping, and the same between whole LoraAdapters. Pure numpy."""

from .adapters import adapter_from_factors, aggregate_adapters, delta_factors
from .aggregate import METHODS, AggregationError, Factors, aggregate, clip_update, screen, update_norm

__all__ = ["METHODS", "AggregationError", "Factors", "adapter_from_factors", "aggregate", "aggregate_adapters",
           "clip_update", "delta_factors", "screen", "update_norm"]
