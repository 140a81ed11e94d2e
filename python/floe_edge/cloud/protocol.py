"""The floe token-id wire protocol between a device (`floe_edge.cloud.client`) and `floe cloud serve`.

Only the shared prompt's tokens go up; compact top-k log-probs come down. Ids are in the *cloud's* vocabulary
(the device maps them to edge ids with `floe_edge.vocab_map`, built from the vocabulary the server publishes).

HTTP routes (JSON requests; every route but /health needs `Authorization: Bearer <key>` when the server has a key):

    GET    /health                                 {"status": "ok", "model": str, "n_vocab": int}
    GET    /v1/floe/vocab                          vocabulary frame (below), once per device (cache by "fingerprint")
    POST   /v1/floe/sessions                       {"prompt": [ids]} | {"prompt_b64": base64 bytes},
                                                   optional "knowledge": id | null, "k": 1..max_k, "fmt"
                                                   -> {"session": str, "n_past": int, "n_vocab": int, "model": str,
                                                       "max_k": int, "idle_expiry_s": float, "fingerprint": str,
                                                       "knowledge": id | null, "first_b64": step frame}
    POST   /v1/floe/sessions/{sid}/step            StepRequest (JSON) -> step frame (below)
    DELETE /v1/floe/sessions/{sid}                 {"closed": true}
    POST   /v1/completions                         OpenAI-compatible, with "logprobs" (top-k strings)

A session holds the committed tokens (prompt + every `append`); its KV cache is reused as a prefix across steps.
Draft and scored tokens are speculative: never committed; the next step's `append` says what was accepted.
Two kinds of session, fixed by how it is created:
  * id session (`prompt`): `append` / `score` carry cloud ids (same vocabulary on both sides).
  * text session (`prompt_b64`, the cross-vocabulary path): the committed text is bytes; `append_b64` / `score_b64`
    carry bytes; the server re-tokenizes the whole committed text in its vocabulary at each step (so token
    boundaries are those of the full text) and reuses the KV cache of the longest common token prefix.

`first_b64` (only when "k" was given): a step frame of one position, the top-k after the prompt (the prefill
computes it anyway), so the answer's first token can be fused without a second round trip.

StepRequest fields (all optional; `step_request.StepRequest` checks them, on the device and on the server):
append: [ids] | append_b64: str, base: int (tokens, or bytes in a text session, the device believes the session
holds before this append: an append sent again after a lost answer is then applied once; a mismatch is 409),
k: 1..max_k (default 20), n_draft: 0..16
(greedy cloud draft tokens), score: [ids] | score_b64: str (an edge draft, scored in one batch; excludes n_draft;
at most 16 tokens after tokenization), want: [position indices] (the positions whose top-k the device needs; the
others come back with no entries and cost the server no output layer; default all), want_bytes: [byte offsets]
(with score_b64 only, instead of want: the positions that start at these offsets of the scored text, in the
server's tokenization; the device knows its own boundaries, not the server's), fmt: "f16" | "int8". The
response holds n_pos = 1 + n_draft (or 1 + number of scored tokens) positions: position 0 is the distribution of the
next token after the committed text; position j > 0 the distribution after draft/scored token j - 1 (`token` of
position j - 1 is that token, in cloud ids).

Errors: 4xx/5xx with JSON {"error": {"code": str, "message": str}}; 503 means "overloaded, retry later".

Step frame (little-endian):
    header  magic b"FLS2" | fmt u8 (0 f16, 1 int8) | k u8 | n_pos u16 | n_past u32       (12 bytes)
    per position:
        token   i32   the draft token at this position (greedy cloud draft, or the scored token), -1 for the last
        n       u8    entries that follow (0..k; 0 for a position not wanted)
        [scale  f32]  int8 and n > 0 only: lp = -q * scale
        ids     n x u32
        lps     n x f16, or n x u8 (q = round(-lp / scale))
    Entries are sorted by log-prob, descending; log-probs are the cloud's raw log-softmax (temperature 1).

Vocabulary frame: magic b"FLV1" | n u32 | per token: flags u8 (bit 0 control, bit 1 end-of-generation) | len u16
| bytes.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import numpy.typing as npt

STEP_MAGIC = b"FLS2"
VOCAB_MAGIC = b"FLV1"
FMT_F16, FMT_INT8 = 0, 1
FORMATS = {"f16": FMT_F16, "int8": FMT_INT8}
_HEADER = struct.Struct("<4sBBHI")

# Server limits (defaults; `floe cloud serve` flags change them).
DEFAULT_MAX_K = 20
MAX_DRAFT = 16
MAX_BODY_BYTES = 64 * 1024


class ProtocolError(ValueError):
    """A frame that does not parse: truncated, wrong magic, inconsistent sizes or values."""


@dataclass(frozen=True)
class Position:
    token: int                      # draft / scored token at this position, -1 for none
    ids: npt.NDArray[np.int32]      # k cloud ids, log-prob descending (absent entries removed)
    logprobs: npt.NDArray[np.float32]


@dataclass(frozen=True)
class StepFrame:
    n_past: int                     # committed tokens in the session after this step's append
    positions: list[Position]


def encode_step(n_past: int, positions: Sequence[tuple[int, Sequence[int], Sequence[float]]], k: int,
               fmt: str = "f16") -> bytes:
    """Positions as (token, ids, logprobs), at most k entries each (-inf entries are left out)."""
    f = FORMATS[fmt]
    if not 1 <= k <= 255 or len(positions) > 0xFFFF:
        raise ValueError("k must be in 1..255 and positions fewer than 65536")
    out = [_HEADER.pack(STEP_MAGIC, f, k, len(positions), n_past)]
    for token, ids, lps in positions:
        if len(ids) != len(lps) or len(ids) > k:
            raise ValueError("each position needs matching ids and logprobs, at most k")
        lp = np.minimum(np.asarray(lps, np.float64), 0.0)
        keep = np.isfinite(lp)
        idv, lp = np.asarray(ids, np.int64)[keep].astype("<u4"), lp[keep]
        out.append(struct.pack("<iB", token, len(lp)))
        if not len(lp):
            continue
        if f == FMT_F16:
            out += [idv.tobytes(), lp.astype("<f2").tobytes()]
        else:
            scale = float(-lp.min()) / 254.0 if lp.min() < 0 else 1.0
            q = np.clip(np.rint(-lp / scale), 0, 254).astype(np.uint8)
            out += [struct.pack("<f", scale), idv.tobytes(), q.tobytes()]
    return b"".join(out)


def decode_step(data: bytes, n_vocab: Optional[int] = None) -> StepFrame:
    """Parse a step frame; ProtocolError on anything malformed (a lying cloud must not crash the device)."""
    if len(data) < _HEADER.size:
        raise ProtocolError("step frame shorter than its header")
    magic, f, k, n_pos, n_past = _HEADER.unpack_from(data)
    if magic != STEP_MAGIC or f not in (FMT_F16, FMT_INT8) or k == 0:
        raise ProtocolError("not a floe step frame (magic, format or k)")
    lp_size = 2 if f == FMT_F16 else 1
    positions = []
    off = _HEADER.size
    for _ in range(n_pos):
        if off + 5 > len(data):
            raise ProtocolError("truncated step frame")
        token, n = struct.unpack_from("<iB", data, off)
        off += 5
        if n > k:
            raise ProtocolError(f"a position has {n} entries, more than k = {k}")
        scale = 1.0
        if f == FMT_INT8 and n:
            if off + 4 > len(data):
                raise ProtocolError("truncated step frame")
            (scale,) = struct.unpack_from("<f", data, off)
            off += 4
            if not np.isfinite(scale) or scale <= 0:
                raise ProtocolError("bad int8 scale")
        if off + n * (4 + lp_size) > len(data):
            raise ProtocolError("truncated step frame")
        ids = np.frombuffer(data, "<u4", n, off).astype(np.int64)
        off += 4 * n
        if f == FMT_F16:
            lp = np.frombuffer(data, "<f2", n, off).astype(np.float32)
        else:
            lp = (-np.frombuffer(data, np.uint8, n, off).astype(np.float32) * np.float32(scale)).astype(np.float32)
        off += lp_size * n
        if not np.isfinite(lp).all() or (lp > 0).any():
            raise ProtocolError("log-probs must be finite and <= 0")
        if n_vocab is not None and ((ids >= n_vocab).any() or token >= n_vocab):
            raise ProtocolError("token id outside the cloud vocabulary")
        if token < -1 or len(np.unique(ids)) != len(ids):
            raise ProtocolError("bad draft token or repeated ids")
        positions.append(Position(int(token), ids.astype(np.int32), lp))
    if off != len(data):
        raise ProtocolError(f"{len(data) - off} trailing bytes after the step frame")
    return StepFrame(int(n_past), positions)


def encode_vocab(tokens: Sequence[Optional[bytes]], control: Sequence[bool], eog: Sequence[bool]) -> bytes:
    out = [VOCAB_MAGIC, struct.pack("<I", len(tokens))]
    for t, c, e in zip(tokens, control, eog):
        b = t or b""
        out.append(struct.pack("<BH", int(bool(c)) | (int(bool(e)) << 1), len(b)) + b)
    return b"".join(out)


def decode_vocab(data: bytes) -> tuple[list[Optional[bytes]], list[bool], list[bool]]:
    """(bytes per token, None for control / empty ones; control flags; end-of-generation flags)."""
    if len(data) < 8 or data[:4] != VOCAB_MAGIC:
        raise ProtocolError("not a floe vocabulary frame")
    (n,) = struct.unpack_from("<I", data, 4)
    if n > 4 * len(data):
        raise ProtocolError("vocabulary frame claims more tokens than it can hold")
    tokens: list[Optional[bytes]] = []
    control, eog = [], []
    off = 8
    for _ in range(n):
        if off + 3 > len(data):
            raise ProtocolError("truncated vocabulary frame")
        flags, ln = struct.unpack_from("<BH", data, off)
        off += 3
        if off + ln > len(data):
            raise ProtocolError("truncated vocabulary frame")
        b = data[off: off + ln]
        off += ln
        control.append(bool(flags & 1))
        eog.append(bool(flags & 2))
        tokens.append(None if control[-1] or not b else bytes(b))
    if off != len(data):
        raise ProtocolError("trailing bytes after the vocabulary")
    return tokens, control, eog


def vocab_fingerprint(frame: bytes) -> str:
    return hashlib.sha256(frame).hexdigest()[:32]
