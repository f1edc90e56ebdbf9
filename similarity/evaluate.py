"""An honest evaluation of the spaces, side by side with the peers, on a test split nothing was chosen on.

The log is split before anything is trained (:mod:`reelsim.similarity.heldout`):

- **cold items**: a share ``cold_fraction`` of the items that have
  interactions is held out with *all* of their rows, as if just added;
- **test segment**: the last ``test_rows`` of each user's rows.

The rest trains (:func:`reelsim.similarity.fitting.fit_model`), and
training holds out its own validation split inside it, where every setting
is chosen; the peers are tuned on that same validation split, never on the
test split. Ground truth is held-out co-engagement (two items one user
engaged with at most 5 rows apart): for a warm query (an item with training
rows) the items co-engaged with it inside the test segment, cold items
included; for a cold query the items co-engaged with it in any row.

Each query's top ``k`` among all catalog items (itself excluded) is scored
by recall@k, NDCG@k, precision@k of the same category (when the catalog
has categories), coverage and cold exposure; ``fair_cold_share`` is the
share of the warm queries' relevant items that are cold, the exposure cold
items would earn. Rows, at most ``eval_queries`` seeded queries per group:

- reelsim: ``content`` (the fusion score), ``learned``, ``blend``, and for
  the record ``tower`` (the tower's cosine alone) and the warm model alone
  (``ease`` or ``elsa``, warm queries with a warm row only);
- peers: ``popularity``; ``ease`` (λ chosen on validation; the warm model
  alone when it is EASE) or ``als`` where EASE does not fit; ``ridge`` for
  cold items (content mapped to EASE rows or ALS factors,
  :mod:`reelsim.similarity.peers`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping

import numpy as np

from reelsim.config import LearnConfig
from reelsim.reporting import Progress, report
from reelsim.similarity.catalog import CatalogEmbeddings, load_catalog, load_items_meta
from reelsim.similarity.ease import ease_weights
from reelsim.similarity.elsa import interaction_matrix
from reelsim.similarity.fitting import LearnedModel, fit_model, recall_at, user_counts, validation_split
from reelsim.similarity.heldout import WINDOW as WINDOW
from reelsim.similarity.heldout import (
    HeldOut,
    cold_partner_share,
    ground_truth,
    list_metrics,
    pick_items,
    split_log,
    top_k,
)
from reelsim.similarity.peers import ALS_GRID, RIDGE_GRID, fit_als, popularity_lists, ridge_map
from reelsim.similarity.spaces import SpaceVectors, content_space, id_rank, model_rows, space_knn, space_vectors
from reelsim.similarity.towers import content_vectors, torch_threads
from reelsim.storage.interactions import Interactions, read_interactions
from reelsim.storage.layout import StoreLayout

K = 10
#: ALS factors and iterations of the ALS peer
ALS_FACTORS, ALS_ITERATIONS = 64, 8


def make_split(log: Interactions, n_items: int, cfg: LearnConfig) -> HeldOut:
    """The test split: ``cold_fraction`` of the items seen in the log and each user's last ``test_rows`` (seeded)."""
    cold = pick_items(np.unique(log.item), cfg.cold_fraction, n_items, cfg.seed + 1)
    return split_log(log, n_items, np.ones(log.n, bool), share=cfg.test_rows, cold_items=cold)


def _binary(log: Interactions, rows: np.ndarray, col: np.ndarray, n_cols: int):
    w = rows & (col[log.item] >= 0)
    X = interaction_matrix(log.user[w], col[log.item[w]], len(log.users), n_cols)
    X.data[:] = 1.0
    return X


def _columns(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(warm rows, col of each row or -1) for the items with users."""
    warm = np.flatnonzero(counts > 0)
    col = np.full(counts.size, -1)
    col[warm] = np.arange(warm.size)
    return warm, col


def _top(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Positions of the top ``k`` of each row of ``scores`` (B, W); ``exclude`` (B,) a position to skip per row."""
    S = np.array(scores, np.float32)
    if exclude is not None:
        ok = exclude >= 0
        S[np.flatnonzero(ok), exclude[ok]] = -np.inf
    kk = min(k, S.shape[1] - 1)
    P = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
    o = np.argsort(-np.take_along_axis(S, P, axis=1), axis=1, kind="stable")
    return np.take_along_axis(P, o, axis=1)


def _pad(I: np.ndarray, k: int) -> np.ndarray:
    return np.pad(I, ((0, 0), (0, k - I.shape[1])), constant_values=-1) if I.shape[1] < k else I


def peer_lists(cat: CatalogEmbeddings, log: Interactions, cfg: LearnConfig, model: LearnedModel, train: np.ndarray,
               warm_q: np.ndarray, cold_q: np.ndarray, weights: Mapping[str, float], *, k: int = K,
               names: tuple[str, ...] = ("ease", "als", "ridge"),
               say: Callable[[str], None] = lambda s: None) -> tuple[dict, dict, dict]:
    """Lists of the tuned peers for warm queries and cold queries, and what was chosen for each.

    ``ease`` needs the model's warm model to be EASE (it then *is* the warm model alone, listed by
    :func:`evaluate`); ``als`` is fitted when asked or when the model's warm model is ELSA; ``ridge``
    maps content to the EASE rows (or ALS factors). Tuning uses the validation split that
    :func:`~reelsim.similarity.fitting.fit_model` used.

    Returns
    -------
    warm : dict name -> int64 (Q, k); cold : dict name -> int64 (Q, k); info : dict name -> settings, seconds.
    """
    n = cat.n
    split = validation_split(log, n, train, cfg)
    sel = split.train(log)
    counts_sel, counts = user_counts(log, sel, n), user_counts(log, train, n)
    truth = ground_truth(log, split, n, counts_sel, n=cfg.valid_queries, seed=cfg.seed)
    warm_out, cold_out, info = {}, {}, {}
    ws, col_s = _columns(counts_sel)
    wt, col_t = _columns(counts)
    C = content_vectors(cat.vectors, cat.masks, model.tower, weights)
    use_als = "als" in names or model.chosen.get("warm_model") != "ease"
    targets = {}
    if model.chosen.get("warm_model") == "ease" and "ridge" in names:
        t0 = time.perf_counter()
        lam = model.chosen["ease_lambda"]
        targets["ease"] = (ease_weights(_binary(log, sel, col_s, ws.size), lam),
                           ease_weights(_binary(log, train, col_t, wt.size), lam))
        info["ease"] = {"lambda": lam, "seconds": round(time.perf_counter() - t0, 2)}
    if use_als:
        t0 = time.perf_counter()
        Xs = _binary(log, sel, col_s, ws.size)
        q = truth.warm[col_s[truth.warm] >= 0]
        rel = [r for r, c in zip(truth.warm_relevant, col_s[truth.warm]) if c >= 0]
        tried = {}
        for reg, alpha in ALS_GRID:
            V = fit_als(Xs, factors=ALS_FACTORS, reg=reg, alpha=alpha, iterations=ALS_ITERATIONS, seed=cfg.seed)
            V /= np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
            tried[(reg, alpha)] = recall_at(ws[_top(V[col_s[q]] @ V.T, k, col_s[q])], rel, k)
            say(f"ALS peer: reg {reg}, alpha {alpha}: validation recall@{k} {tried[(reg, alpha)]:.4f}")
        reg, alpha = max(tried, key=tried.get)
        V_sel = fit_als(Xs, factors=ALS_FACTORS, reg=reg, alpha=alpha, iterations=ALS_ITERATIONS, seed=cfg.seed)
        V = fit_als(_binary(log, train, col_t, wt.size), factors=ALS_FACTORS, reg=reg, alpha=alpha,
                    iterations=ALS_ITERATIONS, seed=cfg.seed)
        Vn = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
        has = col_t[warm_q] >= 0
        I = np.full((warm_q.size, k), -1, np.int64)
        if has.any():
            I[has] = _pad(wt[_top(Vn[col_t[warm_q[has]]] @ Vn.T, k, col_t[warm_q[has]])], k)
        warm_out["als"] = I
        targets["als"] = (V_sel, V)
        info["als"] = {"reg": reg, "alpha": alpha, "factors": ALS_FACTORS, "iterations": ALS_ITERATIONS,
                       "validation": {f"{r}/{a}": round(v, 4) for (r, a), v in tried.items()},
                       "seconds": round(time.perf_counter() - t0, 2)}
    if "ridge" in names and targets:
        t0 = time.perf_counter()
        kind = "ease" if "ease" in targets else "als"
        Y_sel, Y = targets[kind]

        def predict(M, rows, Y_cols):
            P = C[rows] @ M
            if kind == "als":
                P /= np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
                Yn = Y_cols / np.maximum(np.linalg.norm(Y_cols, axis=1, keepdims=True), 1e-12)
                P = P @ Yn.T
            return P

        tried = {}
        for mu in RIDGE_GRID:
            M = ridge_map(C[ws], Y_sel, mu)
            tried[mu] = recall_at(ws[_top(predict(M, truth.cold, Y_sel), k)], truth.cold_relevant, k) \
                if truth.cold.size else 0.0
        mu = max(tried, key=tried.get)
        M = ridge_map(C[wt], Y, mu)
        cold_out["ridge"] = _pad(wt[_top(predict(M, cold_q, Y), k)], k) if cold_q.size else np.zeros((0, k), np.int64)
        info["ridge"] = {"target": kind, "penalty": mu, "validation": {f"{m:g}": round(v, 4) for m, v in tried.items()},
                         "seconds": round(time.perf_counter() - t0, 2)}
    return warm_out, cold_out, info


def warm_model_lists(model: LearnedModel, cat: CatalogEmbeddings, queries: np.ndarray, k: int) -> np.ndarray:
    """Lists of the warm model alone (EASE rows or ELSA cosines); -1 rows for queries without a warm row."""
    warm = model.warm()
    I = np.full((queries.size, k), -1, np.int64)
    if warm.kind == "none":
        return I
    warm = warm.remap(model_rows(cat, model), cat.n)
    has = warm.has()
    ok = has[queries]
    if ok.any():
        if warm.kind == "elsa":  # every item with an ELSA row is a candidate
            I[ok] = top_k(lambda q: np.where(has[None, :], warm.block(q), -np.inf), queries[ok], k)
        else:  # the EASE weights kept for the row
            I[ok] = top_k(lambda q: _positive(warm.block(q)), queries[ok], k)
    return I


def _positive(W: np.ndarray) -> np.ndarray:
    return np.where(W > 0, W, -np.inf)


def evaluate(cat: CatalogEmbeddings, log: Interactions, cfg: LearnConfig, weights: Mapping[str, float], *,
             progress: Progress | None = None, reuse_elsa: LearnedModel | None = None,
             split: HeldOut | None = None, k: int = K, category: np.ndarray | None = None,
             peers: tuple[str, ...] = ("ease", "ridge")) -> tuple[dict, LearnedModel]:
    """Split, train on the training part, and score every space and peer on held-out co-engagement.

    Parameters
    ----------
    cat : CatalogEmbeddings
        The store's normalised catalog.
    log : Interactions
        Read with ``known_items=cat.ids``.
    cfg : LearnConfig
        Training settings and ``cold_fraction``, ``test_rows``, ``eval_queries``, ``seed``.
    weights : dict
        Content fusion weights (the catalog's).
    reuse_elsa : LearnedModel, optional
        Take the warm model's setting from this model (:func:`~reelsim.similarity.fitting.fit_model`).
    split : HeldOut, optional
        The test split (default :func:`make_split`).
    k : int
        Length of the ranked lists scored.
    category : int (N,), optional
        Item categories (-1: unknown), for precision@k.
    peers : names of the peers to fit besides popularity and content: ``ease`` (when the warm model
        is EASE), ``als`` (always fitted when it is not), ``ridge``.

    Returns
    -------
    result : dict
        ``{"warm": {name: metrics}, "cold": {name: metrics}, "fair_cold_share", "split", "training",
        "chosen", "peers"}``; metrics are ``recall@k``, ``ndcg@k``, ``precision@k`` (with categories),
        ``coverage``, ``cold_exposure``, ``queries``.
    model : LearnedModel
        Trained on the training rows.
    """
    with torch_threads(cfg.threads):
        return _evaluate(cat, log, cfg, weights, progress, reuse_elsa, split, k, category, peers)


def _evaluate(cat, log, cfg, weights, progress, reuse_elsa, split, k, category, peers) -> tuple[dict, LearnedModel]:
    def say(text: str) -> None:
        report(progress, text, stage="evaluate")

    split = split or make_split(log, cat.n, cfg)
    train = split.train(log)
    t0 = time.perf_counter()
    model = fit_model(cat, log, cfg, rows=train, progress=progress, reuse_elsa=reuse_elsa, weights=weights)
    train_s = time.perf_counter() - t0
    counts = model.counts
    cold_items = counts == 0
    truth = ground_truth(log, split, cat.n, counts, n=cfg.eval_queries, seed=cfg.seed + 5)
    rank = id_rank(cat.ids)
    learned = space_vectors(cat, model, "learned", cfg)
    spaces = {"content": content_space(cat, weights), "learned": learned,
              "blend": space_vectors(cat, model, "blend", cfg), "tower": SpaceVectors("tower", learned.T)}
    lists: dict = {"warm": {}, "cold": {}}
    for group, q in (("warm", truth.warm), ("cold", truth.cold)):
        for name, sv in spaces.items():
            lists[group][name] = space_knn(sv, q, k, rank)[0]
        lists[group]["popularity"] = popularity_lists(counts, q, k)
    kind = model.chosen.get("warm_model", "elsa")
    if kind != "none":
        lists["warm"][kind] = warm_model_lists(model, cat, truth.warm, k)
    t1 = time.perf_counter()
    warm_peers, cold_peers, peer_info = peer_lists(cat, log, cfg, model, train, truth.warm, truth.cold, weights, k=k,
                                                   names=peers, say=say)
    lists["warm"].update(warm_peers)
    lists["cold"].update(cold_peers)
    result: dict = {}
    for group, q, rel in (("warm", truth.warm, truth.warm_relevant), ("cold", truth.cold, truth.cold_relevant)):
        result[group] = {name: list_metrics(I, q, rel, k=k, category=category, cold=cold_items)
                         for name, I in lists[group].items()}
    result["fair_cold_share"] = cold_partner_share(truth.warm_relevant, cold_items)
    result["split"] = {"items": cat.n, "cold_items": int(split.cold.sum()), "test_rows": int(split.segment.sum()),
                       "users": len(log.users), "train_rows": int(train.sum()), "log_rows": log.n,
                       "warm_items": int((counts > 0).sum()), "warm_queries": int(truth.warm.size),
                       "cold_queries": int(truth.cold.size)}
    result["training"] = model.provenance.get("metrics", {}) | {"wall_s": round(train_s, 2)}
    result["chosen"] = model.chosen
    result["peers"] = peer_info | {"seconds": round(time.perf_counter() - t1, 2)}
    return result, model


#: the order of the rows in :func:`format_table`
ROWS = ("content", "learned", "blend", "tower", "ease", "elsa", "popularity", "als", "ridge")


def format_table(result: dict) -> str:
    """The evaluation as a readable table."""
    some = next(m for g in ("warm", "cold") for m in result.get(g, {}).values())
    k = next(int(key.split("@")[1]) for key in some if key.startswith("recall@"))
    cols = [f"recall@{k}", f"ndcg@{k}"] + ([f"precision@{k}"] if f"precision@{k}" in some else []) + [
        "coverage", "cold_exposure"]
    heads = {f"recall@{k}": f"R@{k}", f"ndcg@{k}": f"NDCG@{k}", f"precision@{k}": f"P@{k} (cat)",
             "coverage": "coverage", "cold_exposure": "cold share"}
    lines = [f"{'items':<6} {'space / peer':<12} " + " ".join(f"{heads[c]:>11}" for c in cols) + f" {'queries':>8}"]
    for group in ("warm", "cold"):
        rows = result.get(group, {})
        for name in [r for r in ROWS if r in rows] + [r for r in rows if r not in ROWS]:
            m = rows[name]
            cells = " ".join(f"{'-' if m.get(c) is None else format(m[c], '.4f'):>11}" for c in cols)
            lines.append(f"{group:<6} {name:<12} {cells} {m['queries']:>8}")
    if result.get("fair_cold_share") is not None:
        lines.append(f"cold items are {result['fair_cold_share']:.1%} of the warm queries' held-out co-engaged items "
                     "(their fair share of list slots)")
    s = result.get("split", {})
    if s:
        lines.append(f"split: {s['cold_items']} cold items of {s['items']}, the last {s['test_rows']} rows of "
                     f"{s['users']} users held out, {s['train_rows']} of {s['log_rows']} rows trained on, "
                     f"{s['warm_items']} warm items")
    ch = result.get("chosen", {})
    if ch:
        setting = (f"λ = {ch['ease_lambda']:g}" if ch.get("warm_model") == "ease"
                   else f"rank {ch.get('elsa_dim')}, {ch.get('elsa_epochs')} epochs")
        lines.append(f"chosen on validation: {ch.get('warm_model')} ({setting}), tower kept at "
                     f"{ch.get('tower_kept')}, content mix γ = {ch.get('content_mix')}, rules {ch.get('rules')}")
    return "\n".join(lines)


def to_json(result: dict) -> str:
    return json.dumps(result, ensure_ascii=False)


def item_categories(store, ids: list[str]) -> np.ndarray | None:
    """int64 (N,) codes of ``items.json``'s ``category`` field (-1 where missing), or None when no item has one."""
    layout = StoreLayout(store)
    if not layout.items_meta.is_file():
        return None
    meta = load_items_meta(layout.items_meta)
    names = [meta.get(i, {}).get("category") for i in ids]
    known = sorted({str(c) for c in names if c is not None})
    if not known:
        return None
    code = {c: j for j, c in enumerate(known)}
    return np.array([-1 if c is None else code[str(c)] for c in names], np.int64)


def evaluate_store(store, interactions, cfg: LearnConfig, *, progress: Progress | None = None,
                   k: int = K, peers: tuple[str, ...] = ("ease", "ridge")) -> dict:
    """``reelsim evaluate``: read the log against the store's catalog and :func:`evaluate`; nothing is saved.

    Precision@k by category is reported when ``index/items.json`` gives items a ``category``.
    """
    cat, weights = load_catalog(StoreLayout(store).require_catalog())
    log = read_interactions(interactions, known_items=cat.ids)
    report(progress, log.describe(), stage="evaluate")
    result, _ = evaluate(cat, log, cfg, weights, progress=progress, k=k, category=item_categories(store, cat.ids),
                         peers=peers)
    result["interactions"] = {"path": str(interactions), "sha256": log.sha256, "rows": log.n,
                              "unknown_rows": log.unknown_rows, "unknown_items": log.unknown_item_count}
    return result
