"""The code stays readable: no source file above 600 lines, no function above 120 (lizard measures C++ and Python
functions alike, nested ones included in their parent's length)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("python", "src", "tests", "bench", "tools") for p in (ROOT / d).rglob("*")
                 if p.suffix in {".py", ".cpp", ".h", ".c", ".pyi"} and "build" not in p.parts)
MAX_FILE_LINES, MAX_FUNCTION_LINES = 600, 120


def test_no_source_file_above_600_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in SOURCES if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long, long


def test_no_function_above_120_lines() -> None:
    import lizard  # the test extra
    long = [f"{p.relative_to(ROOT)}:{f.start_line} {f.name} ({f.length} lines)"
            for p in SOURCES if p.suffix != ".pyi"
            for f in lizard.analyze_file(str(p)).function_list if f.length > MAX_FUNCTION_LINES]
    assert not long, long
