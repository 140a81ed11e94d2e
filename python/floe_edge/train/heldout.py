"""Held-out top-1 on the completion tokens, before and after training: the base model reading the prompt alone,
the base reading the private context and the prompt (what personalization must beat), and the same with the
adapter. Run on the native decoder, the engine the adapter is trained for."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..data.records import Record
from ..data.tokens import RecordTokens, record_hits, tokenize_record

__all__ = ["Top1", "heldout_top1", "READS"]

PathLike = Union[str, "os.PathLike[str]"]
READS = ("prompt only", "private context", "private context + LoRA")


@dataclass
class Top1:
    """Correct and scored completion tokens per (task, read)."""

    counts: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def add(self, task: str, read: str, correct: int, scored: int) -> None:
        row = self.counts.setdefault((task, read), [0, 0])
        row[0] += correct
        row[1] += scored

    def rate(self, task: str, read: str) -> float:
        correct, scored = self.counts.get((task, read), (0, 0))
        return correct / scored if scored else float("nan")

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(task for task, _ in self.counts))

    def as_dict(self) -> dict[str, dict[str, dict[str, float]]]:
        return {task: {read: {"top1": self.rate(task, read), "tokens": self.counts[task, read][1]}
                       for read in READS if (task, read) in self.counts} for task in self.tasks}


def heldout_top1(base_gguf: PathLike, records: Sequence[Record], adapter: Optional[PathLike] = None,
                 threads: int = 1, n_ctx: int = 1024) -> Top1:
    """Teacher-forced top-1 of every read in READS (the LoRA one only with `adapter`) on `records`."""
    from ..slm import NativeSLM

    top1 = Top1()
    with NativeSLM(Path(base_gguf), threads=threads, n_ctx=n_ctx) as slm:
        lora = slm.load_adapter(adapter) if adapter else None
        for record in records:
            prompt_only = tokenize_record(slm, record, read=lambda r: r.prompt)
            with_context = tokenize_record(slm, record)
            runs: list[tuple[str, RecordTokens, list[tuple[Any, float]]]] = [
                ("prompt only", prompt_only, []), ("private context", with_context, [])]
            if lora is not None:
                runs.append(("private context + LoRA", with_context, [(lora, 1.0)]))
            for read, tokens, adapters in runs:
                slm.set_adapters(adapters)
                hits = record_hits(slm, tokens)
                top1.add(record.task, read, int(hits.sum()), len(hits))
    return top1
