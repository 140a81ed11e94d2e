"""Quantization is byte-identical to the gguf package's reference quantizers (= ggml's *_ref functions)."""

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from floe_edge import kernels

GGUF_TYPES = {
    "q4_0": gguf.GGMLQuantizationType.Q4_0,
    "q4_1": gguf.GGMLQuantizationType.Q4_1,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}


def gguf_reference(x: np.ndarray, qtype: str) -> np.ndarray:
    """gguf.quants' bytes, with three documented differences, all of which decode to the same values. Two are
    differences from ggml's C reference, which we follow, in the sign of a zero:
    - q4_0, a block of zeros: ggml computes d = max / -8 with max starting at +0.0, giving d = -0.0 (0x8000) even
      for a block of -0.0 values, where gguf's numpy takes the signed -0.0 and writes +0.0;
    - q4_1, a block whose minimum is zero: ggml keeps the first zero of the block (`if (v < min) min = v`), where
      numpy's min reduction returns one of the zeros in an order of its own."""
    want = gguf_quantize(x.reshape(1, -1), GGUF_TYPES[qtype]).reshape(-1).copy()
    blocks_x = x.reshape(-1, 32)
    if qtype == "q4_0":
        blocks = want.reshape(-1, 18)
        zero = np.all(blocks_x == 0, axis=1)
        blocks[zero, 0:2] = np.array([0, 0x80], np.uint8)
    if qtype == "q4_1":
        blocks = want.reshape(-1, 20)
        for b, xs in enumerate(blocks_x):
            if xs.min() == 0:
                first_zero = xs[np.flatnonzero(xs == 0)[0]]
                blocks[b, 2:4] = np.array([0, 0x80 if np.signbit(first_zero) else 0], np.uint8)
    # - a block whose scale d is subnormal: 1 / d overflows to inf, x * id is inf or NaN, and both ggml and numpy
    #   convert that to an integer in a way of the platform's (x86 and aarch64 differ); d is 0 in fp16, so the quants
    #   do not matter, and we define them with id = 0: q4_0 holds 8, q4_1 and q8_0 hold 0.
    layout = {"q4_0": (18, 2, 0x88), "q4_1": (20, 4, 0x00), "q8_0": (34, 2, 0x00)}
    if qtype in layout:
        size, head, fill = layout[qtype]
        blocks = want.reshape(-1, size)
        for b, xs in enumerate(blocks_x.astype(np.float32)):
            d = float(np.float32(np.abs(xs).max()) / np.float32(127)) if qtype == "q8_0" else \
                float((np.float32(xs.max()) - np.float32(xs.min())) / np.float32(15)) if qtype == "q4_1" else \
                float(np.float32(xs[np.argmax(np.abs(xs))]) / np.float32(-8))
            with np.errstate(over="ignore"):
                overflows = d != 0 and not np.isfinite(np.float32(1) / np.float32(d))
            if overflows:
                blocks[b, head:] = fill
    return want


def edge_cases() -> list[np.ndarray]:
    ties = np.array([127.0] + [(k + 0.5) * (-1) ** k for k in range(31)], dtype=np.float32)  # roundf ties
    return [
        np.zeros(64, np.float32),
        -np.zeros(32, np.float32),
        np.array([0.0] + [-0.0] * 31, np.float32),  # q4_1 min: the first zero, whatever fmin does (aarch64 FMINNM)
        np.array([-0.0] + [0.0] * 31, np.float32),
        np.full(32, 7.25, np.float32),  # constant block: q4_1 d == 0
        np.array([1e-30] * 32, np.float32),  # scale underflows fp16
        np.full(32, 1.880791e-37, np.float32),  # q8_0: 1/d overflows to inf (inf -> int8 differs on aarch64)
        np.array([0.0] + [-2.3509887e-38] * 31, np.float32),  # q4_1 too: (x - min) * inf is inf or NaN
        np.array([-2.3509887e-38] + [0.0] * 31, np.float32),  # q4_0: d = max / -8 subnormal
        np.array([6.0e4, -6.0e4] * 16, np.float32),  # near fp16 max
        np.linspace(-1, 1, 96, dtype=np.float32),
        ties,
        np.array([-8.0] + [1.0] * 31, np.float32),  # q4_0: negative extreme sets the sign of d
    ]


@pytest.mark.parametrize("qtype", sorted(GGUF_TYPES))
@pytest.mark.parametrize("variant", kernels.variants())
def test_quantize_matches_gguf(qtype: str, variant: str, rng: np.random.Generator) -> None:
    for x in edge_cases() + [rng.standard_normal(4096).astype(np.float32) * s for s in (1e-3, 1.0, 300.0)]:
        want = gguf_reference(x, qtype)
        got = kernels.quantize(x, qtype, variant=variant)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("qtype", sorted(GGUF_TYPES))
def test_dequantize_matches_gguf(qtype: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((8, 256)).astype(np.float32)
    buf = kernels.quantize(x, qtype)
    want = gguf_dequantize(buf.reshape(8, -1), GGUF_TYPES[qtype]).reshape(-1)
    np.testing.assert_array_equal(kernels.dequantize(buf, qtype, x.size), want)


@given(
    arrays(np.float32, st.sampled_from([32, 64, 160]), elements=st.floats(-1e4, 1e4, width=32)),
    st.sampled_from(sorted(GGUF_TYPES)),
)
@settings(max_examples=200, deadline=None)
def test_quantize_property(x: np.ndarray, qtype: str) -> None:
    want = gguf_reference(x, qtype)
    for variant in kernels.variants():
        np.testing.assert_array_equal(kernels.quantize(x, qtype, variant=variant), want)


def numpy_activations(x: np.ndarray, with_sum: bool) -> np.ndarray:
    """ggml's SIMD quantize_row_q8_0/q8_1 in numpy: d = amax/127, q = rint(x * (127/amax)) (half to even),
    q8_1 adds s = d * sum(q); scales as fp16."""
    blocks = x.reshape(-1, 32)
    amax = np.abs(blocks).max(axis=1, keepdims=True)
    d = amax / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(amax == 0, np.float32(0), np.float32(127) / amax).astype(np.float32)
    q = np.rint(blocks * inv).astype(np.int8)
    parts = [d.astype(np.float16).view(np.uint8)]
    if with_sum:
        s = (q.astype(np.int32).sum(axis=1, keepdims=True).astype(np.float32) * d).astype(np.float16)
        parts.append(s.view(np.uint8))
    return np.concatenate(parts + [q.view(np.uint8)], axis=1).reshape(-1)


@pytest.mark.parametrize("variant", kernels.variants())
@pytest.mark.parametrize("qtype", ["q8_0", "q8_1"])
def test_activation_quantizer_matches_numpy(variant: str, qtype: str, rng: np.random.Generator) -> None:
    for x in edge_cases() + [rng.standard_normal(2048).astype(np.float32) * 5]:
        want = numpy_activations(x, qtype == "q8_1")
        np.testing.assert_array_equal(kernels.quantize_activations(x, qtype, variant=variant), want)
    np.testing.assert_array_equal(kernels.quantize(x, "q8_1"), numpy_activations(x, True))


def test_activation_ties_round_to_even() -> None:
    x = np.array([127.0, 2.5, -2.5, 3.5, 0.5] + [0.0] * 27, np.float32)  # scale 1: exact ties
    q = kernels.quantize_activations(x, "q8_0")[2:7].view(np.int8)
    assert q.tolist() == [127, 2, -2, 4, 0]
    w = kernels.quantize(x, "q8_0")[2:7].view(np.int8)  # weights: ggml's reference rounds half away from zero
    assert w.tolist() == [127, 3, -3, 4, 1]


def test_f16_matches_numpy(rng: np.random.Generator) -> None:
    x = np.concatenate([rng.standard_normal(1000) * 1e3, [65519.0, 65520.0, 1e-8, -0.0, np.inf]]).astype(np.float32)
    with np.errstate(over="ignore"):  # 65520 overflows to inf on purpose
        want = x.astype(np.float16)
    np.testing.assert_array_equal(kernels.quantize(x, "f16"), want.view(np.uint8))
    back = kernels.dequantize(kernels.quantize(x, "f16"), "f16", x.size)
    np.testing.assert_array_equal(back, want.astype(np.float32))


def test_row_bytes() -> None:
    assert kernels.row_bytes("q4_0", 64) == 36
    assert kernels.row_bytes("q8_1", 32) == 36
    with pytest.raises(ValueError, match="multiple of 32"):
        kernels.row_bytes("q4_1", 33)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: kernels.quantize(np.zeros(32, np.float64), "q8_0"), "float32"),
        (lambda: kernels.quantize(np.zeros(33, np.float32), "q8_0"), "multiple of 32"),
        (lambda: kernels.quantize(np.zeros(32, np.float32), "q5_k"), "unknown qtype"),
        (lambda: kernels.quantize(np.zeros((32, 2), np.float32)[:, 0], "q8_0"), "C-contiguous"),
        (lambda: kernels.quantize(np.zeros(32, ">f4"), "q8_0"), "float32"),
        (lambda: kernels.quantize(np.zeros(32, np.float32), "q8_0", variant="sse9"), "not available"),
        (lambda: kernels.dequantize(np.zeros(17, np.uint8), "q4_0", 32), "expected 18"),
        (lambda: kernels.dequantize(np.zeros(18, np.int8), "q4_0", 32), "uint8"),
        (lambda: kernels.dequantize(np.zeros(18, np.uint8), "q4_0", 31), "multiple of 32"),
    ],
)
def test_bad_input_raises_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
