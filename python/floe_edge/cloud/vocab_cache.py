"""The cloud's vocabulary on the device (cross-vocabulary path): the decoded vocabulary frame (`CloudVocab`) and its
disk cache (`VocabCache`), so a device downloads a server's vocabulary once."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..files import write_atomic
from ..vocab_map import TokenVocab, vocab_maps_dir
from . import protocol

__all__ = ["CloudVocab", "VocabCache"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CloudVocab:
    """A decoded vocabulary frame. As a `TokenVocab` it is the source side of a VocabMap."""

    fingerprint: str
    tokens: list[Optional[bytes]]
    control: list[bool]
    eog: list[bool]

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def token_bytes(self, id: int) -> bytes:
        return self.tokens[id] or b""

    def is_control(self, id: int) -> bool:
        return self.control[id] or self.tokens[id] is None

    def is_eog(self, id: int) -> bool:
        return self.eog[id]

    def tokenize(self, text: Union[str, bytes], add_bos: bool = True, special: bool = True) -> list[int]:
        raise NotImplementedError("the cloud tokenizes on the cloud")

    @classmethod
    def from_frame(cls, frame: bytes) -> "CloudVocab":
        tokens, control, eog = protocol.decode_vocab(frame)
        return cls(protocol.vocab_fingerprint(frame), tokens, control, eog)

    def same_as(self, edge: TokenVocab) -> bool:
        """Same ids for the same bytes: every token with bytes on both sides has the same bytes."""
        if self.n_vocab != edge.n_vocab:
            return False
        for i, b in enumerate(self.tokens):
            if b is not None and not edge.is_control(i) and bytes(edge.token_bytes(i)) != b:
                return False
        return True


class VocabCache:
    """Vocabulary frames on disk by fingerprint (`cloud-vocab-<fp>.flv`, self-verifying: the name is the hash),
    and the fingerprint last seen per server URL (`cloud-servers.json`)."""

    def __init__(self, directory: Optional[Path] = None) -> None:
        self.dir = Path(directory) if directory is not None else vocab_maps_dir()

    def _index(self) -> dict[str, str]:
        try:
            data = json.loads((self.dir / "cloud-servers.json").read_text())
            return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def lookup(self, url: str) -> Optional[bytes]:
        fp = self._index().get(url)
        if fp is None or not re.fullmatch(r"[0-9a-f]{32}", fp):
            return None
        try:
            frame = (self.dir / f"cloud-vocab-{fp}.flv").read_bytes()
        except OSError:
            return None
        return frame if protocol.vocab_fingerprint(frame) == fp else None

    def store(self, url: str, frame: bytes) -> None:
        fp = protocol.vocab_fingerprint(frame)
        index = self._index()
        index[url] = fp
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.dir / f"cloud-vocab-{fp}.flv", frame)
            write_atomic(self.dir / "cloud-servers.json", json.dumps(index, indent=1).encode())
        except OSError as exc:  # a cache that cannot be written costs a download next time
            log.warning("could not cache the cloud vocabulary in %s: %s", self.dir, exc)

    def forget(self, url: str) -> None:
        index = self._index()
        if index.pop(url, None) is not None:
            try:
                write_atomic(self.dir / "cloud-servers.json", json.dumps(index, indent=1).encode())
            except OSError:
                pass
