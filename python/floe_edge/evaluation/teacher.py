"""Teacher-forced top-1 of every system at every completion token of a record (DESIGN.md section 9).

The edge's logits come from the native decoder on the edge's tokenization; the cloud's evidence at the same positions
comes over the cloud link, exactly as in generation (the edge's tokens are scored, a cloud in another vocabulary
maps its top-k to edge ids by bytes). Fused systems fuse the two at each position with their own weights; a position
without cloud evidence is the edge's. A position is right when the system's top-1 is the completion's token there.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import numpy.typing as npt

from ..cloud.link import Evidence
from ..fusion import Fuser

__all__ = ["StaticGrid", "GRID", "cloud_hits", "fused_hits"]

GRID = tuple(round(0.1 * i, 1) for i in range(11))  # static cloud weights tried (0: the edge alone, 1: the cloud)


def _edge_logits(rows: npt.NDArray[np.float32], j: int) -> npt.NDArray[np.float32]:
    return np.ascontiguousarray(rows[j], np.float32)


def cloud_hits(evidence: Sequence[Optional[Evidence]], targets: Sequence[int]) -> npt.NDArray[np.bool_]:
    """Whether the cloud's top-1 at each position is the target (no evidence: wrong)."""
    return np.array([ev is not None and len(ev.ids) > 0 and int(ev.ids[0]) == t
                     for ev, t in zip(evidence, targets)], dtype=bool)


def fused_hits(fuser: Fuser, rows: npt.NDArray[np.float32], evidence: Sequence[Optional[Evidence]],
               targets: Sequence[int], **fuse_args: Any) -> npt.NDArray[np.bool_]:
    """Top-1 of the fused distribution at each position == target. `rows[j]`: the edge logits predicting
    targets[j]; extra keyword arguments go to every `fuse` call."""
    out = np.zeros(len(targets), dtype=bool)
    for j, (ev, t) in enumerate(zip(evidence, targets)):
        e = _edge_logits(rows, j)
        if ev is None or not len(ev.ids):
            step = fuser.fuse(e, **fuse_args)
        else:
            step = fuser.fuse(e, ev.ids, ev.logprobs, **fuse_args)
        out[j] = step.top1 == t
    return out


class StaticGrid:
    """One log-linear Fuser per static cloud weight of GRID (scratch reused across records)."""

    def __init__(self, n_vocab: int, top_k: int = 8) -> None:
        self.fusers = {w: Fuser(n_vocab, weights=(1.0 - w, w), top_k=top_k) for w in GRID}

    def hits(self, rows: npt.NDArray[np.float32], evidence: Sequence[Optional[Evidence]],
             targets: Sequence[int]) -> dict[float, npt.NDArray[np.bool_]]:
        return {w: fused_hits(f, rows, evidence, targets) for w, f in self.fusers.items()}

