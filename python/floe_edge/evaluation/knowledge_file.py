"""The cloud's knowledge base for an evaluation: every distinct cloud context of the records, named by its id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from ..data.records import Record
from ..files import write_atomic

__all__ = ["write_knowledge"]


def write_knowledge(path: Path, records: Sequence[Record]) -> Optional[Path]:
    """Write `{"id", "text"}` lines (the format of `floe cloud serve --knowledge`) and return the path (None, and no
    file, when no record has a cloud context)."""
    from ..cloud.knowledge import knowledge_id

    texts = dict.fromkeys(r.cloud_context for r in records if r.cloud_context)
    if not texts:
        return None
    lines = [json.dumps({"id": knowledge_id(t), "text": t}, ensure_ascii=False) for t in texts]
    write_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path
