"""Catalog-scale similarity: index choice, approximate search, kNN job resume, incremental adds, hygiene, PCA."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import reelsim, run_items
from test_similarity import W, make_catalog

import reelsim as api
from reelsim.config import Config, FusionConfig
from reelsim.errors import UsageError
from reelsim.similarity import (
    CatalogEmbeddings,
    GroupedIndex,
    Hygiene,
    build_index,
    choose_index,
    fuse,
    knn_graph,
    load_catalog,
    normalise,
    normalise_queries,
    save_catalog,
)
from reelsim.similarity.hygiene import blocked_rows, pair_scores
from reelsim.similarity.incremental import add_vectors
from reelsim.similarity.knn import recall_at
from reelsim.similarity.lookup import Lookup
from reelsim.similarity.rebuild import index_and_lists
from reelsim.storage.lists import read_parquet


def exact_lists(cat, k=10):
    return knn_graph(cat, build_index(fuse(cat, W)), W, k)


def make_store(path: Path, cat) -> Path:
    """A store holding only a normalised catalog (what `reelsim run` leaves before the index)."""
    (path / "index").mkdir(parents=True)
    save_catalog(cat, W, path / "index" / "catalog.h5")
    meta = {i: {"kind": i.split("-")[0], "title": i} for i in cat.ids}
    (path / "index" / "items.json").write_text(json.dumps(meta), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def big():
    """3000 items, groups of ~1400 and ~1000 (approximate indexes) plus small exact groups."""
    raw, kind = make_catalog(n=3000, seed=5)
    return raw, normalise(raw), kind


def test_index_choice_by_size_and_override():
    assert choose_index(10_000, 256).factory == "Flat"
    plan = choose_index(1_000_000, 256)
    assert (plan.factory, plan.params, plan.kind, plan.k_factor) == ("IVF1024,PQ64x4fs", {"nprobe": 4}, "ivfpqfs", 6)
    assert plan.train_size == 1024 * 40
    assert choose_index(100_000, 256).factory == "IVF256,PQ64x4fs"
    assert choose_index(100_000, 100).factory == "IVF1024,Flat"  # 100 dimensions do not split in pairs of 4
    small_budget = choose_index(1_000_000, 256, memory_budget_bytes=2**24)
    assert small_budget.factory.startswith("OPQ") and ",PQ" in small_budget.factory
    assert choose_index(500, 64, override="IVF64,Flat").params == {"nprobe": 16}
    assert choose_index(500, 64, override="IVF64,PQ16x4fs").k_factor == 6  # approximate codes: more candidates
    assert choose_index(500, 64, override="IVF64,PQ16x4fs,RFlat").k_factor == 1
    assert choose_index(500, 64, override="hnsw").factory == "HNSW32"
    with pytest.raises(UsageError):
        choose_index(500, 64, override="IVF64,Nonsense")


@pytest.mark.parametrize("spec", ["IVF16,Flat", "HNSW32"])
def test_exact_and_approximate_paths_agree(big, spec):
    _, cat, _ = big
    exact = exact_lists(cat)
    gi = GroupedIndex.build(cat, W, override=spec)
    kinds = {p.factory for p in gi.plans.values()}
    assert spec in kinds  # the large groups really use the approximate index
    approx = knn_graph(cat, gi, W, 10, batch_size=700)
    assert recall_at(approx.I, exact.I, 10) >= 0.97
    # a neighbour found by both paths has the same exact score and per-modality cosines
    for q in range(0, cat.n, 7):
        e = dict(zip(exact.I[q].tolist(), exact.S[q].tolist()))
        for j, (i, s) in enumerate(zip(approx.I[q].tolist(), approx.S[q].tolist())):
            if i in e:
                assert s == e[i]
                assert approx.cos["image"][q, j] == exact.cos["image"][q, list(exact.I[q]).index(i)] or \
                    np.isnan(approx.cos["image"][q, j])
        assert list(approx.S[q][approx.I[q] >= 0]) == sorted(approx.S[q][approx.I[q] >= 0], reverse=True)


def structured(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Vectors with neighbourhoods (as real embeddings have): cluster means + a rank-8 local spread + noise."""
    rng = np.random.default_rng(seed)
    label = rng.integers(n // 200, size=n)
    means, spread = rng.normal(size=(n // 200, d)), rng.normal(size=(n // 200, 8, d)) * 0.6
    z = rng.normal(size=(n, 8))
    return (means[label] + np.einsum("nr,nrd->nd", z, spread[label]) + 0.1 * rng.normal(size=(n, d))).astype(np.float32)


def test_fast_scan_candidates_are_rescored_exactly():
    """4-bit PQ codes only propose candidates (k_factor * k of them): the lists keep exact scores, recall >= 0.95."""
    n = 6000
    cat = normalise(CatalogEmbeddings([f"i{j:05d}" for j in range(n)], {"visual": structured(n, 64)},
                                      {"visual": np.ones(n, bool)}))
    w = {"visual": 1.0}
    exact = knn_graph(cat, build_index(fuse(cat, w)), w, 10)
    gi = GroupedIndex.build(cat, w, override="ivfpqfs")
    assert [p.factory for p in gi.plans.values()] == ["IVF64,PQ16x4fs"]
    approx = knn_graph(cat, gi, w, 10, oversample=2)
    assert recall_at(approx.I, exact.I, 10) >= 0.95
    both = approx.I == exact.I
    assert both.mean() > 0.8 and np.array_equal(approx.S[both], exact.S[both])  # same neighbour, same exact score


def test_missing_modality_does_not_change_ranking_with_approximate_index(big):
    raw, cat, kind = big
    drop = np.flatnonzero(kind == "video")[::2]
    queries = np.setdiff1d(np.flatnonzero((kind == "product") | (kind == "video")), drop)
    before = knn_graph(cat, GroupedIndex.build(cat, W, override="IVF16,Flat"), W, 30, rows=queries)
    masks, vectors = dict(raw.masks), dict(raw.vectors)
    masks["visual"] = masks["visual"].copy()
    masks["visual"][drop] = False
    vectors["visual"] = np.where(masks["visual"][:, None], raw.vectors["visual"], 0).astype(np.float32)
    cat2 = normalise(CatalogEmbeddings(raw.ids, vectors, masks))
    after = knn_graph(cat2, GroupedIndex.build(cat2, W, override="IVF16,Flat"), W, 30, rows=queries)

    def products(lists):
        return [[(i, s) for i, s in zip(I, S) if i >= 0 and kind[i] == "product"] for I, S in zip(lists.I, lists.S)]

    # the products keep their order and scores; only how many make the top 30 changes with the videos around them
    for b, a in zip(products(before), products(after)):
        short = min(len(a), len(b))
        assert b[:short] == a[:short]
    assert sum(min(len(a), len(b)) for a, b in zip(products(before), products(after))) > 5 * queries.size


def _batch_files(store: Path) -> int:
    return len(list((store / "lists" / ".knn-checkpoint").glob("batch-*.npz")))


def test_killed_knn_job_resumes_with_identical_lists(tmp_path):
    raw, _ = make_catalog(n=5000, seed=9)
    cat = normalise(raw)
    killed, clean = make_store(tmp_path / "killed", cat), make_store(tmp_path / "clean", cat)
    args = ["lists", "--index", "IVF16,Flat", "--knn-batch", "50", "--no-progress", "--lists-format", "parquet,hdf5"]
    proc = subprocess.Popen([sys.executable, "-m", "reelsim.jobs.cli", *args, "--store", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while _batch_files(killed) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done = _batch_files(killed)
    assert 2 <= done < 100 and not (killed / "lists" / "neighbors.parquet").exists()
    assert not (killed / "index" / "index.json").exists()  # a killed job publishes nothing: the store is as it was
    build_id = json.loads((killed / "lists" / ".knn-checkpoint" / "index.json").read_text())["build_id"]

    resumed = json.loads(reelsim(*args, "--store", killed, check=0).stdout)
    assert resumed["resumed"] is True
    assert json.loads((killed / "index" / "index.json").read_text())["build_id"] == build_id  # index reused
    assert not (killed / "lists" / ".knn-checkpoint").exists()
    fresh = json.loads(reelsim(*args, "--store", clean, check=0).stdout)
    assert fresh["resumed"] is False and fresh["index"] == resumed["index"]
    assert read_parquet(killed / "lists" / "neighbors.parquet") == read_parquet(clean / "lists" / "neighbors.parquet")
    assert len(read_parquet(clean / "lists" / "neighbors.parquet")) == 10 * cat.n

    import h5py

    with h5py.File(killed / "lists" / "neighbors.h5") as f:
        assert f["neighbors"].shape == (cat.n, 10) and f["scores"][0, 0] >= f["scores"][0, 9]


def test_checkpoint_of_other_settings_is_not_reused(tmp_path):
    raw, _ = make_catalog(n=400, seed=2)
    store = make_store(tmp_path / "s", normalise(raw))
    index_and_lists(store, FusionConfig(weights=W, k=5, knn_batch=50, lists_formats=("parquet",)))
    ck = store / "lists" / ".knn-checkpoint"
    ck.mkdir()
    (ck / "manifest.json").write_text(json.dumps({"build_id": "other"}))
    (ck / "batch-000000.npz").write_bytes(b"junk")
    out = index_and_lists(store, FusionConfig(weights=W, k=5, knn_batch=50, lists_formats=("parquet",)))
    assert out["resumed"] is False and not ck.exists()
    assert len(read_parquet(store / "lists" / "neighbors.parquet")) == 5 * 400


@pytest.mark.parametrize("hygiene", [{}, {"dedup": 0.9}, {"mmr": 0.5}])
def test_incremental_add_equals_full_rebuild(tmp_path, hygiene):
    raw, _ = make_catalog(n=800, seed=4)
    n0 = 790
    first = CatalogEmbeddings(raw.ids[:n0], {m: v[:n0] for m, v in raw.vectors.items()},
                              {m: v[:n0] for m, v in raw.masks.items()})
    new = CatalogEmbeddings(raw.ids[n0:], {m: v[n0:] for m, v in raw.vectors.items()},
                            {m: v[n0:] for m, v in raw.masks.items()})
    fusion = FusionConfig(weights=W, k=8, knn_batch=256, lists_formats=("parquet",), **hygiene)
    cat0 = normalise(first)
    inc = make_store(tmp_path / "inc", cat0)
    index_and_lists(inc, fusion)
    before = read_parquet(inc / "lists" / "neighbors.parquet")
    out = add_vectors(inc, new, {i: {"kind": "new", "title": i} for i in new.ids}, fusion)
    assert out["added"] == 10 and 0 < out["updated_lists"] < n0
    assert all(v == 8 for v in out["new_neighbors"].values())  # cold items get neighbours at once

    # full rebuild over the same catalog (the catalog's stored transform applied to the new items)
    uq, mq = normalise_queries(cat0, new.vectors)
    full_cat = CatalogEmbeddings(cat0.ids + new.ids, {m: np.concatenate([cat0.vectors[m], uq[m]]) for m in uq},
                                 {m: np.concatenate([cat0.masks[m], mq[m]]) for m in uq}, cat0.means)
    full = make_store(tmp_path / "full", full_cat)
    index_and_lists(full, fusion)
    got, want = read_parquet(inc / "lists" / "neighbors.parquet"), read_parquet(full / "lists" / "neighbors.parquet")
    new_ids = set(new.ids)
    assert [r for r in got if r["item"] in new_ids] == [r for r in want if r["item"] in new_ids]
    assert got == want  # and every existing list too
    assert load_catalog(inc / "index" / "catalog.h5")[0].ids == full_cat.ids
    changed = {r["item"] for r in got if r["item"] not in new_ids} - {
        r["item"] for r in got if r in before}
    assert changed and changed <= {r["item"] for r in got if r["neighbor"] in new_ids}


def _dup_catalog():
    """A query, five re-encodes of one item (tiny noise) and 200 others."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 32)).astype(np.float32)
    anchor = base[0]
    copies = anchor + 0.01 * rng.normal(size=(5, 32)).astype(np.float32)
    query = anchor + 0.6 * rng.normal(size=32).astype(np.float32)
    x = np.concatenate([[query], copies, base[1:]]).astype(np.float32) + 20
    ids = ["q"] + [f"copy-{i}" for i in range(5)] + [f"o-{i:03d}" for i in range(199)]
    return normalise(CatalogEmbeddings(ids, {"visual": x}, {"visual": np.ones(len(ids), bool)}))


def test_dedup_collapses_near_duplicates_and_mmr_diversifies():
    cat = _dup_catalog()
    w = {"visual": 1.0}
    index = build_index(fuse(cat, w))
    plain = knn_graph(cat, index, w, 6, rows=[0])
    names = [cat.ids[i] for i in plain.I[0]]
    assert sum(n.startswith("copy") for n in names) == 5  # the re-encodes fill the list
    dedup = knn_graph(cat, index, w, 6, rows=[0], hygiene=Hygiene(dedup=0.95))
    names = [cat.ids[i] for i in dedup.I[0]]
    assert sum(n.startswith("copy") for n in names) == 1 and len(names) == 6
    assert names[0] == [cat.ids[i] for i in plain.I[0]][0]
    same = knn_graph(cat, index, w, 6, rows=[0], hygiene=Hygiene(mmr=1.0))
    assert same.I.tolist() == plain.I.tolist()
    mmr = knn_graph(cat, index, w, 6, rows=[0], hygiene=Hygiene(mmr=0.3))
    spread = lambda lists: np.nanmean(np.where(np.eye(6, dtype=bool), np.nan,
                                               pair_scores(cat, w, ("visual",), lists.I)[0]))
    assert spread(mmr) < spread(plain) - 0.2
    assert sum(cat.ids[i].startswith("copy") for i in mmr.I[0]) <= 2


def test_blocklist_excludes_items_by_text_embedding():
    from reelsim.extractors.registry import load

    titles = ["Dark chocolate bar 70% cocoa", "Milk chocolate truffles gift box", "Organic bananas, bunch of 6",
              "Wireless noise-cancelling headphones", "Crisp red apples, 1 kg", "Chocolate chip cookies"]
    model = load("text", "minilm-l6-v2", device="cpu")
    text = model.extract(titles)
    blocked = blocked_rows(text, np.ones(len(titles), bool), model.extract(["chocolate"]), 0.45)
    assert blocked.tolist() == [True, True, False, False, False, True]
    cat = normalise(CatalogEmbeddings([f"t{i}" for i in range(6)], {"text": text}, {"text": np.ones(6, bool)}))
    w = {"text": 1.0}
    lists = knn_graph(cat, build_index(fuse(cat, w)), w, 5, blocked=blocked)
    assert not blocked[lists.I[lists.I >= 0]].any()
    assert (lists.I >= 0).sum(axis=1).tolist() == [3, 3, 2, 2, 2, 3]  # the unblocked items, never itself


@pytest.mark.parametrize("whiten", [False, True])
def test_pca_is_stored_and_applied_to_queries(tmp_path, whiten):
    raw, _ = make_catalog(n=400, seed=7)
    cat = normalise(raw, pca_dim=10, whiten=whiten)
    assert set(cat.projections) == {"visual", "audio", "image", "text"}
    assert all(cat.vectors[m].shape[1] == 10 for m in cat.vectors)
    np.testing.assert_allclose(np.linalg.norm(cat.vectors["visual"][cat.masks["visual"]], axis=1), 1, atol=1e-5)
    save_catalog(cat, W, tmp_path / "c.h5")
    back, _ = load_catalog(tmp_path / "c.h5")
    assert all(np.array_equal(back.projections[m], cat.projections[m]) for m in cat.projections)
    uq, mq = normalise_queries(back, {m: raw.vectors[m][:20] for m in raw.vectors})
    for m in uq:
        np.testing.assert_allclose(uq[m], cat.vectors[m][:20], atol=1e-5)
    lists = knn_graph(back, GroupedIndex.build(back, W), W, 5)
    assert (lists.I >= 0).all()
    if whiten:  # whitened components have equal variance on the catalog
        v = cat.vectors["visual"][cat.masks["visual"]]
        var = (v ** 2).mean(axis=0)
        assert var.max() / var.min() < 3


def test_add_embeds_new_items_and_updates_lists(tmp_path, dask_client):
    """`reelsim add` on real text items, against `reelsim lists` rebuilding everything."""
    titles = ["Organic bananas, bunch of 6", "Crisp red apples, 1 kg", "Fresh orchard pears", "Seedless grapes",
              "Wireless noise-cancelling headphones", "True wireless earbuds", "Bluetooth speaker",
              "Dark chocolate bar", "Milk chocolate truffles", "Ground coffee, medium roast"]
    first = tmp_path / "first.jsonl"
    first.write_text("\n".join(json.dumps({"id": f"p{i}", "title": t}) for i, t in enumerate(titles)) + "\n")
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"id": "new-fruit", "title": "Ripe yellow bananas and mangoes"}) + "\n"
                    + json.dumps({"id": "p0", "title": titles[0]}) + "\n")
    store = tmp_path / "store"
    assert run_items([first], store, dask_client, Config().with_overrides(fusion={"k": 3})).exit_code == 0
    added = api.add([str(more)], store, client=dask_client)
    assert "added 1 items (1 already indexed)" in added.describe(store)  # what `reelsim add` prints
    rows = read_parquet(store / "lists" / "neighbors.parquet")
    mine = [r for r in rows if r["item"] == "new-fruit"]
    assert len(mine) == 3 and mine[0]["neighbor"] in {"p0", "p1", "p2", "p3"}
    assert any(r["neighbor"] == "new-fruit" for r in rows if r["item"] == "p0")  # it entered an existing list
    shutil.copytree(store, tmp_path / "rebuilt")  # what `reelsim lists` does: every list from the catalog
    index_and_lists(tmp_path / "rebuilt", FusionConfig(k=3))
    assert read_parquet(tmp_path / "rebuilt" / "lists" / "neighbors.parquet") == rows
    assert [n.item for n in Lookup(store).neighbors("new-fruit", 3)] == [r["neighbor"] for r in mine]
