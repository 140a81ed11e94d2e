"""A real PEFT adapter, imported, gives in llama.cpp the next tokens the PEFT model gives in transformers.

Needs the `train` extra (torch, transformers, peft): the whole module is skipped where torch, transformers or peft
is not installed (the test extra alone); everything else about adapters runs without them.

Measured (SmolLM2-135M Q4_1, 128 teacher-forced positions, token by token): the same argmax at 100% of the positions,
while the adapter changes 43% of the base model's; mean |logit error| against the PEFT model 0.25, and 1.25 when the
q/k lora_b rows are not permuted.
"""

from __future__ import annotations

import importlib.util
import json.decoder
from pathlib import Path

import numpy as np
import pytest

from floe_edge.adapters import import_peft, peft_import
from test_adapters import llama_logits as llama_cpp_logits  # token by token: see there why

pytestmark = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("torch", "transformers", "peft")),
                                reason="needs the train extra (torch, transformers, peft)")

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
N_POSITIONS = 128
TRAIN_STEPS = 10


def text_ids(llama_cpp, smollm2_path: Path) -> list[int]:
    text = Path(json.decoder.__file__).read_text()
    return llama_cpp.Llama(model_path=str(smollm2_path), vocab_only=True, verbose=False).tokenize(text.encode())


@pytest.fixture(scope="module")
def peft_model_and_adapter(smollm2_path: Path, llama_cpp, tmp_path_factory: pytest.TempPathFactory):
    """The GGUF base dequantized into transformers, wrapped in a PEFT LoRA (r = 8 on all seven projections) trained
    a few steps on the test text (so that B is non-zero and the adapter changes confident predictions, not near-ties
    that Q4_1's own noise can flip), saved as PEFT saves it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name,
                                                dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS))
    batch = torch.tensor([text_ids(llama_cpp, smollm2_path)[:N_POSITIONS]])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    for _ in range(TRAIN_STEPS):
        optimizer.zero_grad()
        model(batch, labels=batch).loss.backward()
        optimizer.step()
    model.eval()
    out = tmp_path_factory.mktemp("peft")
    model.save_pretrained(str(out))
    return model, out


def test_imported_adapter_gives_the_peft_models_next_tokens(peft_model_and_adapter, smollm2_path: Path,
                                                            llama_cpp, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    model, peft_dir = peft_model_and_adapter
    ids = text_ids(llama_cpp, smollm2_path)[:N_POSITIONS]
    with torch.no_grad():
        peft_logits = model(torch.tensor([ids])).logits[0].numpy()
        with model.disable_adapter():
            base_top = model(torch.tensor([ids])).logits[0].argmax(-1).numpy()
    peft_top = peft_logits.argmax(-1)
    adapter_path = import_peft(peft_dir, smollm2_path).write(tmp_path / "imported.gguf")
    ours = llama_cpp_logits(llama_cpp, smollm2_path, adapter_path, ids)
    agreement = float(np.mean(ours.argmax(-1) == peft_top))
    assert agreement >= 0.95, agreement
    assert np.mean(peft_top != base_top) >= 0.2  # the adapter matters
    assert np.mean(ours.argmax(-1) != llama_cpp_logits(llama_cpp, smollm2_path, None, ids).argmax(-1)) >= 0.2
    # without the q/k row permutation the conversion is measurably further from the PEFT model
    monkeypatch.setattr(peft_import, "rope_permute_rows", lambda rows, n_head: rows)
    unpermuted = import_peft(peft_dir, smollm2_path).write(tmp_path / "unpermuted.gguf")
    wrong = llama_cpp_logits(llama_cpp, smollm2_path, unpermuted, ids)
    error, wrong_error = (float(np.abs(x - peft_logits).mean()) for x in (ours, wrong))
    assert error < 0.5 * wrong_error, (error, wrong_error)  # measured: 0.25 vs 1.25
