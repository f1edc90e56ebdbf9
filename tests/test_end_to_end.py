"""The whole pipeline end to end: one real run, then the CLI's commands and contracts on its store.

`run_store` (conftest) runs the catalog once per session on the session's
Dask cluster; these tests read what it wrote through the real CLI. The tests
that run `reelsim run` itself (its own cluster of worker processes) are slow.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import PRODUCTS, VIDEOS, cut_frames, reelsim, run_items

from reelsim.config import Config
from reelsim.storage.layout import StoreLayout

FAILED = {"corrupt", "ghost", "no-image", "catalog.jsonl:14"}


@pytest.fixture(scope="module")
def report(run_store):
    store, run = run_store
    assert run.exit_code == 3, run.describe(store)
    return json.loads((store / "report.json").read_text(encoding="utf-8"))


def test_bad_items_are_reported_and_the_rest_complete(report, run_store):
    status = {r["item"]: r for r in report["items"]}
    assert {i for i, r in status.items() if r["status"] == "failed"} == FAILED
    assert "not a readable media file" in status["corrupt"]["reason"]
    assert "not found" in status["ghost"]["reason"]
    assert "image file not found" in status["no-image"]["reason"]
    assert "not valid JSON" in status["catalog.jsonl:14"]["reason"]
    ok = {i for i, r in status.items() if r["status"] == "ok"}
    assert ok == {*VIDEOS, "fractal-edit", "silent", "../../escape/attempt", *PRODUCTS}
    assert report["summary"] == {"total": len(status), "ok": len(ok), "cached": 0, "failed": len(FAILED)}
    out = run_store[1].describe(run_store[0])  # what `reelsim run` prints
    assert "FAILED corrupt" in out and "FAILED ghost" in out


@pytest.mark.parametrize("vid", sorted(VIDEOS))
def test_shots_json_contract_and_cut_frames(run_store, report, vid):
    store, _ = run_store
    rec = json.loads(reelsim("shots", vid, "--store", store, "--json", check=0).stdout)
    assert set(rec) == {"item", "fps", "n_frames", "shots", "scenes"}
    assert rec["item"] == vid and rec["fps"] == pytest.approx(25.0)
    assert rec["n_frames"] == sum(s.frames for s in VIDEOS[vid])
    shots = rec["shots"]
    assert all(set(s) == {"start_frame", "end_frame", "start_s", "end_s", "transition", "transition_frames"}
               for s in shots)
    assert [s["transition"] for s in shots] == ["start"] + ["cut"] * (len(shots) - 1)
    assert [s["start_frame"] for s in shots[1:]] == cut_frames(VIDEOS[vid])
    assert shots[0]["start_frame"] == 0 and shots[-1]["end_frame"] == rec["n_frames"]
    for a, b in zip(shots, shots[1:]):
        assert a["end_frame"] == b["start_frame"]
        assert b["start_s"] == pytest.approx(b["start_frame"] / 25.0, abs=1e-3)
    scenes = rec["scenes"]
    assert scenes[0]["start_shot"] == 0 and scenes[-1]["end_shot"] == len(shots)


def test_hdf5_shard_shapes_and_provenance(run_store, report):
    store, _ = run_store
    with h5py.File(StoreLayout(store).shard("fractal"), "r") as f:
        assert f.attrs["item_id"] == "fractal" and f.attrs["kind"] == "video"
        assert len(f.attrs["config_hash"]) == 16
        assert set(json.loads(f.attrs["input_sha256"])) == {"video"}
        v = f["video"]
        assert v["shots"].shape == (3, 2) and v["shots"].dtype == np.int64
        assert v["shot_times"].shape == (3, 2) and v["keyframes"].shape == (3,)
        assert [t.decode() for t in v["transitions"][()]] == ["start", "cut", "cut"]
        assert v["transition_frames"][()].tolist() == [[0, 0], [30, 30], [55, 55]]
        feats = f["features"]
        assert set(feats) == {"visual", "audio", "image"}
        assert feats["visual/shot"].shape == (3, 1280) and feats["visual/item"].shape == (1280,)
        assert feats["visual/shot"].dtype == np.float32
        assert feats["audio/shot"].shape == (3, 128) and feats["image/shot"].shape == (3, 1280)
        prov = dict(feats["visual"].attrs)
        assert prov["model"] == "effnet-lite0-inflated" and prov["weights"] == "imagenet-inflated"
        assert len(prov["weights_sha256"]) == 64
        for key in ("input_size", "clip_len", "clip_frame_stride", "code_version", "config_hash"):
            assert key in prov
        assert v.attrs["shots_detector"] == "reelsim"
        assert np.isfinite(feats["visual/item"][()]).all()
    with h5py.File(StoreLayout(store).shard("silent"), "r") as f:
        assert "audio" not in f["features"]  # no audio track: no audio features, not an error
    with h5py.File(StoreLayout(store).shard("banana"), "r") as f:
        assert set(f["features"]) == {"image", "text"} and f["features/text/item"].shape == (384,)


def similar(store, item, k=3, *extra):
    return json.loads(reelsim("similar", item, "--store", store, "-k", k, "--json", *extra, check=0).stdout)


def test_similar_json_contract(run_store, report):
    store, _ = run_store
    out = similar(store, "fractal", k=4)
    assert {"item", "neighbors"} <= set(out) and out["item"] == "fractal"  # the contract, extended:
    assert (out["space"], out["k"], out["source"]) == ("content", 4, "lists") and out["version"] >= 1
    assert len(out["neighbors"]) == 4
    scores = [n["score"] for n in out["neighbors"]]
    assert scores == sorted(scores, reverse=True)
    assert "fractal" not in [n["item"] for n in out["neighbors"]]
    for n in out["neighbors"]:
        assert set(n) - {"copy", "copy_span"} == {"item", "score", "modalities"}  # a copy is marked (issue #23)
        assert ("copy" in n) == (n["item"] == "fractal-edit"), n
        assert set(n["modalities"]) <= {"visual", "audio", "image", "text"}
    video_nb = [n for n in out["neighbors"] if n["item"] in VIDEOS or n["item"] == "fractal-edit"]
    assert all({"visual", "audio", "image"} <= set(n["modalities"]) for n in video_nb if n["item"] != "silent")


def test_edited_copy_is_a_top3_neighbour(run_store, report):
    store, _ = run_store
    assert "fractal-edit" in [n["item"] for n in similar(store, "fractal")["neighbors"]]
    assert similar(store, "fractal-edit", k=1)["neighbors"][0]["item"] == "fractal"


def test_product_text_neighbours_are_of_their_own_kind(run_store, report):
    store, _ = run_store
    fruit, audio = {"banana", "apple"}, {"headphones", "earbuds"}
    for item, kind in (("banana", fruit), ("apple", fruit), ("headphones", audio), ("earbuds", audio)):
        top = similar(store, item, 1, "--weights", "visual=0,audio=0,image=0,text=1")["neighbors"][0]
        assert top["item"] in kind - {item}, (item, top)
        assert set(top["modalities"]) == {"text"}


def test_hostile_id_stays_inside_the_store(run_store, report):
    store, _ = run_store
    assert not (store.parent / "escape").exists()
    out = similar(store, "../../escape/attempt", k=1)
    assert out["neighbors"][0]["item"] == "carpet"  # the same video under another id


def test_unknown_item_is_a_usage_error(run_store, report):
    store, _ = run_store
    proc = reelsim("similar", "no-such-item", "--store", store)
    assert proc.returncode == 2 and "unknown item id" in proc.stderr
    assert reelsim("shots", "no-such-item", "--store", store).returncode == 2


def test_lists_and_exports(run_store, report, tmp_path):
    store, _ = run_store
    reelsim("export", "--store", store, "--format", "jsonl", "--to", tmp_path / "l.jsonl", check=0)
    rows = [json.loads(line) for line in (tmp_path / "l.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {"item", "neighbor", "rank", "score"} <= set(rows[0])
    n_ok = report["summary"]["ok"]
    assert len(rows) == n_ok * 5 and {r["rank"] for r in rows} == {1, 2, 3, 4, 5}
    reelsim("export", "--store", store, "--format", "parquet", "--to", tmp_path / "l.parquet", check=0)
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "l.parquet").num_rows == len(rows)
    reelsim("export", "--store", store, "--format", "hdf5", "--to", tmp_path / "all.h5", check=0)
    with h5py.File(tmp_path / "all.h5", "r") as f:
        ids = [s.decode() for s in f["ids"][()]]
        assert sorted(ids) == sorted(r["item"] for r in report["items"] if r["status"] == "ok")
        key = f["keys"][()][ids.index("fractal")].decode()
        assert f[f"items/{key}/features/visual/shot"].shape == (3, 1280)
        assert f[f"items/{key}"].attrs["item_id"] == "fractal"


@pytest.mark.slow
def test_rerun_does_no_work_for_unchanged_items(run_store, report, manifest):
    """`reelsim run` itself (its own local cluster), again on the store: nothing recomputed, exit 3, failures listed."""
    store, _ = run_store
    before = {p: p.stat().st_mtime_ns for p in (store / "shards").glob("*/*.h5")}
    proc = reelsim("run", manifest, "--store", store, "--workers", 1, "--no-progress", "-k", 5)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "FAILED corrupt" in proc.stdout and "FAILED ghost" in proc.stdout
    again = json.loads((store / "report.json").read_text(encoding="utf-8"))
    status = {r["item"]: r["status"] for r in again["items"]}
    assert {i for i, s in status.items() if s == "cached"} == {i for i, s in status.items() if s != "failed"}
    assert {p: p.stat().st_mtime_ns for p in (store / "shards").glob("*/*.h5")} == before


def test_kinetics_model_needs_weights_and_runs_from_a_file(media, tmp_path, dask_client):
    import hashlib

    import torch
    import torchvision

    store = tmp_path / "store"
    proc = reelsim("run", media / "carpet.mp4", "--store", store, "--video-model", "r3d_18", subprocess_=False)
    assert proc.returncode == 2  # refused before any cluster starts
    assert "r3d_18" in proc.stderr and "--video-weights" in proc.stderr
    # A randomly initialised state dict proves the load-by-path route (no download here).
    weights = tmp_path / "r3d_18-random.pth"
    torch.save(torchvision.models.video.r3d_18(weights=None).state_dict(), weights)
    cfg = Config().with_overrides(models={"visual": "r3d_18", "video_weights": str(weights)})
    assert run_items([media / "carpet.mp4"], store, dask_client, cfg).exit_code == 0
    with h5py.File(StoreLayout(store).shard("carpet"), "r") as f:
        prov = dict(f["features/visual"].attrs)
        assert prov["model"] == "r3d_18"
        assert prov["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
        assert f["features/visual/shot"].shape == (2, 512)
