"""The server's OpenAI-compatible POST /v1/completions: the request, checked (`CompletionRequest.from_json`), and
the answer in OpenAI's text_completion shape (`completion_response`), with "logprobs" as top-k strings."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from .backend import Backend
from .step_request import RequestError, check_ids, check_int

__all__ = ["CompletionRequest", "completion_response"]


@dataclass(frozen=True)
class CompletionRequest:
    prompt: Union[str, list[int]]
    max_tokens: int
    k: int                    # top-k strings per position
    logprobs: bool            # whether the answer has log-probs (k = 0: the chosen tokens' only)
    temperature: float
    seed: Optional[int]

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, max_tokens: int, max_k: int, n_vocab: int,
                  n_ctx: int) -> "CompletionRequest":
        """Checked; unknown OpenAI fields (model, user, ...) are ignored; RequestError for anything unsupported."""
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, (str, list)):
            raise RequestError("prompt must be a string (or a list of token ids)")
        n_out = check_int(body.get("max_tokens", 16), "max_tokens", 1, max_tokens)
        want = body.get("logprobs")  # None: no log-probs; 0: the chosen tokens' only; k: also the top k
        k = 0 if want is None else check_int(want, "logprobs", 0, max_k)
        temperature = body.get("temperature", 1.0)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not 0 <= temperature <= 2:
            raise RequestError("temperature must be a number in 0..2")
        seed = body.get("seed")
        if seed is not None:
            check_int(seed, "seed", 0, 2**63 - 1)
        for name, ok in (("echo", False), ("stream", False), ("n", 1), ("best_of", 1), ("suffix", None)):
            if body.get(name, ok) not in (ok, None):
                raise RequestError(f"{name}={body[name]!r} is not supported (only {ok!r})", "unsupported")
        if body.get("stop") not in (None, [], ""):
            raise RequestError("stop is not supported", "unsupported")
        if isinstance(prompt, list):
            prompt = list(check_ids(prompt, "prompt", n_vocab, n_ctx))
        return cls(prompt, n_out, k, want is not None, float(temperature), seed)


def completion_response(backend: Backend, prompt: Union[str, list[int]], tokens: list[int], out: list[Any],
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
