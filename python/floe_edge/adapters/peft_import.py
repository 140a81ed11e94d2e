"""Import a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) of a llama-architecture model as a
GGUF LoRA adapter for the same model's GGUF file.

No torch: the weights are read with safetensors' numpy API. What the conversion does (as llama.cpp's
convert_lora_to_gguf.py does for llama models):
- names: `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` -> `blk.{i}.attn_q.weight` (.lora_a);
  k, v, o_proj -> attn_k, attn_v, attn_output; mlp gate, up, down_proj -> ffn_gate, ffn_up, ffn_down;
- arrays: lora_A (r, n_in) and lora_B (n_out, r) as they are, except that the rows of q and k lora_B get the
  permutation the GGUF converter applies to the q and k weights for its RoPE layout (n_head heads for q,
  n_head_kv for k, read from the base GGUF);
- scale: alpha / r as PEFT's; rsLoRA's alpha / sqrt(r) becomes alpha' = alpha·sqrt(r).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Union

import numpy as np

from .lora_file import AdapterError, LoraAdapter, open_gguf

__all__ = ["PEFT_MODULES", "import_peft", "rope_permute_rows", "rope_unpermute_rows"]

PathLike = Union[str, "os.PathLike[str]"]

# PEFT module name -> GGUF tensor name in block i (llama architecture)
PEFT_MODULES = {
    "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
    "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
}  # fmt: skip
_TENSOR = re.compile(r"base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight")
_SUPPORTED_ARCHITECTURES = ("llama",)  # where the q/k permutation above is what the GGUF converter does


def rope_permute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """The GGUF converter's row order for a llama q/k projection: within each head, the first and second halves
    of the rows (HF's rotate-half layout) are interleaved (ggml's pairwise RoPE)."""
    n = rows.shape[0]
    if n_head < 1 or n % (2 * n_head):
        raise AdapterError(f"cannot split {n} rows into {n_head} heads of pairs")
    per_half = n // n_head // 2
    return rows.reshape(n_head, 2, per_half, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def rope_unpermute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of `rope_permute_rows`: a GGUF q/k row order back to HF's (to train on from a GGUF adapter)."""
    n = rows.shape[0]
    if n_head < 1 or n % (2 * n_head):
        raise AdapterError(f"cannot split {n} rows into {n_head} heads of pairs")
    per_half = n // n_head // 2
    return rows.reshape(n_head, per_half, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def import_peft(peft_dir: PathLike, base_gguf: PathLike) -> LoraAdapter:
    """The GGUF LoRA adapter equivalent to the PEFT adapter in `peft_dir`, checked against the base GGUF."""
    peft_dir = Path(peft_dir)
    config = _read_config(peft_dir / "adapter_config.json")
    tensors = _read_safetensors(peft_dir / "adapter_model.safetensors")
    architecture, n_head, n_head_kv = _base_heads(base_gguf)
    halves: dict[str, dict[str, np.ndarray]] = {}
    targets = config.get("target_modules")
    for name, array in tensors.items():
        match = _TENSOR.fullmatch(name)
        if match is None or match.group(2) not in PEFT_MODULES:
            raise AdapterError(f"{peft_dir}: tensor {name!r} is not a LoRA weight of a llama projection "
                               f"({', '.join(PEFT_MODULES)})")
        layer, module, half = int(match.group(1)), match.group(2), match.group(3)
        if isinstance(targets, list) and module not in targets:
            raise AdapterError(f"{peft_dir}: tensor {name!r} adapts {module}, not in target_modules {targets}")
        if array.dtype not in (np.float32, np.float16):
            array = array.astype(np.float32)
        if half == "B" and module in ("q_proj", "k_proj"):
            array = rope_permute_rows(array, n_head if module == "q_proj" else n_head_kv)
        halves.setdefault(f"blk.{layer}.{PEFT_MODULES[module]}.weight", {})[half] = np.ascontiguousarray(array)
    pairs = {}
    for base, found in halves.items():
        if set(found) != {"A", "B"}:
            raise AdapterError(f"{peft_dir}: {base}: lora_{'B' if 'A' in found else 'A'} is missing")
        pairs[base] = (found["A"], found["B"])
    if not pairs:
        raise AdapterError(f"{peft_dir}: adapter_model.safetensors holds no LoRA tensors")
    adapter = LoraAdapter(architecture, _gguf_alpha(config), pairs)
    if adapter.rank != config["r"]:
        raise AdapterError(f"{peft_dir}: the tensors have rank {adapter.rank}, adapter_config.json says r = "
                           f"{config['r']}")
    adapter.validate(str(peft_dir))
    adapter.check_base(base_gguf)
    return adapter


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise AdapterError(f"{path}: no such file (a PEFT adapter directory holds adapter_config.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AdapterError(f"{path}: cannot read: {e}") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{path}: expected a JSON object")
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise AdapterError(f"{path}: {key} must be a positive number, got {value!r}")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise AdapterError(f"{path}: {key} (per-module ranks or alphas) is not supported: one rank and alpha")
    if config.get("use_dora"):
        raise AdapterError(f"{path}: DoRA adapters (use_dora) are not supported")
    if config.get("bias", "none") != "none":
        raise AdapterError(f"{path}: bias = {config['bias']!r} is not supported (only 'none')")
    return config


def _gguf_alpha(config: dict[str, Any]) -> float:
    """The alpha that gives llama.cpp's scale alpha / r the value PEFT uses."""
    alpha, r = float(config["lora_alpha"]), float(config["r"])
    return alpha * math.sqrt(r) if config.get("use_rslora") else alpha


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise AdapterError("importing a PEFT adapter needs the safetensors package (pip install safetensors)") from None
    if not path.is_file():
        raise AdapterError(f"{path}: no such file (a PEFT adapter directory holds adapter_model.safetensors)")
    try:
        return dict(load_file(str(path)))
    except Exception as e:  # safetensors raises its own error types (and TypeError for bf16 in numpy)
        raise AdapterError(f"{path}: cannot read: {e}") from None


def _base_heads(base_gguf: PathLike) -> tuple[str, int, int]:
    """(architecture, n_head, n_head_kv) of the base GGUF."""
    meta = open_gguf(base_gguf, f"base model {base_gguf}").metadata
    arch = meta.get("general.architecture")
    if arch not in _SUPPORTED_ARCHITECTURES:
        raise AdapterError(f"base model {base_gguf}: architecture {arch!r}; PEFT import supports "
                           f"{', '.join(_SUPPORTED_ARCHITECTURES)}")
    n_head = meta.get(f"{arch}.attention.head_count")
    n_head_kv = meta.get(f"{arch}.attention.head_count_kv", n_head)
    if not isinstance(n_head, int) or not isinstance(n_head_kv, int) or n_head < 1 or n_head_kv < 1:
        raise AdapterError(f"base model {base_gguf}: bad head counts {n_head!r} / {n_head_kv!r}")
    return str(arch), n_head, n_head_kv
