"""EASE (Steck, WWW 2019): a closed-form item-item model for warm items.

For a users x items matrix ``X`` (binary), EASE's item weights are::

    P = (XᵀX + λI)⁻¹,   B = I − P · diag(1 / diag(P)),   then diag(B) = 0

so that ``x B`` predicts a user's other items from ``x``. Row ``a`` of ``B``
is what a user who engaged with ``a`` alone is predicted to engage with
next: the similar-items list of ``a`` is the top of that row.

λ is chosen on a validation split: :class:`EaseSpectrum` decomposes the
Gram matrix once (``XᵀX = V Λ Vᵀ``), after which the rows of ``B`` for a
few query items cost ``O(Q W²)`` for each λ instead of a new inversion.

Memory and time: the Gram matrix, its eigenvectors and ``B`` are dense
``W x W`` float64 matrices (``W`` warm items), so fitting needs about
``24 W²`` bytes (1.5 GB at W = 8 000) and ``O(W³)`` time (tens of seconds at
8 000 on two cores). Above ``LearnConfig.ease_max_items`` reelsim uses ELSA
instead (:mod:`reelsim.similarity.elsa`). Only the largest ``keep`` weights
of each row are kept (:func:`top_rows`), so the stored model is ``W x keep``.

Examples
--------
>>> import scipy.sparse as sp
>>> X = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 1, 1, 1]], np.float64))
>>> B = ease_weights(X, 1.0)
>>> B.shape, bool(B[0, 1] > B[0, 2]), float(np.abs(np.diag(B)).max())
((4, 4), True, 0.0)
>>> s = EaseSpectrum(X)
>>> bool(np.allclose(s.rows(np.array([0, 2]), 1.0), B[[0, 2]], atol=1e-5))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: bytes of memory per W² while fitting (Gram matrix, eigenvectors or inverse, weights; float64)
BYTES_PER_CELL = 24


def gram(X) -> np.ndarray:
    """``XᵀX`` as a dense float64 (W, W) array (``X`` a scipy sparse users x items matrix)."""
    return np.asarray((X.T @ X).toarray(), np.float64)


def ease_weights(X, lam: float) -> np.ndarray:
    """EASE's item-item weights ``B`` float32 (W, W), zero diagonal, for users x items ``X`` and ``λ = lam``."""
    G = gram(X)
    G[np.diag_indices_from(G)] += lam
    P = np.linalg.inv(G)
    del G
    B = P / -np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    return B.astype(np.float32)


@dataclass
class EaseSpectrum:
    """The eigendecomposition of ``XᵀX``, to compute rows of ``B`` for any λ cheaply.

    values : float64 (W,), eigenvalues; vectors : float64 (W, W), eigenvectors (columns).
    """

    values: np.ndarray
    vectors: np.ndarray

    def __init__(self, X):
        self.values, self.vectors = np.linalg.eigh(gram(X))
        self._v32 = self.vectors.astype(np.float32)

    def rows(self, q: np.ndarray, lam: float) -> np.ndarray:
        """Rows ``q`` of ``B`` for ``λ = lam``: float32 (Q, W), zero at each query's own column."""
        d = 1.0 / (self.values + lam)
        p_diag = (self.vectors ** 2) @ d
        B = (self._v32[q] * d.astype(np.float32)) @ self._v32.T
        B /= -p_diag[None, :].astype(np.float32)
        B[np.arange(len(q)), q] = 0.0
        return B


def top_rows(B: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``keep`` largest weights of each row of ``B`` (W, W).

    Returns
    -------
    cols : int32 (W, keep), their columns, largest first; values : float32 (W, keep).
    """
    keep = min(keep, B.shape[1] - 1)
    cols = np.argpartition(-B, keep - 1, axis=1)[:, :keep]
    vals = np.take_along_axis(B, cols, axis=1)
    o = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(cols, o, axis=1).astype(np.int32), np.take_along_axis(vals, o, axis=1).astype(np.float32)
