"""Normalisation and fusion: the one score rule of reelsim, and the vectors FAISS searches.

Two items are compared on the modalities they share (see docs/similarity.md)::

    score(a, b) = sum_{m in shared(a, b)} w_m cos_m(a, b) / sum_{m in shared(a, b)} w_m

where ``shared(a, b)`` holds the modalities with ``w_m > 0`` that both items
have. :func:`fuse` concatenates ``sqrt(w_m) * u_m`` so that the inner product
of two fused rows is the numerator; FAISS uses it to find candidates, and
:mod:`reelsim.similarity.search` divides by the denominator when it
re-scores them. :func:`shared_score` is that rule, and every exact score in
reelsim (lists, pair scores of list hygiene, incremental adds) is computed by it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from reelsim.config import MODALITIES, check_weights
from reelsim.errors import UsageError
from reelsim.similarity.catalog import (
    CatalogEmbeddings,
    EmbeddingError,
    check_matrix,
    require_normalised,
)

#: Scores and cosines are rounded to this many decimals, so that ties (and
#: hence the id tie-break) do not depend on floating-point summation order.
DECIMALS = 6
#: A centred row shorter than this fraction of its raw norm equals the catalog
#: mean up to float32 rounding: it has no direction, so it counts as missing.
_REL_EPS = 1e-5

#: pseudo-count that shrinks a modality's catalog mean towards 0 (see :func:`normalise`)
CENTRE_PRIOR = 10


def row_norms(x: np.ndarray) -> np.ndarray:
    """L2 norm of each row of float32 ``x`` (n, d): float32 (n,), without an (n, d) temporary.

    Examples
    --------
    >>> row_norms(np.array([[3, 4], [0, 0]], np.float32)).tolist()
    [5.0, 0.0]
    """
    return np.sqrt(np.einsum("ij,ij->i", x, x))


def centre_rows(x: np.ndarray, mask: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subtract ``mean`` from the rows in ``mask`` and L2-normalise them.

    Parameters
    ----------
    x : np.ndarray, float32, shape (n, d)
    mask : np.ndarray, bool, shape (n,)
        Rows to keep; the others come back as zeros.
    mean : np.ndarray, float32, shape (d,)

    Returns
    -------
    u : np.ndarray, float32, shape (n, d)
        Unit rows, or zero rows.
    has : np.ndarray, bool, shape (n,)
        ``mask`` without the rows that were all zeros or equal to ``mean``
        (they have no direction, so they count as lacking the modality).
    """
    u = x - mean
    raw = row_norms(x)
    norm = row_norms(u)
    has = mask & (raw > 0) & (norm > _REL_EPS * raw)
    if has.all():  # the common case, in place (the same numbers, without copying the rows twice)
        u /= norm[:, None]
    else:
        u[~has] = 0
        u[has] /= norm[has, None]
    return u, has


#: rows of a modality sampled to learn its PCA
PCA_SAMPLE = 100_000


def learn_projection(u: np.ndarray, dim: int, whiten: bool, *, sample: int = PCA_SAMPLE, seed: int = 0) -> np.ndarray:
    """PCA (or PCA-whitening) matrix of centred unit rows ``u`` float32 (n, d): float32 (d, r).

    ``r = min(dim, d, n)``. Columns are the top eigenvectors of ``u^T u / n``
    (on a seeded sample of at most ``sample`` rows); with ``whiten`` each is
    divided by the square root of its eigenvalue (floored at 1e-6 of the
    largest), so that projected rows have unit variance per component.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> u = rng.normal(size=(500, 8)).astype(np.float32) * [5, 3, 1, 1, 1, 1, 1, 1]
    >>> learn_projection(u, 2, False).shape
    (8, 2)
    """
    if u.shape[0] > sample:
        u = u[np.sort(np.random.default_rng(seed).choice(u.shape[0], sample, replace=False))]
    r = int(min(dim, u.shape[1], max(1, u.shape[0])))
    cov = (u.T.astype(np.float64) @ u.astype(np.float64)) / max(1, u.shape[0])
    lam, V = np.linalg.eigh(cov)
    lam, V = lam[::-1][:r], V[:, ::-1][:, :r]
    V = V * np.where(V[np.abs(V).argmax(axis=0), np.arange(r)] < 0, -1, 1)  # deterministic signs
    if whiten:
        V = V / np.sqrt(np.maximum(lam, 1e-6 * max(lam[0], 1e-12)))
    return np.ascontiguousarray(V, dtype=np.float32)


def project_rows(u: np.ndarray, has: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project unit rows ``u`` (n, d) with ``P`` (d, r) and L2-normalise again; rows that vanish count as missing."""
    y = u @ P
    norm = np.linalg.norm(y, axis=1)
    has = has & (norm > _REL_EPS)
    y[~has] = 0
    y[has] /= norm[has, None]
    return y, has


def normalise(cat: CatalogEmbeddings, *, pca_dim: int | None = None, whiten: bool = False) -> CatalogEmbeddings:
    """Centre each modality on its catalog mean, then L2-normalise each row.

    CNN features are all positive, so raw cosines are all close to 1;
    subtracting the mean of the items that have the modality spreads them.
    The mean of ``n`` items is shrunk towards zero by ``n / (n + CENTRE_PRIOR)``
    (i.e. ``sum / (n + CENTRE_PRIOR)``): full centring on a real catalog, little
    on a handful of items, where the mean is mostly the items themselves (with
    two items, full centring would make them exactly opposite, cosine -1).
    Peak memory is about three times the largest modality's vectors.

    Parameters
    ----------
    cat : CatalogEmbeddings
        Raw embeddings.
    pca_dim : int, optional
        Project every modality with more than ``pca_dim`` dimensions onto its
        top ``pca_dim`` principal components (learned on the centred unit
        rows, :func:`learn_projection`), then L2-normalise again. Off by default.
    whiten : bool
        With ``pca_dim``: PCA whitening (each component scaled to unit variance).

    Returns
    -------
    CatalogEmbeddings
        Unit (or zero) float32 rows, updated masks, and ``means[m]`` float32
        (d_m,) (and ``projections[m]``) to normalise new queries the same way
        (:func:`normalise_queries`).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1, 2], [3, 2]], dtype=np.float32)
    >>> out = normalise(CatalogEmbeddings(["a", "b"], {"image": x}, {"image": np.array([True, True])}))
    >>> [round(float(v), 3) for v in out.means["image"]]
    [0.333, 0.333]
    """
    if pca_dim is not None and (not isinstance(pca_dim, int) or pca_dim < 1):
        raise UsageError(f"pca_dim must be a positive integer, got {pca_dim!r}")
    vectors, masks, means, projections = {}, {}, {}, {}
    for m, x in cat.vectors.items():
        mask = cat.masks[m] & x.any(axis=1)
        rows = x if mask.all() else x[mask]
        mean = (rows.sum(axis=0, dtype=np.float64) / (int(mask.sum()) + CENTRE_PRIOR)).astype(np.float32)
        vectors[m], masks[m] = centre_rows(x, mask, mean)
        means[m] = mean
        if pca_dim is not None and x.shape[1] > pca_dim and masks[m].any():
            projections[m] = learn_projection(vectors[m][masks[m]], pca_dim, whiten)
            vectors[m], masks[m] = project_rows(vectors[m], masks[m], projections[m])
    return CatalogEmbeddings(list(cat.ids), vectors, masks, means, projections)


def normalise_queries(cat_norm: CatalogEmbeddings, xq: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """Normalise query embeddings that are not in the catalog with the catalog's means.

    Parameters
    ----------
    cat_norm : CatalogEmbeddings
        Output of :func:`normalise`.
    xq : dict of str to np.ndarray, shape (B, d_m)
        Raw query embeddings; an all-zero row means the query lacks the modality.
        Modalities the catalog does not have are ignored.

    Returns
    -------
    uq : dict of str to np.ndarray, float32, shape (B, d_m)
    mq : dict of str to np.ndarray, bool, shape (B,)
        One entry per catalog modality (zeros / False where ``xq`` has none).
    """
    require_normalised(cat_norm)
    unknown = set(xq) - set(MODALITIES)
    if unknown:
        raise EmbeddingError(f"unknown query modalities {sorted(unknown)}")
    xq = {m: check_matrix(x, f"query {m}", None) for m, x in xq.items()}
    sizes = {x.shape[0] for x in xq.values()}
    if len(sizes) != 1:
        raise EmbeddingError(f"queries need one or more modalities with the same number of rows, got {sorted(sizes)}")
    b = sizes.pop()
    uq, mq = {}, {}
    for m, mean in cat_norm.means.items():
        if m in xq:
            x = xq[m]
            if x.shape[1] != mean.shape[0]:
                raise EmbeddingError(f"query {m}: expected d={mean.shape[0]}, got {x.shape[1]}")
            uq[m], mq[m] = centre_rows(x, x.any(axis=1), mean)
            if m in cat_norm.projections:
                uq[m], mq[m] = project_rows(uq[m], mq[m], cat_norm.projections[m])
        else:
            d = cat_norm.vectors[m].shape[1]
            uq[m], mq[m] = np.zeros((b, d), np.float32), np.zeros(b, bool)
    return uq, mq


def active_modalities(cat: CatalogEmbeddings, w: Mapping[str, float]) -> tuple[str, ...]:
    """Modalities in ``MODALITIES`` order that ``cat`` has and that have a positive weight.

    Raises
    ------
    UsageError
        If there are none.
    """
    active = tuple(m for m in MODALITIES if m in cat.vectors and w.get(m, 0) > 0)
    if not active:
        raise UsageError(f"no modality has a positive weight; catalog has {sorted(cat.vectors)}, weights {dict(w)}")
    return active


def fuse_parts(u: Mapping[str, np.ndarray], w: Mapping[str, float], active: tuple[str, ...]) -> np.ndarray:
    """Concatenate ``sqrt(w_m) * u[m]`` for ``m`` in ``active``: float32 (n, sum of d_m).

    Written straight into one new array (no temporary per modality); one
    modality of weight 1 comes back as a float32 copy of ``u[m]``.
    """
    n = next(iter(u[m] for m in active)).shape[0]
    out = np.empty((n, sum(u[m].shape[1] for m in active)), np.float32)
    col = 0
    for m in active:
        d = u[m].shape[1]
        np.multiply(u[m], np.float32(math.sqrt(w[m])), out=out[:, col:col + d], casting="same_kind")
        col += d
    return out


def fuse(cat_norm: CatalogEmbeddings, weights: Mapping[str, float]) -> np.ndarray:
    """Fuse normalised modalities into one vector per item.

    The inner product of two fused rows is ``sum_{m in shared} w_m cos_m``
    (missing modalities are zero rows, so they add nothing).

    Parameters
    ----------
    cat_norm : CatalogEmbeddings
        Output of :func:`normalise`.
    weights : dict of str to float
        Modality -> weight >= 0; modalities with weight 0 are left out.

    Returns
    -------
    xb : np.ndarray, float32, shape (N, D)
        ``D`` is the sum of ``d_m`` over the active modalities, in ``MODALITIES`` order.
    """
    require_normalised(cat_norm)
    w = check_weights(weights)
    return fuse_parts(cat_norm.vectors, w, active_modalities(cat_norm, w))


def signature_codes(masks: Mapping[str, np.ndarray], active: tuple[str, ...]) -> np.ndarray:
    """Modality signature of each item: bit ``i`` set where the item has ``active[i]``; int64 (n,).

    Examples
    --------
    >>> signature_codes({"image": np.array([1, 0, 1], bool), "text": np.array([1, 1, 0], bool)}, ("image", "text"))
    array([3, 2, 1])
    """
    return sum(masks[m].astype(np.int64) << i for i, m in enumerate(active))


def shared_score(terms: Iterable[tuple[str, np.ndarray, np.ndarray]], w: Mapping[str, float], *,
                 decimals: int | None = DECIMALS) -> np.ndarray:
    """The fused score: weighted mean of per-modality cosines over the modalities both items have.

    ``score = sum_m w_m cos_m [shared_m] / sum_m w_m [shared_m]``, ``-inf``
    where no weighted modality is shared.

    Parameters
    ----------
    terms : iterable of (modality, cos, shared)
        ``cos`` float (...) the modality's cosines, ``shared`` bool (...) where
        both items have it; all of one shape. A generator is fine (each term
        is used once, so callers can compute cosines one modality at a time).
    w : dict of str to float
        Modality weights (:func:`reelsim.config.check_weights`).
    decimals : int or None
        Round to this many decimals (default :data:`DECIMALS`, so ties do not
        depend on summation order); None keeps full precision.

    Returns
    -------
    np.ndarray, float64, the common shape of the terms

    Examples
    --------
    >>> cos = {"image": np.array([0.5, 0.9]), "text": np.array([1.0, 0.1])}
    >>> both = {"image": np.array([True, True]), "text": np.array([True, False])}
    >>> shared_score(((m, cos[m], both[m]) for m in cos), {"image": 1.0, "text": 3.0}).tolist()
    [0.875, 0.9]
    """
    num = den = None
    for m, cos, shared in terms:
        part = (w[m] * np.where(shared, cos, 0.0)).astype(np.float64, copy=False)
        weight = w[m] * shared
        num = part if num is None else num + part
        den = weight if den is None else den + weight
    if num is None:
        raise UsageError("shared_score needs at least one modality")
    den = np.broadcast_to(den, num.shape)
    S = np.divide(num, den, out=np.full(num.shape, -np.inf), where=den > 0)
    return S if decimals is None else np.round(S, decimals)


def gathered_ip(xq: np.ndarray, xb: np.ndarray, I: np.ndarray) -> np.ndarray:
    """Inner products of each query with its own candidates: ``D[i, j] = xq[i] . xb[I[i, j]]``.

    Parameters
    ----------
    xq : float32 (B, d)
    xb : float32 (N, d)
    I : int (B, C), rows of ``xb`` (each in [0, N))

    Returns
    -------
    D : float32 (B, C)

    FAISS's ``fvec_inner_products_by_idx`` reads the candidate rows where
    they are, so no (B, C, d) copy is made (gathering them for ``einsum``
    cost 20 times more at 10^5 x 40 candidates).

    Examples
    --------
    >>> xb = np.eye(3, dtype=np.float32)
    >>> gathered_ip(xb[:2] * 2, xb, np.array([[0, 1], [2, 1]])).tolist()
    [[2.0, 0.0], [0.0, 2.0]]
    """
    import faiss

    xq = np.ascontiguousarray(xq, dtype=np.float32)
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    I = np.ascontiguousarray(I, dtype=np.int64)
    if xq.shape[0] != I.shape[0] or xq.shape[1] != xb.shape[1]:
        raise UsageError(f"gathered_ip: queries {xq.shape}, vectors {xb.shape} and candidates {I.shape} do not match")
    if I.size and (I.min() < 0 or I.max() >= xb.shape[0]):
        raise UsageError(f"gathered_ip: candidate rows must be in [0, {xb.shape[0]})")
    D = np.empty(I.shape, np.float32)
    if I.size:  # (the arrays stay referenced here while FAISS reads them)
        faiss.fvec_inner_products_by_idx(faiss.swig_ptr(D), faiss.swig_ptr(xq), faiss.swig_ptr(xb),
                                         faiss.swig_ptr(I), xq.shape[1], I.shape[0], I.shape[1])
    return D
