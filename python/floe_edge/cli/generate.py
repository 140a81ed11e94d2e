"""`floe generate`: the edge model alone, or fused with a cloud under a per-token deadline."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Union

from ..litert.runtime import DELEGATES
from ..profiles import BACKENDS
from ._types import Subparsers
from .profile import add_profile_option, apply_profile, given, unset

if TYPE_CHECKING:
    from ..gate import LearnedGate
    from ..litert import LiteRTSLM
    from ..slm import NativeSLM

    EdgeSLM = Union[NativeSLM, LiteRTSLM]
from .progress import resolve_model


def enforce_memory_budget(args: argparse.Namespace, model: str, n_ctx: int, threads: int, override: str) -> None:
    """With a hardware profile (and without --ignore-memory-budget): refuse to load `model` when the edge would
    need more than the profile's memory_mb (MemoryBudgetError, a one-line error ending with `override`)."""
    if not args.hw_profile or args.ignore_memory_budget:
        return
    from ..profiles import check_memory, estimate_memory, load_profile

    check_memory(load_profile(args.hw_profile), estimate_memory(model, n_ctx=n_ctx, threads=threads),
                 f"{override}, or --ignore-memory-budget to run anyway")


def add_budget_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ignore-memory-budget", action="store_true",
                        help="run even when the edge needs more memory than the hardware profile's memory_mb")


def resolve_fusion(args: argparse.Namespace, fusion_given: bool) -> Union[str, "LearnedGate"]:
    """--fusion, with a learned gate loaded up front (before any model): --gate FILE (over a profile's preset), or
    the preset gate[:<app>] ($FLOE_HOME/gates/<app>.json). A missing or bad gate file is a GateError (a ValueError)
    naming the file. `fusion_given`: --fusion was on the command line."""
    from ..gate import LearnedGate, is_gate_preset, load_preset

    if args.gate:
        if fusion_given and args.fusion != "gate":
            raise ValueError(f"--gate FILE goes with --fusion gate (or no --fusion), not --fusion {args.fusion}")
        return LearnedGate.load(args.gate)
    return load_preset(args.fusion) if is_gate_preset(args.fusion) else str(args.fusion)


def open_edge_from_args(args: argparse.Namespace) -> "EdgeSLM":
    """The edge model of --backend (native: the GGUF; litert: the exported .tflite, the delegate of --delegate, or
    the profile's NPU when present)."""
    from ..backends import open_edge

    return open_edge(args.backend, args.model, threads=args.threads, n_ctx=args.ctx, variant=args.variant,
                     tokenizer=args.tokenizer, delegate=args.delegate,
                     delegate_fallback=getattr(args, "delegate_fallback", False))


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default=unset("native"),
                        help="native (the GGUF on our decoder, default) or litert (a .tflite from `floe export "
                             "litert`, needs floe-edge[litert])")
    parser.add_argument("--tokenizer", metavar="GGUF",
                        help="with --backend litert: the GGUF the .tflite was exported from, when it is not where "
                             "its sidecar says")
    parser.add_argument("--delegate", choices=("none", *DELEGATES), default=unset("none"),
                        help="with --backend litert: run on a GPU or NPU delegate (default none: XNNPACK on the CPU)")


def _cmd_generate(args: argparse.Namespace) -> int:
    from ..sampling import Sampler

    fusion_given = given(args, "fusion")
    args.delegate_fallback = not given(args, "delegate")  # a profile's NPU: only where present
    apply_profile(args)
    if args.cloud:
        args.fusion = resolve_fusion(args, fusion_given)
    if args.backend == "native":
        args.model = resolve_model(args.model)  # a path from here on
        enforce_memory_budget(args, args.model, n_ctx=args.ctx, threads=args.threads,
                              override="use a smaller --ctx")
    if args.knowledge is not None and (not args.cloud or args.openai or not 0 < len(args.knowledge) <= 128):
        print("floe: --knowledge names an entry (1..128 characters) of a `floe cloud serve --knowledge` cloud: it "
              "needs --cloud (not --openai)", file=sys.stderr)
        return 2
    if args.cloud:
        return _cmd_generate_hybrid(args)
    sampler = Sampler(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                      repeat_penalty=args.repeat_penalty, seed=args.seed)
    with open_edge_from_args(args) as slm:
        ids, pieces = [], []
        for tok in slm.generate(args.prompt, n=args.n, sampler=sampler):
            if tok.id >= 0:
                ids.append(tok.id)
            pieces.append(tok.text)
            if not args.json:
                print(tok.text, end="", flush=True)
        stats = slm.last_stats
    if args.json:
        print(json.dumps({"ids": ids, "text": "".join(pieces), "prompt_tokens": stats.prompt_tokens,
                          "generated_tokens": stats.generated_tokens, "prefill_ms": round(stats.prefill_ms, 2),
                          "decode_ms": round(stats.decode_ms, 2), "decode_tok_s": round(stats.decode_tok_s, 2)}))
    else:
        print(f"\n[{stats.generated_tokens} tokens, prefill {stats.prefill_ms:.0f} ms, "
              f"{stats.decode_tok_s:.1f} tok/s]", file=sys.stderr)
    return 0


def _cmd_generate_hybrid(args: argparse.Namespace) -> int:
    """`floe generate --cloud URL`: edge + cloud with fusion under a per-token deadline."""
    from ..cloud.client import FloeCloudBackend
    from ..cloud.openai_backend import OpenAICompletionsBackend
    from ..fusion import FusedSampler
    from ..hybrid import HybridGenerator

    sampler = FusedSampler(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                           repeat_penalty=args.repeat_penalty, seed=args.seed)
    key = args.api_key or os.environ.get("FLOE_API_KEY")
    with open_edge_from_args(args) as slm:
        link = (OpenAICompletionsBackend(args.cloud, slm.tokenizer, api_key=key) if args.openai
                else FloeCloudBackend(args.cloud, slm.tokenizer, api_key=key))
        with HybridGenerator(slm, link, fusion=args.fusion, sampler=sampler, deadline_ms=args.deadline_ms,
                             pace=args.pace) as gen:
            tokens = []
            for tok in gen.generate(args.prompt, n=args.n, private_context=args.private_context or "",
                                    knowledge=args.knowledge):
                tokens.append(tok)
                if not args.json:
                    print(tok.text, end="", flush=True)
            s = gen.last_stats
    summary = {"tokens": s.tokens, "latency_ms": round(s.latency_ms, 1), "ms_per_token": round(s.ms_per_token, 2),
               "deadline_misses": s.deadline_misses, "cloud_share": round(s.cloud_share, 3), "sources": s.sources,
               "kb_sent": round(s.bytes_sent / 1e3, 2), "kb_received": round(s.bytes_received / 1e3, 2),
               "cloud_errors": s.cloud_errors}
    if args.json:
        print(json.dumps({"ids": [t.id for t in tokens if t.id >= 0], "text": "".join(t.text for t in tokens),
                          "source": [t.source.value for t in tokens if t.id >= 0], **summary}))
    else:
        print("\n[" + ", ".join(f"{k} {v}" for k, v in summary.items()) + "]", file=sys.stderr)
    return 0


def register(sub: Subparsers) -> None:
    gen = sub.add_parser("generate", help="generate text with the edge model, alone or fused with a cloud")
    gen.add_argument("--model", default="smollm2-135m",
                     help="model name or GGUF path (default smollm2-135m); the .tflite with --backend litert")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("-n", type=int, default=64, help="tokens to generate")
    gen.add_argument("--threads", type=int, default=unset(1))
    gen.add_argument("--ctx", type=int, default=2048, help="context size (tokens)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--min-p", type=float, default=0.0)
    gen.add_argument("--repeat-penalty", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--json", action="store_true", help="ids, text and timings as JSON")
    gen.add_argument("--cloud", metavar="URL", help="fuse with a cloud: `floe cloud serve` (or --openai) at URL")
    gen.add_argument("--openai", action="store_true", help="the cloud is an OpenAI-compatible /v1/completions")
    gen.add_argument("--api-key", help="the cloud's key (default $FLOE_API_KEY)")
    gen.add_argument("--deadline-ms", type=float, default=unset(200.0), help="per-token deadline (with --cloud)")
    gen.add_argument("--pace", type=float, default=None,
                     help="with --cloud: wait for the cloud only while the whole answer stays within PACE x the "
                          "edge's own time (e.g. 1.1)")
    gen.add_argument("--fusion", default=unset("assistant"),
                     help="fusion preset: assistant, code, commands, adaptive, or gate (a learned gate: "
                          "$FLOE_HOME/gates/default.json; gate:APP for APP.json there)")
    gen.add_argument("--gate", metavar="FILE", help="with --cloud: fuse with the learned gate in FILE (--fusion gate)")
    gen.add_argument("--private-context", help="text only the edge model sees (with --cloud)")
    gen.add_argument("--knowledge", metavar="ID",
                     help="with --cloud: the id of the cloud's knowledge entry to read (default: the cloud retrieves "
                          "one from the prompt, if it has a knowledge base)")
    gen.add_argument("--variant", help="kernel variant: avx512_vnni, avx512, avx2, neon_i8mm, neon_dotprod, neon, ref "
                                       "(default: the best this CPU runs; `floe info` lists them)")
    add_backend_options(gen)
    add_profile_option(gen, "--profile", "--hw-profile",
                       applies="--backend, --threads, --variant, --deadline-ms and --fusion",
                       note="; the model must fit its memory_mb")
    add_budget_option(gen)
    gen.set_defaults(func=_cmd_generate)
