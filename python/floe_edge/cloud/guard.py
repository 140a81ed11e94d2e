"""The server's ASGI guard, run before FastAPI sees a request: the API key check (all routes but /health), then the
request body cap."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Callable, Optional, Sequence

from .api_error import error_body

__all__ = ["ANONYMOUS", "RequestGuard"]

ANONYMOUS = "anonymous"  # the owner of every session when the server has no API key


def _header(scope: dict[str, Any], name: bytes) -> Optional[bytes]:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v
    return None


async def _send_error(send: Callable[..., Any], status: int, code: str, message: str,
                      extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = error_body(code, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """API key check (all routes but /health), then the body cap: by Content-Length before reading anything, and
    by counting what arrives (chunked bodies); the body is read into memory only while it is under the cap."""

    def __init__(self, app: Any, keys: Sequence[str], max_body: int) -> None:
        self.app, self.max_body = app, max_body
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    def _owner(self, scope: dict[str, Any]) -> Optional[str]:
        if not self._digests:
            return ANONYMOUS
        auth = _header(scope, b"authorization") or b""
        scheme, _, given = auth.partition(b" ")
        # Compare digests (equal lengths, no early exit) against every key: the time says nothing about the key.
        d = hashlib.sha256(given.strip()).digest()
        hits = [hmac.compare_digest(d, k) for k in self._digests]
        if scheme.lower() != b"bearer" or not any(hits):
            return None
        return f"key{hits.index(True)}"

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] != "/health":
            owner = self._owner(scope)
            if owner is None:
                return await _send_error(send, 401, "unauthorized", "missing or wrong API key "
                                         "(Authorization: Bearer <key>)", [(b"www-authenticate", b"Bearer")])
            scope.setdefault("state", {})["owner"] = owner
        too_big = (413, "body_too_large", f"the request body is over {self.max_body} bytes",
                   [(b"connection", b"close")])
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _send_error(send, *too_big)
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await _send_error(send, *too_big)
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> dict[str, Any]:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)
