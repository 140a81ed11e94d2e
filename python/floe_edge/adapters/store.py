"""AdapterStore: versioned LoRA adapters per hardware profile and per application, checksummed, with an atomic
active pointer and rollback.

Layout under the root (default `$FLOE_HOME/adapters`, else ~/.cache/floe/adapters):

    <profile>/<app>/v<N>/adapter.gguf      the adapter, never modified once added
    <profile>/<app>/v<N>/manifest.json     sha256, size, base model, architecture, rank, alpha, created
    <profile>/<app>/v<N>/gate.json         optional: the learned fusion gate trained with this version
                                           (`put_gate` / `get_gate`; floe_edge.gate documents the format)
    <profile>/<app>/active.json            {"version": N, "history": [earlier active versions, oldest first]}

The gate is trained on held-in records after its adapter, so unlike the adapter it may be added (or replaced,
atomically) after the version was stored; it is small (a few hundred bytes) and not part of the manifest's checksum:
a bad gate file is reported by `get_gate` and `verify`, never loaded silently.

A version directory is built under a temporary name and renamed into place, so a version either exists whole or
not at all. active.json is replaced atomically (temporary file + fsync + rename): a process killed during
`activate` leaves the old pointer or the new one, never a broken one. Loading the active adapter checks its sha256.

A process killed during `add` leaves its `.adding.*` directory behind (and one killed during `activate` a
`.active.json.*.tmp` file): `verify` reports them, `remove_leftovers` (`floe adapters verify --fix`) removes them.
`add` holds an flock on its `.adding.*` directory, so one still being filled by a live process is never taken
for a leftover (the lock goes with the process, however it dies).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Union  # List: `list` is a method name here

from .. import paths
from ..files import file_sha256, write_atomic
from .lora_file import AdapterError, LoraAdapter

if TYPE_CHECKING:
    from ..gate import LearnedGate

__all__ = ["AdapterStore", "AdapterVersion", "default_root"]

PathLike = Union[str, "os.PathLike[str]"]
ADAPTER_FILE, MANIFEST_FILE, ACTIVE_FILE, GATE_FILE = "adapter.gguf", "manifest.json", "active.json", "gate.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_VERSION_DIR = re.compile(r"v([1-9][0-9]*)")
_HISTORY_KEPT = 32  # earlier active versions remembered for rollback
ADDING_PREFIX = ".adding."  # a version being built by `add`
_POINTER_TMP_AGE_S = 60.0  # a pointer temp file lives for milliseconds; older ones are from a killed `activate`

if sys.platform == "win32":  # pragma: no cover - no flock: every staging directory counts as a leftover
    fcntl = None
else:
    import fcntl


def default_root() -> Path:
    """$FLOE_HOME/adapters, else ~/.cache/floe/adapters (`floe_edge.paths`)."""
    return paths.adapters_dir()


@dataclass(frozen=True)
class AdapterVersion:
    """One stored adapter version, as its manifest describes it."""

    profile: str
    app: str
    version: int
    path: str
    sha256: str
    size: int
    architecture: str
    rank: int
    alpha: float
    base_model: Optional[str]
    created: str
    active: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _lock_dir(path: Path, wait: bool) -> Optional[int]:
    """An fd holding an exclusive flock on the directory `path`; None when another process holds it (wait=False)
    or the directory is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
    return fd


def _check_name(kind: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise AdapterError(f"{kind} name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, not starting "
                           f"with '.' or '-')")
    return name


def _leftover_kind(path: Path) -> str:
    return "left by an interrupted add" if path.name.startswith(ADDING_PREFIX) else "left by an interrupted activate"


class AdapterStore:
    """Versioned adapters under `root`, per (profile, app)."""

    def __init__(self, root: Optional[PathLike] = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    # -- paths --

    def _app_dir(self, profile: str, app: str) -> Path:
        return self.root / _check_name("profile", profile) / _check_name("app", app)

    def _version_dir(self, profile: str, app: str, version: int) -> Path:
        return self._app_dir(profile, app) / f"v{int(version)}"

    def versions(self, profile: str, app: str) -> List[int]:
        """The versions stored for (profile, app), ascending."""
        app_dir = self._app_dir(profile, app)
        if not app_dir.is_dir():
            return []
        found = (_VERSION_DIR.fullmatch(p.name) for p in app_dir.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    # -- adding --

    def add(self, path: PathLike, profile: str, app: str, base: Optional[PathLike] = None) -> int:
        """Store a copy of the adapter file at `path` as the next version of (profile, app); returns the version.
        The adapter is validated (and checked against the base GGUF `base` when given); it is not activated."""
        adapter = LoraAdapter.read(path)
        if base is not None:
            adapter.check_base(base)
        app_dir = self._app_dir(profile, app)
        app_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=ADDING_PREFIX, dir=app_dir))
        lock = _lock_dir(staging, wait=True)  # held until we return: the directory is not a leftover meanwhile
        try:
            shutil.copyfile(path, staging / ADAPTER_FILE)
            manifest = {"sha256": file_sha256(staging / ADAPTER_FILE), "size": (staging / ADAPTER_FILE).stat().st_size,
                        "architecture": adapter.architecture, "rank": adapter.rank, "alpha": adapter.alpha,
                        "base_model": Path(base).name if base is not None else None,
                        "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            write_atomic(staging / MANIFEST_FILE, json.dumps(manifest, indent=1).encode())
            while True:  # another process may take a number first: then take the next one
                version = max(self.versions(profile, app), default=0) + 1
                try:
                    os.rename(staging, app_dir / f"v{version}")
                    return version
                except OSError:
                    if not (app_dir / f"v{version}").exists():
                        raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            if lock is not None:
                os.close(lock)

    # -- the active pointer --

    def _read_pointer(self, profile: str, app: str) -> Optional[dict[str, Any]]:
        path = self._app_dir(profile, app) / ACTIVE_FILE
        try:
            pointer = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise AdapterError(f"{path}: unreadable active pointer: {e}") from None
        history = pointer.get("history") if isinstance(pointer, dict) else None
        if (not isinstance(pointer, dict) or not isinstance(pointer.get("version"), int)
                or not isinstance(history, list) or not all(isinstance(v, int) for v in history)):
            raise AdapterError(f"{path}: malformed active pointer {pointer!r}")
        return pointer

    def _write_pointer(self, profile: str, app: str, version: int, history: List[int]) -> None:
        pointer = {"version": version, "history": history[-_HISTORY_KEPT:]}
        write_atomic(self._app_dir(profile, app) / ACTIVE_FILE, json.dumps(pointer).encode())

    def activate(self, profile: str, app: str, version: int) -> None:
        """Make `version` the active adapter of (profile, app); it must be stored and intact."""
        self._checked(profile, app, version)
        pointer = self._read_pointer(profile, app)
        history: List[int] = [] if pointer is None else [*pointer["history"], pointer["version"]]
        if pointer is not None and pointer["version"] == version:
            return
        self._write_pointer(profile, app, version, history)

    def rollback(self, profile: str, app: str) -> int:
        """Go back to the version that was active before the current one; returns it."""
        pointer = self._read_pointer(profile, app)
        if pointer is None or not pointer["history"]:
            raise AdapterError(f"{profile}/{app}: no earlier active version to roll back to")
        *history, previous = pointer["history"]
        self._checked(profile, app, previous)
        self._write_pointer(profile, app, previous, history)
        return int(previous)

    def active_version(self, profile: str, app: str) -> Optional[int]:
        """The active version of (profile, app), or None when none was activated."""
        pointer = self._read_pointer(profile, app)
        return None if pointer is None else int(pointer["version"])

    def active(self, profile: str, app: str) -> Optional[Path]:
        """Path of the active adapter of (profile, app), sha256-checked (AdapterError when corrupted), or None
        when none was activated."""
        version = self.active_version(profile, app)
        return None if version is None else Path(self._checked(profile, app, version).path)

    # -- learned fusion gates --

    def put_gate(self, profile: str, app: str, version: int, gate: LearnedGate) -> Path:
        """Store `gate` with a stored version (its gate.json, written atomically, replacing an earlier one)."""
        self.info(profile, app, version)  # AdapterError when there is no such version
        return gate.save(self._version_dir(profile, app, version) / GATE_FILE)

    def get_gate(self, profile: str, app: str, version: Optional[int] = None) -> Optional[LearnedGate]:
        """The gate stored with `version` (default: the active version), or None when it has none or no version is
        active. A gate file that cannot be read is a GateError naming it."""
        from ..gate import LearnedGate

        if version is None:
            version = self.active_version(profile, app)
            if version is None:
                return None
        self.info(profile, app, version)
        path = self._version_dir(profile, app, version) / GATE_FILE
        return LearnedGate.load(path) if path.exists() else None

    # -- reading versions --

    def info(self, profile: str, app: str, version: int) -> AdapterVersion:
        """A stored version as its manifest describes it (not checksummed; see verify)."""
        vdir = self._version_dir(profile, app, version)
        manifest_path = vdir / MANIFEST_FILE
        try:
            manifest = json.loads(manifest_path.read_text())
            return AdapterVersion(profile, app, int(version), str(vdir / ADAPTER_FILE), str(manifest["sha256"]),
                                  int(manifest["size"]), str(manifest["architecture"]), int(manifest["rank"]),
                                  float(manifest["alpha"]), manifest.get("base_model"), str(manifest["created"]))
        except FileNotFoundError:
            raise AdapterError(f"{profile}/{app}: no version {version} (stored: {self.versions(profile, app)})") \
                from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise AdapterError(f"{manifest_path}: malformed manifest: {e}") from None

    def _checked(self, profile: str, app: str, version: int) -> AdapterVersion:
        """The version, after checking that its file has the size and sha256 its manifest records."""
        entry = self.info(profile, app, version)
        path = Path(entry.path)
        try:
            size, digest = path.stat().st_size, file_sha256(path)
        except OSError as e:
            raise AdapterError(f"{path}: cannot read: {e.strerror or e}") from None
        if size != entry.size or digest != entry.sha256:
            raise AdapterError(f"{path}: corrupted (size {size}, sha256 {digest[:16]}..; the manifest records size "
                               f"{entry.size}, sha256 {entry.sha256[:16]}..)")
        return entry

    def list(self) -> List[AdapterVersion]:
        """Every stored version, by profile, app and version, with `active` set on the active ones."""
        out: List[AdapterVersion] = []
        for profile, app in self._apps():
            active = self.active_version(profile, app)
            for version in self.versions(profile, app):
                entry = self.info(profile, app, version)
                out.append(AdapterVersion(**{**asdict(entry), "active": version == active}))
        return out

    def verify(self) -> List[str]:
        """Check every stored version (size, sha256, a valid adapter file) and every active pointer, and look for
        what interrupted commands left behind; returns the problems found, one line each (empty: all good)."""
        problems: List[str] = [f"{p.relative_to(self.root)}: {_leftover_kind(p)} (remove it: `floe adapters verify "
                               f"--fix`, or rm -r it)" for p in self.leftovers()]
        for profile, app in self._apps():
            for version in self.versions(profile, app):
                try:
                    LoraAdapter.read(self._checked(profile, app, version).path)
                except AdapterError as e:
                    problems.append(f"{profile}/{app} v{version}: {e}")
                problems += self._gate_problems(profile, app, version)
            try:
                active = self.active_version(profile, app)
                if active is not None and active not in self.versions(profile, app):
                    problems.append(f"{profile}/{app}: the active version {active} is not stored")
            except AdapterError as e:
                problems.append(f"{profile}/{app}: {e}")
        return problems

    def _gate_problems(self, profile: str, app: str, version: int) -> List[str]:
        from ..gate import GateError

        try:
            self.get_gate(profile, app, version)
        except (GateError, AdapterError) as e:
            return [f"{profile}/{app} v{version}: {e}"]
        return []

    def leftovers(self) -> List[Path]:
        """What interrupted commands left: `.adding.*` directories that no live `add` holds, and active-pointer
        temporary files older than a minute."""
        found: List[Path] = []
        for profile, app in self._apps():
            for path in sorted((self.root / profile / app).iterdir()):
                if path.name.startswith(ADDING_PREFIX) and path.is_dir():
                    fd = _lock_dir(path, wait=False)
                    if fd is not None:  # nobody is adding into it
                        os.close(fd)
                        found.append(path)
                elif path.name.startswith(f".{ACTIVE_FILE}.") and path.name.endswith(".tmp") and \
                        time.time() - path.stat().st_mtime > _POINTER_TMP_AGE_S:
                    found.append(path)
        return found

    def remove_leftovers(self) -> List[Path]:
        """Remove what `leftovers` finds; returns what was removed. Never touches a version, a pointer, or a
        directory an `add` is still filling."""
        removed: List[Path] = []
        for path in self.leftovers():
            if path.is_dir():
                fd = _lock_dir(path, wait=False)  # held while removing: a live add never sees it half-gone
                if fd is None:
                    continue
                try:
                    shutil.rmtree(path)
                finally:
                    os.close(fd)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        return removed

    def _apps(self) -> List[tuple[str, str]]:
        if not self.root.is_dir():
            return []
        return [(p.name, a.name) for p in sorted(self.root.iterdir()) if p.is_dir() and _NAME.fullmatch(p.name)
                for a in sorted(p.iterdir()) if a.is_dir() and _NAME.fullmatch(a.name)]
