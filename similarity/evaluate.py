"""An honest evaluation of the spaces on a store's interaction log.

The log is split three ways before anything is trained:

- **cold items**: a share ``cold_fraction`` of the items that have
  interactions is held out with *all* of their interactions, as if they had
  just been added to the catalog;
- **test users**: a share ``test_users`` of the users is held out;
- everything else trains ELSA and the tower (:func:`reelsim.similarity.spaces.fit_model`).

Ground truth is co-engagement that training never saw. Two items are
co-engaged when one user engaged with both at most :data:`WINDOW` rows apart
(in time order; about one session). For a cold item, the relevant items are
those co-engaged with it by any user; for a warm item (one with an ELSA
vector), those co-engaged with it by the *test users*.
Each query item's top 10 among all catalog items (itself excluded) is
scored by recall@10 (hits / min(10, relevant)) and NDCG@10 (binary gains),
averaged over at most ``eval_queries`` seeded query items per group:

- cold items: ``content`` (the fusion score) vs ``learned`` (the tower);
- warm items: ``content`` vs ``elsa`` vs ``blend``;
- both: ``popularity`` (the items with most training users).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from reelsim.config import LearnConfig
from reelsim.errors import UsageError
from reelsim.reporting import Progress, report
from reelsim.similarity.catalog import CatalogEmbeddings, load_catalog
from reelsim.similarity.spaces import (
    LearnedModel,
    SpaceVectors,
    content_space,
    fit_model,
    id_rank,
    space_knn,
    space_vectors,
)
from reelsim.similarity.towers import co_engagement_pairs
from reelsim.storage.interactions import Interactions, read_interactions
from reelsim.storage.layout import StoreLayout

K = 10


@dataclass
class Split:
    """cold : bool (N,) held-out items; test_user : bool (U,); train : bool (R,) log rows that train."""

    cold: np.ndarray
    test_user: np.ndarray
    train: np.ndarray


def make_split(log: Interactions, n_items: int, cfg: LearnConfig) -> Split:
    """Hold out ``cold_fraction`` of the items seen in the log and ``test_users`` of the users (seeded)."""
    rng = np.random.default_rng(cfg.seed + 1)
    seen = np.unique(log.item)
    cold = np.zeros(n_items, bool)
    cold[rng.choice(seen, size=int(round(cfg.cold_fraction * seen.size)), replace=False)] = True
    n_users = len(log.users)
    test_user = np.zeros(n_users, bool)
    test_user[rng.choice(n_users, size=int(round(cfg.test_users * n_users)), replace=False)] = True
    train = ~cold[log.item] & ~test_user[log.user]
    if not train.any():
        raise UsageError("nothing left to train on after holding out cold items and test users")
    return Split(cold, test_user, train)


#: two items are co-engaged when one user engaged with both at most this many rows apart (about a session)
WINDOW = 5


def co_engagement(log: Interactions, rows: np.ndarray, n_items: int, window: int = WINDOW):
    """Item x item co-engagement counts over log ``rows`` (``scipy.sparse.csr_matrix`` (N, N))."""
    import scipy.sparse as sp

    o = log.order()
    o = o[rows[o]]
    a, b = co_engagement_pairs(log.user[o], log.item[o], window)
    return sp.csr_matrix((np.ones(a.size, np.float32), (a, b)), shape=(n_items, n_items))


def relevant_sets(C, queries: np.ndarray) -> list[np.ndarray]:
    """For each query item, the items co-engaged with it (rows of ``C`` from :func:`co_engagement`)."""
    return [C.indices[C.indptr[q]:C.indptr[q + 1]].astype(np.int64) for q in queries.tolist()]


def ranking_metrics(I: np.ndarray, relevant: list[np.ndarray], k: int = K) -> dict:
    """Mean recall@k and NDCG@k (binary gains) of rankings ``I`` int64 (Q, k) against ``relevant``."""
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    rec, ndcg = [], []
    for row, rel in zip(I, relevant):
        hit = np.isin(row[:k], rel) & (row[:k] >= 0)
        m = min(k, rel.size)
        rec.append(hit.sum() / m)
        ndcg.append((disc[:hit.size] * hit).sum() / disc[:m].sum())
    return {f"recall@{k}": round(float(np.mean(rec)), 4) if rec else None,
            f"ndcg@{k}": round(float(np.mean(ndcg)), 4) if ndcg else None, "queries": len(rec)}


def popularity_ranking(counts: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """The ``k`` items with most training users, the query itself skipped: int64 (Q, k)."""
    top = np.argsort(-counts, kind="stable")[:k + 1]
    return np.stack([top[top != q][:k] for q in queries.tolist()]) if queries.size else np.zeros((0, k), np.int64)


def _queries(candidates: np.ndarray, relevant_of: Callable, n: int, seed: int):
    """A seeded sample of at most ``n`` candidate items that have at least one relevant item."""
    rng = np.random.default_rng(seed)
    q = rng.permutation(candidates)
    out_q, out_r = [], []
    for i0 in range(0, q.size, 4 * n):
        block = np.sort(q[i0:i0 + 4 * n])
        for item, rel in zip(block.tolist(), relevant_of(block)):
            if rel.size and len(out_q) < n:
                out_q.append(item)
                out_r.append(rel)
        if len(out_q) >= n:
            break
    return np.array(out_q, np.int64), out_r


def evaluate(cat: CatalogEmbeddings, log: Interactions, cfg: LearnConfig, weights: Mapping[str, float], *,
             progress: Progress | None = None, reuse_elsa: LearnedModel | None = None,
             split: Split | None = None, k: int = K) -> tuple[dict, LearnedModel]:
    """Split, train on the training part, and score every space on held-out co-engagement.

    Parameters
    ----------
    cat : CatalogEmbeddings
        The store's normalised catalog.
    log : Interactions
        Read with ``known_items=cat.ids``.
    cfg : LearnConfig
        Training settings and ``cold_fraction``, ``test_users``, ``eval_queries``, ``seed``.
    weights : dict
        Content fusion weights (the catalog's).
    reuse_elsa, split : optional
        A model whose ELSA part to keep, and the split it was trained on (to compare towers).
    k : int
        Length of the ranked lists scored (recall@k, NDCG@k).

    Returns
    -------
    result : dict
        ``{"cold": {space: {"recall@10", "ndcg@10", "queries"}}, "warm": {...}, "split": {...}, "training": {...}}``
    model : LearnedModel
        Trained on the training rows.
    """
    split = split or make_split(log, cat.n, cfg)
    model = fit_model(cat, log, cfg, rows=split.train, progress=progress, reuse_elsa=reuse_elsa)
    rank = id_rank(cat.ids)
    all_rows = np.ones(log.n, bool)
    test_rows = split.test_user[log.user] & ~split.cold[log.item]
    spaces = {"content": content_space(cat, weights), "learned": space_vectors(cat, model, "learned", cfg),
              "elsa": SpaceVectors("elsa", T=model.elsa), "blend": space_vectors(cat, model, "blend", cfg)}
    cold_items = np.flatnonzero(split.cold)
    warm_items = np.flatnonzero(np.any(model.elsa != 0, axis=1))
    c_all, c_test = co_engagement(log, all_rows, cat.n), co_engagement(log, test_rows, cat.n)
    groups = {
        "cold": (_queries(cold_items, lambda q: relevant_sets(c_all, q), cfg.eval_queries, cfg.seed),
                 ("content", "learned")),
        "warm": (_queries(warm_items, lambda q: relevant_sets(c_test, q), cfg.eval_queries, cfg.seed),
                 ("content", "elsa", "blend")),
    }
    result: dict = {}
    for group, ((queries, relevant), names) in groups.items():
        result[group] = {}
        for name in names:
            I, _ = space_knn(spaces[name], queries, k, rank)
            result[group][name] = ranking_metrics(I, relevant, k)
        result[group]["popularity"] = ranking_metrics(popularity_ranking(model.counts, queries, k), relevant, k)
    result["split"] = {"items": cat.n, "cold_items": int(split.cold.sum()), "test_users": int(split.test_user.sum()),
                       "users": len(log.users), "train_rows": int(split.train.sum()), "log_rows": log.n,
                       "warm_items": int(warm_items.size)}
    result["training"] = model.provenance.get("metrics", {})
    return result, model


def format_table(result: dict) -> str:
    """The evaluation as a readable table."""
    k = next(int(key.split("@")[1]) for m in result["cold"].values() for key in m if key.startswith("recall@"))
    lines = [f"{'items':<6} {'space':<11} {f'recall@{k}':>9} {f'NDCG@{k}':>8} {'queries':>8}"]
    for group in ("cold", "warm"):
        for name, m in result.get(group, {}).items():
            r, g = m[f"recall@{k}"], m[f"ndcg@{k}"]
            lines.append(f"{group:<6} {name:<11} {'-' if r is None else f'{r:.4f}':>9} "
                         f"{'-' if g is None else f'{g:.4f}':>8} {m['queries']:>8}")
    s = result.get("split", {})
    if s:
        lines.append(f"split: {s['cold_items']} cold items of {s['items']}, {s['test_users']} test users of "
                     f"{s['users']}, {s['train_rows']} of {s['log_rows']} rows trained on, {s['warm_items']} warm items")
    return "\n".join(lines)


def to_json(result: dict) -> str:
    return json.dumps(result, ensure_ascii=False)


def evaluate_store(store, interactions, cfg: LearnConfig, *, progress: Progress | None = None,
                   k: int = K) -> dict:
    """``reelsim evaluate``: read the log against the store's catalog and :func:`evaluate`; nothing is saved."""
    cat, weights = load_catalog(StoreLayout(store).require_catalog())
    log = read_interactions(interactions, known_items=cat.ids)
    report(progress, log.describe(), stage="evaluate")
    result, _ = evaluate(cat, log, cfg, weights, progress=progress, k=k)
    result["interactions"] = {"path": str(interactions), "sha256": log.sha256, "rows": log.n,
                              "unknown_rows": log.unknown_rows, "unknown_items": log.unknown_item_count}
    return result
