"""The personal-data record of DESIGN.md section 9: one JSON object per line of `train.jsonl` / `test.jsonl`.

The edge reads `private_context + "\\n\\n" + prompt`, the cloud reads `cloud_context + "\\n\\n" + prompt` (just the
prompt when the context is empty); the completion is scored as it is, leading space included. Reading is strict: a
malformed line raises `DataError` naming the file and its 1-based line, because a silently skipped record would
change what training and evaluation measure without anyone noticing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

__all__ = ["DataError", "Record", "FIELDS", "TASKS", "edge_input", "cloud_input", "read_records", "read_dataset",
           "write_records"]

PathLike = Union[str, "os.PathLike[str]"]

FIELDS = ("user", "task", "private_context", "cloud_context", "prompt", "completion")
TASKS = ("commands", "qa", "code")  # the paper's three; any other task name is allowed and reported on its own
_NON_EMPTY = ("user", "task", "prompt", "completion")  # the two contexts may be empty strings


class DataError(ValueError):
    """A personal-data file or record that does not follow the section 9 format."""


@dataclass(frozen=True)
class Record:
    user: str
    task: str
    private_context: str
    cloud_context: str
    prompt: str
    completion: str
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)  # unknown keys, kept as they were read

    @classmethod
    def from_json(cls, obj: Any) -> "Record":
        """A record from a decoded JSON value; `DataError` (without a location) says what is wrong."""
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}")
        missing = [k for k in FIELDS if k not in obj]
        if missing:
            raise DataError(f"missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
        for key in FIELDS:
            if not isinstance(obj[key], str):
                raise DataError(f"key {key!r} must be a string, got {type(obj[key]).__name__}")
        empty = [k for k in _NON_EMPTY if not obj[k]]
        if empty:
            raise DataError(f"key {empty[0]!r} is empty")
        return cls(**{k: obj[k] for k in FIELDS}, extra={k: v for k, v in obj.items() if k not in FIELDS})

    def to_json(self) -> dict[str, Any]:
        """The section 9 keys in their order, then the extra keys (never overriding a section 9 key)."""
        return {**{k: getattr(self, k) for k in FIELDS}, **{k: v for k, v in self.extra.items() if k not in FIELDS}}


def _join(context: str, prompt: str) -> str:
    return f"{context}\n\n{prompt}" if context else prompt


def edge_input(record: Record) -> str:
    """What the edge model reads: the private context, a blank line, the prompt (the prompt alone without context)."""
    return _join(record.private_context, record.prompt)


def cloud_input(record: Record) -> str:
    """What the cloud model reads: the cloud context, a blank line, the prompt (the prompt alone without context)."""
    return _join(record.cloud_context, record.prompt)


def read_records(path: PathLike) -> list[Record]:
    """Every record of a JSONL file, in order. Raises `DataError` naming the file and the 1-based line of the first
    malformed line (not UTF-8, not JSON, blank, a missing or mistyped key, an empty prompt or completion)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a JSONL file") from None
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # what follows the final newline
    records = []
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8")
            if not text.strip():
                raise DataError("blank line")
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"not JSON ({e.msg} at column {e.colno})") from None
            records.append(Record.from_json(obj))
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{number}: not UTF-8 (byte {e.start + 1})") from None
        except DataError as e:
            raise DataError(f"{path}:{number}: {e}") from None
    return records


def read_dataset(directory: PathLike) -> tuple[list[Record], list[Record]]:
    """(train, test) of a data folder: `test.jsonl` is required, `train.jsonl` optional (an empty list)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory (a data folder holds train.jsonl and test.jsonl)")
    if not (directory / "test.jsonl").exists():
        raise DataError(f"{directory}: no test.jsonl (a data folder holds test.jsonl and optionally train.jsonl)")
    train = read_records(directory / "train.jsonl") if (directory / "train.jsonl").exists() else []
    return train, read_records(directory / "test.jsonl")


def write_records(path: PathLike, records: Iterable[Record]) -> None:
    """Write records as JSONL (UTF-8, one object per line), replacing the file only once all is written."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
