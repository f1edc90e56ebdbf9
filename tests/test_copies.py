"""Region-aware shots and shot-level copy search: regions, alignment, the copy index, `reelsim matches`.

The end-to-end tests run a small catalog (a source, a picture-in-picture of
it over an unrelated host, a mirrored and cropped copy, an unrelated video)
through a real run on the session's Dask cluster, then add an excerpt with
``reelsim add``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import reelsim, run_items

import reelsim as api
from reelsim.config import Config
from reelsim.errors import StoreError, UnknownItemError
from reelsim.jobs.report import write_html_report
from reelsim.jobs.tables import neighbors_json
from reelsim.pipeline import edits as E
from reelsim.pipeline.regions import (
    REGION_KINDS,
    find_insets,
    mirrored,
    picture_area,
    region_boxes,
    shot_regions,
    thumbnails,
)
from reelsim.similarity.copies import (
    CopyPairs,
    Segment,
    ShotPairs,
    chains,
    copy_marks,
    copy_pairs,
    montage_marked,
    read_copy_table,
    time_map,
)
from reelsim.similarity.rebuild import relist
from reelsim.storage.layout import StoreLayout
from reelsim.storage.shards import check_shard, read_item_features, read_regions, read_shots

DATA = Path(__file__).parent / "data"


def texture(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random colour texture, uint8 (h, w, 3)."""
    import cv2

    small = np.random.default_rng(seed).integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


# ------------------------------------------------------------------ regions (pure)


def test_picture_area_finds_letterbox_bars():
    f = np.zeros((90, 160, 3), np.uint8)
    f[12:78] = texture(66, 160, 1)
    assert picture_area(f) == (0, 12, 160, 78)
    assert picture_area(texture(90, 160, 2)) == (0, 0, 160, 90)  # no bars: the whole frame


@pytest.mark.parametrize("corner", ["tl", "tr", "bl", "br"])
def test_find_insets_locates_a_picture_in_picture_in_each_corner(corner):
    h, w = 160, 284
    frame = texture(h, w, 3)
    ih, iw = int(0.3 * h), int(0.3 * w)
    y = 5 if corner[0] == "t" else h - ih - 5
    x = 8 if corner[1] == "l" else w - iw - 8
    frame[y:y + ih, x:x + iw] = texture(ih, iw, 4) // 2 + 100
    boxes = find_insets(frame)
    truth = np.array([x / w, y / h, (x + iw) / w, (y + ih) / h])
    assert boxes and np.abs(np.array(boxes[0]) - truth).max() < 0.03, (boxes, truth)
    # a plain picture rarely has two straight edges meeting that run to the frame's edges (a false inset
    # only adds one region vector, which matches nothing)
    assert sum(bool(find_insets(texture(h, w, s))) for s in range(30)) <= 4


def test_region_boxes_fixed_regions_then_insets():
    frame = texture(160, 284, 6)
    regions = region_boxes(frame)
    assert [REGION_KINDS[r.kind] for r in regions[:9]] == list(REGION_KINDS[:9])
    whole = regions[0].box
    assert whole == (0.0, 0.0, 1.0, 1.0)
    x0, _, x1, _ = regions[2].box  # the 9:16 strip of a 16:9 picture
    assert abs((x1 - x0) * 284 - 160 * 9 / 16) < 1.5


def test_thumbnail_of_a_mirrored_crop_is_the_mirrored_thumbnail():
    crops = np.stack([texture(96, 96, 7), texture(96, 96, 8)])
    t = thumbnails(crops, 8)
    tf = thumbnails(crops[:, :, ::-1].copy(), 8)
    assert np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    cnn = np.ones((2, 4), np.float32)
    v = np.hstack([cnn * 0.5, t * np.sqrt(0.5)])
    vf = np.hstack([cnn * 0.5, tf * np.sqrt(0.5)])
    assert np.abs(mirrored(v, 8) - vf).max() < 0.02


def test_shot_regions_one_block_per_shot():
    r = shot_regions([texture(90, 160, 9), texture(90, 160, 10)], 64, 8)
    assert r.crops.shape[1:] == (64, 64, 3) and r.crops.dtype == np.uint8
    assert len(r.shot) == len(r.kind) == len(r.boxes) == len(r.thumbs) == len(r.crops)
    assert sorted(set(r.shot.tolist())) == [0, 1] and (np.diff(r.shot) >= 0).all()


# ------------------------------------------------------------------ alignment (pure)


def pairs(q, t, sim):
    n = len(q)
    return ShotPairs(np.array(q), np.array(t), np.array(sim, np.float32), np.zeros(n, np.int8), np.zeros(n, np.int8),
                     np.zeros(n, bool))


def test_chains_keep_time_order_and_find_a_second_copy():
    # shots 0-2 of the query match 3-5 of the other in order; a stray match (1 -> 0) breaks the order;
    # shots 6-7 match 1-2 again (the same footage used twice)
    p = pairs([0, 1, 2, 1, 6, 7], [3, 4, 5, 0, 1, 2], [0.9, 0.95, 0.9, 0.8, 0.9, 0.9])
    found = chains(p, 0.75, 3)
    assert [p.q[c].tolist() for c in found[:2]] == [[0, 1, 2], [6, 7]]
    assert [p.t[c].tolist() for c in found[:2]] == [[3, 4, 5], [1, 2]]


def test_time_map_from_shared_cuts_gives_speed_and_offset():
    q = np.array([[0, 2], [2, 5], [5, 6], [6, 9]], float)  # the copy, played 2x slower, starting at 10 s there
    t = np.array([[0, 10], [10, 11], [11, 12.5], [12.5, 13], [13, 14.5]], float)
    a, b = time_map(q, t, np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4]))  # t = a q + b on the shared cuts
    assert (round(a, 3), round(b, 3)) == (0.5, 10.0)
    assert time_map(q, t, np.array([0, 2]), np.array([1, 3])) is None  # no consecutive pair: no shared cut


def test_montage_needs_three_separate_parts():
    seg = lambda other, a, b: Segment(other, "copies", a, b, 0, b - a, 0.9, 1, 1.0, "excerpt")
    three = montage_marked([seg("a", 0, 2), seg("b", 2, 4), seg("c", 4, 6)])
    assert all(s.edit == "montage+excerpt" for s in three)
    same_part = montage_marked([seg("a", 0, 6), seg("a-copy", 0, 6), seg("a-grade", 0.1, 6)])
    assert all(s.edit == "excerpt" for s in same_part)


def test_copy_pairs_group_transitively_and_mask_both_orders():
    cp = CopyPairs.from_pairs([(0, 2), (2, 3)], 5)  # 0 ~ 2 ~ 3: one group; 1 and 4 in none
    assert len(cp) == 3
    m = cp.mask(np.array([[2, 1, 0, -1, 3]]))
    assert m[0, 0, 2] and m[0, 2, 0] and m[0, 0, 4] and m[0, 2, 4]
    assert not m[0, 1].any() and not m[0, 3].any() and m.sum() == 6 + 3  # 3 pairs both ways + the diagonal


# ------------------------------------------------------------------ old shards


def test_schema_1_shard_reads_and_gives_keyframe_rows(tmp_path):
    """A shard written by reelsim before regions (schema 1, tests/data/shard-schema1.h5, made by that code)."""
    layout = StoreLayout(tmp_path)
    path = layout.shard("old-clip")
    path.parent.mkdir(parents=True)
    shutil.copy(DATA / "shard-schema1.h5", path)
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == 1 and "regions" not in f
    assert check_shard(layout, path) == ("old-clip", None)
    assert read_item_features(tmp_path, "old-clip")["visual"].shape == (1280,)
    assert len(read_shots(tmp_path, "old-clip")["shots"]) == 2
    rec = read_regions(path, "old-clip")
    assert rec["regions"] is False and list(rec["kind"]) == ["keyframe", "keyframe"]
    assert rec["vectors"].shape == (2, 1280) and np.allclose(np.linalg.norm(rec["vectors"], axis=1), 1, atol=1e-5)


# ------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def copy_store(tmp_path_factory, dask_client):
    d = tmp_path_factory.mktemp("copies")
    kw = dict(n_shots=4, shot_s=1.2, size=(256, 144))
    src = E.build_source(d / "src.mp4", 11, **kw)
    host = E.build_source(d / "host.mp4", 12, **kw)
    E.build_source(d / "other.mp4", 13, **kw)
    truth = {"pip": E.picture_in_picture(src, host, d / "pip.mp4", scale=0.4, corner="tr"),
             "mirror": E.mirror_crop(src, d / "mirror.mp4", crop=0.85),
             "excerpt": E.excerpt(src, d / "excerpt.mp4", start_s=1.5, dur_s=2.4)}
    rows = [{"id": i, "video": f"{i}.mp4"} for i in ("src", "pip", "mirror", "other")]
    (d / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (d / "new.jsonl").write_text(json.dumps({"id": "excerpt", "video": "excerpt.mp4"}) + "\n")
    store = d / "store"
    report = run_items([d / "catalog.jsonl"], store, dask_client, Config().with_overrides(fusion={"k": 5}))
    assert report.summary()["failed"] == 0
    return d, store, truth


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def test_run_stores_regions_and_finds_the_picture_in_picture(copy_store):
    _, store, truth = copy_store
    with h5py.File(StoreLayout(store).shard("pip"), "r") as f:
        assert f.attrs["schema_version"] == 2
        kinds = json.loads(f["regions"].attrs["kinds"])
        assert f["regions/vectors"].dtype == np.float16 and "inset" in [kinds[k] for k in f["regions/kind"][()]]
    s = api.open_store(store)
    found = {m.other: m for m in s.matches("pip")}
    assert "src" in found and "other" not in found
    m = found["src"]
    assert m.relation == "copies" and "picture-in-picture" in m.edit
    piece = truth["pip"].pieces[0]
    assert overlap((m.item_start, m.item_end), (piece.dst_start, piece.dst_end)) >= 0.6
    assert overlap((m.other_start, m.other_end), (piece.src_start, piece.src_end)) >= 0.6
    assert {m.other for m in s.matches("src", direction="out")} >= {"pip", "mirror"}
    assert "pip" not in {m.other for m in s.matches("src", direction="in")}  # src does not come from its inset
    assert not s.matches("other")


def test_matches_cli_table_json_and_errors(copy_store):
    _, store, _ = copy_store
    r = reelsim("matches", "mirror", "--store", str(store), "--json")
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    src = [m for m in body["matches"] if m["other"] == "src"]
    assert src and "mirror" in src[0]["edit"] and {"item_start", "other_end", "score", "relation"} <= set(src[0])
    r = reelsim("matches", "pip", "--store", str(store), "--in")
    assert r.returncode == 0 and "src" in r.stdout and "picture-in-picture" in r.stdout
    r = reelsim("matches", "nobody", "--store", str(store))
    assert r.returncode == 2 and "unknown item id 'nobody'" in r.stderr and "Traceback" not in r.stderr
    r = reelsim("matches", "src", "--store", str(store), "--in", "--out")
    assert r.returncode == 2  # argparse: one direction at a time


def test_store_without_copy_index_says_how_to_build_it(copy_store, tmp_path):
    _, store, _ = copy_store
    bare = tmp_path / "bare"
    shutil.copytree(store, bare)
    shutil.rmtree(StoreLayout(bare).copies_dir)
    with pytest.raises(StoreError, match="reelsim lists"):
        api.open_store(bare).matches("src")
    assert copy_marks(bare, "src", ["pip"]) == {}  # `similar` of an older store: no marks, no error
    r = reelsim("matches", "src", "--store", str(bare))
    assert r.returncode == 2 and "reelsim lists" in r.stderr


def test_verify_checks_the_copy_index(copy_store, tmp_path):
    _, store, _ = copy_store
    work = tmp_path / "verify"
    shutil.copytree(store, work)
    assert reelsim("verify", "--store", str(work)).returncode == 0
    StoreLayout(work).copy_table.write_bytes(b"not parquet")
    r = reelsim("verify", "--store", str(work), "--json")
    body = json.loads(r.stdout)
    assert r.returncode == 3 and body["redo"]["lists"] is True
    assert any(p["path"].endswith("matches.parquet") for p in body["problems"])


def test_similar_marks_copies_with_their_span(copy_store):
    _, store, _ = copy_store
    neighbors = api.open_store(store).similar("src", k=3)
    marks = copy_marks(store, "src", [n.item for n in neighbors])
    assert "other" not in marks and {"pip", "mirror"} & set(marks)
    rows = {r["item"]: r for r in neighbors_json("src", neighbors, marks)["neighbors"]}
    for i, r in rows.items():
        assert r.get("copy", False) == (i in marks)
        if i in marks:
            assert r["copy_span"]["item_end"] > r["copy_span"]["item_start"]


def test_dedup_collapses_copies_that_the_fused_score_misses(copy_store, tmp_path):
    _, store, _ = copy_store
    work = tmp_path / "dedup"
    shutil.copytree(store, work)
    cp = copy_pairs(work, api.open_store(work).ids())
    assert cp is not None and len(cp) >= 2
    # 0.999: no fused score of these items reaches it, so only copy evidence can collapse
    def stored_list(item: str) -> list[str]:
        t = api.open_store(work).lists().to_pydict()
        return [n for i, n in zip(t["item"], t["neighbor"]) if i == item]

    relist(work, {"dedup": 0.999})
    assert len({"src", "pip", "mirror"} & set(stored_list("other"))) == 1, stored_list("other")
    relist(work, {"dedup": None})
    assert {"src", "pip", "mirror"} <= set(stored_list("other"))


def test_report_puts_matched_shots_side_by_side(copy_store, tmp_path):
    _, store, _ = copy_store
    got = write_html_report(store, tmp_path / "r.html", items=["src", "other"], k=3, progress=False)
    html = (tmp_path / "r.html").read_text()
    assert 'data-copy="pip"' in html and "Matched shots there" in html and got["images"] > 0
    section = html.split('data-item="other"')[1]
    assert "data-copy=" not in section


def test_add_finds_the_copies_of_a_new_excerpt(copy_store, tmp_path):
    d, store, truth = copy_store
    work = tmp_path / "add"
    shutil.copytree(store, work)
    r = reelsim("add", str(d / "new.jsonl"), "--store", str(work), "--workers", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    found = {m.other: m for m in api.open_store(work).matches("excerpt")}
    assert "src" in found and found["src"].relation == "copies" and "excerpt" in found["src"].edit
    piece = truth["excerpt"].pieces[0]
    assert overlap((found["src"].other_start, found["src"].other_end), (piece.src_start, piece.src_end)) >= 0.5
    assert "excerpt" in {m.other for m in api.open_store(work).matches("src")}
    assert len([1 for i, s in read_copy_table(StoreLayout(work).copy_table) if (i, s.other) == ("src", "excerpt")]) \
        == len([1 for i, s in read_copy_table(StoreLayout(work).copy_table) if (i, s.other) == ("excerpt", "src")])
    with pytest.raises(UnknownItemError):
        api.open_store(work).matches("no-such-item")
