"""Personalization on the device: the federation's global adapter plus a personal adapter, both in the
AdapterStore, stacked at inference (`NativeSLM.set_adapters([(global, 1.0), (personal, 1.0)])`).

In the last round a device starts from the global adapter G (at its rank) and trains T. It stores G as app
"fl-global" and the residual P = T − G as app "fl-personal-<user>": per projection P = [B_T, −B_G] @ [A_T; A_G]
(rank 2r, exact, no dense matrix), so the stack G + P runs exactly as T. A later global G' can replace G while P,
what only this user's records taught, stays on the device.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import numpy as np

from ..adapters.store import AdapterStore
from .adapters import adapter_from_factors
from .aggregate import Factors

__all__ = ["residual_factors", "store_personal"]


def residual_factors(start: Mapping[str, Factors], trained: Mapping[str, Factors]) -> dict[str, Factors]:
    """T − G per projection of T, as factors of rank r_T + r_G (a projection G lacks is padded with zeros)."""
    out = {}
    for name, (a_t, b_t) in trained.items():
        a_t, b_t = np.asarray(a_t, np.float64), np.asarray(b_t, np.float64)
        if name in start:
            a_g, b_g = (np.asarray(x, np.float64) for x in start[name])
        else:
            a_g, b_g = np.zeros_like(a_t), np.zeros_like(b_t)
        out[name] = (np.concatenate([a_t, a_g]), np.concatenate([b_t, -b_g], axis=1))
    return out


def store_personal(store: AdapterStore, profile: str, user: str, base: Path, architecture: str,
                   start: Mapping[str, Factors], trained: Mapping[str, Factors], rank: int, alpha: float,
                   work: Path) -> tuple[Optional[int], int]:
    """Add and activate G ("fl-global", None when the device started fresh) and P ("fl-personal-<user>") for
    `profile`; returns their versions."""
    work.mkdir(parents=True, exist_ok=True)
    global_version = None
    if start:
        path = adapter_from_factors(architecture, start, rank, alpha).write(work / "global.gguf")
        global_version = store.add(path, profile, "fl-global", base=base)
        store.activate(profile, "fl-global", global_version)
    scale = alpha / rank  # the personal adapter keeps the profile's scale at twice the rank
    path = adapter_from_factors(architecture, residual_factors(start, trained), 2 * rank, scale * 2 * rank).write(
        work / "personal.gguf")
    personal_version = store.add(path, profile, f"fl-personal-{user}", base=base)
    store.activate(profile, f"fl-personal-{user}", personal_version)
    return global_version, personal_version
