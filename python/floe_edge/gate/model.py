"""`LearnedGate`: per token, how much to trust the cloud over the edge, learned from the user's own records.

A logistic regression on the standardized `FEATURES` (numpy, L2, Newton's method: deterministic), fitted on the
positions where exactly one side is right (elsewhere the choice does not matter): ``p = P(the cloud is the right
side)``. Fusion then uses the weights ``(1 - p, p)``. Beside it, a learned ``skip_threshold``: the edge top-1
probability at and above which the cloud is not asked, the lowest one above which the edge was right on at least
``skip_precision`` (99%) of the training positions (at least ``skip_min_count`` of them); None: never skip.

File format (JSON, ``FORMAT`` / ``VERSION``; written atomically)::

    {"format": "floe-gate", "version": 1, "kind": "logistic",
     "features": [the FEATURES names, in order],
     "mean": [...], "scale": [...],        standardization: z = (x - mean) / scale
     "coef": [...], "intercept": b,         p = 1 / (1 + exp(-(z . coef + b)))
     "skip_threshold": 0.97 or null,
     "meta": {"n_positions": ..., ...}}     how it was made (free-form, JSON scalars)

Federation: `average` is FedAvg of the parameters, standardization statistics included (a weighted mean of the
means, scales, coefficients and intercepts; exact only when the clients' statistics agree, close when they are
similar, which is what standardizing on the same features tends to give).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from ..files import write_atomic
from .features import FEATURES

__all__ = ["FORMAT", "VERSION", "GateError", "LearnedGate", "average"]

FORMAT, VERSION, KIND = "floe-gate", 1, "logistic"
PathLike = Union[str, "os.PathLike[str]"]
F64 = npt.NDArray[np.float64]


class GateError(ValueError):
    """A gate file or gate parameters that cannot be used (the message says why)."""


def _sigmoid(s: F64) -> F64:
    out: F64 = 0.5 * (1.0 + np.tanh(0.5 * s))  # stable for any s
    return out


def _fit_logistic(z: F64, y: F64, l2: float, max_iter: int = 100) -> tuple[F64, float]:
    """L2-regularized logistic regression (intercept not penalized) by damped Newton steps."""
    x = np.hstack([z, np.ones((z.shape[0], 1))])
    reg = np.full(x.shape[1], l2)
    reg[-1] = 1e-8

    def loss(w: F64) -> float:
        s = x @ w
        return float(np.logaddexp(0.0, s).sum() - y @ s + 0.5 * (reg * w * w).sum())

    w = np.zeros(x.shape[1])
    current = loss(w)
    for _ in range(max_iter):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - y) + reg * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6 and loss(w - t * step) > current:  # halve until the loss does not increase
            t *= 0.5
        w = w - t * step
        new = loss(w)
        if current - new < 1e-12 * max(1.0, abs(current)):
            break
        current = new
    return w[:-1], float(w[-1])


def _skip_threshold(p1: F64, edge_right: npt.NDArray[np.bool_], precision: float, min_count: int) -> Optional[float]:
    """The lowest edge top-1 probability t with at least min_count positions at or above it, of which the edge got
    at least `precision` right; None when there is no such t."""
    order = np.argsort(-p1, kind="stable")
    p_sorted, right = p1[order], edge_right[order].astype(np.float64)
    cum_right, count = np.cumsum(right), np.arange(1, p1.size + 1)
    last_of_value = np.append(p_sorted[1:] < p_sorted[:-1], True)  # a threshold takes every tie with it
    ok = last_of_value & (count >= min_count) & (cum_right >= precision * count)
    if not ok.any():
        return None
    return float(p_sorted[np.flatnonzero(ok)[-1]])


def _vector(value: Any, name: str, where: str) -> F64:
    try:
        v = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise GateError(f"{where}: {name} must be a list of {len(FEATURES)} numbers") from None
    if v.shape != (len(FEATURES),) or not np.all(np.isfinite(v)):
        raise GateError(f"{where}: {name} must be a list of {len(FEATURES)} finite numbers")
    return v


@dataclass
class LearnedGate:
    """A fitted gate (module doc). Build one with `fit`, `load` or `from_json`."""

    mean: F64
    scale: F64
    coef: F64
    intercept: float
    skip_threshold: Optional[float] = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = "gate"
        self.mean, self.scale = _vector(self.mean, "mean", where), _vector(self.scale, "scale", where)
        self.coef = _vector(self.coef, "coef", where)
        if not np.all(self.scale > 0):
            raise GateError(f"{where}: scale must be > 0")
        if isinstance(self.intercept, bool) or not isinstance(self.intercept, (int, float)) \
                or not math.isfinite(self.intercept):
            raise GateError(f"{where}: intercept must be a finite number")
        self.intercept = float(self.intercept)
        t = self.skip_threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < t <= 1.0):
            raise GateError(f"{where}: skip_threshold must be in (0, 1] or null, got {t!r}")

    # -- training ------------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, features: npt.ArrayLike, cloud_right: npt.ArrayLike, edge_right: npt.ArrayLike, *,
            l2: float = 1.0, skip_precision: float = 0.99, skip_min_count: int = 50) -> "LearnedGate":
        """Fit on one row of `FEATURES` per scored position and whether each side's top-1 was right there.
        ValueError when the data has too few positions where exactly one side is right (2 of each kind)."""
        x = np.asarray(features, dtype=np.float64)
        c_right, e_right = np.asarray(cloud_right, dtype=bool), np.asarray(edge_right, dtype=bool)
        if x.ndim != 2 or x.shape[1] != len(FEATURES):
            raise ValueError(f"features must have shape (n, {len(FEATURES)}), got {x.shape}")
        if c_right.shape != (x.shape[0],) or e_right.shape != (x.shape[0],):
            raise ValueError("cloud_right and edge_right need one value per row of features")
        if not np.all(np.isfinite(x)):
            raise ValueError("features must be finite")
        if not l2 > 0 or not 0 < skip_precision <= 1 or skip_min_count < 1:
            raise ValueError("l2 must be > 0, skip_precision in (0, 1], skip_min_count >= 1")
        split = c_right != e_right
        n_cloud, n_edge = int((split & c_right).sum()), int((split & e_right).sum())
        if n_cloud < 2 or n_edge < 2:
            raise ValueError(f"cannot fit a gate: it learns from positions where exactly one side is right, and "
                             f"there are {n_cloud} where only the cloud is and {n_edge} where only the edge is "
                             f"(need 2 of each; more records help)")
        xs = x[split]
        mean, std = xs.mean(axis=0), xs.std(axis=0)
        scale = np.where(std > 1e-9, std, 1.0)  # a constant feature: left unscaled (its coefficient stays ~0)
        coef, intercept = _fit_logistic((xs - mean) / scale, c_right[split].astype(np.float64), l2)
        p1 = x[:, FEATURES.index("edge_p1")]
        threshold = _skip_threshold(p1, e_right, skip_precision, skip_min_count)
        gate = cls(mean, scale, coef, intercept, threshold)
        picks = gate.cloud_weight(xs) > 0.5
        gate.meta = {"n_positions": int(x.shape[0]), "n_disagree": int(split.sum()), "l2": float(l2),
                     "edge_accuracy": float(e_right.mean()), "cloud_accuracy": float(c_right.mean()),
                     "pick_accuracy": float((picks == c_right[split]).mean()),
                     "skip_precision": float(skip_precision), "skip_min_count": int(skip_min_count),
                     "skip_share": float((p1 >= threshold).mean()) if threshold is not None else 0.0}
        return gate

    # -- use -----------------------------------------------------------------------------------------------------
    def cloud_weight(self, features: npt.ArrayLike) -> Any:
        """P(the cloud is the right side): a float for one row of `FEATURES`, an array for (n, len(FEATURES))."""
        x = np.asarray(features, dtype=np.float64)
        if x.shape[-1:] != (len(FEATURES),) or x.ndim > 2:
            raise ValueError(f"features must have shape ({len(FEATURES)},) or (n, {len(FEATURES)}), got {x.shape}")
        p = _sigmoid(((x - self.mean) / self.scale) @ self.coef + self.intercept)
        return float(p) if x.ndim == 1 else p

    def weights(self, features: npt.ArrayLike) -> tuple[float, float]:
        """Fusion weights (w_edge, w_cloud) = (1 - p, p) at one position."""
        p = float(self.cloud_weight(np.asarray(features, dtype=np.float64).reshape(len(FEATURES))))
        return 1.0 - p, p

    # -- files ---------------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "kind": KIND, "features": list(FEATURES),
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                "intercept": self.intercept, "skip_threshold": self.skip_threshold, "meta": dict(self.meta)}

    @classmethod
    def from_json(cls, obj: Any, where: str = "gate") -> "LearnedGate":
        """A gate from `to_json`'s dict; GateError (naming `where`) when it is not one this version reads."""
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise GateError(f"{where}: not a floe gate (no \"format\": \"{FORMAT}\")")
        if obj.get("version") != VERSION or obj.get("kind") != KIND:
            raise GateError(f"{where}: gate version {obj.get('version')!r}, kind {obj.get('kind')!r}: this floe "
                            f"reads version {VERSION}, kind {KIND!r} (train it again with this floe)")
        if obj.get("features") != list(FEATURES):
            raise GateError(f"{where}: its features {obj.get('features')!r} are not this floe's {list(FEATURES)} "
                            f"(train it again with this floe)")
        meta = obj.get("meta", {})
        if not isinstance(meta, dict):
            raise GateError(f"{where}: meta must be an object")
        try:
            return cls(_vector(obj.get("mean"), "mean", where), _vector(obj.get("scale"), "scale", where),
                       _vector(obj.get("coef"), "coef", where), obj.get("intercept"),  # type: ignore[arg-type]
                       obj.get("skip_threshold"), meta)
        except GateError as e:
            raise GateError(str(e).replace("gate:", f"{where}:", 1)) from None

    def save(self, path: PathLike) -> Path:
        """Write the gate to `path` atomically (the old file stays whole if writing fails)."""
        return write_atomic(path, (json.dumps(self.to_json(), indent=1) + "\n").encode())

    @classmethod
    def load(cls, path: PathLike) -> "LearnedGate":
        """Read a gate file; GateError naming the file when it is missing, unreadable or not a valid gate."""
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise GateError(f"{path}: no such gate file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise GateError(f"{path}: cannot read the gate: {e}") from None
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise GateError(f"{path}: not JSON: {e}") from None
        return cls.from_json(obj, str(path))


def average(gates: Sequence[LearnedGate], weights: Optional[Sequence[float]] = None) -> LearnedGate:
    """FedAvg of gates (weights: e.g. each client's training positions; default equal): the weighted mean of every
    parameter, standardization statistics included (module doc). The skip threshold is the weighted mean over the
    gates that have one (None when none has)."""
    if not gates:
        raise ValueError("average needs at least one gate")
    w = np.ones(len(gates)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(gates),) or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError("weights: one finite value >= 0 per gate, not all 0")
    w = w / w.sum()

    def mean_of(name: str) -> F64:
        out: F64 = np.einsum("i,ij->j", w, np.stack([getattr(g, name) for g in gates]))
        return out

    with_t = [(wi, g.skip_threshold) for wi, g in zip(w, gates) if g.skip_threshold is not None and wi > 0]
    total = sum(wi for wi, _ in with_t)
    threshold = min(1.0, float(sum(wi * t for wi, t in with_t) / total)) if with_t else None
    return LearnedGate(mean_of("mean"), mean_of("scale"), mean_of("coef"),
                       float(sum(wi * g.intercept for wi, g in zip(w, gates))), threshold,
                       {"averaged": len(gates), "n_positions": int(sum(int(g.meta.get("n_positions", 0))
                                                                       for g in gates))})
