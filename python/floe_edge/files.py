"""Files: writing them so that a crash, a full disk or an error half-way never leaves a half-written file behind,
and their sha256 (models, adapters, exported models are named by it)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Union

__all__ = ["file_sha256", "write_atomic"]

Writer = Callable[[Path], None]


def write_atomic(path: Union[str, os.PathLike], content: Union[bytes, Writer], *, mode: int = 0o644,
                 suffix: str = ".tmp") -> Path:
    """Replace `path` so that it holds either its old content or the whole new one, never a part of it.

    `content` is the bytes, or a function that writes the file at the path it is given (a streaming download, a
    library that wants a file name). Both go to a temporary file beside `path` (same file system, so the rename is
    atomic), which is flushed to disk, given `mode` (temporary files are created 0600) and renamed over `path`. If
    writing raises (anything, KeyboardInterrupt included), the temporary file is removed, `path` is left as it was
    and the exception propagates."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    tmp = Path(name)
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    return path


def file_sha256(path: Union[str, os.PathLike]) -> str:
    """The hex sha256 of a file's bytes, read 1 MiB at a time (OSError as open() raises it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
