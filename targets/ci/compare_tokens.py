"""Compare the greedy token ids of two `floe generate --json` outputs (the x86 host's and an emulated board's).

    python3 compare_tokens.py REFERENCE.json OTHER.json

Prints one line ("equal: 48/48 ids ..." or "DIFFER at token i: ...") and exits 0 only when the id lists are equal
and not empty. Standard library only: it runs on the host before anything is installed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def load_ids(path: Path) -> list[int]:
    """The "ids" list of the last JSON line in path (earlier lines may be log output)."""
    lines = [line for line in path.read_text().splitlines() if line.strip().startswith("{")]
    if not lines:
        raise ValueError(f"{path}: no JSON object (did floe generate --json fail?)")
    ids = json.loads(lines[-1]).get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise ValueError(f"{path}: no integer list under 'ids'")
    return ids


def compare(ref: list[int], other: list[int]) -> tuple[bool, str]:
    if not ref:
        return False, "reference generated no tokens"
    for i, (a, b) in enumerate(zip(ref, other)):
        if a != b:
            return False, f"DIFFER at token {i}: reference {a}, other {b} (first {i} equal)"
    if len(ref) != len(other):
        return False, f"DIFFER in length: reference {len(ref)} ids, other {len(other)}"
    return True, f"equal: {len(ref)}/{len(ref)} ids, first {ref[:8]}"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        same, message = compare(load_ids(Path(argv[1])), load_ids(Path(argv[2])))
    except (OSError, ValueError) as err:
        print(f"error: {err}")
        return 2
    print(message)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
