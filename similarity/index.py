"""Exact FAISS inner-product index and the normalised catalog, on disk.

Every file is written atomically (:func:`reelsim.storage.atomic.atomic_path`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np

from reelsim.errors import StoreError, UsageError
from reelsim.pipeline.config import MODALITIES
from reelsim.storage.atomic import atomic_path
from reelsim.similarity.fusion import CatalogEmbeddings, EmbeddingError, _check_matrix, check_weights

CATALOG_FORMAT = "reelsim.catalog/1"


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

    xb = _check_matrix(xb, "xb", None)
    index = faiss.IndexFlatIP(xb.shape[1])
    for i0 in range(0, xb.shape[0], block):
        index.add(xb[i0:i0 + block])
    return index


def save_index(index, path: str | os.PathLike) -> None:
    """Write a FAISS index to ``path`` atomically."""
    import faiss

    with atomic_path(path) as tmp:
        faiss.write_index(index, tmp)


def load_index(path: str | os.PathLike):
    """Read a FAISS index written by :func:`save_index`.

    Raises
    ------
    StoreError
        Missing or unreadable file.
    """
    import faiss

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise StoreError(f"no index file at {path!r}")
    try:
        return faiss.read_index(path)
    except RuntimeError as e:
        raise StoreError(f"cannot read index {path!r}: {str(e).splitlines()[0] if str(e) else e!r}") from e


def save_catalog(cat_norm: CatalogEmbeddings, weights: Mapping[str, float], path: str | os.PathLike) -> None:
    """Write the normalised catalog and the weights used to fuse it as HDF5, atomically.

    Layout: dataset ``ids`` (variable-length UTF-8), one group per modality
    with ``vectors`` float32 (N, d), ``mask`` bool (N,), ``mean`` float32 (d_raw,)
    and, with PCA, ``projection`` float32 (d_raw, d); attributes ``format``
    and ``weights`` (JSON).
    """
    import h5py

    if not cat_norm.normalised:
        raise UsageError("save_catalog expects normalised embeddings; call normalise() first")
    w = check_weights(weights)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = CATALOG_FORMAT
            f.attrs["weights"] = json.dumps(w)
            f.create_dataset("ids", data=np.array(cat_norm.ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
            for m, x in cat_norm.vectors.items():
                g = f.create_group(m)
                g.create_dataset("vectors", data=x)
                g.create_dataset("mask", data=cat_norm.masks[m])
                g.create_dataset("mean", data=cat_norm.means[m])
                if m in cat_norm.projections:
                    g.create_dataset("projection", data=cat_norm.projections[m])


def load_catalog(path: str | os.PathLike) -> tuple[CatalogEmbeddings, dict[str, float]]:
    """Read a catalog written by :func:`save_catalog`.

    Returns
    -------
    cat_norm : CatalogEmbeddings
    weights : dict of str to float

    Raises
    ------
    StoreError
        Missing, unreadable or inconsistent file.
    """
    import h5py

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise StoreError(f"no catalog file at {path!r}")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != CATALOG_FORMAT:
                raise StoreError(f"{path!r} is not a reelsim catalog (format {f.attrs.get('format')!r})")
            weights = json.loads(f.attrs["weights"])
            ids = [str(s) for s in f["ids"].asstr()[()]]
            groups = [m for m in MODALITIES if m in f]
            vectors = {m: f[m]["vectors"][()] for m in groups}
            masks = {m: f[m]["mask"][()] for m in groups}
            means = {m: f[m]["mean"][()] for m in groups}
            projections = {m: f[m]["projection"][()] for m in groups if "projection" in f[m]}
        return CatalogEmbeddings(ids, vectors, masks, means, projections), check_weights(weights)
    except (OSError, KeyError, ValueError, EmbeddingError, UsageError) as e:
        raise StoreError(f"cannot read catalog {path!r}: {e}") from e
