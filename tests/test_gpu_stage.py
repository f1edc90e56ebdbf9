"""The driver's embed stage with batches that mix items, on CPU: the same shards as items embedded alone,
nothing lost when its worker dies, a batch past its timeout cancelled.

CI has no GPU: ``jobs.cross_item=on`` makes the items of a batch share forward
passes on the CPU, as they do on CUDA (every run goes through the same driver
and stages; ``auto`` on the CPU embeds each item's rows on their own). Tests
that need CUDA are marked ``gpu``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import h5py
import numpy as np
import pytest
from conftest import run_items

from reelsim.config import Config
from reelsim.extractors.feed import DeviceFeeder, plan_batches
from reelsim.pipeline.batcher import take_batch
from reelsim.storage.layout import StoreLayout
from reelsim.storage.shards import shard_is_complete
from reelsim.storage.shm import SHM_ROOT, SharedArray

#: Largest difference allowed between a feature computed in a batch of the clips of one video (per-item path)
#: and in a batch mixing videos (GPU path). Each row of a batch is computed independently, but
#: oneDNN picks its convolution algorithm by batch shape, which reorders float sums: measured on the
#: development machine, max abs difference 9.5e-7 (features are O(1)); shots, clips and thumbnails are identical.
FEATURE_ATOL = 1e-5
#: The same for region vectors, stored as float16 (components <= 1: one half-float step is at most 2**-11).
REGION_ATOL = 2 ** -10


def shard_datasets(path) -> dict[str, np.ndarray]:
    """Every dataset of a shard by its path, plus each feature group's model and precision."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
        f.visititems(visit)
        for m in f["features"]:
            out[f"features/{m}@model"] = f["features"][m].attrs["model"]
            out[f"features/{m}@precision"] = f["features"][m].attrs.get("precision", "")
    return out


def same(x, y) -> bool:
    """Exact equality of two dataset values (variable-length ones, e.g. JPEG thumbnails, element by element)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype == object or y.dtype == object:
        return x.shape == y.shape and all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(x.flat, y.flat))
    return np.array_equal(x, y)


@pytest.fixture(scope="module")
def cross_store(manifest, run_store, tmp_path_factory, dask_client):
    """Part of the session's catalog (videos with and without sound, a corrupt file, products with text) run
    again with batches of 8 rows whose items share forward passes (as on CUDA); clips travel through shared
    memory (the killed-worker test below uses Dask's worker-to-worker transfer)."""
    store = tmp_path_factory.mktemp("cross")
    keep = {"fractal", "silent", "corrupt", "banana", "headphones"}
    rows = [line for line in manifest.read_text(encoding="utf-8").splitlines() if any(
        f'"id": "{i}"' in line for i in keep)]
    subset = manifest.parent / "cross-subset.jsonl"
    subset.write_text("\n".join(rows) + "\n", encoding="utf-8")
    cfg = Config().with_overrides(fusion={"k": 5}).with_settings(
        ["jobs.cross_item=on", "jobs.gpu_batch=8", "jobs.clip_transport=shm"])
    before = set(SHM_ROOT.glob("reelsim-*"))
    report = run_items([subset], store, dask_client, cfg)
    assert set(SHM_ROOT.glob("reelsim-*")) <= before  # the run's shared-memory folder is gone
    return store, report


def test_cross_item_batches_give_the_per_item_shards(run_store, cross_store):
    (per_item, base), (cross, report) = run_store, cross_store
    ran = {r["item"] for r in report.items}
    assert len(ran) == 5 and [(r["item"], r["status"], r["reason"]) for r in report.items] == \
        [(r["item"], r["status"], r["reason"]) for r in base.items if r["item"] in ran]  # same failures, reasons
    ok = [r for r in report.items if r["status"] == "ok"]
    assert len(ok) == 4
    batches = {r["batch"]["batch"]: r["batch"] for r in ok}
    assert max(b["items"] for b in batches.values()) >= 2  # clips of several items shared a batch
    assert all(b["mixed"] for b in batches.values())  # ... and its forward passes
    assert not any(r["batch"]["mixed"] for r in base.items if r.get("batch"))  # on CPU by default: each item alone
    assert all(batches[k]["clips"] + batches[k]["images"] >= 8 for k in sorted(batches)[:-1])  # full but the last
    worst = 0.0
    for r in ok:
        a = shard_datasets(StoreLayout(per_item).shard(r["item"]))
        b = shard_datasets(StoreLayout(cross).shard(r["item"]))
        assert sorted(a) == sorted(b), r["item"]
        for name, x in a.items():
            y = b[name]
            if name.startswith("features/") and np.asarray(x).dtype.kind == "f":
                assert x.shape == y.shape, name
                worst = max(worst, float(np.abs(x - y).max()) if x.size else 0.0)
                np.testing.assert_allclose(y, x, rtol=0, atol=FEATURE_ATOL, err_msg=f"{r['item']} {name}")
            elif name == "regions/vectors":  # float16: the same float32 noise may round to the next half-float
                assert x.shape == y.shape and x.dtype == y.dtype == np.float16, name
                np.testing.assert_allclose(y.astype(np.float32), x.astype(np.float32), rtol=0, atol=REGION_ATOL,
                                           err_msg=f"{r['item']} {name}")
            else:  # shots, scenes, clip frames, thumbnails, models: identical
                assert same(x, y), f"{r['item']} {name}"
    print(f"largest feature difference per-item vs cross-item: {worst:.3g}")
    assert json.loads((cross / "report.json").read_text())["summary"] == report.summary()


def test_plan_batches_covers_every_row_once_in_order():
    shapes = [(3, 2, 4), (0, 2, 4), (5, 2, 4), (2, 9), (4, 2, 4)]
    plan = plan_batches(shapes, batch=4)
    seen = [(r.source, i) for b in plan for r in b for i in range(r.start, r.stop)]
    assert sorted(seen) == [(s, i) for s, shape in enumerate(shapes) for i in range(shape[0])]
    assert all(sum(r.stop - r.start for r in b) <= 4 for b in plan)
    assert all(len({shapes[r.source][1:] for r in b}) == 1 for b in plan)  # one row shape per batch
    assert [sum(r.stop - r.start for r in b) for b in plan] == [4, 4, 4, 2]  # (3+5+4 rows of one shape) + 2


def test_feeder_returns_each_array_its_own_rows():
    import torch

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n, 2, 3, 3), dtype=np.uint8) for n in (5, 0, 7, 1)]
    arrays.append(rng.integers(0, 256, (3, 4, 3, 3), dtype=np.uint8))  # another row shape
    calls = []

    def embed(x):  # a row-wise function of the pixels: sum and max of each row
        calls.append(len(x))
        flat = x.reshape(len(x), -1).float()
        return torch.stack([flat.sum(1), flat.max(1).values], 1)

    out, stats = DeviceFeeder(torch.device("cpu"), batch=4).run(arrays, embed, dim=2)
    assert out[1].shape == (0, 2)
    for a, o in zip(arrays[:1] + arrays[2:], out[:1] + out[2:]):
        flat = a.reshape(len(a), -1).astype(np.float64)
        np.testing.assert_array_equal(o, np.stack([flat.sum(1), flat.max(1)], 1))
    assert calls == [4, 4, 4, 1, 3] and stats.rows == 16 and stats.batches == 5


def test_take_batch_whole_items_until_full():
    ready = [("a", 10), ("b", 300), ("c", 5)]
    assert take_batch(ready, 256, flush=False) == ["a", "b"]
    assert take_batch([("c", 5)], 256, flush=False) == []
    assert take_batch([("c", 5)], 256, flush=True) == ["c"]


def test_shared_array_round_trip_and_empty(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    h = SharedArray.write(a, tmp_path, "clips")
    assert np.array_equal(h.load(), a) and h.nbytes == a.nbytes
    assert SharedArray.write(np.zeros((0, 5), np.uint8), tmp_path, "none").load().shape == (0, 5)
    h.unlink()
    assert not os.path.exists(h.path)


@pytest.mark.gpu
def test_cuda_feeder_and_model_match_extract():
    """On CUDA: pinned, side-stream batches give the same clip features as extract() (both fp32)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from reelsim.extractors.registry import load

    model = load("visual", "effnet-lite0-inflated", device="cuda", precision="fp32", batch_size=8)
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (n, 8, 160, 160, 3), dtype=np.uint8) for n in (5, 9, 3)]
    out, stats = DeviceFeeder(torch.device("cuda"), batch=8).run(arrays, model.embed, model.dim)
    ref = model.extract(np.concatenate(arrays))
    np.testing.assert_allclose(np.concatenate(out), ref, rtol=0, atol=1e-4)
    assert stats.batches == 3


@pytest.mark.slow
def test_killed_gpu_worker_loses_no_item(dask_cli_cluster, manifest, tmp_path):
    """A CPU worker (DECODE) and a GPU worker (GPU, models on CPU here); SIGKILL the GPU worker mid-batch,
    start another: every item gets one row and one complete shard; the batch ran again."""
    from dask.distributed import Client

    import reelsim as api
    from reelsim.jobs.tasks import BATCH_TOPIC

    rows = [{"id": v, "video": f"{v}.mp4"} for v in ("fractal", "carpet", "fields")]
    rows.append({"id": "banana", "image": "banana.png"})
    catalog = manifest.parent / "gpu-kill.jsonl"
    catalog.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    cluster = dask_cli_cluster
    cluster.add_worker("--resources", "DECODE=1")
    first_gpu = cluster.add_worker("--resources", "GPU=1")
    cluster.wait_for(2)
    batches: list[dict] = []
    cfg = Config().with_settings(["jobs.cross_item=on", "jobs.gpu_batch=1000",  # one batch of every item
                                  "jobs.clip_transport=dask"])  # clips stay on the CPU worker, fetched from there
    store = tmp_path / "store"
    result: dict = {}
    with Client(cluster.address, timeout="10s") as watcher:
        watcher.subscribe_topic(BATCH_TOPIC, lambda event: batches.append(event[1]))
        driver = threading.Thread(target=lambda: result.update(report=api.run([catalog], store, cfg,
                                                                              scheduler=cluster.address)))
        driver.start()
        deadline = time.time() + 600
        while not batches:  # the batch has started on the GPU worker (its models are loading or running)
            assert driver.is_alive() and time.time() < deadline
            time.sleep(0.05)
        assert batches[0]["pid"] == first_gpu.pid and len(batches[0]["items"]) == 4
        os.kill(first_gpu.pid, signal.SIGKILL)
        cluster.add_worker("--resources", "GPU=1")
        driver.join(timeout=900)
    report = result["report"]
    assert report.summary() == {"total": 4, "ok": 4, "cached": 0, "failed": 0}
    assert sorted(r["item"] for r in report.items) == sorted(r["id"] for r in rows)  # one row each
    batches = [b for b in batches if b["phase"] == "start"]
    assert len(batches) == 2 and batches[1]["batch"] == batches[0]["batch"]  # the same batch, run again
    assert {r["batch"]["worker"] for r in report.items} == {batches[1]["worker"]} != {batches[0]["worker"]}
    assert all(shard_is_complete(StoreLayout(store).shard(r["id"])) for r in rows)


@pytest.mark.slow
def test_gpu_batch_past_its_timeout_is_cancelled_and_its_items_fail_then_rerun(dask_cli_cluster, manifest, tmp_path):
    """A batch still running after jobs.batch_timeout_s (clock from its models being loaded): cancelled, its
    GPU worker restarted, each of its items reported as timed out, the run ends; a re-run completes them."""
    import reelsim as api

    rows = [{"id": v, "video": f"{v}.mp4"} for v in ("fractal", "carpet")]
    catalog = manifest.parent / "gpu-timeout.jsonl"
    catalog.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    cluster = dask_cli_cluster
    cluster.add_worker("--resources", "DECODE=1")
    cluster.add_worker("--resources", "GPU=1", nanny=True)  # restartable
    cluster.wait_for(2)
    settings = ["jobs.cross_item=on", "jobs.gpu_batch=1000", "jobs.clip_transport=dask"]
    store = tmp_path / "store"
    # 3D-CNN clips on a CPU take far longer than 0.2 s
    report = api.run([catalog], store, Config().with_settings(settings + ["jobs.batch_timeout_s=0.2"]),
                     scheduler=cluster.address)
    assert report.summary() == {"total": 2, "ok": 0, "cached": 0, "failed": 2}
    for row in report.items:
        assert row["timed_out"] and "timed out: embed batch 0 (2 items," in row["reason"], row
        assert "its worker was restarted" in row["reason"], row
    assert not any(StoreLayout(store).shard(r["id"]).exists() for r in rows)
    cluster.wait_for(2)  # the restarted GPU worker is back
    again = api.run([catalog], store, Config().with_settings(settings), scheduler=cluster.address)
    assert again.summary() == {"total": 2, "ok": 2, "cached": 0, "failed": 0}
