"""A learned per-token gate for fusion (the fusion preset ``"gate"``): a small model, trained on the user's own
held-in records, that says per token how much to trust the cloud over the edge, and when not to ask it at all.

    features   `gate_features` / `FEATURES`: what it looks at (both sides' confidence, agreement, position)
    model      `LearnedGate` (fit, cloud_weight, weights, skip_threshold, save / load) and `average` (federation)

``Fuser(n_vocab, weights=gate)`` (or ``"gate"``, ``"gate:<app>"``: the file ``$FLOE_HOME/gates/<app>.json``, app
``default``) fuses each token with the gate's weights; `AdapterStore.put_gate` keeps a gate with an adapter version.
"""

from __future__ import annotations

import re
from pathlib import Path

from .. import paths
from .features import FEATURES, LOGPROB_FLOOR, CloudTopK, complete_topk, gate_features
from .model import FORMAT, VERSION, GateError, LearnedGate, average

__all__ = ["FEATURES", "FORMAT", "LOGPROB_FLOOR", "PRESET", "VERSION", "CloudTopK", "GateError", "LearnedGate",
           "average", "complete_topk", "gate_features", "gate_path", "is_gate_preset", "load_preset"]

PRESET = "gate"
DEFAULT_APP = "default"
_APP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def is_gate_preset(name: str) -> bool:
    """``"gate"`` or ``"gate:<app>"``."""
    return name == PRESET or name.startswith(PRESET + ":")


def gate_path(app: str = DEFAULT_APP) -> Path:
    """Where the gate of `app` lives: ``$FLOE_HOME/gates/<app>.json`` (`floe_edge.paths.gates_dir`)."""
    if not _APP.fullmatch(app):
        raise ValueError(f"bad app name {app!r}: letters, digits, '.', '_' or '-', starting with a letter or digit")
    return paths.gates_dir() / f"{app}.json"


def load_preset(name: str) -> LearnedGate:
    """The gate a preset name stands for: ``"gate"`` -> app ``default``, ``"gate:<app>"`` -> that app.
    GateError naming the expected path (and how to make a gate) when there is no file there."""
    if not is_gate_preset(name):
        raise ValueError(f"{name!r} is not a gate preset (\"gate\" or \"gate:<app>\")")
    app = name.partition(":")[2] or DEFAULT_APP
    path = gate_path(app)
    if not path.exists():
        raise GateError(f"fusion preset {name!r} needs a learned gate at {path}, and there is none: train one on "
                        f"your held-in records (`floe eval` trains it and saves it there), or pass a gate file "
                        f"(`floe generate --gate FILE`, or Fuser(weights=LearnedGate.load(FILE)))")
    return LearnedGate.load(path)
