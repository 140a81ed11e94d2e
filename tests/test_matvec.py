"""Quantized matvec/matmul of every variant against a float64 numpy evaluation of the same blocks."""

import os
import subprocess
import sys

import numpy as np
import pytest

from floe_edge import kernels

ACTIVATION = {"q4_0": "q8_0", "q4_1": "q8_1", "q8_0": "q8_0", "f16": "f32", "f32": "f32"}
SHAPES = [(1, 32), (7, 64), (16, 96), (33, 576), (100, 1536)]


def expected(w_buf: np.ndarray, qtype: str, rows: int, cols: int, x: np.ndarray) -> np.ndarray:
    """The exact result of the kernel's math: dequantized weights times dequantized (quantized) activations."""
    w = kernels.dequantize(w_buf, qtype, rows * cols).reshape(rows, cols).astype(np.float64)
    act = ACTIVATION[qtype]
    xs = x.reshape(-1, cols)
    if act != "f32":
        xs = np.stack([kernels.dequantize(kernels.quantize_activations(r, act), act, cols) for r in xs])
    y = xs.astype(np.float64) @ w.T
    if qtype == "q4_1":  # q8_1 carries s = d*sum(q) rounded to fp16: ggml's dot uses that rounded sum
        q = kernels.quantize_activations(x.reshape(-1, cols), "q8_1").reshape(xs.shape[0], -1, 36)
        d_s = q[:, :, :4].copy().view(np.float16).astype(np.float64)  # (n, blocks, 2): d, s
        exact_s = xs.reshape(xs.shape[0], -1, 32).sum(axis=2)
        m = w_buf.reshape(rows, -1, 20)[:, :, 2:4].copy().view(np.float16).astype(np.float64)[:, :, 0]
        y += (d_s[:, :, 1] - exact_s) @ m.T
    return y


def magnitude(w_buf, qtype, rows, cols, x) -> np.ndarray:
    w = np.abs(kernels.dequantize(w_buf, qtype, rows * cols).reshape(rows, cols).astype(np.float64))
    return np.abs(x.reshape(-1, cols)).astype(np.float64) @ w.T


@pytest.mark.parametrize("qtype", sorted(ACTIVATION))
@pytest.mark.parametrize("variant", kernels.variants())
@pytest.mark.parametrize("rows, cols", SHAPES)
def test_matvec(qtype: str, variant: str, rows: int, cols: int, rng: np.random.Generator) -> None:
    w_buf = kernels.quantize(rng.standard_normal((rows, cols)).astype(np.float32), qtype)
    x = rng.standard_normal(cols).astype(np.float32)
    got = kernels.matvec(w_buf, qtype, rows, cols, x, variant=variant)
    assert got.shape == (rows,) and got.dtype == np.float32
    tol = 2e-5 * magnitude(w_buf, qtype, rows, cols, x)[0] + 1e-6
    np.testing.assert_array_less(np.abs(got - expected(w_buf, qtype, rows, cols, x)[0]), tol)


@pytest.mark.parametrize("qtype", sorted(ACTIVATION))
@pytest.mark.parametrize("variant", kernels.variants())
@pytest.mark.parametrize("n", [1, 2, 5, 16, 64])
def test_matmul(qtype: str, variant: str, n: int, rng: np.random.Generator) -> None:
    rows, cols = 67, 256
    w_buf = kernels.quantize(rng.standard_normal((rows, cols)).astype(np.float32), qtype)
    x = rng.standard_normal((n, cols)).astype(np.float32)
    got = kernels.matmul(w_buf, qtype, rows, cols, x, variant=variant, threads=2)
    assert got.shape == (n, rows)
    tol = 2e-5 * magnitude(w_buf, qtype, rows, cols, x) + 1e-6
    np.testing.assert_array_less(np.abs(got - expected(w_buf, qtype, rows, cols, x)), tol)
    # each row of the product is the matvec of that activation row
    for i in (0, n - 1):
        np.testing.assert_allclose(got[i], kernels.matvec(w_buf, qtype, rows, cols, x[i], variant=variant),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_threads_give_same_result(threads: int, rng: np.random.Generator) -> None:
    rows, cols = 1000, 576
    w_buf = kernels.quantize(rng.standard_normal((rows, cols)).astype(np.float32), "q4_1")
    x = rng.standard_normal(cols).astype(np.float32)
    one = kernels.matvec(w_buf, "q4_1", rows, cols, x, threads=1)
    np.testing.assert_allclose(kernels.matvec(w_buf, "q4_1", rows, cols, x, threads=threads), one,
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(qtype="q4_0", cols=48), "multiple of 32"),
        (dict(qtype="q9_9"), "unknown qtype"),
        (dict(qtype="q8_1"), "activation format"),
        (dict(rows=0), "positive"),
        (dict(w=np.zeros(10, np.uint8)), "w_buf"),
        (dict(w=np.zeros(4 * 36, np.float32)), "uint8"),
        (dict(x=np.zeros(64, np.float64)), "float32"),
        (dict(x=np.zeros(32, np.float32)), "x has 32"),
        (dict(threads=0), "threads"),
        (dict(variant="nope"), "not available"),
    ],
)
def test_matvec_bad_input(kwargs: dict, message: str) -> None:
    args = dict(w=np.zeros(4 * 36, np.uint8), qtype="q4_0", rows=4, cols=64, x=np.zeros(64, np.float32),
                variant=None, threads=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        kernels.matvec(args["w"], args["qtype"], args["rows"], args["cols"], args["x"], variant=args["variant"],
                       threads=args["threads"])


def test_matmul_bad_shape() -> None:
    w = np.zeros(4 * 36, np.uint8)
    with pytest.raises(ValueError, match="shape"):
        kernels.matmul(w, "q4_0", 4, 64, np.zeros(64, np.float32))
    with pytest.raises(ValueError, match="shape"):
        kernels.matmul(w, "q4_0", 4, 64, np.zeros((2, 32), np.float32))


# The VNNI variants need a CPU feature: where it is missing the test says so (the native tests still run the
# VNNI code path there, emulated: tests/native/vnni_emu.cpp).
VNNI = {"avx512_vnni": "avx512vnni", "avx_vnni": "avxvnni"}


@pytest.mark.parametrize("variant", sorted(VNNI))
@pytest.mark.parametrize("qtype", ["q4_0", "q4_1", "q8_0"])
@pytest.mark.parametrize("blocks", [1, 3, 5, 6, 7, 18])
def test_vnni_exact_at_int8_extremes(variant: str, qtype: str, blocks: int, rng: np.random.Generator) -> None:
    if variant not in kernels.variants():
        feature = VNNI[variant]
        why = "is not compiled in" if kernels.cpu_features().get(feature) else f"needs {feature}, which this CPU lacks"
        pytest.skip(f"{variant} {why}")
    rows, cols = 13, 32 * blocks
    # integer activations with one +-127 per block: d = 1, so the quantized values are the inputs exactly
    x = rng.integers(-127, 128, cols).astype(np.float32)
    x[::32] = np.where(np.arange(blocks) % 2, -127.0, 127.0)
    x[1:32] = -127.0 if blocks > 1 else x[1:32]
    w_buf = kernels.quantize(rng.standard_normal((rows, cols)).astype(np.float32), qtype)
    if qtype == "q8_0":  # every weight at -128 or 127 in the first rows: the bytes the quantizer never writes
        blk = w_buf.reshape(rows, blocks, 34)
        blk[0, :, 2:] = np.uint8(0x80)
        blk[1, :, 2:] = np.uint8(0x7F)
        blk[2, :, 2::2] = np.uint8(0x80)
    want = kernels.matvec(w_buf, qtype, rows, cols, x, variant="ref")
    got = kernels.matvec(w_buf, qtype, rows, cols, x, variant=variant)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6 * float(np.abs(want).max()))


def run_with_env(env: dict[str, str], code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("variant", kernels.variants())
def test_force_variant_selects_it(variant: str) -> None:
    code = "from floe_edge import kernels; print(kernels.active_variant())"
    out = run_with_env({"FLOE_FORCE_VARIANT": variant}, code)
    assert out.returncode == 0 and out.stdout.strip() == variant, out.stderr


def test_force_variant_unknown_is_a_clear_error() -> None:
    out = run_with_env({"FLOE_FORCE_VARIANT": "sse9"}, "from floe_edge import kernels; kernels.active_variant()")
    assert out.returncode != 0
    assert "FLOE_FORCE_VARIANT=sse9: not a variant this CPU can run" in out.stderr
    assert ", ".join(kernels.variants()) in out.stderr
