"""What the learned gate looks at, per token: both sides' confidence, how they relate, and the position.

``gate_features`` returns ``len(FEATURES)`` float64 values, in this order:

    edge_p1                 the edge's top-1 probability
    edge_entropy            the edge's entropy / log V (0: certain, 1: flat)
    edge_margin             the edge's top-1 minus top-2 probability
    cloud_p1                the cloud's top-1 probability (its top-k completed with the tail, as fusion does)
    cloud_entropy           the cloud's entropy / log V, the tail included (every tail token has the tail value)
    cloud_margin            the cloud's top-1 minus its next probability (the tail value's when the top-k has one id)
    agree                   1 when both top-1s are the same token, else 0
    edge_lp_of_cloud_top1   the edge's log-prob of the cloud's top-1
    cloud_lp_of_edge_top1   the cloud's log-prob of the edge's top-1 (the tail value when it is not in the top-k)
    log1p_position          log(1 + tokens fused before this one)

Log-probs are kept at or above ``LOGPROB_FLOOR`` (a token the other side gives no probability is "very unlikely",
not an infinite feature). The cloud's top-k is completed to a distribution by the rule of `floe_edge.fusion`
(absent entries, <= -9999, dropped; the rest of the vocabulary shares ``max(1 - mass, tail_floor)``; renormalized).

Cost: with the edge's `EdgeStats` (one exp pass, which the fusion reuses) one more compare-only pass over the
vocabulary (its top-2); everything else is O(k). Without them, a few numpy passes (for offline training).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from .. import _native

if TYPE_CHECKING:  # floe_edge.fusion imports this module (Fuser with a learned gate)
    from ..fusion import EdgeStats

__all__ = ["FEATURES", "LOGPROB_FLOOR", "CloudTopK", "complete_topk", "gate_features"]

FEATURES: tuple[str, ...] = (
    "edge_p1", "edge_entropy", "edge_margin", "cloud_p1", "cloud_entropy", "cloud_margin", "agree",
    "edge_lp_of_cloud_top1", "cloud_lp_of_edge_top1", "log1p_position",
)
LOGPROB_FLOOR = -30.0
ABSENT_LOGPROB = -9999.0  # OpenAI's filler for a missing top-k entry (fusion.h: kAbsentLogprob)


class CloudTopK:
    """A cloud top-k completed to a distribution over ``n_vocab`` tokens: normalized log-probs of its present
    entries (id -> log-prob), and the log-prob each of the ``n_rest`` other tokens gets (``tail``; -inf when there
    is none). Plain Python: k <= 64, where numpy's per-call cost would dominate."""

    def __init__(self, logprobs: dict[int, float], tail: float, n_rest: int) -> None:
        self.logprobs, self.tail, self.n_rest = logprobs, tail, n_rest

    def logprob(self, token: int) -> float:
        return self.logprobs.get(token, self.tail)

    @property
    def top1(self) -> int:
        """The most likely id (ties: the lower id, as the native fusion reports it)."""
        best = max(self.logprobs.values())
        return min(i for i, v in self.logprobs.items() if v == best)


def complete_topk(ids: npt.ArrayLike, logprobs: npt.ArrayLike, n_vocab: int, tail_floor: float = 1e-4
                  ) -> Optional[CloudTopK]:
    """The cloud's top-k as a distribution (module doc), or None when no entry has a non-zero probability.
    ValueError: ids outside the vocabulary or repeated, lengths that differ, +inf, more than 64 entries."""
    id_list = [int(i) for i in np.asarray(ids).ravel().tolist()]
    lp_list = [float(v) for v in np.asarray(logprobs, dtype=np.float64).ravel().tolist()]
    if len(id_list) != len(lp_list):
        raise ValueError(f"cloud_ids has {len(id_list)} entries, cloud_logprobs {len(lp_list)}")
    if len(id_list) > 64:
        raise ValueError("cloud top-k has more than 64 entries")
    if id_list and (min(id_list) < 0 or max(id_list) >= n_vocab):
        raise ValueError(f"cloud ids must be in 0..{n_vocab - 1}")
    if len(set(id_list)) != len(id_list):
        raise ValueError("cloud ids repeated")
    if math.inf in lp_list:
        raise ValueError("cloud log-probs contain +inf")
    present = {i: (-math.inf if math.isnan(v) else v) for i, v in zip(id_list, lp_list)
               if not (ABSENT_LOGPROB >= v > -math.inf)}
    if not any(v > -math.inf for v in present.values()):
        return None
    mass = sum(math.exp(v) for v in present.values())
    n_rest = n_vocab - len(present)
    rest = max(1.0 - mass, tail_floor) if n_rest > 0 else 0.0
    log_z = math.log(mass + rest)
    tail = math.log(rest / n_rest) - log_z if n_rest > 0 else -math.inf
    return CloudTopK({i: v - log_z for i, v in present.items()}, tail, n_rest)


def _edge_side(edge_logits: npt.NDArray[np.float32], stats: Optional[EdgeStats]) -> tuple[int, float, float, float,
                                                                                          float]:
    """(top1, p1, entropy in nats, p2, lse) of the edge's logits: from `stats` plus one top-2 pass, else numpy."""
    if stats is not None:
        _, vals = _native.topk(edge_logits, 2)
        p2 = math.exp(float(vals[1]) - stats.lse) if vals.size > 1 else 0.0
        return stats.top1, stats.max_prob, stats.entropy, p2, stats.lse
    x = np.asarray(edge_logits, dtype=np.float64)
    x = np.where(np.isnan(x), -np.inf, x)
    if x.ndim != 1 or x.size == 0 or not np.any(np.isfinite(x)) or np.any(x == np.inf):
        raise ValueError("edge_logits must be 1-D with a finite value and no +inf")
    m = float(x.max())
    e = np.exp(x - m)
    s = float(e.sum())
    lse = m + math.log(s)
    lp = x - lse
    p = e / s
    entropy = float(-(p[p > 0] * lp[p > 0]).sum())
    top2 = np.sort(x)[-2:] if x.size > 1 else np.array([-np.inf, m])
    return int(np.argmax(x)), math.exp(m - lse), entropy, math.exp(float(top2[0]) - lse), lse


def gate_features(edge_logits: npt.NDArray[np.float32], cloud_ids: Union[Sequence[int], npt.NDArray[np.int32]],
                  cloud_logprobs: Union[Sequence[float], npt.NDArray[np.float32]], position: int, *,
                  edge_stats: Optional[EdgeStats] = None, tail_floor: float = 1e-4) -> npt.NDArray[np.float64]:
    """The gate's features (`FEATURES`, module doc) at one position. ``edge_stats``: the Fuser's `edge_stats` of
    these logits (they must be float32 and C-contiguous then); ``position``: tokens fused before this one (>= 0).
    ValueError when the cloud gives no token a non-zero probability (there is nothing to gate)."""
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or position < 0:
        raise ValueError(f"position must be an int >= 0, got {position!r}")
    n_vocab = int(np.asarray(edge_logits).shape[0])
    cloud = complete_topk(cloud_ids, cloud_logprobs, n_vocab, tail_floor)
    if cloud is None:
        raise ValueError("no cloud evidence: every top-k entry is absent or has probability 0")
    e1, ep1, e_h, ep2, lse = _edge_side(edge_logits, edge_stats)
    log_v = math.log(n_vocab) if n_vocab > 1 else 1.0
    c1 = cloud.top1
    c_lp = sorted(cloud.logprobs.values(), reverse=True)
    cp1 = math.exp(c_lp[0])
    next_lp = max(c_lp[1] if len(c_lp) > 1 else -math.inf, cloud.tail)
    c_h = -sum(math.exp(v) * v for v in c_lp if v > -math.inf)
    if cloud.n_rest > 0 and cloud.tail > -math.inf:
        c_h -= cloud.n_rest * math.exp(cloud.tail) * cloud.tail
    x_c1 = float(edge_logits[c1])
    edge_lp_c1 = x_c1 - lse if math.isfinite(x_c1) else -math.inf
    return np.array([
        ep1, e_h / log_v, ep1 - ep2, cp1, c_h / log_v, cp1 - math.exp(next_lp), float(e1 == c1),
        max(edge_lp_c1, LOGPROB_FLOOR), max(cloud.logprob(e1), LOGPROB_FLOOR), math.log1p(int(position)),
    ], dtype=np.float64)
