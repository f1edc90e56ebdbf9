"""Tests for reelsim.similarity: fusion rule, missing modalities, FAISS path, I/O."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from reelsim.errors import ReelsimError, StoreError, UnknownItemError, UsageError
from reelsim.similarity import (
    CatalogEmbeddings,
    EmbeddingError,
    build_index,
    check_weights,
    fuse,
    load_catalog,
    load_index,
    normalise,
    normalise_queries,
    rows_of,
    save_catalog,
    save_index,
    search_vectors,
)
from reelsim.similarity.fusion import CENTRE_PRIOR
from reelsim.similarity.search import search
from reelsim.storage.lists import COLUMNS, neighbor_rows, read_jsonl, read_parquet, write_jsonl, write_parquet

W = {"visual": 1.0, "audio": 0.5, "image": 1.0, "text": 1.0}
DIMS = {"visual": 24, "audio": 12, "image": 16, "text": 20}
# item kind -> modalities it has
KINDS = {
    "video": ("visual", "audio", "image", "text"),
    "silent": ("visual", "image", "text"),
    "product": ("image", "text"),
    "note": ("text",),
}


def make_catalog(n=300, seed=0, n_clusters=6, p=(0.45, 0.1, 0.35, 0.1)):
    """Gaussian-mixture embeddings with an all-positive offset (like CNN features).

    Returns the raw catalog and each item's kind.
    """
    rng = np.random.default_rng(seed)
    label = rng.integers(n_clusters, size=n)
    kind = rng.choice(list(KINDS), size=n, p=p)
    ids = [f"{k}-{i:04d}" for i, k in enumerate(kind)]
    vectors, masks = {}, {}
    for m, d in DIMS.items():
        centres = rng.normal(scale=2.0, size=(n_clusters, d))
        x = 10.0 + centres[label] + rng.normal(size=(n, d))
        mask = np.array([m in KINDS[k] for k in kind])
        vectors[m] = np.where(mask[:, None], x, 0).astype(np.float32)
        masks[m] = mask
    return CatalogEmbeddings(ids, vectors, masks), kind


def brute_force(cat, weights, k):
    """The exact rule over all pairs, in float64: list of [(id, score)] per item."""
    w = check_weights(weights)
    num = np.zeros((cat.n, cat.n))
    den = np.zeros((cat.n, cat.n))
    for m, u in cat.vectors.items():
        if w[m] > 0:
            u = u.astype(np.float64)
            both = np.outer(cat.masks[m], cat.masks[m])
            num += w[m] * (u @ u.T) * both
            den += w[m] * both
    score = np.where(den > 0, num / np.where(den > 0, den, 1), -np.inf)
    np.fill_diagonal(score, -np.inf)
    id_rank = np.argsort(np.argsort(np.array(cat.ids)))  # numpy and Python order str alike
    order = np.lexsort((np.broadcast_to(id_rank, score.shape), -np.round(score, 6)), axis=1)
    return [[(cat.ids[j], score[i, j]) for j in order[i, :k] if score[i, j] > -np.inf] for i in range(cat.n)]


@pytest.fixture(scope="module")
def catalog():
    raw, kind = make_catalog()
    cat = normalise(raw)
    return raw, cat, kind, build_index(fuse(cat, W))


def _unit(c):
    """A unit vector in 2-D whose cosine with (1, 0) is c."""
    return [c, math.sqrt(1 - c * c)]


@pytest.fixture
def hand_made():
    """Products p1, p2 (image+text) and videos v1, v2 (all four), already unit vectors.

    v1 shows product p1: identical image and text. Cosines with p1 (= with v1
    in image and text): p2 image 0.8, text 0.6; v2 image 0.5, text 0.7.
    v1 and v2 also share visual 0.9 and audio 0.4.
    """
    ids = ["p1", "p2", "v1", "v2"]
    rows = {  # modality -> rows of p1, p2, v1, v2 (None: lacks it)
        "visual": [None, None, _unit(1), _unit(0.9)],
        "audio": [None, None, _unit(1), _unit(0.4)],
        "image": [_unit(1), _unit(0.8), _unit(1), _unit(0.5)],
        "text": [_unit(1), _unit(0.6), _unit(1), _unit(0.7)],
    }
    vectors = {m: np.array([r or [0, 0] for r in rs], np.float32) for m, rs in rows.items()}
    masks = {m: np.array([r is not None for r in rs]) for m, rs in rows.items()}
    means = {m: np.zeros(2, np.float32) for m in rows}  # declared already normalised
    return CatalogEmbeddings(ids, vectors, masks, means)


def test_fused_inner_product_is_weighted_cosine_sum(hand_made, catalog):
    xb = fuse(hand_made, W)
    assert xb.dtype == np.float32 and xb.shape == (4, 8)
    assert xb[2] @ xb[3] == pytest.approx(1.0 * 0.9 + 0.5 * 0.4 + 1.0 * 0.5 + 1.0 * 0.7, abs=1e-6)
    assert xb[0] @ xb[1] == pytest.approx(0.8 + 0.6, abs=1e-6)
    assert xb[0] @ xb[2] == pytest.approx(2.0, abs=1e-6)
    # and on random data: <fused_a, fused_b> == sum_m w_m <u_m(a), u_m(b)>
    _, cat, _, _ = catalog
    xb = fuse(cat, W)
    expect = sum(W[m] * (u[:50] @ u[50:100].T) for m, u in cat.vectors.items())
    np.testing.assert_allclose(xb[:50] @ xb[50:100].T, expect, atol=1e-5)


def test_score_is_weighted_mean_over_shared_modalities(hand_made):
    index = build_index(fuse(hand_made, W))
    p1, p2, v1, v2 = search(hand_made, index, W, rows=None, k=3)

    def check(res, expected):
        assert [n.item for n in res] == [item for item, _ in expected]
        assert [n.score for n in res] == pytest.approx([score for _, score in expected], abs=1e-6)

    # product vs product: image and text only, no penalty for lacking video/audio
    check(p1, [("v1", 1.0), ("p2", (0.8 + 0.6) / 2), ("v2", (0.5 + 0.7) / 2)])
    assert p1[1].modalities == pytest.approx({"image": 0.8, "text": 0.6}, abs=1e-6)
    # video vs product: the product is not penalised for lacking visual and audio
    video_video = (1.0 * 0.9 + 0.5 * 0.4 + 1.0 * 0.5 + 1.0 * 0.7) / 3.5
    check(v1, [("p1", 1.0), ("p2", 0.7), ("v2", video_video)])
    assert set(v1[0].modalities) == {"image", "text"}
    assert v1[2].modalities == pytest.approx({"visual": 0.9, "audio": 0.4, "image": 0.5, "text": 0.7}, abs=1e-6)
    # v2-p2 (image ~0.92, text ~0.99) beats v2-v1 (0.657) beats v2-p1 (0.6)
    assert [n.item for n in v2] == ["p2", "v1", "p1"] and v2[2].score == pytest.approx(0.6, abs=1e-6)


def test_normalise_centres_and_unit_rows(catalog):
    raw, cat, _, _ = catalog
    x, mask = raw.vectors["visual"], raw.masks["visual"]
    u = x[mask] / np.linalg.norm(x[mask], axis=1, keepdims=True)
    assert (u @ u.T).min() > 0.9  # raw CNN-like features: every cosine close to 1
    for m, u in cat.vectors.items():
        np.testing.assert_allclose(np.linalg.norm(u[cat.masks[m]], axis=1), 1, atol=1e-5)
        assert not u[~cat.masks[m]].any()
        present = raw.vectors[m][raw.masks[m]]
        np.testing.assert_allclose(cat.means[m], present.sum(axis=0) / (len(present) + CENTRE_PRIOR), rtol=1e-5)
    v = cat.vectors["visual"][cat.masks["visual"]]
    assert (v @ v.T).min() < -0.3  # centred: dissimilar clusters now have negative cosines
    # a new query normalised with the catalog means matches the catalog's own row
    uq, mq = normalise_queries(cat, {m: raw.vectors[m][:5] for m in ("image", "text")})
    np.testing.assert_allclose(uq["image"], cat.vectors["image"][:5], atol=1e-6)
    assert not mq["visual"].any() and np.array_equal(mq["text"], cat.masks["text"][:5])


def test_row_equal_to_mean_or_zero_counts_as_missing():
    # row 2 equals the (shrunk) mean of rows 0-2: (1 + 3 + 1/3) / (3 + CENTRE_PRIOR) = 1/3
    x = np.array([[1, 0], [3, 0], [1 / 3, 0], [0, 0]], np.float32)
    cat = normalise(CatalogEmbeddings(list("abcd"), {"audio": x}, {"audio": np.array([True, True, True, True])}))
    assert cat.masks["audio"].tolist() == [True, True, False, False]
    assert cat.vectors["audio"].tolist() == [[1, 0], [1, 0], [0, 0], [0, 0]]


def test_missing_modality_does_not_change_ranking_among_products(catalog):
    raw, cat, kind, index = catalog
    # drop the visual modality from half of the videos (which products never share);
    # queries: products, and the videos that keep it
    drop = np.flatnonzero(kind == "video")[::2]
    queries = np.setdiff1d(np.flatnonzero((kind == "product") | (kind == "video")), drop)
    before = search(cat, index, W, queries, k=cat.n)
    masks = dict(raw.masks)
    vectors = dict(raw.vectors)
    masks["visual"] = masks["visual"].copy()
    masks["visual"][drop] = False
    vectors["visual"] = np.where(masks["visual"][:, None], raw.vectors["visual"], 0).astype(np.float32)
    cat2 = normalise(CatalogEmbeddings(raw.ids, vectors, masks))
    after = search(cat2, build_index(fuse(cat2, W)), W, queries, k=cat.n)
    only_products = lambda res: [[(n.item, n.score) for n in r if n.item.startswith("product")] for r in res]
    assert only_products(before) == only_products(after)
    assert any(len(r) > 5 for r in only_products(before))


def test_items_sharing_no_modality_are_never_neighbours(catalog):
    _, cat, kind, index = catalog
    w = dict(W, text=0.0)  # "note" items have text only
    idx = build_index(fuse(cat, w))
    res = search(cat, idx, w, None, k=cat.n)
    assert all(not n.item.startswith("note") for r in res for n in r)
    assert all(r == [] for r, k in zip(res, kind) if k == "note")


def test_weight_zero_disables_modality(catalog):
    _, cat, kind, index = catalog
    w = dict(W, text=0.0, visual=0.0, audio=0.0)
    idx = build_index(fuse(cat, w))
    assert idx.d == DIMS["image"]
    products = np.flatnonzero(kind == "product")[:10]
    for q, res in zip(products, search(cat, idx, w, products, k=5)):
        for n in res:
            assert set(n.modalities) == {"image"}
            cos = cat.vectors["image"][q] @ cat.vectors["image"][rows_of(cat, [n.item])[0]]
            assert n.score == pytest.approx(cos, abs=1e-5)
    with pytest.raises(StoreError, match="rebuild"):
        search(cat, index, w, products, k=5)  # index fused with other modalities


@pytest.mark.parametrize("k, oversample", [(5, 1), (5, 5), (10, 3), (7, 100)])
def test_faiss_candidates_match_brute_force(catalog, k, oversample):
    # On this data one flat search over all items with 5*k+1 candidates finds
    # only ~30% of a video's true neighbours (products crowded out by videos);
    # the per-group search must be exact.
    _, cat, _, index = catalog
    expected = brute_force(cat, W, k)
    got = search(cat, index, W, None, k, oversample=oversample, batch_size=64)
    for exp, res in zip(expected, got):
        assert [n.item for n in res] == [i for i, _ in exp]
        np.testing.assert_allclose([n.score for n in res], [s for _, s in exp], atol=2e-6)


def test_self_excluded_k_respected_and_deterministic(catalog):
    _, cat, _, index = catalog
    rows = np.arange(0, cat.n, 3)
    a = search(cat, index, W, rows, k=4, batch_size=7)
    b = search(cat, index, W, rows, k=4)
    assert a == b
    for q, res in zip(rows, a):
        assert 1 <= len(res) <= 4
        assert cat.ids[q] not in [n.item for n in res]
        assert [n.score for n in res] == sorted((n.score for n in res), reverse=True)


def test_ties_broken_by_id():
    raw, _ = make_catalog(n=60, seed=3)
    vectors = {m: np.concatenate([x, x[:1], x[:1]]) for m, x in raw.vectors.items()}
    masks = {m: np.concatenate([x, x[:1], x[:1]]) for m, x in raw.masks.items()}
    cat = normalise(CatalogEmbeddings(raw.ids + ["dup-z", "dup-a"], vectors, masks))
    (res,) = search(cat, build_index(fuse(cat, W)), W, [0], k=3)
    assert [n.item for n in res[:2]] == ["dup-a", "dup-z"]  # exact copies of the query
    assert res[0].score == res[1].score == pytest.approx(1.0, abs=1e-6)


def test_search_vectors_matches_catalog_search(catalog):
    raw, cat, _, index = catalog
    xq = {m: raw.vectors[m][:4] for m in raw.vectors}
    got = search_vectors(cat, index, W, xq, k=6)
    own = search(cat, index, W, [0, 1, 2, 3], k=5)
    for q, (g, o) in enumerate(zip(got, own)):
        assert g[0].item == cat.ids[q] and g[0].score == pytest.approx(1.0, abs=1e-5)
        assert [n.item for n in g[1:]] == [n.item for n in o]


def test_lists_round_trip_parquet_and_jsonl(tmp_path, catalog):
    _, cat, _, index = catalog
    rows_q = rows_of(cat, ["product-0003", "video-0000"])
    rows = neighbor_rows([cat.ids[r] for r in rows_q], search(cat, index, W, rows_q, k=3))
    rows.append(dict(rows[0], item="é 東京/../x", neighbor="a\nb"))
    assert len(rows) == 7 and all(tuple(r) == COLUMNS for r in rows)
    assert [(r["item"], r["rank"]) for r in rows[:4]] == [("product-0003", 1), ("product-0003", 2),
                                                         ("product-0003", 3), ("video-0000", 1)]
    assert rows[0]["score_visual"] is None and rows[0]["score_image"] is not None
    write_parquet(rows, tmp_path / "n.parquet")
    write_jsonl(rows, tmp_path / "n.jsonl")
    assert read_parquet(tmp_path / "n.parquet") == rows
    assert read_jsonl(tmp_path / "n.jsonl") == rows
    assert sorted(os.listdir(tmp_path)) == ["n.jsonl", "n.parquet"]  # no temp files left
    write_parquet([], tmp_path / "empty.parquet")
    assert read_parquet(tmp_path / "empty.parquet") == []
    with pytest.raises(UsageError):
        write_jsonl([{"item": "a"}], tmp_path / "bad.jsonl")
    assert not (tmp_path / "bad.jsonl").exists()


def test_catalog_and_index_round_trip_with_awkward_ids(tmp_path):
    raw, _ = make_catalog(n=40, seed=1)
    ids = ["a/b", "../x", "é 東京", "", "tab\tnew\nline"] + raw.ids[5:]
    cat = normalise(CatalogEmbeddings(ids, raw.vectors, raw.masks))
    save_catalog(cat, W, tmp_path / "cat.h5")
    back, w = load_catalog(tmp_path / "cat.h5")
    assert back.ids == ids and w == check_weights(W)
    for m in cat.vectors:
        assert np.array_equal(back.vectors[m], cat.vectors[m]) and back.vectors[m].dtype == np.float32
        assert np.array_equal(back.masks[m], cat.masks[m]) and back.masks[m].dtype == bool
        assert np.array_equal(back.means[m], cat.means[m])
    index = build_index(fuse(cat, W))
    save_index(index, tmp_path / "fused.faiss")
    assert search(back, load_index(tmp_path / "fused.faiss"), w, None, k=5) == search(cat, index, W, None, k=5)
    assert sorted(os.listdir(tmp_path)) == ["cat.h5", "fused.faiss"]
    assert rows_of(back, ["../x", "a/b"]).tolist() == [1, 0]


@pytest.mark.parametrize("change", ["nan", "inf", "rows", "mask_shape", "mask_dtype", "stray_row", "dup_id",
                                    "modality", "mask_keys", "strings"])
def test_bad_embeddings_raise(change):
    x = np.ones((3, 4), np.float32)
    ids, vectors, masks = ["a", "b", "c"], {"text": x}, {"text": np.array([True, True, False])}
    x[2] = 0
    if change == "nan":
        x[1, 2] = np.nan
    elif change == "inf":
        vectors["text"] = x.astype(np.float64) * 1e300  # overflows float32
    elif change == "rows":
        vectors["image"], masks["image"] = np.ones((2, 4), np.float32), np.array([True, True, True])
    elif change == "mask_shape":
        masks["text"] = np.array([True, True])
    elif change == "mask_dtype":
        masks["text"] = np.array([1, 1, 0])
    elif change == "stray_row":
        masks["text"] = np.array([True, False, False])
    elif change == "dup_id":
        ids = ["a", "b", "a"]
    elif change == "modality":
        vectors["smell"], masks["smell"] = x, masks["text"]
    elif change == "mask_keys":
        masks["image"] = masks["text"]
    elif change == "strings":
        vectors["text"] = np.array([["x"] * 4] * 3)
    with pytest.raises(EmbeddingError) as err:
        CatalogEmbeddings(ids, vectors, masks)
    assert isinstance(err.value, ReelsimError)


def test_bad_arguments_raise(tmp_path, catalog):
    raw, cat, _, index = catalog
    for bad in ({"visual": -1.0}, {"smell": 1.0}, {"text": float("nan")}, {"visual": 0, "text": 0}):
        with pytest.raises(UsageError):
            fuse(cat, bad)
    with pytest.raises(UsageError, match="normalise"):
        fuse(raw, W)
    for kw in ({"k": 0}, {"k": 2, "oversample": 0}, {"k": 2.5}):
        with pytest.raises(UsageError):
            search(cat, index, W, [0], **kw)
    with pytest.raises(UsageError):
        search(cat, index, W, [cat.n], k=2)
    with pytest.raises(EmbeddingError):
        search_vectors(cat, index, W, {"text": np.ones((2, 3), np.float32)}, k=2)  # wrong d
    with pytest.raises(UnknownItemError):
        rows_of(cat, ["nope"])
    with pytest.raises(StoreError):
        load_catalog(tmp_path / "missing.h5")
    (tmp_path / "junk.faiss").write_bytes(b"not an index")
    with pytest.raises(StoreError):
        load_index(tmp_path / "junk.faiss")
    with pytest.raises(StoreError):
        save_index(index, tmp_path / "no" / "such" / "dir.faiss")


def test_tiny_catalog_keeps_near_duplicates_close():
    # Full centring of two items makes them exactly opposite; the shrunk mean must not.
    rng = np.random.default_rng(3)
    base = 5 + rng.random(32, dtype=np.float32)
    x = np.stack([base, base + 0.05 * rng.random(32, dtype=np.float32)]).astype(np.float32)
    cat = normalise(CatalogEmbeddings(["orig", "edit"], {"visual": x}, {"visual": np.array([True, True])}))
    u = cat.vectors["visual"]
    assert float(u[0] @ u[1]) > 0.9
