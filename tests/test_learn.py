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
from reelsim.similarity.ease import EaseSpectrum, ease_weights, top_rows
from reelsim.similarity.elsa import interaction_matrix, train_elsa
from reelsim.similarity.evaluate import evaluate
from reelsim.similarity.heldout import co_engagement, last_rows
from reelsim.similarity.incremental import add_vectors
from reelsim.similarity.rebuild import index_and_lists
from reelsim.similarity.spaces import (
    add_to_space,
    fit_model,
    load_model,
    save_model,
    space_lists,
    space_neighbors,
    space_vectors,
    train_store,
    write_space_lists,
)
from reelsim.similarity.synthetic import make_catalog, sample_log, save_store
from reelsim.similarity.textsearch import search
from reelsim.similarity.towers import mine_hard_negatives, torch_threads
from reelsim.storage.interactions import InteractionsError, read_interactions, write_interactions

DIMS = {"visual": 24, "image": 24, "text": 16}
#: small and fast: a few seconds of CPU per training
FAST = LearnConfig(elsa_dim=16, elsa_epochs=3, tower_hidden=64, tower_dim=32, tower_epochs=3, tower_batch=128,
                   tower_lr=5e-3, finetune_epochs=1, eval_queries=400, valid_queries=400, max_pairs=40_000,
                   ease_lambdas=(10.0, 100.0, 1000.0, 10000.0))
FAST_SET = ["learn.elsa_dim=16", "learn.tower_epochs=2", "learn.tower_hidden=64", "learn.tower_dim=32",
            "learn.finetune_epochs=0", "learn.valid_queries=200", "learn.eval_queries=200", "learn.max_pairs=20000",
            "learn.ease_lambdas=100,10000"]


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
    assert Config().with_settings(["learn.elsa_dims=8,32", "learn.ease_lambdas=3,30.5"]).learn.elsa_dims == (8, 32)
    for bad in ("learn.tower_batch=1", "learn.topicality=1.5", "learn.warm_model=svd", "learn.cold_share=max",
                "learn.valid_rows=0", "learn.ease_lambdas=-1"):
        with pytest.raises(UsageError, match=bad.split("=")[0]):
            Config().with_settings([bad])
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


def test_evaluate_puts_the_spaces_beside_tuned_peers(synth):
    """Issue 21: a test split, peers on it, P@10 by category, coverage, cold exposure; the choices recorded."""
    syn, store, path = synth
    cat, weights = load_catalog(store / "index" / "catalog.h5")
    log = read_interactions(path, cat.ids)
    result, model = evaluate(cat, log, FAST, weights, category=syn.category)
    warm, cold = result["warm"], result["cold"]
    assert {"content", "learned", "blend", "tower", "ease", "popularity"} <= set(warm)
    assert {"content", "learned", "blend", "tower", "popularity", "ridge"} <= set(cold)
    for m in (*warm.values(), *cold.values()):
        assert {"recall@10", "ndcg@10", "precision@10", "coverage", "cold_exposure", "queries"} <= set(m)
    assert cold["learned"]["queries"] >= 100 and warm["blend"]["queries"] >= 100
    assert cold["learned"]["recall@10"] >= 1.5 * cold["content"]["recall@10"] + 0.005
    assert cold["blend"]["recall@10"] >= cold["popularity"]["recall@10"]
    assert warm["blend"]["recall@10"] >= max(warm["popularity"]["recall@10"], warm["content"]["recall@10"])
    # cold items are relevant to warm queries, and the blend gives them a share of the warm items' lists
    assert 0 < result["fair_cold_share"] < 0.5
    assert warm["blend"]["cold_exposure"] >= 0.3 * result["fair_cold_share"]
    assert warm["popularity"]["cold_exposure"] == 0  # no users in training: never popular
    assert warm["content"]["precision@10"] > warm["popularity"]["precision@10"]
    chosen = result["chosen"]
    assert chosen["warm_model"] == "ease" and chosen["ease_lambda"] > 0
    assert set(chosen["rules"]) == {"learned", "blend_cold", "blend_warm"} and chosen["content_mix"] in (0, .25, .5, .75, 1)
    assert model.provenance["metrics"]["tower"]["step2_loss"]  # purchases: the cascade's second step ran


def test_ease_rows_for_any_lambda_match_the_closed_form():
    rng = np.random.default_rng(1)
    X = interaction_matrix(rng.integers(0, 40, 400), rng.integers(0, 25, 400), 40, 25)
    X.data[:] = 1
    spectrum = EaseSpectrum(X)
    for lam in (0.5, 20.0):
        B = ease_weights(X, lam)
        assert np.abs(np.diag(B)).max() == 0
        assert np.allclose(spectrum.rows(np.array([3, 7]), lam), B[[3, 7]], atol=1e-5)
    cols, vals = top_rows(B, 4)
    assert cols.shape == (25, 4) and np.all(np.diff(vals, axis=1) <= 0)
    assert np.allclose(vals[:, 0], B.max(axis=1))


def test_held_out_segment_is_each_users_last_rows(tmp_path):
    path = tmp_path / "log.csv"
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u1", "d", 4), ("u1", "e", 5), ("u2", "a", 9),
            ("u2", "c", 1), ("u3", "e", 1)]
    path.write_text("user,item,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows), encoding="utf-8")
    log = read_interactions(path, known_items=list("abcde"))
    held = last_rows(log, np.ones(log.n, bool), 0.4)
    assert held.tolist() == [False, False, False, True, True, True, False, False]  # u2: by time; u3: one row
    C = co_engagement(log, np.ones(log.n, bool), 5, held, both=True)
    assert C[3, 4] == 1 and C[0, 3] == 0  # d-e both held out; a (u1) is not
    C = co_engagement(log, np.ones(log.n, bool), 5, held, both=False)
    assert C[2, 3] == 1 and C[0, 1] == 0


def test_training_chooses_on_validation_and_reports_it(synth, tmp_path):
    """`train --json`: the chosen settings, and the loss of the tower that was saved (issue 21, item 7)."""
    syn, _, path = synth
    store = save_store(tmp_path / "s", syn.raw)
    summary = train_store(store, path, FAST)
    model = load_model(store)
    history, kept = model.provenance["metrics"]["tower"], summary["tower_kept"]
    assert summary["tower_loss"] == history[f"{kept['step']}_loss"][kept["epoch"] - 1]
    assert kept["epoch"] <= len(history[f"{kept['step']}_loss"])
    assert summary["warm_model"] == "ease" and "ease_max_items" in summary["warm_model_reason"]
    assert summary["ease_lambda"] is not None and set(summary["rules"]) == {"learned", "blend_cold", "blend_warm"}
    for info in summary["validation"].values():
        assert 0 <= info["recall@10"] <= 1 and "fair_share" in info
    assert model.chosen == json.loads((store / "learned" / "provenance.json").read_text())["chosen"]
    assert model.ease_cols.shape == (syn.raw.n, FAST.ease_keep) and model.elsa.shape == (syn.raw.n, 0)


def test_elsa_above_the_ease_limit_and_a_list_for_every_warm_item(synth):
    syn, store, path = synth
    cat, weights = load_catalog(store / "index" / "catalog.h5")
    log = read_interactions(path, cat.ids)
    cfg = dataclasses.replace(FAST, ease_max_items=100, elsa_dims=(8,))
    model = fit_model(cat, log, cfg, weights=weights)
    chosen = model.chosen
    assert chosen["warm_model"] == "elsa" and "> learn.ease_max_items=100" in chosen["warm"]["reason"]
    assert chosen["elsa_dim"] in (8, 16) and 1 <= chosen["elsa_epochs"] <= cfg.elsa_epochs
    assert set(chosen["warm"]["validation"]) == {"rank 8", "rank 16"}
    warm = np.flatnonzero(model.counts > 0)
    few = warm[model.counts[warm] < cfg.warm_min_interactions]
    assert few.size and not np.any(model.elsa[few])  # items with 1-2 users have no ELSA row ...
    lists = space_lists(cat, space_vectors(cat, model, "blend"), 5, warm)
    assert np.all(lists.I >= 0)  # ... and still a full blend list


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """600 items, a good model trained on them, and a log with huge weights: (syn, store, log, heavy log)."""
    syn = make_catalog(600, dims={"image": 16, "text": 8}, seed=5)
    store = tmp_path_factory.mktemp("degenerate")
    save_store(store, syn.raw)
    log = sample_log(syn.topic, syn.popularity, n_users=200, n_interactions=4000, seed=6)
    path = log.write(store / "log.csv", syn.raw.ids)
    heavy = store / "heavy.csv"
    write_interactions(heavy, np.char.add("u", log.user.astype(str)), np.asarray(syn.raw.ids, object)[log.item],
                       weight=np.full(log.user.size, 1e30), timestamp=log.timestamp)
    reelsim("train", "--interactions", path, "--store", store, *[a for x in FAST_SET for a in ("--set", x)], check=0)
    return syn, store, path, heavy


@pytest.mark.parametrize("log, settings, code, message", [
    ("log", ["learn.tower_batch=1"], 2, "learn.tower_batch must be at least 2"),
    # weights this large made ELSA's loss 0.0 (refused after fitting); the log reader now refuses them first
    ("heavy", ["learn.warm_model=elsa", "learn.elsa_dim=2"], 2, "must be a finite number >= 0 and <= 1e+09"),
    ("log", ["learn.temperature=1e-9"], 1, "tower vectors have collapsed"),
    ("log", ["learn.tower_lr=1e9", "learn.loss=in-batch"], 1, "tower vectors are zero"),
], ids=["batch-of-one", "huge-weights", "collapsed", "dead-tower"])
def test_degenerate_training_keeps_the_old_model(small_store, log, settings, code, message):
    """Issue 20: degenerate training is refused after fitting, before anything is saved."""
    _, store, path, heavy = small_store
    before = {f.name: f.read_bytes() for f in (store / "learned").iterdir()}
    args = [a for x in FAST_SET + settings for a in ("--set", x)]
    out = reelsim("train", "--interactions", path if log == "log" else heavy, "--store", store, *args)
    assert out.returncode == code and message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()[-1]) < 300  # one line
    assert {f.name: f.read_bytes() for f in (store / "learned").iterdir()} == before


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
    """`reelsim add --space learned|blend`: new items are scored at once (tower vectors, the cold items' prior,
    warm scores predicted from their content); lists equal a full rebuild."""
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
    for space in ("learned", "blend"):
        write_space_lists(store, space, fusion)
    new = part(slice(n0, raw.n))
    add_vectors(store, new, {i: {"kind": "product", "title": i} for i in new.ids}, fusion)
    for space in ("learned", "blend"):
        out = add_to_space(store, space, fusion)
        assert out["added"] == 20 and 0 < out["updated_lists"] < n0
        got = pq.read_table(store / "lists" / space / "neighbors.parquet").to_pylist()
        write_space_lists(store, space, fusion)
        want = pq.read_table(store / "lists" / space / "neighbors.parquet").to_pylist()
        key = lambda rows: [(r["item"], r["neighbor"], r["rank"]) for r in rows]
        assert key(got) == key(want), space  # every list, new and old, has the neighbours a rebuild gives
        # scores agree up to float32 rounding (a block's products depend on its shape in their last bits)
        assert max(abs(g["score"] - w["score"]) for g, w in zip(got, want)) <= 2e-6
        assert set(new.ids) <= {r["item"] for r in got}
        assert set(new.ids) & {r["neighbor"] for r in got}  # and they enter other items' lists


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
    fast = [a for x in FAST_SET for a in ("--set", x)]
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
    assert {"content", "learned", "blend", "popularity", "ridge"} <= set(result["cold"])
    assert result["split"]["cold_items"] > 0 and "precision@10" not in result["cold"]["content"]  # no categories
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\nu1,item-0001\nu1\n", encoding="utf-8")
    out = reelsim("train", "--interactions", bad, "--store", store, check=2)
    assert "bad.csv:3: expected 2 fields" in out.stderr
    text, banned = text_store
    out = reelsim("search", "make a bomb", "--store", text, "--banned", banned, check=4)
    assert "refused" in out.stderr and "line 2" in out.stderr
    out = reelsim("search", "fresh fruit", "--store", text, "--banned", banned, "-k", "2", "--json", check=0)
    assert json.loads(out.stdout)["results"][0]["item"] in {"bananas", "apples", "oranges"}
