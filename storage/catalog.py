"""The catalog file (``STORE/index/catalog.h5``): every item's normalised embeddings, as plain arrays.

The catalog is what the lists are computed from: per modality, one unit row
per item (zeros where the item lacks the modality), the item's mask, the
catalog mean subtracted before normalising and, with PCA, the projection.
:class:`reelsim.similarity.catalog.CatalogEmbeddings` is the checked in-memory
form; this module only reads and writes the file.

Layout (HDF5, readable with plain h5py): dataset ``ids`` (N,) variable-length
UTF-8; one group per modality with ``vectors`` float32 (N, d), ``mask`` bool
(N,), ``mean`` float32 (d_raw,) and, with PCA, ``projection`` float32
(d_raw, d); root attributes ``format`` (:data:`CATALOG_FORMAT`) and
``weights`` (JSON: modality -> weight the catalog was fused with).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from reelsim.config import MODALITIES
from reelsim.errors import DamagedStoreError, StoreError
from reelsim.storage.atomic import atomic_path

CATALOG_FORMAT = "reelsim.catalog/1"


class CatalogArrays(NamedTuple):
    """The contents of a catalog file (modality keys in :data:`MODALITIES` order)."""

    ids: list[str]
    vectors: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    means: dict[str, np.ndarray]
    projections: dict[str, np.ndarray]
    weights: dict[str, float]


def write_catalog(path: str | os.PathLike, arrays: CatalogArrays) -> None:
    """Write ``arrays`` to ``path`` atomically (HDF5 layout in the module docstring)."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = CATALOG_FORMAT
            f.attrs["weights"] = json.dumps(dict(arrays.weights))
            f.create_dataset("ids", data=np.array(arrays.ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
            for m, x in arrays.vectors.items():
                g = f.create_group(m)
                g.create_dataset("vectors", data=x)
                g.create_dataset("mask", data=arrays.masks[m])
                g.create_dataset("mean", data=arrays.means[m])
                if m in arrays.projections:
                    g.create_dataset("projection", data=arrays.projections[m])


def read_catalog(path: str | os.PathLike, *, vectors: bool = True) -> CatalogArrays:
    """Read a file written by :func:`write_catalog` (``vectors=False``: only its ids and weights, a quick check).

    Raises
    ------
    StoreError
        Missing, unreadable or not a reelsim catalog; the message names the file.
    """
    import h5py

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise StoreError(f"no catalog file at {path!r}")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != CATALOG_FORMAT:
                raise DamagedStoreError(path, f"not a reelsim catalog (format {f.attrs.get('format')!r})", "run")
            weights: Mapping = json.loads(f.attrs["weights"])
            ids = [str(s) for s in f["ids"].asstr()[()]]
            groups = [m for m in MODALITIES if m in f] if vectors else []
            return CatalogArrays(
                ids=ids,
                vectors={m: f[m]["vectors"][()] for m in groups},
                masks={m: f[m]["mask"][()] for m in groups},
                means={m: f[m]["mean"][()] for m in groups},
                projections={m: f[m]["projection"][()] for m in groups if "projection" in f[m]},
                weights=dict(weights),
            )
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise DamagedStoreError(path, f"cannot be read as a catalog ({e.__class__.__name__}: {e})", "run") from None
