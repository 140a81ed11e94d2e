"""`FloeCloudBackend`: the device's link to `floe cloud serve` (the floe protocol). Its interface, results and errors
are those of every cloud backend (`link.CloudBackend`); HTTP, deadlines and retries are the `transport.Transport`'s.

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
kept, so the end token can still be fused. Positions of the two vocabularies are aligned by the rule in `align`.

Knowledge (`floe cloud serve --knowledge`): `open(..., knowledge=id)` names the entry the cloud reads in front of the
prompt; without one the server retrieves one from the prompt. The device sends the id, never receives the entry's
text; the session reply names the entry used (`knowledge_used`), and a reopened session asks for that same entry
(null: none), so a generation keeps one entry even though the reopened prompt holds more text.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import ssl
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union
from urllib.parse import quote

import numpy as np
import numpy.typing as npt

from ..vocab_map import TokenVocab, VocabMap
from . import protocol
from .align import align_positions, byte_offsets, edge_piece, retokenize, spelled_offsets
from .breaker import CircuitBreaker
from .errors import CloudConnectionError, CloudError, CloudHTTPError, CloudProtocolError, CloudTimeout, SessionExpired
from .knowledge import MAX_ID_CHARS, check_knowledge_id
from .link import CloudLink, CloudStep, Evidence
from .step_request import StepRequest, check_int, decode_b64
from .transport import Reply, Transport
from .vocab_cache import CloudVocab, VocabCache

__all__ = ["CloudError", "CloudStep", "Evidence", "FloeCloudBackend", "checked_topk"]

log = logging.getLogger(__name__)

_MASS_SLACK = {"f16": 1e-2, "int8": 0.25}  # top-k mass above 1 that is rounding (int8 quantizes coarsely)


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
    knowledge: Any = None  # the entry the server says the session reads (an id, None), or _UNSAID
    first: Optional[bytes] = None  # the step frame of the answer's first position, when the open asked for it


_UNSAID: Any = object()  # a server that says nothing about knowledge (older, or no such field sent)


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

    used = j.get("knowledge", _UNSAID)
    if used is not _UNSAID and used is not None and (not isinstance(used, str) or not 0 < len(used) <= MAX_ID_CHARS):
        raise ValueError("bad knowledge id")
    first = j.get("first_b64")
    return _Session(sid, num("n_past", 0), num("n_vocab", 1), min(num("max_k", 1), 255),
                    num("idle_expiry_s", 0.0, float), str(j.get("fingerprint", "")), knowledge=used,
                    first=None if first is None else decode_b64(first, "first_b64"))


class FloeCloudBackend(CloudLink):
    """The floe token-id protocol (`floe cloud serve`). `edge_tokenizer`: the edge's `TokenVocab` (our
    `_native.Tokenizer`, a NativeSLM's `.tokenizer`). `same_vocab`: None decides from the cloud's vocabulary frame;
    True skips that (id sessions); False forces the text path. See the module docstring."""

    can_score = True
    accepts_knowledge = True
    first_on_open = True  # open(k=) returns the answer's first position

    def __init__(self, base_url: str, edge_tokenizer: TokenVocab, *, api_key: Optional[str] = None,
                 verify: Union[bool, str, ssl.SSLContext] = True, same_vocab: Optional[bool] = None,
                 fmt: str = "f16", breaker: Optional[CircuitBreaker] = None, open_timeout_s: float = 30.0,
                 close_timeout_s: float = 1.0, cache_dir: Union[str, os.PathLike, None] = None,
                 transport: Optional[Transport] = None) -> None:
        if fmt not in protocol.FORMATS:
            raise ValueError(f"fmt must be one of {sorted(protocol.FORMATS)}")
        super().__init__(base_url, api_key=api_key, verify=verify, breaker=breaker, transport=transport)
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
        self._knowledge: Any = _UNSAID             # what a new session asks for: an id, None (no entry), or nothing
        self._open_k: Optional[int] = None         # open(k=): the top-k of the answer's first position too
        self._releasing: Optional[asyncio.Task[Any]] = None  # release() in the background: close() waits for it
        self._epoch = 0                            # sessions ended so far: an open from an older epoch is abandoned
        self._abandoned: set[asyncio.Task[None]] = set()  # opens still in flight that nobody wants any more
        self.knowledge_used: Optional[str] = None  # the entry the cloud said it reads (an id; None: none, unknown)

    # -- the interface ---------------------------------------------------------------------------------------------
    async def open(self, prompt_ids_edge: Sequence[int], prompt_bytes: bytes, *,
                   deadline: Optional[float] = None, knowledge: Optional[str] = None,
                   k: Optional[int] = None) -> Optional[Evidence]:
        """Start a generation with the shared prompt. Waits for the cloud session until `deadline` (default: the
        open timeout), then raises CloudTimeout; the session keeps opening in the background either way.
        `knowledge`: the id of the cloud's knowledge entry to read (None: the server retrieves one). `k`: also
        return the top-k of the answer's first position (computed by the prefill: no second round trip)."""
        check_knowledge_id(knowledge)
        if k is not None:
            check_int(k, "k", 1, 255)
        await self._end_session(delete=False)  # the new session's opening deletes the old one
        self._knowledge = _UNSAID if knowledge is None else knowledge
        self.knowledge_used = None
        self._history_ids, self._history_bytes = [int(t) for t in prompt_ids_edge], bytearray(prompt_bytes)
        self._pending_ids, self._pending_bytes = [], bytearray()
        self._open_k = k
        s = await self._ready(deadline if deadline is not None else time.monotonic() + self.open_timeout_s)
        first, s.first = s.first, None
        if first is None or k is None:
            return None
        try:
            return self._first_position(first, min(k, s.max_k), s.n_vocab, s.n_past)
        except ValueError as exc:  # ProtocolError included: a lying cloud
            raise CloudProtocolError(f"the session's first position: {exc}") from None

    def _first_position(self, data: bytes, k: int, n_vocab: int, n_past: int) -> Optional[Evidence]:
        frame = protocol.decode_step(data, n_vocab=n_vocab)
        if len(frame.positions) != 1 or frame.n_past != n_past:
            raise ValueError(f"{len(frame.positions)} positions at n_past {frame.n_past}, one at {n_past} expected")
        return (self._read_ids(frame, k, 0, []) if self.mode == "ids" else self._read_text(frame, k, 0, [], b""))[1][0]

    async def step(self, accepted_edge_ids: Sequence[int], accepted_bytes: bytes, *, k: int, n_draft: int = 0,
                   score_edge_ids: Sequence[int] = (), score_bytes: bytes = b"",
                   want: Optional[Sequence[int]] = None, deadline: float) -> CloudStep:
        request = StepRequest(k=k, n_draft=n_draft, score=[int(t) for t in score_edge_ids],
                              want=None if want is None else sorted(int(w) for w in want)).validate()
        accepted = [int(t) for t in accepted_edge_ids]
        self._history_ids += accepted
        self._history_bytes += accepted_bytes
        self._pending_ids += accepted
        self._pending_bytes += accepted_bytes
        meter = self.meter()
        for _ in range(3):  # the session may need reopening (404, or a reset that may have applied the append)
            session = await self._ready(deadline)
            appends = bool(self._pending_ids or self._pending_bytes)
            try:
                draft, evidence, n_past, server_ms = await self._post_step(session, request, score_bytes, deadline)
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
            return meter.result(draft, evidence, server_ms)
        raise CloudConnectionError("the cloud session kept disappearing")

    async def release(self) -> None:
        """The generation is over: delete its session now (best effort), so that the next open does not wait for
        it; the connection stays."""
        self._releasing = asyncio.current_task()
        await self._end_session()
        if self._abandoned:  # opens still in flight delete the sessions they make: wait for that too
            await asyncio.gather(*list(self._abandoned), return_exceptions=True)

    async def close(self) -> None:
        """End the session (best effort, bounded by close_timeout_s) and drop the connection."""
        releasing, self._releasing = self._releasing, None
        if releasing is not None and releasing is not asyncio.current_task() and not releasing.done():
            await asyncio.gather(releasing, return_exceptions=True)  # its DELETE is bounded by close_timeout_s
        try:
            await self._end_session(cancel_open=True)
        finally:
            for task in list(self._abandoned):
                task.cancel()
            setup, self._vocab_setup = self._vocab_setup, None
            if setup is not None and not setup.done():
                setup.cancel()
                await asyncio.gather(setup, return_exceptions=True)
            await super().close()

    # -- sessions --------------------------------------------------------------------------------------------------
    async def _end_session(self, delete: bool = True, cancel_open: bool = False) -> None:
        """End the current session. An open still in flight is left to finish and delete the session it makes
        (cancelled mid-request, the server would keep a session nobody can name, counted against the key's limit
        until it expires), unless `cancel_open` (the link is closing)."""
        task, self._opening = self._opening, None
        self._epoch += 1
        if task is not None and not task.done():
            if cancel_open:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            else:
                self._abandoned.add(task)
                task.add_done_callback(self._abandoned.discard)
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
        if self._session is None:  # the generation ended while it opened
            raise CloudConnectionError("the cloud session was ended while it opened")
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
        epoch, deadline = self._epoch, time.monotonic() + self.open_timeout_s
        await self._delete_stale(min(deadline, time.monotonic() + self.close_timeout_s))
        mode = await self._resolve_mode(deadline)
        body: dict[str, Any] = {"prompt": ids} if mode == "ids" else {"prompt_b64": base64.b64encode(data).decode()}
        if self._knowledge is not _UNSAID:
            body["knowledge"] = self._knowledge
        if self._open_k is not None and not self._pending_ids and not self._pending_bytes:
            body.update(k=self._open_k, fmt=self.fmt)  # the first position of an answer not begun
        s = await self.transport.call("POST", "/v1/floe/sessions", json=body, deadline=deadline,
                                      parse=_parse_session)
        if epoch != self._epoch:  # abandoned while it opened: nobody will use or delete this session but us
            self._stale.append(s.sid)
            await self._delete_stale(time.monotonic() + self.close_timeout_s)
            return
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
        if isinstance(self._knowledge, str) and s.knowledge != self._knowledge:
            self._stale.append(s.sid)
            raise CloudProtocolError("the cloud session does not read the knowledge entry asked for")
        if s.knowledge is not _UNSAID:  # a reopened session reads the same entry (or none), not a new retrieval
            self._knowledge = self.knowledge_used = s.knowledge
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
    async def _post_step(self, s: _Session, request: StepRequest, score_bytes: bytes, deadline: float
                         ) -> tuple[list[int], list[Optional[Evidence]], int, Optional[float]]:
        k, n_draft, score = min(request.k, s.max_k), request.n_draft, list(request.score)
        if self.mode == "ids":  # edge positions are cloud positions
            wire = replace(request, k=k, fmt=self.fmt, append=self._pending_ids,
                           base=s.n_past if self._pending_ids else None)
        else:
            if score:
                score_bytes = score_bytes or b"".join(edge_piece(self.edge, t) for t in score)
            wire = replace(request, k=k, fmt=self.fmt, score=(), score_text=score_bytes if score else b"",
                           append_text=bytes(self._pending_bytes), base=s.n_bytes if self._pending_bytes else None,
                           want=None, want_bytes=self._want_bytes(request.want, score, score_bytes))
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

        appends = bool(self._pending_ids or self._pending_bytes)
        return await self.transport.call("POST", f"/v1/floe/sessions/{quote(s.sid, safe='')}/step",
                                         json=wire.to_json(), deadline=deadline, parse=parse, idempotent=not appends)

    def _want_bytes(self, want: Optional[Sequence[int]], score: list[int], score_bytes: bytes) -> Optional[list[int]]:
        """The wanted edge positions of a scored draft as byte offsets into its text (the server finds its own
        positions there); None (all positions) when the edge tokens do not spell the text."""
        if want is None or not score:
            return None
        pieces = [edge_piece(self.edge, t) for t in score]
        if b"".join(pieces) != score_bytes:
            return None
        offsets = byte_offsets(pieces)
        return sorted({off for i in want if i < len(offsets) and (off := offsets[i]) is not None})

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
