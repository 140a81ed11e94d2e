"""Writing files so that a crash, a full disk or an error half-way never leaves a half-written file behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Union

__all__ = ["write_atomic"]

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
