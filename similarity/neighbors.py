"""k nearest neighbours: FAISS candidates by fused inner product, re-scored exactly.

For each query, the index returns ``min(N, oversample * k + 1)`` candidates
ranked by ``sum_{m in shared} w_m cos_m``; each is then scored with the
shared-modality rule (:mod:`reelsim.similarity.fusion`), the query itself
and items sharing no weighted modality with it are dropped, and the best
``k`` are kept: highest score first, equal scores (to 6 decimals) by item id.
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
        FAISS returns ``min(N, oversample * k + 1)`` candidates per query.
    batch_size : int
        Queries per FAISS call; re-scoring holds ``batch_size * candidates * d_m`` float32 at a time.

    Returns
    -------
    list of list of Neighbor
        One list per query row, best first, never containing the query itself.
    """
    if rows is None:
        rows = np.arange(cat_norm.n)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
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
    """Checked arguments shared by every batch of one search."""

    def __init__(self, cat, index, weights, k, oversample, batch_size):
        _require_normalised(cat)
        for name, v in (("k", k), ("oversample", oversample), ("batch_size", batch_size)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise UsageError(f"{name} must be a positive integer, got {v!r}")
        self.cat, self.index, self.k, self.batch_size = cat, index, int(k), int(batch_size)
        self.w = check_weights(weights)
        self.active = active_modalities(cat, self.w)
        d = sum(cat.vectors[m].shape[1] for m in self.active)
        if index.ntotal != cat.n or index.d != d:
            raise StoreError(f"index (ntotal={index.ntotal}, d={index.d}) does not match the catalog fused with "
                             f"{self.active} (N={cat.n}, D={d}); rebuild it")
        self.kc = min(cat.n, int(oversample) * self.k + 1)
        self.id_rank = np.empty(cat.n, dtype=np.int64)
        self.id_rank[sorted(range(cat.n), key=cat.ids.__getitem__)] = np.arange(cat.n)

    def batches(self, b: int):
        return (slice(i0, i0 + self.batch_size) for i0 in range(0, b, self.batch_size))

    def run(self, uq: dict, mq: dict, self_rows: np.ndarray | None) -> list[list[Neighbor]]:
        """Search one batch: ``uq[m]`` float32 (B, d_m), ``mq[m]`` bool (B,), ``self_rows`` int64 (B,) or None."""
        b = next(iter(mq.values())).shape[0]
        if b == 0 or self.kc == 0:
            return [[] for _ in range(b)]
        _, I = self.index.search(fuse_parts(uq, self.w, self.active), self.kc)
        valid = I >= 0
        if self_rows is not None:
            valid &= I != self_rows[:, None]
        I = np.where(valid, I, 0)
        num, den = np.zeros(I.shape), np.zeros(I.shape)
        cos, shared = {}, {}
        for m in self.active:
            shared[m] = valid & mq[m][:, None] & self.cat.masks[m][I]
            cos[m] = np.einsum("bd,bkd->bk", uq[m], self.cat.vectors[m][I]).astype(np.float64)
            num += self.w[m] * np.where(shared[m], cos[m], 0.0)
            den += self.w[m] * shared[m]
        S = np.round(np.divide(num, den, out=np.full(I.shape, -np.inf), where=den > 0), DECIMALS)
        order = np.lexsort((self.id_rank[I], -S), axis=-1)[:, :self.k]
        ids = self.cat.ids
        return [[Neighbor(ids[I[q, j]], float(S[q, j]),
                          {m: round(float(cos[m][q, j]), DECIMALS) for m in self.active if shared[m][q, j]})
                 for j in order[q] if den[q, j] > 0]
                for q in range(b)]
