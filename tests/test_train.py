"""Training without torch: how records become examples and batches, the run's settings, and the CLI's checks before
any model is loaded (torch, transformers and peft are needed from there on: tests/test_train_torch.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from floe_edge import _native
from floe_edge.cli import main
from floe_edge.data import Record, write_records
from floe_edge.data.tokens import RecordTokens, teacher_forced_hits, tokenize_record
from floe_edge.profiles import load_profile
from floe_edge.train import TrainConfig, TrainError, build_examples
from floe_edge.train.batches import IGNORE, epoch_batches

import numpy as np


def record(user: str = "u1", context: str = "My lamp: id lamp.7", completion: str = " on(lamp.7)") -> Record:
    return Record(user, "commands", context, "Lamp API: on(<id>)", "User: lamp on\nCommand:", completion)


@pytest.fixture(scope="module")
def tokenizer(smollm2_path: Path) -> _native.Tokenizer:
    return _native.Tokenizer.from_gguf(str(smollm2_path))


def test_a_record_is_the_edge_input_with_bos_then_the_completion(tokenizer) -> None:
    r = record()
    tokens = tokenize_record(tokenizer, r)
    assert list(tokens.input_ids) == tokenizer.tokenize(r.private_context + "\n\n" + r.prompt, add_bos=True,
                                                        special=False)
    assert list(tokens.completion_ids) == tokenizer.tokenize(" on(lamp.7)", add_bos=False, special=False)
    assert tokens.ids == [*tokens.input_ids, *tokens.completion_ids]
    assert tokenizer.detokenize(list(tokens.completion_ids)) == b" on(lamp.7)"


def test_a_long_input_loses_its_start_but_keeps_bos_the_prompt_end_and_the_completion(tokenizer) -> None:
    r = record(context="filler words " * 200)
    full = tokenize_record(tokenizer, r)
    cut = tokenize_record(tokenizer, r, max_tokens=40)
    assert len(cut) == 40 and cut.completion_ids == full.completion_ids
    assert cut.input_ids[0] == full.input_ids[0] and cut.input_ids[1:] == full.input_ids[-(40 - 1 - len(
        full.completion_ids)):]
    with pytest.raises(ValueError, match="does not fit"):
        tokenize_record(tokenizer, r, max_tokens=len(full.completion_ids))


def test_teacher_forced_hits_reads_the_row_before_each_completion_token() -> None:
    tokens = RecordTokens((1, 5, 6), (7, 8))
    logits = np.zeros((5, 10), np.float32)
    logits[2, 7] = 1.0  # position 2 (the last input token) predicts the first completion token: right
    logits[3, 9] = 1.0  # position 3 predicts 9, not 8: wrong
    logits[4, 8] = 1.0  # the last row predicts past the end: not scored
    assert teacher_forced_hits(logits, tokens).tolist() == [True, False]


def test_batches_label_only_the_completion_and_fit_the_token_budget() -> None:
    examples = [RecordTokens(tuple(range(1, 2 + i)), (90 + i, 91)) for i in range(12)]
    batches = epoch_batches(examples, epoch=0, seed=3, batch_tokens=40, pad_id=0)
    seen = []
    for b in batches:
        assert len(b.ids) * len(b.ids[0]) <= 40
        for ids, mask, labels in zip(b.ids, b.mask, b.labels):
            n = sum(mask)
            assert mask == [1] * n + [0] * (len(ids) - n) and ids[n:] == [0] * (len(ids) - n)
            scored = [(i, label) for i, label in enumerate(labels) if label != IGNORE]
            assert [label for _, label in scored] == ids[n - 2:n] and [i for i, _ in scored] == [n - 2, n - 1]
            seen.append(ids[n - 2])
    assert sorted(seen) == [90 + i for i in range(12)]  # every example once per epoch
    assert sum(b.n_scored for b in batches) == 24
    again = epoch_batches(examples, epoch=0, seed=3, batch_tokens=40, pad_id=0)
    other = epoch_batches(examples, epoch=1, seed=3, batch_tokens=40, pad_id=0)
    assert again == batches and other != batches  # the order is fixed by (seed, epoch), new every epoch


def test_the_config_comes_from_the_profile_and_says_what_is_wrong() -> None:
    profile = load_profile("rpi4")
    config = TrainConfig.from_profile(profile, epochs=2, lr=None)
    assert (config.rank, config.alpha, config.targets, config.epochs) == (4, 8.0, ("q", "v"), 2)
    assert config.lr == TrainConfig().lr and config.peft_targets == ["q_proj", "v_proj"]
    for bad, match in (({"rank": 0}, "rank"), ({"targets": ("q", "lm_head")}, "targets"), ({"dtype": "q8"}, "dtype"),
                       ({"batch_tokens": 100, "max_len": 512}, "batch_tokens"), ({"lr": 0.0}, "lr")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)  # type: ignore[arg-type]


def test_the_fingerprint_changes_with_what_decides_the_weights_only() -> None:
    config = TrainConfig()
    assert config.fingerprint("base", "data") == TrainConfig(threads=7, dtype="f32").fingerprint("base", "data")
    assert config.fingerprint("base", "data") != TrainConfig(lr=2e-3).fingerprint("base", "data")
    assert config.fingerprint("base", "data") != config.fingerprint("base", "other data")


def test_a_record_that_cannot_be_trained_on_is_named(tokenizer) -> None:
    records = [record(), record(completion=" " + "x" * 3000)]
    with pytest.raises(TrainError, match="train.jsonl:8: completion of .* does not fit"):
        build_examples(tokenizer, records, TrainConfig(max_len=64, batch_tokens=64), ["train.jsonl:7",
                                                                                       "train.jsonl:8"])


def _folder(tmp_path: Path, records: list[Record]) -> Path:
    write_records(tmp_path / "train.jsonl", records)
    return tmp_path


def test_cli_names_the_malformed_line_before_loading_any_model(tmp_path: Path, smollm2_path: Path, capsys) -> None:
    data = _folder(tmp_path, [record(), record()])
    with open(data / "train.jsonl", "a") as f:
        f.write(json.dumps({"user": "u1", "task": "qa"}) + "\n")
    code = main(["train", "lora", "--base", str(smollm2_path), "--data", str(data), "--out", str(tmp_path / "a.gguf"),
                 "--profile", "rpi4"])
    assert code == 2 and "train.jsonl:3: missing keys" in capsys.readouterr().err
    assert not (tmp_path / "a.gguf").exists()


def test_cli_trains_one_users_records_only(tmp_path: Path, smollm2_path: Path, capsys) -> None:
    data = _folder(tmp_path, [record("u1"), record("u2")])
    args = ["train", "lora", "--base", str(smollm2_path), "--data", str(data), "--out", str(tmp_path / "a.gguf")]
    assert main(args) == 2 and "holds 2 users (u1, u2): say whose records" in capsys.readouterr().err
    assert main([*args, "--user", "u9"]) == 2 and "no records of user 'u9'" in capsys.readouterr().err
    assert main(["train", "lora", "--data", str(tmp_path / "none"), "--out", "x.gguf", "--base",
                 str(smollm2_path)]) == 2
    assert "no train.jsonl" in capsys.readouterr().err


def test_training_examples_end_with_eos_so_the_adapter_learns_to_stop(tokenizer) -> None:
    record = Record("u1", "qa", "ctx", "", "User: q\nAssistant:", " The answer.")
    scored = tokenize_record(tokenizer, record)
    with_eos, = build_examples(tokenizer, [record], TrainConfig())
    without, = build_examples(tokenizer, [record], TrainConfig(end_with_eos=False))
    assert tokenizer.eos_id is not None and tokenizer.is_eog(tokenizer.eos_id)
    assert with_eos.completion_ids == (*scored.completion_ids, tokenizer.eos_id)  # evaluation scores without it
    assert without == scored
    long = Record("u1", "qa", "word " * 400, "", "User: q\nAssistant:", " The answer.")
    assert len(build_examples(tokenizer, [long], TrainConfig(max_len=64, batch_tokens=64))[0]) == 64


def test_the_plan_covers_epochs_of_different_batch_counts() -> None:
    """Each epoch packs its own shuffle into the token budget, so epochs can differ in their number of batches; every
    step of every epoch is trained (this used to index past the end of a shorter epoch)."""
    from floe_edge.train.loop import _Plan

    rng = np.random.default_rng(0)
    examples = [RecordTokens(tuple(range(1, 2 + int(n))), (7, 8)) for n in rng.integers(5, 60, size=40)]
    for seed in range(50):
        config = TrainConfig(epochs=3, seed=seed, batch_tokens=128, max_len=128)
        counts = [len(epoch_batches(examples, e, seed, 128, pad_id=0)) for e in range(3)]
        if len(set(counts)) > 1:
            break
    else:
        pytest.fail("no seed gave epochs of different batch counts: the packing changed, the test needs a new case")
    plan = _Plan(examples, config)
    assert plan.total == sum(counts)
    epochs = [plan.batch(step)[0] for step in range(plan.total)]
    assert epochs == [e for e, n in enumerate(counts) for _ in range(n)]
