"""Catalog embeddings, catalog centering and weighted fusion of modalities.

Two items are compared on the modalities they share (see docs/similarity.md)::

    score(a, b) = sum_{m in shared(a, b)} w_m cos_m(a, b) / sum_{m in shared(a, b)} w_m

where ``shared(a, b)`` holds the modalities with ``w_m > 0`` that both items
have. :func:`fuse` concatenates ``sqrt(w_m) * u_m`` so that the inner product
of two fused rows is the numerator; FAISS uses it to find candidates, and
:mod:`reelsim.similarity.neighbors` divides by the denominator when it
re-scores them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from reelsim.errors import ReelsimError, UsageError
from reelsim.pipeline.config import MODALITIES

#: A centred row shorter than this fraction of its raw norm equals the catalog
#: mean up to float32 rounding: it has no direction, so it counts as missing.
_REL_EPS = 1e-5


class EmbeddingError(ReelsimError):
    """Embeddings with inconsistent shapes, a bad dtype or non-finite values."""


@dataclass
class CatalogEmbeddings:
    """Per-modality embeddings of a catalog of N items.

    Parameters
    ----------
    ids : list of str, length N
        Unique item ids. They are data (any unicode, ``/``, ``..``), never paths.
    vectors : dict of str to np.ndarray, float32, shape (N, d_m)
        Modality -> embeddings. Rows of items that lack the modality are zeros.
        Keys are modalities from ``MODALITIES``; a modality no item has can be left out.
    masks : dict of str to np.ndarray, bool, shape (N,)
        Modality -> which items have it. Same keys as ``vectors``.
    means : dict of str to np.ndarray, float32, shape (d_m,)
        Set by :func:`normalise`: the catalog mean subtracted from each
        modality. Empty for raw embeddings, otherwise the same keys as ``vectors``.
        With a projection, ``d_m`` is the raw dimension (the projection's input).
    projections : dict of str to np.ndarray, float32, shape (d_m, r_m)
        Set by :func:`normalise` with ``pca_dim``: modality -> PCA (or PCA
        whitening) matrix applied after centring; ``vectors[m]`` then has
        ``r_m`` columns. Modalities not reduced have no entry.

    Raises
    ------
    EmbeddingError
        Duplicate or non-str ids, unknown modality, wrong shape or dtype,
        non-finite values, or a non-zero row for an item lacking the modality.

    Examples
    --------
    >>> import numpy as np
    >>> cat = CatalogEmbeddings(["a", "b"], {"text": np.eye(2, dtype=np.float32)},
    ...                         {"text": np.array([True, True])})
    >>> cat.n, cat.normalised
    (2, False)
    """

    ids: list[str]
    vectors: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    means: dict[str, np.ndarray] = field(default_factory=dict)
    projections: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ids = _check_ids(self.ids)
        n = len(self.ids)
        unknown = set(self.vectors) - set(MODALITIES)
        if unknown:
            raise EmbeddingError(f"unknown modalities {sorted(unknown)}; expected some of {MODALITIES}")
        if set(self.masks) != set(self.vectors):
            raise EmbeddingError(f"masks {sorted(self.masks)} and vectors {sorted(self.vectors)} name different modalities")
        if self.means and set(self.means) != set(self.vectors):
            raise EmbeddingError(f"means {sorted(self.means)} and vectors {sorted(self.vectors)} name different modalities")
        order = [m for m in MODALITIES if m in self.vectors]
        self.vectors = {m: _check_matrix(self.vectors[m], f"{m} vectors", n) for m in order}
        self.masks = {m: _check_mask(self.masks[m], m, n) for m in order}
        for m in order:
            stray = np.flatnonzero(~self.masks[m] & self.vectors[m].any(axis=1))
            if stray.size:
                raise EmbeddingError(f"{m} vectors: row {stray[0]} (item {self.ids[stray[0]]!r}) "
                                     f"is not zero but its mask says it lacks {m}")
        if set(self.projections) - set(order):
            raise EmbeddingError(f"projections for modalities without vectors: {sorted(set(self.projections) - set(order))}")
        self.projections = {m: _check_projection(self.projections[m], m, self.vectors[m].shape[1])
                            for m in order if m in self.projections}
        if self.means:
            self.means = {m: _check_mean(self.means[m], m, self.raw_dim(m)) for m in order}

    def raw_dim(self, m: str) -> int:
        """Dimension of modality ``m`` before any projection."""
        return self.projections[m].shape[0] if m in self.projections else self.vectors[m].shape[1]

    @property
    def n(self) -> int:
        """Number of items N."""
        return len(self.ids)

    @property
    def normalised(self) -> bool:
        """True for the output of :func:`normalise` (``means`` set for every modality)."""
        return set(self.means) == set(self.vectors)


def _check_ids(ids) -> list[str]:
    if isinstance(ids, str) or not all(isinstance(i, str) for i in ids):
        raise EmbeddingError("ids must be a list of str")
    ids = list(ids)
    if len(set(ids)) != len(ids):
        dup = next(i for i, count in Counter(ids).items() if count > 1)
        raise EmbeddingError(f"duplicate item id {dup!r}")
    return ids


def _check_matrix(x, what: str, n: int | None) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise EmbeddingError(f"{what}: expected float32, got dtype {x.dtype}")
    if x.ndim != 2 or (n is not None and x.shape[0] != n) or x.shape[1] == 0:
        raise EmbeddingError(f"{what}: expected shape ({'N' if n is None else n}, d) with d > 0, got {x.shape}")
    with np.errstate(over="ignore"):  # float64 beyond float32 range becomes inf, reported below
        x = np.ascontiguousarray(x, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise EmbeddingError(f"{what}: non-finite values in row {bad[0]} ({bad.size} rows in all)")
    return x


def _check_mask(mask, m: str, n: int) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != (n,):
        raise EmbeddingError(f"{m} mask: expected bool shape ({n},), got {mask.dtype} {mask.shape}")
    return mask


def _check_projection(p, m: str, r: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float32)
    if p.ndim != 2 or p.shape[1] != r or not np.isfinite(p).all():
        raise EmbeddingError(f"{m} projection: expected finite float32 shape (d, {r}), got {p.shape}")
    return p


def _check_mean(mean, m: str, d: int) -> np.ndarray:
    mean = np.asarray(mean, dtype=np.float32)
    if mean.shape != (d,) or not np.isfinite(mean).all():
        raise EmbeddingError(f"{m} mean: expected finite float32 shape ({d},), got {mean.shape}")
    return mean


#: pseudo-count that shrinks a modality's catalog mean towards 0 (see :func:`normalise`)
CENTRE_PRIOR = 10


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
    raw = np.linalg.norm(x, axis=1)
    norm = np.linalg.norm(u, axis=1)
    has = mask & (raw > 0) & (norm > _REL_EPS * raw)
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
        mean = (x[mask].sum(axis=0, dtype=np.float64) / (int(mask.sum()) + CENTRE_PRIOR)).astype(np.float32)
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
    _require_normalised(cat_norm)
    unknown = set(xq) - set(MODALITIES)
    if unknown:
        raise EmbeddingError(f"unknown query modalities {sorted(unknown)}")
    xq = {m: _check_matrix(x, f"query {m}", None) for m, x in xq.items()}
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


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Validate modality weights; modalities not named get weight 0.

    Raises
    ------
    UsageError
        Unknown modality, or a weight that is negative or not finite.

    Examples
    --------
    >>> check_weights({"text": 2})
    {'visual': 0.0, 'audio': 0.0, 'image': 0.0, 'text': 2.0}
    """
    unknown = set(weights) - set(MODALITIES)
    if unknown:
        raise UsageError(f"unknown modalities in weights: {sorted(unknown)}; expected some of {MODALITIES}")
    w = {m: float(weights.get(m, 0.0)) for m in MODALITIES}
    bad = {m: v for m, v in w.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        raise UsageError(f"weights must be finite and >= 0, got {bad}")
    return w


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
    """Concatenate ``sqrt(w_m) * u[m]`` for ``m`` in ``active``: float32 (n, sum of d_m)."""
    return np.ascontiguousarray(np.concatenate([math.sqrt(w[m]) * u[m] for m in active], axis=1), dtype=np.float32)


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
    _require_normalised(cat_norm)
    w = check_weights(weights)
    return fuse_parts(cat_norm.vectors, w, active_modalities(cat_norm, w))


def _require_normalised(cat: CatalogEmbeddings) -> None:
    if not cat.normalised:
        raise UsageError("catalog embeddings are not normalised; call normalise() first")
