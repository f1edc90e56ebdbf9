"""Learning from interactions: the log reader, ELSA, the content tower, spaces, evaluation, search."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import reelsim

from reelsim.config import Config, FusionConfig, LearnConfig
from reelsim.errors import BannedQueryError, UsageError
from reelsim.similarity import CatalogEmbeddings, load_catalog
from reelsim.similarity.elsa import interaction_matrix, train_elsa
from reelsim.similarity.evaluate import evaluate
from reelsim.similarity.incremental import add_vectors
from reelsim.similarity.rebuild import index_and_lists
from reelsim.similarity.spaces import (
    add_to_space,
    fit_model,
    save_model,
    space_neighbors,
    train_store,
    write_space_lists,
)
from reelsim.similarity.synthetic import make_catalog, sample_log, save_store
from reelsim.similarity.textsearch import search
from reelsim.similarity.towers import mine_hard_negatives, torch_threads
from reelsim.storage.interactions import InteractionsError, read_interactions

DIMS = {"visual": 24, "image": 24, "text": 16}
#: small and fast: a few seconds per training on 2 cores
FAST = LearnConfig(elsa_dim=16, elsa_epochs=4, tower_hidden=64, tower_dim=32, tower_epochs=6, tower_batch=128,
                   tower_lr=5e-3, finetune_epochs=1, eval_queries=400)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """2000 items, 600 users, ~14k rows, as a store without media plus its log file: (syn, store, log path)."""
    syn = make_catalog(2000, dims=DIMS, seed=3)
    store = tmp_path_factory.mktemp("learn-store")
    save_store(store, syn.raw)
    log = sample_log(syn.topic, syn.popularity, n_users=600, n_interactions=12_000, seed=4)
    return syn, store, log.write(store / "log.csv", syn.raw.ids)


# ---------------------------------------------------------------------------- the log


def test_unknown_items_are_counted_not_fatal(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"user": "u1", "item": "a", "event": "view"}\n{"user": 2, "item": "ghost"}\n'
                    '{"user": "u1", "item": "b", "event": "purchase", "weight": 2.5}\n'
                    '{"user": "u3", "item": "ghost"}\n', encoding="utf-8")
    log = read_interactions(path, known_items=["a", "b", "c"])
    assert (log.n, log.rows_read, log.unknown_rows, log.unknown_item_count, log.unknown_items) == (2, 4, 2, 1, ["ghost"])
    assert log.item.tolist() == [0, 1] and log.weight.tolist() == [1.0, 2.5]
    assert log.quality(("purchase",), None).tolist() == [False, True]
    assert "2 rows with 1 items not in the store were skipped" in log.describe()


@pytest.mark.parametrize("name, text, message", [
    ("empty.csv", "", "empty.csv: the interactions file is empty"),
    ("header.csv", "user,item\n", "has no rows"),
    ("fields.csv", "user,item\nu1,a\nu2,b,extra\n", "fields.csv:3: expected 2 fields"),
    ("weight.csv", "user,item,weight\nu1,a,1\n\nu2,b,lots\n", "weight.csv:4: weight 'lots' is not a number"),
    ("negative.csv", "user,item,weight\nu1,a,-2\n", "negative.csv:2: weight -2.0 must be a finite number >= 0"),
    ("noitem.csv", "user,product\nu1,a\n", "no 'item' column"),
    ("broken.jsonl", '{"user": "u", "item": "a"}\n{"user": "u", "item": \n', "broken.jsonl:2: not valid JSON"),
    ("missing.jsonl", '{"user": "u", "item": "a"}\n\n{"user": "u"}\n', "missing.jsonl:3: item is missing or empty"),
    ("when.csv", "user,item,timestamp\nu,a,2024-01-01T10:00:00\nu,b,yesterday\n",
     "when.csv:3: timestamp 'yesterday' is neither"),
    ("none.csv", "user,item\nu,zz\n", "none of the 1 rows names an item in the store"),
])
def test_bad_logs_are_clear_errors(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InteractionsError, match=message.replace("(", r"\(")):
        read_interactions(path, known_items=["a", "b"])


def test_parquet_rows_and_iso_timestamps(tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({"user": [1, 1, 2], "item": ["b", "a", "a"], "timestamp": ["2024-01-02T00:00:00Z",
                                                                                       "2024-01-01T00:00:00Z", None]}),
                   tmp_path / "log.parquet")
    log = read_interactions(tmp_path / "log.parquet", known_items=["a", "b"])
    assert log.users == ["1", "2"] and log.item[log.order()].tolist() == [0, 1, 0]  # by user, then time
    pq.write_table(pa.table({"user": ["u", None], "item": ["a", "b"]}), tmp_path / "bad.parquet")
    with pytest.raises(InteractionsError, match=r"bad.parquet: row 2: user is missing"):
        read_interactions(tmp_path / "bad.parquet")


def test_learn_config_is_validated():
    with pytest.raises(UsageError, match="learn.loss"):
        LearnConfig(loss="hinge")
    with pytest.raises(UsageError, match="cold_fraction"):
        LearnConfig(cold_fraction=1.0)
    with pytest.raises(UsageError, match="tower_dim"):
        Config().with_settings(["learn.tower_dim=0"])
    cfg = Config().with_settings(["learn.quality_events=purchase,add_to_cart", "learn.quality_weight=3"]).learn
    assert cfg.quality_events == ("purchase", "add_to_cart") and cfg.quality_weight == 3
    assert cfg.training_hash() != LearnConfig().training_hash()
    assert Config().feature_hash() == Config(learn=cfg).feature_hash()  # learning never invalidates shards


# ---------------------------------------------------------------------------- models


def test_elsa_reconstruction_loss_falls_and_groups_items(synth):
    syn, _, _ = synth
    log = sample_log(syn.topic, syn.popularity, n_users=600, n_interactions=12_000, seed=4)
    X = interaction_matrix(log.user, log.item, 600, syn.raw.n)
    with torch_threads(1):
        model = train_elsa(X, dim=16, epochs=5, batch=128, lr=0.1, seed=0, device="cpu")
    assert model.losses[-1] < 0.9 * model.losses[0]
    E = model.embeddings
    used = np.flatnonzero(np.bincount(log.item, minlength=syn.raw.n) >= 5)[:200]
    S = E[used] @ E[used].T
    same = syn.topic[used][:, None] == syn.topic[used][None, :]
    np.fill_diagonal(same, False)
    off = ~np.eye(used.size, dtype=bool)
    assert S[same].mean() > S[off & ~same].mean() + 0.2  # co-engaged items point the same way


def test_tower_beats_raw_content_on_held_out_cold_items(synth):
    syn, store, path = synth
    cat, weights = load_catalog(store / "index" / "catalog.h5")
    log = read_interactions(path, cat.ids)
    result, model = evaluate(cat, log, FAST, weights)
    cold, warm = result["cold"], result["warm"]
    assert cold["learned"]["queries"] >= 100 and warm["elsa"]["queries"] >= 100
    assert cold["learned"]["recall@10"] >= 1.5 * cold["content"]["recall@10"] + 0.005
    assert warm["elsa"]["recall@10"] >= 1.5 * warm["content"]["recall@10"]
    assert model.provenance["metrics"]["tower"]["step2_loss"]  # purchases: the cascade's second step ran


def test_hard_negatives_are_content_neighbours_never_co_engaged():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    a = np.array([0, 0, 1]), np.array([1, 2, 0])
    nearest = np.argsort(-(x @ x[0]))[1:6]  # item 0's five nearest by content
    keys = np.unique(np.r_[0 * 60 + nearest[:2], a[0] * 60 + a[1]])  # its two nearest are co-engaged with it
    hard = mine_hard_negatives(x, np.array([0, 1]), keys, 60, pool=5, per_anchor=3, seed=0)
    assert set(hard) == {0, 1} and hard[0].size == 3
    assert set(hard[0].tolist()) <= set(nearest[2:].tolist())  # never a co-engaged item, never itself


def test_trained_store_gives_the_same_lists_twice(synth, tmp_path):
    syn, store, path = synth
    lists = {}
    quick = dataclasses.replace(FAST, tower_epochs=2)
    for run in ("a", "b"):
        s = tmp_path / run
        save_store(s, syn.raw)
        summary = train_store(s, path, quick)
        assert summary["warm_items"] > 100 and summary["pairs"] > 1000
        prov = json.loads((s / "learned" / "provenance.json").read_text())
        assert prov["interactions"]["sha256"] == summary["interactions_sha256"] and prov["code_version"]
        assert prov["config_hash"] == quick.training_hash()
        for space in ("learned", "blend"):
            write_space_lists(s, space, FusionConfig(k=5, lists_formats=("parquet",)))
            lists[run, space] = pq.read_table(s / "lists" / space / "neighbors.parquet")
    for space in ("learned", "blend"):
        assert lists["a", space].equals(lists["b", space])
        assert lists["a", space].schema.names == list(pq.read_schema(
            tmp_path / "a" / "lists" / space / "neighbors.parquet").names)
    assert not lists["a", "learned"].equals(lists["a", "blend"])
    nbs = space_neighbors(tmp_path / "a", syn.raw.ids[0], 5, "blend")
    table = lists["a", "blend"].to_pylist()
    assert [(n.item, n.score) for n in nbs] == [(r["neighbor"], r["score"]) for r in table if r["item"] == syn.raw.ids[0]]


def test_added_items_get_learned_lists_equal_to_a_rebuild(synth, tmp_path):
    """`reelsim add --space learned`: new items get tower vectors at once; lists equal a full rebuild."""
    syn, _, path = synth
    raw, n0 = syn.raw, syn.raw.n - 20
    part = lambda r: CatalogEmbeddings(raw.ids[r], {m: v[r] for m, v in raw.vectors.items()},
                                       {m: v[r] for m, v in raw.masks.items()})
    store = save_store(tmp_path / "s", part(slice(0, n0)))
    fusion = FusionConfig(k=5, lists_formats=("parquet",))
    index_and_lists(store, fusion)
    cat0 = load_catalog(store / "index" / "catalog.h5")[0]
    log = read_interactions(path, cat0.ids)
    quick = dataclasses.replace(FAST, tower_epochs=2, finetune_epochs=0)
    save_model(store, fit_model(cat0, log, quick), quick, log)
    write_space_lists(store, "learned", fusion)
    new = part(slice(n0, raw.n))
    add_vectors(store, new, {i: {"kind": "product", "title": i} for i in new.ids}, fusion)
    out = add_to_space(store, "learned", fusion)
    assert out["added"] == 20 and 0 < out["updated_lists"] < n0
    got = pq.read_table(store / "lists" / "learned" / "neighbors.parquet").to_pylist()
    write_space_lists(store, "learned", fusion)
    want = pq.read_table(store / "lists" / "learned" / "neighbors.parquet").to_pylist()
    key = lambda rows: [(r["item"], r["neighbor"], r["rank"]) for r in rows]
    assert key(got) == key(want)  # every list, new and old, has the neighbours a rebuild gives
    # scores agree up to float32 rounding (the tower's output depends on the batch shape in its last bits)
    assert max(abs(g["score"] - w["score"]) for g, w in zip(got, want)) <= 2e-6
    assert set(new.ids) <= {r["item"] for r in got}


# ---------------------------------------------------------------------------- search


@pytest.fixture(scope="module")
def text_store(tmp_path_factory):
    from reelsim.extractors.registry import load

    titles = {"anc-headphones": "Wireless noise-cancelling headphones", "earbuds": "True wireless earbuds",
              "bananas": "Organic bananas, bunch of 6", "apples": "Crisp red apples, 1 kg",
              "knife": "Chef's knife, 20 cm", "board": "Oak cutting board", "oranges": "Navel oranges, 2 kg bag"}
    text = load("text", "minilm-l6-v2", device="cpu").extract(list(titles.values()))
    raw = CatalogEmbeddings(list(titles), {"text": text}, {"text": np.ones(len(titles), bool)})
    store = save_store(tmp_path_factory.mktemp("text-store"), raw, titles=titles)
    banned = store / "banned.txt"
    banned.write_text("# phrases we never search for\nhow to make a bomb\n\nbuy illegal drugs\n", encoding="utf-8")
    return store, banned


def test_banned_query_is_refused_and_benign_one_is_not(text_store):
    store, banned = text_store
    hits = search(store, "bluetooth headphones", 3, banned=banned)
    assert hits[0].item == "anc-headphones" and hits[0].title == "Wireless noise-cancelling headphones"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert search(store, "bath bomb gift set", 3, banned=banned)  # 0.42 with "how to make a bomb": allowed
    for query in ("bomb making instructions", "illegal drugs for sale", "where to BUY ILLEGAL DRUGS cheap"):
        with pytest.raises(BannedQueryError, match=r"line (2|4) of"):
            search(store, query, 3, banned=banned)
    with pytest.raises(BannedQueryError):  # a stricter threshold catches a looser paraphrase
        search(store, "how do I build an explosive device", 3, banned=banned, threshold=0.7)
    assert search(store, "how do I build an explosive device", 3, banned=banned, threshold=0.8)


@pytest.mark.slow
def test_cli_train_lists_similar_evaluate_search(synth, text_store, tmp_path):
    syn, _, path = synth
    store = save_store(tmp_path / "s", syn.raw)
    fast = [a for s in ("learn.elsa_dim=16", "learn.tower_epochs=3", "learn.tower_hidden=64",
                        "learn.eval_queries=200") for a in ("--set", s)]
    out = reelsim("train", "--interactions", path, "--store", store, "--json", *fast, check=0)
    assert json.loads(out.stdout)["warm_items"] > 100
    out = reelsim("lists", "--store", store, "--space", "blend", "-k", "4", check=0)
    assert json.loads(out.stdout)["rows"] == 4 * syn.raw.n
    item = syn.raw.ids[0]
    out = reelsim("similar", item, "--store", store, "--space", "learned", "-k", "3", "--json", check=0)
    assert len(json.loads(out.stdout)["neighbors"]) == 3
    out = reelsim("evaluate", "--interactions", path, "--store", store, "--cold-fraction", "0.3", "--json", *fast,
                  check=0)
    result = json.loads(out.stdout)
    assert set(result["cold"]) == {"content", "learned", "popularity"} and result["split"]["cold_items"] > 0
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\nu1,item-0001\nu1\n", encoding="utf-8")
    out = reelsim("train", "--interactions", bad, "--store", store, check=2)
    assert "bad.csv:3: expected 2 fields" in out.stderr
    text, banned = text_store
    out = reelsim("search", "make a bomb", "--store", text, "--banned", banned, check=4)
    assert "refused" in out.stderr and "line 2" in out.stderr
    out = reelsim("search", "fresh fruit", "--store", text, "--banned", banned, "-k", "2", "--json", check=0)
    assert json.loads(out.stdout)["results"][0]["item"] in {"bananas", "apples", "oranges"}
