"""`floe export litert`: a GGUF edge model (LoRA adapters merged) as a LiteRT `.tflite` with an external KV cache.

The path: transformers reads the GGUF (dequantized to f32, q/k rows back in HF order) -> the adapters' s·B·A added to
the weights -> litert-torch's generative llama-family model (its SmolLM builder's layers, configured from the GGUF's
hyperparameters) -> `converter.convert_to_tflite` with `prefill_<n>` signatures (logits for every position: the hybrid
generator verifies drafts in one batched eval) and a `decode` signature, KV cache as inputs and outputs, quantized
(dynamic-range int8 weights by default, the residual stream rotated first: `rotation.py`). A JSON sidecar
(`sidecar.py`) records where it came from.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from .rotation import ROTATION_SEED, rotate_residual
from .sidecar import LiteRTError, Sidecar, file_sha256, tokenizer_fingerprint

__all__ = ["QUANTS", "RECIPE", "export_litert", "require_export_extra"]

PathLike = Union[str, "os.PathLike[str]"]
Progress = Callable[[str], None]  # told each phase as it starts
# ours -> litert-torch's QuantizationName. int8: dynamic range (int8 per-channel weights, activations quantized per
# row at run time: XNNPACK's integer kernels); int8-weights: int8 weights, float activations (more faithful, but the
# runtime expands the weights to f32: about 4 GB resident for SmolLM2-135M). Measured: BENCHMARKS.md, "LiteRT".
QUANTS = {"int8": "dynamic_int8", "int8-weights": "weight_only_int8", "fp16": "fp16", "none": "none"}
RECIPE = 2  # in the sidecar; raised when the same GGUF would export differently (2: int8 rotated), so caches renew


def require_export_extra() -> None:
    import importlib.util

    missing = [m for m in ("torch", "transformers", "litert_torch") if importlib.util.find_spec(m) is None]
    if missing:
        raise LiteRTError(f"exporting to LiteRT needs {', '.join(missing)}: pip install 'floe-edge[export]' "
                          "(torch==2.13.0 is the CPU build)")


def _load_hf(gguf_path: Path) -> Any:
    """The GGUF's llama model in transformers, f32, eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local file: never ask the hub
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
    except Exception as e:  # transformers raises many types for a file it cannot read
        raise LiteRTError(f"{gguf_path}: transformers cannot load it: {e}") from None
    if model.config.model_type != "llama":
        raise LiteRTError(f"{gguf_path}: architecture {model.config.model_type!r}; the LiteRT export supports llama "
                          "models (the edge SLM)")
    return model.eval()


def _merge_adapters(model: Any, gguf_path: Path, adapters: Sequence[tuple[Path, float]]) -> list[dict[str, Any]]:
    """Add each adapter's scale·(alpha/r)·B·A to the weights it adapts (q/k lora_b rows back in HF order, as the
    GGUF's q/k rows are); returns what the sidecar records of them."""
    import numpy as np
    import torch

    from ..adapters import LoraAdapter
    from ..adapters.peft_import import PEFT_MODULES, rope_unpermute_rows

    heads = {"q_proj": model.config.num_attention_heads, "k_proj": model.config.num_key_value_heads}
    modules = {f"blk.{i}.{g}.weight": (i, p) for i in range(model.config.num_hidden_layers)
               for p, g in PEFT_MODULES.items()}
    records = []
    for path, scale in adapters:
        adapter = LoraAdapter.read(path)
        adapter.check_base(gguf_path)
        for name, (a, b) in adapter.pairs.items():
            layer, module = modules[name]
            if module in heads:
                b = rope_unpermute_rows(np.asarray(b, np.float32), heads[module])
            part = "self_attn" if module in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            weight = getattr(getattr(model.model.layers[layer], part), module).weight
            delta = torch.from_numpy(np.asarray(b, np.float32)) @ torch.from_numpy(np.asarray(a, np.float32))
            with torch.no_grad():
                weight.add_(delta * float(scale) * adapter.scale)
        records.append({"path": str(Path(path).resolve()), "sha256": file_sha256(path), "scale": float(scale)})
    return records


def _import_generative() -> tuple[Any, Any]:
    """litert-torch's generative model_config and model_builder. Its LoRA module imports TensorFlow's copy of the
    .tflite flatbuffer schema (for LoRA weights we never use), which the `litert-torch` package does not depend on;
    without TensorFlow the same generated schema from ai-edge-litert stands in, for that one import only."""
    import importlib.util
    import types

    shim = importlib.util.find_spec("tensorflow") is None
    names = ("tensorflow", "tensorflow.lite", "tensorflow.lite.python", "tensorflow.lite.python.schema_py_generated")
    if shim:
        from ai_edge_litert import schema_py_generated

        for name in names[:-1]:
            sys.modules[name] = types.ModuleType(name)
        sys.modules[names[-1]] = schema_py_generated
    try:
        import litert_torch.generative.layers.model_config as cfg
        from litert_torch.generative.utilities import model_builder
    finally:
        if shim:
            for name in names:
                sys.modules.pop(name, None)
    return cfg, model_builder


def _litert_model(hf: Any, kv_cache_max: int) -> Any:
    """litert-torch's decoder-only model with the HF model's hyperparameters and weights."""
    cfg, model_builder = _import_generative()

    c = hf.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    norm = cfg.NormalizationConfig(type=cfg.NormalizationType.RMS_NORM, epsilon=float(c.rms_norm_eps))
    block = cfg.TransformerBlockConfig(
        attn_config=cfg.AttentionConfig(num_heads=c.num_attention_heads, head_dim=head_dim,
                                        num_query_groups=c.num_key_value_heads,
                                        rotary_base=int(_rope_theta(c)), rotary_percentage=1.0),
        ff_config=cfg.FeedForwardConfig(type=cfg.FeedForwardType.GATED,
                                        activation=cfg.ActivationConfig(cfg.ActivationType.SILU),
                                        intermediate_size=c.intermediate_size),
        pre_attention_norm_config=norm, post_attention_norm_config=norm)
    tied = bool(getattr(c, "tie_word_embeddings", True))
    config = cfg.ModelConfig(vocab_size=c.vocab_size, num_layers=c.num_hidden_layers, max_seq_len=kv_cache_max,
                             embedding_dim=c.hidden_size, block_configs=block, final_norm_config=norm,
                             lm_head_share_weight_with_embedding=tied)
    names = model_builder.TENSOR_NAMES if tied else model_builder.TENSOR_NAMES_WITH_SEPARATE_LM_HEAD
    state = {k: v.detach().clone() for k, v in hf.state_dict().items()
             if not (tied and k == "lm_head.weight")}
    return model_builder.build_decoder_only_model(checkpoint_path="", config=config, tensor_names=names,
                                                  custom_loader=lambda _: state, mask_cache_size=kv_cache_max)


def _rope_theta(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or {}  # transformers 5 keeps it there
    theta: Any = (params.get("rope_theta") if isinstance(params, dict) else None) or getattr(config, "rope_theta",
                                                                                            10000.0)
    return float(theta)


def _check_args(gguf: Path, quant: str, n_ctx: int, prefill: Sequence[int]) -> None:
    if quant not in QUANTS:
        raise ValueError(f"--quant must be one of {', '.join(QUANTS)}, got {quant!r}")
    if not gguf.is_file():
        raise FileNotFoundError(f"no model file {gguf}")
    if not prefill or any(not 2 <= n <= 1024 for n in prefill):
        raise ValueError("prefill lengths must be in 2..1024")
    if not 16 <= n_ctx <= 32768:
        raise ValueError(f"n_ctx must be in 16..32768, got {n_ctx}")


def export_litert(gguf: PathLike, out: PathLike, *, adapters: Sequence[tuple[PathLike, float]] = (),
                  quant: str = "int8", n_ctx: int = 1024, prefill: Sequence[int] = (32,),
                  progress: Optional[Progress] = None, rotate: Optional[bool] = None) -> Sidecar:
    """Export `gguf` (with `adapters` merged, each (path, scale)) to the .tflite `out` and its sidecar; returns the
    sidecar. The file is written to a temporary name and renamed into place: a failed export leaves no model.
    `rotate`: rotate the residual stream (default: for int8, whose activations it is for)."""
    gguf, out = Path(gguf), Path(out)
    _check_args(gguf, quant, n_ctx, prefill)
    require_export_extra()
    say = progress or (lambda phase: None)
    started = time.perf_counter()
    prefill = sorted(set(int(n) for n in prefill))
    kv_cache_max = n_ctx + max(prefill)  # the last chunk is padded to its signature's length
    say("reading the GGUF and its tokenizer")
    from .. import _native

    tokenizer = _native.Tokenizer.from_gguf(str(gguf))
    fingerprint, source_sha = tokenizer_fingerprint(tokenizer), file_sha256(gguf)
    hf = _load_hf(gguf)
    say(f"merging {len(adapters)} adapter(s)" if adapters else "no adapters to merge")
    records = _merge_adapters(hf, gguf, [(Path(p), float(s)) for p, s in adapters])
    c = hf.config
    config = {"n_layers": c.num_hidden_layers, "dim": c.hidden_size, "n_heads": c.num_attention_heads,
              "n_kv_heads": c.num_key_value_heads,
              "head_dim": getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads}
    if hf.config.vocab_size != tokenizer.n_vocab:
        raise LiteRTError(f"{gguf}: the model has {hf.config.vocab_size} logits, its tokenizer "
                          f"{tokenizer.n_vocab} tokens")
    rotated = quant == "int8" if rotate is None else rotate  # per-row int8 activations: spread the outliers first
    if rotated:
        say("rotating the residual stream (int8 activations)")
        rotate_residual(hf)
    say("building the LiteRT model")
    model = _litert_model(hf, kv_cache_max)
    del hf
    _convert(model, out, prefill, kv_cache_max, quant, say)
    import litert_torch

    card = Sidecar(source=str(gguf.resolve()), source_sha256=source_sha, tokenizer_fingerprint=fingerprint,
                   n_vocab=int(tokenizer.n_vocab), n_ctx=n_ctx, kv_cache_max=kv_cache_max, prefill=prefill,
                   quant=quant, tflite_sha256=file_sha256(out), tflite_bytes=out.stat().st_size, adapters=records,
                   config=config,
                   export={"recipe": RECIPE, "seconds": round(time.perf_counter() - started, 1),
                           "peak_rss_mb": _peak_rss_mb(),
                           "residual_rotation": f"orthogonal, seed {ROTATION_SEED}" if rotated else None,
                           "litert_torch": getattr(litert_torch, "__version__", "?")})
    card.write(out)
    return card


def _convert(model: Any, out: Path, prefill: list[int], kv_cache_max: int, quant: str, say: Progress) -> None:
    """litert-torch's multi-signature conversion into a temporary folder, then the file renamed to `out`."""
    from litert_torch import _config
    from litert_torch.generative.utilities import converter
    from litert_torch.generative.utilities.export_config import ExportConfig

    say(f"converting to LiteRT with {quant} weights (minutes)")
    _config.config.show_progress = False  # ours is the progress the user sees
    quiet = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # the quantizer draws bars of its own
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".floe-litert-", dir=out.parent) as tmp:
            try:  # the quantizer prints its size report: to stderr, stdout is for `--json`
                with contextlib.redirect_stdout(sys.stderr):
                    written = converter.convert_to_tflite(
                        model, output_path=tmp, output_name_prefix="model", prefill_seq_len=prefill,
                        kv_cache_max_len=kv_cache_max, quantize=QUANTS[quant],
                        export_config=ExportConfig(output_logits_on_prefill=True))  # verification reads every logit
            except Exception as e:  # the converter's errors come from torch.export, MLIR, the quantizer ...
                raise LiteRTError(f"{out}: the LiteRT conversion failed: {type(e).__name__}: {e}") from e
            say("writing the model")
            shutil.move(written, out)
    finally:
        if quiet is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = quiet


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)
