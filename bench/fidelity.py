#!/usr/bin/env python3
"""How closely NativeSLM tracks llama.cpp on the same GGUF, next to how closely llama.cpp tracks itself.

    python bench/fidelity.py            # writes the "fidelity" section of BENCHMARKS.md

Teacher-forced over 512 positions of real text (Python standard library source) and greedy 64-token continuations
of 10 prompts. The reference is llama.cpp evaluating the text in one batch; as a noise floor the same comparisons are
made for llama.cpp evaluating token by token (n_batch = 1): with 30 blocks of q8 activation rounding, float sums
taken in another order flip roundings that then grow, so even llama.cpp's two code paths disagree.
"""

from __future__ import annotations

import argparse
import json.decoder
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load, machine, write_section  # noqa: E402

PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def quicksort(arr):\n",
    "The history of the Roman Empire",
    "Once upon a time, in a small village,",
    "import numpy as np\n\n# compute the mean of",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "The three primary colors are",
    "In Python, a list comprehension",
    "Photosynthesis is the process by which",
    "<|im_start|>user\nHow do I reverse a string in JavaScript?<|im_end|>\n<|im_start|>assistant\n",
]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def compare(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    a, b = log_softmax(ours), log_softmax(ref)
    top = np.argsort(-b, axis=-1)[:, :10]
    d = np.abs(np.take_along_axis(a, top, -1) - np.take_along_axis(b, top, -1)).max(-1)
    return {"argmax": float((a.argmax(-1) == b.argmax(-1)).mean()), "median": float(np.median(d)),
            "p90": float(np.quantile(d, 0.9)), "max": float(d.max())}


def llama(path: Path, threads: int, batch: int):
    import llama_cpp

    return llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_batch=batch, n_ubatch=batch, n_threads=threads,
                           n_threads_batch=threads, logits_all=True, verbose=False)


def llama_scores(ll, ids: list[int]) -> np.ndarray:
    ll.reset()
    ll.eval(ids)
    return np.array(ll.scores[: len(ids)], dtype=np.float32)


def llama_greedy(ll, ids: list[int], n: int) -> list[int]:
    out: list[int] = []
    for tok in ll.generate(ids, temp=0.0, top_k=1, reset=True):
        out.append(int(tok))
        if len(out) == n:
            break
    return out


def greedy_agreement(gen_a: Callable[[list[int]], list[int]], gen_b: Callable[[list[int]], list[int]],
                     prompts: list[list[int]]) -> tuple[int, list[Optional[int]]]:
    same, firsts = 0, []
    for ids in prompts:
        a, b = gen_a(ids), gen_b(ids)
        same += a == b
        firsts.append(next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None))
    return same, firsts


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="GGUF (default: floe models pull smollm2-135m)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--positions", type=int, default=512)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    from floe_edge import NativeSLM, kernels, models

    path = Path(args.model) if args.model else models.pull("smollm2-135m")
    text = Path(json.decoder.__file__).read_text() + Path(textwrap.__file__).read_text()
    slm = NativeSLM(path, threads=args.threads, n_ctx=1024)
    ids = slm.tokenize(text, add_bos=False)[: args.positions]
    batched, stepwise = llama(path, args.threads, 512), llama(path, args.threads, 1)
    ref = llama_scores(batched, ids)
    slm.reset()
    tf_ours, tf_self = compare(slm.eval(ids), ref), compare(llama_scores(stepwise, ids), ref)

    prompts = [slm.tokenize(p) for p in PROMPTS]
    ours_gen = lambda p: [t.id for t in slm.generate(p, n=64, stop_at_eog=False) if t.id >= 0]  # noqa: E731
    g_ours, f_ours = greedy_agreement(ours_gen, lambda p: llama_greedy(batched, p, 64), prompts)
    g_self, f_self = greedy_agreement(lambda p: llama_greedy(stepwise, p, 64), lambda p: llama_greedy(batched, p, 64),
                                      prompts)

    row = lambda name, c, g, f: (f"| {name} | {c['argmax']:.1%} | {c['median']:.3f} | {c['p90']:.3f} | "  # noqa: E731
                                 f"{c['max']:.3f} | {g}/10 | {', '.join('-' if x is None else str(x) for x in f)} |")
    cmd = "python bench/fidelity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "## Decoder fidelity: NativeSLM vs llama.cpp", "",
        f"`{cmd.strip()}` — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {machine()}, load {load()}, kernels "
        f"`{kernels.active_variant()}`, {args.threads} threads, SmolLM2-135M-Instruct Q4_1.", "",
        f"Reference: llama.cpp evaluating {len(ids)} tokens of Python stdlib source in one batch. Top-10 Δ: max "
        "|difference of log-softmax| over the reference's 10 most likely tokens, per position. Greedy: 64-token "
        "continuations of 10 prompts, identical count and first differing step per prompt.", "",
        "| compared with llama.cpp (batched) | argmax agreement | top-10 Δ median | p90 | max | greedy identical "
        "| first difference |", "|---|---|---|---|---|---|---|",
        row("NativeSLM (ours)", tf_ours, g_ours, f_ours),
        row("llama.cpp token by token (noise floor)", tf_self, g_self, f_self), "",
        "A one-block model (`floe make-slm --layers 1`), where nothing compounds, agrees at the median position to "
        "~4e-6 (tests/test_slm.py); what remains comes from rounding flips (q8 activation ties, f16 probabilities) "
        "growing through 30 blocks, as it does between llama.cpp's own batched and token-by-token paths.",
    ]
    if not args.no_write:
        write_section("fidelity", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
