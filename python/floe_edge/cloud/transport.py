"""HTTP to one cloud (`Transport`), under both cloud backends.

One persistent keep-alive connection (httpx, max_connections=1). The deadline covers the whole request, retries and
reading the body; when it passes the request is cancelled (its connection closed) and CloudTimeout raised at once.
Retries, with exponential backoff (20 ms, x2, equal jitter) and only while the deadline leaves room: connection
failures before any response byte (a request that may have reached the server only if it is idempotent), and 503. A
failure after the response started is not retried. Every failure (timeouts, connection errors, error statuses,
malformed answers) counts for the circuit breaker (`breaker.CircuitBreaker`), except a 404 for an unknown session,
which is a proper answer. Bytes are counted per request line + headers + body each way (headers by their serialized
size), cumulatively (`Transport.stats`).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, TypeVar, Union

import httpx

from .breaker import CircuitBreaker
from .errors import CloudConnectionError, CloudError, CloudHTTPError, CloudProtocolError, CloudTimeout, CloudUnavailable

__all__ = ["LinkStats", "Reply", "Transport"]

T = TypeVar("T")


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
