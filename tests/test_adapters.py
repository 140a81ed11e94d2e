"""GGUF LoRA adapter files (floe_edge.adapters.LoraAdapter): round trip, llama.cpp interop both ways, and a clear
AdapterError (never a crash or a hang) for every kind of bad file."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from floe_edge.adapters import AdapterError, LoraAdapter

# SmolLM2-135M: n_embd 576, 9 query heads and 3 key/value heads of 64, ffn 1536
SHAPES = {"blk.0.attn_q.weight": (576, 576), "blk.0.attn_k.weight": (192, 576), "blk.3.attn_v.weight": (192, 576),
          "blk.5.attn_output.weight": (576, 576), "blk.7.ffn_up.weight": (1536, 576),
          "blk.7.ffn_down.weight": (576, 1536)}  # fmt: skip
PROMPT = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"


def random_adapter(rng: np.random.Generator, rank: int = 8, zero_b: bool = False, dtype: type = np.float32,
                   architecture: str = "llama", alpha: float = 16.0) -> LoraAdapter:
    pairs = {}
    for name, (n_out, n_in) in SHAPES.items():
        a = rng.normal(0, 1 / np.sqrt(n_in), (rank, n_in)).astype(dtype)
        b = np.zeros((n_out, rank), dtype) if zero_b else rng.normal(0, 0.2, (n_out, rank)).astype(dtype)
        pairs[name] = (a, b)
    return LoraAdapter(architecture, alpha, pairs)


def write_raw(path: Path, tensors: dict[str, np.ndarray], meta: dict[str, object] | None = None,
              architecture: str = "llama") -> Path:
    """A GGUF file written directly with gguf's writer, the way llama.cpp's convert_lora_to_gguf.py writes one
    (general.type, adapter.type, adapter.lora.alpha, plus the general.* keys its model writer adds)."""
    writer = gguf.GGUFWriter(str(path), architecture)
    meta = {"general.type": "adapter", "adapter.type": "lora", "adapter.lora.alpha": 32.0, **(meta or {})}
    for key, value in meta.items():
        if value is None:
            continue
        if isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_string(key, str(value))
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_round_trip_f32_and_f16(tmp_path: Path, rng: np.random.Generator) -> None:
    for dtype in (np.float32, np.float16):
        adapter = random_adapter(rng, dtype=dtype)
        path = adapter.write(tmp_path / "a.gguf")
        back = LoraAdapter.read(path)
        assert (back.architecture, back.alpha, back.rank) == ("llama", 16.0, 8)
        assert list(back.pairs) == list(adapter.pairs)
        for name, (a, b) in adapter.pairs.items():
            assert back.pairs[name][0].dtype == dtype
            np.testing.assert_array_equal(back.pairs[name][0], a)
            np.testing.assert_array_equal(back.pairs[name][1], b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf"]  # no temporary file left


def test_the_file_has_llama_cpp_metadata_and_ggml_shapes(tmp_path: Path, rng: np.random.Generator) -> None:
    path = random_adapter(rng).write(tmp_path / "a.gguf")
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["general.architecture"].contents() == "llama"
    alpha = reader.fields["adapter.lora.alpha"]
    assert alpha.types == [gguf.GGUFValueType.FLOAT32] and alpha.contents() == 16.0
    shapes = {t.name: list(t.shape) for t in reader.tensors}  # ggml order
    assert shapes["blk.0.attn_k.weight.lora_a"] == [576, 8] and shapes["blk.0.attn_k.weight.lora_b"] == [8, 192]
    assert shapes["blk.7.ffn_down.weight.lora_a"] == [1536, 8] and shapes["blk.7.ffn_down.weight.lora_b"] == [8, 576]


def test_a_file_written_as_llama_cpps_converter_writes_it_reads(tmp_path: Path, rng: np.random.Generator) -> None:
    a = rng.normal(size=(4, 576)).astype(np.float16)
    b = rng.normal(size=(192, 4)).astype(np.float16)
    path = write_raw(tmp_path / "converted.gguf",
                     {"blk.2.attn_k.weight.lora_a": a, "blk.2.attn_k.weight.lora_b": b},
                     {"general.name": "Smollm2 135M Instruct", "general.file_type": 1,
                      "general.quantization_version": 2})
    adapter = LoraAdapter.read(path)
    assert (adapter.architecture, adapter.alpha, adapter.rank, adapter.scale) == ("llama", 32.0, 4, 8.0)
    np.testing.assert_array_equal(adapter.pairs["blk.2.attn_k.weight"][0], a)
    np.testing.assert_array_equal(adapter.pairs["blk.2.attn_k.weight"][1], b)


def test_check_base(tmp_path: Path, rng: np.random.Generator, smollm2_path: Path) -> None:
    random_adapter(rng).check_base(smollm2_path)
    with pytest.raises(AdapterError, match="architecture 'qwen2' does not fit base model .*'llama'"):
        random_adapter(rng, architecture="qwen2").check_base(smollm2_path)
    wrong = random_adapter(rng)
    wrong.pairs["blk.99.attn_q.weight"] = wrong.pairs.pop("blk.0.attn_q.weight")
    with pytest.raises(AdapterError, match="has no tensor 'blk.99.attn_q.weight'"):
        wrong.check_base(smollm2_path)
    wrong = random_adapter(rng)
    a, b = wrong.pairs["blk.0.attn_k.weight"]
    wrong.pairs["blk.0.attn_k.weight"] = (a, np.zeros((576, 8), np.float32))  # k is 192 rows, not 576
    with pytest.raises(AdapterError, match=r"blk.0.attn_k.weight: the adapter expects ggml shape \[576, 576\]"):
        wrong.check_base(smollm2_path)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(40))
    with pytest.raises(AdapterError, match="base model .*junk.gguf: not a valid GGUF file"):
        random_adapter(rng).check_base(junk)


BAD_FILES = {
    "not an adapter": ({"general.type": "model"}, None, "not an adapter .general.type = 'model'"),
    "not lora": ({"adapter.type": "control_vector"}, None, "not a LoRA adapter"),
    "no alpha": ({"adapter.lora.alpha": None}, None, "adapter.lora.alpha is missing"),
    "half a pair": ({}, {"blk.0.attn_q.weight.lora_a": np.ones((8, 576), np.float32)},
                    r"'blk.0.attn_q.weight.lora_b' is missing \(half of a LoRA pair\)"),
    "a norm": ({}, {"blk.0.attn_norm.weight": np.ones(576, np.float32)}, "'blk.0.attn_norm.weight' is not a LoRA"),
    "transposed a": ({}, {"blk.0.attn_q.weight.lora_a": np.ones((576, 8), np.float32),
                          "blk.0.attn_q.weight.lora_b": np.ones((576, 8), np.float32)}, "disagree on the rank"),
    "mixed ranks": ({}, {"blk.0.attn_q.weight.lora_a": np.ones((8, 576), np.float32),
                         "blk.0.attn_q.weight.lora_b": np.ones((576, 8), np.float32),
                         "blk.1.attn_q.weight.lora_a": np.ones((4, 576), np.float32),
                         "blk.1.attn_q.weight.lora_b": np.ones((576, 4), np.float32)}, "mixed ranks"),
    "int type": ({}, {"blk.0.attn_q.weight.lora_a": np.ones((8, 576), np.int32),
                      "blk.0.attn_q.weight.lora_b": np.ones((576, 8), np.int32)}, "ggml type 26; supported"),
    "nan": ({}, {"blk.0.attn_q.weight.lora_a": np.full((8, 576), np.nan, np.float32),
                 "blk.0.attn_q.weight.lora_b": np.ones((576, 8), np.float32)}, "lora_a holds NaN or infinite"),
    "inf": ({}, {"blk.0.attn_q.weight.lora_a": np.ones((8, 576), np.float16),
                 "blk.0.attn_q.weight.lora_b": np.full((576, 8), np.inf, np.float16)}, "lora_b holds NaN or inf"),
    "3-D": ({}, {"blk.0.attn_q.weight.lora_a": np.ones((2, 8, 576), np.float32),
                 "blk.0.attn_q.weight.lora_b": np.ones((576, 8), np.float32)}, "has 3 dimensions"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_give_a_clear_error(tmp_path: Path, case: str) -> None:
    meta, tensors, message = BAD_FILES[case]
    tensors = tensors or {"blk.0.attn_q.weight.lora_a": np.ones((8, 576), np.float32),
                          "blk.0.attn_q.weight.lora_b": np.ones((576, 8), np.float32)}
    path = write_raw(tmp_path / "bad.gguf", tensors, meta)
    with pytest.raises(AdapterError, match=message) as e:
        LoraAdapter.read(path)
    assert str(path) in str(e.value)


def test_truncated_and_missing_files(tmp_path: Path, rng: np.random.Generator) -> None:
    whole = random_adapter(rng).write(tmp_path / "whole.gguf").read_bytes()
    for size in (0, 3, 24, 200, len(whole) // 2, len(whole) - 1):
        cut = tmp_path / f"cut{size}.gguf"
        cut.write_bytes(whole[:size])
        with pytest.raises(AdapterError, match=f"cut{size}.gguf: not a valid GGUF file"):
            LoraAdapter.read(cut)
    with pytest.raises(AdapterError, match="nowhere.gguf: no such file"):
        LoraAdapter.read(tmp_path / "nowhere.gguf")


def test_writing_refuses_what_cannot_be_used(tmp_path: Path, rng: np.random.Generator) -> None:
    adapter = random_adapter(rng)
    adapter.pairs["blk.0.attn_q.weight"] = (adapter.pairs["blk.0.attn_q.weight"][0].astype(np.float64),
                                            adapter.pairs["blk.0.attn_q.weight"][1])
    with pytest.raises(AdapterError, match="lora_a has type float64"):
        adapter.write(tmp_path / "x.gguf")
    with pytest.raises(AdapterError, match="no LoRA tensors"):
        LoraAdapter("llama", 1.0, {}).write(tmp_path / "x.gguf")
    assert not list(tmp_path.iterdir())


# -- llama.cpp (llama-cpp-python) loads our files --

def llama_logits(llama_cpp, model: Path, lora: Path | None, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits at every position, token by token: its batched path differs from its token-by-token one
    by up to ~1.5 logits on this Q4_1 model (with or without an adapter), too coarse to compare adapters."""
    llm = llama_cpp.Llama(model_path=str(model), lora_path=str(lora) if lora else None, n_ctx=256, n_threads=2,
                          n_batch=1, n_ubatch=1, logits_all=True, verbose=False)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def test_llama_cpp_loads_our_adapters(tmp_path: Path, rng: np.random.Generator, smollm2_path: Path,
                                      llama_cpp) -> None:
    ids = llama_cpp.Llama(model_path=str(smollm2_path), vocab_only=True, verbose=False).tokenize(PROMPT.encode())[:16]
    base = llama_logits(llama_cpp, smollm2_path, None, ids)
    zero = llama_logits(llama_cpp, smollm2_path, random_adapter(rng, zero_b=True).write(tmp_path / "z.gguf"), ids)
    np.testing.assert_array_equal(zero, base)  # B = 0: W·x + s·0 is W·x exactly
    for dtype in (np.float32, np.float16):
        path = random_adapter(rng, dtype=dtype).write(tmp_path / f"r-{np.dtype(dtype).name}.gguf")
        adapted = llama_logits(llama_cpp, smollm2_path, path, ids)
        assert np.isfinite(adapted).all()
        assert np.abs(adapted - base).max() > 1.0, dtype  # the adapter is applied


def test_llama_cpp_reads_alpha_and_rank_as_we_write_them(tmp_path: Path, rng: np.random.Generator,
                                                         smollm2_path: Path, llama_cpp) -> None:
    """The same update s·B·A written three ways (alpha 16, r 8, B; alpha 8, 2·B; alpha 32, r 16 with zero rows)
    gives the same logits: llama.cpp takes the rank from the shapes and the scale as alpha / r."""
    ids = llama_cpp.Llama(model_path=str(smollm2_path), vocab_only=True, verbose=False).tokenize(PROMPT.encode())[:16]
    adapter = random_adapter(rng)
    halved = LoraAdapter("llama", 8.0, {n: (a, 2 * b) for n, (a, b) in adapter.pairs.items()})
    padded = LoraAdapter("llama", 32.0, {n: (np.pad(a, ((0, 8), (0, 0))), np.pad(b, ((0, 0), (0, 8))))
                                         for n, (a, b) in adapter.pairs.items()})
    logits = [llama_logits(llama_cpp, smollm2_path, x.write(tmp_path / f"{i}.gguf"), ids)
              for i, x in enumerate((adapter, halved, padded))]
    assert np.abs(logits[0] - llama_logits(llama_cpp, smollm2_path, None, ids)).max() > 1.0
    np.testing.assert_allclose(logits[1], logits[0], atol=1e-4)
    np.testing.assert_allclose(logits[2], logits[0], atol=1e-4)


def test_corrupted_bytes_never_crash(tmp_path: Path, rng: np.random.Generator) -> None:
    """Random bytes flipped anywhere in a small adapter file: either it still reads as a valid adapter or the
    error is an AdapterError (the native reader bounds every count, size and offset)."""
    pairs = {"blk.0.attn_q.weight": (np.ones((2, 576), np.float32), np.ones((576, 2), np.float32))}
    whole = bytearray(LoraAdapter("llama", 4.0, pairs).write(tmp_path / "a.gguf").read_bytes())
    header = 512  # metadata and tensor infos: where a flip changes structure, not just a weight
    outcomes = {"read": 0, "refused": 0}
    for i in range(300):
        data = bytearray(whole)
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(0, header if i % 2 else len(data)))] = int(rng.integers(0, 256))
        path = tmp_path / "mutated.gguf"
        path.write_bytes(bytes(data))
        try:
            LoraAdapter.read(path)
            outcomes["read"] += 1
        except AdapterError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 30 and outcomes["read"] > 30, outcomes
