"""The base GGUF as a trainable transformers model with PEFT LoRA, and the trained LoRA exported as a GGUF adapter.

transformers reads the GGUF and dequantizes it to f32: Q4_1/Q8_0 dequantization is exact, so the trained adapter
fits the very weights the native decoder runs. The export goes through PEFT's own files and `import_peft` (the same
names, q/k RoPE row permutation and alpha rule as for any PEFT adapter).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..adapters import LoraAdapter, import_peft
from ..adapters.peft_import import PEFT_MODULES, rope_unpermute_rows
from .config import TrainConfig

__all__ = ["TrainError", "load_base", "attach_lora", "lora_state", "export_adapter", "load_adapter_into"]


class TrainError(RuntimeError):
    """A training run that cannot start or go on (missing extra, a model transformers cannot read, a checkpoint of
    another run); the message says what to do."""


def require_train_extra() -> None:
    missing = [m for m in ("torch", "transformers", "peft") if not _importable(m)]
    if missing:
        raise TrainError(f"training needs {', '.join(missing)}: pip install 'floe-edge[train]' (torch==2.13.0 is "
                         "the CPU build)")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def load_base(gguf_path: Path) -> Any:
    """The GGUF's llama model in transformers, f32, in training mode without dropout."""
    require_train_extra()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local file: never ask the hub
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # ours is the progress the user sees
    quiet = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # transformers' GGUF reader draws its own bar
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
    except Exception as e:  # transformers raises many types for a file it cannot read
        raise TrainError(f"{gguf_path}: transformers cannot load it as a base model: {e}") from None
    finally:
        if quiet is None:
            del os.environ["TQDM_DISABLE"]
        else:
            os.environ["TQDM_DISABLE"] = quiet
    if model.config.model_type != "llama":
        raise TrainError(f"{gguf_path}: architecture {model.config.model_type!r}; LoRA training and export support "
                         "llama models (the edge SLM)")
    return model


def attach_lora(model: Any, config: TrainConfig) -> Any:
    """`model` wrapped in a PEFT LoRA of the config's rank, alpha and targets (A random from the torch seed, B 0)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)
    if config.activation_checkpointing:  # keep each layer's input only, recompute the rest in the backward pass
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    alpha: Any = config.alpha  # PEFT annotates an int; a float is what it computes alpha / r with
    lora = LoraConfig(r=config.rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=config.peft_targets,
                      bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def lora_state(model: Any) -> dict[str, Any]:
    """The trainable LoRA tensors (what a checkpoint saves), by parameter name."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def export_adapter(model: Any, base_gguf: Path, dtype: str) -> LoraAdapter:
    """The trained LoRA as a GGUF adapter for `base_gguf`, its arrays in `dtype` (f16 or f32)."""
    with tempfile.TemporaryDirectory(prefix="floe-peft-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT warns that the GGUF's folder holds no config.json: none is needed
        model.save_pretrained(tmp)
        adapter = import_peft(tmp, base_gguf)
    if dtype == "f16":
        half = {name: (a.astype(np.float16), b.astype(np.float16)) for name, (a, b) in adapter.pairs.items()}
        adapter = LoraAdapter(adapter.architecture, adapter.alpha, half)
    return adapter


def load_adapter_into(model: Any, adapter: LoraAdapter, config: TrainConfig) -> None:
    """Start training from `adapter` (a GGUF adapter of this run's rank and alpha, e.g. the federation's global one):
    its pairs replace the fresh LoRA weights, the q/k lora_b rows put back in HF's order."""
    import torch

    if adapter.rank != config.rank or adapter.alpha != config.alpha:
        raise TrainError(f"the initial adapter has rank {adapter.rank} and alpha {adapter.alpha}; this run trains "
                         f"rank {config.rank}, alpha {config.alpha}")
    heads = {"q_proj": model.config.num_attention_heads, "k_proj": model.config.num_key_value_heads}
    modules = {f"blk.{i}.{gguf}.weight": (i, peft) for i in range(model.config.num_hidden_layers)
               for peft, gguf in PEFT_MODULES.items()}
    params = dict(model.named_parameters())
    for name, (a, b) in adapter.pairs.items():
        if name not in modules:
            raise TrainError(f"the initial adapter adapts {name}, which this model does not have")
        layer, module = modules[name]
        part = "self_attn" if module in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
        prefix = f"base_model.model.model.layers.{layer}.{part}.{module}"
        if f"{prefix}.lora_A.default.weight" not in params:
            raise TrainError(f"the initial adapter adapts {name}, which this run does not train (targets)")
        if module in heads:
            b = rope_unpermute_rows(b, heads[module])
        with torch.no_grad():
            params[f"{prefix}.lora_A.default.weight"].copy_(torch.from_numpy(np.asarray(a, np.float32)))
            params[f"{prefix}.lora_B.default.weight"].copy_(torch.from_numpy(np.asarray(b, np.float32)))
