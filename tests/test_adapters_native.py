"""An adapter written by `floe_edge.adapters.LoraAdapter` runs on the native decoder exactly as the same pairs in
llama.cpp's own layout do (tests/test_lora.py holds those against llama.cpp), and our reader and NativeSLM agree on
what a file holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from floe_edge import NativeSLM
from floe_edge.adapters import LoraAdapter
from test_lora import random_pairs, write_adapter


def test_our_writer_and_llama_cpps_layout_give_the_same_logits(smollm2_path: Path, stdlib_text: str,
                                                              tmp_path: Path) -> None:
    with NativeSLM(smollm2_path, threads=2, n_ctx=256) as slm:
        ids = slm.tokenize(stdlib_text, add_bos=False)[:48]
        pairs = random_pairs(slm.config, rank=8, seed=7, layers=range(0, 30, 3))
        ours = LoraAdapter("llama", 16.0, pairs)
        ours.write(tmp_path / "ours.gguf")
        theirs = write_adapter(tmp_path / "theirs.gguf", pairs, alpha=16.0)
        back = LoraAdapter.read(tmp_path / "ours.gguf")
        assert back.rank == 8 and back.alpha == 16.0 and set(back.pairs) == set(pairs)
        logits = []
        for path in (tmp_path / "ours.gguf", theirs, None):
            slm.set_adapters([(slm.load_adapter(path), 1.0)] if path else [])
            slm.reset()
            logits.append(slm.eval(ids))
        assert np.array_equal(logits[0], logits[1])  # the same file content, bit for bit in effect
        assert not np.array_equal(logits[0], logits[2])  # and the adapter does something
        assert (logits[0].argmax(-1) != logits[2].argmax(-1)).any()
