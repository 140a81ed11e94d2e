"""The LiteRT backend's errors without its extras: a missing runtime or exporter, a missing delegate, a missing
sidecar, a truncated .tflite, a model/tokenizer mismatch, the wrong file for a backend; and the native backend keeps
working beside them. (The exported models themselves: tests/test_litert.py, with the extras.)"""

import json
import sys
from pathlib import Path

import pytest

from floe_edge.backends import open_edge
from floe_edge.litert import DelegateError, LiteRTError, LiteRTMissingError, LiteRTSLM, Sidecar
from floe_edge.litert.export import export_litert
from floe_edge.litert.runtime import interpreter_module, load_delegate
from floe_edge.litert.sidecar import file_sha256


@pytest.fixture
def no_litert(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if neither ai-edge-litert nor tflite-runtime nor litert-torch were installed (a None entry in sys.modules
    makes `import` fail and `importlib.util.find_spec` answer None)."""
    blocked = ("ai_edge_litert", "tflite_runtime", "litert_torch")
    for mod in list(sys.modules):
        if mod.split(".")[0] in blocked:
            monkeypatch.delitem(sys.modules, mod)
    for mod in blocked:
        monkeypatch.setitem(sys.modules, mod, None)


def fake_model(tmp_path: Path, source: Path, content: bytes = b"TFL3 not really a model") -> Path:
    """A .tflite with a sidecar that matches it (size, sha256) and names `source` as its tokenizer."""
    from floe_edge import _native
    from floe_edge.litert.sidecar import tokenizer_fingerprint

    model = tmp_path / "edge.tflite"
    model.write_bytes(content)
    tok = _native.Tokenizer.from_gguf(str(source))
    Sidecar(source=str(source), source_sha256="0" * 64, tokenizer_fingerprint=tokenizer_fingerprint(tok),
            n_vocab=int(tok.n_vocab), n_ctx=64, kv_cache_max=96, prefill=[32], quant="int8",
            tflite_sha256=file_sha256(model), tflite_bytes=len(content)).write(model)
    return model


def test_missing_runtime_says_what_to_install(no_litert: None) -> None:
    with pytest.raises(LiteRTMissingError, match=r"pip install 'floe-edge\[litert\]'") as e:
        interpreter_module()
    assert isinstance(e.value, ImportError) and isinstance(e.value, LiteRTError)


def test_missing_exporter_says_what_to_install(no_litert: None, smollm2_path: Path, tmp_path: Path) -> None:
    with pytest.raises(LiteRTError, match=r"litert_torch: pip install 'floe-edge\[export\]'"):
        export_litert(smollm2_path, tmp_path / "edge.tflite")
    assert not (tmp_path / "edge.tflite").exists()


def test_export_refuses_bad_arguments(smollm2_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--quant must be one of int8, int8-weights, fp16, none"):
        export_litert(smollm2_path, tmp_path / "e.tflite", quant="int4")
    with pytest.raises(FileNotFoundError, match="no model file"):
        export_litert(tmp_path / "missing.gguf", tmp_path / "e.tflite")
    with pytest.raises(ValueError, match="prefill lengths"):
        export_litert(smollm2_path, tmp_path / "e.tflite", prefill=[1])


def test_missing_delegate_is_clear_and_names_the_way_out() -> None:
    class Module:
        @staticmethod
        def load_delegate(lib: str) -> object:
            raise ValueError(f"Failed to load delegate from {lib}")

    assert load_delegate("none", Module) is None
    with pytest.raises(DelegateError, match=r"no NPU delegate on this machine \(tried libQnnTFLiteDelegate.so: "
                                            r"Failed.*--delegate none"):
        load_delegate("npu", Module)
    with pytest.raises(ValueError, match="delegate must be gpu, npu or none"):
        load_delegate("tpu", Module)


def test_no_sidecar(tmp_path: Path) -> None:
    (tmp_path / "edge.tflite").write_bytes(b"x")
    with pytest.raises(LiteRTError, match=r"no sidecar edge.tflite.json beside it"):
        LiteRTSLM(tmp_path / "edge.tflite")


def test_truncated_or_changed_model(tmp_path: Path, smollm2_path: Path) -> None:
    model = fake_model(tmp_path, smollm2_path)
    model.write_bytes(model.read_bytes()[:-3])
    with pytest.raises(LiteRTError, match=r"edge.tflite: 20 bytes, the sidecar says 23 \(truncated"):
        LiteRTSLM(model)
    model.write_bytes(b"TFL3 not really a modeL")  # same size, other bytes
    with pytest.raises(LiteRTError, match="its sha256 differs from the sidecar's"):
        LiteRTSLM(model)


def test_tokenizer_mismatch_and_missing_tokenizer(tmp_path: Path, smollm2_path: Path) -> None:
    model = fake_model(tmp_path, smollm2_path)
    card = json.loads((tmp_path / "edge.tflite.json").read_text())
    card["tokenizer_fingerprint"] = "0" * 32  # a model exported from a GGUF with another vocabulary
    (tmp_path / "edge.tflite.json").write_text(json.dumps(card))
    with pytest.raises(LiteRTError, match=r"exported with another tokenizer than .*SmolLM2.*\(fingerprint 0000"):
        LiteRTSLM(model)
    card["source"] = str(tmp_path / "moved.gguf")
    (tmp_path / "edge.tflite.json").write_text(json.dumps(card))
    with pytest.raises(LiteRTError, match=r"its tokenizer's GGUF .*moved.gguf is not there; pass the source model"):
        LiteRTSLM(model)


def test_malformed_sidecar(tmp_path: Path) -> None:
    (tmp_path / "edge.tflite").write_bytes(b"x")
    (tmp_path / "edge.tflite.json").write_text("{\"format\": \"something-else\"}")
    with pytest.raises(LiteRTError, match="not a floe-litert/1 sidecar"):
        LiteRTSLM(tmp_path / "edge.tflite")


def test_each_backend_refuses_the_other_ones_file(tmp_path: Path, smollm2_path: Path) -> None:
    with pytest.raises(ValueError, match="the litert backend runs a .tflite; make one with `floe export litert"):
        open_edge("litert", smollm2_path)
    with pytest.raises(ValueError, match="the litert backend runs a .tflite; make one with `floe export litert"):
        open_edge("litert", "smollm2-135m")  # a model name: the default --model of floe generate
    with pytest.raises(ValueError, match="is a LiteRT model: run it with --backend litert"):
        open_edge("native", tmp_path / "edge.tflite")
    with pytest.raises(ValueError, match="backend must be one of native, litert"):
        open_edge("onnx", smollm2_path)


def test_native_backend_works_without_the_litert_extra(no_litert: None, smollm2_path: Path, tmp_path: Path) -> None:
    model = fake_model(tmp_path, smollm2_path)
    with pytest.raises(LiteRTMissingError):
        LiteRTSLM(model)
    with open_edge("native", smollm2_path, n_ctx=64) as slm:
        ids = slm.tokenize("def f():")
        assert slm.eval(ids, logits="last").shape == (slm.n_vocab,)


def test_corrupt_model_is_a_clear_error(tmp_path: Path, smollm2_path: Path) -> None:
    pytest.importorskip("ai_edge_litert", reason="the [litert] extra")
    model = fake_model(tmp_path, smollm2_path, b"\0" * 64)
    with pytest.raises(LiteRTError, match=r"edge.tflite: LiteRT cannot load it \(corrupt, truncated or not"):
        LiteRTSLM(model)


def test_cached_exports_renew_with_the_recipe(tmp_path: Path, smollm2_path: Path) -> None:
    """The export cache takes a model only when it exists, its sidecar reads, its context suffices and it was made by
    this version's recipe (an older int8 export lacks the residual rotation)."""
    from floe_edge.litert.cache import current
    from floe_edge.litert.export import RECIPE

    model = fake_model(tmp_path, smollm2_path)  # written without a recipe: an export from before recipes
    assert not current(model)
    card = json.loads(Path(str(model) + ".json").read_text())
    card["export"] = {"recipe": RECIPE}
    Path(str(model) + ".json").write_text(json.dumps(card))
    assert current(model) and current(model, n_ctx=64) and not current(model, n_ctx=65)
    card["export"] = ["not", "a", "dict"]
    Path(str(model) + ".json").write_text(json.dumps(card))
    assert not current(model)
    card["export"] = {"recipe": RECIPE}
    Path(str(model) + ".json").write_text(json.dumps(card))
    model.unlink()
    assert not current(model)  # the sidecar alone is not a model
    assert not current(tmp_path / "missing.tflite")
