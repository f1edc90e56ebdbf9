"""The kNN graph on a GPU, tested on the CPU through the same function: blocked exact top-k in torch."""

from __future__ import annotations

import numpy as np
import pytest
from test_similarity import W, make_catalog

from reelsim.config import FusionConfig
from reelsim.errors import UsageError
from reelsim.extractors.device import device_name
from reelsim.similarity import GroupedIndex, knn_graph, normalise
from reelsim.similarity.blocked import DeviceGroups, blocked_topk
from reelsim.similarity.grouped import group_vectors


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
    assert device_name("cpu") == "cpu"


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


# -- the search phase as a Dask job ---------------------------------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from conftest import reelsim  # noqa: E402
from test_knn import make_store, structured  # noqa: E402

from reelsim.similarity import CatalogEmbeddings  # noqa: E402
from reelsim.similarity.rebuild import index_and_lists  # noqa: E402
from reelsim.storage.lists import read_parquet  # noqa: E402


def graph_store(path, n=20_000):
    cat = normalise(CatalogEmbeddings([f"i{j:05d}" for j in range(n)], {"visual": structured(n, 48, seed=4)},
                                      {"visual": np.ones(n, bool)}))
    return make_store(path, cat)


def parts(store) -> int:
    return len(list((store / "lists" / ".knn-checkpoint").glob("part-*.parquet")))


def wait_for_parts(store, n: int, proc=None, timeout=300) -> int:
    deadline = time.monotonic() + timeout
    while parts(store) < n and (proc is None or proc.poll() is None) and time.monotonic() < deadline:
        time.sleep(0.01)
    return parts(store)


LISTS = ["lists", "--knn-batch", "1000", "--no-progress", "--lists-format", "parquet,jsonl", "--weights", "visual=1"]


@pytest.mark.slow
def test_killed_worker_mid_graph_gives_the_lists_of_one_process(tmp_path, dask_cli_cluster):
    """Scheduler + 2 worker processes; SIGKILL one once blocks are being written; the other finishes the graph."""
    store = graph_store(tmp_path / "dask")
    one = tmp_path / "one"
    shutil.copytree(store, one)
    index_and_lists(one, FusionConfig(weights={"visual": 1.0}, k=10, knn_batch=1000, lists_formats=("parquet",)))
    victim = dask_cli_cluster.add_worker()
    dask_cli_cluster.add_worker()
    dask_cli_cluster.wait_for(2)
    driver = subprocess.Popen([sys.executable, "-m", "reelsim.jobs.cli", *LISTS, "--store", str(store),
                               "--scheduler", dask_cli_cluster.address], stdout=subprocess.PIPE, text=True)
    done = wait_for_parts(store, 2, driver)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL and 2 <= done < 20  # killed mid-graph
    out, _ = driver.communicate(timeout=600)
    summary = json.loads(out)
    assert driver.returncode == 0 and summary["blocks"] == 20 and summary["rows"] == 10 * 20_000
    assert read_parquet(store / "lists" / "neighbors.parquet") == read_parquet(one / "lists" / "neighbors.parquet")
    assert not (store / "lists" / ".knn-checkpoint").exists()


@pytest.mark.slow
def test_killed_graph_job_resumes_without_recomputing_finished_blocks(tmp_path):
    store = graph_store(tmp_path / "dask")
    one = tmp_path / "one"
    shutil.copytree(store, one)
    index_and_lists(one, FusionConfig(weights={"visual": 1.0}, k=10, knn_batch=1000, lists_formats=("parquet",)))
    args = [*LISTS, "--store", str(store), "--workers", "1"]
    driver = subprocess.Popen([sys.executable, "-m", "reelsim.jobs.cli", *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    done = wait_for_parts(store, 3, driver)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its local cluster
    driver.wait()
    done = parts(store)
    assert 3 <= done < 20
    stamps = {p.name: p.stat().st_mtime_ns for p in (store / "lists" / ".knn-checkpoint").glob("part-*.parquet")}
    summary = json.loads(reelsim(*args, check=0).stdout)
    assert summary["resumed"] is True and summary["blocks_resumed"] == done
    assert summary["blocks_run"] == 20 - done  # finished blocks are not submitted again
    assert read_parquet(store / "lists" / "neighbors.parquet") == read_parquet(one / "lists" / "neighbors.parquet")
    assert len(stamps) == done
