"""The cloud's knowledge base (`floe cloud serve --knowledge FILE`): what the larger model knows and the device does
not (DESIGN.md section 9: the cloud reads `cloud_context + "\\n\\n" + prompt`; the device never receives it).

    kb = KnowledgeBase.load("kb.jsonl")       # {"id": str, "text": str} per line, or a section 9 data file / folder
    kb.lookup(knowledge_id(text))             # an entry by id (UnknownKnowledge if none)
    kb.retrieve("User: dim the desk lamp")    # the best lexical match, or None

A session names its entry (`"knowledge": id` when created), or the server retrieves one from the shared prompt.
The entry's text + "\\n\\n" goes in front of the session's prompt on the server only (`Prefix`): the client's
accounting (n_past, a step's `base`, a text session's byte offsets) never includes it, and no reply carries its
text (the create-session reply names the entry's id).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from .api_error import ApiError
from .saved_prefixes import common_prefix
from .step_request import RequestError

__all__ = ["KnowledgeBase", "KnowledgeEntry", "KnowledgeError", "MAX_ENTRIES", "MAX_ID_CHARS", "MAX_TEXT_BYTES",
           "Prefix", "RETRIEVE", "UnknownKnowledge", "check_knowledge_id", "knowledge_choice", "knowledge_id",
           "session_prefix"]

MAX_ID_CHARS = 128               # an entry id (knowledge_id gives 16)
MAX_TEXT_BYTES = 32 << 10        # one entry's text, UTF-8
MAX_ENTRIES = 100_000
MAX_FILE_BYTES = 256 << 20       # a knowledge file (a data folder: each of its files)
MIN_SCORE = 1.0                  # retrieval: the least idf-weighted overlap that counts as a match

# Words too common to say which entry a prompt is about (retrieval also weighs words by rarity).
_STOP = frozenset("a an and are as at be by for from has have i in is it its me my of on or our that the this to "
                  "was we were what with you your".split())
_WORD = re.compile(r"[^\W_]+")


class KnowledgeError(ValueError):
    """A knowledge file or entry that cannot be served (the message names file:line where there is one)."""


class UnknownKnowledge(LookupError):
    """No entry with this id."""

    def __init__(self, id: str) -> None:
        super().__init__(f"no knowledge entry with id {id[:MAX_ID_CHARS]!r}")
        self.id = id


def knowledge_id(text: str) -> str:
    """The id of an entry made from a record's `cloud_context`: the first 16 hex digits of its UTF-8 sha256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def check_knowledge_id(id: Any) -> Optional[str]:
    """A device's `knowledge` argument: None (the server retrieves) or an entry id; ValueError otherwise."""
    if id is not None and (not isinstance(id, str) or not 0 < len(id) <= MAX_ID_CHARS):
        raise ValueError(f"knowledge must be None or an entry id of 1..{MAX_ID_CHARS} characters")
    return id


@dataclass(frozen=True)
class KnowledgeEntry:
    id: str
    text: str


def _check_entry(id: Any, text: Any) -> KnowledgeEntry:
    if not isinstance(id, str) or not 0 < len(id) <= MAX_ID_CHARS:
        raise KnowledgeError(f"id must be a string of 1..{MAX_ID_CHARS} characters")
    if any(ord(c) < 32 or c == "\x7f" for c in id):
        raise KnowledgeError("id must not hold control characters")
    if not isinstance(text, str) or not text.strip():
        raise KnowledgeError("text must be a non-empty string")
    try:
        id.encode()
        size = len(text.encode())
    except UnicodeEncodeError:
        raise KnowledgeError("id and text must be valid Unicode (no lone surrogates)") from None
    if size > MAX_TEXT_BYTES:
        raise KnowledgeError(f"text is {size} bytes, at most {MAX_TEXT_BYTES} allowed")
    return KnowledgeEntry(id, text)


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in _STOP}


class KnowledgeBase:
    """Entries by id, in load order, with a word index for `retrieve`."""

    def __init__(self, entries: Iterable[KnowledgeEntry]) -> None:
        self._entries: list[KnowledgeEntry] = []
        self._by_id: dict[str, int] = {}
        for e in entries:
            e = _check_entry(e.id, e.text)
            if e.id in self._by_id:
                raise KnowledgeError(f"duplicate id {e.id!r}")
            if len(self._entries) == MAX_ENTRIES:
                raise KnowledgeError(f"more than {MAX_ENTRIES} entries")
            self._by_id[e.id] = len(self._entries)
            self._entries.append(e)
        if not self._entries:
            raise KnowledgeError("no entries")
        self._index: dict[str, list[int]] = defaultdict(list)  # word -> entries holding it, in load order
        for i, e in enumerate(self._entries):
            for w in _words(e.text):
                self._index[w].append(i)

    # -- loading -------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Union[str, Path]) -> "KnowledgeBase":
        """A JSONL file of {"id", "text"} lines, or section 9 data (a folder with train.jsonl / test.jsonl, or one
        such file: a first line with a "cloud_context" key), whose distinct non-empty cloud contexts become
        entries named by `knowledge_id`."""
        path = Path(path)
        if path.is_dir():
            from ..data.records import read_dataset

            train, test = _data(read_dataset, path)
            return cls.from_contexts(r.cloud_context for r in [*train, *test])
        lines = _read_lines(path)
        first = _parse(path, 1, lines[0]) if lines else None
        if isinstance(first, dict) and "cloud_context" in first:
            from ..data.records import read_records

            return cls.from_contexts(r.cloud_context for r in _data(read_records, path))
        return cls.from_jsonl(path, lines)

    @classmethod
    def from_jsonl(cls, path: Union[str, Path], lines: Optional[list[bytes]] = None) -> "KnowledgeBase":
        """{"id": str, "text": str} per line; KnowledgeError naming file:line for any malformed line."""
        path = Path(path)
        lines = _read_lines(path) if lines is None else lines
        entries, seen = [], set()
        for number, raw in enumerate(lines, start=1):
            obj = _parse(path, number, raw)
            try:
                if not isinstance(obj, dict):
                    raise KnowledgeError(f"expected a JSON object, got {type(obj).__name__}")
                keys = set(obj)
                if keys != {"id", "text"}:
                    missing, extra = sorted({"id", "text"} - keys), sorted(keys - {"id", "text"})
                    raise KnowledgeError("expected the keys id and text" + (f"; missing {missing}" if missing else "")
                                         + (f"; unknown {extra}" if extra else ""))
                entry = _check_entry(obj["id"], obj["text"])
                if entry.id in seen:
                    raise KnowledgeError(f"duplicate id {entry.id!r}")
                seen.add(entry.id)
                entries.append(entry)
            except KnowledgeError as e:
                raise KnowledgeError(f"{path}:{number}: {e}") from None
        try:
            return cls(entries)
        except KnowledgeError as e:
            raise KnowledgeError(f"{path}: {e}") from None

    @classmethod
    def from_contexts(cls, contexts: Iterable[str]) -> "KnowledgeBase":
        """One entry per distinct non-empty text, named by `knowledge_id`, in first-seen order."""
        texts = dict.fromkeys(t for t in contexts if t)
        return cls(KnowledgeEntry(knowledge_id(t), t) for t in texts)

    # -- use -----------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, id: object) -> bool:
        return id in self._by_id

    def __iter__(self) -> Any:
        return iter(self._entries)

    def lookup(self, id: str) -> KnowledgeEntry:
        i = self._by_id.get(id) if isinstance(id, str) else None
        if i is None:
            raise UnknownKnowledge(str(id))
        return self._entries[i]

    def retrieve(self, prompt: str, min_score: float = MIN_SCORE) -> Optional[KnowledgeEntry]:
        """The entry sharing the most with the prompt's words, each shared word weighted by its rarity among the
        entries (idf: log((N + 1) / entries holding it)); None if the best scores below `min_score`. Ties go to
        the entry loaded first."""
        n = len(self._entries)
        scores: dict[int, float] = defaultdict(float)
        for w in sorted(_words(prompt)):  # a fixed order: the same float sums every run
            holders = self._index.get(w)
            if holders:
                idf = math.log((n + 1) / len(holders))
                for i in holders:
                    scores[i] += idf
        if not scores:
            return None
        best = min(scores, key=lambda i: (-scores[i], i))
        return self._entries[best] if scores[best] >= min_score else None


def _read_lines(path: Path) -> list[bytes]:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise KnowledgeError(f"{path}: {size} bytes, at most {MAX_FILE_BYTES} allowed")
        data = path.read_bytes()
    except FileNotFoundError:
        raise KnowledgeError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise KnowledgeError(f"{path}: is a directory") from None
    except OSError as e:
        raise KnowledgeError(f"{path}: {e.strerror or e}") from None
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def _parse(path: Path, number: int, raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise KnowledgeError(f"{path}:{number}: not UTF-8 (byte {e.start + 1})") from None
    if not text.strip():
        raise KnowledgeError(f"{path}:{number}: blank line")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise KnowledgeError(f"{path}:{number}: not JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise KnowledgeError(f"{path}:{number}: nested too deeply") from None


def _data(read: Any, path: Path) -> Any:
    """A section 9 reader's result, its DataError (a ValueError naming file:line) as a KnowledgeError."""
    from ..data.records import DataError

    try:
        return read(path)
    except DataError as e:
        raise KnowledgeError(str(e)) from None


# ----------------------------------------------------------------------------------------------------------------
# The server's side: which entry a new session reads, and the model input with it in front

class _Retrieve:
    def __repr__(self) -> str:
        return "RETRIEVE"


RETRIEVE: Any = _Retrieve()  # a session that names no entry: retrieve one from its prompt
Choice = Union[str, None, _Retrieve]


def knowledge_choice(body: Mapping[str, Any], kb: Optional[KnowledgeBase]) -> Choice:
    """A create-session body's `knowledge`, checked before any model time is spent: absent -> RETRIEVE (None
    without a knowledge base), null -> no entry, a string -> that entry (404 unknown_knowledge if there is none)."""
    if "knowledge" not in body:
        return RETRIEVE if kb is not None else None
    v = body["knowledge"]
    if v is None:
        return None
    if not isinstance(v, str) or not v:
        raise RequestError("knowledge must be a non-empty string (an entry id) or null")
    if len(v) > MAX_ID_CHARS:
        raise RequestError(f"knowledge ids have at most {MAX_ID_CHARS} characters", "too_long")
    if kb is None:
        raise ApiError(404, "unknown_knowledge", "this server has no knowledge base")
    if v not in kb:
        raise ApiError(404, "unknown_knowledge", "no knowledge entry with this id")  # the id is not echoed
    return v


@dataclass(frozen=True)
class Prefix:
    """A session's entry as the model reads it, in front of what the client sent. An id session inserts `ids`
    after the client's first `cut` tokens (its BOS: the model reads BOS, entry, blank line, prompt); a text session
    puts `text` before its bytes."""

    entry_id: str
    ids: tuple[int, ...] = ()
    cut: int = 0
    text: Optional[bytes] = None

    def shared(self, backend: Any, model: Sequence[int]) -> int:
        """How many of a session's model tokens are the entry's (BOS included): what sessions may share."""
        if self.text is not None:  # tokenized with the prompt: up to where the entry's own tokens stop agreeing
            return common_prefix(backend.tokenize(self.text, True), model)
        return self.cut + len(self.ids)

    def model_tokens(self, backend: Any, tokens: Sequence[int], text: Optional[bytes]) -> list[int]:
        """What the model evaluates for a session holding `tokens` (a text session: `text`, tokenized)."""
        if self.text is not None:
            assert text is not None
            return backend.tokenize(self.text + text, True)
        return [*tokens[: self.cut], *self.ids, *tokens[self.cut:]]


def session_prefix(backend: Any, kb: Optional[KnowledgeBase], choice: Choice, ids: Optional[Sequence[int]],
                   text: Optional[bytes]) -> Optional[Prefix]:
    """On the worker (it tokenizes): the entry a new session reads (named, or retrieved from its prompt: text, or
    ids detokenized), as a `Prefix`; None for no entry."""
    if kb is None or choice is None:
        return None
    bos = backend.tokenize(b"", True)  # [BOS] if the model wants one, else []
    if isinstance(choice, _Retrieve):
        found = kb.retrieve(_prompt_text(backend, bos, ids, text))
        if found is None:
            return None
    else:
        found = kb.lookup(choice)
    data = (found.text + "\n\n").encode()
    if text is not None:
        return Prefix(found.id, text=data)
    own = backend.tokenize(data, False)
    if bos and list(ids or [])[: len(bos)] == bos:
        return Prefix(found.id, tuple(own), len(bos))  # the client's BOS stays first
    return Prefix(found.id, (*bos, *own), 0)


def _prompt_text(backend: Any, bos: list[int], ids: Optional[Sequence[int]], text: Optional[bytes]) -> str:
    """What retrieval reads: a text session's prompt, an id session's ids detokenized (without the BOS)."""
    if text is None:
        prompt = list(ids or [])
        body = prompt[len(bos):] if bos and prompt[: len(bos)] == bos else prompt
        text = b"".join(backend.token_bytes(int(t)) for t in body)
    return text.decode("utf-8", "replace")
