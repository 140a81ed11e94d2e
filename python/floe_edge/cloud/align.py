"""Cross-vocabulary alignment: which edge positions get which cloud position's distribution.

Byte offsets are counted from the end of the committed text. Cloud position j sits at the end of cloud tokens
0..j-1 (its draft tokens, or the scored text as the cloud tokenized it); edge position i at the end of edge tokens
0..i-1 (the cloud draft's bytes re-tokenized by the edge tokenizer, or the scored edge draft). Edge position i gets
cloud position j's top-k, remapped to edge ids with `VocabMap.remap` ("the continuation starts with this edge
token"), iff both sit at the same byte offset; otherwise None. Where several positions share an offset (a token
without bytes) only the first one counts. Position 0 and the end of a cloud draft are always aligned; in between,
the shared token boundaries (for English text, most word boundaries).
"""

from __future__ import annotations

from typing import Optional, Sequence

from ..vocab_map import TokenVocab

__all__ = ["align_positions", "byte_offsets", "edge_piece", "retokenize", "spelled_offsets"]


def byte_offsets(pieces: Sequence[Optional[bytes]]) -> list[Optional[int]]:
    """Offsets of the positions before, between and after pieces (len + 1 entries); after a None piece (bytes
    unknown) every later offset is unknown."""
    out: list[Optional[int]] = [0]
    off: Optional[int] = 0
    for p in pieces:
        off = None if off is None or p is None else off + len(p)
        out.append(off)
    return out


def spelled_offsets(pieces: Sequence[Optional[bytes]], target: bytes) -> list[Optional[int]]:
    """Like byte_offsets, but only while the pieces spell `target` from its start (unknown after a mismatch)."""
    out: list[Optional[int]] = [0]
    off: Optional[int] = 0
    for p in pieces:
        off = None if off is None or p is None or not target.startswith(p, off) else off + len(p)
        out.append(off)
    return out


def align_positions(edge_offsets: Sequence[Optional[int]],
                    cloud_offsets: Sequence[Optional[int]]) -> list[Optional[int]]:
    """For each edge position, the index of the cloud position at the same byte offset, or None. Only the first
    position at an offset counts, on either side."""
    def first(offsets: Sequence[Optional[int]]) -> dict[int, int]:
        at: dict[int, int] = {}
        for j, off in enumerate(offsets):
            if off is not None and off not in at:
                at[off] = j
        return at

    cloud, edge = first(cloud_offsets), first(edge_offsets)
    return [cloud.get(off) if off is not None and edge.get(off) == i else None for i, off in enumerate(edge_offsets)]


def edge_piece(edge: TokenVocab, id: int) -> bytes:
    return b"" if edge.is_control(id) else bytes(edge.token_bytes(id))


def retokenize(edge: TokenVocab, data: bytes) -> tuple[list[int], list[Optional[int]]]:
    """The edge tokens of `data` and their position offsets; ([], [0]) if the tokens do not spell `data` back (a
    tokenizer that normalizes text): then only position 0 can be aligned."""
    if not data:
        return [], [0]
    ids = [int(t) for t in edge.tokenize(data, add_bos=False, special=False)]
    pieces = [edge_piece(edge, t) for t in ids]
    if b"".join(pieces) != data:
        return [], [0]
    return ids, byte_offsets(pieces)
