"""An adapter written by llama.cpp's own converter (convert_lora_to_gguf.py) loads in ours and runs as the same
adapter imported by `floe adapters import`.

Needs the train extra (the converter imports torch and transformers) and the converter's source, which
`bash tools/setup.sh train` fetches from the llama-cpp-python release it builds (the CI does both); the module is
skipped without them. The PEFT adapter is random (r = 4 on all seven projections) on a 2-layer model cut from
SmolLM2, whose HF checkpoint is written from the GGUF (transformers reads the GGUF; the converter reads HF files).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from floe_edge import NativeSLM
from floe_edge.adapters import LoraAdapter, import_peft
from floe_edge.make_slm import make_slm

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def converter_dir() -> Path | None:
    if os.environ.get("FLOE_LLAMA_CONVERTER"):
        return Path(os.environ["FLOE_LLAMA_CONVERTER"])
    cache = Path(os.environ.get("FLOE_WHEEL_CACHE") or Path.home() / ".cache" / "floe" / "wheels")
    found = sorted(cache.glob("llama.cpp-convert-*/convert_lora_to_gguf.py"))
    return found[-1].parent if found else None


pytestmark = [
    pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("torch", "transformers", "peft")),
                       reason="needs the train extra (torch, transformers, peft)"),
    pytest.mark.skipif(converter_dir() is None, reason="needs llama.cpp's converter: bash tools/setup.sh train"),
]


@pytest.fixture(scope="module")
def converted(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(the 2-layer GGUF, the PEFT adapter directory, llama.cpp's conversion of it)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_model

    from floe_edge.train.model import load_base

    tmp = tmp_path_factory.mktemp("convert")
    tiny = make_slm(smollm2_path, 2, tmp / "tiny.gguf")
    base = load_base(tiny)
    hf = tmp / "hf"
    hf.mkdir()
    save_model(base, str(hf / "model.safetensors"))  # transformers will not save a model it read from a GGUF
    config = base.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = ["LlamaForCausalLM"]
    (hf / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    model.save_pretrained(str(tmp / "peft"))
    out = tmp / "llama-cpp.gguf"
    converter = converter_dir()
    assert converter is not None
    done = subprocess.run([sys.executable, str(converter / "convert_lora_to_gguf.py"), "--base", str(hf),
                           "--outtype", "f16", "--outfile", str(out), str(tmp / "peft")],
                          env={**os.environ, "PYTHONPATH": str(converter / "gguf-py")}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return tiny, tmp / "peft", out


def test_llama_cpps_conversion_holds_what_our_import_holds(converted) -> None:
    tiny, peft_dir, theirs_path = converted
    theirs, ours = LoraAdapter.read(theirs_path), import_peft(peft_dir, tiny)
    assert (theirs.architecture, theirs.alpha, theirs.rank) == (ours.architecture, ours.alpha, ours.rank) == \
        ("llama", 8.0, 4)
    assert sorted(theirs.pairs) == sorted(ours.pairs) and len(ours.pairs) == 14
    for name, (a, b) in theirs.pairs.items():
        assert a.dtype == b.dtype == np.float16
        # the same arrays (q/k lora_b rows permuted alike), ours rounded to f16 as their --outtype f16 does
        np.testing.assert_array_equal(a, ours.pairs[name][0].astype(np.float16), err_msg=name)
        np.testing.assert_array_equal(b, ours.pairs[name][1].astype(np.float16), err_msg=name)


def test_llama_cpps_conversion_runs_in_the_native_decoder(converted, tmp_path: Path) -> None:
    tiny, peft_dir, theirs_path = converted
    ours = import_peft(peft_dir, tiny)
    half = LoraAdapter(ours.architecture, ours.alpha, {n: (a.astype(np.float16), b.astype(np.float16))
                                                       for n, (a, b) in ours.pairs.items()})
    ours_path = half.write(tmp_path / "ours-f16.gguf")
    ids = list(range(200, 264))
    with NativeSLM(tiny, threads=1, n_ctx=128) as slm:
        base = slm.eval(ids)
        logits = {}
        for label, path in (("theirs", theirs_path), ("ours", ours_path)):
            slm.reset()
            slm.set_adapters([(slm.load_adapter(path), 1.0)])
            logits[label] = slm.eval(ids)
    np.testing.assert_array_equal(logits["theirs"], logits["ours"])
    assert np.abs(logits["theirs"] - base).mean() > 1e-2  # the adapter is not a no-op
