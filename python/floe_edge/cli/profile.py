"""`floe profile detect|show|list`, and `--profile` on the commands that run a model.

A profile fills in threads, kernel variant, deadline and fusion preset unless the flag is given on the command line:
explicit flag > profile > built-in default. To tell an explicit `--threads 1` from the default 1, those flags get
defaults made by `unset(...)`: equal values (same repr, so `--help` and the CLI spec do not change) of a marker type
that a value parsed from the command line never has.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TypeVar, Union

from ._types import Subparsers
from .info import _print_table

if TYPE_CHECKING:
    from ..profiles import Profile

__all__ = ["add_profile_option", "apply_profile", "given", "register", "unset"]

T = TypeVar("T", int, float, str)


class _Unset:
    """Marks a flag's default: the flag was not on the command line."""

    __slots__ = ()


class _UnsetInt(_Unset, int):
    __slots__ = ()


class _UnsetFloat(_Unset, float):
    __slots__ = ()


class _UnsetStr(_Unset, str):
    __slots__ = ()


_MARKED: dict[type, type] = {int: _UnsetInt, float: _UnsetFloat, str: _UnsetStr}


def unset(value: T) -> T:
    """`value` as a flag default that a profile may replace."""
    marked: T = _MARKED[type(value)](value)
    return marked


def _plain(value: _Unset) -> Union[int, float, str]:
    if isinstance(value, int):
        return int(value)
    return float(value) if isinstance(value, float) else str(value)


def given(args: argparse.Namespace, dest: str) -> bool:
    """Whether the flag of `dest` was given on the command line (None and unset(...) defaults were not)."""
    value = getattr(args, dest)
    return value is not None and not isinstance(value, _Unset)


def add_profile_option(parser: argparse.ArgumentParser, *flags: str, applies: str, note: str = "") -> None:
    parser.add_argument(*flags, dest="hw_profile", metavar="NAME|PATH",
                        help=f"a hardware profile (`floe profile list`, or a .toml file): it sets {applies} "
                             f"unless those flags are given{note}")


def _settings(profile: Profile) -> dict[str, Any]:
    """The flags (by dest) a profile sets (a litert profile: the NPU, where its delegate is present)."""
    litert = {"backend": "litert", "delegate": "npu"} if profile.backend == "litert" else {}
    return {"threads": profile.threads, "variant": profile.variant, "deadline_ms": profile.hybrid.deadline_ms,
            "fusion": profile.hybrid.fusion, **litert}


def apply_profile(args: argparse.Namespace) -> None:
    """Fill the flags the user left at their defaults from `--profile` (a bad profile is a ValueError); then every
    unset(...) default becomes a plain value."""
    if args.hw_profile:
        _fill_from_profile(args)
    for dest, value in vars(args).items():
        if isinstance(value, _Unset):
            setattr(args, dest, _plain(value))


def _fill_from_profile(args: argparse.Namespace) -> None:
    from .. import kernels
    from ..profiles import load_profile

    profile = load_profile(args.hw_profile)
    if profile.backend != "native" and not hasattr(args, "backend"):
        print(f"floe: profile {profile.name} names backend {profile.backend}; this command runs the native backend "
              "with its other settings", file=sys.stderr)
    if not given(args, "variant") and profile.variant not in kernels.variants():
        raise ValueError(f"profile {profile.name} wants kernel variant {profile.variant}, which this CPU cannot run "
                         f"(available: {', '.join(kernels.variants())})")
    for dest, value in _settings(profile).items():
        if hasattr(args, dest) and not given(args, dest):
            setattr(args, dest, value)


# -- floe profile ... --

def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _cmd_detect(args: argparse.Namespace) -> int:
    from ..host import Host
    from ..profiles import detect

    host = Host.read()
    profile, reasons = detect(host)
    if args.json:
        facts = {**asdict(host), "features": sorted(host.features), "variants": list(host.variants)}
        print(json.dumps({"profile": profile.as_dict(), "reasons": reasons, "host": facts}, indent=2))
        return 0
    print(f"profile {profile.name}: {profile.description}")
    for reason in reasons:
        print(f"  - {reason}")
    print()
    _print_table(_flat(profile.as_dict()))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from ..profiles import load_profile

    profile = load_profile(args.name)
    print(json.dumps(profile.as_dict(), indent=2)) if args.json else _print_table(_flat(profile.as_dict()))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from ..profiles import list_profiles, load_profile

    profiles = [load_profile(name) for name in list_profiles()]
    if args.json:
        print(json.dumps([p.as_dict() for p in profiles], indent=2))
    else:
        _print_table({p.name: p.description for p in profiles})
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("profile", help="hardware profiles: detect this machine's, show one, list them")
    commands = p.add_subparsers(dest="profile_command", required=True)
    detect = commands.add_parser("detect", help="the profile that fits this machine, and why")
    detect.add_argument("--json", action="store_true", help="the profile, the reasons and the host facts as JSON")
    detect.set_defaults(func=_cmd_detect)
    show = commands.add_parser("show", help="every setting of a profile")
    show.add_argument("name", metavar="NAME|PATH", help="a shipped profile's name (see `floe profile list`) or a "
                                                        ".toml file")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_cmd_show)
    listing = commands.add_parser("list", help="the shipped profiles")
    listing.add_argument("--json", action="store_true", help="every profile in full, as JSON")
    listing.set_defaults(func=_cmd_list)
