"""`reelsim run --scheduler`: an existing cluster started with the `dask` CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from conftest import reelsim

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
    """A scheduler and one worker process on loopback, started as a user would."""
    dask = [sys.executable, "-m", "dask"]  # the `dask` command of this environment
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = open(tmp_path / "dask.log", "w")
    procs = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", ":0"], stdout=logs, stderr=logs)]
    procs.append(subprocess.Popen([*dask, "worker", address, "--nworkers", "1", "--nthreads", "1",
                                   "--local-directory", str(tmp_path / "worker")], stdout=logs, stderr=logs))
    try:
        from dask.distributed import Client

        deadline = time.time() + 60
        while True:
            try:
                with Client(address, timeout="5s") as c:
                    c.wait_for_workers(1, timeout=60)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        logs.close()


def test_run_on_an_existing_scheduler(dask_cluster, media, tmp_path):
    store = tmp_path / "store"
    proc = reelsim("run", media / "fields.mp4", media / "carpet.mp4", "--store", store,
                   "--scheduler", dask_cluster, "--no-progress", check=0)
    assert "2 processed" in proc.stdout
    report = json.loads((store / "report.json").read_text(encoding="utf-8"))
    assert report["summary"]["ok"] == 2
    top = json.loads(reelsim("similar", "fields", "--store", store, "-k", 1, "--json", check=0).stdout)
    assert top["neighbors"][0]["item"] == "carpet"
