"""`floe cloud serve`: the cloud side of Floe over HTTP (routes and frames in `floe_edge.cloud.protocol`).

    app = create_app(backend, api_key="k")                # in-process (tests: httpx.ASGITransport)
    with CloudServer(model_path, port=0, api_key="k") as s:  # uvicorn on a background thread
        s.url

Model calls run on one worker thread (llama contexts are not thread-safe, and one context shared by the sessions is
what makes prefix reuse work); the event loop only parses, checks and frames, so /health answers during a long step.
Request bodies are capped before they are read; cloud log-probs and prompts are never logged (no access log).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Optional, Sequence, Union

from .backend import Backend, LlamaBackend

try:  # the [cloud] extra; without it only the CLI registration below works (serving then says what to install)
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException
except ImportError:  # pragma: no cover
    FastAPI = Request = RequestValidationError = JSONResponse = Response = HTTPException = None  # type: ignore
from .protocol import DEFAULT_MAX_K, MAX_BODY_BYTES, MAX_DRAFT, encode_step, vocab_fingerprint

__all__ = ["ApiError", "CloudServer", "DEFAULT_PORT", "Limits", "create_app", "serve"]

log = logging.getLogger(__name__)
DEFAULT_PORT = 8765
_ANON = "anonymous"


@dataclass(frozen=True)
class Limits:
    max_k: int = DEFAULT_MAX_K              # top-k entries per position
    max_draft: int = MAX_DRAFT              # greedy draft tokens per step
    max_score: int = MAX_DRAFT              # scored tokens per step (after tokenization)
    max_body_bytes: int = MAX_BODY_BYTES    # request body
    max_sessions_per_key: int = 8
    idle_expiry_s: float = 300.0            # a session unused this long is dropped
    max_tokens: int = 256                   # /v1/completions max_tokens
    max_queue: int = 32                     # model calls waiting for the worker before 503

    def __post_init__(self) -> None:
        if not 1 <= self.max_k <= 255 or self.max_draft < 0 or self.max_score < 0 or self.max_body_bytes < 1 \
                or self.max_sessions_per_key < 1 or not self.idle_expiry_s > 0 or self.max_tokens < 1 \
                or self.max_queue < 1:
            raise ValueError(f"invalid limits {self}")


class ApiError(Exception):
    """An error answered as {"error": {"code", "message"}} with an HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _bad(message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, code, message)


def _error_body(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"code": code, "message": message}}).encode()


# ----------------------------------------------------------------------------------------------------------------
# Request checks: explicit, so every bad input gets a clear 400 (bools are not ints, floats are not ids).

def _int(v: Any, name: str, lo: int, hi: int) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise _bad(f"{name} must be an integer in {lo}..{hi}")
    return v


def _ids(v: Any, name: str, n_vocab: int, max_len: int) -> list[int]:
    if not isinstance(v, list):
        raise _bad(f"{name} must be a list of token ids")
    if len(v) > max_len:
        raise _bad(f"{name} has {len(v)} tokens, at most {max_len} allowed", "too_long")
    if any(type(t) is not int or not 0 <= t < n_vocab for t in v):
        raise _bad(f"{name} must hold integer token ids in 0..{n_vocab - 1}", "bad_token")
    return v


def _b64(v: Any, name: str) -> bytes:
    if not isinstance(v, str):
        raise _bad(f"{name} must be a base64 string")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{name} is not valid base64", "invalid_base64") from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def _json(request: Any) -> dict[str, Any]:
    try:
        body = json.loads(await request.body(), parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError):
        raise _bad("the body is not valid JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object", "invalid_json")
    return body


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise _bad(f"unknown field(s): {', '.join(extra)}")


# ----------------------------------------------------------------------------------------------------------------
# Sessions

@dataclass
class Session:
    owner: str
    tokens: list[int]                # committed cloud ids
    text: Optional[bytes]            # text sessions: the committed bytes (tokens = their tokenization)
    last_used: float
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


# ----------------------------------------------------------------------------------------------------------------
# The worker thread

class Worker:
    """Runs model calls one at a time off the event loop; 503 when too many are waiting."""

    def __init__(self, max_queue: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="floe-cloud-model")
        self.max_queue = max_queue
        self.pending = 0

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.pending >= self.max_queue:
            raise ApiError(503, "overloaded", "the model is busy; retry later")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))
        except ApiError:
            raise
        except Exception as exc:  # the type only: a message could carry request content
            log.error("model call failed: %s", type(exc).__name__)
            raise ApiError(500, "model_error", f"the model failed ({type(exc).__name__})") from None
        finally:
            self.pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=True)


# ----------------------------------------------------------------------------------------------------------------
# ASGI guards: run before FastAPI sees the request

def _header(scope: dict[str, Any], name: bytes) -> Optional[bytes]:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v
    return None


async def _send_error(send: Callable[..., Any], status: int, code: str, message: str,
                      extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    _, body = _error_body(status, code, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Guard:
    """API key check (all routes but /health), then the body cap: by Content-Length before reading anything, and
    by counting what arrives (chunked bodies); the body is read into memory only while it is under the cap."""

    def __init__(self, app: Any, keys: Sequence[str], max_body: int) -> None:
        self.app, self.max_body = app, max_body
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    def _owner(self, scope: dict[str, Any]) -> Optional[str]:
        if not self._digests:
            return _ANON
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


# ----------------------------------------------------------------------------------------------------------------
# The app

def create_app(backend: Backend, api_key: Union[str, Sequence[str], None] = None,
               limits: Limits = Limits()) -> "FastAPI":
    """The FastAPI app serving `backend` (a LlamaBackend or any object with the `Backend` methods)."""
    if FastAPI is None:
        raise ImportError("the cloud server needs fastapi and uvicorn: pip install 'floe-edge[cloud]'")
    keys = [api_key] if isinstance(api_key, str) else list(api_key or [])
    if any(not k for k in keys):
        raise ValueError("API keys must be non-empty")
    worker = Worker(limits.max_queue)
    sessions = Sessions(limits.max_sessions_per_key, limits.idle_expiry_s)
    vocab: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await vocab_frame()  # built once up front (2 s for Gemma's 262144 tokens), not in a device's first request
        yield
        worker.close()

    app = FastAPI(title="floe cloud", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.backend, app.state.sessions, app.state.worker, app.state.limits = backend, sessions, worker, limits

    def error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.code, exc.message)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, "not_found" if exc.status_code == 404 else "http_error", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, "invalid_request", "invalid request")

    def owner(request: Request) -> str:
        return request.scope.get("state", {}).get("owner", _ANON)

    async def vocab_frame() -> tuple[bytes, str]:
        if not vocab:
            frame = await worker.run(backend.vocab_frame)
            vocab.update(frame=frame, fingerprint=vocab_fingerprint(frame))
        return vocab["frame"], vocab["fingerprint"]

    def check_ctx(n: int, extra: int = 0) -> None:
        if n + extra > backend.n_ctx:
            raise _bad(f"{n} tokens{f' + {extra} speculative' if extra else ''} do not fit the context of "
                       f"{backend.n_ctx} tokens", "context_full")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": backend.name, "n_vocab": backend.n_vocab}

    @app.get("/v1/floe/vocab")
    async def get_vocab() -> Response:
        frame, fp = await vocab_frame()
        return Response(frame, media_type="application/octet-stream", headers={"x-floe-fingerprint": fp})

    @app.post("/v1/floe/sessions")
    async def create_session(request: Request) -> dict[str, Any]:
        body = await _json(request)
        _only(body, {"prompt", "prompt_b64"})
        if ("prompt" in body) == ("prompt_b64" in body):
            raise _bad("give exactly one of prompt (ids) or prompt_b64 (text)")
        who = owner(request)
        sessions.check_room(who)  # before spending model time
        text = _b64(body["prompt_b64"], "prompt_b64") if "prompt_b64" in body else None
        ids = None if text is not None else _ids(body["prompt"], "prompt", backend.n_vocab, backend.n_ctx)

        def prefill() -> list[int]:
            tokens = ids if text is None else backend.tokenize(text, True)
            check_ctx(len(tokens))
            if tokens:  # warm the context: the first step then pays for nothing but its own tokens
                backend.topk(tokens, 1)
            return tokens

        tokens = await worker.run(prefill)
        _, fp = await vocab_frame()
        sid = sessions.add(Session(who, tokens, text, sessions.clock()))
        return {"session": sid, "n_past": len(tokens), "n_vocab": backend.n_vocab, "model": backend.name,
                "max_k": limits.max_k, "idle_expiry_s": limits.idle_expiry_s, "fingerprint": fp}

    @app.post("/v1/floe/sessions/{sid}/step")
    async def step(sid: str, request: Request) -> Response:
        t0 = time.perf_counter()
        body = await _json(request)
        _only(body, {"append", "append_b64", "base", "k", "n_draft", "score", "score_b64", "want", "fmt"})
        s = sessions.get(owner(request), sid)
        for f in (("append", "score") if s.text is not None else ("append_b64", "score_b64")):
            if f in body:
                raise _bad(f"a {'text' if s.text is not None else 'token-id'} session does not take {f}")
        k = _int(body.get("k", min(DEFAULT_MAX_K, limits.max_k)), "k", 1, limits.max_k)
        n_draft = _int(body.get("n_draft", 0), "n_draft", 0, limits.max_draft)
        fmt = body.get("fmt", "f16")
        if fmt not in ("f16", "int8"):
            raise _bad('fmt must be "f16" or "int8"')
        if s.text is None:
            append = _ids(body.get("append", []), "append", backend.n_vocab, backend.n_ctx)
            score = _ids(body.get("score", []), "score", backend.n_vocab, limits.max_score)
            append_b = score_b = b""
        else:
            append_b = _b64(body.get("append_b64", ""), "append_b64")
            score_b = _b64(body.get("score_b64", ""), "score_b64")
            append = score = []
        if n_draft and (score or score_b):
            raise _bad("n_draft and score exclude each other")
        base = body.get("base")
        if base is not None:
            base = _int(base, "base", 0, 1 << 40)
        want = body.get("want")
        if want is not None:
            top = max(n_draft, limits.max_score)
            if not isinstance(want, list) or any(type(w) is not int or not 0 <= w <= top for w in want) \
                    or len(set(want)) != len(want):
                raise _bad(f"want must be a list of distinct positions in 0..{top}")

        def run() -> tuple[list[int], Optional[bytes], list[Any]]:
            committed: Any = s.tokens if s.text is None else s.text
            new: Any = append if s.text is None else append_b
            if base is not None and len(committed) != base:  # an append sent again after a lost answer
                done = len(committed) - base
                if 0 < done <= len(new) and committed[base:] == new[:done]:
                    new = new[done:]  # applied already, maybe followed by more: appends are idempotent
                else:
                    raise ApiError(409, "conflict", f"the session holds {len(committed)} "
                                   f"{'tokens' if s.text is None else 'bytes'}, the step says {base}")
            text = None if s.text is None else s.text + new
            tokens = s.tokens + new if text is None else backend.tokenize(text, True)
            scored = score if not score_b else backend.tokenize(score_b, False)
            if not tokens:
                raise _bad("the session has no tokens yet: append some", "empty_session")
            if len(scored) > limits.max_score:
                raise _bad(f"score is {len(scored)} tokens, at most {limits.max_score} allowed", "too_long")
            check_ctx(len(tokens), max(n_draft, len(scored)))
            n_pos = 1 + max(n_draft, len(scored))
            if want is not None and any(w >= n_pos for w in want):
                raise _bad(f"want names a position beyond the {n_pos} of this step")
            extra = {} if want is None else {"want": want}
            return tokens, text, backend.topk(tokens, k, n_draft, scored, **extra)

        async with s.lock:
            tokens, text, positions = await worker.run(run)
            s.tokens, s.text, s.last_used = tokens, text, sessions.clock()
        frame = encode_step(len(tokens), positions, k, fmt)
        # Time spent here (queue + model): the device subtracts it from its round trip to estimate the network.
        timing = f"step;dur={(time.perf_counter() - t0) * 1000:.1f}"
        return Response(frame, media_type="application/octet-stream", headers={"server-timing": timing})

    @app.delete("/v1/floe/sessions/{sid}")
    async def close_session(sid: str, request: Request) -> dict[str, Any]:
        sessions.remove(owner(request), sid)
        return {"closed": True}

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict[str, Any]:
        body = await _json(request)  # unknown OpenAI fields (model, user, ...) are ignored
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, (str, list)):
            raise _bad("prompt must be a string (or a list of token ids)")
        max_tokens = _int(body.get("max_tokens", 16), "max_tokens", 1, limits.max_tokens)
        want = body.get("logprobs")  # None: no log-probs; 0: the chosen tokens' only; k: also the top k
        k = 0 if want is None else _int(want, "logprobs", 0, limits.max_k)
        temperature = body.get("temperature", 1.0)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not 0 <= temperature <= 2:
            raise _bad("temperature must be a number in 0..2")
        seed = body.get("seed")
        if seed is not None:
            _int(seed, "seed", 0, 2**63 - 1)
        for name, ok in (("echo", False), ("stream", False), ("n", 1), ("best_of", 1), ("suffix", None)):
            if body.get(name, ok) not in (ok, None):
                raise _bad(f"{name}={body[name]!r} is not supported (only {ok!r})", "unsupported")
        if body.get("stop") not in (None, [], ""):
            raise _bad("stop is not supported", "unsupported")
        ids = _ids(prompt, "prompt", backend.n_vocab, backend.n_ctx) if isinstance(prompt, list) else None

        def run() -> tuple[list[int], list[Any]]:
            tokens = ids if ids is not None else backend.tokenize(prompt.encode(), True)
            if not tokens:
                raise _bad("the prompt is empty")
            check_ctx(len(tokens), max_tokens)
            return tokens, backend.generate(tokens, max_tokens, k, float(temperature), seed)

        tokens, out = await worker.run(run)
        return _openai_completion(backend, prompt, tokens, out, None if want is None else k)

    app.add_middleware(_Guard, keys=keys, max_body=limits.max_body_bytes)
    return app


def _openai_completion(backend: Backend, prompt: Union[str, list[int]], tokens: list[int], out: list[Any],
                       k: Optional[int]) -> dict[str, Any]:
    """OpenAI's text_completion shape. End-of-generation tokens are left out of `text` but keep their log-prob
    entry (a 1-token request must still see the distribution that chose to stop)."""
    pieces, lps, tops, offsets = [], [], [], []
    text_b = b""
    base = len(prompt) if isinstance(prompt, str) else 0
    finish = "length"
    for tok, ids, lp in out:
        piece = backend.token_bytes(tok)
        offsets.append(base + len(text_b.decode("utf-8", "replace")))
        pieces.append(piece.decode("utf-8", "replace"))
        lps.append(float(lp[list(ids).index(tok)]))
        top: dict[str, float] = {}
        for i, v in zip(ids[:k or 0], lp[:k or 0]):
            top.setdefault(backend.token_bytes(int(i)).decode("utf-8", "replace"), float(v))  # keep the likelier
        tops.append(top)
        if backend.is_eog(tok):
            finish = "stop"
        else:
            text_b += piece
    choice: dict[str, Any] = {"text": text_b.decode("utf-8", "replace"), "index": 0, "finish_reason": finish,
                              "logprobs": None}
    if k is not None:
        choice["logprobs"] = {"tokens": pieces, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}
    return {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time()),
            "model": backend.name, "choices": [choice],
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": len(out),
                      "total_tokens": len(tokens) + len(out)}}


# ----------------------------------------------------------------------------------------------------------------
# Running it

def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only then (else +40 ms per reply)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)  # connections queue from now on, before uvicorn starts accepting
    return sock


def _uvicorn(app: Any, tls_cert: Optional[str], tls_key: Optional[str], log_config: Any) -> Any:
    import uvicorn

    if (tls_cert is None) != (tls_key is None):
        raise ValueError("TLS needs both a certificate and a key")
    config = uvicorn.Config(app, access_log=False,  # access lines carry paths only, but keep logs content-free
                            log_level="warning", log_config=log_config, ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                            timeout_keep_alive=30, server_header=False, date_header=False, limit_concurrency=256,
                            timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def _url(host: str, port: int, tls: bool) -> str:
    return f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"


class CloudServer:
    """`floe cloud serve` on a background thread: `with CloudServer(model_or_backend, port=0) as s: s.url`.

    `model` is a GGUF path (loaded with LlamaBackend, closed on exit) or a backend object (left open)."""

    def __init__(self, model: Union[str, os.PathLike, Backend], *, host: str = "127.0.0.1", port: int = 0,
                 api_key: Union[str, Sequence[str], None] = None, limits: Limits = Limits(), threads: int = 1,
                 n_ctx: int = 2048, tls_cert: Optional[str] = None, tls_key: Optional[str] = None) -> None:
        self._model, self.host, self._port = model, host, port
        self.api_key, self.limits, self.threads, self.n_ctx = api_key, limits, threads, n_ctx
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.backend: Any = None
        self.port = 0
        self._owns_backend = False
        self._server: Any = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return _url(self.host, self.port, self.tls_cert is not None)

    def start(self) -> "CloudServer":
        if isinstance(self._model, (str, os.PathLike)):
            self.backend = LlamaBackend(self._model, n_ctx=self.n_ctx, n_threads=self.threads)
            self._owns_backend = True
        else:
            self.backend = self._model
        try:
            app = create_app(self.backend, self.api_key, self.limits)
            self._server = _uvicorn(app, self.tls_cert, self.tls_key, log_config=None)
            sock = _listen(self.host, self._port)
            self.port = sock.getsockname()[1]
            self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                            name="floe-cloud-server", daemon=True)
            self._thread.start()
            deadline = time.monotonic() + 30
            while not self._server.started:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the cloud server did not start")
                time.sleep(0.01)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        if self._owns_backend and self.backend is not None:
            self.backend.close()
            self.backend = None

    def __enter__(self) -> "CloudServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(backend: Backend, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          api_key: Union[str, Sequence[str], None] = None, limits: Limits = Limits(), tls_cert: Optional[str] = None,
          tls_key: Optional[str] = None, on_ready: Optional[Callable[[str], None]] = None) -> None:
    """Serve in the foreground until interrupted (Ctrl-C / SIGTERM)."""
    import uvicorn.config

    server = _uvicorn(create_app(backend, api_key, limits), tls_cert, tls_key, uvicorn.config.LOGGING_CONFIG)
    sock = _listen(host, port)
    if on_ready is not None:
        on_ready(_url(host, sock.getsockname()[1], tls_cert is not None))
    server.run(sockets=[sock])
