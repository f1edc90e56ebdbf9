"""The kNN graph on a GPU, tested on the CPU through the same function: blocked exact top-k in torch."""

from __future__ import annotations

import numpy as np
import pytest

from reelsim.config import FusionConfig
from reelsim.errors import UsageError
from reelsim.similarity import GroupedIndex, knn_graph, normalise
from reelsim.similarity.blocked import DeviceGroups, blocked_topk, lists_device
from reelsim.similarity.grouped import group_vectors
from test_similarity import W, make_catalog


def test_bf16_candidates_rescored_in_fp32_equal_the_exact_top_k():
    """bf16 scores (tensor cores on a GPU; here the CPU), fp32 re-score, fp32 again where rounding could hide one."""
    import faiss

    rng = np.random.default_rng(0)
    xb = rng.normal(size=(6000, 48)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xb[3000:3060] = xb[7] + 3e-4 * rng.normal(size=(60, 48)).astype(np.float32)  # near-ties around one item
    xq = np.concatenate([xb[:900], xb[3000:3010]])
    D_true, I_true = faiss.knn(xq, xb, 11, metric=faiss.METRIC_INNER_PRODUCT)
    for precision in ("fp32", "bf16"):
        D, I = blocked_topk(xq, xb, 11, precision=precision, block_q=256, block_b=1000)  # many blocks to merge
        assert D.shape == I.shape == (910, 11) and I.dtype == np.int64
        assert np.all(np.diff(D, axis=1) <= 0)
        np.testing.assert_allclose(np.sort(D, 1), np.sort(D_true, 1), atol=2e-6)
        assert np.mean([len(set(a) & set(b)) for a, b in zip(I, I_true)]) == 11  # recall@11 = 1.0
    D, I = blocked_topk(xq[:3], xb[:5], 11)  # fewer rows than k
    assert I.shape == (3, 5)
    with pytest.raises(UsageError):
        blocked_topk(xq, xb[:, :10], 5)
    assert lists_device("cpu") == "cpu"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_device_search_gives_the_same_lists_as_faiss(precision):
    cat = normalise(make_catalog(n=1200, seed=3)[0])
    gi = GroupedIndex.build(cat, W, override="exact")
    want = knn_graph(cat, gi, W, 10)
    searcher = DeviceGroups(gi, lambda c: group_vectors(cat, W, gi.active, c), "cpu", precision=precision)
    got = knn_graph(cat, gi, W, 10, searcher=searcher)
    assert np.array_equal(got.I, want.I) and np.array_equal(got.S, want.S)
    assert all(np.array_equal(got.cos[m], want.cos[m], equal_nan=True) for m in want.cos)


def test_lists_device_setting_is_checked():
    assert FusionConfig().device == "auto"
    with pytest.raises(UsageError):
        FusionConfig(device="tpu")
