"""PEFT import (`floe adapters import`) without torch: adapter_model.safetensors written with safetensors' numpy API,
converted against the real SmolLM2 base; the name mapping, the q/k row permutation, alpha, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from floe_edge.adapters import AdapterError, LoraAdapter, import_peft
from floe_edge.adapters.peft_import import rope_permute_rows
from floe_edge.cli import main

# SmolLM2-135M: n_embd 576, 9 query heads and 3 key/value heads of 64, ffn 1536
MODULES = {"self_attn.q_proj": (576, 576), "self_attn.k_proj": (192, 576), "self_attn.v_proj": (192, 576),
           "self_attn.o_proj": (576, 576), "mlp.gate_proj": (1536, 576), "mlp.up_proj": (1536, 576),
           "mlp.down_proj": (576, 1536)}  # fmt: skip
GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}  # fmt: skip


def peft_dir(tmp_path: Path, rank: int = 8, layers: tuple[int, ...] = (0, 29), config: dict | None = None,
             drop: str | None = None, extra: dict[str, np.ndarray] | None = None) -> Path:
    """A PEFT adapter directory as PEFT's save_pretrained writes it (random A and B)."""
    rng = np.random.default_rng(5)
    tensors = {}
    for layer in layers:
        for module, (n_out, n_in) in MODULES.items():
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.normal(size=(rank, n_in)).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.normal(size=(n_out, rank)).astype(np.float32)
    tensors.pop(drop or "", None)
    tensors.update(extra or {})
    out = tmp_path / "peft"
    out.mkdir(exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    full_config = {"peft_type": "LORA", "r": rank, "lora_alpha": 16, "bias": "none", "use_rslora": False,
                   "target_modules": [m.split(".")[1] for m in MODULES], **(config or {})}
    (out / "adapter_config.json").write_text(json.dumps(full_config))
    return out


def test_rope_permutation_interleaves_the_halves_of_each_head() -> None:
    rows = np.arange(2 * 8, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # 2 heads of 8 rows
    permuted = rope_permute_rows(rows, 2)[:, 0]
    assert permuted.tolist() == [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]
    # permuting B's rows permutes the rows of B·A: the update lands where the GGUF converter put W's rows
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 5)), rng.normal(size=(16, 4))
    np.testing.assert_allclose(rope_permute_rows(b, 2) @ a, rope_permute_rows(b @ a, 2))
    with pytest.raises(AdapterError, match="cannot split 15 rows into 2 heads"):
        rope_permute_rows(np.zeros((15, 4)), 2)


def test_import_maps_names_and_permutes_q_and_k(tmp_path: Path, smollm2_path: Path) -> None:
    from safetensors.numpy import load_file

    source = peft_dir(tmp_path)
    peft = load_file(str(source / "adapter_model.safetensors"))
    adapter = import_peft(source, smollm2_path)
    assert (adapter.architecture, adapter.alpha, adapter.rank) == ("llama", 16.0, 8)
    assert sorted(adapter.pairs) == sorted(f"blk.{i}.{g}.weight" for i in (0, 29) for g in GGUF_NAMES.values())
    for layer in (0, 29):
        for module in MODULES:
            short = module.split(".")[1]
            a, b = adapter.pairs[f"blk.{layer}.{GGUF_NAMES[short]}.weight"]
            peft_a = peft[f"base_model.model.model.layers.{layer}.{module}.lora_A.weight"]
            peft_b = peft[f"base_model.model.model.layers.{layer}.{module}.lora_B.weight"]
            np.testing.assert_array_equal(a, peft_a)
            heads = {"q_proj": 9, "k_proj": 3}.get(short)
            np.testing.assert_array_equal(b, peft_b if heads is None else rope_permute_rows(peft_b, heads))
    rslora = import_peft(peft_dir(tmp_path, config={"use_rslora": True}), smollm2_path)
    assert rslora.scale == pytest.approx(16 / np.sqrt(8))  # PEFT's rsLoRA scale alpha / sqrt(r)


BAD_PEFT = {
    "r mismatch": ({"config": {"r": 4}}, "the tensors have rank 8, adapter_config.json says r = 4"),
    "no alpha": ({"config": {"lora_alpha": None}}, "lora_alpha must be a positive number"),
    "dora": ({"config": {"use_dora": True}}, "DoRA"),
    "rank pattern": ({"config": {"rank_pattern": {"q_proj": 4}}}, "rank_pattern"),
    "not targeted": ({"config": {"target_modules": ["q_proj"]}},
                     r"adapts (k|v|o|gate|up|down)_proj, not in target_modules"),
    "half": ({"drop": "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"},
             "blk.0.ffn_up.weight: lora_B is missing"),
    "embedding": ({"extra": {"base_model.model.model.embed_tokens.weight": np.zeros((4, 4), np.float32)}},
                  "'base_model.model.model.embed_tokens.weight' is not a LoRA weight of a llama projection"),
    "no such layer": ({"layers": (30,)}, r"has no tensor 'blk\.30\."),
}


@pytest.mark.parametrize("case", list(BAD_PEFT))
def test_bad_peft_adapters_give_a_clear_error(tmp_path: Path, smollm2_path: Path, case: str) -> None:
    kwargs, message = BAD_PEFT[case]
    with pytest.raises(AdapterError, match=message):
        import_peft(peft_dir(tmp_path, **kwargs), smollm2_path)  # type: ignore[arg-type]


def test_missing_or_broken_files(tmp_path: Path, smollm2_path: Path) -> None:
    with pytest.raises(AdapterError, match="adapter_config.json: no such file"):
        import_peft(tmp_path, smollm2_path)
    source = peft_dir(tmp_path)
    (source / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(AdapterError, match="adapter_model.safetensors: cannot read"):
        import_peft(source, smollm2_path)
    with pytest.raises(AdapterError, match="base model .*nothing.gguf: no such file"):
        import_peft(peft_dir(tmp_path), tmp_path / "nothing.gguf")


def test_cli_import(tmp_path: Path, smollm2_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "imported.gguf"
    args = ["adapters", "import", "--peft", str(peft_dir(tmp_path)), "--base", str(smollm2_path), "--out", str(out)]
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"out": str(out), "architecture": "llama", "rank": 8,
                                                   "alpha": 16.0, "tensors": 14}
    assert LoraAdapter.read(out).pairs["blk.0.attn_v.weight"][0].dtype == np.float32
    assert main([*args, "--f16"]) == 0
    assert LoraAdapter.read(out).pairs["blk.0.attn_v.weight"][0].dtype == np.float16
    assert capsys.readouterr().out.startswith(f"wrote {out}: 14 adapted tensors, rank 8, alpha 16")
    assert main(["adapters", "import", "--peft", str(tmp_path / "none"), "--base", str(smollm2_path),
                 "--out", str(out)]) == 2
    assert "none/adapter_config.json: no such file" in capsys.readouterr().err
