"""Edge statistics computed once per position and passed to the fusion give exactly the fusion without them."""

from __future__ import annotations

import numpy as np
import pytest

from floe_edge import kernels
from floe_edge.fusion import Fuser

WEIGHTS = ["assistant", "adaptive", (0.5, 0.5), (1.0, 0.0)]


@pytest.mark.parametrize("variant", kernels.variants())
@pytest.mark.parametrize("mode", ["loglinear", "linear"])
@pytest.mark.parametrize("weights", WEIGHTS)
def test_fuse_with_known_edge_stats_is_the_same(variant: str, mode: str, weights: object,
                                                rng: np.random.Generator) -> None:
    for V in (50, 49152):
        for normalize in (True, False):
            f = Fuser(V, mode=mode, weights=weights, top_k=8, normalize=normalize, variant=variant)  # type: ignore
            for trial in range(6):
                x = (rng.standard_normal(V) * (0.5, 3.0, 10.0)[trial % 3]).astype(np.float32)
                if trial % 2:
                    x[:3] = x.max()  # ties at the top
                ids = rng.choice(V, 8, replace=False).astype(np.int32)
                lps = np.sort(np.log(rng.dirichlet(np.ones(8)) * 0.9)).astype(np.float32)[::-1].copy()
                dense = np.log(rng.dirichlet(np.ones(V))).astype(np.float32)
                stats = f.edge_stats(x)
                assert stats.top1 == f.fuse(x).ids[0]  # the greedy draft token, from the statistics alone
                for cloud in ((None, None, None), (ids, lps, None), (None, None, dense)):
                    a, b = f.fuse(x, *cloud), f.fuse(x, *cloud, edge_stats=stats)
                    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.logprobs, b.logprobs)
                    assert (a.w_edge, a.w_cloud, a.gated, a.edge_entropy) == (b.w_edge, b.w_cloud, b.gated,
                                                                              b.edge_entropy)


def test_statistics_of_other_logits_are_refused(rng: np.random.Generator) -> None:
    f = Fuser(100)
    x = rng.standard_normal(100).astype(np.float32)
    y = x.copy()
    y[int(np.argmax(x))] += 1.0
    with pytest.raises(ValueError, match="edge statistics of other logits"):
        f.fuse(y, edge_stats=f.edge_stats(x))
