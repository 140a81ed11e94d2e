"""One step request (POST /v1/floe/sessions/{sid}/step, fields in `protocol`), checked by one routine on both sides:
the device before it sends (`StepRequest.validate` against `CLIENT_LIMITS`, the protocol's own bounds), the server
when it parses the JSON (`StepRequest.from_json` against its configured limits). So the two cannot disagree on what a
valid step is. Checks are explicit, so every bad input gets a clear message (bools are not ints, floats are not ids):
a `RequestError` (a ValueError; the server answers it with HTTP 400 and its `code`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Sequence

from .api_error import ApiError
from .protocol import DEFAULT_MAX_K, FORMATS, MAX_DRAFT

__all__ = ["CLIENT_LIMITS", "RequestError", "StepLimits", "StepRequest", "check_fields", "check_ids", "check_int",
           "decode_b64"]

MAX_BASE = 1 << 40


class RequestError(ApiError, ValueError):
    """A request outside the limits: a ValueError on the device, HTTP 400 with `code` on the server."""

    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(400, code, message)


def check_int(v: Any, name: str, lo: int, hi: int) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise RequestError(f"{name} must be an integer in {lo}..{hi}")
    return v


def check_ids(v: Any, name: str, n_vocab: Optional[int], max_len: Optional[int]) -> Sequence[int]:
    """A list of token ids, at most `max_len` of them, each in 0..n_vocab-1 (None: no bound)."""
    if not isinstance(v, (list, tuple)):  # JSON gives lists; a device's default is ()
        raise RequestError(f"{name} must be a list of token ids")
    if max_len is not None and len(v) > max_len:
        raise RequestError(f"{name} has {len(v)} tokens, at most {max_len} allowed", "too_long")
    top = n_vocab if n_vocab is not None else 1 << 31
    if any(type(t) is not int or not 0 <= t < top for t in v):
        raise RequestError(f"{name} must hold integer token ids in 0..{top - 1}", "bad_token")
    return v


def decode_b64(v: Any, name: str) -> bytes:
    if not isinstance(v, str):
        raise RequestError(f"{name} must be a base64 string")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{name} is not valid base64", "invalid_base64") from None


def check_fields(body: Mapping[str, Any], allowed: Sequence[str]) -> None:
    extra = sorted(set(body) - set(allowed))
    if extra:
        raise RequestError(f"unknown field(s): {', '.join(extra)}")


@dataclass(frozen=True)
class StepLimits:
    max_k: int = 255                  # top-k entries per position (a step frame's k is a u8)
    max_draft: int = MAX_DRAFT        # greedy draft tokens
    max_score: int = MAX_DRAFT        # scored tokens (a text session's after the server tokenized them)
    n_vocab: Optional[int] = None     # ids must be below it (None: the device does not know the cloud's yet)
    max_append: Optional[int] = None  # tokens one append may carry (the server: its context)


CLIENT_LIMITS = StepLimits()


@dataclass(frozen=True)
class StepRequest:
    """A step: an id session's `append` / `score` carry token ids, a text session's `append_text` / `score_text`
    bytes (base64 on the wire). `base`: what the session holds before the append (tokens or bytes). `want`: the
    positions whose top-k is needed (None: all); `want_bytes`, for a text session's scored text, names them by byte
    offset into `score_text` instead (the device cannot know the server's token boundaries)."""

    k: int = DEFAULT_MAX_K
    n_draft: int = 0
    append: Sequence[int] = ()
    score: Sequence[int] = ()
    append_text: bytes = b""
    score_text: bytes = b""
    base: Optional[int] = None
    want: Optional[Sequence[int]] = None
    want_bytes: Optional[Sequence[int]] = None
    fmt: str = "f16"

    FIELDS = ("append", "append_b64", "base", "k", "n_draft", "score", "score_b64", "want", "want_bytes", "fmt")

    def validate(self, limits: StepLimits = CLIENT_LIMITS) -> "StepRequest":
        """Itself, if within `limits`; RequestError otherwise. A text session's scored tokens are only known once
        the server tokenized them: `check_scored` then checks their number."""
        check_int(self.k, "k", 1, limits.max_k)
        check_int(self.n_draft, "n_draft", 0, limits.max_draft)
        if self.fmt not in FORMATS:
            raise RequestError('fmt must be "f16" or "int8"')
        check_ids(self.append, "append", limits.n_vocab, limits.max_append)
        check_ids(self.score, "score", limits.n_vocab, limits.max_score)
        if self.n_draft and (self.score or self.score_text):
            raise RequestError("n_draft and score exclude each other")
        if self.base is not None:
            check_int(self.base, "base", 0, MAX_BASE)
        if self.want is not None:
            top = max(self.n_draft, limits.max_score if self.score_text else len(self.score))
            want = self.want
            if not isinstance(want, list) or any(type(w) is not int or not 0 <= w <= top for w in want) \
                    or len(set(want)) != len(want):
                raise RequestError(f"want must be a list of distinct positions in 0..{top}")
        if self.want_bytes is not None:
            if not self.score_text or self.want is not None:
                raise RequestError("want_bytes goes with score_b64, and not with want")
            offsets, top = self.want_bytes, len(self.score_text)
            if not isinstance(offsets, list) or len(offsets) > limits.max_score + 1 \
                    or any(type(w) is not int or not 0 <= w <= top for w in offsets) \
                    or len(set(offsets)) != len(offsets):
                raise RequestError(f"want_bytes must be a list of at most {limits.max_score + 1} distinct byte offsets "
                                   f"in 0..{top}")
        return self

    def check_scored(self, n_scored: int, limits: StepLimits) -> None:
        """The number of scored tokens, once known (a text session's, after tokenization), and `want` against the
        positions this step then has."""
        if n_scored > limits.max_score:
            raise RequestError(f"score is {n_scored} tokens, at most {limits.max_score} allowed", "too_long")
        n_pos = 1 + max(self.n_draft, n_scored)
        if self.want is not None and any(w >= n_pos for w in self.want):
            raise RequestError(f"want names a position beyond the {n_pos} of this step")

    def to_json(self) -> dict[str, Any]:
        """The wire form (defaults left out)."""
        body: dict[str, Any] = {"k": self.k, "fmt": self.fmt}
        if self.append:
            body["append"] = list(self.append)
        elif self.append_text:
            body["append_b64"] = base64.b64encode(self.append_text).decode()
        if self.base is not None:
            body["base"] = self.base
        if self.score:
            body["score"] = list(self.score)
        elif self.score_text:
            body["score_b64"] = base64.b64encode(self.score_text).decode()
        if self.want is not None:
            body["want"] = list(self.want)
        if self.want_bytes is not None:
            body["want_bytes"] = list(self.want_bytes)
        if self.n_draft:
            body["n_draft"] = self.n_draft
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any], text_session: bool, limits: StepLimits) -> "StepRequest":
        """A request as the server receives it, validated; RequestError for anything out of place."""
        check_fields(body, cls.FIELDS)
        for f in (("append", "score") if text_session else ("append_b64", "score_b64")):
            if f in body:
                raise RequestError(f"a {'text' if text_session else 'token-id'} session does not take {f}")
        req = cls(k=body.get("k", min(DEFAULT_MAX_K, limits.max_k)), n_draft=body.get("n_draft", 0),
                  base=body.get("base"), want=body.get("want"), want_bytes=body.get("want_bytes"),
                  fmt=body.get("fmt", "f16"))
        if text_session:
            req = replace(req, append_text=decode_b64(body.get("append_b64", ""), "append_b64"),
                          score_text=decode_b64(body.get("score_b64", ""), "score_b64"))
        else:
            req = replace(req, append=body.get("append", []), score=body.get("score", []))
        return req.validate(limits)
