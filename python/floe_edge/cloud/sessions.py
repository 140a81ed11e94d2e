"""The server's sessions: what each holds (`Session`), and the table of them (`Sessions`), bounded per API key and
expired when idle."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .api_error import ApiError
from .knowledge import Prefix

__all__ = ["Session", "Sessions"]


@dataclass
class Session:
    owner: str
    tokens: list[int]                # committed cloud ids
    text: Optional[bytes]            # text sessions: the committed bytes (tokens = their tokenization)
    last_used: float
    prefix: Optional[Prefix] = None  # the knowledge entry the model reads in front (never counted in `tokens`)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one step at a time per session


class Sessions:
    """Sessions by id, at most `per_key` per API key, dropped after `idle_s` without use."""

    def __init__(self, per_key: int, idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_id: dict[str, Session] = {}
        self.per_key, self.idle_s, self.clock = per_key, idle_s, clock

    def __len__(self) -> int:
        return len(self._by_id)

    def expire(self) -> None:
        cutoff = self.clock() - self.idle_s
        for sid in [sid for sid, s in self._by_id.items() if s.last_used < cutoff and not s.lock.locked()]:
            del self._by_id[sid]

    def check_room(self, owner: str) -> None:
        self.expire()
        if sum(s.owner == owner for s in self._by_id.values()) >= self.per_key:
            raise ApiError(429, "too_many_sessions", f"at most {self.per_key} open sessions per key; close one "
                                                     "or wait for idle ones to expire")

    def add(self, session: Session) -> str:
        self.check_room(session.owner)
        sid = secrets.token_urlsafe(18)
        self._by_id[sid] = session
        return sid

    def get(self, owner: str, sid: str) -> Session:
        self.expire()
        s = self._by_id.get(sid)
        if s is None or s.owner != owner:  # another key's session is "unknown" too
            raise ApiError(404, "unknown_session", "no such session (closed, expired or never created)")
        s.last_used = self.clock()
        return s

    def remove(self, owner: str, sid: str) -> None:
        self.get(owner, sid)
        del self._by_id[sid]
