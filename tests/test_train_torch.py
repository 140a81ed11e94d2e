"""LoRA training for real (needs the train extra: torch, transformers, peft), a few steps on a 2-layer model cut from
SmolLM2 (`make_slm`): the loss falls, the exported GGUF adapter moves the native decoder toward the trained
completions, and a run interrupted (Ctrl-C, or kill -9 of the CLI) resumes to the very adapter an uninterrupted run
writes."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from floe_edge import NativeSLM, _native
from floe_edge.adapters import LoraAdapter
from floe_edge.data import generate, read_records
from floe_edge.make_slm import make_slm
from floe_edge.train import TrainConfig, TrainError, build_examples, train_lora

pytestmark = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("torch", "transformers", "peft")),
                                reason="needs the train extra (torch, transformers, peft)")

CONFIG = TrainConfig(rank=4, alpha=8.0, targets=("q", "v", "down"), epochs=50, max_steps=20, lr=5e-3,
                     batch_tokens=512, max_len=256, threads=1, checkpoint_every=6)


@pytest.fixture(scope="module")
def tiny(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_slm(smollm2_path, 2, tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    generate(folder, users=1, seed=5, train_per_task=2, test_per_task=1)
    return folder


@pytest.fixture(scope="module")
def examples(tiny: Path, data: Path) -> list:
    return build_examples(_native.Tokenizer.from_gguf(str(tiny)), read_records(data / "train.jsonl"), CONFIG)


@pytest.fixture(scope="module")
def reference(tiny: Path, examples: list, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted run: its result and the adapter it wrote."""
    out = tmp_path_factory.mktemp("ref") / "ref.gguf"
    return train_lora(tiny, examples, CONFIG, out)


def native_loss(model: Path, examples: list, adapter: Path | None) -> float:
    """Mean cross-entropy of the completion tokens on the native decoder (what training minimizes in torch)."""
    losses = []
    with NativeSLM(model, threads=1, n_ctx=512) as slm:
        if adapter:
            slm.set_adapters([(slm.load_adapter(adapter), 1.0)])
        for ex in examples:
            slm.reset()
            n_in = len(ex.input_ids)
            logits = slm.eval(ex.ids)[n_in - 1: n_in - 1 + len(ex.completion_ids)].astype(np.float64)
            top = logits.max(-1)
            lse = top + np.log(np.exp(logits - top[:, None]).sum(-1))
            losses += list(lse - logits[np.arange(len(logits)), list(ex.completion_ids)])
    return float(np.mean(losses))


def test_training_lowers_the_loss_and_the_adapter_moves_the_native_decoder(tiny: Path, examples: list,
                                                                            reference) -> None:
    assert reference.steps == 20 and reference.resumed_from == 0 and reference.tokens > 0
    assert reference.last_loss < 0.6 * reference.first_loss, (reference.first_loss, reference.last_loss)
    adapter = LoraAdapter.read(reference.adapter)
    assert adapter.rank == 4 and adapter.alpha == 8.0 and adapter.architecture == "llama"
    assert sorted(adapter.pairs) == sorted(f"blk.{i}.{t}.weight" for i in range(2)
                                           for t in ("attn_q", "attn_v", "ffn_down"))
    assert all(a.dtype == np.float16 and b.dtype == np.float16 for a, b in adapter.pairs.values())
    # the native decoder with the exported adapter scores the records as the trained torch model did at its end
    before, after = native_loss(tiny, examples, None), native_loss(tiny, examples, reference.adapter)
    assert after < 0.6 * before and abs(after - reference.last_loss) < 0.25 * reference.last_loss, \
        (before, after, reference.last_loss)


def test_a_run_interrupted_by_ctrl_c_resumes_to_the_same_adapter(tiny: Path, examples: list, reference,
                                                                 tmp_path: Path) -> None:
    out, ckpt = tmp_path / "a.gguf", tmp_path / "a.ckpt"

    def interrupt_at_5(info) -> None:
        if info.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_lora(tiny, examples, CONFIG, out, checkpoint=ckpt, progress=interrupt_at_5)
    assert ckpt.exists() and not out.exists()
    result = train_lora(tiny, examples, CONFIG, out, checkpoint=ckpt)
    assert result.resumed_from == 5 and result.steps == 20 and not ckpt.exists()
    assert result.first_loss == reference.first_loss
    assert_same_adapter(out, reference.adapter)


def test_a_checkpoint_of_another_run_is_refused(tiny: Path, examples: list, tmp_path: Path) -> None:
    out, ckpt = tmp_path / "a.gguf", tmp_path / "a.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_lora(tiny, examples, CONFIG, out, checkpoint=ckpt, progress=lambda info: (_ for _ in ()).throw(
            KeyboardInterrupt()))
    other = TrainConfig(**{**CONFIG.__dict__, "lr": 1e-3})
    with pytest.raises(TrainError, match="another run"):
        train_lora(tiny, examples, other, out, checkpoint=ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(TrainError, match="not a readable training checkpoint"):
        train_lora(tiny, examples, CONFIG, out, checkpoint=ckpt)


def assert_same_adapter(path: Path, reference: Path) -> None:
    ours, ref = LoraAdapter.read(path), LoraAdapter.read(reference)
    assert ours.pairs.keys() == ref.pairs.keys()
    for name in ref.pairs:
        for x, y in zip(ours.pairs[name], ref.pairs[name]):
            np.testing.assert_allclose(x.astype(np.float32), y.astype(np.float32), rtol=1e-3, atol=1e-4)


def test_the_cli_killed_with_sigkill_resumes_from_its_last_checkpoint(tiny: Path, data: Path, reference,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "cli.gguf"
    ckpt = Path(str(out) + ".ckpt")
    cmd = [sys.executable, "-m", "floe_edge.cli", "train", "lora", "--base", str(tiny), "--data", str(data),
           "--out", str(out), "--rank", "4", "--alpha", "8", "--targets", "q", "v", "down", "--epochs", "50",
           "--max-steps", "20", "--lr", "5e-3", "--batch-tokens", "512", "--max-len", "256", "--threads", "1",
           "--checkpoint-every", "6", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ckpt.exists(), proc.communicate()[1].decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["resumed_from_step"] in (6, 12, 18) and report["steps"] == 20 and not ckpt.exists()
    assert_same_adapter(out, reference.adapter)


def test_training_can_start_from_an_adapter_of_its_rank(tiny: Path, reference) -> None:
    """What the federation hands a client: its pairs go into the PEFT model (q/k rows back in HF's order) and come
    out of the export unchanged."""
    from floe_edge.train.model import attach_lora, export_adapter, load_adapter_into, load_base

    adapter = LoraAdapter.read(reference.adapter)
    model = attach_lora(load_base(tiny), CONFIG)
    load_adapter_into(model, adapter, CONFIG)
    again = export_adapter(model, tiny, "f16")
    for name, (a, b) in adapter.pairs.items():
        np.testing.assert_array_equal(again.pairs[name][0], a, err_msg=name)
        np.testing.assert_array_equal(again.pairs[name][1], b, err_msg=name)
    with pytest.raises(TrainError, match="rank 4"):
        load_adapter_into(attach_lora(load_base(tiny), TrainConfig(rank=8, targets=CONFIG.targets)), adapter,
                          TrainConfig(rank=8, targets=CONFIG.targets))
