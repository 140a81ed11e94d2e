"""Cross-vocabulary mapping: another tokenizer's tokens (a cloud LLM's) to edge token ids, keyed by bytes.

The cloud's evidence for one position is a sparse top-k: token ids of the cloud's own vocabulary (Gemma 3:
262144 SentencePiece pieces) or token *strings* (an OpenAI-compatible server). Fusion needs edge ids.

Build rule (one table per pair of vocabularies, `VocabMap.between(source, edge)`):

1. Each source token is decoded to the bytes it adds to the text:
   - SentencePiece GGUF (tokenizer.ggml.model "llama", e.g. Gemma): normal pieces with U+2581 replaced by a
     space; `<0xNN>` byte tokens (type 6) -> that one byte; user-defined pieces (type 4) as written (what
     llama.cpp outputs for them); control, unknown and unused tokens -> nothing (unmapped, -1).
   - GPT-2 byte-level GGUF (SmolLM2): the byte map inverted (our Tokenizer's token_bytes); control -> nothing.
   - Any object with the `TokenVocab` methods (our `_native.Tokenizer`, `LlamaCppVocab`), or a plain list of
     bytes (None = no bytes).
2. Source end-of-generation tokens (EOS, `<end_of_turn>`, `<|im_end|>`, ...) map to the edge's end token (its
   end-of-turn token if it has one, else EOS): kind END.
3. Bytes that are exactly one (non-control) edge token map to it: kind EXACT. Where several edge tokens
   have the same bytes (an SPM byte token and a normal piece), the one the edge tokenizer produces wins.
4. Otherwise the edge id is the edge tokenizer's FIRST token of those bytes,
   `tokenize(bytes, add_bos=False, special=False)[0]`, provided its bytes are a prefix of them; when they are
   not (a tokenizer reads a partial UTF-8 sequence as U+FFFD), the longest edge token that is a prefix of the
   bytes: kind PREFIX. Several source tokens may so share one edge id; their probability mass is merged
   (log-sum-exp) when a top-k is remapped. The reading is "the continuation starts with this edge token".
5. Nothing matches (no bytes; an edge vocabulary without the byte): -1, kind NONE; the mass is dropped
   (reported by `Remapped.mass_kept`, so fusion can count it in the remaining mass).

Tables are cached in memory and on disk under $FLOE_HOME/vocab_maps (else ~/.cache/floe/vocab_maps), one
file per pair named by the sha256 of both vocabularies (source bytes + end flags; edge bytes, control flags,
end id and the edge's tokenization of a fixed probe text, so merges and pre-tokenizer count) and the rule
version. Files are written atomically (temporary file, fsync, rename) and carry their own sha256; a file that
does not verify is rebuilt and replaced, never trusted.

Strings (`map_strings`, OpenAI-compatible servers):
   - entries whose log-prob is -9999 (OpenAI's "absent"), -inf, or below it are absent: skipped, no mass;
   - NaN, a log-prob above 0, or a top-k whose probabilities add up to more than 1 (llama.cpp's server with
     speculative decoding reports 0.0 everywhere) is a ValueError, for ids (`remap`) as for strings;
   - `bytes` (OpenAI chat logprobs) or a bytes key are used as they are;
   - a str key is UTF-8 encoded up to its first U+FFFD (or lone surrogate), which is how servers render a
     partial UTF-8 token; what comes after is unknown, so the prefix maps by rule 4 (never EXACT). "" or a key
     that starts with U+FFFD has no known bytes: undecodable, its mass reported in `Remapped.undecodable`
     and not given to any edge id;
   - entries landing on the same edge id (repeated strings, collisions, multi-token strings sharing a first
     token) are merged by log-sum-exp.

Remapping a top-k (k <= a few dozen) is plain Python, tens of microseconds; the table itself (`VocabMap.table`,
int32, source id -> edge id or -1) is what a native remap kernel takes.

Rule 1 (reading vocabularies) is `vocab_sources`; the cache file format is `vocab_map_file`.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Optional, Union

import numpy as np
import numpy.typing as npt

from . import paths
from .vocab_map_file import InvalidMapFile, MapHeader, read_map_file, source_fingerprint, write_map_file
from .vocab_sources import LlamaCppVocab, TokenVocab, as_edge_vocab, source_token_bytes

__all__ = [
    "ABSENT_LOGPROB",
    "Kind",
    "LlamaCppVocab",
    "Remapped",
    "RULE_VERSION",
    "TokenVocab",
    "VocabMap",
    "source_token_bytes",
    "vocab_maps_dir",
]

log = logging.getLogger(__name__)

RULE_VERSION = 1          # bump when the build rule changes: old cache files then stop matching
ABSENT_LOGPROB = -9999.0  # OpenAI's "no entry"; this and anything below it (and -inf) is absent
_POSITIVE_SLACK = 1e-3    # log-probs up to this above 0 are rounding (clamped); more is not a log-prob
_MASS_SLACK = 1e-2        # a top-k whose probabilities add up to more than 1 + this is not a distribution
_PROBE = "Hello world!  The quick brown fox's 3.14159 items\n\tdef f(x):\n        return x ** 2  # ü 日本語 😀"
_STRING_CACHE_MAX = 1 << 16


class Kind(enum.IntEnum):
    """How a source token was mapped (VocabMap.kinds)."""

    NONE = 0    # unmapped (-1)
    EXACT = 1   # the bytes are exactly this edge token
    PREFIX = 2  # the edge token is the first token of the bytes (a strict prefix of them)
    END = 3     # end-of-generation -> the edge's end token


@dataclass(frozen=True)
class Remapped:
    """A sparse top-k in edge ids. ids are unique, sorted by log-prob (descending)."""

    ids: npt.NDArray[np.int32]
    logprobs: npt.NDArray[np.float32]
    mass: float              # probability mass of the entries that were present in the input
    mass_kept: float         # of it, the mass that landed on edge ids (= exp(logprobs).sum())
    undecodable: float = 0.0  # map_strings: mass of entries with no known bytes ("" keys), not in mass_kept

    @property
    def kept(self) -> float:
        """Fraction of the input's mass that was kept (1.0 for an empty input)."""
        return self.mass_kept / self.mass if self.mass > 0 else 1.0


def vocab_maps_dir() -> Path:
    """Where mapping tables are cached: $FLOE_HOME/vocab_maps, else ~/.cache/floe/vocab_maps (`floe_edge.paths`)."""
    return paths.vocab_maps_dir()


# --------------------------------------------------------------------------------------------------------------
# The edge side: bytes -> first edge token


def _edge_end_id(edge: Any) -> int:
    for name in ("eot_id", "eos_id"):
        v = getattr(edge, name, None)
        if isinstance(v, int) and 0 <= v < edge.n_vocab:
            return v
    return -1


class _Edge:
    """Byte strings to edge ids by rules 3-5 (see the module docstring)."""

    def __init__(self, vocab: TokenVocab) -> None:
        self.vocab = vocab
        self.n = int(vocab.n_vocab)
        self.end_id = _edge_end_id(vocab)
        self.bytes_of: list[Optional[bytes]] = []
        by_bytes: dict[bytes, int] = {}
        dups: dict[bytes, list[int]] = {}
        for i in range(self.n):
            b = None if vocab.is_control(i) else bytes(vocab.token_bytes(i))
            b = b or None
            self.bytes_of.append(b)
            if b is None:
                continue
            if b in by_bytes:
                dups.setdefault(b, [by_bytes[b]]).append(i)
            else:
                by_bytes[b] = i
        for b, ids in dups.items():  # several tokens with the same bytes: the one the tokenizer produces
            t = self._tokenize(b)
            if len(t) == 1 and t[0] in ids:
                by_bytes[b] = t[0]
        self.by_bytes = by_bytes
        self.max_len = max((len(b) for b in by_bytes), default=0)
        self._strings: dict[Union[str, bytes], int] = {}  # map_strings keys seen (they repeat a lot)

    def _tokenize(self, b: bytes) -> list[int]:
        return list(self.vocab.tokenize(b, add_bos=False, special=False))

    def fingerprint(self) -> bytes:
        h = hashlib.sha256(b"floe-edge-vocab\0")
        h.update(struct.pack("<ii", self.n, self.end_id))
        for b in self.bytes_of:
            h.update(struct.pack("<i", -1 if b is None else len(b)))
            h.update(b or b"")
        probe = self._tokenize(_PROBE.encode())
        h.update(struct.pack(f"<{len(probe)}i", *probe))
        return h.digest()

    def longest_prefix(self, b: bytes) -> int:
        for n in range(min(len(b), self.max_len), 0, -1):
            e = self.by_bytes.get(b[:n])
            if e is not None:
                return e
        return -1

    def first_token(self, b: bytes, exact_ok: bool = True) -> tuple[int, int]:
        """(edge id, Kind) for text that starts with bytes b."""
        if not b:
            return -1, Kind.NONE
        e = self.by_bytes.get(b)
        if e is not None and exact_ok:
            return e, Kind.EXACT
        if e is not None:
            return e, Kind.PREFIX
        t = self._tokenize(b)
        if t and 0 <= t[0] < self.n:
            tb = self.bytes_of[t[0]]
            if tb is not None and b.startswith(tb):
                return t[0], Kind.PREFIX
        e = self.longest_prefix(b)
        return (e, Kind.PREFIX) if e >= 0 else (-1, Kind.NONE)

    def string_token(self, key: Any) -> int:
        """Edge id for an OpenAI-style key (bytes, or str up to its first U+FFFD); -2 = undecodable."""
        hit = self._strings.get(key)
        if hit is not None:
            return hit
        if isinstance(key, bytes):
            e, _ = self.first_token(key)
        else:
            cut = len(key)
            for i, c in enumerate(key):
                if c == "\ufffd" or "\ud800" <= c <= "\udfff":
                    cut = i
                    break
            if cut == 0:
                e = -2
            else:
                e, _ = self.first_token(key[:cut].encode("utf-8"), exact_ok=cut == len(key))
        if len(self._strings) >= _STRING_CACHE_MAX:
            self._strings.clear()
        self._strings[key] = e
        return e


# --------------------------------------------------------------------------------------------------------------
# Log-prob helpers


def _merge(edge_ids: list[int], lps: list[float]) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32], float]:
    """Unique edge ids with the log-sum-exp of their entries, sorted by log-prob descending (ties: lower id),
    and the total probability. Plain Python: for k <= a few dozen it is several times faster than numpy."""
    groups: dict[int, list[float]] = {}
    for e, lp in zip(edge_ids, lps):
        groups.setdefault(e, []).append(lp)
    merged = []
    total = 0.0
    for e, vals in groups.items():
        if len(vals) == 1:
            v = vals[0]
            total += math.exp(v)
        else:
            top = max(vals)
            acc = sum(math.exp(x - top) for x in vals)
            v = top + math.log(acc)
            total += math.exp(top) * acc
        merged.append((-v, e))
    merged.sort()
    return (np.fromiter((e for _, e in merged), np.int32, len(merged)),
            np.fromiter((-v for v, _ in merged), np.float32, len(merged)), total)


def _check_mass(mass: float) -> None:
    if mass > 1.0 + _MASS_SLACK:
        raise ValueError(f"the log-probs add up to a probability of {mass:.4g} > 1: not a distribution (llama.cpp's "
                         "server reports 0.0 for every entry when its speculative decoding is on)")


def _check_logprob(x: float) -> float:
    if not x <= _POSITIVE_SLACK:  # NaN, +inf, or clearly not a log-probability
        raise ValueError(f"{x!r} is not a log-probability")
    return x if x < 0.0 else 0.0


# --------------------------------------------------------------------------------------------------------------


class VocabMap:
    """Source token id -> edge token id (or -1), built by the rule in the module docstring.

    `table` (int32, read-only) is the mapping; `kinds` (uint8 `Kind`) says how each entry was made."""

    _memory: ClassVar[dict[str, tuple[np.ndarray, np.ndarray]]] = {}

    @classmethod
    def clear_memory_cache(cls) -> None:
        """Forget the tables held in memory (the disk cache stays)."""
        cls._memory.clear()

    def __init__(self, table: np.ndarray, kinds: np.ndarray, edge: _Edge, key: str, from_cache: bool) -> None:
        table.setflags(write=False)
        kinds.setflags(write=False)
        self.table: npt.NDArray[np.int32] = table
        self.kinds: npt.NDArray[np.uint8] = kinds
        self._edge = edge
        self.key = key
        self.from_cache = from_cache  # False when built by this call (not found or not trusted)

    @property
    def n_source(self) -> int:
        return int(self.table.size)

    @property
    def n_edge(self) -> int:
        return self._edge.n

    def stats(self) -> dict[str, int]:
        """How many source tokens each Kind covers."""
        counts = np.bincount(self.kinds, minlength=len(Kind))
        return {k.name.lower(): int(counts[k]) for k in Kind}

    # -- building --------------------------------------------------------------------------------------------
    @classmethod
    def between(cls, source: Any, edge: Any, *, cache: bool = True,
                cache_dir: Union[str, os.PathLike, None] = None) -> "VocabMap":
        """The map from `source` (GGUF path, GGUFFile, TokenVocab, NativeSLM, llama_cpp.Llama, or list of
        bytes/None) to `edge` (our Tokenizer, a GPT-2 GGUF path, a NativeSLM, a llama_cpp.Llama, any
        TokenVocab). Cached in memory and, unless cache=False, on disk (cache_dir, default vocab_maps_dir()).
        Even a cached table costs hashing both vocabularies (about 0.5 s for Gemma's 262144 tokens)."""
        src_bytes, src_end = source_token_bytes(source)
        e = _Edge(as_edge_vocab(edge))
        header = MapHeader(RULE_VERSION, len(src_bytes), e.n, source_fingerprint(src_bytes, src_end), e.fingerprint())
        key = hashlib.sha256(struct.pack("<I", RULE_VERSION) + header.source_hash + header.edge_hash).hexdigest()
        n_src = len(src_bytes)

        hit = cls._memory.get(key) if cache else None
        if hit is not None:
            return cls(hit[0].copy(), hit[1].copy(), e, key, True)
        path = Path(cache_dir) if cache_dir is not None else vocab_maps_dir()
        path = path / f"{key}.vmap"
        if cache:
            loaded = _load(path, header)
            if loaded is not None:
                cls._memory[key] = loaded
                return cls(loaded[0].copy(), loaded[1].copy(), e, key, True)

        table = np.full(n_src, -1, np.int32)
        kinds = np.zeros(n_src, np.uint8)
        for i, (b, end) in enumerate(zip(src_bytes, src_end)):
            if end:
                if e.end_id >= 0:
                    table[i], kinds[i] = e.end_id, Kind.END
                continue
            if b is None:
                continue
            table[i], kinds[i] = e.first_token(b)
        if cache:
            _store(path, table, kinds, header)
            cls._memory[key] = (table.copy(), kinds.copy())
        return cls(table, kinds, e, key, False)

    # -- remapping -------------------------------------------------------------------------------------------
    def remap(self, ids: Any, logprobs: Any) -> Remapped:
        """A sparse top-k of source ids (1-D integer array) and log-probs (1-D float array, same length) to edge
        ids: entries mapping to the same edge id merged by log-sum-exp, unmapped ones dropped, -9999 / -inf
        entries absent. ValueError for wrong dtypes, shapes, ids out of range, NaN or positive log-probs."""
        ids = np.asarray(ids)
        lp = np.asarray(logprobs)
        if ids.dtype.kind not in "iu" or ids.ndim != 1:
            raise ValueError(f"ids must be a 1-D integer array (got {ids.dtype}, shape {ids.shape})")
        if lp.dtype.kind != "f" or lp.ndim != 1:
            raise ValueError(f"logprobs must be a 1-D float array (got {lp.dtype}, shape {lp.shape})")
        if ids.shape != lp.shape:
            raise ValueError(f"ids and logprobs differ in shape ({ids.shape} vs {lp.shape})")
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.n_source):
            raise ValueError(f"source ids must be in 0..{self.n_source - 1}")
        edge_ids: list[int] = []
        kept_lps: list[float] = []
        mass = 0.0
        for e, x in zip(self.table[ids].tolist(), lp.tolist()):
            x = _check_logprob(x)
            if x > ABSENT_LOGPROB:
                mass += math.exp(x)
                if e >= 0:
                    edge_ids.append(e)
                    kept_lps.append(x)
        _check_mass(mass)
        out_ids, out_lp, kept = _merge(edge_ids, kept_lps)
        return Remapped(out_ids, out_lp, mass, kept)

    def map_strings(self, top_logprobs: Any) -> Remapped:
        """OpenAI-style top log-probs to edge ids (rules in the module docstring). Accepts a dict {token: logprob}
        (completions), a list of (str | bytes, logprob) pairs, or a list of chat entries
        {"token": str, "logprob": float, "bytes": list[int] | None}."""
        return _map_strings(self._edge, top_logprobs)

    def __repr__(self) -> str:
        s = self.stats()
        return (f"VocabMap({self.n_source} -> {self.n_edge}: exact {s['exact']}, prefix {s['prefix']}, "
                f"end {s['end']}, none {s['none']})")


def _entries(top: Any) -> Iterable[tuple[Any, Any]]:
    if isinstance(top, Mapping):
        return list(top.items())
    if isinstance(top, (list, tuple)):
        out = []
        for item in top:
            if isinstance(item, Mapping):
                if "logprob" not in item or "token" not in item:
                    raise ValueError("a chat logprob entry needs 'token' and 'logprob'")
                raw = item.get("bytes")
                if raw is not None:
                    if not isinstance(raw, (list, tuple, bytes, bytearray)):
                        raise ValueError("'bytes' must be a list of ints")
                    try:
                        key: Any = bytes(raw)
                    except (TypeError, ValueError) as exc:
                        raise ValueError(f"bad 'bytes' {raw!r}: {exc}") from None
                else:
                    key = item["token"]
                out.append((key, item["logprob"]))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                out.append((item[0], item[1]))
            else:
                raise ValueError(f"expected (token, logprob) pairs or chat entries, got {item!r}")
        return out
    raise ValueError(f"top_logprobs must be a dict or a list, not {type(top).__name__}")


def _map_strings(edge: _Edge, top: Any) -> Remapped:
    ids: list[int] = []
    lps: list[float] = []
    mass = undecodable = 0.0
    for key, value in _entries(top):
        if isinstance(key, bytearray):
            key = bytes(key)
        if not isinstance(key, (str, bytes)):
            raise ValueError(f"token keys must be str or bytes, not {type(key).__name__}")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise ValueError(f"log-prob of {key!r} must be a number, not {value!r}")
        lp = _check_logprob(float(value))
        if lp <= ABSENT_LOGPROB:
            continue
        p = math.exp(lp)
        mass += p
        e = edge.string_token(key)
        if e == -2:
            undecodable += p
        elif e >= 0:
            ids.append(e)
            lps.append(lp)
    _check_mass(mass)
    out_ids, out_lp, kept = _merge(ids, lps)
    return Remapped(out_ids, out_lp, mass, kept, undecodable)


# --------------------------------------------------------------------------------------------------------------
# Disk cache (the file format: `vocab_map_file`)


def _load(path: Path, header: MapHeader) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The cached table, or None if there is none or it does not verify (then it is rebuilt)."""
    try:
        loaded = read_map_file(path, header)
    except OSError as exc:
        log.warning("vocab map cache %s unreadable (%s); rebuilding", path, exc)
        return None
    except InvalidMapFile as exc:
        reason = str(exc)
    else:
        if loaded is None:
            return None
        table, kinds = loaded
        if not ((table < -1).any() or (table >= header.n_edge).any() or (kinds >= len(Kind)).any()
                or ((table == -1) != (kinds == Kind.NONE)).any()):
            return table, kinds
        reason = "entries out of range"
    log.warning("vocab map cache %s is not valid (%s); rebuilding", path, reason)
    return None


def _store(path: Path, table: np.ndarray, kinds: np.ndarray, header: MapHeader) -> None:
    try:
        write_map_file(path, table, kinds, header)
    except OSError as exc:  # a cache that cannot be written only costs a rebuild next time
        log.warning("could not write vocab map cache %s: %s", path, exc)
