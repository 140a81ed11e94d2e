"""Where floe keeps its files: one rule for every store.

    home()            $FLOE_HOME (with ~ expanded), else ~/.cache/floe; an empty $FLOE_HOME counts as unset
    models_dir()      home()/models        pulled GGUF models (`floe models pull`)
    adapters_dir()    home()/adapters      the LoRA adapter store (`floe adapters`)
    vocab_maps_dir()  home()/vocab_maps    cross-vocabulary mapping tables
    gates_dir()       home()/gates         learned fusion gates, <app>.json (fusion preset "gate")
    demo_dir()        home()/demo          `floe demo`'s user: their generated data and what the demo caches

Before this rule, models went straight into $FLOE_HOME when it was set (while adapters and vocabulary maps used
subdirectories). `legacy_models_dir()` names that old place so models pulled there are still found.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

__all__ = ["adapters_dir", "demo_dir", "gates_dir", "home", "legacy_models_dir", "models_dir", "vocab_maps_dir"]

ENV = "FLOE_HOME"


def home() -> Path:
    """$FLOE_HOME, else ~/.cache/floe (read on every call: tests and embedding apps change it at run time)."""
    value = os.environ.get(ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "floe"


def models_dir() -> Path:
    """Pulled models: home()/models."""
    return home() / "models"


def adapters_dir() -> Path:
    """The adapter store's root: home()/adapters."""
    return home() / "adapters"


def vocab_maps_dir() -> Path:
    """Cached vocabulary mapping tables: home()/vocab_maps."""
    return home() / "vocab_maps"


def gates_dir() -> Path:
    """Learned fusion gates, one <app>.json per application: home()/gates."""
    return home() / "gates"


def litert_dir() -> Path:
    """Edge models exported to LiteRT for `floe demo` and `floe eval --backend litert`, one per source GGUF and
    adapter set: home()/litert."""
    return home() / "litert"


def demo_dir() -> Path:
    """`floe demo`'s files (its user's personal data, the state of their cached adapter): home()/demo."""
    return home() / "demo"


def legacy_models_dir() -> Optional[Path]:
    """Where models were pulled before models_dir() (only when $FLOE_HOME is set: $FLOE_HOME itself); None when
    there is no such place."""
    value = os.environ.get(ENV)
    return Path(value).expanduser() if value else None
