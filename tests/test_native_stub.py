"""The checked-in python/floe_edge/_native.pyi is what tools/gen_stubs.py makes from the built module."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import gen_stubs  # noqa: E402


def test_checked_in_stub_matches_the_built_module() -> None:
    generated = gen_stubs.generate()
    assert gen_stubs.same_but_whitespace(generated, gen_stubs.STUB.read_text()), (
        "python/floe_edge/_native.pyi differs from the built module's bindings: run python tools/gen_stubs.py")


def test_stub_declares_what_the_package_imports() -> None:
    stub = gen_stubs.STUB.read_text()
    for name in ("Cancelled", "ContextOverflowError", "GGUFError", "ModelError", "Model", "Decoder", "Tokenizer",
                 "StreamDecoder", "GGUFFile", "Fuser", "FusionSampler"):
        assert f"class {name}" in stub, name
