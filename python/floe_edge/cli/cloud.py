"""`floe cloud serve`: serve a GGUF model's top-k log-probs to floe devices (`floe_edge.cloud.server`)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..cloud.protocol import DEFAULT_MAX_K, MAX_BODY_BYTES
from ..cloud.server import DEFAULT_PORT
from ._types import Subparsers
from .progress import resolve_model


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..cloud.backend import LlamaBackend
    from ..cloud.knowledge import KnowledgeBase, KnowledgeError
    from ..cloud.server import Limits, serve

    if (args.tls_cert is None) != (args.tls_key is None):
        print("floe: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    keys = args.api_key or ([os.environ["FLOE_API_KEY"]] if os.environ.get("FLOE_API_KEY") else [])
    try:
        limits = Limits(max_k=args.max_k, max_sessions_per_key=args.max_sessions_per_key,
                        idle_expiry_s=args.idle_expiry_s, max_body_bytes=args.max_body_bytes)
    except ValueError as e:
        print(f"floe: {e}", file=sys.stderr)
        return 2
    try:  # before the model: a bad file fails in a moment, naming its line
        knowledge = KnowledgeBase.load(args.knowledge) if args.knowledge else None
    except KnowledgeError as e:
        print(f"floe: --knowledge: {e}", file=sys.stderr)
        return 2
    try:
        path = resolve_model(args.model)
        backend = LlamaBackend(path, n_ctx=args.ctx, n_threads=args.threads,
                               saved_prefix_bytes=args.prompt_cache_mb << 20)
    except ImportError:
        print("floe: `floe cloud serve` needs llama-cpp-python: pip install 'floe-edge[cloud]'", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"floe: {e}", file=sys.stderr)
        return 1
    if not keys and args.host not in ("127.0.0.1", "::1", "localhost"):
        print("floe: warning: serving beyond loopback without an API key", file=sys.stderr)

    def ready(url: str) -> None:
        info = {"url": url, "model": backend.name, "n_vocab": backend.n_vocab, "n_ctx": backend.n_ctx,
                "auth": bool(keys), "knowledge_entries": len(knowledge) if knowledge is not None else 0}
        print(json.dumps(info) if args.json else f"floe cloud: serving {backend.name} on {url}", flush=True)

    try:
        serve(backend, host=args.host, port=args.port, api_key=keys, limits=limits, tls_cert=args.tls_cert,
              tls_key=args.tls_key, on_ready=ready, knowledge=knowledge)
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, after a clean shutdown
        pass
    except OSError as e:
        print(f"floe: {e}", file=sys.stderr)
        return 1
    finally:
        backend.close()
    return 0


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def register_serve(cloud_subparsers: Subparsers) -> None:
    """Add `serve` to the `floe cloud` subcommands."""
    p = cloud_subparsers.add_parser(
        "serve", help="serve a GGUF model to floe devices (token-id API + OpenAI /v1/completions)",
        description="Serve a model's top-k log-probs, drafts and scores to floe devices. Loopback by default; "
                    "use --api-key (or FLOE_API_KEY) and TLS beyond it.")
    p.add_argument("--model", required=True, help="model name (floe models list) or a GGUF path")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port (printed)")
    p.add_argument("--api-key", action="append", metavar="KEY",
                   help="required Bearer key (repeatable; default $FLOE_API_KEY, else no auth)")
    p.add_argument("--tls-cert", metavar="FILE", help="PEM certificate (with --tls-key): serve HTTPS")
    p.add_argument("--tls-key", metavar="FILE")
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    p.add_argument("--ctx", type=int, default=2048, help="context size in tokens")
    p.add_argument("--prompt-cache-mb", type=_non_negative, default=256, metavar="MB",
                   help="host memory for the KV states of prefixes a session left (a knowledge entry read again "
                        "restores instead of decoding; 0: off)")
    p.add_argument("--max-k", type=int, default=DEFAULT_MAX_K)
    p.add_argument("--max-sessions-per-key", type=int, default=8)
    p.add_argument("--idle-expiry-s", type=float, default=300.0)
    p.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES)
    p.add_argument("--knowledge", metavar="FILE",
                   help="a knowledge base the model reads in front of a session's prompt (devices never receive "
                        "it): JSONL of {\"id\", \"text\"} lines, or personal data (a folder or file of section 9 "
                        "records: each distinct cloud_context, named by knowledge_id); a session names its entry "
                        "or one is retrieved from its prompt")
    p.add_argument("--json", action="store_true", help="print the address as one JSON line when ready")
    p.set_defaults(func=_cmd_serve)


def register(sub: Subparsers) -> None:
    cloud = sub.add_parser("cloud", help="the cloud side: serve a model's top-k log-probs to floe devices")
    register_serve(cloud.add_subparsers(dest="cloud_command", required=True))
