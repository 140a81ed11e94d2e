"""Heterogeneous-rank LoRA aggregation in ΔW space, one projection at a time: the math the federated server calls
for each layer and projection (pure numpy).

Client i sends, for one base weight W (n_out, n_in), a factor pair (A_i (r_i, n_in), B_i (n_out, r_i)) with the LoRA
scale already applied, so its update is ΔW_i = B_i @ A_i; ranks differ between clients (each profile has its own).
Averaging A and B separately is inexact (mean of products ≠ product of means), hence ΔW space.

Methods, each returning for every requested rank r a pair (A (r, n_in), B (n_out, r)), float32:
- "svd" (FlexLoRA, default): the weighted mean ΔW = Σ w_i ΔW_i / Σ w_i, truncated to its best rank-r approximation
  (Eckart-Young) with the singular values split evenly, B = U_r √S_r and A = √S_r V_rᵀ. ΔW = Bcat·diag(w)·Acat
  with Bcat = [B_1 … B_k] (n_out, R), Acat = [A_1; …; A_k] (R, n_in), R = Σ r_i, so with thin QRs Bcat = Q_b R_b and
  Acatᵀ = Q_a R_a, ΔW = Q_b (R_b diag(w) R_aᵀ) Q_aᵀ and the SVD of the small core gives ΔW's SVD exactly.
  Cost per projection: about 2(n_out + n_in)R² flops for the QRs plus O(R³) for the core and (n_out + n_in)·R·r to
  form the factors, memory O((n_out + n_in)·R), never the dense n_out × n_in matrix. For 1536 × 576 and ranks
  4/8/16 (R = 28) that is about 5 Mflop, against several Gflop for an SVD of the dense ΔW. The saving shrinks as
  R grows: once R nears min(n_out, n_in) (many clients) the core is as big as ΔW, still exact, no longer cheaper.
- "zeropad" (HetLoRA): every A padded to r_max rows and B to r_max columns with zeros, A and B averaged separately
  (weighted), each output the first r rows / columns. Inexact: kept to compare.
- "median", "trimmed_mean" (Byzantine-tolerant): the coordinate-wise median / trimmed mean of the dense ΔW_i, then
  the SVD truncation above. These ignore the weights (after checking them): a weight is the client's own claim (its
  example count), which a hostile client would inflate. The trimmed mean drops floor(trim·n) values per side and per
  coordinate, at least one when n ≥ 3 (trim = 0: the plain mean). Dense ΔW_i are formed in blocks of rows, so memory
  is n_clients × 256 × n_in floats plus the n_out × n_in result; the dense SVD costs O(n_out·n_in·min(n_out, n_in)).

Rank slots that the aggregate cannot fill (r above ΔW's numerical rank: few or rank-deficient updates, or r > r_max
with zero-padding) get a zero B column and an A row along a direction orthogonal to the other A rows, of norm 1/√3
like a fresh PEFT A row (kaiming-uniform, a = √5): B@A is unchanged, and local training can still use the slot (with
both A row and B column zero its gradients would stay zero forever).

Validation: `screen` checks each update (shapes that fit each other and the other clients', finite values, a
positive finite weight) and returns which to keep and why the others were refused, so a round goes on without a bad
update; `aggregate` raises AggregationError naming the client when given a bad one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from numbers import Real
from typing import Any, Optional

import numpy as np

__all__ = ["AggregationError", "Factors", "METHODS", "aggregate", "clip_update", "screen", "update_norm"]

Factors = tuple[np.ndarray, np.ndarray]  # (A (r, n_in), B (n_out, r)), LoRA scale folded into B
METHODS = ("svd", "zeropad", "median", "trimmed_mean")
_ROW_BLOCK = 256  # rows of the dense ΔW_i formed at once by the robust methods
_FRESH_ROW_NORM = 1 / math.sqrt(3)  # the row norm of a PEFT-initialized A (kaiming-uniform, a = √5), any n_in
_F64 = np.float64


class AggregationError(ValueError):
    """Updates, weights or a request that cannot be aggregated: the message names the client (by index) and why."""


def screen(factors: Sequence[Factors], weights: Sequence[float]) -> tuple[list[int], list[tuple[int, str]]]:
    """The indices of the updates fit to aggregate, and (index, reason) for each refused one: a pair whose shapes do
    not fit each other, holds NaN/inf or has a weight that is not positive and finite, or whose ΔW shape
    (n_out, n_in) differs from the one most clients share (on a tie, the first such client's)."""
    if len(factors) != len(weights):
        raise AggregationError(f"{len(factors)} updates but {len(weights)} weights")
    refused: list[tuple[int, str]] = []
    shapes: dict[int, tuple[int, int]] = {}
    for i, (update, weight) in enumerate(zip(factors, weights)):
        reason = _weight_problem(weight) or _update_problem(update)
        if reason:
            refused.append((i, reason))
        else:
            shapes[i] = (int(update[1].shape[0]), int(update[0].shape[1]))
    if shapes:
        common = Counter(shapes.values()).most_common(1)[0][0]  # ties: the first seen
        for i, shape in shapes.items():
            if shape != common:
                refused.append((i, f"ΔW shape (n_out, n_in) = {shape} differs from the other clients' {common}"))
    refused.sort()
    bad = {i for i, _ in refused}
    return [i for i in range(len(factors)) if i not in bad], refused


def aggregate(factors: Sequence[Factors], weights: Sequence[float], out_ranks: Sequence[int], method: str = "svd",
              trim: float = 0.2) -> list[Factors]:
    """One projection's aggregate for each rank in `out_ranks`: a list of (A (r, n_in), B (n_out, r)) float32 pairs
    in the order of `out_ranks` (see the module docstring for the methods). `trim`: the fraction trimmed per side by
    "trimmed_mean". Raises AggregationError for a bad update, weight, rank, method or trim."""
    if method not in METHODS:
        raise AggregationError(f"unknown aggregation method {method!r}; one of {', '.join(METHODS)}")
    if not factors:
        raise AggregationError("no updates to aggregate")
    _, refused = screen(factors, weights)
    if refused:
        raise AggregationError("; ".join(f"client {i}: {why}" for i, why in refused))
    n_out, n_in = int(factors[0][1].shape[0]), int(factors[0][0].shape[1])
    ranks = _checked_ranks(out_ranks, n_out, n_in)
    cut = _trim_count(len(factors), trim) if method == "trimmed_mean" else 0
    w = np.asarray(weights, _F64)
    w = w / w.max()  # first to the largest: a sum of huge finite weights could overflow
    w = w / w.sum()
    if method == "svd":
        pairs = _svd_of_mean(factors, w, ranks)
    elif method == "zeropad":
        pairs = _zeropad(factors, w, ranks)
    else:
        u, s, vt = np.linalg.svd(_robust_dense(factors, method, cut), full_matrices=False)
        k = max(ranks, default=0)
        pairs = [_split(u[:, :k], s[:k], vt[:k], r) for r in ranks]
    return [_float32(a, b) for a, b in pairs]


def update_norm(a: np.ndarray, b: np.ndarray) -> float:
    """‖B@A‖_F without forming B@A: with B = QR (thin), ‖BA‖_F = ‖R·A‖_F, an r × n_in product (the same value as
    sqrt(trace((BᵀB)(AAᵀ))), without that formula's cancellation when BA is much smaller than ‖B‖·‖A‖)."""
    r = np.linalg.qr(np.asarray(b, _F64), mode="r")
    return float(np.linalg.norm(r @ np.asarray(a, _F64)))


def clip_update(a: np.ndarray, b: np.ndarray, max_norm: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, B, norm): the update scaled (both factors by the same √factor) so that ‖B@A‖_F ≤ max_norm, as float32,
    and ‖B@A‖_F of the update as given. An update within the bound is only converted."""
    problem = _update_problem((a, b))
    if problem:
        raise AggregationError(f"clip_update: {problem}")
    if not _positive_finite(max_norm):
        raise AggregationError(f"clip_update: max_norm {max_norm!r} is not a positive finite number")
    norm = update_norm(a, b)
    factor = math.sqrt(max_norm / norm) if norm > max_norm else 1.0
    a32, b32 = (np.asarray(a, _F64) * factor).astype(np.float32), (np.asarray(b, _F64) * factor).astype(np.float32)
    for _ in range(8):  # float32 rounding may land just above the bound: shrink by a hair until it holds
        got = update_norm(a32, b32)
        if got <= max_norm:
            break
        shrink = math.sqrt(max_norm / got) * (1 - 2.0**-20)
        a32, b32 = (a32 * shrink).astype(np.float32), (b32 * shrink).astype(np.float32)
    return a32, b32, norm


def _svd_of_mean(factors: Sequence[Factors], w: np.ndarray, ranks: list[int]) -> list[Factors]:
    b_cat = np.concatenate([np.asarray(b, _F64) * wi for (_, b), wi in zip(factors, w)], axis=1)  # diag(w) into B
    a_cat = np.concatenate([np.asarray(a, _F64) for a, _ in factors], axis=0)
    q_b, r_b = np.linalg.qr(b_cat)  # (n_out, m_b), (m_b, R)
    q_a, r_a = np.linalg.qr(a_cat.T)  # (n_in, m_a), (m_a, R)
    u, s, vt = np.linalg.svd(r_b @ r_a.T)  # the core (m_b, m_a): ΔW = (q_b u) diag(s) (q_a vᵀ)ᵀ
    k = min(max(ranks, default=0), len(s))
    left, right = q_b @ u[:, :k], vt[:k] @ q_a.T  # only the columns / rows any output needs
    return [_split(left, s[:k], right, r) for r in ranks]


def _split(left: np.ndarray, s: np.ndarray, right: np.ndarray, r: int) -> Factors:
    """The rank-r truncation of left·diag(s)·right as (√S·right, left·√S), dead slots filled (module docstring).
    `s` is sorted descending; a singular value at or below numpy's matrix_rank tolerance (of the n_out × n_in ΔW)
    counts as zero."""
    tol = s[0] * max(left.shape[0], right.shape[1]) * np.finfo(_F64).eps if len(s) else 0.0
    live = int(np.count_nonzero(s[:r] > tol))
    root = np.sqrt(s[:live])
    b = np.zeros((left.shape[0], r), _F64)
    b[:, :live] = left[:, :live] * root
    a = np.empty((r, right.shape[1]), _F64)
    a[:live] = root[:, None] * right[:live]
    a[live:] = _fresh_rows(right[:live], r - live)
    return a, b


def _zeropad(factors: Sequence[Factors], w: np.ndarray, ranks: list[int]) -> list[Factors]:
    r_max = max(int(a.shape[0]) for a, _ in factors)
    a_mean = np.zeros((r_max, factors[0][0].shape[1]), _F64)
    b_mean = np.zeros((factors[0][1].shape[0], r_max), _F64)
    for (a, b), wi in zip(factors, w):
        a_mean[: a.shape[0]] += wi * np.asarray(a, _F64)
        b_mean[:, : b.shape[1]] += wi * np.asarray(b, _F64)
    out = []
    for r in ranks:
        keep = min(r, r_max)
        a = np.concatenate([a_mean[:keep], _fresh_rows(a_mean[:keep], r - keep)])
        b = np.concatenate([b_mean[:, :keep], np.zeros((b_mean.shape[0], r - keep))], axis=1)
        out.append((a, b))
    return out


def _robust_dense(factors: Sequence[Factors], method: str, cut: int) -> np.ndarray:
    """The coordinate-wise median or trimmed mean (`cut` values dropped per side) of the dense ΔW_i, in row blocks."""
    a64 = [np.asarray(a, _F64) for a, _ in factors]
    n_out, n = int(factors[0][1].shape[0]), len(factors)
    out = np.empty((n_out, a64[0].shape[1]), _F64)
    for start in range(0, n_out, _ROW_BLOCK):
        rows = slice(start, min(start + _ROW_BLOCK, n_out))
        stack = np.stack([np.asarray(b[rows], _F64) @ a for a, (_, b) in zip(a64, factors)])
        if method == "median":
            out[rows] = np.median(stack, axis=0)
        else:
            stack.sort(axis=0)
            out[rows] = stack[cut: n - cut].mean(axis=0)
    return out


def _fresh_rows(span: np.ndarray, count: int) -> np.ndarray:
    """`count` orthogonal rows of norm 1/√3, orthogonal to every row of `span` (deterministic)."""
    n_in = span.shape[1]
    if count <= 0:
        return np.zeros((0, n_in), _F64)
    g = np.random.default_rng(count).standard_normal((n_in, count))
    if span.shape[0]:
        basis = np.linalg.qr(span.T)[0]  # (n_in, k): orthonormal basis of the rows' span
        for _ in range(2):  # twice: one projection leaves rounding-size components along the span
            g -= basis @ (basis.T @ g)
    q = np.linalg.qr(g)[0]
    return q.T * _FRESH_ROW_NORM


def _float32(a: np.ndarray, b: np.ndarray) -> Factors:
    with np.errstate(over="ignore"):  # an overflow is reported below, as an AggregationError
        a32, b32 = a.astype(np.float32), b.astype(np.float32)
    if not (np.isfinite(a32).all() and np.isfinite(b32).all()):
        raise AggregationError("the aggregate overflows float32 (updates with huge values?)")
    return a32, b32


def _update_problem(update: Any) -> Optional[str]:
    """Why `update` is not a usable (A, B) pair, or None."""
    if not isinstance(update, (tuple, list)) or len(update) != 2:
        return f"the update is not an (A, B) pair but {type(update).__name__}"
    for half, array, layout in (("A", update[0], "(r, n_in)"), ("B", update[1], "(n_out, r)")):
        if not isinstance(array, np.ndarray) or array.ndim != 2:
            return f"{half} must be a 2-D array {layout}, got {getattr(array, 'shape', type(array).__name__)}"
        if array.dtype.kind not in "fiu":
            return f"{half} has type {array.dtype}; a real number type is needed"
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            return f"{half} holds NaN or infinite values"
    a, b = update
    if a.shape[0] != b.shape[1]:
        return f"A (r, n_in) = {a.shape} and B (n_out, r) = {b.shape} disagree on the rank"
    if min(a.shape[0], a.shape[1], b.shape[0]) < 1:
        return f"empty update: A {a.shape}, B {b.shape}"
    return None


def _weight_problem(weight: Any) -> Optional[str]:
    return None if _positive_finite(weight) else f"weight {weight!r} is not a positive finite number"


def _positive_finite(x: Any) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool) and 0 < float(x) < math.inf


def _checked_ranks(out_ranks: Sequence[int], n_out: int, n_in: int) -> list[int]:
    limit = min(n_out, n_in)
    for r in out_ranks:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= r <= limit:
            raise AggregationError(f"out rank {r!r}: must be an integer from 1 to min(n_out, n_in) = {limit}")
    return [int(r) for r in out_ranks]


def _trim_count(n: int, trim: float) -> int:
    """Values dropped per side by the trimmed mean of n: floor(trim·n), at least one when n ≥ 3 and trim > 0."""
    if isinstance(trim, bool) or not isinstance(trim, Real) or not 0 <= float(trim) < 0.5:
        raise AggregationError(f"trim {trim!r}: must be a fraction per side in [0, 0.5)")
    cut = math.floor(trim * n)
    return max(cut, 1) if n >= 3 and trim > 0 else cut
