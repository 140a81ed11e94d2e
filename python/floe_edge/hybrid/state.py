"""The speculative state of one generation: what is committed, what the edge has drafted past it, and what each
side knows about every position ahead.

Positions count generated tokens: the head is the next token to emit (`len(committed)`); draft position j is
head + j. The edge KV cache holds the prompt, the committed tokens and the draft; `logits[j]` are the edge's logits
at head + j (so there is always one more row than draft tokens). The edge's statistics (top-1, confidence, entropy)
are computed once per position; the cloud's evidence arrives per position and is kept until its prefix changes.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import numpy.typing as npt

from ..cloud.link import Evidence
from ..edge import EdgeModel
from ..fusion import EdgeStats, Fuser

__all__ = ["SpeculativeState"]

Logits = npt.NDArray[np.float32]


class SpeculativeState:
    def __init__(self, edge: EdgeModel, fuser: Fuser, evaluate: Callable[[Sequence[int]], Logits],
                 n_prompt: int) -> None:
        """`evaluate(ids)`: the edge's logits after each of ids (2-D), appended to its KV cache (and timed)."""
        self._edge, self._fuser, self._evaluate, self._n_prompt = edge, fuser, evaluate, n_prompt
        self.committed: list[int] = []
        self.draft: list[int] = []
        self.logits: list[Logits] = []
        self.evidence: dict[int, tuple[Evidence, Optional[int]]] = {}  # position -> (evidence, cloud draft token)
        self._stats: dict[int, EdgeStats] = {}

    @property
    def head(self) -> int:
        return len(self.committed)

    def start(self, logits: Logits) -> None:
        """The edge's logits after the prompt: the head's."""
        self.logits = [logits]

    # -- what the edge knows -------------------------------------------------------------------------------------
    def edge_stats(self, j: int) -> EdgeStats:
        """The edge's top-1, confidence and entropy at draft position j (computed once per position)."""
        pos = self.head + j
        if pos not in self._stats:
            self._stats[pos] = self._fuser.edge_stats(self.logits[j])
        return self._stats[pos]

    def needs_cloud(self, j: int) -> bool:
        return self.edge_stats(j).needs_cloud

    def uncertain(self) -> list[int]:
        """Draft positions (0 = head) where the edge is unsure and no evidence is at hand."""
        return [j for j in range(len(self.draft) + 1)
                if self.head + j not in self.evidence and self.needs_cloud(j)]

    # -- the draft -----------------------------------------------------------------------------------------------
    def draft_one(self) -> None:
        """Draft the edge's greedy choice at the end of the draft: a guess, verified when its position is due."""
        t = self.edge_stats(len(self.draft)).top1
        self.draft.append(t)
        self.logits.append(self._evaluate([t])[0])

    def extend_draft(self, tokens: Sequence[int]) -> None:
        """Append tokens to the draft without evaluating them yet (`eval_pending` does, in one batch)."""
        self.draft += tokens

    def eval_pending(self) -> None:
        """Evaluate the draft tokens that have no logits yet, in one batched edge eval."""
        pending = self.draft[len(self.logits) - 1:]
        if pending:
            self.logits += list(self._evaluate(pending))

    def add_evidence(self, pos: int, evidence: Evidence, cloud_token: Optional[int]) -> None:
        self.evidence[pos] = (evidence, cloud_token)

    # -- emitting ------------------------------------------------------------------------------------------------
    def commit(self, token: int) -> int:
        """Emit `token` at the head. Kept on the draft, the draft advances; otherwise the draft and its KV are
        rolled back and the token evaluated. Returns the number of drafted tokens thrown away."""
        rolled = 0
        if self.draft and self.draft[0] == token:
            self.draft.pop(0)
            self.logits.pop(0)
        else:
            rolled = len(self.draft)
            self._edge.truncate(self._n_prompt + self.head)
            self.draft = []
            self.logits = [self._evaluate([token])[0]]
            self.evidence, self._stats = {}, {}  # all computed on the abandoned prefix
        self.committed.append(token)
        self.evidence = {p: e for p, e in self.evidence.items() if p >= self.head}
        self._stats = {p: s for p, s in self._stats.items() if p >= self.head}
        return rolled
