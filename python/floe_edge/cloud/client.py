"""The device's cloud link: one interface (`CloudBackend`), the HTTP transport under it, and the floe protocol backend.

API (both backends; `floe_edge.cloud.openai_backend.OpenAICompletionsBackend` is the other one)::

    await link.open(prompt_ids_edge, prompt_bytes, deadline=None)          # start a generation (the shared prompt)
    step = await link.step(accepted_edge_ids, accepted_bytes, k=20, n_draft=8, deadline=t)       # cloud-led
    step = await link.step(accepted_edge_ids, accepted_bytes, k=20, score_edge_ids=d,
                           score_bytes=b, want=[2, 3], deadline=t)                               # edge-led
    await link.close()                                                      # end the session, drop the connection

`deadline` is an absolute `time.monotonic()` instant. `accepted_*` are the tokens committed since the previous step()
call, each passed exactly once (also when that call fails: the link keeps the whole history and resends what the
cloud may have missed). A `CloudStep` holds, in EDGE ids, `draft` (the cloud's greedy draft re-tokenized for the edge,
or the scored edge draft) and `evidence`, len(draft) + 1 entries: `evidence[i]` is the cloud's top-k for the token
after draft[:i] (`Evidence`: edge ids and log-probs, descending), or None where the cloud has no distribution at that
point or it was not asked for. `want` lists the positions whose top-k the caller needs (default all): a
same-vocabulary cloud skips the others' output layer; a text session computes all (the cloud's positions are not
known before it tokenizes). Errors are `CloudError` subclasses, never anything else from the network: `CloudTimeout`
(the deadline passed; the request was abandoned), `CloudUnavailable` (circuit breaker open: refused without a round
trip), `CloudConnectionError`, `CloudHTTPError` (an error status), `CloudProtocolError` (a malformed or lying
answer). Bad arguments are ValueError. `link.available` says whether a step would be let through now.

Transport (`Transport`): one persistent keep-alive connection (httpx, max_connections=1). The deadline covers the
whole request, retries and reading the body; when it passes the request is cancelled (its connection closed) and
CloudTimeout raised at once. Retries, with exponential backoff (20 ms, x2, equal jitter) and only while the deadline
leaves room: connection failures before any response byte (a request that may have reached the server only if it is
idempotent, see below), and 503. A failure after the response started is not retried. Every failure (timeouts,
connection errors, error statuses, malformed answers) counts for the circuit breaker (`breaker.CircuitBreaker`),
except a 404 for an unknown session, which is a proper answer. Bytes are counted per request line + headers + body
each way (headers by their serialized size), cumulatively (`link.stats`) and per step.

Sessions (floe protocol): `open` creates the cloud session in a background task; a step waits for it only until its
own deadline, so a long cloud prefill does not fail the session (the next step finds it ready). A step that appends
tokens is not idempotent: if it fails after it may have reached the server, the session is abandoned (deleted
later) and the next attempt opens a fresh one with the whole history instead of appending twice; a connection reset
before any response is retried that way within the same step. A 404 (session expired or unknown) reopens
transparently; so does a session idle longer than the server's `idle_expiry_s`.

Vocabularies: with the same vocabulary on both sides (the cloud's vocabulary frame has the edge's bytes for every
token, or `same_vocab=True`) the link opens an id session and the evidence is the cloud's top-k as is. Otherwise it
fetches /v1/floe/vocab once (cached on disk under `vocab_map.vocab_maps_dir()` by fingerprint, with the fingerprint
of each server URL remembered so later runs skip the download; the session's fingerprint verifies it), builds
`VocabMap.between(cloud vocabulary, edge tokenizer)`, opens a text session and sends accepted text as bytes. Either
way a cloud draft stops before its first end-of-generation or control token: the distribution that predicted it is
kept, so the end token can still be fused.

Cross-vocabulary alignment rule. Byte offsets are counted from the end of the committed text. Cloud position j sits
at the end of cloud tokens 0..j-1 (its draft tokens, or the scored text as the cloud tokenized it); edge position i
at the end of edge tokens 0..i-1 (the cloud draft's bytes re-tokenized by the edge tokenizer, or the scored edge
draft). Edge position i gets cloud position j's top-k, remapped to edge ids with `VocabMap.remap` ("the continuation
starts with this edge token"), iff both sit at the same byte offset; otherwise None. Where several positions share
an offset (a token without bytes) only the first one counts. Position 0 and the end of a cloud draft are always
aligned; in between, the shared token boundaries (for English text, most word boundaries).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import random
import re
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, Protocol, Sequence, TypeVar, Union, runtime_checkable
from urllib.parse import quote

import httpx
import numpy as np
import numpy.typing as npt

from ..vocab_map import TokenVocab, VocabMap, vocab_maps_dir
from . import protocol
from .breaker import BreakerState, CircuitBreaker

__all__ = [
    "BreakerState",
    "CircuitBreaker",
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
    "LinkStats",
    "SessionExpired",
    "Transport",
    "align_positions",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

_MASS_SLACK = {"f16": 1e-2, "int8": 0.25}  # top-k mass above 1 that is rounding (int8 quantizes coarsely)


# ----------------------------------------------------------------------------------------------------------------
# Errors


class CloudError(Exception):
    """Anything that kept the cloud from answering a step. The scheduler goes on without the cloud."""

    counts = True  # a failure for the circuit breaker

    def __init__(self, message: str, *, maybe_delivered: bool = False, response_started: bool = False) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered    # the server may have received (and applied) the request
        self.response_started = response_started  # the failure came after the response began


class CloudTimeout(CloudError):
    """The deadline passed before the answer was complete (the request was abandoned)."""


class CloudUnavailable(CloudError):
    """The circuit breaker is open: refused without a round trip."""

    def __init__(self, message: str, retry_in: float) -> None:
        super().__init__(message)
        self.retry_in = retry_in


class CloudConnectionError(CloudError):
    """Could not connect, or the connection broke."""


class CloudProtocolError(CloudError):
    """A malformed or inconsistent answer (wrong content type, bad frame, ids out of range, NaN log-probs...)."""


class CloudHTTPError(CloudError):
    """An error status with the server's {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class SessionExpired(CloudHTTPError):
    """404 on a session: expired or unknown. Handled inside the link (reopened), a proper answer for the breaker."""

    counts = False


# ----------------------------------------------------------------------------------------------------------------
# Results and the interface


@dataclass(frozen=True)
class Evidence:
    """The cloud's distribution at one edge position: a sparse top-k in edge ids, log-prob descending."""

    ids: npt.NDArray[np.int32]
    logprobs: npt.NDArray[np.float32]
    kept: float = 1.0  # fraction of the cloud's top-k probability mass that maps to these edge ids


@dataclass(frozen=True)
class CloudStep:
    draft: list[int]                   # edge ids: the cloud's draft re-tokenized, or the scored edge draft
    evidence: list[Optional[Evidence]]  # len(draft) + 1: after draft[:i]; None where nothing aligns
    rtt_ms: float                      # wall time of the step() call
    bytes_sent: int                    # this step's traffic (including retries and a reopen)
    bytes_received: int
    requests: int = 1                  # HTTP requests this step made
    server_ms: Optional[float] = None  # server compute time, when it reports one (Server-Timing: dur)


@dataclass
class LinkStats:
    """Cumulative counters of one transport."""

    requests: int = 0
    retries: int = 0
    failures: int = 0
    timeouts: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    reopened: int = 0  # sessions reopened (404, idle expiry, or after a failure that may have applied an append)


@runtime_checkable
class CloudBackend(Protocol):
    """What the scheduler / HybridGenerator calls. See the module docstring."""

    can_score: bool  # supports edge-led scoring (score_edge_ids)

    @property
    def available(self) -> bool: ...
    @property
    def stats(self) -> LinkStats: ...
    async def open(self, prompt_ids_edge: Sequence[int], prompt_bytes: bytes, *,
                   deadline: Optional[float] = None) -> None: ...
    async def step(self, accepted_edge_ids: Sequence[int], accepted_bytes: bytes, *, k: int, n_draft: int = 0,
                   score_edge_ids: Sequence[int] = (), score_bytes: bytes = b"",
                   want: Optional[Sequence[int]] = None, deadline: float) -> CloudStep: ...
    async def close(self) -> None: ...


# ----------------------------------------------------------------------------------------------------------------
# Transport


@dataclass(frozen=True)
class Reply:
    status: int
    headers: httpx.Headers
    content: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def error(self) -> CloudHTTPError:
        code, message = "http_error", ""
        try:
            e = json.loads(self.content)["error"]
            code, message = str(e.get("code", code))[:100], str(e.get("message", ""))[:300]
        except Exception:  # an error body is informative only
            pass
        return CloudHTTPError(self.status, code, message)

    def expect(self, content_type: str) -> bytes:
        """The body of a 2xx answer of this content type; CloudHTTPError / CloudProtocolError otherwise."""
        if not 200 <= self.status < 300:
            raise self.error()
        if self.content_type != content_type:
            raise CloudProtocolError(f"expected {content_type}, got {self.content_type or 'no content type'!r}")
        return self.content

    def json(self) -> Any:
        try:
            return json.loads(self.expect("application/json"))
        except ValueError as exc:
            raise CloudProtocolError(f"malformed JSON: {exc}") from None

    def server_ms(self) -> Optional[float]:
        m = re.search(r"dur=([0-9.]+)", self.headers.get("server-timing", ""))
        return float(m.group(1)) if m else None


def _request_size(r: httpx.Request) -> int:
    line = len(r.method) + len(r.url.raw_path) + len(" HTTP/1.1\r\n") + 1
    return line + sum(len(k) + len(v) + 4 for k, v in r.headers.raw) + 2 + len(r.content)


def _response_head_size(r: httpx.Response) -> int:
    line = len("HTTP/1.1 200 \r\n") + len(r.reason_phrase)
    return line + sum(len(k) + len(v) + 4 for k, v in r.headers.raw) + 2


class Transport:
    """HTTP to one cloud: one keep-alive connection, overall deadlines, retries before the first byte and on 503,
    a circuit breaker, byte counts. The httpx client is created on first use (in the running loop) and dropped by
    aclose(); the transport can be used again afterwards."""

    def __init__(self, base_url: str, *, api_key: Optional[str] = None,
                 verify: Union[bool, str, ssl.SSLContext] = True, breaker: Optional[CircuitBreaker] = None,
                 max_retries: int = 5, backoff_s: float = 0.02, min_attempt_s: float = 0.005,
                 trust_env: bool = False, headers: Optional[dict[str, str]] = None) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an http(s) URL, not {base_url!r}")
        self.base_url = str(base_url).rstrip("/")
        self.breaker = breaker or CircuitBreaker()
        self.max_retries, self.backoff_s, self.min_attempt_s = max_retries, backoff_s, min_attempt_s
        self.stats = LinkStats()
        # the TLS context is built once (loading CA certificates takes ~50 ms: not inside a step's deadline), and
        # not at all for plain http
        self._verify: Union[bool, ssl.SSLContext] = False
        if url.scheme == "https":
            if isinstance(verify, str):  # a CA bundle file or directory
                path = Path(verify)
                self._verify = ssl.create_default_context(cafile=None if path.is_dir() else str(path),
                                                          capath=str(path) if path.is_dir() else None)
            else:
                self._verify = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
        self._trust_env = trust_env
        self._headers = {"user-agent": "floe-edge", "accept-encoding": "identity", **(headers or {})}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._client: Optional[httpx.AsyncClient] = None

    @property
    def available(self) -> bool:
        return self.breaker.would_allow()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url, headers=self._headers, verify=self._verify, trust_env=self._trust_env,
                timeout=httpx.Timeout(None),  # the overall deadline governs, not per-chunk timeouts
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=30.0))
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def call(self, method: str, path: str, *, deadline: float, parse: Callable[[Reply], T],
                   json: Any = None, idempotent: bool = True, max_bytes: int = 1 << 20) -> T:
        """One request (with retries) finished by `deadline`, its reply checked by `parse` (which raises
        CloudError subclasses, or ValueError / KeyError / TypeError for a malformed answer)."""
        if deadline - time.monotonic() <= 0:
            raise CloudTimeout("the deadline passed before the request was sent")
        if not self.breaker.allow():
            wait = self.breaker.retry_in()
            raise CloudUnavailable(f"cloud circuit open (next probe in {wait * 1e3:.0f} ms)", wait)
        verdict: Optional[bool] = None  # None: no verdict (cancelled by the caller)
        try:
            reply = await _by_deadline(self._attempts(method, path, json, deadline, idempotent, max_bytes), deadline)
            if reply is None:
                self.stats.timeouts += 1
                raise CloudTimeout(f"{method} {path}: no complete answer by the deadline", maybe_delivered=True)
            try:
                result = parse(reply)
            except CloudProtocolError as exc:  # an answer came: whatever the request did is done
                exc.maybe_delivered = exc.response_started = True
                raise
            except (ValueError, KeyError, TypeError, IndexError) as exc:  # protocol.ProtocolError included
                raise CloudProtocolError(f"malformed answer to {method} {path}: {exc}"[:300], maybe_delivered=True,
                                         response_started=True) from None
            verdict = True
            return result
        except CloudError as exc:
            verdict = not exc.counts
            raise
        finally:
            if verdict is True:
                self.breaker.record_success()
            elif verdict is False:
                self.stats.failures += 1
                self.breaker.record_failure()
            else:
                self.breaker.release()

    async def _attempts(self, method: str, path: str, body: Any, deadline: float, idempotent: bool,
                        max_bytes: int) -> Reply:
        delay = self.backoff_s
        for attempt in range(self.max_retries + 1):
            last: Union[Reply, CloudConnectionError]
            try:
                last = await self._once(method, path, body, max_bytes)
                if last.status != 503:
                    return last
            except CloudConnectionError as exc:
                if exc.response_started or (exc.maybe_delivered and not idempotent):
                    raise
                last = exc
            pause = delay * (0.5 + 0.5 * random.random())  # equal jitter
            if isinstance(last, Reply):
                pause = max(pause, _retry_after(last))
            if attempt == self.max_retries or time.monotonic() + pause + self.min_attempt_s > deadline:
                break
            self.stats.retries += 1
            await asyncio.sleep(pause)
            delay *= 2
        if isinstance(last, Reply):
            return last  # the final 503: parse() turns it into CloudHTTPError
        raise last

    async def _once(self, method: str, path: str, body: Any, max_bytes: int) -> Reply:
        client = self._http()
        request = client.build_request(method, path, json=body)
        self.stats.requests += 1
        try:
            response = await client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never reached the server
            raise CloudConnectionError(f"cannot connect to {self.base_url}: {exc}") from None
        except (httpx.HTTPError, OSError) as exc:  # sent (perhaps in part), then no response
            self.stats.bytes_sent += _request_size(request)
            raise CloudConnectionError(f"{method} {path}: connection lost before the response: {exc!r}",
                                       maybe_delivered=True) from None
        self.stats.bytes_sent += _request_size(request)
        data = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise CloudProtocolError(f"{method} {path}: answer larger than {max_bytes} bytes",
                                             maybe_delivered=True, response_started=True)
        except httpx.DecodingError as exc:
            raise CloudProtocolError(f"{method} {path}: undecodable body: {exc}", maybe_delivered=True,
                                     response_started=True) from None
        except (httpx.HTTPError, OSError) as exc:
            raise CloudConnectionError(f"{method} {path}: connection lost in the response body: {exc!r}",
                                       maybe_delivered=True, response_started=True) from None
        finally:
            self.stats.bytes_received += _response_head_size(response) + response.num_bytes_downloaded
            await response.aclose()
        return Reply(response.status_code, response.headers, bytes(data))


async def _by_deadline(coro: Awaitable[T], deadline: float) -> Optional[T]:
    """The result of `coro`, or None when the deadline passes first. Then the work is cancelled but not waited
    for: closing its connection finishes in the background, after the caller has its answer."""
    task = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait({task}, timeout=max(deadline - time.monotonic(), 0.0))
    except BaseException:  # the caller was cancelled
        task.cancel()
        raise
    if done:
        return task.result()
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieve whatever it ends with
    return None


def _retry_after(reply: Reply) -> float:
    try:
        return min(max(float(reply.headers.get("retry-after", "0")), 0.0), 60.0)
    except ValueError:
        return 0.0


# ----------------------------------------------------------------------------------------------------------------
# Alignment (see the module docstring)


def byte_offsets(pieces: Sequence[Optional[bytes]]) -> list[Optional[int]]:
    """Offsets of the positions before, between and after pieces (len + 1 entries); after a None piece (bytes
    unknown) every later offset is unknown."""
    out: list[Optional[int]] = [0]
    off: Optional[int] = 0
    for p in pieces:
        off = None if off is None or p is None else off + len(p)
        out.append(off)
    return out


def spelled_offsets(pieces: Sequence[Optional[bytes]], target: bytes) -> list[Optional[int]]:
    """Like byte_offsets, but only while the pieces spell `target` from its start (unknown after a mismatch)."""
    out: list[Optional[int]] = [0]
    off: Optional[int] = 0
    for p in pieces:
        off = None if off is None or p is None or not target.startswith(p, off) else off + len(p)
        out.append(off)
    return out


def align_positions(edge_offsets: Sequence[Optional[int]],
                    cloud_offsets: Sequence[Optional[int]]) -> list[Optional[int]]:
    """For each edge position, the index of the cloud position at the same byte offset, or None. Only the first
    position at an offset counts, on either side."""
    def first(offsets: Sequence[Optional[int]]) -> dict[int, int]:
        at: dict[int, int] = {}
        for j, off in enumerate(offsets):
            if off is not None and off not in at:
                at[off] = j
        return at

    cloud, edge = first(cloud_offsets), first(edge_offsets)
    return [cloud.get(off) if off is not None and edge.get(off) == i else None for i, off in enumerate(edge_offsets)]


def edge_piece(edge: TokenVocab, id: int) -> bytes:
    return b"" if edge.is_control(id) else bytes(edge.token_bytes(id))


def retokenize(edge: TokenVocab, data: bytes) -> tuple[list[int], list[Optional[int]]]:
    """The edge tokens of `data` and their position offsets; ([], [0]) if the tokens do not spell `data` back (a
    tokenizer that normalizes text): then only position 0 can be aligned."""
    if not data:
        return [], [0]
    ids = [int(t) for t in edge.tokenize(data, add_bos=False, special=False)]
    pieces = [edge_piece(edge, t) for t in ids]
    if b"".join(pieces) != data:
        return [], [0]
    return ids, byte_offsets(pieces)


def check_step_args(k: int, n_draft: int, score: Sequence[int], want: Optional[Sequence[int]] = None,
                     max_score: int = protocol.MAX_DRAFT) -> Optional[list[int]]:
    """ValueError for bad step arguments; `want` as a sorted list (None: all positions)."""
    if not 1 <= k <= 255:
        raise ValueError(f"k must be in 1..255, not {k}")
    if not 0 <= n_draft <= protocol.MAX_DRAFT:
        raise ValueError(f"n_draft must be in 0..{protocol.MAX_DRAFT}, not {n_draft}")
    if score and n_draft:
        raise ValueError("n_draft and score_edge_ids exclude each other")
    if len(score) > max_score:
        raise ValueError(f"at most {max_score} tokens can be scored, not {len(score)}")
    if want is None:
        return None
    out = sorted(int(w) for w in want)
    n_pos = 1 + max(n_draft, len(score))
    if len(set(out)) != len(out) or (out and not 0 <= out[0] <= out[-1] < n_pos):
        raise ValueError(f"want must list distinct positions in 0..{n_pos - 1}")
    return out


def checked_topk(ids: npt.NDArray[Any], lps: npt.NDArray[np.float32], k: int,
                 slack: float) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """A top-k as a distribution must look: at most k entries, descending, probabilities adding up to <= 1 (up to
    rounding, which is renormalized away). ValueError otherwise."""
    if len(ids) > k:
        raise ValueError(f"{len(ids)} entries for k={k}")
    lps = np.asarray(lps, np.float32)
    if lps.size and (np.diff(lps) > 0).any():
        raise ValueError("top-k log-probs are not sorted in descending order")
    mass = float(np.exp(lps.astype(np.float64)).sum())
    if mass > 1.0 + slack:
        raise ValueError(f"top-k probabilities add up to {mass:.4g} > 1")
    if mass > 1.0:
        lps = (lps - np.float32(math.log(mass))).astype(np.float32)
    return np.asarray(ids, np.int32), lps


# ----------------------------------------------------------------------------------------------------------------
# The cloud's vocabulary (cross-vocabulary path)


@dataclass(frozen=True)
class CloudVocab:
    """A decoded vocabulary frame. As a `TokenVocab` it is the source side of a VocabMap."""

    fingerprint: str
    tokens: list[Optional[bytes]]
    control: list[bool]
    eog: list[bool]

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def token_bytes(self, id: int) -> bytes:
        return self.tokens[id] or b""

    def is_control(self, id: int) -> bool:
        return self.control[id] or self.tokens[id] is None

    def is_eog(self, id: int) -> bool:
        return self.eog[id]

    def tokenize(self, text: Union[str, bytes], add_bos: bool = True, special: bool = True) -> list[int]:
        raise NotImplementedError("the cloud tokenizes on the cloud")

    @classmethod
    def from_frame(cls, frame: bytes) -> "CloudVocab":
        tokens, control, eog = protocol.decode_vocab(frame)
        return cls(protocol.vocab_fingerprint(frame), tokens, control, eog)

    def same_as(self, edge: TokenVocab) -> bool:
        """Same ids for the same bytes: every token with bytes on both sides has the same bytes."""
        if self.n_vocab != edge.n_vocab:
            return False
        for i, b in enumerate(self.tokens):
            if b is not None and not edge.is_control(i) and bytes(edge.token_bytes(i)) != b:
                return False
        return True


class VocabCache:
    """Vocabulary frames on disk by fingerprint (`cloud-vocab-<fp>.flv`, self-verifying: the name is the hash),
    and the fingerprint last seen per server URL (`cloud-servers.json`)."""

    def __init__(self, directory: Optional[Path] = None) -> None:
        self.dir = Path(directory) if directory is not None else vocab_maps_dir()

    def _index(self) -> dict[str, str]:
        try:
            data = json.loads((self.dir / "cloud-servers.json").read_text())
            return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def lookup(self, url: str) -> Optional[bytes]:
        fp = self._index().get(url)
        if fp is None or not re.fullmatch(r"[0-9a-f]{32}", fp):
            return None
        try:
            frame = (self.dir / f"cloud-vocab-{fp}.flv").read_bytes()
        except OSError:
            return None
        return frame if protocol.vocab_fingerprint(frame) == fp else None

    def store(self, url: str, frame: bytes) -> None:
        fp = protocol.vocab_fingerprint(frame)
        index = self._index()
        index[url] = fp
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.dir / f"cloud-vocab-{fp}.flv", frame)
            _write_atomic(self.dir / "cloud-servers.json", json.dumps(index, indent=1).encode())
        except OSError as exc:  # a cache that cannot be written costs a download next time
            log.warning("could not cache the cloud vocabulary in %s: %s", self.dir, exc)

    def forget(self, url: str) -> None:
        index = self._index()
        if index.pop(url, None) is not None:
            try:
                _write_atomic(self.dir / "cloud-servers.json", json.dumps(index, indent=1).encode())
            except OSError:
                pass


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # like the vocabulary maps beside it (mkstemp makes 0600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------------------------------
# The floe protocol backend


@dataclass
class _Session:
    sid: str
    n_past: int
    n_vocab: int
    max_k: int
    idle_expiry_s: float
    fingerprint: str
    last_used: float = field(default_factory=time.monotonic)
    n_bytes: int = 0  # committed bytes (text sessions): the base of the next append


def _parse_session(reply: Reply) -> _Session:
    j = reply.json()
    sid = j["session"]
    if not isinstance(sid, str) or not 0 < len(sid) <= 256:
        raise ValueError("bad session id")

    def num(name: str, lo: float, kind: type = int) -> Any:
        v = j[name]
        if isinstance(v, bool) or not isinstance(v, (int, float) if kind is float else int) or not v >= lo:
            raise ValueError(f"bad {name}: {v!r}")
        return kind(v)

    return _Session(sid, num("n_past", 0), num("n_vocab", 1), min(num("max_k", 1), 255),
                    num("idle_expiry_s", 0.0, float), str(j.get("fingerprint", "")))


class FloeCloudBackend:
    """The floe token-id protocol (`floe cloud serve`). `edge_tokenizer`: the edge's `TokenVocab` (our
    `_native.Tokenizer`, a NativeSLM's `.tokenizer`). `same_vocab`: None decides from the cloud's vocabulary frame;
    True skips that (id sessions); False forces the text path. See the module docstring."""

    can_score = True

    def __init__(self, base_url: str, edge_tokenizer: TokenVocab, *, api_key: Optional[str] = None,
                 verify: Union[bool, str, ssl.SSLContext] = True, same_vocab: Optional[bool] = None,
                 fmt: str = "f16", breaker: Optional[CircuitBreaker] = None, open_timeout_s: float = 30.0,
                 close_timeout_s: float = 1.0, cache_dir: Union[str, os.PathLike, None] = None,
                 transport: Optional[Transport] = None) -> None:
        if fmt not in protocol.FORMATS:
            raise ValueError(f"fmt must be one of {sorted(protocol.FORMATS)}")
        self.transport = transport or Transport(base_url, api_key=api_key, verify=verify, breaker=breaker)
        self.edge = edge_tokenizer
        self.same_vocab, self.fmt = same_vocab, fmt
        self.open_timeout_s, self.close_timeout_s = open_timeout_s, close_timeout_s
        self._cache = VocabCache(Path(cache_dir) if cache_dir is not None else None)
        self.mode: Optional[str] = None            # "ids" or "text", once known
        self.cloud_vocab: Optional[CloudVocab] = None
        self.vocab_map: Optional[VocabMap] = None
        self._history_ids: list[int] = []          # the committed sequence: shared prompt + every accepted token
        self._history_bytes = bytearray()
        self._pending_ids: list[int] = []          # accepted, not yet in the (opening) session
        self._pending_bytes = bytearray()
        self._session: Optional[_Session] = None
        self._opening: Optional[asyncio.Task[None]] = None
        self._vocab_setup: Optional[asyncio.Task[str]] = None  # outlives open(): only close() cancels it
        self._stale: list[str] = []                # sessions to delete (abandoned after a failure)

    # -- state -----------------------------------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return self.transport.available

    @property
    def breaker(self) -> CircuitBreaker:
        return self.transport.breaker

    @property
    def stats(self) -> LinkStats:
        return self.transport.stats

    async def __aenter__(self) -> "FloeCloudBackend":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the interface ---------------------------------------------------------------------------------------------
    async def open(self, prompt_ids_edge: Sequence[int], prompt_bytes: bytes, *,
                   deadline: Optional[float] = None) -> None:
        """Start a generation with the shared prompt. Waits for the cloud session until `deadline` (default: the
        open timeout), then raises CloudTimeout; the session keeps opening in the background either way."""
        await self._end_session(delete=False)  # the new session's opening deletes the old one
        self._history_ids, self._history_bytes = [int(t) for t in prompt_ids_edge], bytearray(prompt_bytes)
        self._pending_ids, self._pending_bytes = [], bytearray()
        await self._ready(deadline if deadline is not None else time.monotonic() + self.open_timeout_s)

    async def step(self, accepted_edge_ids: Sequence[int], accepted_bytes: bytes, *, k: int, n_draft: int = 0,
                   score_edge_ids: Sequence[int] = (), score_bytes: bytes = b"",
                   want: Optional[Sequence[int]] = None, deadline: float) -> CloudStep:
        score = [int(t) for t in score_edge_ids]
        wanted = check_step_args(k, n_draft, score, want)
        accepted = [int(t) for t in accepted_edge_ids]
        self._history_ids += accepted
        self._history_bytes += accepted_bytes
        self._pending_ids += accepted
        self._pending_bytes += accepted_bytes
        t0, s = time.monotonic(), self.stats
        c0 = (s.bytes_sent, s.bytes_received, s.requests)
        for _ in range(3):  # the session may need reopening (404, or a reset that may have applied the append)
            session = await self._ready(deadline)
            appends = bool(self._pending_ids or self._pending_bytes)
            try:
                draft, evidence, n_past, server_ms = await self._post_step(session, k, n_draft, score, score_bytes,
                                                                           wanted, deadline)
            except SessionExpired:
                self._drop_session(stale=False)
                continue
            except CloudHTTPError as exc:
                if exc.status == 409:  # the session and the link disagree on what is committed: start over
                    self._drop_session(stale=True)
                    continue
                raise
            except CloudError as exc:
                # an append that may have reached the server stays pending: it carries its base, so sending it
                # again applies it once
                if appends and exc.maybe_delivered and isinstance(exc, CloudConnectionError) \
                        and not exc.response_started:
                    continue
                raise
            session.n_past, session.last_used = n_past, time.monotonic()
            session.n_bytes += len(self._pending_bytes)
            self._pending_ids, self._pending_bytes = [], bytearray()
            return CloudStep(draft, evidence, (time.monotonic() - t0) * 1e3, s.bytes_sent - c0[0],
                             s.bytes_received - c0[1], s.requests - c0[2], server_ms)
        raise CloudConnectionError("the cloud session kept disappearing")

    async def close(self) -> None:
        """End the session (best effort, bounded by close_timeout_s) and drop the connection."""
        try:
            await self._end_session()
        finally:
            setup, self._vocab_setup = self._vocab_setup, None
            if setup is not None and not setup.done():
                setup.cancel()
                await asyncio.gather(setup, return_exceptions=True)
            await self.transport.aclose()

    # -- sessions --------------------------------------------------------------------------------------------------
    async def _end_session(self, delete: bool = True) -> None:
        task, self._opening = self._opening, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._drop_session(stale=True, reopen=False)
        if delete:
            await self._delete_stale(time.monotonic() + self.close_timeout_s)

    def _drop_session(self, stale: bool, reopen: bool = True) -> None:
        if self._session is not None:
            if stale:
                self._stale.append(self._session.sid)
            self._session = None
            self.stats.reopened += reopen

    async def _delete_stale(self, deadline: float) -> None:
        while self._stale and time.monotonic() < deadline:
            sid = self._stale.pop()
            try:
                await self.transport.call("DELETE", f"/v1/floe/sessions/{quote(sid, safe='')}", deadline=deadline,
                                          parse=lambda r: None if r.status == 404 else r.expect("application/json"))
            except CloudError as exc:  # it expires on the server anyway
                log.debug("could not delete a cloud session: %s", exc)
        self._stale.clear()

    async def _ready(self, deadline: float) -> _Session:
        """The open session, opening one (in a background task) if needed; CloudTimeout if not ready by deadline."""
        s = self._session
        if s is not None and time.monotonic() - s.last_used > 0.9 * s.idle_expiry_s > 0:
            self._drop_session(stale=False)  # expired on the server by now: skip the 404 round trip
        if self._session is not None:
            return self._session
        if self._opening is None or self._opening.done():
            ids, data = list(self._history_ids), bytes(self._history_bytes)
            self._pending_ids, self._pending_bytes = [], bytearray()
            self._opening = asyncio.ensure_future(self._open_session(ids, data))
            self._opening.add_done_callback(self._opened)
        try:
            await asyncio.wait_for(asyncio.shield(self._opening), max(deadline - time.monotonic(), 0.0))
        except asyncio.TimeoutError:
            raise CloudTimeout("the cloud session is still opening") from None
        assert self._session is not None
        return self._session

    def _opened(self, task: "asyncio.Task[None]") -> None:
        if self._opening is task:
            self._opening = None
        if not task.cancelled() and task.exception() is not None:  # retrieved: reported to waiting steps
            log.debug("opening a cloud session failed: %s", task.exception())

    async def _open_session(self, ids: list[int], data: bytes, retry: bool = True) -> None:
        try:
            await self._create_session(ids, data, retry)
        except (ValueError, OSError) as exc:  # a bad vocabulary frame, a vocabulary map that cannot be built
            raise CloudProtocolError(f"cannot use the cloud's vocabulary: {exc}") from None

    async def _create_session(self, ids: list[int], data: bytes, retry: bool) -> None:
        deadline = time.monotonic() + self.open_timeout_s
        await self._delete_stale(min(deadline, time.monotonic() + self.close_timeout_s))
        mode = await self._resolve_mode(deadline)
        body = {"prompt": ids} if mode == "ids" else {"prompt_b64": base64.b64encode(data).decode()}
        s = await self.transport.call("POST", "/v1/floe/sessions", json=body, deadline=deadline,
                                      parse=_parse_session)
        v = self.cloud_vocab
        if v is not None and s.fingerprint and s.fingerprint != v.fingerprint:
            # the server changed models since its vocabulary was cached: learn the new one, once
            self._stale.append(s.sid)
            self._cache.forget(self.transport.base_url)
            self.mode = self.cloud_vocab = self.vocab_map = None
            if not retry:
                raise CloudProtocolError("the session's vocabulary fingerprint differs from the vocabulary's")
            return await self._create_session(ids, data, retry=False)
        if mode == "ids" and s.n_vocab != self.edge.n_vocab:
            self._stale.append(s.sid)
            raise CloudProtocolError(f"same_vocab, but the cloud has {s.n_vocab} tokens and the edge "
                                     f"{self.edge.n_vocab}")
        s.n_bytes = len(data)
        self._session = s

    async def _resolve_mode(self, deadline: float) -> str:
        """"ids" or "text". Learning the cloud's vocabulary (a download, hashing, maybe building the map: seconds
        for 262144 tokens) runs in its own task, which a new open() does not cancel, so it ends once."""
        if self.mode is not None:
            return self.mode
        if self.same_vocab:
            self.mode = "ids"
            return self.mode
        if self._vocab_setup is None or self._vocab_setup.done():
            self._vocab_setup = asyncio.ensure_future(self._learn_vocab(deadline))
            self._vocab_setup.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(self._vocab_setup)

    async def _learn_vocab(self, deadline: float) -> str:
        url = self.transport.base_url
        frame = await asyncio.to_thread(self._cache.lookup, url)
        if frame is None:
            frame = await self.transport.call("GET", "/v1/floe/vocab", deadline=deadline, max_bytes=64 << 20,
                                              parse=lambda r: r.expect("application/octet-stream"))
            await asyncio.to_thread(self._cache.store, url, frame)
        vocab = await asyncio.to_thread(CloudVocab.from_frame, frame)  # ProtocolError: a bad frame
        same = self.same_vocab is None and await asyncio.to_thread(vocab.same_as, self.edge)
        if not same:
            self.vocab_map = await asyncio.to_thread(VocabMap.between, vocab, self.edge, cache_dir=self._cache.dir)
        self.cloud_vocab, self.mode = vocab, "ids" if same else "text"
        return self.mode

    # -- steps -----------------------------------------------------------------------------------------------------
    async def _post_step(self, s: _Session, k: int, n_draft: int, score: list[int], score_bytes: bytes,
                         want: Optional[list[int]], deadline: float
                         ) -> tuple[list[int], list[Optional[Evidence]], int, Optional[float]]:
        k = min(k, s.max_k)
        body: dict[str, Any] = {"k": k, "fmt": self.fmt}
        if self.mode == "ids":
            if self._pending_ids:
                body["append"], body["base"] = self._pending_ids, s.n_past
            if score:
                body["score"] = score
            if want is not None:  # edge positions are cloud positions
                body["want"] = want
        else:
            if self._pending_bytes:
                body["append_b64"], body["base"] = base64.b64encode(self._pending_bytes).decode(), s.n_bytes
            if score:
                score_bytes = score_bytes or b"".join(edge_piece(self.edge, t) for t in score)
                body["score_b64"] = base64.b64encode(score_bytes).decode()
        if n_draft:
            body["n_draft"] = n_draft
        n_past = s.n_past + len(self._pending_ids)

        def parse(reply: Reply) -> tuple[list[int], list[Optional[Evidence]], int, Optional[float]]:
            if reply.status == 404:
                e = reply.error()
                raise SessionExpired(e.status, e.code, e.message)
            frame = protocol.decode_step(reply.expect("application/octet-stream"), n_vocab=s.n_vocab)
            if not frame.positions:
                raise ValueError("a step frame without positions")
            if self.mode == "ids":
                if frame.n_past != n_past:
                    raise ValueError(f"the session holds {frame.n_past} tokens, {n_past} expected")
                draft, evidence = self._read_ids(frame, k, n_draft, score)
            else:
                draft, evidence = self._read_text(frame, k, n_draft, score, score_bytes)
            return draft, evidence, frame.n_past, reply.server_ms()

        return await self.transport.call("POST", f"/v1/floe/sessions/{quote(s.sid, safe='')}/step", json=body,
                                         deadline=deadline, parse=parse, idempotent=not (
                                             self._pending_ids or self._pending_bytes))

    def _topk(self, pos: protocol.Position, k: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
        return checked_topk(pos.ids, pos.logprobs, k, _MASS_SLACK[self.fmt])

    def _evidence(self, pos: protocol.Position, k: int) -> Optional[Evidence]:
        ids, lps = self._topk(pos, k)
        return Evidence(ids, lps) if ids.size else None  # no entries: a position not wanted

    def _read_ids(self, frame: protocol.StepFrame, k: int, n_draft: int,
                  score: list[int]) -> tuple[list[int], list[Optional[Evidence]]]:
        pos = frame.positions
        if score:
            if len(pos) != len(score) + 1 or [p.token for p in pos[:-1]] != score:
                raise ValueError(f"{len(pos)} positions do not score the {len(score)} tokens sent")
            return score, [self._evidence(p, k) for p in pos]
        if len(pos) > n_draft + 1:
            raise ValueError(f"{len(pos)} positions for a draft of {n_draft}")
        draft: list[int] = []
        for p in pos[:-1]:  # the draft stops before an end/control token; its distribution is kept
            if p.token < 0:
                raise ValueError("a draft position without its token")
            if self.edge.is_control(p.token) or self.edge.is_eog(p.token):
                break
            draft.append(p.token)
        return draft, [self._evidence(p, k) for p in pos[: len(draft) + 1]]

    def _read_text(self, frame: protocol.StepFrame, k: int, n_draft: int, score: list[int],
                   score_bytes: bytes) -> tuple[list[int], list[Optional[Evidence]]]:
        assert self.cloud_vocab is not None and self.vocab_map is not None
        pos = frame.positions
        if len(pos) > (protocol.MAX_DRAFT if score else n_draft) + 1:
            raise ValueError(f"{len(pos)} positions for {len(score) or n_draft} tokens")
        if any(p.token < 0 for p in pos[:-1]):
            raise ValueError("a draft or scored position without its token")
        pieces = [self.cloud_vocab.tokens[p.token] for p in pos[:-1]]
        draft: list[int]
        if score:  # the cloud tokenized the scored text its own way: align its boundaries with the edge's
            draft = score
            edge_pieces = [edge_piece(self.edge, t) for t in score]
            edge_offsets = byte_offsets(edge_pieces) if b"".join(edge_pieces) == score_bytes \
                else [0] + [None] * len(score)  # the arguments disagree: only position 0 is sure
            cloud_offsets = spelled_offsets(pieces, score_bytes)
        else:  # the draft stops before a token without bytes (end of generation); its distribution is kept
            n = next((j for j, b in enumerate(pieces) if b is None), len(pieces))
            pos = pos[: n + 1]
            cloud_offsets = byte_offsets(pieces[:n])
            draft, edge_offsets = retokenize(self.edge, b"".join(pieces[:n]))  # type: ignore[arg-type]
        evidence: list[Optional[Evidence]] = []
        for j in align_positions(edge_offsets, cloud_offsets):
            if j is None:
                evidence.append(None)
                continue
            ids, lps = self._topk(pos[j], k)
            r = self.vocab_map.remap(ids, lps)
            evidence.append(Evidence(r.ids, r.logprobs, r.kept) if r.ids.size else None)
        return draft, evidence
