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

from reelsim.config import check_weights
from reelsim.errors import StoreError, UnknownItemError, UsageError
from reelsim.similarity.catalog import CatalogEmbeddings, require_normalised
from reelsim.similarity.fusion import (
    DECIMALS,
    active_modalities,
    fuse_parts,
    gathered_ip,
    normalise_queries,
    shared_score,
    signature_codes,
)
from reelsim.similarity.grouped import GroupedIndex
from reelsim.storage.lists import Neighbor


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
    plan = SearchPlan(cat_norm, index, weights, k, oversample, batch_size)
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
    plan = SearchPlan(cat_norm, index, weights, k, oversample, batch_size)
    uq, mq = normalise_queries(cat_norm, xq)
    b = next(iter(uq.values())).shape[0] if uq else 0
    out: list[list[Neighbor]] = []
    for r in plan.batches(b):
        out += plan.run({m: uq[m][r] for m in plan.active}, {m: mq[m][r] for m in plan.active}, None)
    return out


class Scored(NamedTuple):
    """Exactly scored neighbours of a batch of B queries, best first, as arrays.

    I : int64 (B, K), catalog rows (-1 where a query has fewer than K).
    S : float64 (B, K), scores rounded to :data:`DECIMALS` (-inf where ``I`` is -1).
    cos : dict of str to float64 (B, K), per-modality cosines, NaN where not shared.
    """

    I: np.ndarray
    S: np.ndarray
    cos: dict


def neighbors_of(ids: Sequence[str], scored: Scored) -> list[list[Neighbor]]:
    """Convert :class:`Scored` arrays into lists of :class:`Neighbor` (one per query)."""
    I, S = scored.I.tolist(), scored.S.tolist()
    cos = {m: c.tolist() for m, c in scored.cos.items()}
    return [[Neighbor(ids[I[q][j]], S[q][j], {m: c[q][j] for m, c in cos.items() if c[q][j] == c[q][j]})
             for j in range(len(I[q])) if I[q][j] >= 0]
            for q in range(len(I))]


def best_first(S: np.ndarray, rank: np.ndarray, keep: int) -> np.ndarray:
    """Positions (B, min(keep, C)) of the ``keep`` best of each row: highest score first, equal scores by ``rank``.

    ``S`` float64 (B, C), scores rounded to :data:`DECIMALS` (-inf: none);
    ``rank`` int64 (B, C), the candidates' id order. The same order as
    ``np.lexsort((rank, -S))``, with a partition before the sort (the lists
    keep 10 of 60 candidates).

    Examples
    --------
    >>> best_first(np.array([[0.5, 0.9, 0.5, -np.inf]]), np.array([[3, 2, 1, 0]]), 3).tolist()
    [[1, 2, 0]]
    """
    keep = min(keep, S.shape[1])
    # one integer key per candidate: the score in units of 1e-DECIMALS, then the id rank (unique, exact)
    steps = np.where(S > -np.inf, np.rint(S * 10**DECIMALS), -(10 ** (DECIMALS + 2)))
    key = -steps.astype(np.int64) * (int(rank.max(initial=0)) + 1) + rank
    if keep < S.shape[1]:
        part = np.argpartition(key, keep - 1, axis=1)[:, :keep]
        return np.take_along_axis(part, np.argsort(np.take_along_axis(key, part, axis=1), axis=1), axis=1)
    return np.argsort(key, axis=1)


def exact_scores(cat: CatalogEmbeddings, w: Mapping[str, float], active: Sequence[str], uq: Mapping, mq: Mapping,
                 I: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, dict, dict]:
    """The exact score of every query with each of its candidates: the one place list scores are computed.

    Parameters
    ----------
    cat : CatalogEmbeddings
        Normalised catalog holding the candidates.
    w, active : modality weights and the fused modalities.
    uq, mq : dict of str to float32 (B, d_m) / bool (B,)
        The queries' normalised vectors and masks per modality.
    I : int64 (B, C)
        Candidate rows of ``cat`` (any value where not ``valid``).
    valid : bool (B, C)

    Returns
    -------
    S : float64 (B, C), :func:`~reelsim.similarity.fusion.shared_score` rounded, -inf where not valid or nothing shared.
    cos : dict of str to float64 (B, C), each modality's cosine (float32 inner product).
    shared : dict of str to bool (B, C), where both have the modality.
    """
    I = np.where(valid, I, 0)
    cos, shared = {}, {}
    for m in active:
        shared[m] = valid & mq[m][:, None] & cat.masks[m][I]
        cos[m] = gathered_ip(uq[m], cat.vectors[m], I).astype(np.float64)
    return shared_score(((m, cos[m], shared[m]) for m in active), w), cos, shared


class _FlatGroups:
    """Group search over an exact ``IndexFlatIP`` of all fused vectors (the original layout)."""

    def __init__(self, index, n: int, d: int, groups):
        import faiss

        self.index = index  # keeps the memory that the zero-copy view self.xb points into alive
        self.xb = faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d) if n else None
        self.G = dict(groups)
        self.exact = True

    def search_group(self, code: int, xq: np.ndarray, k: int):
        import faiss

        G = self.G[code]
        block = self.xb[G[0]:G[-1] + 1] if G[-1] - G[0] + 1 == G.size else self.xb[G]
        return faiss.knn(xq, block, min(G.size, k), metric=faiss.METRIC_INNER_PRODUCT)


class SearchPlan:
    """Checked arguments and the modality groups shared by every batch of one search.

    ``index`` is the exact ``IndexFlatIP`` of :func:`reelsim.similarity.index_choice.build_index`
    or a :class:`reelsim.similarity.grouped.GroupedIndex`; ``blocked`` (bool (N,)
    or None) marks rows that are never returned. ``searcher`` (with a
    GroupedIndex): another object whose ``search_group(code, xq, k)`` answers
    for the index's groups (:class:`reelsim.similarity.blocked.DeviceGroups`: on a GPU).
    """

    def __init__(self, cat, index, weights, k, oversample, batch_size, blocked=None, searcher=None):
        import faiss

        require_normalised(cat)
        for name, v in (("k", k), ("oversample", oversample), ("batch_size", batch_size)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise UsageError(f"{name} must be a positive integer, got {v!r}")
        # a catalog of N items has at most N neighbours for a query: a larger k allocates nothing more
        self.cat, self.k, self.batch_size = cat, min(int(k), max(1, cat.n)), int(batch_size)
        self.kc = int(oversample) * self.k + 1
        self.w = check_weights(weights)
        self.active = active_modalities(cat, self.w)
        d = sum(cat.vectors[m].shape[1] for m in self.active)
        code = signature_codes(cat.masks, self.active)
        self.groups = [(c, np.flatnonzero(code == c)) for c in np.unique(code) if c]
        if isinstance(index, GroupedIndex):
            sizes = {c: int(ix.ntotal) for c, ix in index.indexes.items()}
            if (index.active != self.active or sizes != {int(c): G.size for c, G in self.groups}
                    or any(ix.d != d for ix in index.indexes.values())):
                raise StoreError(f"index (modalities {list(index.active)}, groups {sizes}) does not match the "
                                 f"catalog fused with {self.active} (N={cat.n}, D={d}); rebuild it")
            self.searcher = searcher or index
        else:
            if not (isinstance(index, faiss.IndexFlat) and index.metric_type == faiss.METRIC_INNER_PRODUCT):
                raise UsageError(f"expected an IndexFlatIP or a GroupedIndex, got {type(index).__name__}")
            if index.ntotal != cat.n or index.d != d:
                raise StoreError(f"index (ntotal={index.ntotal}, d={index.d}) does not match the catalog fused with "
                                 f"{self.active} (N={cat.n}, D={d}); rebuild it")
            self.searcher = _FlatGroups(index, cat.n, d, self.groups)
        self.groups = [(int(c), G) for c, G in self.groups]
        # candidates each group returns: oversample * k + 1, more for indexes of approximate codes (k_factor)
        plans = index.plans if isinstance(index, GroupedIndex) else {}
        self.group_k = {c: max(self.kc, plans[c].k_factor * self.k + 1 if c in plans else 0) for c, _ in self.groups}
        self.pool = max(self.group_k.values(), default=self.kc)
        # wsum[c]: total weight of the modalities in bit code c
        self.wsum = np.array([sum(self.w[m] for i, m in enumerate(self.active) if c >> i & 1)
                              for c in range(2 ** len(self.active))])
        self.id_rank = np.empty(cat.n, dtype=np.int64)
        self.id_rank[sorted(range(cat.n), key=cat.ids.__getitem__)] = np.arange(cat.n)
        self.blocked = None if blocked is None or not np.any(blocked) else np.asarray(blocked, bool)

    def batches(self, b: int):
        return (slice(i0, i0 + self.batch_size) for i0 in range(0, b, self.batch_size))

    def candidates(self, xq: np.ndarray, qcode: np.ndarray,
                   self_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The best of each group by fused inner product.

        Returns ``I`` int64 (B, C), catalog rows (-1: none), and ``approx``
        float64 (B, C): the inner product divided by the shared weight, -inf
        where nothing is shared. ``self_rows`` (the queries' catalog rows):
        queries search their own group as its members
        (:meth:`~reelsim.similarity.grouped.GroupedIndex.search_members`).
        """
        Is, approx = [np.full((xq.shape[0], 0), -1)], [np.full((xq.shape[0], 0), -np.inf, np.float32)]
        for c, G in self.groups:
            if np.any(qcode & c):
                D, J = self._search(c, G, xq, qcode, self_rows)
                W = self.wsum[qcode & c][:, None]
                Is.append(np.where(J >= 0, G[np.maximum(J, 0)], -1))
                approx.append(np.where((J >= 0) & (W > 0), D / np.where(W > 0, W, 1), -np.inf))
        return np.concatenate(Is, axis=1), np.concatenate(approx, axis=1)

    def _search(self, c: int, G: np.ndarray, xq: np.ndarray, qcode: np.ndarray, self_rows: np.ndarray | None):
        """Group ``c``'s best candidates (D, J) for every query; its own members searched as members."""
        k = self.group_k[c]
        members = getattr(self.searcher, "search_members", None)
        mine = (qcode == c) if self_rows is not None and members is not None else None
        if mine is None or not mine.any():
            return self.searcher.search_group(c, xq, k)
        if mine.all():
            return members(c, xq, np.searchsorted(G, self_rows), k)
        D, J = self.searcher.search_group(c, xq[~mine], k)
        Dm, Jm = members(c, xq[mine], np.searchsorted(G, self_rows[mine]), k)
        out_d, out_j = np.empty((xq.shape[0], D.shape[1]), D.dtype), np.empty((xq.shape[0], J.shape[1]), J.dtype)
        out_d[~mine], out_j[~mine], out_d[mine], out_j[mine] = D, J, Dm, Jm
        return out_d, out_j

    def run(self, uq: dict, mq: dict, self_rows: np.ndarray | None) -> list[list[Neighbor]]:
        """Search one batch: ``uq[m]`` float32 (B, d_m), ``mq[m]`` bool (B,), ``self_rows`` int64 (B,) or None."""
        return neighbors_of(self.cat.ids, self.run_arrays(uq, mq, self_rows, self.k))

    def run_arrays(self, uq: dict, mq: dict, self_rows: np.ndarray | None, keep: int) -> Scored:
        """Like :meth:`run`, as :class:`Scored` arrays with the best ``keep`` (<= oversample * k + 1) per query."""
        I, approx = self.candidates(fuse_parts(uq, self.w, self.active), signature_codes(mq, self.active), self_rows)
        if self_rows is not None:
            approx[I == self_rows[:, None]] = -np.inf
        if self.blocked is not None:
            approx[(I >= 0) & self.blocked[np.maximum(I, 0)]] = -np.inf
        if I.shape[1] > self.pool:  # keep the best candidates (by fused inner product) for exact re-scoring
            best = np.argpartition(-approx, self.pool - 1, axis=1)[:, :self.pool]
            I, approx = np.take_along_axis(I, best, axis=1), np.take_along_axis(approx, best, axis=1)
        valid = approx > -np.inf
        I = np.where(valid, I, 0)
        step = 65536  # queries re-scored at a time (a few (B, C) float64 arrays)
        parts = []
        for q0 in range(0, I.shape[0], step):
            r = slice(q0, q0 + step)
            parts.append(self.rescore({m: uq[m][r] for m in self.active}, {m: mq[m][r] for m in self.active},
                                      I[r], valid[r], keep))
        if not parts:
            empty = np.zeros((0, keep))
            return Scored(empty.astype(np.int64), empty, {m: empty for m in self.active})
        return Scored(np.concatenate([p.I for p in parts]), np.concatenate([p.S for p in parts]),
                      {m: np.concatenate([p.cos[m] for p in parts]) for m in self.active})

    def rescore(self, uq: dict, mq: dict, I: np.ndarray, valid: np.ndarray, keep: int) -> Scored:
        """Exact scores of candidates ``I`` int64 (B, C) where ``valid``; the best ``keep`` per query."""
        S, cos, shared = exact_scores(self.cat, self.w, self.active, uq, mq, I, valid)
        order = best_first(S, self.id_rank[I], keep)
        ok = np.take_along_axis(S, order, axis=1) > -np.inf
        pad = keep - order.shape[1]
        top = lambda a, fill: np.pad(np.where(ok, np.take_along_axis(a, order, axis=1), fill), ((0, 0), (0, pad)),
                                     constant_values=fill)
        cos = {m: top(np.where(shared[m], np.round(cos[m], DECIMALS), np.nan), np.nan) for m in self.active}
        return Scored(top(I, -1), top(S, -np.inf), cos)
