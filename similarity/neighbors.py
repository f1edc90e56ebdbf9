"""k nearest neighbours under the shared-modality score, exact.

One inner-product search over all fused items ranks by the *numerator*
``sum_{m in shared} w_m cos_m`` alone, which favours items that share many
modalities: a video's best product matches (image+text) sit below hundreds of
merely similar videos, and oversampling does not bring them back. So the
catalog is split into groups of items with the same modalities. Within a
group, every item shares the same modalities with a given query, the
denominator is constant, and the fused inner product ranks the group exactly
like the score. Each group is searched with ``faiss.knn`` over the index's
fused vectors; the ``oversample * k + 1`` best candidates by approximate score
(inner product / shared weight) are re-scored exactly from the catalog
vectors; the query itself and items sharing no weighted modality are dropped,
and the best ``k`` are kept: highest score first, equal scores (to 6 decimals)
by item id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from reelsim.errors import StoreError, UnknownItemError, UsageError
from reelsim.similarity.fusion import (
    CatalogEmbeddings, _require_normalised, active_modalities, check_weights, fuse_parts, normalise_queries,
)

#: Scores and cosines are rounded to this many decimals, so that ties (and
#: hence the id tie-break) do not depend on floating-point summation order.
DECIMALS = 6


class Neighbor(NamedTuple):
    """One neighbour of a query item.

    item : its id.
    score : the weighted mean of ``modalities`` (weights of the shared modalities).
    modalities : modality -> plain cosine, for the shared modalities only.
    """

    item: str
    score: float
    modalities: dict[str, float]


def rows_of(cat: CatalogEmbeddings, items: Sequence[str]) -> np.ndarray:
    """Row numbers (int64, shape (len(items),)) of ``items`` in ``cat``.

    Raises
    ------
    UnknownItemError
        If an id is not in the catalog.
    """
    where = {item: i for i, item in enumerate(cat.ids)}
    missing = [item for item in items if item not in where]
    if missing:
        raise UnknownItemError(f"{len(missing)} unknown item id(s), e.g. {missing[0]!r}")
    return np.array([where[item] for item in items], dtype=np.int64)


def search(cat_norm: CatalogEmbeddings, index, weights: Mapping[str, float], rows: Sequence[int] | np.ndarray | None,
           k: int, oversample: int = 5, *, batch_size: int = 1024) -> list[list[Neighbor]]:
    """Neighbours of catalog items.

    Parameters
    ----------
    cat_norm : CatalogEmbeddings
        Output of :func:`reelsim.similarity.fusion.normalise` (N items).
    index : faiss.Index
        Built from ``fuse(cat_norm, w)`` with the same positive-weight modalities.
    weights : dict of str to float
        Modality -> weight >= 0; used for the query vectors and the exact scores.
    rows : sequence of int, shape (B,), or None
        Query rows of ``cat_norm`` (None: every item).
    k : int
        At most ``k`` neighbours per query.
    oversample : int
        FAISS returns ``oversample * k + 1`` candidates per modality group, and
        as many of the best over all groups are re-scored exactly. The groups
        make the search exact already; oversampling only widens the margin for
        ties and float32 rounding (e.g. items with identical vectors).
    batch_size : int
        Queries per FAISS call. Extra memory: a copy of one group's fused
        vectors when its rows are not contiguous in the catalog, plus about
        64 MB of gathered candidates for re-scoring.

    Returns
    -------
    list of list of Neighbor
        One list per query row, best first, never containing the query itself.
    """
    if rows is None:
        rows = np.arange(cat_norm.n)
    rows = np.asarray(rows).reshape(-1)
    if rows.size and rows.dtype.kind not in "iu":
        raise UsageError(f"query rows must be integers, got dtype {rows.dtype}")
    rows = rows.astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= cat_norm.n):
        raise UsageError(f"query rows must be in [0, {cat_norm.n}), got {rows.min()}..{rows.max()}")
    plan = _Plan(cat_norm, index, weights, k, oversample, batch_size)
    out: list[list[Neighbor]] = []
    for r in plan.batches(rows.size):
        q = rows[r]
        out += plan.run({m: cat_norm.vectors[m][q] for m in plan.active},
                        {m: cat_norm.masks[m][q] for m in plan.active}, q)
    return out


def search_vectors(cat_norm: CatalogEmbeddings, index, weights: Mapping[str, float], xq: Mapping[str, np.ndarray],
                   k: int, oversample: int = 5, *, batch_size: int = 1024) -> list[list[Neighbor]]:
    """Neighbours of new items given by raw embeddings (not in the catalog).

    Parameters
    ----------
    xq : dict of str to np.ndarray, shape (B, d_m)
        Raw query embeddings; they are centred with ``cat_norm.means`` and
        L2-normalised like the catalog. An all-zero row means "lacks this modality".

    The other parameters and the result are as in :func:`search`; no item is excluded.
    """
    plan = _Plan(cat_norm, index, weights, k, oversample, batch_size)
    uq, mq = normalise_queries(cat_norm, xq)
    b = next(iter(uq.values())).shape[0] if uq else 0
    out: list[list[Neighbor]] = []
    for r in plan.batches(b):
        out += plan.run({m: uq[m][r] for m in plan.active}, {m: mq[m][r] for m in plan.active}, None)
    return out


class _Plan:
    """Checked arguments and the modality groups shared by every batch of one search."""

    def __init__(self, cat, index, weights, k, oversample, batch_size):
        import faiss

        _require_normalised(cat)
        for name, v in (("k", k), ("oversample", oversample), ("batch_size", batch_size)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise UsageError(f"{name} must be a positive integer, got {v!r}")
        self.cat, self.k, self.batch_size = cat, int(k), int(batch_size)
        self.kc = int(oversample) * self.k + 1
        self.w = check_weights(weights)
        self.active = active_modalities(cat, self.w)
        d = sum(cat.vectors[m].shape[1] for m in self.active)
        if not (isinstance(index, faiss.IndexFlat) and index.metric_type == faiss.METRIC_INNER_PRODUCT):
            raise UsageError(f"expected the exact IndexFlatIP from build_index(), got {type(index).__name__}")
        if index.ntotal != cat.n or index.d != d:
            raise StoreError(f"index (ntotal={index.ntotal}, d={index.d}) does not match the catalog fused with "
                             f"{self.active} (N={cat.n}, D={d}); rebuild it")
        self.index = index  # keeps the memory that the zero-copy view self.xb points into alive
        self.xb = faiss.rev_swig_ptr(index.get_xb(), cat.n * d).reshape(cat.n, d) if cat.n else None
        self.knn, self.metric = faiss.knn, faiss.METRIC_INNER_PRODUCT
        code = _codes(cat.masks, self.active)
        self.groups = [(c, np.flatnonzero(code == c)) for c in np.unique(code) if c]
        # wsum[c]: total weight of the modalities in bit code c
        self.wsum = np.array([sum(self.w[m] for i, m in enumerate(self.active) if c >> i & 1)
                              for c in range(2 ** len(self.active))])
        self.id_rank = np.empty(cat.n, dtype=np.int64)
        self.id_rank[sorted(range(cat.n), key=cat.ids.__getitem__)] = np.arange(cat.n)

    def batches(self, b: int):
        return (slice(i0, i0 + self.batch_size) for i0 in range(0, b, self.batch_size))

    def candidates(self, xq: np.ndarray, qcode: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The best of each group by fused inner product.

        Returns ``I`` int64 (B, C), catalog rows, and ``approx`` float64 (B, C):
        the inner product divided by the shared weight, -inf where nothing is shared.
        """
        Is, approx = [np.full((xq.shape[0], 0), -1)], [np.full((xq.shape[0], 0), -np.inf, np.float32)]
        for c, G in self.groups:
            if np.any(qcode & c):
                block = self.xb[G[0]:G[-1] + 1] if G[-1] - G[0] + 1 == G.size else self.xb[G]
                D, I = self.knn(xq, block, min(G.size, self.kc), metric=self.metric)
                W = self.wsum[qcode & c][:, None]
                Is.append(np.where(I >= 0, G[np.maximum(I, 0)], -1))
                approx.append(np.where((I >= 0) & (W > 0), D / np.where(W > 0, W, 1), -np.inf))
        return np.concatenate(Is, axis=1), np.concatenate(approx, axis=1)

    def run(self, uq: dict, mq: dict, self_rows: np.ndarray | None) -> list[list[Neighbor]]:
        """Search one batch: ``uq[m]`` float32 (B, d_m), ``mq[m]`` bool (B,), ``self_rows`` int64 (B,) or None."""
        I, approx = self.candidates(fuse_parts(uq, self.w, self.active), _codes(mq, self.active))
        if self_rows is not None:
            approx[I == self_rows[:, None]] = -np.inf
        if I.shape[1] > self.kc:  # keep the oversample * k + 1 best for exact re-scoring
            best = np.argpartition(-approx, self.kc - 1, axis=1)[:, :self.kc]
            I, approx = np.take_along_axis(I, best, axis=1), np.take_along_axis(approx, best, axis=1)
        valid = approx > -np.inf
        I = np.where(valid, I, 0)
        # re-score in chunks of queries so that the gathered candidates stay under ~64 MB
        step = max(1, 2**24 // max(1, I.shape[1] * max(uq[m].shape[1] for m in self.active)))
        out: list[list[Neighbor]] = []
        for q0 in range(0, I.shape[0], step):
            r = slice(q0, q0 + step)
            out += self.rescore({m: uq[m][r] for m in self.active}, {m: mq[m][r] for m in self.active}, I[r], valid[r])
        return out

    def rescore(self, uq: dict, mq: dict, I: np.ndarray, valid: np.ndarray) -> list[list[Neighbor]]:
        """Exact scores of candidates ``I`` int64 (B, C) where ``valid``; the best ``k`` per query."""
        num, den = np.zeros(I.shape), np.zeros(I.shape)
        cos, shared = {}, {}
        for m in self.active:
            shared[m] = valid & mq[m][:, None] & self.cat.masks[m][I]
            cos[m] = np.einsum("bd,bkd->bk", uq[m], self.cat.vectors[m][I]).astype(np.float64)
            num += self.w[m] * np.where(shared[m], cos[m], 0.0)
            den += self.w[m] * shared[m]
        S = np.round(np.divide(num, den, out=np.full(I.shape, -np.inf), where=den > 0), DECIMALS)
        order = np.lexsort((self.id_rank[I], -S), axis=-1)[:, :self.k]
        top = lambda a: np.take_along_axis(a, order, axis=1).tolist()
        ids, items, scores, ok = self.cat.ids, top(I), top(S), top(den > 0)
        cos = {m: top(np.round(cos[m], DECIMALS)) for m in self.active}
        shared = {m: top(shared[m]) for m in self.active}
        return [[Neighbor(ids[items[q][j]], scores[q][j], {m: cos[m][q][j] for m in self.active if shared[m][q][j]})
                 for j in range(order.shape[1]) if ok[q][j]]
                for q in range(order.shape[0])]


def _codes(masks: Mapping[str, np.ndarray], active: tuple[str, ...]) -> np.ndarray:
    """Bit ``i`` set where the item has ``active[i]``: int64 (n,)."""
    return sum(masks[m].astype(np.int64) << i for i, m in enumerate(active))
