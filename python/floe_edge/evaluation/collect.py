"""What the systems are scored on, for one record: the edge's logits at the completion tokens (per way of reading the
record) and the cloud's evidence at the same tokens, fetched over the cloud link as generation fetches it."""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence

import numpy as np
import numpy.typing as npt

from ..cloud.link import CloudBackend, Evidence
from ..data.records import Record, edge_input
from ..data.tokens import RecordTokens, tokenize_record
from ..hybrid.clock import IOLoop
from ..hybrid.pipeline import MAX_SCORED

__all__ = ["edge_rows", "cloud_evidence", "prompt_only", "record_tokens"]

_STEP_TIMEOUT_S = 120.0  # a scoring step on a busy 2-core machine; a cloud that takes longer is an error


def prompt_only(record: Record) -> str:
    return record.prompt


def edge_rows(slm: Any, tokens: RecordTokens, adapters: Sequence[tuple[Any, float]] = ()) -> npt.NDArray[np.float32]:
    """The edge's logits predicting each completion token (one row per token), with these adapters."""
    slm.set_adapters(list(adapters))
    slm.reset()
    logits = np.asarray(slm.eval(tokens.ids), np.float32).reshape(len(tokens), -1)
    n_in = len(tokens.input_ids)
    return logits[n_in - 1: n_in - 1 + len(tokens.completion_ids)]


def cloud_evidence(io: IOLoop, link: CloudBackend, slm: Any, record: Record, completion_ids: Sequence[int], *, k: int,
                   knowledge: Optional[str]) -> list[Optional[Evidence]]:
    """The cloud's top-k (in edge ids) before each completion token, given the shared prompt (and, on the server, the
    knowledge entry `knowledge`): the completion's tokens are scored as an edge draft, MAX_SCORED per step."""
    prompt_ids = slm.tokenize(record.prompt, add_bos=True, special=False)
    io.run(link.open(prompt_ids, record.prompt.encode(), knowledge=knowledge), timeout=_STEP_TIMEOUT_S)
    evidence: list[Optional[Evidence]] = []
    done: list[int] = []
    ids = list(completion_ids)
    for i in range(0, len(ids), MAX_SCORED):
        part = ids[i: i + MAX_SCORED]
        step = io.run(link.step(done, slm.detokenize(done), k=k, score_edge_ids=part,
                                score_bytes=slm.detokenize(part), deadline=time.monotonic() + _STEP_TIMEOUT_S))
        evidence.extend(step.evidence[: len(part)])
        done = part
    return evidence


def record_tokens(slm: Any, record: Record, generic: bool = False, max_tokens: Optional[int] = None) -> RecordTokens:
    """The record as the edge reads it (private context + prompt), or `generic`: the prompt alone."""
    return tokenize_record(slm, record, read=prompt_only if generic else edge_input, max_tokens=max_tokens)
