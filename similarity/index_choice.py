"""Which FAISS index to build for a group of N fused vectors of dimension D.

Every choice is a FAISS ``index_factory`` string plus search-time parameters
(:class:`IndexPlan`). :func:`choose_index` picks one by size, the kinds live in
the :data:`INDEX_KINDS` registry, and a user can name a kind (``exact``,
``ivf``, ``ivfpqfs``, ``hnsw``, ``ivfpq``) or give any factory string
(``"IVF4096,Flat"``, ``"HNSW32"``, ``"IVF1024,PQ64x4fs"``)::

    >>> choose_index(5_000, 256).factory
    'Flat'
    >>> plan = choose_index(1_000_000, 256)
    >>> plan.factory, plan.params, plan.k_factor
    ('IVF1024,PQ64x4fs', {'nprobe': 4}, 6)
    >>> choose_index(1_000_000, 256, memory_budget_bytes=2**24).factory  # 32 MB of codes do not fit in 16 MiB
    'OPQ8_256,IVF4096,PQ8'

The thresholds come from ``benchmarks/knn.py`` on a 2-core machine
(docs/similarity.md, "Index choice"). Importing this module loads numpy only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from reelsim.errors import UsageError
from reelsim.similarity.catalog import check_matrix

#: Below this many vectors in a group the exact ``Flat`` index is used:
#: measured with ``benchmarks/knn.py --threshold`` (docs/similarity.md, d = 256):
#: the fast-scan IVF-PQ graph's recall@10 is 0.89 at N = 1e4, 0.944 at 3e4 and
#: 0.954 at 5e4, while the exact graph costs 0.5 s, 2.8 s and 7 s (3.5-6x the
#: fast-scan graph); below the threshold exactness is worth its price.
EXACT_BELOW = 50_000
#: Default memory budget for the fused vectors of one index (bytes); above it
#: vectors are compressed with OPQ + IVF-PQ.
DEFAULT_MEMORY_BUDGET = 4 * 2**30
#: Training points per IVF centroid (FAISS warns below 39).
POINTS_PER_CENTROID = 40
#: Training points per PQ sub-quantizer centroid (256 centroids each).
PQ_TRAIN = 256 * 100


@dataclass(frozen=True)
class IndexPlan:
    """One index to build.

    factory : FAISS ``index_factory`` string (metric: inner product).
    params : search-time parameters, ``{"nprobe": int}`` (IVF) or ``{"efSearch": int}`` (HNSW).
    train_size : vectors sampled for training (at most the group size); 0 for
        indexes that need none. A group with fewer vectors than this gets ``Flat``.
    kind : registry name, or ``"custom"`` for a user's factory string.
    k_factor : the index returns ``k_factor * k + 1`` candidates per query
        (at least the search's own ``oversample * k + 1``), all re-scored
        exactly: indexes whose codes only approximate the vectors (PQ) need
        more candidates than they return neighbours, as FAISS's ``RFlat``.
    """

    factory: str
    params: dict = field(default_factory=dict)
    train_size: int = 0
    kind: str = "custom"
    k_factor: int = 1

    @property
    def exact(self) -> bool:
        """Whether the index returns exact inner products of every vector."""
        return self.factory == "Flat"


def nlist_for(n: int) -> int:
    """IVF lists for ``n`` vectors: about ``4 sqrt(n)``, a power of 2 in [16, 65536].

    Also at most ``n / POINTS_PER_CENTROID`` so that training has enough points.

    Examples
    --------
    >>> nlist_for(10_000), nlist_for(100_000), nlist_for(1_000_000)
    (128, 1024, 4096)
    """
    target = 4 * math.sqrt(max(n, 1))
    nlist = 2 ** int(round(math.log2(max(target, 16))))
    while nlist > 16 and nlist * POINTS_PER_CENTROID > n:
        nlist //= 2
    return int(min(max(nlist, 16), 65536))


def nprobe_for(nlist: int) -> int:
    """Lists visited per query: ``nlist / 256``, at least 16 and at most ``nlist``.

    With 8 probes recall@10 on the clustered benchmark data fell to 0.92 at
    N = 5e4 (nlist 1024); 16 keeps it >= 0.95 (docs/similarity.md).

    Examples
    --------
    >>> nprobe_for(256), nprobe_for(4096), nprobe_for(16384)
    (16, 16, 64)
    """
    return int(min(nlist, max(16, nlist // 256)))


def _pq_m(d: int, n: int, budget: int) -> int:
    """PQ sub-quantizers (bytes per code): the largest of 64, 32, 16, 8 that divides d and fits."""
    for m in (64, 32, 16, 8):
        if d % m == 0 and n * m <= budget // 2:
            return m
    return next((m for m in (8, 4, 2, 1) if d % m == 0), 1)


def exact_plan(n: int, d: int, budget: int) -> IndexPlan:
    return IndexPlan("Flat", {}, 0, "exact")


def ivf_plan(n: int, d: int, budget: int) -> IndexPlan:
    nlist = nlist_for(n)
    return IndexPlan(f"IVF{nlist},Flat", {"nprobe": nprobe_for(nlist)}, nlist * POINTS_PER_CENTROID, "ivf")


def hnsw_plan(n: int, d: int, budget: int) -> IndexPlan:
    return IndexPlan("HNSW32", {"efSearch": 128}, 0, "hnsw")


def ivfpq_plan(n: int, d: int, budget: int) -> IndexPlan:
    nlist, m = nlist_for(n), _pq_m(d, n, budget)
    train = max(nlist * POINTS_PER_CENTROID, PQ_TRAIN)
    return IndexPlan(f"OPQ{m}_{d},IVF{nlist},PQ{m}", {"nprobe": nprobe_for(nlist)}, train, "ivfpq")


#: Candidates per query of a fast-scan index, as a multiple of k, re-scored exactly (see :class:`IndexPlan`).
FASTSCAN_K_FACTOR = 6
#: Lists a fast-scan index probes per query (a member of the catalog: its own list and the lists of the
#: nearest centroids, :meth:`reelsim.similarity.grouped.GroupedIndex.search_members`).
FASTSCAN_NPROBE = 4


def fastscan_nlist(n: int) -> int:
    """IVF lists of a fast-scan index for ``n`` vectors: about ``sqrt(n)``, a power of 2 in [16, 65536].

    Fewer lists than :func:`nlist_for`: scanning 4-bit codes is cheap, and
    assigning every vector to a list (``n * nlist * d`` multiply-adds, once
    to add and once to search) is what grows. At most ``n / POINTS_PER_CENTROID``.

    Examples
    --------
    >>> fastscan_nlist(100_000), fastscan_nlist(1_000_000), fastscan_nlist(10**8)
    (256, 1024, 8192)
    """
    nlist = 2 ** int(round(math.log2(max(math.sqrt(max(n, 1)), 16))))
    while nlist > 16 and nlist * POINTS_PER_CENTROID > n:
        nlist //= 2
    return int(min(max(nlist, 16), 65536))


def fastscan_m(d: int) -> int | None:
    """Sub-quantizers of a 4-bit fast-scan PQ for dimension ``d``: ``d / 4`` (4 dimensions per 4-bit code).

    None when ``d / 4`` is not an even integer (fast-scan packs codes in pairs).
    """
    return d // 4 if d % 8 == 0 else None


def ivfpqfs_plan(n: int, d: int, budget: int) -> IndexPlan:
    """``IVF{nlist},PQ{d/4}x4fs``: 4-bit PQ codes scanned with SIMD, candidates re-scored exactly by reelsim.

    Falls back to :func:`ivf_plan` when ``d`` does not split into pairs of 4 dimensions.
    """
    m = fastscan_m(d)
    if m is None:
        return ivf_plan(n, d, budget)
    nlist = fastscan_nlist(n)
    return IndexPlan(f"IVF{nlist},PQ{m}x4fs", {"nprobe": min(nlist, FASTSCAN_NPROBE)}, nlist * POINTS_PER_CENTROID,
                     "ivfpqfs", FASTSCAN_K_FACTOR)


#: kind name -> function (n, d, memory budget in bytes) -> IndexPlan
INDEX_KINDS: dict[str, Callable[[int, int, int], IndexPlan]] = {
    "exact": exact_plan,
    "ivf": ivf_plan,
    "ivfpqfs": ivfpqfs_plan,
    "hnsw": hnsw_plan,
    "ivfpq": ivfpq_plan,
}


def choose_index(n: int, d: int, *, memory_budget_bytes: int | None = None, override: str | None = None,
                 exact_below: int = EXACT_BELOW) -> IndexPlan:
    """The index for ``n`` fused vectors of dimension ``d``.

    Rule (``override`` None or ``"auto"``): exact ``Flat`` below ``exact_below``
    vectors; otherwise ``IVF{nlist},PQ{d/4}x4fs`` (:func:`ivfpqfs_plan`:
    4-bit codes, ``n * d / 8`` bytes, candidates re-scored exactly), or
    ``OPQ,IVF,PQ`` with fewer bytes per vector when even those codes exceed
    the memory budget.

    Parameters
    ----------
    n, d : int
        Number and dimension of the vectors.
    memory_budget_bytes : int, optional
        Default :data:`DEFAULT_MEMORY_BUDGET`.
    override : str, optional
        A kind in :data:`INDEX_KINDS`, or a FAISS factory string (search
        parameters then follow from it: ``nprobe`` for IVF, ``efSearch`` for HNSW).

    Raises
    ------
    UsageError
        A factory string FAISS does not accept.
    """
    budget = int(memory_budget_bytes or DEFAULT_MEMORY_BUDGET)
    if override and override != "auto":
        if override in INDEX_KINDS:
            return INDEX_KINDS[override](n, d, budget)
        return custom_plan(override, n, d)
    if n < exact_below:
        return exact_plan(n, d, budget)
    if n * d // 8 > budget:  # even 4-bit codes of d/4 sub-quantizers do not fit: fewer bytes per vector
        return ivfpq_plan(n, d, budget)
    return ivfpqfs_plan(n, d, budget)


#: A dimension divisible by every common PQ / OPQ size (1-10, 12, 14-16, 18, 20, 21, 24, 28, 30, 32, 35, 36,
#: 40, 42, 45, 48, 56, 60, 63, 64 ...): :func:`check_index_spec` parses a factory string at it.
SYNTAX_CHECK_DIM = 2**6 * 3**2 * 5 * 7


def check_index_spec(spec: str) -> None:
    """Before any work: ``spec`` is ``auto``, a kind, or a factory string FAISS can parse.

    Whether a factory string suits the catalog's dimension is known only when
    the index is built; this catches typing mistakes before items are analysed.

    Raises
    ------
    UsageError
        A factory string FAISS cannot parse.
    """
    if spec == "auto" or spec in INDEX_KINDS:
        return
    import faiss

    try:
        faiss.index_factory(SYNTAX_CHECK_DIM, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
        last = re.sub(r"^Error in .*? at \S+:\d+: ", "", last)  # FAISS's C++ location
        raise UsageError(f"--index {spec!r}: not an index kind ({', '.join(INDEX_KINDS)}) and FAISS cannot parse "
                         f"it as a factory string: {last}") from None


def custom_plan(factory: str, n: int, d: int) -> IndexPlan:
    """Plan for a user's factory string; checks that FAISS can build it for ``d``."""
    import faiss

    try:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise UsageError(f"--index {factory!r}: FAISS cannot build it for d={d}: "
                         f"{str(e).strip().splitlines()[-1] if str(e).strip() else e}") from None
    params: dict = {}
    m = re.search(r"IVF(\d+)", factory)
    if m:
        params["nprobe"] = nprobe_for(int(m.group(1)))
    if "HNSW" in factory and not m:
        params["efSearch"] = 128
    train = 0 if index.is_trained else max(int(m.group(1)) * POINTS_PER_CENTROID if m else 0,
                                          PQ_TRAIN if "PQ" in factory and "x4fs" not in factory else 0)
    lossy = re.search(r"PQ|SQ|RQ|LSH", factory) and "RFlat" not in factory and "Refine" not in factory
    return IndexPlan(factory, params, train, "custom", FASTSCAN_K_FACTOR if lossy else 1)


def apply_params(index, params: dict) -> None:
    """Set search-time parameters (``nprobe``, ``efSearch``) on a FAISS index in place."""
    import faiss

    if "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    if "efSearch" in params:
        hnsw = faiss.downcast_index(index.index if isinstance(index, faiss.IndexPreTransform) else index)
        hnsw.hnsw.efSearch = int(params["efSearch"])


def training_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted sample of ``min(n, size)`` row numbers (int64), the same for the same arguments."""
    if size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)).astype(np.int64)


def build_ann(plan: IndexPlan, d: int, blocks: Callable[[np.ndarray | None], Iterator[np.ndarray]], n: int):
    """Build the index of ``plan``: train on a sample, then add vectors block by block.

    Parameters
    ----------
    plan : IndexPlan
    d : int
        Vector dimension.
    blocks : callable
        ``blocks(rows)`` yields float32 (b, d) blocks of the vectors at ``rows``
        (int64, sorted), or of all ``n`` vectors in order when ``rows`` is None.
        So vectors are read from the store in blocks and never all at once
        (except by the ``Flat`` index, which keeps them).
    n : int
        Number of vectors.

    Returns
    -------
    faiss.Index
        Inner-product index with ``ntotal == n``; label ``i`` is vector ``i``;
        search parameters applied.
    """
    import faiss

    index = faiss.index_factory(d, plan.factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        if n == 0:
            raise UsageError(f"index {plan.factory!r} needs training vectors, got none")
        sample = np.concatenate(list(blocks(training_rows(n, min(n, plan.train_size or n)))))
        index.train(sample)
        del sample
    for xb in blocks(None):
        index.add(xb)
    apply_params(index, plan.params)
    return index


def build_index(xb: np.ndarray, *, block: int = 65536):
    """Build an exact inner-product index (``faiss.IndexFlatIP``) over ``xb``.

    Parameters
    ----------
    xb : np.ndarray, float32, shape (N, D)
        Fused catalog vectors (:func:`reelsim.similarity.fusion.fuse`).
    block : int
        Rows added per call.

    Returns
    -------
    faiss.IndexFlatIP
        ``ntotal == N``, ``d == D``; FAISS label ``i`` is row ``i`` of ``xb``.
    """
    import faiss

    xb = check_matrix(xb, "xb", None)
    index = faiss.IndexFlatIP(xb.shape[1])
    for i0 in range(0, xb.shape[0], block):
        index.add(xb[i0:i0 + block])
    return index
