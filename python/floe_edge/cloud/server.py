"""`floe cloud serve`: the cloud side of Floe over HTTP (routes and frames in `floe_edge.cloud.protocol`).

    app = create_app(backend, api_key="k")                # in-process (tests: httpx.ASGITransport)
    with CloudServer(model_path, port=0, api_key="k") as s:  # uvicorn on a background thread
        s.url

Model calls run on one worker thread (`worker`); the event loop only parses, checks (`step_request`, `completions`)
and frames, so /health answers during a long step. Sessions (`sessions`) are bounded per API key (`guard` checks the
key) and expire when idle. Request bodies are capped before they are read (`guard`); cloud log-probs and prompts are
never logged (no access log). With a knowledge base (`knowledge`), a session's entry is put in front of its prompt on
the server only: the client's accounting (n_past, `base`, byte offsets) is that of its own tokens. A new session takes
only its knowledge entry from the model's cache and decodes its own prompt, whoever sent the same prompt before: no
prompt is cheaper, or faster, because another session asked it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Optional, Sequence, Union

from .align import spelled_offsets
from .api_error import ApiError
from .backend import Backend, LlamaBackend
from .completions import CompletionRequest, completion_response
from .guard import ANONYMOUS, RequestGuard
from .knowledge import Choice, KnowledgeBase, Prefix, knowledge_choice, session_prefix
from .sessions import Session, Sessions
from .step_request import RequestError, StepLimits, StepRequest, check_fields, check_ids, check_int, decode_b64
from .worker import Worker

try:  # the [cloud] extra; without it the module imports, and serving says what to install
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException
except ImportError:  # pragma: no cover
    FastAPI = Request = RequestValidationError = JSONResponse = Response = HTTPException = None  # type: ignore
from .protocol import DEFAULT_MAX_K, FORMATS, MAX_BODY_BYTES, MAX_DRAFT, encode_step, vocab_fingerprint

__all__ = ["ApiError", "CloudServer", "DEFAULT_PORT", "Limits", "create_app", "serve"]

log = logging.getLogger(__name__)
DEFAULT_PORT = 8765


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


def _check_ctx(backend: Backend, n: int, extra: int = 0) -> None:
    if n + extra > backend.n_ctx:
        raise RequestError(f"{n} tokens{f' + {extra} speculative' if extra else ''} do not fit the context of "
                           f"{backend.n_ctx} tokens", "context_full")


def _model_tokens(backend: Backend, prefix: Optional[Prefix], tokens: list[int], text: Optional[bytes]) -> list[int]:
    """What the model reads for a session holding `tokens` / `text`: with its knowledge entry in front, if any."""
    return tokens if prefix is None else prefix.model_tokens(backend, tokens, text)


def _prefill(backend: Backend, ids: Optional[list[int]], text: Optional[bytes], kb: Optional[KnowledgeBase],
             choice: Choice, k: int) -> tuple[list[int], Optional[Prefix], list[Any]]:
    """On the worker: a new session's tokens and knowledge entry, evaluated so that its first step pays only for
    its own tokens; and the top-k after them (position 0 of the answer: the prefill computes it anyway)."""
    tokens = backend.tokenize(text, True) if text is not None else ids or []
    prefix = session_prefix(backend, kb, choice, ids, text)
    model = _model_tokens(backend, prefix, tokens, text)
    _check_ctx(backend, len(model))
    if not model:
        return tokens, prefix, []
    prefill = getattr(backend, "prefill", None)  # a backend with a cache: only the knowledge entry may come from it
    if prefill is None:
        return tokens, prefix, backend.topk(model, k)
    return tokens, prefix, prefill(model, k, 0 if prefix is None else prefix.shared(backend, model))


def _session_request(body: dict[str, Any], backend: Backend,
                     limits: Limits) -> tuple[Optional[list[int]], Optional[bytes], int, str]:
    """A session's prompt (ids, or text), and the k (0: none) and format of the first position it asks for."""
    check_fields(body, ("prompt", "prompt_b64", "knowledge", "k", "fmt"))
    if ("prompt" in body) == ("prompt_b64" in body):
        raise RequestError("give exactly one of prompt (ids) or prompt_b64 (text)")
    k = check_int(body["k"], "k", 1, limits.max_k) if "k" in body else 0
    fmt = body.get("fmt", "f16")
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise RequestError('fmt must be "f16" or "int8"')
    text = decode_b64(body["prompt_b64"], "prompt_b64") if "prompt_b64" in body else None
    ids = None if text is not None else list(check_ids(body["prompt"], "prompt", backend.n_vocab, backend.n_ctx))
    return ids, text, k, fmt


def _run_step(backend: Backend, s: Session, req: StepRequest,
              limits: StepLimits) -> tuple[list[int], Optional[bytes], list[Any]]:
    """On the worker: the session's tokens (and text) after the step's append, and the step's positions."""
    committed: Any = s.tokens if s.text is None else s.text
    new: Any = list(req.append) if s.text is None else req.append_text
    base = req.base
    if base is not None and len(committed) != base:  # an append sent again after a lost answer
        done = len(committed) - base
        if 0 < done <= len(new) and committed[base:] == new[:done]:
            new = new[done:]  # applied already, maybe followed by more: appends are idempotent
        else:
            raise ApiError(409, "conflict", f"the session holds {len(committed)} "
                           f"{'tokens' if s.text is None else 'bytes'}, the step says {base}")
    text = None if s.text is None else s.text + new
    tokens = s.tokens + new if text is None else backend.tokenize(text, True)
    scored = list(req.score) if not req.score_text else backend.tokenize(req.score_text, False)
    if not tokens:
        raise RequestError("the session has no tokens yet: append some", "empty_session")
    req.check_scored(len(scored), limits)
    model = _model_tokens(backend, s.prefix, tokens, text)  # the session's tokens stay the client's own
    _check_ctx(backend, len(model), max(req.n_draft, len(scored)))
    want = req.want if req.want_bytes is None else _positions_at(backend, scored, req.score_text, req.want_bytes)
    extra = {} if want is None else {"want": want}
    return tokens, text, backend.topk(model, req.k, req.n_draft, scored, **extra)


def _positions_at(backend: Backend, scored: list[int], text: bytes, offsets: Sequence[int]) -> list[int]:
    """The scored positions that start at these byte offsets of the scored text (the first one at an offset)."""
    wanted, at = set(offsets), spelled_offsets([backend.token_bytes(t) for t in scored], text)
    return sorted({off: j for j, off in reversed(list(enumerate(at))) if off in wanted}.values())


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def _json(request: Any) -> dict[str, Any]:
    try:
        body = json.loads(await request.body(), parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError):
        raise RequestError("the body is not valid JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object", "invalid_json")
    return body


# ----------------------------------------------------------------------------------------------------------------
# The app

def create_app(backend: Backend, api_key: Union[str, Sequence[str], None] = None, limits: Limits = Limits(),
               knowledge: Optional[KnowledgeBase] = None) -> "FastAPI":
    """The FastAPI app serving `backend` (a LlamaBackend or any object with the `Backend` methods), with an
    optional knowledge base its sessions read (named by id, or retrieved from the prompt)."""
    if FastAPI is None:
        raise ImportError("the cloud server needs fastapi and uvicorn: pip install 'floe-edge[cloud]'")
    keys = [api_key] if isinstance(api_key, str) else list(api_key or [])
    if any(not k for k in keys):
        raise ValueError("API keys must be non-empty")
    worker = Worker(limits.max_queue)
    sessions = Sessions(limits.max_sessions_per_key, limits.idle_expiry_s)
    vocab: dict[str, Any] = {}
    step_limits = StepLimits(limits.max_k, limits.max_draft, limits.max_score, backend.n_vocab, backend.n_ctx)

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
        return request.scope.get("state", {}).get("owner", ANONYMOUS)

    async def vocab_frame() -> tuple[bytes, str]:
        if not vocab:
            frame = await worker.run(backend.vocab_frame)
            vocab.update(frame=frame, fingerprint=vocab_fingerprint(frame))
        return vocab["frame"], vocab["fingerprint"]

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
        ids, text, k, fmt = _session_request(body, backend, limits)
        choice = knowledge_choice(body, knowledge)
        who = owner(request)
        sessions.check_room(who)  # before spending model time

        tokens, prefix, first = await worker.run(_prefill, backend, ids, text, knowledge, choice, max(k, 1))
        _, fp = await vocab_frame()
        sid = sessions.add(Session(who, tokens, text, sessions.clock(), prefix))
        out = {"session": sid, "n_past": len(tokens), "n_vocab": backend.n_vocab, "model": backend.name,
               "max_k": limits.max_k, "idle_expiry_s": limits.idle_expiry_s, "fingerprint": fp,
               "knowledge": prefix.entry_id if prefix is not None else None}  # its id only, never its text
        if k and first:  # asked for: the answer's first position, as a step frame of one position
            out["first_b64"] = base64.b64encode(encode_step(len(tokens), first, k, fmt)).decode()
        return out

    @app.post("/v1/floe/sessions/{sid}/step")
    async def step(sid: str, request: Request) -> Response:
        t0 = time.perf_counter()
        body = await _json(request)
        check_fields(body, StepRequest.FIELDS)  # before the session: a bad field is a 400 for any session
        s = sessions.get(owner(request), sid)
        req = StepRequest.from_json(body, s.text is not None, step_limits)

        async with s.lock:
            tokens, text, positions = await worker.run(_run_step, backend, s, req, step_limits)
            s.tokens, s.text, s.last_used = tokens, text, sessions.clock()
        frame = encode_step(len(tokens), positions, req.k, req.fmt)
        # Time spent here (queue + model): the device subtracts it from its round trip to estimate the network.
        timing = f"step;dur={(time.perf_counter() - t0) * 1000:.1f}"
        return Response(frame, media_type="application/octet-stream", headers={"server-timing": timing})

    @app.delete("/v1/floe/sessions/{sid}")
    async def close_session(sid: str, request: Request) -> dict[str, Any]:
        sessions.remove(owner(request), sid)
        return {"closed": True}

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict[str, Any]:
        req = CompletionRequest.from_json(await _json(request), max_tokens=limits.max_tokens, max_k=limits.max_k,
                                          n_vocab=backend.n_vocab, n_ctx=backend.n_ctx)
        prompt = req.prompt

        def run() -> tuple[list[int], list[Any]]:
            tokens = prompt if isinstance(prompt, list) else backend.tokenize(prompt.encode(), True)
            if not tokens:
                raise RequestError("the prompt is empty")
            _check_ctx(backend, len(tokens), req.max_tokens)
            return tokens, backend.generate(tokens, req.max_tokens, req.k, req.temperature, req.seed)

        tokens, out = await worker.run(run)
        return completion_response(backend, prompt, tokens, out, req.k if req.logprobs else None)

    app.add_middleware(RequestGuard, keys=keys, max_body=limits.max_body_bytes)
    return app


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
                 n_ctx: int = 2048, tls_cert: Optional[str] = None, tls_key: Optional[str] = None,
                 knowledge: Optional[KnowledgeBase] = None) -> None:
        self._model, self.host, self._port, self.knowledge = model, host, port, knowledge
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
            app = create_app(self.backend, self.api_key, self.limits, self.knowledge)
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
          tls_key: Optional[str] = None, on_ready: Optional[Callable[[str], None]] = None,
          knowledge: Optional[KnowledgeBase] = None) -> None:
    """Serve in the foreground until interrupted (Ctrl-C / SIGTERM)."""
    import uvicorn.config

    server = _uvicorn(create_app(backend, api_key, limits, knowledge), tls_cert, tls_key, uvicorn.config.LOGGING_CONFIG)
    sock = _listen(host, port)
    if on_ready is not None:
        on_ready(_url(host, sock.getsockname()[1], tls_cert is not None))
    server.run(sockets=[sock])
