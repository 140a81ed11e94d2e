"""Did anything private go up? A check over every byte the device sent its cloud (a `NetemProxy(capture_up=...)`).

The wire carries the shared prompt and the answer as token ids (same vocabulary) or base64 bytes (another
vocabulary) inside JSON bodies, so searching the raw bytes alone would miss a leak: each HTTP request is parsed and
its id lists are detokenized, its base64 fields decoded. An item (a line of a private context) leaks when it occurs
in the raw bytes, in one decoded field, or in a connection's decoded fields joined in order (text split over steps).
Items that are part of a prompt or an answer are not checked: those go up by design (the cloud scores the answer).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

__all__ = ["PrivacyCheck", "check_private", "private_items", "uploaded_texts"]

Detokenize = Callable[[Sequence[int]], bytes]
_ID_FIELDS = ("prompt", "append", "score")
_B64_FIELDS = ("prompt_b64", "append_b64", "score_b64")


@dataclass(frozen=True)
class PrivacyCheck:
    bytes_sent: int        # every byte the device sent upstream (HTTP headers included)
    checked: int           # private items looked for
    leaked: tuple[str, ...]
    unparsed: int          # bytes of requests that could not be read as HTTP + JSON (searched raw only)
    dropped: int           # bytes beyond the capture's bound: not seen, so the check is incomplete

    @property
    def ok(self) -> bool:
        return not self.leaked and not self.dropped

    def verdict(self) -> str:
        if self.leaked:
            return f"private context sent: YES ({len(self.leaked)} of {self.checked} items)"
        if self.dropped:
            return f"private context sent: unknown ({self.dropped} bytes beyond the capture were not checked)"
        return f"private context sent: no (checked {self.checked} items)"


def private_items(contexts: Iterable[str], shared: Iterable[str]) -> list[str]:
    """The distinct non-empty lines of the private contexts, less those inside a shared text (a prompt, an answer)."""
    shared = list(shared)
    lines = dict.fromkeys(line.strip() for c in contexts for line in c.splitlines())
    return [line for line in lines if line and not any(line in s for s in shared)]


def _requests(stream: bytes) -> tuple[list[bytes], int]:
    """The bodies of the HTTP/1.1 requests in one connection's upstream bytes (Content-Length framing, as httpx
    sends JSON), and how many bytes could not be framed."""
    bodies: list[bytes] = []
    at = 0
    while at < len(stream):
        end = stream.find(b"\r\n\r\n", at)
        if end < 0:
            break
        length = 0
        for line in stream[at:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip() or 0)
            elif name.strip().lower() == b"transfer-encoding":
                return bodies, len(stream) - at  # chunked: not framed here
        bodies.append(stream[end + 4: end + 4 + length])
        at = end + 4 + length
    return bodies, len(stream) - at


def _fields(body: Any, detokenize: Detokenize) -> list[str]:
    if not isinstance(body, dict):
        return []
    out = []
    for key in _ID_FIELDS:
        ids = body.get(key)
        if isinstance(ids, list) and all(isinstance(i, int) for i in ids):
            out.append(detokenize(ids).decode("utf-8", "replace"))
    for key in _B64_FIELDS:
        value = body.get(key)
        if isinstance(value, str):
            try:
                out.append(base64.b64decode(value).decode("utf-8", "replace"))
            except (binascii.Error, ValueError):
                out.append(value)
    return out


def uploaded_texts(connections: Sequence[bytes], detokenize: Detokenize) -> tuple[list[str], int]:
    """Everything that went up, readable: per connection its raw bytes (as text), each decoded field, and the
    decoded fields joined in order; and the number of bytes that could not be parsed as requests."""
    texts, unparsed = [], 0
    for stream in connections:
        texts.append(stream.decode("utf-8", "replace"))
        bodies, rest = _requests(stream)
        unparsed += rest
        fields = []
        for body in bodies:
            try:
                fields += _fields(json.loads(body), detokenize)
            except ValueError:
                unparsed += len(body)
        texts += fields
        texts.append("".join(fields))
    return texts, unparsed


def check_private(items: Sequence[str], connections: Sequence[bytes], detokenize: Detokenize,
                  dropped: int = 0) -> PrivacyCheck:
    """Look for every item in what went up (`connections`: a capture's bytes per connection)."""
    texts, unparsed = uploaded_texts(connections, detokenize)
    leaked = tuple(item for item in items if any(item in t for t in texts))
    return PrivacyCheck(sum(map(len, connections)) + dropped, len(items), leaked, unparsed, dropped)
