"""ELSA item embeddings for warm items (Vančura et al., RecSys 2022), with the authors' ``elsarec``.

ELSA is a linear autoencoder over users' interaction vectors ``x`` (1 x I):
the prediction is ``x (A Aᵀ − I)`` with ``A`` (I x r) row-normalised, trained
with (N)Adam on the normalised MSE between prediction and ``x``. The rows of
``A`` are item embeddings: two items are similar when their rows point the
same way, i.e. when the same users engage with both.

We use the authors' implementation (PyPI ``elsarec``, MIT, import name
``elsa``) as it is; this module only feeds it: a seeded, dense-batch
DataLoader over the user x item matrix (elsarec's own sparse-row loader
slices one row at a time), the device, the seed, and the item subset.
Only *warm* items, those with at least ``warm_min_interactions`` distinct
users, are columns of the matrix, so ``A`` has no rows for items that
interactions say nothing about.

Examples
--------
>>> import numpy as np
>>> user = np.array([0, 0, 1, 1, 2, 2, 3, 3]); item = np.array([0, 1, 0, 1, 2, 3, 2, 3])
>>> X = interaction_matrix(user, item, 4, 4)
>>> model = train_elsa(X, dim=2, epochs=30, batch=4, lr=0.1, seed=0, device="cpu")
>>> E = model.embeddings
>>> bool(E[0] @ E[1] > E[0] @ E[2]), model.losses[-1] < model.losses[0]
(True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from reelsim.errors import UsageError
from reelsim.extractors.device import resolve_device
from reelsim.reporting import Progress, report


@dataclass
class ElsaModel:
    """Trained ELSA item embeddings.

    embeddings : float32 (I, r), rows L2-normalised (cosine = dot product).
    losses : per epoch, elsarec's mean normalised MSE on the training users.
    valid : per epoch, the validation score (empty without validation).
    epochs : the epoch whose embeddings were kept.
    """

    embeddings: np.ndarray
    losses: list[float]
    valid: list[float] = field(default_factory=list)
    epochs: int = 0


def interaction_matrix(user: np.ndarray, item: np.ndarray, n_users: int, n_items: int, weight=None):
    """Users x items ``scipy.sparse.csr_matrix`` float32; repeated (user, item) rows keep the largest weight.

    Parameters
    ----------
    user, item : int (R,)
        Row and column of each interaction.
    n_users, n_items : int
        Matrix shape.
    weight : float (R,), optional
        Default 1 (a binary matrix).
    """
    import scipy.sparse as sp

    w = np.ones(len(user), np.float32) if weight is None else np.asarray(weight, np.float32)
    key = np.asarray(user, np.int64) * n_items + np.asarray(item, np.int64)
    order = np.lexsort((-w, key))
    first = np.r_[True, key[order][1:] != key[order][:-1]]
    pick = order[first]
    return sp.csr_matrix((w[pick], (np.asarray(user)[pick], np.asarray(item)[pick])), shape=(n_users, n_items),
                         dtype=np.float32)


def _loader(X, batch: int, seed: int, device):
    """A DataLoader of dense float32 batches of ``batch`` rows of ``X``, in a seeded order each epoch."""
    import torch

    class _RowBatches(torch.utils.data.Dataset):
        def __init__(self):
            rows = np.random.default_rng(seed).permutation(X.shape[0])
            self.batches = [rows[i:i + batch] for i in range(0, rows.size, batch)]

        def __len__(self):
            return len(self.batches)

        def __getitem__(self, b):
            return torch.from_numpy(X[np.sort(self.batches[b])].toarray()).to(device)

    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(_RowBatches(), batch_size=None, shuffle=True, generator=g)


def train_elsa(X, *, dim: int, epochs: int, batch: int, lr: float, seed: int, device: str = "auto",
               validate: Callable[[np.ndarray], float] | None = None, patience: int = 1,
               progress: Progress | None = None) -> ElsaModel:
    """Fit ELSA (``elsarec``) on a users x items matrix.

    Parameters
    ----------
    X : scipy.sparse.csr_matrix, float32, shape (U, I)
        Interactions; users with fewer than two items are dropped (they carry
        no co-engagement).
    dim : int
        Rank r of the item matrix.
    epochs, batch, lr : int, int, float
        Passes over the users, users per step, NAdam learning rate.
    seed : int
        Seeds the initialisation (torch) and the batch order; on CPU two
        runs with the same seed give the same embeddings.
    device : str
        ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    validate : callable, optional
        ``validate(embeddings (I, r) unit rows) -> float`` (higher is better), called after each epoch;
        the best epoch's embeddings are kept, and training stops after ``patience`` epochs without a
        better one (``epochs`` is then a maximum).
    progress : Progress, optional
        Told one line per epoch (:mod:`reelsim.reporting`).

    Returns
    -------
    ElsaModel
        ``losses`` per epoch trained; ``valid`` per epoch validated; ``epochs`` the epoch kept.

    Raises
    ------
    UsageError
        No user with two or more items, or ``dim`` not below the number of items.
    """
    import torch
    from elsa import ELSA

    X = X.tocsr()
    X = X[np.flatnonzero(np.diff(X.indptr) >= 2)]
    if X.shape[0] == 0:
        raise UsageError("ELSA needs users with at least two items; the log has none")
    if not 1 <= dim < X.shape[1]:
        raise UsageError(f"ELSA's rank ({dim}) must be below the number of warm items ({X.shape[1]})")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    model = ELSA(n_items=X.shape[1], n_dims=dim, device=dev, lr=lr)
    loader = _loader(X, batch, seed, dev)
    losses, valid, best, worse = [], [], (-np.inf, None, 0), 0
    for epoch in range(epochs):
        losses += [float(v) for v in model.fit(loader, epochs=1, verbose=False)["nmse_train"]]
        A = _unit_rows(model.get_items_embeddings(as_numpy=True))
        line = f"ELSA r={dim} epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}"
        if validate is None:
            best = (0.0, A, epoch + 1)
        else:
            valid.append(float(validate(A)))
            line += f", validation {valid[-1]:.4f}"
            if valid[-1] > best[0]:
                best, worse = (valid[-1], A, epoch + 1), 0
            else:
                worse += 1
        report(progress, line, stage="train")
        if not np.isfinite(losses[-1]) or (validate is not None and worse >= patience):
            break
    A = best[1] if best[1] is not None else A
    return ElsaModel(A, losses, valid, best[2])


def _unit_rows(A: np.ndarray) -> np.ndarray:
    A = np.asarray(A, np.float32)
    return A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)
