"""The vocabulary map's disk cache file: a header naming both vocabularies (their sha256 fingerprints) and the build
rule's version, the table (int32 per source token), the kinds (uint8 per source token), and the sha256 of all that.
A file that does not verify is reported (`InvalidMapFile`) and rebuilt by the caller, never trusted."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .files import write_atomic

__all__ = ["InvalidMapFile", "MapHeader", "read_map_file", "source_fingerprint", "write_map_file"]

_MAGIC = b"FLOEVMAP"
_HEADER = struct.Struct("<8sIIII32s32s")  # magic, rule version, n_source, n_edge, reserved, source/edge hash


class InvalidMapFile(ValueError):
    """A cache file that does not hold the map it is named for (truncated, corrupted, other vocabularies)."""


@dataclass(frozen=True)
class MapHeader:
    """What a file must say it holds."""

    version: int
    n_source: int
    n_edge: int
    source_hash: bytes
    edge_hash: bytes

    def pack(self) -> bytes:
        return _HEADER.pack(_MAGIC, self.version, self.n_source, self.n_edge, 0, self.source_hash, self.edge_hash)


def source_fingerprint(src: list[Optional[bytes]], ends: list[bool]) -> bytes:
    h = hashlib.sha256(b"floe-source-vocab\0")
    h.update(struct.pack("<i", len(src)))
    for b, end in zip(src, ends):
        h.update(struct.pack("<iB", -1 if b is None else len(b), 1 if end else 0))
        h.update(b or b"")
    return h.digest()


def read_map_file(path: Path, header: MapHeader) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(table, kinds) as stored, or None if there is no file; InvalidMapFile if it does not verify (its entries are
    the caller's to check), OSError if it cannot be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    n_src = header.n_source
    size = _HEADER.size + 5 * n_src + 32
    if len(data) != size:
        raise InvalidMapFile(f"size {len(data)} != {size}")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise InvalidMapFile("checksum mismatch")
    magic, version, ns, ne, _, sh, eh = _HEADER.unpack_from(data, 0)
    if (magic, version, ns, ne, sh, eh) != (_MAGIC, header.version, n_src, header.n_edge, header.source_hash,
                                            header.edge_hash):  # the reserved field is not compared
        raise InvalidMapFile("header does not match these vocabularies")
    off = _HEADER.size
    table = np.frombuffer(data, "<i4", n_src, off).astype(np.int32)
    kinds = np.frombuffer(data, np.uint8, n_src, off + 4 * n_src).copy()
    return table, kinds


def write_map_file(path: Path, table: np.ndarray, kinds: np.ndarray, header: MapHeader) -> None:
    """Atomically (a reader sees the old file or the whole new one); OSError if it cannot be written."""
    body = header.pack() + table.astype("<i4").tobytes() + kinds.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, body + hashlib.sha256(body).digest(), suffix=".vmap")
