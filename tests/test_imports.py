"""Import hygiene: every library module imports on its own without the CLI, and the package has no import cycle."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Optional, Union

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "python" / "floe_edge"

# Modules (and everything under them) that need an optional extra at import time. They are skipped in the
# fresh-interpreter check only when one of those packages is missing; with the extras installed they are imported.
EXTRAS = {"floe_edge.cloud.server": ("fastapi", "uvicorn"), "floe_edge.fl.server_app": ("flwr",),
          "floe_edge.fl.client_app": ("flwr",)}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path) -> dict[str, Path]:
    """Every module of the package under root (sources, and .pyi stubs of extension modules), by dotted name."""
    found = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    for stub in sorted(root.rglob("*.pyi")):
        found.setdefault(_module_name(stub, root), stub)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[Union[ast.Import, ast.ImportFrom]]:
    """Import statements anywhere (module level, functions, classes, try blocks) except under `if TYPE_CHECKING:`,
    which never runs and so cannot make a cycle at run time."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> Optional[str]:
    if node.level == 0:
        return node.module
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> modules of the same package it imports (`from . import x` counts x when x is a module, else the
    package's __init__). The implicit import of a module's parent packages is not an edge."""
    modules = package_modules(root)
    top = root.name
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        if path.suffix != ".py":
            continue
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve(name, path.name == "__init__.py", node)
                if base is None:
                    continue
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name].update(t for t in targets if t in modules and t.split(".")[0] == top and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """One import cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycle() -> None:
    graph = import_graph(SOURCE)
    assert "floe_edge.cli" in graph and "floe_edge.hybrid" in graph["floe_edge"]  # the walk sees the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_library_never_imports_the_cli_statically() -> None:
    graph = import_graph(SOURCE)
    offenders = {m: sorted(t for t in targets if t.startswith("floe_edge.cli"))
                 for m, targets in graph.items() if not m.startswith("floe_edge.cli")}
    assert not {m: t for m, t in offenders.items() if t}


def test_cycle_finder_sees_cycles(tmp_path: Path) -> None:
    """The checker itself: a package with a cycle through a function-level import and `from . import`."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("from .sub.b import thing\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    graph = import_graph(pkg)
    assert graph["pkg"] == {"pkg.a"} and graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"}
    assert find_cycle(graph) is None  # the TYPE_CHECKING import never runs
    (pkg / "c.py").write_text("import pkg.a\n")
    assert find_cycle(import_graph(pkg)) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
    (pkg / "c.py").write_text("from . import VERSION\n")  # an attribute of the package: an edge to its __init__
    assert find_cycle(import_graph(pkg)) == ["pkg", "pkg.a", "pkg.sub.b", "pkg.c", "pkg"]


def _library_modules() -> list[str]:
    names = package_modules(SOURCE)
    return sorted(n for n in names if not (n == "floe_edge.cli" or n.startswith("floe_edge.cli."))
                  and not n.endswith(".__main__"))


def _missing_extra(module: str) -> Optional[str]:
    for prefix, needs in EXTRAS.items():
        if module == prefix or module.startswith(prefix + "."):
            for extra in needs:
                if importlib.util.find_spec(extra) is None:
                    return extra
    return None


@pytest.mark.parametrize("module", _library_modules())
def test_module_imports_alone_without_the_cli(module: str) -> None:
    missing = _missing_extra(module)
    if missing is not None:
        pytest.skip(f"{module} needs the optional package {missing}, not installed here")
    code = ("import importlib, sys; importlib.import_module(sys.argv[1]); "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[:2] == ['floe_edge', 'cli'])))")
    done = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "", f"importing {module} imported the CLI: {done.stdout.strip()}"


def test_public_api_needs_no_optional_extra() -> None:
    """`import floe_edge` gives the hybrid API without loading the cloud server's or llama.cpp's packages."""
    code = ("import sys, floe_edge; "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'uvicorn', 'llama_cpp', "
            "'starlette'})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == ""


def test_public_api_names() -> None:
    import floe_edge
    from floe_edge.cloud.client import FloeCloudBackend
    from floe_edge.cloud.openai_backend import OpenAICompletionsBackend
    from floe_edge.fusion import FusedSampler, Fuser
    from floe_edge.hybrid import HybridGenerator
    from floe_edge.sampling import Sampler
    from floe_edge.slm import NativeSLM

    for obj in (HybridGenerator, Fuser, FusedSampler, FloeCloudBackend, OpenAICompletionsBackend, NativeSLM, Sampler):
        assert obj.__name__ in floe_edge.__all__ and getattr(floe_edge, obj.__name__) is obj
    assert all(hasattr(floe_edge, name) for name in floe_edge.__all__)
