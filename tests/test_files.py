"""floe_edge.files.write_atomic: the target holds the old or the whole new content, never a part; no temporary
file survives an error."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from floe_edge.files import write_atomic


def test_bytes_replace_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    assert write_atomic(target, b"first") == target
    assert target.read_bytes() == b"first"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not the temporary file's 0600
    write_atomic(str(target), b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_a_writer_sees_the_old_file_in_place_until_it_is_done(tmp_path: Path) -> None:
    target = tmp_path / "model.gguf"
    target.write_bytes(b"old")
    seen = []

    def write(tmp: Path) -> None:
        assert tmp.parent == tmp_path and tmp != target
        with open(tmp, "wb") as f:
            f.write(b"new ")
            f.flush()
            seen.append(target.read_bytes())  # half-way: the target is still the old file
            f.write(b"content")

    write_atomic(target, write, suffix=".part", mode=0o600)
    assert seen == [b"old"] and target.read_bytes() == b"new content"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_an_error_half_way_keeps_the_old_content_and_removes_the_temporary_file(tmp_path: Path,
                                                                                 error: BaseException) -> None:
    target = tmp_path / "cache.json"
    target.write_bytes(b"old")
    temps = []

    def write(tmp: Path) -> None:
        temps.append(tmp)
        tmp.write_bytes(b"partial")
        raise error

    with pytest.raises(type(error)):
        write_atomic(target, write)
    assert target.read_bytes() == b"old"
    assert temps and not temps[0].exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]


def test_a_missing_target_stays_missing_after_an_error(tmp_path: Path) -> None:
    target = tmp_path / "new.vmap"

    def write(tmp: Path) -> None:
        raise ValueError("checksum mismatch")

    with pytest.raises(ValueError, match="checksum"):
        write_atomic(target, write)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_directory_is_an_error_without_leftovers(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "no" / "f", b"x")
    assert list(tmp_path.iterdir()) == []
