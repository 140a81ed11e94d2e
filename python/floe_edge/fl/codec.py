"""Between per-projection LoRA factors ({GGUF tensor name: (A (r, n_in), B (n_out, r))}, the LoRA scale folded into
B, as `delta_factors` gives them) and flat arrays keyed "<name>/A" and "<name>/B": what travels in a Flower
ArrayRecord. The plain-dict half needs no Flower; `to_record` / `from_record` import it lazily."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .aggregate import Factors

__all__ = ["CodecError", "arrays_to_factors", "factors_to_arrays", "from_record", "to_record"]

_HALVES = ("A", "B")


class CodecError(ValueError):
    """Arrays that are not a set of complete (A, B) pairs: the message names the key."""


def factors_to_arrays(factors: Mapping[str, Factors]) -> dict[str, np.ndarray]:
    """{"<name>/A": A, "<name>/B": B} as contiguous float32 (the wire type: half the bytes of float64)."""
    out: dict[str, np.ndarray] = {}
    for name, (a, b) in factors.items():
        if "/" in name:
            raise CodecError(f"{name!r}: a projection name cannot hold '/'")
        out[f"{name}/A"] = np.ascontiguousarray(a, np.float32)
        out[f"{name}/B"] = np.ascontiguousarray(b, np.float32)
    return out


def arrays_to_factors(arrays: Mapping[str, np.ndarray]) -> dict[str, Factors]:
    """The inverse of factors_to_arrays; CodecError for a key without its other half, an unknown suffix, or arrays
    that are not 2-D. Values and shapes are checked later, by `screen` (a bad client must not stop the round)."""
    halves: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        name, _, half = key.rpartition("/")
        if not name or half not in _HALVES:
            raise CodecError(f"array {key!r}: expected '<projection>/A' or '<projection>/B'")
        array = np.asarray(value)
        if array.ndim != 2:
            raise CodecError(f"array {key!r}: shape {array.shape}, expected 2-D")
        halves.setdefault(name, {})[half] = array
    out: dict[str, Factors] = {}
    for name, pair in halves.items():
        missing = [h for h in _HALVES if h not in pair]
        if missing:
            raise CodecError(f"projection {name!r}: no {missing[0]} factor")
        out[name] = (pair["A"], pair["B"])
    return out


def to_record(factors: Mapping[str, Factors]) -> Any:
    """A Flower ArrayRecord holding the factors."""
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({key: Array(value) for key, value in factors_to_arrays(factors).items()})


def from_record(record: Any) -> dict[str, Factors]:
    """The factors in a Flower ArrayRecord (CodecError as arrays_to_factors)."""
    return arrays_to_factors({key: array.numpy() for key, array in record.items()})
