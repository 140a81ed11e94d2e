"""Personal data in the section 9 format: the strict reader, the seeded generator (each record needs both the
private and the cloud context; held-out phrasings never seen in train) and `floe data generate|check`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from floe_edge.data import (TEMPLATES, DataError, Record, cloud_input, edge_input, generate, read_dataset,
                            read_records, write_records)

GOOD = {"user": "u1", "task": "commands", "private_context": "desk lamp: id dev.k41",
        "cloud_context": "set_dim(<id>, <percent>)", "prompt": "User: Dim the desk lamp to 30%\nCommand:",
        "completion": " set_dim(dev.k41, 30)"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Record], list[Record]]:
    out = tmp_path_factory.mktemp("personal")
    generate(out, users=8, seed=0, train_per_task=24, test_per_task=8)
    return (out, *read_dataset(out))


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate(tmp_path / name, users=3, seed=seed, train_per_task=5, test_per_task=2)
    for split in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / "a" / split).read_bytes() == (tmp_path / "b" / split).read_bytes()
        assert (tmp_path / "a" / split).read_bytes() != (tmp_path / "c" / split).read_bytes()
    worlds = lambda d: {r.private_context for r in read_records(tmp_path / d / "test.jsonl")}  # noqa: E731
    assert not worlds("a") & worlds("c")  # another seed: other users' worlds, not a reshuffle


def test_counts_per_user_and_task(dataset: tuple[Path, list[Record], list[Record]]) -> None:
    _, train, test = dataset
    for records, per in ((train, 24), (test, 8)):
        assert Counter((r.user, r.task) for r in records) == {
            (f"u{i}", t): per for i in range(1, 9) for t in ("commands", "qa", "code")}


def test_every_record_needs_both_sides(dataset: tuple[Path, list[Record], list[Record]]) -> None:
    """Checked on the written files: the completion holds a span that only the private context has (not the cloud
    context, not the prompt) and one that only the cloud context has."""
    _, train, test = dataset
    for r in train + test:
        private, cloud = r.extra["meta"]["private_span"], r.extra["meta"]["cloud_span"]
        assert private in r.completion and cloud in r.completion, r
        assert private in edge_input(r) and private not in cloud_input(r), r
        assert cloud in cloud_input(r) and cloud not in edge_input(r), r
        assert r.completion.startswith(" ") and r.private_context and r.cloud_context


def test_a_users_records_share_one_world(dataset: tuple[Path, list[Record], list[Record]]) -> None:
    _, train, test = dataset
    worlds: dict[tuple[str, str], set[str]] = {}
    for r in train + test:
        worlds.setdefault((r.user, r.task), set()).add(r.private_context)
    assert all(len(w) == 1 for w in worlds.values())
    for task in ("commands", "qa", "code"):  # and the users' worlds differ
        assert len({next(iter(w)) for (_, t), w in worlds.items() if t == task}) == 8


def test_novel_records_need_knowledge_the_history_lacks(dataset: tuple[Path, list[Record], list[Record]]) -> None:
    """Half the held-out records are novel: their world-knowledge span occurs in no completion of the user's
    history, so an adapter trained on it cannot know it; the others reuse a span the history has."""
    _, train, test = dataset
    history: dict[tuple[str, str], str] = {}
    for r in train:
        history[r.user, r.task] = history.get((r.user, r.task), "") + r.completion + "\n"
    assert not any(r.extra["meta"]["novel"] for r in train)
    novel = [r for r in test if r.extra["meta"]["novel"]]
    assert Counter((r.user, r.task) for r in novel) == {(f"u{i}", t): 4 for i in range(1, 9)
                                                         for t in ("commands", "qa", "code")}
    for r in novel:  # a closing time ("21:00") is a value many places share: only the place is new there
        if "booking_close" not in r.extra["meta"]["template"]:
            assert r.extra["meta"]["cloud_span"] not in history[r.user, r.task], r
    known = [r for r in test if not r.extra["meta"]["novel"]]
    seen = sum(r.extra["meta"]["cloud_span"] in history[r.user, r.task] for r in known)
    assert seen >= 0.8 * len(known)  # known entities; a question the history never asked about one may remain


def _pattern(template: str) -> re.Pattern[str]:
    """A template as a regex over the prompts it makes: every {slot} matches any text."""
    parts = re.split(r"\{\w+\}", template)
    return re.compile(".+".join(map(re.escape, parts)), re.DOTALL)


def test_no_test_template_appears_in_train(dataset: tuple[Path, list[Record], list[Record]]) -> None:
    _, train, test = dataset
    assert not {r.extra["meta"]["template"] for r in train} & {r.extra["meta"]["template"] for r in test}
    for task, intents in TEMPLATES.items():
        train_patterns = [_pattern(t) for p in intents.values() for t in p.train]
        test_patterns = [_pattern(t) for p in intents.values() for t in p.test]
        for r in (r for r in train if r.task == task):  # the check below is not vacuous: train matches its own
            question = r.prompt.removeprefix("User: ").rsplit("\n", 1)[0] if task != "code" else r.prompt
            assert any(p.fullmatch(question) for p in train_patterns), r.prompt
        for r in (r for r in test if r.task == task):
            question = r.prompt.removeprefix("User: ").rsplit("\n", 1)[0] if task != "code" else r.prompt
            assert not any(p.fullmatch(question) for p in train_patterns), r.prompt
            assert any(p.fullmatch(question) for p in test_patterns), r.prompt


def test_inputs_are_what_section_9_says() -> None:
    r = Record(**GOOD)
    assert edge_input(r) == "desk lamp: id dev.k41\n\nUser: Dim the desk lamp to 30%\nCommand:"
    assert cloud_input(r) == "set_dim(<id>, <percent>)\n\nUser: Dim the desk lamp to 30%\nCommand:"
    bare = Record(**{**GOOD, "private_context": "", "cloud_context": ""})
    assert edge_input(bare) == cloud_input(bare) == GOOD["prompt"]


def test_write_then_read_keeps_extra_keys(tmp_path: Path) -> None:
    records = [Record(**GOOD), Record.from_json({**GOOD, "user": "u2", "source": {"id": [1, 2]}, "note": "ü"})]
    write_records(tmp_path / "r.jsonl", records)
    assert read_records(tmp_path / "r.jsonl") == records
    assert json.loads((tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()[1])["source"] == {"id": [1, 2]}


@pytest.mark.parametrize("line, reason", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "prompt"}).encode(), "missing key 'prompt'"),
    (json.dumps({**GOOD, "task": 3}).encode(), "key 'task' must be a string, got int"),
    (json.dumps({**GOOD, "cloud_context": None}).encode(), "key 'cloud_context' must be a string, got NoneType"),
    (json.dumps({**GOOD, "completion": ""}).encode(), "key 'completion' is empty"),
    (b"   ", "blank line"),
    (b'{"user": "\xff"}', "not UTF-8"),
])
def test_a_malformed_line_names_file_and_line(tmp_path: Path, line: bytes, reason: str) -> None:
    good = json.dumps(GOOD).encode()
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join([good, good, line, good]) + b"\n")
    with pytest.raises(DataError) as e:
        read_records(path)
    assert str(e.value).startswith(f"{path}:3: ") and reason in str(e.value)
    assert isinstance(e.value, ValueError)


def test_dataset_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        read_dataset(tmp_path / "missing")
    with pytest.raises(DataError, match="no test.jsonl"):
        read_dataset(tmp_path)
    write_records(tmp_path / "test.jsonl", [Record(**GOOD)])
    assert read_dataset(tmp_path) == ([], [Record(**GOOD)])  # train.jsonl is optional
    with pytest.raises(DataError, match="no such file"):
        read_records(tmp_path / "train.jsonl")


@pytest.mark.parametrize("kwargs", [{"users": 0}, {"test_per_task": 0}, {"train_per_task": -1}, {"users": 1.5}])
def test_generate_rejects_bad_counts(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        generate(tmp_path, **kwargs)  # type: ignore[arg-type]


def floe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "floe_edge.cli", *args], capture_output=True, text=True, timeout=60)


def test_cli_generate_then_check(tmp_path: Path) -> None:
    done = floe("data", "generate", "--out", str(tmp_path), "--users", "2", "--seed", "7", "--train-per-task", "3",
                "--test-per-task", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["train_records"] == 18
    check = json.loads(floe("data", "check", str(tmp_path), "--json").stdout)
    assert check["train_records"] == 18 and check["test_records"] == 12
    assert check["test"] == {u: {"commands": 2, "qa": 2, "code": 2} for u in ("u1", "u2")}
    text = floe("data", "check", str(tmp_path)).stdout
    assert "valid, 18 train and 12 test records" in text
    assert re.search(r"^test\s+all\s+4\s+4\s+4\s+12$", text, re.M), text


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    (tmp_path / "test.jsonl").write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "completion": ""}) + "\n")
    done = floe("data", "check", str(tmp_path))
    assert done.returncode == 2 and f"{tmp_path / 'test.jsonl'}:2: key 'completion' is empty" in done.stderr
    assert "Traceback" not in done.stderr
    done = floe("data", "generate", "--out", str(tmp_path / "x"), "--users", "0")
    assert done.returncode == 2 and "--users: must be at least 1, got 0" in done.stderr
    (tmp_path / "file").write_text("")
    done = floe("data", "generate", "--out", str(tmp_path / "file"))
    assert done.returncode == 2 and "exists and is not a directory" in done.stderr
