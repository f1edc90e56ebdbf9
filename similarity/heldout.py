"""Held-out splits of an interaction log, their ground truth, and ranking metrics.

One rule makes both the validation split of ``reelsim train`` (where every
learned setting is chosen) and the test split of ``reelsim evaluate``
(where nothing is chosen):

- **a time segment**: the last ``share`` of each user's rows (in time order)
  are held out; users with one row keep it;
- **cold items**: a share of the items is held out with *all* of its rows,
  as if the items had just been added to the catalog.

The rows left train. Two items are *co-engaged* when one user engaged with
both at most :data:`WINDOW` rows apart (about a session). Ground truth:

- a **warm** query (an item with training rows): the items co-engaged with
  it inside the held-out segment (both rows held out). Cold items count:
  a cold item a warm item's users went on to engage with is a hit;
- a **cold** query: the items co-engaged with it in any of its rows (training
  never saw one).

A ranked list ``I`` (Q, k) is scored by recall@k (hits / min(k, relevant)),
NDCG@k (binary gains) and, where the catalog has categories, precision@k
of the same category; over all lists, by coverage (distinct items listed /
catalog) and cold exposure (share of list slots that hold a cold item).

Examples
--------
>>> I = np.array([[1, 2, 3], [4, 5, -1]])
>>> m = list_metrics(I, np.array([0, 9]), [np.array([2, 7]), np.array([5])], k=3,
...                  category=np.array([0, 0, 1, 0, 1, 1, 0, 0, 0, 1]), cold=np.arange(10) == 3)
>>> m["recall@3"], m["precision@3"], m["cold_exposure"]
(0.75, 0.6667, 0.2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reelsim.storage.interactions import Interactions

#: two items are co-engaged when one user engaged with both at most this many rows apart
WINDOW = 5


@dataclass
class HeldOut:
    """A split of log ``rows``: ``segment`` bool (R,) held-out rows of the time segment,
    ``cold`` bool (N,) items held out with all their rows, ``rows`` bool (R,) the rows split."""

    rows: np.ndarray
    segment: np.ndarray
    cold: np.ndarray

    def train(self, log: Interactions) -> np.ndarray:
        """bool (R,): the rows that train (split rows, not in the segment, not of a cold item)."""
        return self.rows & ~self.segment & ~self.cold[log.item]


def last_rows(log: Interactions, rows: np.ndarray, share: float) -> np.ndarray:
    """bool (R,): the last ``round(share * n_u)`` of each user's ``rows`` in time order (none for one row)."""
    o = log.order()
    o = o[rows[o]]
    u = log.user[o]
    out = np.zeros(log.n, bool)
    if o.size == 0:
        return out
    start = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    count = np.diff(np.r_[start, o.size])
    pos = np.arange(o.size) - np.repeat(start, count)
    n = np.repeat(count, count)
    hold = np.where(n >= 2, np.floor(share * n + 0.5), 0)
    out[o[pos >= n - hold]] = True
    return out


def split_log(log: Interactions, n_items: int, rows: np.ndarray, *, share: float, cold_items: np.ndarray) -> HeldOut:
    """The split of ``rows`` with the last ``share`` of each user's rows and ``cold_items`` (bool (N,)) held out."""
    return HeldOut(rows, last_rows(log, rows, share) & rows, np.asarray(cold_items, bool))


def pick_items(candidates: np.ndarray, share: float, n_items: int, seed: int) -> np.ndarray:
    """bool (N,): a seeded ``share`` of the ``candidates`` (int rows)."""
    out = np.zeros(n_items, bool)
    n = round(share * candidates.size)
    out[np.random.default_rng(seed).choice(candidates, size=n, replace=False)] = True
    return out


def co_engagement(log: Interactions, rows: np.ndarray, n_items: int, held: np.ndarray, *, both: bool,
                  window: int = WINDOW):
    """Item x item co-engagement among log ``rows`` where both rows (or, ``both=False``, either) are ``held``.

    Returns a ``scipy.sparse.csr_matrix`` (N, N) of counts, symmetric.
    """
    import scipy.sparse as sp

    o = log.order()
    o = o[rows[o]]
    user, item, h = log.user[o], log.item[o], held[o]
    a, b = [], []
    for k in range(1, window + 1):
        keep = (user[k:] == user[:-k]) & (item[k:] != item[:-k]) & ((h[k:] & h[:-k]) if both else (h[k:] | h[:-k]))
        a.append(item[:-k][keep])
        b.append(item[k:][keep])
    a, b = np.concatenate(a), np.concatenate(b)
    C = sp.csr_matrix((np.ones(2 * a.size, np.float32), (np.r_[a, b], np.r_[b, a])), shape=(n_items, n_items))
    C.sum_duplicates()
    return C


def relevant_sets(C, queries: np.ndarray) -> list[np.ndarray]:
    """For each query item, the items co-engaged with it (rows of ``C``), int64."""
    return [C.indices[C.indptr[q]:C.indptr[q + 1]].astype(np.int64) for q in np.asarray(queries).tolist()]


def sample_queries(candidates: np.ndarray, C, n: int, seed: int) -> np.ndarray:
    """A seeded sample (sorted) of at most ``n`` of the ``candidates`` that have a relevant item in ``C``."""
    has = np.diff(C.indptr) > 0
    q = np.asarray(candidates, np.int64)
    q = q[has[q]]
    if q.size > n:
        q = np.sort(np.random.default_rng(seed).choice(q, size=n, replace=False))
    return q


@dataclass
class Truth:
    """Query items and their relevant items, for warm and cold queries: int64 (Q,) and lists of int64 arrays."""

    warm: np.ndarray
    warm_relevant: list
    cold: np.ndarray
    cold_relevant: list


def ground_truth(log: Interactions, split: HeldOut, n_items: int, train_counts: np.ndarray, *, n: int,
                 seed: int) -> Truth:
    """Warm and cold queries of a split with their held-out co-engaged items (module docstring)."""
    seg = split.rows & split.segment
    c_warm = co_engagement(log, split.rows, n_items, seg, both=True)
    c_cold = co_engagement(log, split.rows, n_items, split.cold[log.item] & split.rows, both=False)
    warm = sample_queries(np.flatnonzero(train_counts > 0), c_warm, n, seed)
    cold = sample_queries(np.flatnonzero(split.cold), c_cold, n, seed)
    return Truth(warm, relevant_sets(c_warm, warm), cold, relevant_sets(c_cold, cold))


def hits(I: np.ndarray, relevant: list) -> np.ndarray:
    """bool (Q, k): which entries of the lists ``I`` (-1 padding) are relevant."""
    out = np.zeros(I.shape, bool)
    for r, rel in enumerate(relevant):
        out[r] = np.isin(I[r], rel) & (I[r] >= 0)
    return out


def list_metrics(I: np.ndarray, queries: np.ndarray, relevant: list, *, k: int, category: np.ndarray | None = None,
                 cold: np.ndarray | None = None) -> dict:
    """recall@k, NDCG@k, precision@k (same category), coverage and cold exposure of lists ``I`` int64 (Q, k).

    ``category``: int (N,) labels, -1 unknown (precision is left out without it); ``cold``: bool (N,) items
    without training rows (exposure is left out without it). Coverage: distinct listed items / N (needs one of them).
    """
    I = I[:, :k]
    h = hits(I, relevant)
    m = np.array([min(k, r.size) for r in relevant])
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    out = {"queries": len(relevant)}
    if not len(relevant):
        return out | {f"recall@{k}": None, f"ndcg@{k}": None}
    out[f"recall@{k}"] = round(float(np.mean(h.sum(axis=1) / np.maximum(m, 1))), 4)
    ideal = np.array([disc[:j].sum() for j in m])
    out[f"ndcg@{k}"] = round(float(np.mean((h * disc[:I.shape[1]]).sum(axis=1) / np.maximum(ideal, 1e-12))), 4)
    listed = I >= 0
    J = np.where(listed, I, 0)
    if category is not None:
        same = listed & (category[J] == category[queries][:, None]) & (category[queries][:, None] >= 0)
        out[f"precision@{k}"] = round(float(same.sum() / (k * len(relevant))), 4)
    n_items = category.size if category is not None else (cold.size if cold is not None else None)
    if n_items:
        out["coverage"] = round(float(np.unique(I[listed]).size / n_items), 4)
    if cold is not None:
        out["cold_exposure"] = round(float((listed & cold[J]).sum() / max(listed.sum(), 1)), 4)
    return out


def cold_partner_share(relevant: list, cold: np.ndarray) -> float | None:
    """Share of (query, relevant item) pairs whose item is cold: the exposure cold items would earn."""
    pairs = np.concatenate(relevant) if relevant else np.zeros(0, np.int64)
    return round(float(cold[pairs].mean()), 4) if pairs.size else None


def top_k(score_block, rows: np.ndarray, k: int, *, block: int = 512) -> np.ndarray:
    """The top ``k`` columns of each query row (itself excluded), ``score_block(q) -> float (B, N)``: int64 (Q, k)."""
    out = np.full((rows.size, k), -1, np.int64)
    for i0 in range(0, rows.size, block):
        q = rows[i0:i0 + block]
        S = np.array(score_block(q), np.float32)
        S[np.arange(q.size), q] = -np.inf
        kk = min(k, S.shape[1] - 1)
        P = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
        Sp = np.take_along_axis(S, P, axis=1)
        o = np.argsort(-Sp, axis=1, kind="stable")
        I, Sk = np.take_along_axis(P, o, axis=1), np.take_along_axis(Sp, o, axis=1)
        out[i0:i0 + q.size, :kk] = np.where(np.isfinite(Sk), I, -1)
    return out
