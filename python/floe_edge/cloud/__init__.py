"""The cloud side of Floe: the token-id wire protocol (`protocol`, `step_request`), `floe cloud serve` (`server`,
never imported here: it needs the [cloud] extra), and the device's cloud link, whose public names are exported here:
the interface (`CloudBackend`, `CloudStep`, `Evidence`, `LinkStats`), its two backends and its errors; and the
cloud's knowledge base (`KnowledgeBase`, `knowledge_id`: the id of an entry made from a record's cloud_context).

They are imported on first use: a module that needs only `protocol` (the hybrid generator, the server) does not pay
for the HTTP client."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import FloeCloudBackend
    from .errors import (CloudConnectionError, CloudError, CloudHTTPError, CloudProtocolError, CloudTimeout,
                         CloudUnavailable, SessionExpired)
    from .knowledge import KnowledgeBase, KnowledgeError, knowledge_id
    from .link import CloudBackend, CloudStep, Evidence, LinkStats
    from .openai_backend import OpenAICompletionsBackend

    def _floe_is_a_backend(link: FloeCloudBackend) -> CloudBackend:  # mypy proves both satisfy the interface
        return link

    def _openai_is_a_backend(link: OpenAICompletionsBackend) -> CloudBackend:
        return link

__all__ = [
    "CloudBackend",
    "CloudConnectionError",
    "CloudError",
    "CloudHTTPError",
    "CloudProtocolError",
    "CloudStep",
    "CloudTimeout",
    "CloudUnavailable",
    "Evidence",
    "FloeCloudBackend",
    "KnowledgeBase",
    "KnowledgeError",
    "LinkStats",
    "OpenAICompletionsBackend",
    "SessionExpired",
    "knowledge_id",
]
_MODULES = {
    "link": ("CloudBackend", "CloudStep", "Evidence", "LinkStats"),
    "client": ("FloeCloudBackend",),
    "openai_backend": ("OpenAICompletionsBackend",),
    "knowledge": ("KnowledgeBase", "KnowledgeError", "knowledge_id"),
    "errors": ("CloudConnectionError", "CloudError", "CloudHTTPError", "CloudProtocolError", "CloudTimeout",
               "CloudUnavailable", "SessionExpired"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value
