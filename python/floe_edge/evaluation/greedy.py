"""Exact match of the greedy completion, and what answering cost: latency, deadline misses, cloud share, bytes.

Each system writes its greedy answer the way it would in use: the edge alone (`HybridGenerator` without a cloud),
the cloud alone (its greedy text over the link, the knowledge entry on the server), floe (edge + cloud under the
per-token deadline). Generation stops at the completion's length + 8 tokens, or at a newline when the completion
has none. Exact match compares the answer with the completion, whitespace-normalized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

from ..data.records import Record
from ..hybrid import HybridGenerator, HybridToken

__all__ = ["Answer", "answer", "normalize", "budget"]

EXTRA_TOKENS = 8


@dataclass(frozen=True)
class Answer:
    text: str
    exact: bool
    latency_ms: float
    tokens: int
    deadline_misses: int
    cloud_share: float
    bytes_sent: int
    bytes_received: int
    error: str = ""  # the cloud failed this answer (cloud-only: no text; floe falls back to the edge on its own)


def normalize(text: str) -> str:
    return " ".join(text.split())


def budget(n_completion_tokens: int) -> int:
    """Tokens a system may write for a completion of this many tokens."""
    return n_completion_tokens + EXTRA_TOKENS


def _until_done(tokens: Iterator[HybridToken], stop_at_newline: bool) -> str:
    text = ""
    for t in tokens:
        text += t.text
        if stop_at_newline and "\n" in text:
            return text.split("\n", 1)[0]
    return text


def answer(gen: HybridGenerator, record: Record, n: int, *, way: str, knowledge: Optional[str] = None) -> Answer:
    """The greedy answer of one system to the record: `way` is "edge-generic" (the prompt alone), "edge" (private
    context + prompt, whatever adapter the edge holds), "cloud" (cloud-only) or "floe" (fused, as `gen` is set)."""
    stop = "\n" not in record.completion
    if way == "cloud":
        tokens = gen.generate_cloud_only(record.prompt, n, knowledge=knowledge)
    elif way == "edge-generic":
        tokens = gen.generate(record.prompt, n)
    else:
        context = record.private_context + "\n\n" if record.private_context else ""
        tokens = gen.generate(record.prompt, n, private_context=context,
                              **({"knowledge": knowledge} if way == "floe" else {}))
    from ..cloud.errors import CloudError

    error = ""
    try:
        text = _until_done(tokens, stop)
    except CloudError as e:  # one failed answer, counted as wrong and reported, not the end of the evaluation
        text, error = "", f"{type(e).__name__}: {e}"
    finally:  # a generation left early still ends (its stats, its cloud session) before they are read
        close = getattr(tokens, "close", None)
        if close is not None:
            close()
    s = gen.last_stats
    return Answer(text, not error and normalize(text) == normalize(record.completion), s.latency_ms, s.tokens,
                  s.deadline_misses, s.cloud_share, s.bytes_sent, s.bytes_received, error)
