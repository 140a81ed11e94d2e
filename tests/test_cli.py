"""`floe info` and variant selection, run as a user would (a subprocess)."""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

from floe_edge import kernels


def run_floe(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "floe_edge.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60, check=True)


def test_info_json() -> None:
    info = json.loads(run_floe("info", "--json").stdout)
    assert info["variants"] == kernels.variants()
    assert info["variants"][-1] == "ref"
    assert info["active_variant"] == info["variants"][0]
    assert info["threads"] >= 1
    if info["arch"] == "x86_64":
        assert ("avx2" in info["variants"]) == all(f in info["cpu_features"] for f in ("avx2", "fma", "f16c"))


def test_info_text() -> None:
    out = run_floe("info").stdout
    assert "active_variant" in out and kernels.active_variant() in out


def test_force_ref() -> None:
    info = json.loads(run_floe("info", "--json", env={"FLOE_FORCE_REF": "1"}).stdout)
    assert info["active_variant"] == "ref" and info["force_ref"]


def test_this_cpu_gets_its_best_variant() -> None:
    features = kernels.cpu_features()
    if features["avx2"] and features["fma"] and features["f16c"]:
        avx512 = features["avx512f"] and features["avx512bw"] and features["avx512vl"]
        best = ("avx512_vnni" if features["avx512vnni"] else "avx512") if avx512 else \
            ("avx_vnni" if features["avxvnni"] else "avx2")
        assert kernels.variants()[0] == best
    if features["neon"]:
        best = ("neon_i8mm" if features["i8mm"] else "neon_dotprod") if features["dotprod"] else "neon"
        assert kernels.variants()[0] == best


def test_force_variant_shows_in_info() -> None:
    forced = kernels.variants()[min(1, len(kernels.variants()) - 1)]  # the second best: not the default
    info = json.loads(run_floe("info", "--json", env={"FLOE_FORCE_VARIANT": forced}).stdout)
    assert info["active_variant"] == forced


# -- the command-line contract: every command, flag, default and help text, as recorded in tests/cli_spec.json --

SPEC = Path(__file__).with_name("cli_spec.json")


def parser_spec(parser: argparse.ArgumentParser, spec: Optional[dict[str, Any]] = None,
                help: Optional[str] = None) -> dict[str, Any]:
    """Everything about a parser that users and scripts rely on, as plain JSON data: one entry per (sub)command,
    named by its prog ("floe cloud serve"), with one row per flag."""
    spec = {} if spec is None else spec
    entry: dict[str, Any] = {"help": help, "description": parser.description, "options": []}
    spec[parser.prog] = entry
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            entry["commands"] = list(action.choices)
            for name, sub in action.choices.items():
                parser_spec(sub, spec, helps.get(name))
            continue
        entry["options"].append(
            [action.option_strings, action.dest, type(action).__name__, repr(action.default),
             getattr(action.type, "__name__", None), list(action.choices) if action.choices is not None else None,
             action.required, action.nargs, action.metavar, action.help])
    return spec


def current_spec() -> dict[str, Any]:
    from floe_edge.cli import build_parser

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "cpu_count", lambda: 4)  # `cloud serve --threads` defaults to half the cores
        return json.loads(json.dumps(parser_spec(build_parser())))  # tuples as lists, as in the file


def write_spec(path: Path) -> None:
    """The spec, one line per flag, so that a change shows as a readable diff."""
    lines = ["{"]
    for i, (prog, entry) in enumerate(current_spec().items()):
        rows = ",\n".join(f"    {json.dumps(row)}" for row in entry["options"])
        head = {k: v for k, v in entry.items() if k != "options"}
        lines.append(f" {json.dumps(prog)}: {json.dumps(head)[:-1]}, \"options\": [\n{rows}\n ]}}"
                     + ("," if i < len(current_spec()) - 1 else ""))
    path.write_text("\n".join(lines) + "\n}\n", encoding="utf-8")


def test_command_line_unchanged() -> None:
    """A change to any command, flag, default or help text must be deliberate: regenerate the file with
    `python tests/test_cli.py --write-spec` and review its diff."""
    expected = json.loads(SPEC.read_text(encoding="utf-8"))
    spec = current_spec()
    assert list(spec) == list(expected)
    for prog in expected:
        assert spec[prog] == expected[prog], prog


def test_version_has_one_source() -> None:
    import floe_edge

    assert floe_edge.__version__ == importlib.metadata.version("floe-edge")
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert f'\nversion = "{floe_edge.__version__}"\n' in pyproject
    assert run_floe("--version").stdout.strip() == f"floe-edge {floe_edge.__version__}"
    assert json.loads(run_floe("info", "--json").stdout)["version"] == floe_edge.__version__


def test_version_from_the_source_tree_without_metadata() -> None:
    """Not installed (no metadata): the version still comes from pyproject.toml, not from a second copy."""
    source = Path(__file__).resolve().parents[1] / "python" / "floe_edge" / "_version.py"
    spec = importlib.util.spec_from_file_location("floe_version_from_source", source)  # as run from the tree
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module._from_source_tree() == importlib.metadata.version("floe-edge")


def test_help_of_every_command() -> None:
    for argv in (["--help"], ["cloud", "serve", "--help"], ["demo", "--help"], ["netem", "--help"],
                 ["models", "pull", "--help"], ["generate", "--help"], ["make-slm", "--help"]):
        out = run_floe(*argv).stdout
        assert out.startswith("usage: floe"), argv


def test_main_reports_errors_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from floe_edge.cli import main

    assert main(["make-slm", "--base", "/nonexistent.gguf", "--layers", "2", "--out", "x.gguf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("floe: error: no model file '/nonexistent.gguf'") and err.count("\n") == 1
    with pytest.raises(SystemExit) as e:
        main(["nope"])
    assert e.value.code == 2


def test_demo_pace_takes_a_factor_or_none(capsys: pytest.CaptureFixture[str]) -> None:
    from floe_edge.cli import build_parser
    from floe_edge.demo import DEMO_PACE

    parse = build_parser().parse_args
    assert parse(["demo"]).pace == DEMO_PACE and parse(["demo", "--pace", "none"]).pace is None
    assert parse(["demo", "--pace", "1.5"]).pace == 1.5
    for bad in ("0.5", "fast"):
        with pytest.raises(SystemExit) as e:
            parse(["demo", "--pace", bad])
        assert e.value.code == 2 and "--pace" in capsys.readouterr().err


def test_resolve_model(tmp_path: Path) -> None:
    from floe_edge import models

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert models.resolve_model(str(gguf)) == str(gguf)
    with pytest.raises(FileNotFoundError, match="not a known model: smollm2-135m"):
        models.resolve_model(str(tmp_path / "missing.gguf"))


if __name__ == "__main__" and sys.argv[1:] == ["--write-spec"]:
    write_spec(SPEC)
