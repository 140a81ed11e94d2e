"""NativeSLM: the edge small language model on the native decoder (GGUF, llama architecture)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from . import _native
from .edge import reuse_prefix
from .native_tokens import NativeTokens
from .sampling import Sampler, log_softmax

__all__ = ["GeneratedToken", "GenerationStats", "ModelClosedError", "NativeSLM"]

ContextOverflowError = _native.ContextOverflowError


class ModelClosedError(RuntimeError):
    """The model was closed; create a new one."""


@dataclass
class GeneratedToken:
    id: int
    text: str  # the complete UTF-8 characters this token finishes (may be "" mid-character)
    logprob: float


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of the prompt's, reused from the KV cache (not evaluated again)
    generated_tokens: int = 0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    token_ms: list[float] = field(default_factory=list)

    @property
    def decode_tok_s(self) -> float:
        """Tokens evaluated per second after the prompt (one eval per generated token but the last)."""
        return len(self.token_ms) / (self.decode_ms / 1e3) if self.decode_ms > 0 else 0.0


class NativeSLM(NativeTokens):
    """A GGUF model on floe-edge's native decoder: weights used in place from the mmap, f16 KV cache.

    eval() appends tokens to the KV cache and returns their logits; reset()/truncate() rewind it.
    """

    def __init__(self, path: Union[str, os.PathLike], threads: int = 1, n_ctx: int = 2048,
                 variant: Optional[str] = None) -> None:
        self.path = Path(path)
        self._model: Optional[_native.Model] = _native.Model(str(self.path))
        self._decoder: Optional[_native.Decoder] = _native.Decoder(self._model, n_ctx=n_ctx, threads=threads,
                                                                   variant=variant)
        self._tokenizer = _native.Tokenizer.from_gguf(str(self.path))
        self._config: dict[str, object] = dict(self._model.config)
        self._metadata: Optional[dict[str, object]] = None
        self._adapters: list[tuple[_native.Adapter, float]] = []
        self.last_stats = GenerationStats()

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        self._decoder = None
        self._model = None

    def __enter__(self) -> "NativeSLM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self) -> "_native.Decoder":
        if self._decoder is None:
            raise ModelClosedError(f"model {self.path.name} is closed")
        return self._decoder

    # -- properties ------------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return int(self._live().n_ctx)

    @property
    def n_past(self) -> int:
        return int(self._live().n_past)

    @property
    def cached_tokens(self) -> list[int]:
        """Token ids in the KV cache, positions 0..n_past-1 (whoever evaluated them): a new sequence sharing a prefix
        with them need only evaluate the rest (`edge.reuse_prefix`)."""
        return self._live().tokens.tolist()

    @property
    def config(self) -> dict[str, object]:
        """Hyperparameters: n_layers, dim, n_heads, n_kv_heads, head_dim, ffn_dim, n_vocab, rope_base, ..."""
        return dict(self._config)

    @property
    def metadata(self) -> dict[str, object]:
        """GGUF metadata (read once, lazily: the vocabulary arrays are large)."""
        if self._metadata is None:
            self._metadata = _native.GGUFFile(str(self.path)).metadata
        return self._metadata

    # -- LoRA adapters ---------------------------------------------------------------------------
    def load_adapter(self, path: Union[str, os.PathLike]) -> "_native.Adapter":
        """A LoRA adapter in llama.cpp's GGUF format, validated against this model (GGUFError for a malformed
        file, ModelError for one that is not a LoRA adapter for this model, naming the tensor and the problem)."""
        if self._model is None:
            raise ModelClosedError(f"model {self.path.name} is closed")
        return _native.Adapter(os.fspath(path), self._model)

    def set_adapters(self, adapters: Sequence[tuple["_native.Adapter", float]], keep_cache: bool = False) -> None:
        """Apply these adapters with their scales from the next eval on (empty: none); base weights are untouched.
        An eval running on another thread is waited for: a swap never lands inside one. The cached tokens' keys and
        values were computed under the old adapters, so unless keep_cache the next eval first recomputes them."""
        for item in adapters:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], _native.Adapter)):
                raise TypeError("set_adapters takes a list of (adapter, scale) pairs, adapters from load_adapter()")
        self._live().set_adapters([(a, float(scale)) for a, scale in adapters], keep_cache)
        self._adapters = list(adapters)

    @property
    def adapters(self) -> list[tuple["_native.Adapter", float]]:
        """The active (adapter, scale) pairs."""
        return list(self._adapters)

    # -- evaluation ------------------------------------------------------------------------------
    def eval(self, ids: Sequence[int], logits: Literal["all", "last"] = "all",
             timeout_s: Optional[float] = None) -> npt.NDArray[np.float32]:
        """Evaluate ids after the cached tokens: logits (len(ids), n_vocab), or (n_vocab,) with logits="last".
        Raises ContextOverflowError when the context is full, _native.Cancelled on timeout or cancel()."""
        arr = self._eval_ids(ids, logits)
        return self._live().eval(arr.astype(np.int32), logits == "all", timeout_s)

    def cancel(self) -> None:
        """Make the running eval raise _native.Cancelled at its next layer or, when none is running, the next eval
        (before its first layer). Thread-safe; one cancel() stops one eval."""
        self._live().cancel()

    def reset(self) -> None:
        self._live().reset()

    def truncate(self, n_past: int) -> None:
        self._live().truncate(n_past)

    # -- generation ------------------------------------------------------------------------------
    def generate(self, prompt: Union[str, Sequence[int]], n: int = 64, sampler: Optional[Sampler] = None,
                 stop_at_eog: bool = True) -> Iterator[GeneratedToken]:
        """Stream up to n tokens after prompt (text or ids). The KV cache's longest common prefix with the prompt is
        kept (the rest evaluated): the same tokens as from an empty cache. Stats land in last_stats."""
        if n < 0:
            raise ValueError("n must be >= 0")
        sampler = sampler or Sampler()
        ids = self.tokenize(prompt) if isinstance(prompt, (str, bytes)) else list(prompt)
        if not ids:
            raise ValueError("empty prompt")
        if len(ids) + n > self.n_ctx:
            raise ContextOverflowError(f"prompt ({len(ids)}) + n ({n}) exceed n_ctx {self.n_ctx}")
        stats = self.last_stats = GenerationStats(prompt_tokens=len(ids))
        t0 = time.perf_counter()
        stats.cached_tokens = reuse_prefix(self, ids)
        logits = self.eval(ids[stats.cached_tokens:], logits="last")
        stats.prefill_ms = (time.perf_counter() - t0) * 1e3
        stream = _native.StreamDecoder(self._tokenizer)
        history = list(ids)
        for i in range(n):
            token = sampler(logits, history)
            if stop_at_eog and self._tokenizer.is_eog(token):
                break
            history.append(token)
            stats.generated_tokens += 1
            yield GeneratedToken(token, stream.feed(token), float(log_softmax(logits)[token]))
            if i + 1 == n:
                break
            t = time.perf_counter()
            logits = self.eval([token], logits="last")
            stats.token_ms.append((time.perf_counter() - t) * 1e3)
            stats.decode_ms += stats.token_ms[-1]
        tail = stream.flush()
        if tail:  # bytes of an unfinished UTF-8 character at the end, as U+FFFD: not a token of its own
            yield GeneratedToken(-1, tail, 0.0)
