"""Personalization: the global adapter a device started from plus its personal residual, both in the AdapterStore,
stacked on the native decoder, run exactly as the adapter the device trained (no torch needed: random factors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from floe_edge import NativeSLM
from floe_edge.adapters import LoraAdapter
from floe_edge.adapters.store import AdapterStore
from floe_edge.fl.adapters import delta_factors
from floe_edge.fl.personal import residual_factors, store_personal
from floe_edge.fl.rounds import projection_names
from floe_edge.make_slm import make_slm


@pytest.fixture(scope="module")
def tiny(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_slm(smollm2_path, 2, tmp_path_factory.mktemp("tiny") / "tiny.gguf")


def factors(tiny: Path, seed: int, rank: int, targets: tuple[str, ...]) -> dict:
    from floe_edge.adapters.lora_file import open_gguf

    shapes = {t["name"]: list(t["shape"]) for t in open_gguf(tiny, "base").tensors}  # ggml order: (n_in, n_out)
    rng = np.random.default_rng(seed)
    return {n: (rng.standard_normal((rank, shapes[n][0])) * 0.05, rng.standard_normal((shapes[n][1], rank)) * 0.05)
            for n in projection_names(targets, 2)}


def test_residual_is_exact_in_delta_w() -> None:
    rng = np.random.default_rng(0)
    start = {"x": (rng.standard_normal((4, 9)), rng.standard_normal((7, 4)))}
    trained = {"x": (rng.standard_normal((4, 9)), rng.standard_normal((7, 4))),
               "y": (rng.standard_normal((4, 9)), rng.standard_normal((7, 4)))}
    res = residual_factors(start, trained)
    np.testing.assert_allclose(res["x"][1] @ res["x"][0], trained["x"][1] @ trained["x"][0]
                               - start["x"][1] @ start["x"][0], atol=1e-12)
    np.testing.assert_allclose(res["y"][1] @ res["y"][0], trained["y"][1] @ trained["y"][0], atol=1e-12)
    assert res["x"][0].shape == (8, 9) and res["y"][1].shape == (7, 8)


def test_global_plus_personal_from_the_store_runs_as_the_trained_adapter(tiny: Path, tmp_path: Path) -> None:
    start = factors(tiny, 1, 8, ("q", "v"))
    trained = factors(tiny, 2, 8, ("q", "k", "v", "o"))  # the device also trained k and o
    store = AdapterStore(tmp_path / "store")
    g, p = store_personal(store, "rpi5", "u1", tiny, "llama", start, trained, 8, 16.0, tmp_path / "work")
    assert g == 1 and p == 1
    glob, mine = store.active("rpi5", "fl-global"), store.active("rpi5", "fl-personal-u1")
    assert glob is not None and mine is not None and LoraAdapter.read(mine).rank == 16
    from floe_edge.fl.adapters import adapter_from_factors

    whole = adapter_from_factors("llama", trained, 8, 16.0).write(tmp_path / "trained.gguf")
    ids = list(range(1, 40))
    with NativeSLM(tiny, threads=1, n_ctx=64) as slm:
        base = slm.eval(ids).copy()
        slm.reset()
        slm.set_adapters([(slm.load_adapter(whole), 1.0)])
        want = slm.eval(ids).copy()
        slm.reset()
        slm.set_adapters([(slm.load_adapter(glob), 1.0), (slm.load_adapter(mine), 1.0)])
        got = slm.eval(ids).copy()
    assert np.abs(want - base).max() > 1e-2  # the adapter matters
    np.testing.assert_allclose(got, want, atol=2e-3 * np.abs(want).max())
    assert sorted(delta_factors(LoraAdapter.read(mine))) == sorted(trained)
