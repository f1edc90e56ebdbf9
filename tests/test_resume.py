"""Re-runs redo exactly what is damaged: half-written shards, shards without their completion marker, temp files."""

from __future__ import annotations

import json

import h5py
import pytest
from conftest import clip_catalog, run_items

from reelsim.storage.layout import StoreLayout
from reelsim.storage.shards import shard_is_complete


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return clip_catalog(tmp_path_factory.mktemp("resume-media"), ("testsrc2", "mandelbrot", "smptebars"), frames=20)


def statuses(store) -> dict[str, str]:
    return {r["item"]: r["status"] for r in json.loads(StoreLayout(store).report.read_text())["items"]}


def test_damaged_shards_are_redone_and_the_lists_unchanged(catalog, tmp_path, dask_client):
    store = tmp_path / "store"
    assert run_items([catalog], store, dask_client).exit_code == 0
    lists = StoreLayout(store).list_file("jsonl").read_text(encoding="utf-8")
    half, unmarked = StoreLayout(store).shard("c0"), StoreLayout(store).shard("c1")
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])  # a shard half-written by a killed process
    with h5py.File(unmarked, "a") as f:  # one without its completion marker
        del f.attrs["complete"]
    assert not shard_is_complete(half) and not shard_is_complete(unmarked)
    stale_tmp = half.parent / f".{half.name}.deadbeef.tmp"  # a killed writer's temp file
    stale_tmp.write_bytes(b"partial")

    assert run_items([catalog], store, dask_client).exit_code == 0
    status = statuses(store)
    assert status["c0"] == status["c1"] == "ok"
    assert {s for i, s in status.items() if i not in ("c0", "c1")} == {"cached"}
    assert shard_is_complete(half) and shard_is_complete(unmarked) and not stale_tmp.exists()
    assert StoreLayout(store).list_file("jsonl").read_text(encoding="utf-8") == lists
