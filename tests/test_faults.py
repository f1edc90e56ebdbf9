"""Faults: a killed driver, a half-written shard, a concurrent run, an input that runs too long.

Everything runs through the real CLI in subprocesses on real Dask clusters;
the killed processes are killed with real signals.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import clip_catalog, reelsim

from reelsim.pipeline.synth import make_image
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lock import StoreLock, StoreLockedError

pytestmark = pytest.mark.slow

SOURCES = ["testsrc2", "mandelbrot", "smptebars", "rgbtestsrc", "cellauto=rule=110:seed=3", "life=seed=3"]


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "reelsim.jobs.cli", *map(str, args)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """A manifest of six short single-shot clips with audio, and one product image (no text: no text model)."""
    return clip_catalog(tmp_path_factory.mktemp("fault-media"), SOURCES, frames=30)


@pytest.fixture(scope="module")
def clean_run(clips, tmp_path_factory) -> Path:
    """A clean run, from an empty working folder with an empty TMPDIR: both must stay empty."""
    root = tmp_path_factory.mktemp("clean")
    cwd, tmp, store = root / "cwd", root / "tmp", root / "store"
    cwd.mkdir(), tmp.mkdir()
    proc = subprocess.run(cli("run", clips, "--store", store, "--workers", 1, "--no-progress"), cwd=cwd,
                          env={**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []  # nothing written outside the store
    assert sorted(p.name for p in root.iterdir()) == ["cwd", "store", "tmp"]
    return store


def lists_of(store: Path) -> str:
    return (store / "lists" / "neighbors.jsonl").read_text(encoding="utf-8")


def statuses(store: Path) -> dict[str, str]:
    report = json.loads((store / "report.json").read_text(encoding="utf-8"))
    return {r["item"]: r["status"] for r in report["items"]}


def test_driver_killed_then_rerun_resumes_with_identical_lists(clips, clean_run, tmp_path):
    store = tmp_path / "store"
    driver = subprocess.Popen(cli("run", clips, "--store", store, "--workers", 1, "--no-progress"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not list(store.glob("shards/*/*.h5")):  # kill it once it has finished some, not all, items
            assert driver.poll() is None and time.time() < deadline, "driver ended before any shard was written"
            time.sleep(0.2)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        with pytest.raises(ProcessLookupError):  # its worker processes die with it (or are cleaned up here)
            time.sleep(3)
            os.killpg(driver.pid, signal.SIGKILL)
    done_before = len(list(store.glob("shards/*/*.h5")))
    assert StoreLayout(store).lock.is_file() and not (store / "lists").exists()

    proc = reelsim("run", clips, "--store", store, "--workers", 1, "--no-progress", check=0)
    assert "taking over the lock" in proc.stderr and "no longer runs" in proc.stderr
    status = statuses(store)
    assert list(status.values()).count("cached") == done_before < len(status)
    assert set(status.values()) == {"cached", "ok"}
    assert lists_of(store) == lists_of(clean_run)  # identical to a clean, uninterrupted run
    assert not StoreLayout(store).lock.exists()


def test_concurrent_run_on_one_store_is_refused(clips, tmp_path):
    store = tmp_path / "store"
    with StoreLock(store):
        proc = reelsim("run", clips, "--store", store, "--no-progress")
        assert proc.returncode == 2
        assert "is in use by pid" in proc.stderr and socket.gethostname() in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (store / "report.json").exists()


def test_lock_rules(tmp_path):
    warned = []
    with StoreLock(tmp_path, progress=warned.append):
        with pytest.raises(StoreLockedError, match="in use by pid"):
            StoreLock(tmp_path).acquire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = StoreLayout(tmp_path).lock
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started_utc": "x"}))
    with StoreLock(tmp_path, progress=warned.append) as held:  # a dead process on this host: taken over
        assert json.loads(lock.read_text())["pid"] == os.getpid() == held.record["pid"]
    assert len(warned) == 1 and warned[0].warning and str(dead.pid) in warned[0].message
    lock.write_text(json.dumps({"host": "another-host.example", "pid": dead.pid, "started_utc": "x"}))
    with pytest.raises(StoreLockedError, match="another-host.example"):  # cannot check: never taken over
        StoreLock(tmp_path).acquire()


def test_item_running_too_long_times_out(tmp_path):
    """A 1 TB sparse file: reading it (to hash it) takes far longer than the item timeout.

    (A named pipe or a device, which would block or be read for ever, is refused before it is opened:
    tests/test_hostile_inputs.py.)
    """
    media = tmp_path / "media"
    media.mkdir()
    with open(media / "stalled.mp4", "wb") as f:
        f.truncate(2**40)
    make_image(media / "p.png", "testsrc2")
    (media / "catalog.jsonl").write_text(
        json.dumps({"id": "stalled", "video": "stalled.mp4"}) + "\n" + json.dumps({"id": "p", "image": "p.png"}) + "\n")
    t = time.time()
    proc = reelsim("run", media / "catalog.jsonl", "--store", tmp_path / "store", "--workers", 2,
                   "--item-timeout", 4, "--no-progress")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    status = json.loads((tmp_path / "store" / "report.json").read_text())
    rows = {r["item"]: r for r in status["items"]}
    assert rows["p"]["status"] == "ok"
    hung = rows["stalled"]
    assert hung["status"] == "failed" and hung["timed_out"] is True
    assert hung["reason"].startswith("timed out: still running after") and "worker was restarted" in hung["reason"]
    assert f"FAILED stalled: {hung['reason']}" in proc.stdout
    assert time.time() - t < 240
    (media / "stalled.mp4").unlink()


def test_worker_killed_mid_item_is_retried_on_the_other(dask_cli_cluster, clips, tmp_path):
    """Scheduler + 2 worker processes; SIGKILL the worker running an item once it has started."""
    from dask.distributed import Client

    from reelsim.jobs.tasks import START_TOPIC

    cluster = dask_cli_cluster
    workers = [cluster.add_worker(), cluster.add_worker()]
    cluster.wait_for(2)
    started: list[dict] = []
    with Client(cluster.address, timeout="10s") as watcher:
        watcher.subscribe_topic(START_TOPIC, lambda event: started.append(event[1]))
        store = tmp_path / "store"
        driver = subprocess.Popen(cli("run", clips, "--store", store, "--scheduler", cluster.address,
                                      "--no-progress"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while not any(e.get("phase") == "models-loaded" for e in started):  # mid-item: analysis under way
            assert driver.poll() is None and time.time() < deadline, driver.communicate()
            time.sleep(0.05)
        victim = next(e for e in started if e.get("phase") == "models-loaded")
        assert victim["pid"] in [w.pid for w in workers]
        os.kill(victim["pid"], signal.SIGKILL)
        out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, out + err
    report = json.loads((store / "report.json").read_text(encoding="utf-8"))
    rows = {r["item"]: r for r in report["items"]}
    assert report["summary"]["ok"] == report["summary"]["total"] == 7  # all items complete
    again = rows[victim["item"]]
    assert again["attempts"] == 2 and again["worker"] != victim["worker"]
    assert {"item": victim["item"], "attempts": 2, "status": "ok"} in report["retried"]
    assert f"retried {victim['item']}: ran 2 times" in out
    # models load once per worker process: the survivor ran several items, each model built once
    survivor = [r for r in rows.values() if r["worker"] != victim["worker"]]
    assert len(survivor) >= 4 and all(set(r["model_loads"].values()) == {1} for r in survivor)


def test_embed_tasks_go_to_gpu_workers(dask_cli_cluster, clips, tmp_path):
    """A worker started with `--resources GPU=1` runs every embed task (video clips, keyframes, the product
    image); the prepare and finish tasks may go anywhere (no worker advertises DECODE)."""
    from dask.distributed import Client

    cluster = dask_cli_cluster
    cluster.add_worker()
    cluster.add_worker("--resources", "GPU=1")
    cluster.wait_for(2)
    with Client(cluster.address, timeout="10s") as c:
        info = c.scheduler_info(n_workers=-1)["workers"]
        gpu = [a for a, w in info.items() if (w.get("resources") or {}).get("GPU")]
    assert len(info) == 2 and len(gpu) == 1
    store = tmp_path / "store"
    reelsim("run", clips, "--store", store, "--scheduler", cluster.address, "--no-progress", check=0)
    rows = json.loads((store / "report.json").read_text(encoding="utf-8"))["items"]
    assert {r["batch"]["worker"] for r in rows} == set(gpu)
    assert [r["status"] for r in rows] == ["ok"] * 7
