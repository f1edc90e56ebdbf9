"""The batch runner at catalog size: driver memory flat in the number of items, small items in groups."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import run_items

from reelsim.config import Config
from reelsim.jobs.driver import plan_tasks
from reelsim.pipeline.synth import make_image
from reelsim.storage.manifest import read_inputs
from reelsim.storage.shards import read_item_features

#: A child process: a catalog of N items whose image file is missing (each fails at once, on the worker,
#: after the real hashing step), run with ``reelsim.run`` on its own local cluster of one worker process;
#: prints the driver's peak RSS.
CHILD = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    import reelsim
    n, work = int(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps({"id": f"sku-{i:06d}", "image": f"img/{i}.png", "title": f"product {i}"}) for i in range(n))
    (work / "catalog.jsonl").write_text("\\n".join(lines) + "\\n")
    report = reelsim.run([str(work / "catalog.jsonl")], work / "store", workers=1)
    s = report.summary()
    assert s == {"total": n, "ok": 0, "cached": 0, "failed": n}, s
    print(json.dumps({"n": n, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def driver_peak_mb(n: int, work) -> float:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(n), str(work)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"]


@pytest.mark.slow
def test_driver_peak_memory_is_flat_in_the_number_of_items(tmp_path):
    small = driver_peak_mb(2_000, tmp_path / "small")
    large = driver_peak_mb(20_000, tmp_path / "large")
    assert large <= 1.2 * small, (small, large)


def test_small_items_run_in_groups_with_batched_models_and_fail_alone(tmp_path, dask_client):
    media = tmp_path / "media"
    media.mkdir()
    make_image(media / "a.png", "testsrc2")
    make_image(media / "b.png", "rgbtestsrc")
    rows = [{"id": f"t{i}", "title": title} for i, title in enumerate(
        ["Organic bananas, bunch of 6", "Crisp red apples, 1 kg", "Wireless earbuds", "Dark chocolate bar"])]
    rows += [{"id": "img-a", "image": "a.png", "title": "Test card poster"}, {"id": "gone", "image": "no.png"},
             {"id": "img-b", "image": "b.png"}]
    (media / "cat.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items, _ = read_inputs([str(media / "cat.jsonl")])
    assert [len(t) for t in plan_tasks(items, group_size=64, n_workers=1)] == [7]  # one task, one batch per model

    grouped = run_items([media / "cat.jsonl"], tmp_path / "grouped", dask_client)
    alone = run_items([media / "cat.jsonl"], tmp_path / "alone", dask_client,
                      Config().with_overrides(jobs={"group_size": 1}))
    status = {r["item"]: r["status"] for r in grouped.items}
    assert status == {**{r["id"]: "ok" for r in rows}, "gone": "failed"}  # the missing image fails alone
    assert {r["item"]: r["status"] for r in alone.items} == status
    assert len({r["worker"] for r in grouped.items}) == 1 and all(r["attempts"] == 1 for r in grouped.items)
    for item in ("t0", "t3", "img-a", "img-b"):  # batched features equal those of items run one per task
        got = read_item_features(tmp_path / "grouped", item)
        want = read_item_features(tmp_path / "alone", item)
        assert sorted(got) == sorted(want)
        for m in got:
            np.testing.assert_allclose(got[m], want[m], atol=1e-5)
    again = run_items([media / "cat.jsonl"], tmp_path / "grouped", dask_client)
    assert again.summary() == {"total": 7, "ok": 0, "cached": 6, "failed": 1}


@pytest.mark.slow
def test_worker_killed_mid_group_loses_no_item(dask_cli_cluster, tmp_path):
    """Scheduler + 2 worker processes, two groups of 12 text items; SIGKILL a worker once its group is under way."""
    import os
    import signal
    import time

    from dask.distributed import Client

    from reelsim.jobs.tasks import START_TOPIC

    manifest = tmp_path / "cat.jsonl"
    manifest.write_text("\n".join(json.dumps({"id": f"t{i:02d}", "title": f"Organic product number {i}"})
                                  for i in range(24)) + "\n")
    workers = [dask_cli_cluster.add_worker(), dask_cli_cluster.add_worker()]
    dask_cli_cluster.wait_for(2)
    started: list[dict] = []
    with Client(dask_cli_cluster.address, timeout="10s") as watcher:
        watcher.subscribe_topic(START_TOPIC, lambda event: started.append(event[1]))
        driver = subprocess.Popen([sys.executable, "-m", "reelsim.jobs.cli", "run", str(manifest), "--store",
                                   str(tmp_path / "store"), "--scheduler", dask_cli_cluster.address, "--no-progress",
                                   "--set", "jobs.group_size=12"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        deadline = time.time() + 300
        while not any(e.get("phase") == "models-loaded" and "items" in e for e in started):
            assert driver.poll() is None and time.time() < deadline, driver.communicate()
            time.sleep(0.05)
        victim = next(e for e in started if e.get("phase") == "models-loaded" and "items" in e)
        assert victim["pid"] in [w.pid for w in workers] and len(victim["items"]) == 12
        os.kill(victim["pid"], signal.SIGKILL)
        out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, out + err
    report = json.loads((tmp_path / "store" / "report.json").read_text(encoding="utf-8"))
    rows = {r["item"]: r for r in report["items"]}
    assert len(rows) == 24 and report["summary"]["failed"] == 0  # no item lost
    assert all(rows[i]["attempts"] == 2 and rows[i]["worker"] != victim["worker"] for i in victim["items"])
    assert (tmp_path / "store" / "lists" / "neighbors.parquet").is_file()
