"""f32 ops of every variant against numpy implementations of the same math."""

import numpy as np
import pytest

from floe_edge import kernels

LENGTHS = [1, 7, 8, 17, 64, 576, 1536]


@pytest.mark.parametrize("variant", kernels.variants())
@pytest.mark.parametrize("n", LENGTHS)
def test_rmsnorm(variant: str, n: int, rng: np.random.Generator) -> None:
    x = rng.standard_normal(n).astype(np.float32) * 3
    w = rng.standard_normal(n).astype(np.float32)
    want = x / np.sqrt(np.mean(x.astype(np.float64) ** 2) + 1e-5) * w
    np.testing.assert_allclose(kernels.rmsnorm(x, w, 1e-5, variant=variant), want, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("variant", kernels.variants())
@pytest.mark.parametrize("n", LENGTHS)
def test_softmax(variant: str, n: int, rng: np.random.Generator) -> None:
    x = rng.standard_normal(n).astype(np.float32) * 10
    if n > 3:
        x[:3] = [-np.inf, 85.0, -85.0]
    e = np.exp(x.astype(np.float64) - x.max())
    got = kernels.softmax(x, variant=variant)
    np.testing.assert_allclose(got, e / e.sum(), rtol=2e-5, atol=1e-30)
    assert np.isclose(got.sum(), 1.0, atol=1e-5)


@pytest.mark.parametrize("variant", kernels.variants())
@pytest.mark.parametrize("n", LENGTHS)
def test_swiglu(variant: str, n: int, rng: np.random.Generator) -> None:
    g = rng.standard_normal(n).astype(np.float32) * 6
    u = rng.standard_normal(n).astype(np.float32)
    if n > 3:
        g[:3] = [-100.0, 100.0, 0.0]
    g64 = g.astype(np.float64)
    want = g64 / (1 + np.exp(-g64)) * u
    np.testing.assert_allclose(kernels.swiglu(g, u, variant=variant), want, rtol=2e-5, atol=1e-30)


def numpy_rope(x: np.ndarray, pos: int, base: float, neox: bool) -> np.ndarray:
    """theta_i = pos * base^(-2i/d), computed as llama.cpp does: theta *= theta_scale in float32, so the angle of the
    last pairs drifts by ~1e-6 relative from the exact value (the drift is part of the specification)."""
    d = x.shape[1]
    scale = np.float32(base) ** np.float32(-2.0 / d)
    theta = np.empty(d // 2, np.float32)
    t = np.float32(pos)
    for i in range(d // 2):
        theta[i] = t
        t = np.float32(t * scale)
    c, s = np.cos(theta.astype(np.float64)), np.sin(theta.astype(np.float64))
    out = x.astype(np.float64).copy()
    i0 = np.arange(d // 2) if neox else 2 * np.arange(d // 2)
    i1 = i0 + d // 2 if neox else i0 + 1
    out[:, i0] = x[:, i0] * c - x[:, i1] * s
    out[:, i1] = x[:, i0] * s + x[:, i1] * c
    return out


@pytest.mark.parametrize("variant", kernels.variants())
@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize("head_dim", [2, 6, 64, 128])
def test_rope(variant: str, neox: bool, head_dim: int, rng: np.random.Generator) -> None:
    x = rng.standard_normal((3, head_dim)).astype(np.float32)
    for pos in (0, 1, 17, 2047):
        got = kernels.rope(x, pos, 10000.0, neox, variant=variant)
        np.testing.assert_allclose(got, numpy_rope(x, pos, 10000.0, neox), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(kernels.rope(x, 0, variant=variant), x)


def test_ops_bad_input() -> None:
    with pytest.raises(ValueError, match="float32"):
        kernels.softmax(np.zeros(4, np.float64))
    with pytest.raises(ValueError, match="empty"):
        kernels.softmax(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="weight"):
        kernels.rmsnorm(np.zeros(4, np.float32), np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="up"):
        kernels.swiglu(np.zeros(4, np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="even head_dim"):
        kernels.rope(np.zeros((2, 5), np.float32), 1)
