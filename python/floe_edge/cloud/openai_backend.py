"""Any OpenAI-compatible raw completions server as a cloud backend (llama-cpp-python's and llama.cpp's servers, vLLM,
OpenAI's legacy /v1/completions, `floe cloud serve`). Same interface as `client.FloeCloudBackend` (`link.CloudBackend`).

Each step POSTs the whole text so far (the shared prompt + accepted text: the API is stateless; servers with a
prefix cache, llama.cpp and vLLM, compute only the new part) as {prompt, max_tokens: n_draft + 1, logprobs: k,
temperature: 0, echo: false}. The N tokens of the answer give N distributions, position j being the one that chose
token j. The draft is the text of the first N - 1 tokens re-tokenized for the edge; the last token only brings its
position's distribution (so n_draft tokens come with n_draft + 1 distributions, as in the floe protocol).

Where the positions are (byte offsets from the end of the prompt), then aligned with the edge's positions by the
rule of `align` (same offset, else None):
  * `logprobs.content[]` entries with `bytes` (llama.cpp's server, OpenAI's chat shape): exact.
  * `tokens` strings (the legacy shape): the string of a token that splits a UTF-8 character is lossy ("" in
    llama-cpp-python, U+FFFD or "bytes:\\x.." elsewhere), so position j is located only if token j - 1 is clean
    (non-empty, no U+FFFD, no "bytes:") and its bytes end exactly there in the answer's text. With `text_offset`
    (characters; llama-cpp-python, OpenAI) every such position is located; without it, the running sum of the token
    strings is lost after the first unclean token.
Top-k keys are mapped with `VocabMap.map_strings` (-9999 absent, "" undecodable, collisions merged), at most k kept.

The prompt is JSON text: if the history ends inside a UTF-8 character, those bytes are held back from the prompt and
the continuation must begin with them (otherwise the step has no draft and no evidence).

Not supported:
  * edge-led scoring (`can_score = False`; `score_edge_ids` raises NotImplementedError): plain completions cannot
    score given text; echo=true with prompt log-probs would, but servers differ (llama-cpp-python needs
    logits_all, vLLM prompt_logprobs, OpenAI no longer offers it), so it is left out.
  * chat-only APIs (/v1/chat/completions): a chat template closes the assistant turn, so they cannot continue a
    partial answer.
llama-cpp-python's server applies repeat_penalty 1.1 by default even at temperature 0: pass
`extra_body={"repeat_penalty": 1.0}` for drafts that are the argmax of the reported distributions.
"""

from __future__ import annotations

import codecs
import ssl
from typing import Any, Mapping, Optional, Sequence, Union

from ..vocab_map import TokenVocab, VocabMap
from .align import align_positions, byte_offsets, retokenize
from .breaker import CircuitBreaker
from .link import CloudLink, CloudStep, Evidence
from .step_request import StepRequest
from .transport import Reply, Transport

__all__ = ["OpenAICompletionsBackend"]


def _split_incomplete(data: bytes) -> int:
    """Where a trailing incomplete UTF-8 sequence starts (len(data) if there is none)."""
    dec = codecs.getincrementaldecoder("utf-8")("replace")
    dec.decode(data, final=False)
    return len(data) - len(dec.getstate()[0])


def _clean(token: Any) -> bool:
    return isinstance(token, str) and token != "" and "\ufffd" not in token and not token.startswith("bytes:")


def _positions(text: str, lp: Mapping[str, Any]) -> tuple[bytes, list[Optional[int]], list[Any]]:
    """(the continuation's bytes, the byte offset of each returned position or None, each position's top-k)."""
    content = lp.get("content")
    if isinstance(content, list):
        return _content_positions(content)
    return _token_positions(text, lp)


def _content_positions(content: list[Any]) -> tuple[bytes, list[Optional[int]], list[Any]]:
    """Entries [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]: exact where bytes are known."""
    pieces: list[Optional[bytes]] = []
    for e in content:
        raw = e.get("bytes")
        pieces.append(bytes(raw) if raw is not None else e["token"].encode() if _clean(e["token"]) else None)
    data = bytearray()
    for p in pieces:  # the text up to the first token of unknown bytes
        if p is None:
            break
        data += p
    return bytes(data), byte_offsets(pieces)[: len(content)], [e.get("top_logprobs") for e in content]


def _token_positions(text: str, lp: Mapping[str, Any]) -> tuple[bytes, list[Optional[int]], list[Any]]:
    """The legacy shape: token strings (lossy), with or without text_offset (characters)."""
    tokens, tops = lp["tokens"], lp["top_logprobs"]
    if not isinstance(tokens, list) or not isinstance(tops, list) or len(tokens) != len(tops):
        raise ValueError("logprobs.tokens and logprobs.top_logprobs must be lists of the same length")
    data = text.encode()
    ends: list[Optional[int]] = [0]  # candidate offset of position j (before token j)
    chars = lp.get("text_offset")
    if isinstance(chars, list) and len(chars) == len(tokens) and all(type(c) is int for c in chars):
        for c in chars[1:]:
            rel = c - chars[0]
            ends.append(len(text[:rel].encode()) if 0 <= rel <= len(text) else None)
    else:
        off: Optional[int] = 0
        for t in tokens[:-1]:
            off = off + len(t.encode()) if off is not None and _clean(t) else None
            ends.append(off)
    offsets: list[Optional[int]] = [0]
    for j in range(1, len(tokens)):  # located: the clean token before it ends exactly there
        prev, end = tokens[j - 1], ends[j]
        ok = end is not None and _clean(prev) and data[max(end - len(prev.encode()), 0): end] == prev.encode()
        offsets.append(end if ok else None)
    return data, offsets, tops


class OpenAICompletionsBackend(CloudLink):
    """`base_url` with or without the trailing /v1. `vocab_map`: any VocabMap whose edge side is the edge's
    tokenizer (only that side is used); built from `edge_tokenizer` when None."""

    can_score = False

    def __init__(self, base_url: str, edge_tokenizer: TokenVocab, *, model: Optional[str] = None,
                 api_key: Optional[str] = None, vocab_map: Optional[VocabMap] = None, max_k: int = 20,
                 verify: Union[bool, str, ssl.SSLContext] = True, breaker: Optional[CircuitBreaker] = None,
                 extra_body: Optional[Mapping[str, Any]] = None, transport: Optional[Transport] = None) -> None:
        super().__init__(base_url, api_key=api_key, verify=verify, breaker=breaker, transport=transport)
        self.edge = edge_tokenizer
        self.vocab_map = vocab_map or VocabMap.between([None], edge_tokenizer, cache=False)
        self.model, self.max_k, self.extra_body = model, max_k, dict(extra_body or {})
        self._path = "/completions" if self.transport.base_url.endswith("/v1") else "/v1/completions"
        self._history = bytearray()

    async def open(self, prompt_ids_edge: Sequence[int], prompt_bytes: bytes, *,
                   deadline: Optional[float] = None, knowledge: Optional[str] = None) -> None:
        """Start a generation (no round trip: the API is stateless). `knowledge` must be None."""
        if knowledge is not None:
            raise ValueError("an OpenAI-compatible completions server has no knowledge base: a knowledge id "
                             "needs `floe cloud serve --knowledge`")
        self._history = bytearray(prompt_bytes)

    async def close(self) -> None:
        self._history = bytearray()
        await super().close()

    async def step(self, accepted_edge_ids: Sequence[int], accepted_bytes: bytes, *, k: int, n_draft: int = 0,
                   score_edge_ids: Sequence[int] = (), score_bytes: bytes = b"",
                   want: Optional[Sequence[int]] = None, deadline: float) -> CloudStep:
        """`want` is accepted for the interface and ignored: completions return every position."""
        if score_edge_ids:
            raise NotImplementedError("an OpenAI-compatible completions server cannot score an edge draft "
                                      "(can_score is False): ask for a cloud draft (n_draft) instead")
        StepRequest(k=k, n_draft=n_draft, want=None if want is None else sorted(int(w) for w in want)).validate()
        self._history += accepted_bytes
        cut = _split_incomplete(bytes(self._history))
        prompt, tail = self._history[:cut].decode("utf-8", "replace"), bytes(self._history[cut:])
        body: dict[str, Any] = {"prompt": prompt, "max_tokens": n_draft + 1, "logprobs": min(k, self.max_k),
                                "temperature": 0, "echo": False, "n": 1, "stream": False}
        if self.model is not None:
            body["model"] = self.model
        body.update(self.extra_body)
        meter = self.meter()
        draft, evidence, server_ms = await self.transport.call(
            "POST", self._path, json=body, deadline=deadline, parse=lambda r: self._read(r, k, n_draft + 1, tail))
        return meter.result(draft, evidence, server_ms)

    def _read(self, reply: Reply, k: int, max_tokens: int,
              tail: bytes) -> tuple[list[int], list[Optional[Evidence]], Optional[float]]:
        choice = reply.json()["choices"][0]
        text, lp = choice["text"], choice.get("logprobs")
        if not isinstance(text, str) or not isinstance(lp, Mapping):
            raise ValueError("the answer has no text or no logprobs (does the server support logprobs?)")
        data, offsets, tops = _positions(text, lp)
        if not 1 <= len(tops) <= max_tokens:
            raise ValueError(f"{len(tops)} positions for max_tokens={max_tokens}")
        last = max(j for j, off in enumerate(offsets) if off is not None)  # the draft ends at the last located one
        end = offsets[last]
        assert end is not None
        if end < len(tail) or not data.startswith(tail):
            return [], [None], reply.server_ms()  # the cloud did not continue the held-back character
        draft, edge_offsets = retokenize(self.edge, data[len(tail): end])
        shifted = [None if off is None else off + len(tail) for off in edge_offsets]
        evidence: list[Optional[Evidence]] = []
        for j in align_positions(shifted, offsets[: last + 1]):
            top = tops[j] if j is not None else None
            if not top:  # no position here, or a server that sent none (null)
                evidence.append(None)
                continue
            r = self.vocab_map.map_strings(top)
            evidence.append(Evidence(r.ids[:k], r.logprobs[:k], r.kept) if r.ids.size else None)
        return draft, evidence, reply.server_ms()
