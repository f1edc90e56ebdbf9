"""Exact top-k inner products in blocks with torch: the kNN graph on a GPU (and, the same code, on a CPU).

::

    D, I = blocked_topk(xq, xb, k=11, device="cuda")       # float32 (B, 11), int64 (B, 11)

Each block of queries is scored against the database one block at a time
(``xq_blk @ xb_blk.T``) and a running top-``kc`` is kept on the device, so
memory is bounded by the block sizes, never by N x N. On CUDA the scores are
computed in bf16 (tensor cores) and the ``kc = k + margin`` best candidates
are re-scored exactly in fp32; a query whose last bf16 candidate comes
within the bf16 error bound of its k-th exact score (a neighbour might hide
behind the rounding) is searched again in fp32. So the result is the exact
fp32 top-k, as :func:`faiss.knn` would give it, at bf16 speed.

On a CPU the scores are fp32 from the start (the function, blocks and
merging are the same, which is what the tests exercise: CI has no GPU).

:class:`DeviceGroups` is the kNN-graph job's searcher over the exact
modality groups (:class:`reelsim.similarity.search.SearchPlan`): every
group's fused vectors live on the device, the FAISS indexes stay on disk
for ``reelsim add`` and ``similar``. When FAISS was built with GPU support
(``faiss.knn_gpu`` and a GPU it can see), it can compute the same exact
top-k instead (:func:`kernel_for`); it is detected, never required.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from reelsim.errors import UsageError

#: bf16 keeps 8 bits of mantissa: each product is off by at most 2^-8 of |x_i y_i|, the fp32 sum adds
#: little, so a dot product is off by less than 2^-7 * |x| |y| (twice the bound, for safety).
BF16_REL_ERROR = 2.0 ** -7
#: extra candidates kept beyond k on a bf16 pass, re-scored in fp32
BF16_MARGIN = 32


def blocked_topk(xq: np.ndarray, xb: np.ndarray, k: int, *, device: str = "cpu", precision: str = "auto",
                 block_q: int = 8192, block_b: int = 262144, xb_device=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product of every query: (D float32 (B, k), I int64 (B, k)), best first.

    Parameters
    ----------
    xq : float32 (B, d)
        Queries.
    xb : float32 (N, d)
        Database.
    k : int
        Neighbours per query (at most N; fewer columns when N < k).
    device : str
        ``cpu``, ``cuda`` or ``cuda:N``.
    precision : str
        ``auto`` (bf16 scores with an exact fp32 re-score on CUDA, module
        docstring; fp32 on CPU), ``bf16`` (the same on any device: how the
        CPU tests check the GPU path) or ``fp32``.
    block_q, block_b : int
        Queries and database rows per score block (``block_q * block_b``
        scores at a time: 2^31 bytes of bf16 by default).
    xb_device : optional
        ``xb`` already on the device (:func:`to_device`), to move it once for many calls.

    Returns
    -------
    D : float32 (B, k')
        Inner products, ``k' = min(k, N)``, descending.
    I : int64 (B, k')
        Rows of ``xb``.

    Examples
    --------
    >>> xb = np.eye(4, dtype=np.float32)
    >>> D, I = blocked_topk(np.array([[1, 0.5, 0, 0], [0, 0.2, 1, 0]], np.float32), xb, 2)
    >>> I.tolist(), D.astype(np.float64).round(2).tolist()
    ([[0, 1], [2, 1]], [[1.0, 0.5], [1.0, 0.2]])
    """
    import torch

    xq = np.ascontiguousarray(xq, dtype=np.float32)
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    if xq.ndim != 2 or xb.ndim != 2 or xq.shape[1] != xb.shape[1]:
        raise UsageError(f"blocked_topk: queries {xq.shape} and database {xb.shape} must be (B, d) and (N, d)")
    if k < 1:
        raise UsageError(f"blocked_topk: k must be at least 1, got {k}")
    n = xb.shape[0]
    k = min(k, n)
    if xq.shape[0] == 0 or k == 0:
        return np.zeros((xq.shape[0], k), np.float32), np.zeros((xq.shape[0], k), np.int64)
    dev = torch.device(device)
    if precision not in ("auto", "bf16", "fp32"):
        raise UsageError(f"blocked_topk: precision must be auto, bf16 or fp32, got {precision!r}")
    low = precision == "bf16" or (precision == "auto" and dev.type == "cuda")
    xbd = xb_device if xb_device is not None else to_device(xb, device, low)
    kc = min(n, k + BF16_MARGIN) if low else k
    xb_norm = xbd["max_norm"]
    Ds, Is = [], []
    with torch.inference_mode():
        for q0 in range(0, xq.shape[0], block_q):
            q = torch.from_numpy(xq[q0:q0 + block_q]).to(dev)
            if not low:
                D, I = _scan(q, xbd["fp32"], k, block_b)
            else:
                D, I = _scan(q.to(torch.bfloat16), xbd["low"], kc, block_b)
                last = D[:, -1]  # every row left out scores at most this in bf16
                D, I = _rescore(q, xbd["fp32"], I, k)
                # a neighbour can hide behind bf16 rounding only if the k-th exact score is within the error
                # bound of the last candidate's bf16 score: those queries are searched again in fp32
                bound = BF16_REL_ERROR * torch.linalg.vector_norm(q, dim=1) * xb_norm
                unsure = torch.nonzero(D[:, -1] <= last + bound).flatten() if kc < n else None
                if unsure is not None and unsure.numel():
                    D[unsure], I[unsure] = _scan(q[unsure], xbd["fp32"], k, block_b)
            Ds.append(D.float().cpu().numpy())
            Is.append(I.cpu().numpy())
    return np.concatenate(Ds), np.concatenate(Is).astype(np.int64)


def _scan(q, xb, kc: int, block_b: int):
    """Running top-``kc`` of ``q @ xb.T`` over blocks of ``xb`` rows: (scores float32, rows int64), best first."""
    import torch

    best_d = best_i = None
    for b0 in range(0, xb.shape[0], block_b):
        d, i = torch.topk((q @ xb[b0:b0 + block_b].T).float(), min(kc, xb.shape[0] - b0), dim=1)
        i = i + b0
        if best_d is not None:
            d, j = torch.topk(torch.cat([best_d, d], dim=1), kc, dim=1)
            i = torch.gather(torch.cat([best_i, i], dim=1), 1, j)
        best_d, best_i = d, i
    return best_d, best_i


def _rescore(q, xb32, I, k: int):
    """fp32 inner products of each query with its candidates ``I``; the best ``k``, best first."""
    import torch

    d, j = torch.topk(torch.einsum("bd,bkd->bk", q, xb32[I]), k, dim=1)
    return d, torch.gather(I, 1, j)


def to_device(xb: np.ndarray, device: str, low: bool | None = None) -> dict:
    """``xb`` float32 (N, d) on ``device``: ``{"fp32": tensor, "low": bf16 copy or None, "max_norm": float}``.

    ``low``: keep a bf16 copy too (default: on CUDA). ``max_norm`` is the
    largest row norm (the bf16 error bound needs it).
    """
    import torch

    dev = torch.device(device)
    t = torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32)).to(dev)
    low = dev.type == "cuda" if low is None else low
    max_norm = float(torch.linalg.vector_norm(t, dim=1).max()) if t.shape[0] else 0.0
    return {"fp32": t, "low": t.to(torch.bfloat16) if low else None, "max_norm": max_norm}


def faiss_gpu_topk(xq: np.ndarray, xb: np.ndarray, k: int, *, device: str = "cuda", **_) -> tuple[np.ndarray, np.ndarray]:
    """The same exact top-k with FAISS's GPU brute force (``faiss.knn_gpu``), when FAISS has GPU support."""
    import faiss

    res = faiss.StandardGpuResources()
    dev = int(device.split(":")[1]) if ":" in device else 0
    D, I = faiss.knn_gpu(res, np.ascontiguousarray(xq, np.float32), np.ascontiguousarray(xb, np.float32),
                         min(k, xb.shape[0]), metric=faiss.METRIC_INNER_PRODUCT, device=dev)
    return D, I.astype(np.int64)


def faiss_has_gpu() -> bool:
    """Whether the installed FAISS was built with GPU support and sees a GPU."""
    import faiss

    return hasattr(faiss, "knn_gpu") and getattr(faiss, "get_num_gpus", lambda: 0)() > 0


#: exact top-k kernels by name: ``(xq, xb, k, device=...) -> (D, I)``
KERNELS: dict[str, Callable] = {"torch": blocked_topk, "faiss-gpu": faiss_gpu_topk}


def kernel_for(device: str) -> str:
    """The kernel for ``device``: ``faiss-gpu`` on CUDA when FAISS has GPU support, else ``torch``."""
    return "faiss-gpu" if device.startswith("cuda") and faiss_has_gpu() else "torch"


class DeviceGroups:
    """Searcher of :class:`~reelsim.similarity.search.SearchPlan` with the exact groups on ``device``.

    The fused vectors of every group whose index is exact (``Flat``) are
    copied to the device once; their searches run there (:func:`blocked_topk`,
    or FAISS's GPU brute force when it has one). Other groups are searched by
    their own FAISS index.

    Parameters
    ----------
    index : GroupedIndex
        The catalog's grouped index (its plans say which groups are exact).
    blocks : callable
        ``blocks(code)`` -> float32 (n_c, D) fused vectors of group ``code``
        (its catalog rows, in catalog order).
    device : str
        ``cpu`` or a CUDA device.
    precision : str
        :func:`blocked_topk`'s (``auto``: bf16 + fp32 re-score on CUDA).
    """

    def __init__(self, index, blocks, device: str, precision: str = "auto"):
        self.index = index
        self.device, self.precision = device, precision
        self.kernel = kernel_for(device)
        self.xb = {c: blocks(c) for c, p in index.plans.items() if p.exact}
        low = precision == "bf16" or (precision == "auto" and device.startswith("cuda"))
        self.on_device = ({c: to_device(x, device, low) for c, x in self.xb.items()} if self.kernel == "torch"
                          else {})

    def search_group(self, code: int, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` of group ``code`` for fused queries ``xq``: (D float32, J int64 positions in the group)."""
        if code not in self.xb:
            return self.index.search_group(code, xq, k)
        if self.kernel == "torch":
            return blocked_topk(xq, self.xb[code], k, device=self.device, precision=self.precision,
                                xb_device=self.on_device[code])
        return KERNELS[self.kernel](xq, self.xb[code], k, device=self.device)
