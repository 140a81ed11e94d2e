"""The model behind `floe cloud serve`: one llama-cpp-python model, top-k log-probs, greedy drafts, batched scoring.

One llama context holds the tokens of whichever session was stepped last. A step evaluates only the suffix past the
longest common prefix with what the context holds (like `Llama.generate`: `kv_cache_seq_rm` from the first
differing position, then decode the rest), so a session stepped again pays only for its new tokens, and accepted
draft / scored tokens, already in the context, cost nothing. The logits of the last few positions are kept too, so a
step right after session creation, or one that only accepts draft tokens, decodes nothing at all.

Logits are requested only for the positions a step returns (the batch's `logits` flags), not for every prompt
token as `logits_all=True` would: that would mean an n_ctx x n_vocab float32 buffer (1 GB for Gemma 3 at n_ctx 1024)
and the output projection for every prompt token.

Not thread-safe: the server calls a backend from one worker thread. Any object with the `Backend` methods can stand
in for `LlamaBackend` (tests of the device-side client use a fake).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, Union, runtime_checkable

import numpy as np
import numpy.typing as npt

from .protocol import MAX_DRAFT, encode_vocab
from .saved_prefixes import SavedPrefixes, common_prefix

__all__ = ["Backend", "LlamaBackend", "TopK", "topk_logprobs"]

TopK = tuple[int, npt.NDArray[np.int64], npt.NDArray[np.float32]]  # (token at this position or -1, ids, log-probs)


@runtime_checkable
class Backend(Protocol):
    """What the server needs from a model (duck-typed)."""

    name: str
    n_vocab: int
    n_ctx: int

    def vocab_frame(self) -> bytes: ...
    def tokenize(self, text: bytes, add_bos: bool = True) -> list[int]: ...
    def token_bytes(self, id: int) -> bytes: ...
    def is_eog(self, id: int) -> bool: ...
    def topk(self, tokens: Sequence[int], k: int, n_draft: int = 0, score: Sequence[int] = (),
             want: Optional[Sequence[int]] = None) -> list[TopK]: ...
    def generate(self, tokens: Sequence[int], max_tokens: int, k: int, temperature: float = 0.0,
                 seed: Optional[int] = None) -> list[TopK]: ...


def _log_softmax(logits: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], float]:
    """(logits shifted by their max, log-sum-exp of the shifted logits): exp in float32 of values <= 0 is accurate,
    the sum is taken in float64 so 262144 terms do not lose precision."""
    x = logits - logits.max()
    return x, float(np.log(np.exp(x).sum(dtype=np.float64)))


_BLOCK = 256  # top-k candidates: a selection over the block maxima first (argpartition of 262144 rows: ~4 ms)


def _candidates(x: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    """Ids holding the k largest of `x` and every value tied with them: the k-th largest block maximum is a value
    k distinct elements reach, so the k-th largest element is at least that."""
    maxima = np.maximum.reduceat(x, np.arange(0, x.size, _BLOCK))
    if maxima.size <= k:
        return np.arange(x.size)
    return np.flatnonzero(x >= np.partition(maxima, maxima.size - k)[maxima.size - k])


def topk_logprobs(logits: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The k most likely ids of one row of raw logits and their log-softmax, sorted descending (ties: lower id)."""
    x, lse = _log_softmax(np.asarray(logits, np.float32))
    k = min(k, x.size)
    ids = _candidates(x, k)
    ids = ids[np.lexsort((ids, -x[ids]))][:k]
    return ids.astype(np.int64), (x[ids].astype(np.float64) - lse).astype(np.float32)


class LlamaBackend:
    """A GGUF model in llama-cpp-python with a prefix-reusing context. `n_evaluated` counts the tokens decoded."""

    def __init__(self, model_path: Union[str, os.PathLike], *, n_ctx: int = 2048, n_threads: int = 1,
                 n_batch: int = 512, name: Optional[str] = None, saved_prefix_bytes: int = 256 << 20) -> None:
        import llama_cpp

        self._lib = llama_cpp
        # swa_full: partial KV removal (prefix reuse) needs the full-size sliding-window cache (Gemma 3).
        self.llama = llama_cpp.Llama(model_path=str(model_path), n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                                     n_threads=n_threads, n_threads_batch=n_threads, logits_all=False,
                                     swa_full=True, verbose=False)
        self.name = name or Path(model_path).stem
        self.n_vocab = int(self.llama.n_vocab())
        self.n_ctx = int(self.llama.n_ctx())
        self._n_batch = n_batch
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._ctx_tokens: list[int] = []  # the tokens whose KV entries the context holds, in order
        self._rows: dict[int, npt.NDArray[np.float32]] = {}  # position -> logits after it (recent ones only)
        self._keep_rows = MAX_DRAFT + 2  # a full draft, then its acceptance, decode nothing twice
        self.n_evaluated = 0
        self.saved = SavedPrefixes(saved_prefix_bytes)  # contexts switched away from, to come back to
        self._vocab: Any = None
        self._vocab_frame: Optional[bytes] = None

    # -- vocabulary ------------------------------------------------------------------------------------------
    @property
    def vocab(self) -> Any:
        if self._vocab is None:
            from ..vocab_map import LlamaCppVocab

            self._vocab = LlamaCppVocab(self.llama)
        return self._vocab

    def vocab_frame(self) -> bytes:
        """Every token's bytes (empty for control tokens: devices ignore them) with control / end flags."""
        if self._vocab_frame is None:
            v = self.vocab
            control = [v.is_control(i) for i in range(self.n_vocab)]
            tokens = [None if c else v.token_bytes(i) for i, c in enumerate(control)]
            self._vocab_frame = encode_vocab(tokens, control, [v.is_eog(i) for i in range(self.n_vocab)])
        return self._vocab_frame

    def tokenize(self, text: bytes, add_bos: bool = True) -> list[int]:
        """Text to ids; add_bos adds the model's BOS only if the model wants one; special tokens are parsed."""
        return self.vocab.tokenize(text, add_bos=add_bos, special=True)

    def token_bytes(self, id: int) -> bytes:
        return self.vocab.token_bytes(id)

    def is_eog(self, id: int) -> bool:
        return self.vocab.is_eog(id)

    # -- evaluation ------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the cached context (the next call evaluates all its tokens)."""
        self._lib.llama_memory_clear(self._lib.llama_get_memory(self.llama._ctx.ctx), True)
        self._ctx_tokens = []
        self._rows.clear()

    def _eval(self, tokens: Sequence[int], n_out: int, want: Optional[Sequence[int]] = None,
              reuse: Optional[int] = None) -> list[Optional[npt.NDArray[np.float32]]]:
        """The logits after each of the last n_out of `tokens` (None for those not in `want`, indices 0..n_out-1;
        default all); the context then starts with `tokens`. Decodes only what neither the KV cache nor the kept
        logit rows already have (at most the first `reuse` tokens come from them), and computes the output layer
        only at the wanted positions."""
        if not 1 <= n_out <= len(tokens) <= self.n_ctx:
            raise ValueError(f"need 1 <= n_out ({n_out}) <= tokens ({len(tokens)}) <= n_ctx ({self.n_ctx})")
        first_out = len(tokens) - n_out
        out = {first_out + j for j in (range(n_out) if want is None else want)}
        cap = len(tokens) if reuse is None else reuse
        lcp = min(common_prefix(self._ctx_tokens, tokens), cap)
        if len(tokens) - lcp >= self.saved.min_tokens:  # a long decode ahead: a saved prefix may spare it
            lcp = min(self._restore(tokens, lcp), cap)
        # Decode from the first needed position we hold no logits for (as llama's generate replays the last
        # prompt token when it is all cached, but without that replay when the logits were kept).
        keep = min([lcp] + [p for p in out if p < lcp and p not in self._rows])
        if keep < len(tokens):
            self._truncate(keep)
            self._decode(tokens, keep, out)
        return [self._rows[p] if p in out else None for p in range(first_out, len(tokens))]

    def _last_row(self, tokens: Sequence[int]) -> npt.NDArray[np.float32]:
        """The logits after `tokens` (always computed: no `want`)."""
        row = self._eval(tokens, 1)[0]
        assert row is not None
        return row

    def _restore(self, tokens: Sequence[int], lcp: int) -> int:
        """Swap in the saved state sharing the longest prefix with `tokens`, if it beats the live context's `lcp`
        (which is saved first); returns the prefix the context now shares with `tokens`."""
        found = self.saved.best(tokens, lcp)
        if found is None:
            return lcp
        key, state, shared = found
        self._save()
        self.reset()
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if self._lib.llama_state_seq_set_data(self.llama._ctx.ctx, buf, len(state), 0) != len(state):
            self.reset()  # a state this context cannot take: decode instead
            return 0
        self._ctx_tokens = list(key)
        return shared

    def _save(self) -> None:
        """Keep the live context's KV state (sequence 0) for a later request that comes back to it."""
        if not self.saved.worth_saving(self._ctx_tokens):
            return
        ctx = self.llama._ctx.ctx
        size = int(self._lib.llama_state_seq_get_size(ctx, 0))
        if size <= 0 or size > self.saved.budget_bytes:
            return
        buf = (ctypes.c_uint8 * size)()
        written = int(self._lib.llama_state_seq_get_data(ctx, buf, size, 0))
        if written > 0:
            self.saved.put(self._ctx_tokens, bytes(buf)[:written])

    def _truncate(self, keep: int) -> None:
        if len(self._ctx_tokens) - keep >= self.saved.min_tokens:  # a context switch, not a draft rolled back
            self._save()
        if keep < len(self._ctx_tokens):
            if keep == 0 or not self.llama._ctx.kv_cache_seq_rm(-1, keep, -1):
                self.reset()  # partial removal unsupported: start over
                return
            del self._ctx_tokens[keep:]
            for p in [p for p in self._rows if p >= keep]:
                del self._rows[p]

    def _decode(self, tokens: Sequence[int], start: int, out: set[int]) -> None:
        """Decode tokens[start:] (the context holds tokens[:start]) in n_batch chunks, keeping the logit rows of
        the positions in `out`."""
        b = self._batch
        try:
            for s in range(start, len(tokens), self._n_batch):
                chunk = tokens[s: s + self._n_batch]
                b.n_tokens = len(chunk)
                for i, t in enumerate(chunk):
                    b.token[i], b.pos[i], b.n_seq_id[i] = int(t), s + i, 1
                    b.seq_id[i][0] = 0
                    b.logits[i] = s + i in out
                rc = self._lib.llama_decode(self.llama._ctx.ctx, b)
                if rc != 0:
                    raise RuntimeError(f"llama_decode returned {rc}")
                self.n_evaluated += len(chunk)
                self._ctx_tokens.extend(int(t) for t in chunk)
                for i in (i for i in range(len(chunk)) if s + i in out):
                    row = self._lib.llama_get_logits_ith(self.llama._ctx.ctx, i)
                    self._rows[s + i] = np.ctypeslib.as_array(row, shape=(self.n_vocab,)).copy()
        except BaseException:
            self.reset()  # the KV cache may be half written: never trust it again
            raise
        for p in [p for p in self._rows if p < len(self._ctx_tokens) - self._keep_rows]:
            del self._rows[p]  # bounded memory: rows near the end are the ones a next step can reuse

    def prefill(self, tokens: Sequence[int], k: int, reuse: int) -> list[TopK]:
        """A new session's tokens, decoded with at most their first `reuse` from the cache (the knowledge entry in
        front: the server's own document; the prompt is the session's to pay for, as if no other session had sent
        it), and the top-k after them."""
        row = self._eval(tokens, 1, reuse=reuse)[0]
        assert row is not None
        return [(-1, *topk_logprobs(row, k))]

    def topk(self, tokens: Sequence[int], k: int, n_draft: int = 0, score: Sequence[int] = (),
             want: Optional[Sequence[int]] = None) -> list[TopK]:
        """Top-k after `tokens` (position 0), then after each greedy draft token (n_draft) or each scored token.
        Positions not in `want` (default all) come back with no entries; when scoring they skip the output layer."""
        if n_draft and score:
            raise ValueError("n_draft and score exclude each other")
        score = [int(t) for t in score]
        wanted = set(range(1 + max(n_draft, len(score)))) if want is None else set(want)
        none = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        rows = self._eval(list(tokens) + score, 1 + len(score), sorted(wanted) if score else None)
        out: list[TopK] = []
        if score:
            for j, row in enumerate(rows):
                ids, lps = topk_logprobs(row, k) if row is not None else none
                out.append((score[j] if j < len(score) else -1, ids, lps))
            return out
        seq = list(tokens)
        row = rows[0]
        assert row is not None  # `want` is passed to _eval only when scoring
        for j in range(n_draft):  # greedy, one token at a time (as llama's generate does)
            tok = int(np.argmax(row))
            out.append((tok, *(topk_logprobs(row, k) if j in wanted else none)))
            seq.append(tok)
            row = self._last_row(seq)
        out.append((-1, *(topk_logprobs(row, k) if n_draft in wanted else none)))
        return out

    def generate(self, tokens: Sequence[int], max_tokens: int, k: int, temperature: float = 0.0,
                 seed: Optional[int] = None) -> list[TopK]:
        """Up to max_tokens tokens (stops after an end-of-generation token): each as (token, top-k ids, raw
        log-probs of its position). Greedy at temperature 0, else sampled from softmax(logits / temperature)."""
        rng = np.random.default_rng(seed)
        seq = list(tokens)
        out: list[TopK] = []
        for _ in range(max_tokens):
            row = self._last_row(seq)
            if temperature > 0:
                x, lse = _log_softmax(row / np.float32(temperature))
                p = np.exp(x.astype(np.float64) - lse)
                tok = int(rng.choice(p.size, p=p / p.sum()))
            else:
                tok = int(np.argmax(row))
            ids, lps = topk_logprobs(row, max(k, 1))
            if tok not in ids:  # the chosen token's own log-prob is reported too
                x, lse = _log_softmax(row)
                ids, lps = np.append(ids, tok), np.append(lps, np.float32(x[tok] - lse))
            out.append((tok, ids, lps))
            seq.append(tok)
            if self.is_eog(tok) or len(seq) >= self.n_ctx:
                break
        return out

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        self.llama.close()

    def __enter__(self) -> "LlamaBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
