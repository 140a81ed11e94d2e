"""A byte-level fake model for the knowledge tests (tests/test_cloud_knowledge*.py): a cloud backend and an edge
vocabulary in one, whose answers change when a knowledge entry is in front of the prompt."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from floe_edge.cloud import protocol
from floe_edge.cloud.knowledge import KnowledgeBase, KnowledgeEntry

BOS = 256
UNKNOWN = ord("?")

ENTRIES = [KnowledgeEntry("aland", "Aland facts: the capital of Aland=Q, its river is the Quu."),
           KnowledgeEntry("bland", "Bland facts: the capital of Bland=Z, river Zee, mountain Zop."),
           KnowledgeEntry("cland", "Cland facts: the capital of Cland=W, known for its wool.")]


def kb() -> KnowledgeBase:
    return KnowledgeBase(ENTRIES)


class ByteModel:
    """Token = byte, 256 = BOS (a control token). The 'model' copies like an induction head: the next token is the
    one that followed the latest earlier occurrence of the last token, '?' if there is none. So the prompt
    "the capital of Aland=" is answered "Q" only when the Aland entry is in front of it. `seen` records every token
    sequence the model evaluated."""

    name = "bytes"
    n_vocab = 257

    def __init__(self, n_ctx: int = 4096, bos: bool = True) -> None:
        self.n_ctx, self.bos = n_ctx, bos
        self.seen: list[list[int]] = []

    # -- vocabulary (cloud backend and edge TokenVocab alike) ------------------------------------------------------
    def vocab_frame(self) -> bytes:
        return protocol.encode_vocab([None if i == BOS else bytes([i]) for i in range(257)],
                                     [i == BOS for i in range(257)], [False] * 257)

    def tokenize(self, text: Any, add_bos: bool = True, special: bool = False) -> list[int]:
        data = text.encode() if isinstance(text, str) else bytes(text)
        return ([BOS] if add_bos and self.bos else []) + list(data)

    def token_bytes(self, id: int) -> bytes:
        return b"" if id == BOS else bytes([id])

    def is_eog(self, id: int) -> bool:
        return False

    def is_control(self, id: int) -> bool:
        return id == BOS

    # -- the model -------------------------------------------------------------------------------------------------
    @staticmethod
    def next_token(seq: Sequence[int]) -> int:
        last = seq[-1]
        for i in range(len(seq) - 2, -1, -1):
            if seq[i] == last:
                return int(seq[i + 1])
        return UNKNOWN

    def _row(self, seq: Sequence[int], k: int) -> tuple[np.ndarray, np.ndarray]:
        top = self.next_token(seq)
        ids = [top] + [t for t in range(256) if t != top][: k - 1]
        return np.array(ids, np.int64), np.array([-(1.0 + j) for j in range(k)], np.float32)

    def topk(self, tokens: Sequence[int], k: int, n_draft: int = 0, score: Sequence[int] = (),
             want: Optional[Sequence[int]] = None) -> list[Any]:
        self.seen.append(list(tokens))
        seq, out = list(tokens), []
        for j in range(n_draft + len(score)):
            ids, lps = self._row(seq, k)
            tok = int(score[j]) if score else int(ids[0])
            out.append((tok, ids, lps))
            seq.append(tok)
        return out + [(-1, *self._row(seq, k))]

    def generate(self, tokens: Sequence[int], max_tokens: int, k: int, temperature: float = 0.0,
                 seed: Optional[int] = None) -> list[Any]:
        return self.topk(tokens, max(k, 1), n_draft=max_tokens)[:-1]
