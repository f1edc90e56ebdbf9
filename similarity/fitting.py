"""``reelsim train``: every learned setting chosen on a validation split, then the model.

1. **Validation split** (:func:`validation_split`): each user's last
   ``valid_rows`` of rows and a share ``valid_cold`` of the warm items (with
   all their rows, *pseudo-cold*) are held out; the rest is the *selection*
   part (:mod:`reelsim.similarity.heldout` has the ground truth and metrics).
2. **Warm model** on the selection part, its setting chosen on the held-out
   co-engagement of warm items: EASE's λ (closed form, while the warm items
   are at most ``ease_max_items``) or ELSA's rank and epochs (early stopping).
3. **Content tower** on the selection part's co-engagement pairs, early
   stopped on the pseudo-cold items' recall@10.
4. **Content mix** γ (the tower's skip connection): ``s = (1 − γ) cos_tower +
   γ cos_content``, γ chosen on the pseudo-cold items (γ = 1 is the content
   alone, so a cold item's list is never worse than its content list on
   validation).
5. **Score rules** of the learned and blend spaces (popularity prior, gate,
   warm weight, cold items' prior: :mod:`reelsim.similarity.calibrate`).
6. **Final warm model** on every training row with the chosen setting, and
   the items' user counts. The tower is the one early-stopped in step 3.

Degenerate training (a NaN, infinite or 0 loss, no batch trained, embeddings
that are not finite or have collapsed) raises :class:`~reelsim.errors.TrainingError`
before anything is saved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from reelsim.config import LearnConfig
from reelsim.errors import TrainingError, UsageError
from reelsim.reporting import Progress, report
from reelsim.similarity.calibrate import GRID, Rule, build_pools, choose_fair_rule
from reelsim.similarity.catalog import CatalogEmbeddings
from reelsim.similarity.ease import BYTES_PER_CELL, EaseSpectrum, ease_weights, top_rows
from reelsim.similarity.elsa import interaction_matrix, train_elsa
from reelsim.similarity.fusion import fuse
from reelsim.similarity.heldout import HeldOut, Truth, ground_truth, hits, pick_items, split_log, top_k
from reelsim.similarity.peers import RIDGE_GRID, ridge_factor, ridge_map
from reelsim.similarity.towers import (
    TowerModel,
    TrainingPairs,
    co_engagement_pairs,
    content_vectors,
    mine_hard_negatives,
    torch_threads,
    train_tower,
)
from reelsim.storage.interactions import Interactions

#: list length the validation scores
K = 10
#: content mixes γ tried on validation
GAMMAS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: validation queries EASE's λ is chosen on (each λ costs O(queries x W²))
LAMBDA_QUERIES = 500
#: a model whose item vectors have a mean pairwise cosine above this has collapsed
COLLAPSED = 0.98


# ---------------------------------------------------------------------------- the model


@dataclass
class WarmModel:
    """Item-item scores of the warm model for N catalog rows, and their prediction from content.

    kind : ``ease``, ``elsa`` or ``none``.
    cols : int32 (N, keep), EASE: the catalog rows of each row's largest weights (-1 padding).
    vals : float32 (N, keep), EASE: those weights divided by the row's largest.
    warm_rows : int64 (W,), EASE: the catalog rows that have a row (and a column) in it.
    E : float32 (N, r), ELSA: unit rows, zero rows for items without one.
    X : float32 (N, D), the items' content vectors (:func:`~reelsim.similarity.towers.content_vectors`),
        for the predictions below (None: no predictions).
    to_row, to_col : float32 (D, W), EASE: ridge maps from an item's content to the (normalised)
        weights of its row, and of its column, over the warm items: a cold query gets a predicted
        row, a cold candidate predicted weights from every warm query.
    R : float32 (D, r), ELSA: ridge map from content to an ELSA row, for items without one.

    A pair of two items without a row in the warm model scores 0.
    """

    kind: str
    cols: np.ndarray | None = None
    vals: np.ndarray | None = None
    E: np.ndarray | None = None
    warm_rows: np.ndarray | None = None
    X: np.ndarray | None = None
    to_row: np.ndarray | None = None
    to_col: np.ndarray | None = None
    R: np.ndarray | None = None

    @property
    def n(self) -> int:
        return (self.cols if self.kind == "ease" else self.E).shape[0]

    def has(self) -> np.ndarray:
        """bool (N,): rows with a warm row (query side)."""
        if self.kind == "ease":
            out = np.zeros(self.n, bool)
            out[self.warm_rows] = True
            return out
        if self.kind == "elsa":
            return np.any(self.E != 0, axis=1)
        raise UsageError("there is no warm model")

    def predicts(self) -> bool:
        """Whether items without a warm row get scores predicted from their content."""
        return self.X is not None and (self.to_row is not None or self.R is not None)

    def full_E(self) -> np.ndarray:
        """ELSA rows float32 (N, r), rows without one predicted from content (unit rows)."""
        if not self.predicts():
            return self.E
        if getattr(self, "_full", None) is None:
            E = self.E.copy()
            none = ~np.any(E != 0, axis=1) & np.any(self.X != 0, axis=1)
            P = self.X[none] @ self.R
            E[none] = P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
            self._full = E
        return self._full

    def block(self, q: np.ndarray, cols: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Warm scores float32 (B, C) of query rows ``q`` against catalog rows ``cols`` (0 where none)."""
        if self.kind == "elsa":
            E = self.full_E()
            return E[q] @ E[cols].T
        C = np.arange(self.n)[cols]
        pos = np.full(self.n + 1, -1)  # catalog row -> column of the block (the extra slot: -1 padding)
        pos[C] = np.arange(C.size)
        D = np.zeros((len(q), C.size), np.float32)
        c = pos[self.cols[q]]
        r = np.broadcast_to(np.arange(len(q))[:, None], c.shape)
        ok = c >= 0
        D[r[ok], c[ok]] = self.vals[q][ok]
        if self.predicts():
            widx = np.full(self.n, -1)
            widx[self.warm_rows] = np.arange(self.warm_rows.size)
            wi, wc = widx[q], widx[C]
            warm_q, cold_q = np.flatnonzero(wi >= 0), np.flatnonzero(wi < 0)
            cold_c, warm_c = np.flatnonzero(wc < 0), np.flatnonzero(wc >= 0)
            if warm_q.size and cold_c.size:  # cold candidates: predicted weights from each warm query
                D[np.ix_(warm_q, cold_c)] = (self.X[C[cold_c]] @ self.to_col[:, wi[warm_q]]).T
            if cold_q.size and warm_c.size:  # cold queries: a predicted row over the warm items
                D[np.ix_(cold_q, warm_c)] = self.X[q[cold_q]] @ self.to_row[:, wc[warm_c]]
        return D

    def remap(self, src: np.ndarray, n_new: int, X: np.ndarray | None = None) -> WarmModel:
        """The same model for another catalog: ``src`` int64 (n_new,) each new row's row here (-1: none);
        ``X`` the new catalog's content vectors (for the predictions)."""
        ok = src >= 0
        if self.kind == "elsa":
            E = np.zeros((n_new, self.E.shape[1]), np.float32)
            E[ok] = self.E[src[ok]]
            return WarmModel("elsa", E=E, X=X, R=self.R)
        if self.kind == "ease":
            new_of_old = np.full(self.cols.shape[0] + 1, -1, np.int64)
            new_of_old[src[ok]] = np.flatnonzero(ok)
            cols = np.full((n_new, self.cols.shape[1]), -1, np.int32)
            vals = np.zeros((n_new, self.cols.shape[1]), np.float32)
            cols[ok] = new_of_old[self.cols[src[ok]]]  # -1 stays -1 (the extra last slot)
            vals[ok] = np.where(cols[ok] >= 0, self.vals[src[ok]], 0)
            return WarmModel("ease", cols=cols, vals=vals, warm_rows=new_of_old[self.warm_rows], X=X,
                             to_row=self.to_row, to_col=self.to_col)
        return self


def content_maps(warm: WarmModel, X: np.ndarray, penalty: float, *, columns: bool = True) -> WarmModel:
    """``warm`` with ridge maps from content ``X`` (N, D) to its rows (and, ``columns``, its columns),
    fitted on the items that have a warm row (:func:`reelsim.similarity.peers.ridge_map`)."""
    import scipy.sparse as sp

    if warm.kind == "elsa":
        rows = np.flatnonzero(np.any(warm.E != 0, axis=1))
        R = ridge_map(X[rows], warm.E[rows], penalty).astype(np.float32) if rows.size else None
        return WarmModel("elsa", E=warm.E, X=X, R=R)
    if warm.kind != "ease" or not warm.warm_rows.size:
        return warm
    W = warm.warm_rows.size
    widx = np.full(warm.n, -1)
    widx[warm.warm_rows] = np.arange(W)
    c = warm.cols[warm.warm_rows]
    ok = c >= 0
    Y = sp.csr_matrix((warm.vals[warm.warm_rows][ok], (np.nonzero(ok)[0], widx[c[ok]])), shape=(W, W))
    F = ridge_factor(X[warm.warm_rows], penalty)  # (D, W)
    to_row = np.asarray((Y.T @ F.T).T, np.float32)
    to_col = np.asarray((Y @ F.T).T, np.float32) if columns else None
    return WarmModel("ease", cols=warm.cols, vals=warm.vals, warm_rows=warm.warm_rows, X=X, to_row=to_row,
                     to_col=to_col)


@dataclass
class LearnedModel:
    """What ``reelsim train`` learns.

    tower : the content tower.
    elsa : float32 (N, r), unit ELSA rows for warm catalog rows, zero rows for the others
        ((N, 0) when the warm model is EASE).
    counts : int64 (N,), each catalog row's number of distinct users in the training log.
    ids : the catalog ids the rows refer to (at training time).
    provenance : config, config hash, interactions sha256, metrics, code version, and ``chosen``:
        every setting chosen on validation (warm model and its setting, tower epochs, content
        mix and weights, score rules) with its validation score.
    ease_cols, ease_vals : int32 / float32 (N, keep), EASE's largest weights per row ((N, 0) for ELSA).
    ease_rows : int64 (W,), the catalog rows EASE has rows for.
    ease_to_row, ease_to_col : float32 (D, W), EASE's ridge maps from content (:class:`WarmModel`).
    elsa_ridge : float32 (D, r), ELSA's ridge map from content.
    """

    tower: TowerModel
    elsa: np.ndarray
    counts: np.ndarray
    ids: list[str]
    provenance: dict = field(default_factory=dict)
    ease_cols: np.ndarray | None = None
    ease_vals: np.ndarray | None = None
    ease_rows: np.ndarray | None = None
    ease_to_row: np.ndarray | None = None
    ease_to_col: np.ndarray | None = None
    elsa_ridge: np.ndarray | None = None

    @property
    def chosen(self) -> dict:
        """The settings chosen on validation (empty for a model trained by reelsim before they were)."""
        return self.provenance.get("chosen") or {}

    def warm(self) -> WarmModel:
        """The warm model (catalog rows at training time; no content vectors yet: see :meth:`WarmModel.remap`)."""
        kind = self.chosen.get("warm_model", "elsa")
        if kind == "ease" and self.ease_rows is not None and self.ease_rows.size:
            return WarmModel("ease", cols=self.ease_cols, vals=self.ease_vals, warm_rows=self.ease_rows,
                             to_row=self.ease_to_row, to_col=self.ease_to_col)
        if self.elsa.size and np.any(self.elsa):
            return WarmModel("elsa", E=self.elsa, R=self.elsa_ridge)
        return WarmModel("none")

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays saved besides ``ids``, ``elsa`` and ``counts`` (in ``elsa.npz``; empty when unused)."""
        names = {"ease_cols": np.int32, "ease_vals": np.float32, "ease_rows": np.int64, "ease_to_row": np.float32,
                 "ease_to_col": np.float32, "elsa_ridge": np.float32}
        return {k: getattr(self, k) if getattr(self, k) is not None else np.zeros((0, 0) if k != "ease_rows" else 0, t)
                for k, t in names.items()}


# ---------------------------------------------------------------------------- helpers


def user_counts(log: Interactions, rows: np.ndarray, n_items: int) -> np.ndarray:
    """int64 (N,): distinct users of each item among log ``rows``."""
    key = np.unique(log.user[rows].astype(np.int64) * n_items + log.item[rows])
    return np.bincount(key % n_items, minlength=n_items).astype(np.int64)


def validation_split(log: Interactions, n_items: int, rows: np.ndarray, cfg: LearnConfig) -> HeldOut:
    """``train``'s validation split of log ``rows``: each user's last ``valid_rows`` and ``valid_cold`` of the
    items with users (pseudo-cold, all their rows)."""
    counts = user_counts(log, rows, n_items)
    pseudo = pick_items(np.flatnonzero(counts > 0), cfg.valid_cold, n_items, cfg.seed + 11)
    return split_log(log, n_items, rows, share=cfg.valid_rows, cold_items=pseudo)


def training_pairs(log: Interactions, cfg: LearnConfig, rows: np.ndarray | None = None) -> TrainingPairs:
    """Co-engagement pairs of all engagement and of high-quality engagement (``rows``: keep only these log rows)."""
    keep = np.ones(log.n, bool) if rows is None else rows
    o = log.order()
    o = o[keep[o]]
    a, b = co_engagement_pairs(log.user[o], log.item[o], cfg.pair_window)
    q = o[log.quality(cfg.quality_events, cfg.quality_weight)[o]]
    qa, qb = co_engagement_pairs(log.user[q], log.item[q], cfg.pair_window)
    return TrainingPairs(a, b, qa, qb)


#: anchors mined for hard negatives (a seeded sample of the anchors when there are more)
HARD_NEGATIVE_ANCHORS = 20_000


def hard_negatives_for(cat: CatalogEmbeddings, pairs: TrainingPairs, cfg: LearnConfig) -> dict:
    """Hard negatives for (a sample of) the pairs' anchors: raw content neighbours not co-engaged."""
    x = fuse(cat, {m: 1.0 for m in cat.vectors})
    keys = np.unique(pairs.a * cat.n + pairs.b)
    anchors = np.unique(pairs.a)
    if anchors.size > HARD_NEGATIVE_ANCHORS:
        anchors = np.sort(np.random.default_rng(cfg.seed).choice(anchors, HARD_NEGATIVE_ANCHORS, replace=False))
    return mine_hard_negatives(x, anchors, keys, cat.n, pool=cfg.hard_negative_pool, per_anchor=cfg.hard_negatives,
                               seed=cfg.seed)


def recall_at(I: np.ndarray, relevant: list, k: int = K) -> float:
    """Mean recall@k of lists ``I`` int64 (Q, k) (-1 padding); 0 without queries."""
    if not len(relevant):
        return 0.0
    h = hits(I[:, :k], relevant).sum(axis=1)
    return float(np.mean(h / np.maximum([min(k, len(r)) for r in relevant], 1)))


def mixed(T: np.ndarray, X: np.ndarray, gamma: float) -> np.ndarray:
    """Similarity vectors ``Z`` float32 (N, t + x): ``[sqrt(1 − γ) T, sqrt(γ) X]`` (only the part used at 0 and 1)."""
    if gamma <= 0:
        return T
    if gamma >= 1:
        return X
    return np.concatenate([np.float32(np.sqrt(1 - gamma)) * T, np.float32(np.sqrt(gamma)) * X], axis=1)


# ---------------------------------------------------------------------------- warm models


def warm_kind(cfg: LearnConfig, n_warm: int) -> tuple[str, str]:
    """(``ease`` | ``elsa``, why) for ``n_warm`` warm items."""
    gb = BYTES_PER_CELL * n_warm ** 2 / 2**30
    if cfg.warm_model == "ease":
        return "ease", f"learn.warm_model=ease ({n_warm} warm items, about {gb:.1f} GB)"
    if cfg.warm_model == "elsa":
        return "elsa", "learn.warm_model=elsa"
    if n_warm <= cfg.ease_max_items:
        return "ease", f"{n_warm} warm items <= learn.ease_max_items={cfg.ease_max_items} (about {gb:.1f} GB)"
    return "elsa", (f"{n_warm} warm items > learn.ease_max_items={cfg.ease_max_items} (EASE would need about "
                    f"{gb:.1f} GB)")


def _user_item(log: Interactions, rows: np.ndarray, col: np.ndarray, n_cols: int, weighted: bool):
    w = rows & (col[log.item] >= 0)
    return interaction_matrix(log.user[w], col[log.item[w]], len(log.users), n_cols,
                              log.weight[w] if weighted else None)


def _ease_model(B_rows: np.ndarray, warm_rows: np.ndarray, n: int, keep: int) -> WarmModel:
    """A WarmModel from EASE rows (W, W) over warm catalog rows ``warm_rows``: top ``keep`` per row, normalised."""
    cols, vals = top_rows(B_rows, keep)
    top = np.maximum(vals[:, :1], 1e-12)
    full_cols = np.full((n, cols.shape[1]), -1, np.int32)
    full_vals = np.zeros((n, cols.shape[1]), np.float32)
    full_cols[warm_rows] = np.where(vals > 0, warm_rows[cols], -1)
    full_vals[warm_rows] = np.where(vals > 0, vals / top, 0)
    return WarmModel("ease", cols=full_cols, vals=full_vals, warm_rows=np.asarray(warm_rows, np.int64))


def choose_penalty(warm: WarmModel, X: np.ndarray, truth: Truth) -> tuple[float, dict]:
    """The ridge penalty (:data:`~reelsim.similarity.peers.RIDGE_GRID`) whose predicted warm rows best list
    the pseudo-cold items' held-out co-engaged items (recall@10 on validation)."""
    q = truth.cold
    if warm.kind == "none" or not q.size:
        return RIDGE_GRID[1], {}
    has = warm.has()
    tried = {}
    for mu in RIDGE_GRID:
        block = content_maps(warm, X, mu, columns=False).block
        I = top_k(lambda qq, block=block: np.where(has[None, :], block(qq), -np.inf), q, K)
        tried[mu] = recall_at(I, truth.cold_relevant)
    best = max(tried, key=tried.get)
    return best, {f"{m:g}": round(v, 4) for m, v in tried.items()}


def _lambdas(cfg: LearnConfig, score: Callable[[float], float]) -> tuple[float, dict]:
    """The λ of ``cfg.ease_lambdas`` with the best ``score``, refined by √10 on each side."""
    tried = {float(lam): score(float(lam)) for lam in cfg.ease_lambdas}
    best = max(tried, key=tried.get)
    for lam in (best / np.sqrt(10), best * np.sqrt(10)):
        tried[round(float(lam), 6)] = score(float(lam))
    best = max(tried, key=tried.get)
    return best, {f"{k:g}": round(v, 4) for k, v in sorted(tried.items())}


def fit_warm(kind: str, log: Interactions, rows: np.ndarray, n: int, cfg: LearnConfig, *,
             truth: Truth | None, choice: dict | None = None,
             say: Callable[[str], None] = lambda s: None) -> tuple[WarmModel, dict]:
    """The warm model on log ``rows``; its setting is chosen on ``truth`` (warm queries) unless ``choice`` gives it.

    Returns
    -------
    model : WarmModel over the N catalog rows.
    choice : dict, ``{"warm_model", "ease_lambda" | ("elsa_dim", "elsa_epochs"), "validation": {...}, "loss": [...]}``.
    """
    counts = user_counts(log, rows, n)
    if kind == "ease":
        warm = np.flatnonzero(counts > 0)
        col = np.full(n, -1)
        col[warm] = np.arange(warm.size)
        X = _user_item(log, rows, col, warm.size, weighted=False)
        X.data[:] = 1.0
        if choice is None or choice.get("ease_lambda") is None:
            q = truth.warm[col[truth.warm] >= 0] if truth is not None else np.zeros(0, np.int64)
            rel = [r for r, c in zip(truth.warm_relevant, col[truth.warm]) if c >= 0] if truth is not None else []
            if q.size > LAMBDA_QUERIES:  # a seeded sample
                pick = np.sort(np.random.default_rng(cfg.seed).choice(q.size, LAMBDA_QUERIES, replace=False))
                q, rel = q[pick], [rel[i] for i in pick]
            if q.size:
                spectrum = EaseSpectrum(X)

                def score(lam):
                    B = spectrum.rows(col[q], lam)
                    kk = min(K, B.shape[1] - 1)
                    P = np.argpartition(-B, kk - 1, axis=1)[:, :kk]
                    return recall_at(warm[P], rel)

                lam, tried = _lambdas(cfg, score)
                del spectrum
                choice = {"warm_model": "ease", "ease_lambda": lam, "validation": {"recall@10 by lambda": tried}}
                say(f"EASE: {warm.size} warm items, λ = {lam:g} chosen on validation (recall@10 {tried[f'{lam:g}']})")
            else:
                lam = float(np.median(cfg.ease_lambdas))
                choice = {"warm_model": "ease", "ease_lambda": lam, "validation": None}
        lam = choice["ease_lambda"]
        B = ease_weights(X, lam)
        if not np.all(np.isfinite(B)):
            raise TrainingError(f"EASE with λ = {lam:g} gave weights that are not finite")
        return _ease_model(B, warm, n, cfg.ease_keep), dict(choice)
    # ELSA
    warm = np.flatnonzero(counts >= cfg.warm_min_interactions)
    col = np.full(n, -1)
    col[warm] = np.arange(warm.size)
    dims = sorted({cfg.elsa_dim, *cfg.elsa_dims}) if choice is None else [choice.get("elsa_dim") or cfg.elsa_dim]
    dims = [d for d in dims if d < warm.size]
    if not dims:
        say(f"ELSA skipped: {warm.size} warm items is not more than its rank")
        return WarmModel("elsa", E=np.zeros((n, cfg.elsa_dim), np.float32)), {
            "warm_model": "elsa", "elsa_dim": None, "elsa_epochs": 0, "validation": None, "loss": []}
    X = _user_item(log, rows, col, warm.size, weighted=True)
    validate = None
    if choice is None and truth is not None:
        q = truth.warm[col[truth.warm] >= 0]
        rel = [r for r, c in zip(truth.warm_relevant, col[truth.warm]) if c >= 0]
        if q.size:
            def validate(A):
                S = A[col[q]] @ A.T
                S[np.arange(q.size), col[q]] = -np.inf
                P = np.argpartition(-S, K - 1, axis=1)[:, :K]
                return recall_at(warm[P], rel)
    runs = {}
    for d in dims:
        epochs = cfg.elsa_epochs if choice is None else choice["elsa_epochs"]
        say(f"ELSA: {warm.size} warm items (>= {cfg.warm_min_interactions} users), rank {d}, {X.nnz} user-item pairs")
        m = train_elsa(X, dim=d, epochs=epochs, batch=cfg.elsa_batch, lr=cfg.elsa_lr, seed=cfg.seed,
                       device=cfg.device, validate=validate, patience=cfg.patience, progress=lambda r: say(r.message))
        if not m.losses or not np.all(np.isfinite(m.losses)) or min(m.losses) <= 0:
            at = next((i for i, v in enumerate(m.losses) if not np.isfinite(v) or v <= 0), 0)
            bad = m.losses[at] if m.losses else "missing"
            raise TrainingError(f"ELSA (rank {d}) loss is {bad} at epoch {at + 1}: training is degenerate "
                                "(are the interaction weights or learn.elsa_lr far too large?)")
        runs[d] = m
    best = max(runs, key=lambda d: max(runs[d].valid) if runs[d].valid else 0.0)
    m = runs[best]
    E = np.zeros((n, best), np.float32)
    E[warm] = m.embeddings
    out = {"warm_model": "elsa", "elsa_dim": best, "elsa_epochs": m.epochs or len(m.losses), "loss": m.losses}
    out["validation"] = ({f"rank {d}": [round(v, 4) for v in r.valid] for d, r in runs.items()}
                         if choice is None and validate is not None else (choice or {}).get("validation"))
    return WarmModel("elsa", E=E), out


# ---------------------------------------------------------------------------- checks


def check_vectors(V: np.ndarray, what: str, rows: np.ndarray | None = None, *, seed: int = 0) -> None:
    """Raise TrainingError unless the rows of ``V`` (those in ``rows``, which should all have one) are finite,
    mostly not zero, and not collapsed to one direction."""
    V = V if rows is None else V[rows]
    zero = ~np.any(V != 0, axis=1)
    if rows is not None and V.shape[0] and zero.mean() > 0.5:
        raise TrainingError(f"{what} vectors are zero for {int(zero.sum())} of {V.shape[0]} items: training learned "
                            "nothing")
    V = V[~zero]
    if not np.all(np.isfinite(V)):
        raise TrainingError(f"{what} vectors are not finite (NaN or infinite): training diverged")
    if V.shape[0] >= 3:
        s = V[np.random.default_rng(seed).choice(V.shape[0], size=min(V.shape[0], 1000), replace=False)]
        s = s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)
        G = s @ s.T
        mean = (G.sum() - np.trace(G)) / (G.shape[0] * (G.shape[0] - 1))
        if mean > COLLAPSED:
            raise TrainingError(f"{what} vectors have collapsed to one direction (mean cosine {mean:.3f} between "
                                "items): training learned nothing to tell items apart")


# ---------------------------------------------------------------------------- fitting


def fit_model(cat: CatalogEmbeddings, log: Interactions, cfg: LearnConfig, *, rows: np.ndarray | None = None,
              progress: Progress | None = None, reuse_elsa: LearnedModel | None = None,
              weights: Mapping[str, float] | None = None) -> LearnedModel:
    """Choose every setting on a validation split and train the model (module docstring).

    Parameters
    ----------
    cat : CatalogEmbeddings
        The store's normalised catalog (``index/catalog.h5``); ``log.item`` indexes its rows.
    log : Interactions
        Read with ``known_items=cat.ids``.
    cfg : LearnConfig
    rows : bool (R,), optional
        Train on these log rows only (``evaluate`` holds some out).
    progress : Progress, optional
        Told one line per stage and epoch (:mod:`reelsim.reporting`).
    reuse_elsa : LearnedModel, optional
        Take the warm model's setting (EASE's λ, ELSA's rank and epochs) from this model instead of
        choosing it again.
    weights : dict, optional
        The catalog's modality weights, for the content part of the similarity (default: equal).

    Returns
    -------
    LearnedModel
        ``provenance["metrics"]`` holds the training metrics and ``provenance["chosen"]`` the choices.

    Raises
    ------
    TrainingError
        Degenerate training (module docstring); nothing is returned to be saved.
    """
    with torch_threads(cfg.threads):
        return _fit(cat, log, cfg, rows, progress, reuse_elsa, dict(weights or {m: 1.0 for m in cat.vectors}))


def _fit(cat, log, cfg, rows, progress, reuse, weights) -> LearnedModel:
    def say(text: str) -> None:
        report(progress, text, stage="train")

    t_start = time.perf_counter()
    keep = np.ones(log.n, bool) if rows is None else np.asarray(rows, bool)
    n = cat.n
    counts = user_counts(log, keep, n)
    if not counts.any():
        raise UsageError("no interactions left to train on")
    split = validation_split(log, n, keep, cfg)
    sel = split.train(log)
    counts_sel = user_counts(log, sel, n)
    truth = ground_truth(log, split, n, counts_sel, n=cfg.valid_queries, seed=cfg.seed)
    say(f"validation: {int(split.cold.sum())} pseudo-cold items, {int((split.segment & keep).sum())} held-out rows; "
        f"{truth.warm.size} warm and {truth.cold.size} pseudo-cold query items")
    metrics: dict = {"warm_items": int((counts > 0).sum()), "log_rows": int(keep.sum()),
                     "validation_split": {"pseudo_cold_items": int(split.cold.sum()),
                                          "held_out_rows": int((split.segment & keep).sum()),
                                          "warm_queries": int(truth.warm.size), "cold_queries": int(truth.cold.size)}}
    # 1. the warm model on the selection rows, its setting chosen on validation
    t0 = time.perf_counter()
    kind, reason = warm_kind(cfg, int((counts > 0).sum()))
    reused = reuse.chosen.get("warm") if reuse is not None and reuse.chosen.get("warm", {}).get("warm_model") == kind \
        else None
    warm_sel, choice = fit_warm(kind, log, sel, n, cfg, truth=truth, choice=reused, say=say)
    metrics["warm_select_s"] = round(time.perf_counter() - t0, 2)
    # 2. the tower, early-stopped on the pseudo-cold items
    t1 = time.perf_counter()
    pairs = training_pairs(log, cfg, sel)
    hard = None
    if cfg.hard_negatives:
        hard = hard_negatives_for(cat, pairs, cfg)
        metrics["hard_negative_anchors"] = len(hard)
    say(f"tower: {pairs.a.size} co-engagement pairs, {pairs.quality_a.size} high-quality pairs")

    def cold_recall(Z: np.ndarray) -> float:
        return recall_at(top_k(lambda q: Z[q] @ Z.T, truth.cold, K), truth.cold_relevant)

    validate = (lambda tm: cold_recall(tm.embed(cat.vectors, cat.masks, device=cfg.device))) if truth.cold.size \
        else None
    tower = train_tower(cat.vectors, cat.masks, pairs, cfg, hard=hard, progress=progress, validate=validate,
                        patience=cfg.patience)
    metrics["tower"] = tower.history
    metrics["tower_s"] = round(time.perf_counter() - t1, 2)
    T = tower.embed(cat.vectors, cat.masks, device=cfg.device)
    check_vectors(T, "tower", np.any(np.stack([cat.masks[m] for m in tower.in_dims]), axis=0), seed=cfg.seed)
    # 3. the content mix
    t2 = time.perf_counter()
    X = content_vectors(cat.vectors, cat.masks, tower, weights)
    if truth.cold.size:
        by_gamma = {g: cold_recall(mixed(T, X, g)) for g in GAMMAS}
        gamma = max(by_gamma, key=by_gamma.get)
    else:
        by_gamma, gamma = None, 0.0
    Z = mixed(T, X, gamma)
    say(f"content mix: γ = {gamma}" + (f" (validation recall@10 {by_gamma})" if by_gamma else ""))
    # ... and the warm model predicted from content, for items without a warm row
    penalty, by_penalty = choose_penalty(warm_sel, X, truth)
    warm_sel = content_maps(warm_sel, X, penalty)
    say(f"warm rows from content: ridge penalty {penalty}" + (f" (validation recall@10 {by_penalty})"
                                                               if by_penalty else ""))
    # 4. the score rules
    sim = lambda q: Z[q] @ Z.T
    rules, validation = {}, {}
    grid = GRID
    if truth.cold.size:
        pools = build_pools(truth.cold, truth.cold_relevant, sim, warm_sel.block if warm_sel.kind != "none" else None,
                            counts_sel, k=K, exclude=counts == 0)
        fair = cfg.cold_share == "fair"
        for name, topical, fixed, fair in (("learned", cfg.topicality, ("warm",), fair), ("blend_cold", 0.0, (), False)):
            rules[name], validation[name] = choose_fair_rule(pools, k=K, grid=grid, start=Rule(), topicality=topical,
                                                             fixed=fixed, fair=fair)
            validation[name]["similarity_only"] = round(pools.recall(Rule(), K)[0], 4)
        del pools
    else:
        rules["learned"] = rules["blend_cold"] = Rule()
    wq = truth.warm[warm_sel.has()[truth.warm]] if warm_sel.kind != "none" else np.zeros(0, np.int64)
    if wq.size:
        rel = [r for r, h in zip(truth.warm_relevant, warm_sel.has()[truth.warm]) if h]
        pools = build_pools(wq, rel, sim, warm_sel.block, counts_sel, k=K, exclude=counts == 0)
        start = Rule(warm=max(GRID["warm"]))
        rules["blend_warm"], validation["blend_warm"] = choose_fair_rule(pools, k=K, grid=grid, start=start,
                                                                         fair=cfg.cold_share == "fair")
        validation["blend_warm"]["warm_model_only"] = round(pools.recall(start, K)[0], 4)
        del pools
    else:
        rules["blend_warm"] = Rule(warm=1.0)
    for name, rule in rules.items():
        say(f"rule {name}: {rule.to_dict()}" + (f", validation {validation[name]}" if name in validation else ""))
    metrics["select_s"] = round(time.perf_counter() - t2, 2)
    # 5. the final warm model on every training row
    t3 = time.perf_counter()
    del warm_sel
    warm, final = fit_warm(kind, log, keep, n, cfg, truth=None, choice=choice, say=say)
    warm = content_maps(warm, X, penalty)
    if warm.kind == "elsa":
        check_vectors(warm.E, "ELSA", seed=cfg.seed)
        metrics["elsa_loss"] = [round(v, 9) for v in final.get("loss", [])]
    else:
        metrics["elsa_loss"] = []
    metrics["elsa_s"] = round(time.perf_counter() - t3 + metrics["warm_select_s"], 2)
    metrics["train_s"] = round(time.perf_counter() - t_start, 2)
    kept = tower.history.get("kept") or {}
    chosen = {
        "warm": {k: v for k, v in choice.items() if k != "loss"} | {"reason": reason},
        "warm_model": warm.kind, "ease_lambda": choice.get("ease_lambda"), "elsa_dim": choice.get("elsa_dim"),
        "elsa_epochs": choice.get("elsa_epochs"), "tower_kept": kept,
        "content_mix": gamma, "content_weights": {m: float(w) for m, w in weights.items()},
        "content_mix_validation": by_gamma and {str(g): round(v, 4) for g, v in by_gamma.items()},
        "ridge_penalty": penalty, "ridge_validation": by_penalty,
        "rules": {name: rule.to_dict() for name, rule in rules.items()}, "rules_validation": validation,
        "topicality": cfg.topicality,
    }
    elsa = warm.E if warm.kind == "elsa" else np.zeros((n, 0), np.float32)
    ease = warm.kind == "ease"
    return LearnedModel(tower, elsa, counts, list(cat.ids), {"metrics": metrics, "chosen": chosen},
                        ease_cols=warm.cols if ease else None, ease_vals=warm.vals if ease else None,
                        ease_rows=warm.warm_rows if ease else None, ease_to_row=warm.to_row if ease else None,
                        ease_to_col=warm.to_col if ease else None, elsa_ridge=warm.R if warm.kind == "elsa" else None)
