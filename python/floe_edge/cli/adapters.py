"""`floe adapters`: the versioned LoRA adapter store (list, add, activate, rollback, verify) and PEFT import."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..adapters import AdapterStore, import_peft
from ._types import Subparsers


def _store(args: argparse.Namespace) -> AdapterStore:
    return AdapterStore(args.root)


def _cmd_list(args: argparse.Namespace) -> int:
    entries = _store(args).list()
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=2))
        return 0
    if not entries:
        print(f"no adapters in {_store(args).root}")
    for e in entries:
        print(f"{'*' if e.active else ' '} {e.profile}/{e.app} v{e.version}  rank {e.rank}  alpha {e.alpha:g}  "
              f"{e.architecture}  base {e.base_model or '-'}  {e.size} bytes  {e.created}  sha256 {e.sha256[:12]}")
    return 0


def _cmd_add(args: argparse.Namespace) -> int:
    store = _store(args)
    version = store.add(args.adapter, args.profile, args.app, base=args.base)
    if args.activate:
        store.activate(args.profile, args.app, version)
    if args.json:
        print(json.dumps({**store.info(args.profile, args.app, version).to_json(), "active": args.activate}))
    else:
        print(f"{args.profile}/{args.app} v{version}{' (active)' if args.activate else ''}")
    return 0


def _cmd_activate(args: argparse.Namespace) -> int:
    _store(args).activate(args.profile, args.app, args.version)
    print(f"{args.profile}/{args.app}: v{args.version} active")
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    version = _store(args).rollback(args.profile, args.app)
    print(f"{args.profile}/{args.app}: back to v{version}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    store = _store(args)
    removed = [str(p) for p in store.remove_leftovers()] if args.fix else []
    problems = store.verify()
    if args.json:
        print(json.dumps({"root": str(store.root), "problems": problems, "removed": removed}))
    else:
        lines = [f"removed {p}" for p in removed] + problems
        print("\n".join(lines + ([] if problems else [f"all adapters in {store.root} intact"])))
    return 1 if problems else 0


def _cmd_import(args: argparse.Namespace) -> int:
    adapter = import_peft(args.peft, args.base)
    if args.f16:
        adapter.pairs = {name: (a.astype("float16"), b.astype("float16")) for name, (a, b) in adapter.pairs.items()}
    adapter.write(args.out)
    summary = {"out": str(args.out), "architecture": adapter.architecture, "rank": adapter.rank,
               "alpha": adapter.alpha, "tensors": len(adapter.pairs)}
    print(json.dumps(summary) if args.json else f"wrote {args.out}: {len(adapter.pairs)} adapted tensors, rank "
                                                  f"{adapter.rank}, alpha {adapter.alpha:g} ({adapter.architecture})")
    return 0


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", required=True, help="hardware profile name (e.g. rpi4)")
    p.add_argument("--app", required=True, help="application name")


def register(sub: Subparsers) -> None:
    """Add `floe adapters ...` to a parser's subcommands."""
    group = sub.add_parser("adapters", help="LoRA adapters: the versioned store, PEFT import",
                           description="LoRA adapters in llama.cpp's GGUF LoRA format, stored per profile and app")
    cmds = group.add_subparsers(dest="adapters_command", required=True)
    root = argparse.ArgumentParser(add_help=False)
    root.add_argument("--root", type=Path, help="the store's directory (default: $FLOE_HOME/adapters, else "
                                                 "~/.cache/floe/adapters)")
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="machine-readable output")

    p = cmds.add_parser("list", parents=[root, json_flag], help="every stored version; * marks the active ones")
    p.set_defaults(func=_cmd_list)
    p = cmds.add_parser("add", parents=[root, json_flag], help="store an adapter file as the next version")
    p.add_argument("adapter", type=Path, help="a GGUF LoRA adapter file")
    _target(p)
    p.add_argument("--base", type=Path, help="check the adapter against this base GGUF and record its name")
    p.add_argument("--activate", action="store_true", help="also make the new version active")
    p.set_defaults(func=_cmd_add)
    p = cmds.add_parser("activate", parents=[root], help="make a stored version the active one (atomically)")
    _target(p)
    p.add_argument("version", type=int, help="the version number (see `floe adapters list`)")
    p.set_defaults(func=_cmd_activate)
    p = cmds.add_parser("rollback", parents=[root], help="go back to the previously active version")
    _target(p)
    p.set_defaults(func=_cmd_rollback)
    p = cmds.add_parser("verify", parents=[root, json_flag], help="check every stored adapter's checksum and format, "
                                                                  "and find what interrupted commands left (exit "
                                                                  "status 1 on a problem)")
    p.add_argument("--fix", action="store_true", help="first remove what interrupted `add`s and `activate`s left "
                                                      "(never a stored version, nor an add still running)")
    p.set_defaults(func=_cmd_verify)
    p = cmds.add_parser("import", parents=[json_flag], help="convert a PEFT LoRA adapter to a GGUF adapter",
                        description="adapter_config.json + adapter_model.safetensors (no torch needed) -> a GGUF "
                                    "LoRA adapter for the base GGUF (llama architecture)")
    p.add_argument("--peft", type=Path, required=True, help="the PEFT adapter directory")
    p.add_argument("--base", type=Path, required=True, help="the base model's GGUF file")
    p.add_argument("--out", type=Path, required=True, help="the GGUF adapter file to write")
    p.add_argument("--f16", action="store_true", help="store A and B as float16 (default: as PEFT saved them)")
    p.set_defaults(func=_cmd_import)
