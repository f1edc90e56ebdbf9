"""`reelsim run --scheduler`: an existing cluster started with the `dask` CLI."""

from __future__ import annotations

import json

import pytest
from conftest import reelsim

pytestmark = pytest.mark.slow


def test_run_on_an_existing_scheduler(dask_cli_cluster, media, tmp_path):
    dask_cli_cluster.add_worker()
    dask_cli_cluster.wait_for(1)
    store = tmp_path / "store"
    proc = reelsim("run", media / "fields.mp4", media / "carpet.mp4", "--store", store,
                   "--scheduler", dask_cli_cluster.address, "--no-progress", check=0)
    assert "2 processed" in proc.stdout
    report = json.loads((store / "report.json").read_text(encoding="utf-8"))
    assert report["summary"]["ok"] == 2
    top = json.loads(reelsim("similar", "fields", "--store", store, "-k", 1, "--json", check=0).stdout)
    assert top["neighbors"][0]["item"] == "carpet"
