"""LoRA adapters in llama.cpp's GGUF LoRA format (what `llama_adapter_lora_init` loads and `convert_lora_to_gguf.py`
writes).

The file: metadata `general.type = "adapter"`, `adapter.type = "lora"`, `general.architecture` = the base model's,
`adapter.lora.alpha` (f32); for each adapted base tensor `<name>` two tensors `<name>.lora_a`, ggml shape [n_in, r],
and `<name>.lora_b`, ggml shape [r, n_out], f32 or f16. ggml lists dimensions fastest first, so as numpy (row-major)
arrays they are PEFT's lora_A weight (r, n_in) and lora_B weight (n_out, r), stored as they are. The update of a
base weight W (n_out, n_in) is s·B·A with s = user scale × alpha / r (llama.cpp's rule).

Reading goes through the native, hardened GGUF reader (bounds-checked, fuzzed), so a truncated or hostile file is an
`AdapterError`, never a crash or a hang; writing uses the `gguf` package's GGUFWriter and replaces the target
atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from .._native import GGUFError, GGUFFile
from ..files import write_atomic

__all__ = ["AdapterError", "LoraAdapter", "LoraPair", "GGML_F32", "GGML_F16", "open_gguf"]

PathLike = Union[str, "os.PathLike[str]"]
LoraPair = tuple[np.ndarray, np.ndarray]  # (A (r, n_in), B (n_out, r))

GGML_F32, GGML_F16 = 0, 1  # ggml_type ids of the two element types an adapter may use
_NUMPY_OF_GGML: dict[int, "np.dtype[Any]"] = {GGML_F32: np.dtype("<f4"), GGML_F16: np.dtype("<f2")}
_SUFFIXES = (".lora_a", ".lora_b")


class AdapterError(ValueError):
    """An adapter file or array that cannot be used: the message names the file, the tensor and the problem."""


@dataclass
class LoraAdapter:
    """A LoRA adapter: for each adapted base tensor (by its GGUF name, e.g. "blk.0.attn_q.weight") the pair
    (A (r, n_in), B (n_out, r)), float32 or float16, one rank r for all pairs."""

    architecture: str
    alpha: float
    pairs: dict[str, LoraPair] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        """The rank r shared by every pair (0 for an adapter without pairs)."""
        return next((int(a.shape[0]) for a, _ in self.pairs.values()), 0)

    @property
    def scale(self) -> float:
        """alpha / r: the factor llama.cpp applies to B·A at user scale 1."""
        return self.alpha / self.rank if self.rank else 0.0

    def validate(self, where: str = "adapter") -> None:
        """Raise AdapterError (prefixed with `where`) unless this adapter can be written and used."""
        if not self.architecture:
            raise AdapterError(f"{where}: no architecture")
        if not np.isfinite(self.alpha):
            raise AdapterError(f"{where}: adapter.lora.alpha is {self.alpha}")
        if not self.pairs:
            raise AdapterError(f"{where}: no LoRA tensors")
        rank = self.rank
        for name, (a, b) in self.pairs.items():
            _check_pair(where, name, a, b, rank)

    def write(self, path: PathLike) -> Path:
        """Write the adapter file at `path` (replaced atomically); returns the path. Needs the `gguf` package."""
        self.validate(str(path))
        try:
            import gguf
        except ImportError:
            raise AdapterError("writing an adapter needs the gguf package (pip install 'floe-edge[tools]')") from None

        def write_to(tmp: Path) -> None:
            writer = gguf.GGUFWriter(str(tmp), self.architecture)  # writes general.architecture
            writer.add_type("adapter")
            writer.add_string("adapter.type", "lora")
            writer.add_float32("adapter.lora.alpha", float(self.alpha))
            for name, (a, b) in self.pairs.items():
                writer.add_tensor(name + ".lora_a", np.ascontiguousarray(a))
                writer.add_tensor(name + ".lora_b", np.ascontiguousarray(b))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()

        return write_atomic(path, write_to, suffix=".gguf.tmp")

    @classmethod
    def read(cls, path: PathLike) -> "LoraAdapter":
        """Read and validate an adapter file (ours or one llama.cpp's converter wrote)."""
        where = str(path)
        gguf_file = open_gguf(path, where)
        meta = gguf_file.metadata
        _expect(meta, "general.type", "adapter", where, "not an adapter")
        _expect(meta, "adapter.type", "lora", where, "not a LoRA adapter")
        architecture = meta.get("general.architecture")
        if not isinstance(architecture, str) or not architecture:
            raise AdapterError(f"{where}: general.architecture is missing")
        alpha = meta.get("adapter.lora.alpha")
        if not isinstance(alpha, float):
            raise AdapterError(f"{where}: adapter.lora.alpha is missing or not a float ({alpha!r})")
        adapter = cls(architecture, alpha, _read_pairs(gguf_file, where))
        adapter.validate(where)
        return adapter

    def check_base(self, base_path: PathLike) -> None:
        """Raise AdapterError unless the base GGUF at `base_path` has this architecture and every adapted tensor,
        with the shape the pair expects (n_out, n_in)."""
        where = str(base_path)
        base = open_gguf(base_path, f"base model {where}")
        arch = base.metadata.get("general.architecture")
        if arch != self.architecture:
            raise AdapterError(f"adapter for architecture {self.architecture!r} does not fit base model {where} "
                               f"(architecture {arch!r})")
        shapes = {t["name"]: list(t["shape"]) for t in base.tensors}
        for name, (a, b) in self.pairs.items():
            if name not in shapes:
                raise AdapterError(f"base model {where} has no tensor {name!r} (another base model?)")
            want = [int(a.shape[1]), int(b.shape[0])]  # ggml order: [n_in, n_out]
            if shapes[name] != want:
                raise AdapterError(f"{name}: the adapter expects ggml shape {want}, base model {where} has "
                                   f"{shapes[name]} (another base model?)")


def open_gguf(path: PathLike, what: str) -> GGUFFile:
    """The GGUF file at `path`, opened by the hardened native reader; AdapterError naming `what` if it cannot be."""
    if not os.path.isfile(path):
        raise AdapterError(f"{what}: no such file")
    try:
        return GGUFFile(os.fspath(path))
    except GGUFError as e:
        raise AdapterError(f"{what}: not a valid GGUF file: {e}") from None


def _expect(meta: dict[str, Any], key: str, value: str, where: str, problem: str) -> None:
    if meta.get(key) != value:
        raise AdapterError(f"{where}: {problem} ({key} = {meta.get(key)!r}, expected {value!r})")


def _read_pairs(gguf_file: GGUFFile, where: str) -> dict[str, LoraPair]:
    halves: dict[str, dict[str, np.ndarray]] = {}
    for info in gguf_file.tensors:
        name = str(info["name"])
        suffix = next((s for s in _SUFFIXES if name.endswith(s)), None)
        if suffix is None:
            raise AdapterError(f"{where}: tensor {name!r} is not a LoRA tensor (.lora_a / .lora_b)")
        base = name[: -len(suffix)]
        if base.startswith("token_embd"):
            raise AdapterError(f"{where}: tensor {name!r}: adapters on the token embedding are not supported")
        dtype = _NUMPY_OF_GGML.get(int(info["type"]))
        if dtype is None:
            raise AdapterError(f"{where}: tensor {name!r} has ggml type {info['type']}; supported: f32 (0), f16 (1)")
        shape = [int(d) for d in info["shape"]]
        if len(shape) != 2:
            raise AdapterError(f"{where}: tensor {name!r} has {len(shape)} dimensions {shape}, expected 2")
        array = np.frombuffer(gguf_file.tensor_data(name), dtype=dtype).reshape(shape[1], shape[0])  # ggml [ne0, ne1]
        halves.setdefault(base, {})[suffix] = array.astype(dtype.newbyteorder("="))  # a copy: the file may close
    pairs: dict[str, LoraPair] = {}
    for base, found in halves.items():
        missing = [s for s in _SUFFIXES if s not in found]
        if missing:
            raise AdapterError(f"{where}: tensor {base + missing[0]!r} is missing (half of a LoRA pair)")
        pairs[base] = (found[".lora_a"], found[".lora_b"])
    return pairs


def _check_pair(where: str, name: str, a: np.ndarray, b: np.ndarray, rank: int) -> None:
    for half, array in (("lora_a", a), ("lora_b", b)):
        if not isinstance(array, np.ndarray) or array.ndim != 2:
            raise AdapterError(f"{where}: {name}.{half} must be a 2-D array, got {getattr(array, 'shape', array)}")
        if array.dtype not in (np.float32, np.float16):
            raise AdapterError(f"{where}: {name}.{half} has type {array.dtype}; supported: float32, float16")
        if not np.isfinite(array).all():
            raise AdapterError(f"{where}: {name}.{half} holds NaN or infinite values")
    if a.shape[0] != b.shape[1]:
        raise AdapterError(f"{where}: {name}: lora_a {a.shape} and lora_b {b.shape} disagree on the rank (numpy shapes "
                           f"must be A (r, n_in) and B (n_out, r))")
    if a.shape[0] != rank:
        raise AdapterError(f"{where}: {name} has rank {a.shape[0]}, other tensors rank {rank} (mixed ranks)")
    if rank < 1 or a.shape[1] < 1 or b.shape[0] < 1:
        raise AdapterError(f"{where}: {name}: empty lora_a {a.shape} / lora_b {b.shape}")
