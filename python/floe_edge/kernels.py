"""Native kernels: block quantization bit-compatible with ggml, quantized matvec/matmul, f32 ops.

The variant (ref, avx2, avx_vnni, avx512, avx512_vnni, neon, neon_dotprod, neon_i8mm) is chosen once at import
from the CPU's features; ``FLOE_FORCE_REF=1`` forces the scalar reference. Every function takes ``variant=`` to run
a specific one.
Arrays are never converted silently: wrong dtype, layout or size raises ValueError.
"""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import numpy.typing as npt

from . import _native

QType = Literal["f32", "f16", "q4_0", "q4_1", "q8_0", "q8_1"]
QTYPES: tuple[str, ...] = ("f32", "f16", "q4_0", "q4_1", "q8_0", "q8_1")

__all__ = [
    "QTYPES",
    "active_variant",
    "cpu_features",
    "dequantize",
    "matmul",
    "matvec",
    "quantize",
    "quantize_activations",
    "rmsnorm",
    "rope",
    "row_bytes",
    "softmax",
    "swiglu",
    "variants",
]

_BLOCK = {"f32": (1, 4), "f16": (1, 2), "q4_0": (32, 18), "q4_1": (32, 20), "q8_0": (32, 34), "q8_1": (32, 36)}


def variants() -> list[str]:
    """Kernel variants this CPU can run, best first ('ref' is always last)."""
    return _native.variants()


def active_variant() -> str:
    """The variant used when none is given."""
    return _native.active_variant()


def cpu_features() -> dict[str, object]:
    """What the runtime probe saw (cpuid + XGETBV on x86, getauxval HWCAP on ARM)."""
    return _native.cpu_features()


def row_bytes(qtype: QType, n: int) -> int:
    """Bytes taken by n values of qtype (n a multiple of the block size)."""
    if qtype not in _BLOCK:
        raise ValueError(f"unknown qtype {qtype!r} (expected one of {', '.join(QTYPES)})")
    block, size = _BLOCK[qtype]
    if n % block:
        raise ValueError(f"{qtype} needs a multiple of {block} values, got {n}")
    return n // block * size


def quantize(x: npt.NDArray[np.float32], qtype: QType, variant: Optional[str] = None) -> npt.NDArray[np.uint8]:
    """Quantize float32 values (any shape, flattened in C order) to ggml blocks, as ggml's reference quantizers
    (byte-identical to gguf.quants). q8_1, an activation-only format, uses the activation quantizer."""
    return _native.quantize(x, qtype, variant)


def quantize_activations(
    x: npt.NDArray[np.float32], qtype: Literal["q8_0", "q8_1"], variant: Optional[str] = None
) -> npt.NDArray[np.uint8]:
    """Quantize activations as matvec does before the dot products, and as ggml's SIMD quantize_row_q8_0/q8_1:
    q = round-half-to-even(x * 127 / amax). Ties are frequent in real activations, so this (not ggml's scalar
    reference, which rounds half away from zero) is what makes results track llama.cpp."""
    return _native.quantize_activations(x, qtype, variant)


def dequantize(buf: npt.NDArray[np.uint8], qtype: QType, n: int) -> npt.NDArray[np.float32]:
    """Decode n values from ggml blocks."""
    return _native.dequantize(buf, qtype, n)


def matvec(w_buf: npt.NDArray[np.uint8], qtype: QType, rows: int, cols: int, x: npt.NDArray[np.float32],
           variant: Optional[str] = None, threads: int = 1) -> npt.NDArray[np.float32]:
    """y[rows] = W[rows, cols] @ x, activations quantized once as ggml does (q8_0, or q8_1 for q4_1)."""
    return _native.matvec(w_buf, qtype, rows, cols, x, variant, threads)


def matmul(w_buf: npt.NDArray[np.uint8], qtype: QType, rows: int, cols: int, x: npt.NDArray[np.float32],
           variant: Optional[str] = None, threads: int = 1) -> npt.NDArray[np.float32]:
    """Y[n, rows] = X[n, cols] @ W.T for n activation rows (prefill, chunk verification)."""
    return _native.matmul(w_buf, qtype, rows, cols, x, variant, threads)


def rmsnorm(
    x: npt.NDArray[np.float32], weight: npt.NDArray[np.float32], eps: float = 1e-5, variant: Optional[str] = None
) -> npt.NDArray[np.float32]:
    return _native.rmsnorm(x, weight, eps, variant)


def softmax(x: npt.NDArray[np.float32], variant: Optional[str] = None) -> npt.NDArray[np.float32]:
    return _native.softmax(x, variant)


def swiglu(
    gate: npt.NDArray[np.float32], up: npt.NDArray[np.float32], variant: Optional[str] = None
) -> npt.NDArray[np.float32]:
    """silu(gate) * up."""
    return _native.swiglu(gate, up, variant)


def rope(
    x: npt.NDArray[np.float32], pos: int, base: float = 10000.0, neox: bool = False, variant: Optional[str] = None
) -> npt.NDArray[np.float32]:
    """Rotary embedding of x[n_heads, head_dim] at position pos (neox: rotate halves instead of pairs)."""
    return _native.rope(x, pos, base, neox, variant)
