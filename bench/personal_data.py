#!/usr/bin/env python3
"""What each side knows on the held-out personal data: teacher-forced top-1 of the edge model on the completion tokens.

    python bench/personal_data.py            # writes the "personal-data" section of BENCHMARKS.md

SmolLM2-135M (NativeSLM) reads a held-out record three ways: the prompt alone, the edge input (private context +
prompt) and the cloud input (cloud context + prompt), as DESIGN.md section 9 defines them. The input is tokenized with
BOS, the completion on its own and appended as it is; top-1 counts the completion tokens whose argmax, given the true
tokens before them, is that token. Besides all completion tokens, the tokens of the span only the private context
holds (a device id, a booking time, a helper name) and of the span only the cloud context holds (an API function, an
address or closing time, a library function) are scored apart: each input should win on its own span only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load, machine, write_section  # noqa: E402

READS: dict[str, Callable[[Any], str]] = {}  # filled in main() once floe_edge is imported


@dataclass
class Hits:
    """Correct and scored tokens, over all completion tokens and over each span's tokens."""

    counts: dict[str, list[int]] = field(default_factory=lambda: {k: [0, 0] for k in ("all", "private", "cloud")})

    def add(self, kind: str, correct: int, scored: int) -> None:
        self.counts[kind][0] += correct
        self.counts[kind][1] += scored

    def rate(self, kind: str) -> str:
        correct, scored = self.counts[kind]
        return f"{correct / scored:.1%}" if scored else "-"


def span_mask(slm: Any, completion_ids: list[int], completion: str, span: str) -> np.ndarray:
    """Which completion tokens overlap the span's bytes (token byte ranges from detokenizing one token at a time)."""
    start = completion.encode("utf-8").find(span.encode("utf-8"))
    if start < 0:
        raise ValueError(f"span {span!r} not in completion {completion!r}")
    end, mask, at = start + len(span.encode("utf-8")), [], 0
    for token in completion_ids:
        width = len(slm.detokenize([token]))
        mask.append(at < end and at + width > start)
        at += width
    return np.array(mask, dtype=bool)


def score(slm: Any, text: str, completion_ids: list[int]) -> np.ndarray:
    """Per completion token: is the teacher-forced argmax that token?"""
    ids = slm.tokenize(text, add_bos=True, special=False)
    slm.reset()
    logits = slm.eval(ids + completion_ids)
    predicted = logits[len(ids) - 1: len(ids) + len(completion_ids) - 1].argmax(-1)
    return predicted == np.array(completion_ids)


def measure(slm: Any, records: list[Any]) -> dict[tuple[str, str], Hits]:
    hits: dict[tuple[str, str], Hits] = {}
    for number, record in enumerate(records, start=1):
        completion_ids = slm.tokenize(record.completion, add_bos=False, special=False)
        masks = {kind: span_mask(slm, completion_ids, record.completion, record.extra["meta"][f"{kind}_span"])
                 for kind in ("private", "cloud")}
        for read, build in READS.items():
            right = score(slm, build(record), completion_ids)
            row = hits.setdefault((record.task, read), Hits())
            row.add("all", int(right.sum()), len(right))
            for kind, mask in masks.items():
                row.add(kind, int(right[mask].sum()), int(mask.sum()))
        print(f"\r{number}/{len(records)} records", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return hits


def table(hits: dict[tuple[str, str], Hits], records: list[Any]) -> list[str]:
    lines = ["| task | records | reads | all completion tokens | private-span tokens | cloud-span tokens |",
             "|---|---|---|---|---|---|"]
    for task in dict.fromkeys(r.task for r in records):
        n = sum(r.task == task for r in records)
        for read in READS:
            h = hits[task, read]
            lines.append(f"| {task} | {n} | {read} | {h.rate('all')} ({h.counts['all'][1]}) | {h.rate('private')} | "
                         f"{h.rate('cloud')} |")
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="GGUF (default: floe models pull smollm2-135m)")
    ap.add_argument("--data", default=None, help="a section 9 data folder (default: generated with the flags below)")
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--test-per-task", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    from floe_edge import NativeSLM, kernels, models
    from floe_edge.data import cloud_input, edge_input, generate, read_dataset

    READS.update({"prompt only": lambda r: r.prompt, "edge: private context + prompt": edge_input,
                  "cloud: cloud context + prompt": cloud_input})
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp)
        if not args.data:
            generate(data, users=args.users, seed=args.seed, train_per_task=0, test_per_task=args.test_per_task)
        _, records = read_dataset(data)
    path = Path(args.model) if args.model else models.pull("smollm2-135m")
    with NativeSLM(path, threads=args.threads, n_ctx=1024) as slm:
        hits = measure(slm, records)
    source = f"`{args.data}`" if args.data else (f"generated (`floe data generate --users {args.users} --seed "
                                                  f"{args.seed} --test-per-task {args.test_per_task}`)")
    command = " ".join(["python bench/personal_data.py", *(argv if argv is not None else sys.argv[1:])])
    run = (f"`{command}` — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {machine()}, load {load()}, kernels "
           f"`{kernels.active_variant()}`, {args.threads} threads. Data: {source}, the held-out split.")
    lines = [
        "## Personal data: what each side knows (held-out top-1, SmolLM2-135M)", "", run, "",
        "Teacher-forced top-1 on the completion tokens (their count in brackets); the span columns score only the "
        "tokens of the span the private context alone holds and of the span the cloud context alone holds.", "",
        *table(hits, records),
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:  # printed first: the table is not lost if BENCHMARKS.md cannot be written
        write_section("personal-data", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
