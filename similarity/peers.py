"""The peers ``reelsim evaluate`` measures the learned spaces against, each tuned on the same validation split.

- **popularity**: the items with most training users;
- **EASE** (:mod:`reelsim.similarity.ease`), λ chosen on validation, where the
  warm items fit in memory; **implicit ALS** (Hu, Koren and Volinsky 2008)
  above that, its regularisation and confidence chosen on validation
  (:func:`fit_als`, numpy only: batched exact least squares);
- **ridge map** for cold items: a ridge regression from an item's content to
  its row in the warm model (EASE's weights, or ALS's item factors), its
  penalty chosen on the validation split's pseudo-cold items; a cold item's
  list is the top of its predicted row.

Examples
--------
>>> import scipy.sparse as sp
>>> rng = np.random.default_rng(0)
>>> X = sp.csr_matrix((rng.random((60, 12)) < 0.3).astype(np.float32))
>>> V = fit_als(X, factors=4, reg=1.0, alpha=10.0, iterations=3, seed=0)
>>> V.shape, bool(np.isfinite(V).all())
((12, 4), True)
>>> M = ridge_map(rng.normal(size=(12, 5)), V, 1.0)
>>> M.shape
(5, 4)
"""

from __future__ import annotations

import numpy as np

#: ALS settings tried on validation: (regularisation, confidence alpha)
ALS_GRID = tuple((reg, alpha) for reg in (0.1, 1.0, 10.0, 100.0) for alpha in (1.0, 5.0, 20.0))
#: ridge penalties tried on validation (times the mean squared norm of a content row)
RIDGE_GRID = (0.1, 1.0, 10.0, 100.0)


def popularity_lists(counts: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` items with most training users, the query itself skipped: int64 (Q, k)."""
    top = np.argsort(-counts, kind="stable")[:k + 1]
    return np.stack([top[top != q][:k] for q in queries.tolist()]) if queries.size else np.zeros((0, k), np.int64)


def _solve_side(R, Y: np.ndarray, reg: float, alpha: float, chunk: int = 4096) -> np.ndarray:
    """One ALS half-step: rows of ``R`` (csr, binary) against fixed factors ``Y`` (n, f) -> (m, f).

    Row ``u`` solves ``(YᵀY + alpha · Y_uᵀ Y_u + reg I) x = (1 + alpha) Y_uᵀ 1``, ``Y_u`` the factors of
    its items (Hu, Koren and Volinsky 2008, with confidence ``1 + alpha`` on observed pairs).
    """
    f = Y.shape[1]
    base = Y.T @ Y + reg * np.eye(f)
    b = (1.0 + alpha) * np.asarray(R @ Y)
    out = np.zeros((R.shape[0], f), np.float64)
    for r0 in range(0, R.shape[0], chunk):
        r1 = min(R.shape[0], r0 + chunk)
        A = np.broadcast_to(base, (r1 - r0, f, f)).copy()
        for r in range(r0, r1):
            Yu = Y[R.indices[R.indptr[r]:R.indptr[r + 1]]]
            if Yu.shape[0]:
                A[r - r0] += alpha * (Yu.T @ Yu)
        out[r0:r1] = np.linalg.solve(A, b[r0:r1, :, None])[..., 0]
    return out


def fit_als(X, *, factors: int, reg: float, alpha: float, iterations: int, seed: int) -> np.ndarray:
    """Implicit ALS item factors float64 (I, f) of a users x items ``X`` (binary preferences, confidence
    ``1 + alpha``)."""
    X = X.tocsr().astype(np.float64)
    X.data[:] = 1.0
    rng = np.random.default_rng(seed)
    V = rng.normal(scale=0.01, size=(X.shape[1], factors))
    Xt = X.T.tocsr()
    for _ in range(iterations):
        U = _solve_side(X, V, reg, alpha)
        V = _solve_side(Xt, U, reg, alpha)
    return V


def ridge_factor(C: np.ndarray, penalty: float) -> np.ndarray:
    """``F = (CᵀC + penalty · mean|c|² · I)⁻¹ Cᵀ`` float64 (d, n) for content rows ``C`` (n, d): the ridge
    map to any targets ``Y`` (n, t) is ``F Y``."""
    C = np.asarray(C, np.float64)
    G = C.T @ C
    G[np.diag_indices_from(G)] += penalty * max(float(np.mean(np.sum(C * C, axis=1))), 1e-12)
    return np.linalg.solve(G, C.T)


def ridge_map(C: np.ndarray, Y: np.ndarray, penalty: float) -> np.ndarray:
    """Ridge regression ``M`` (d, t) from content rows ``C`` (n, d) to targets ``Y`` (n, t):
    ``(CᵀC + penalty · mean|c|² · I)⁻¹ CᵀY``."""
    return ridge_factor(C, penalty) @ np.asarray(Y, np.float64)
