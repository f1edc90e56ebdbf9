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
``weights`` (JSON: modality -> weight the catalog was fused with), ``stamp``
(random, new at each write). Datasets are contiguous and uncompressed, so
``vectors`` can be memory-mapped.

Rows added later (``reelsim add``) go to a companion file next to it,
``<name>-added.h5`` (:func:`added_path`): ``ids``, and per modality
``vectors`` and ``mask``, of the rows that follow the base file's, with
attribute ``base_stamp``. It is rewritten (atomically) at each add, so an
add writes the new rows, not the whole catalog; a companion whose
``base_stamp`` is not the base file's ``stamp`` (the base was rewritten
since) is ignored, and rewriting the base deletes it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from reelsim.config import MODALITIES
from reelsim.errors import DamagedStoreError
from reelsim.storage.atomic import atomic_path, check_store_file, remove_file, require_store_file

CATALOG_FORMAT = "reelsim.catalog/1"


class CatalogArrays(NamedTuple):
    """The contents of a catalog file (modality keys in :data:`MODALITIES` order)."""

    ids: list[str]
    vectors: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    means: dict[str, np.ndarray]
    projections: dict[str, np.ndarray]
    weights: dict[str, float]


def added_path(path: str | os.PathLike) -> str:
    """The companion file of added rows of catalog ``path``: ``<stem>-added.h5`` next to it."""
    root, ext = os.path.splitext(os.fspath(path))
    return f"{root}-added{ext}"


#: the companion file is merged into the base file once it holds more rows than this fraction of the base
MERGE_FRACTION = 0.25


def write_catalog(path: str | os.PathLike, arrays: CatalogArrays) -> None:
    """Write ``arrays`` to ``path`` atomically (HDF5 layout in the module docstring); drops any added rows file."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = CATALOG_FORMAT
            f.attrs["weights"] = json.dumps(dict(arrays.weights))
            f.attrs["stamp"] = os.urandom(8).hex()
            f.create_dataset("ids", data=np.array(arrays.ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
            for m, x in arrays.vectors.items():
                g = f.create_group(m)
                g.create_dataset("vectors", data=x)
                g.create_dataset("mask", data=arrays.masks[m])
                g.create_dataset("mean", data=arrays.means[m])
                if m in arrays.projections:
                    g.create_dataset("projection", data=arrays.projections[m])
    remove_file(added_path(path))


def append_catalog(path: str | os.PathLike, ids: list[str], vectors: Mapping[str, np.ndarray],
                   masks: Mapping[str, np.ndarray]) -> None:
    """Append rows (already normalised, every modality of the catalog) after the catalog's last row.

    The rows go to the companion file (rewritten atomically with the earlier
    added rows); once it holds more than :data:`MERGE_FRACTION` of the base
    file's rows, the whole catalog is rewritten as one file.
    """
    import h5py

    with h5py.File(check_store_file(path), "r") as f:
        stamp, n_base = str(f.attrs.get("stamp", "")), f["ids"].shape[0]
        dims = {m: f[m]["vectors"].shape[1] for m in MODALITIES if m in f}
    added = _read_added(path, stamp)
    old_ids = added[0] if added else []
    old_v = added[1] if added else {m: np.zeros((0, d), np.float32) for m, d in dims.items()}
    old_m = added[2] if added else {m: np.zeros(0, bool) for m in dims}
    all_ids = old_ids + list(ids)
    all_v = {m: np.concatenate([old_v[m], np.asarray(vectors[m], np.float32)]) for m in dims}
    all_m = {m: np.concatenate([old_m[m], np.asarray(masks[m], bool)]) for m in dims}
    if not stamp or len(all_ids) > MERGE_FRACTION * max(1, n_base):  # rewrite the catalog as one file
        base = read_catalog(path, with_added=False, spare_rows=len(all_ids))
        for m in dims:
            base.vectors[m][n_base:], base.masks[m][n_base:] = all_v[m], all_m[m]
        write_catalog(path, base._replace(ids=base.ids + all_ids))
        return
    with atomic_path(added_path(path)) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = CATALOG_FORMAT + "+added"
            f.attrs["base_stamp"] = stamp
            f.create_dataset("ids", data=np.array(all_ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
            for m in dims:
                g = f.create_group(m)
                g.create_dataset("vectors", data=all_v[m])
                g.create_dataset("mask", data=all_m[m])


@contextlib.contextmanager
def _added_file(path, stamp: str):
    """The companion file open for reading when it belongs to the base with ``stamp``, else None."""
    import h5py

    extra = check_store_file(added_path(path))
    if not stamp or not os.path.isfile(extra):
        yield None
        return
    with h5py.File(extra, "r") as f:
        yield f if str(f.attrs.get("base_stamp", "")) == stamp else None


def _read_added(path, stamp: str):
    """(ids, vectors, masks) of the companion file when it belongs to the base with ``stamp``, else None."""
    with _added_file(path, stamp) as f:
        if f is None:
            return None
        groups = [m for m in MODALITIES if m in f]
        return ([str(s) for s in f["ids"].asstr()[()]], {m: f[m]["vectors"][()] for m in groups},
                {m: f[m]["mask"][()] for m in groups})


def read_catalog(path: str | os.PathLike, *, with_added: bool = True, spare_rows: int = 0,
                 header: bool = False, mmap: bool = False) -> CatalogArrays:
    """Read a file written by :func:`write_catalog`, with the rows appended by :func:`append_catalog`.

    Each modality's vectors are read straight into one array of all rows
    (base and added), so nothing is copied twice. ``spare_rows`` more rows
    are allocated at the end of every vectors and mask array (zeros, False),
    and not in ``ids``: room for rows about to be added. ``header``: no
    rows at all (empty ids, (0, d) vectors), only the modalities, means,
    projections and weights. ``mmap``: the vectors are read-only memory
    maps of the file (processes that map one file share one copy in the
    page cache), when the catalog has no added rows; else they are read.

    Raises
    ------
    StoreError
        Missing, unreadable or not a reelsim catalog; the message names the file.
    """
    import h5py

    path = require_store_file(path, "catalog file")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != CATALOG_FORMAT:
                raise DamagedStoreError(path, f"not a reelsim catalog (format {f.attrs.get('format')!r})", "run")
            weights: Mapping = json.loads(f.attrs["weights"])
            groups = [m for m in MODALITIES if m in f]
            if header:
                return CatalogArrays([], {m: np.zeros((0, f[m]["vectors"].shape[1]), np.float32) for m in groups},
                                     {m: np.zeros(0, bool) for m in groups}, {m: f[m]["mean"][()] for m in groups},
                                     {m: f[m]["projection"][()] for m in groups if "projection" in f[m]},
                                     dict(weights))
            ids = [str(s) for s in f["ids"].asstr()[()]]
            added = _read_added(path, str(f.attrs.get("stamp", ""))) if with_added else None
            n_add = len(added[0]) if added else 0
            vectors, masks = {}, {}
            for m in groups:
                ds = f[m]["vectors"]
                n = ds.shape[0]
                offset = ds.id.get_offset()
                if mmap and not added and not spare_rows and offset is not None and n:
                    vectors[m] = np.memmap(path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape)
                    masks[m] = f[m]["mask"][()]
                    continue
                vectors[m] = np.empty((n + n_add + spare_rows, ds.shape[1]), ds.dtype)
                if n:
                    ds.read_direct(vectors[m], dest_sel=np.s_[:n])
                masks[m] = np.concatenate([f[m]["mask"][()], added[2][m] if added else np.zeros(0, bool),
                                           np.zeros(spare_rows, bool)])
                if added:
                    vectors[m][n:n + n_add] = added[1][m]
                vectors[m][n + n_add:] = 0
            return CatalogArrays(
                ids=ids + (added[0] if added else []),
                vectors=vectors,
                masks=masks,
                means={m: f[m]["mean"][()] for m in groups},
                projections={m: f[m]["projection"][()] for m in groups if "projection" in f[m]},
                weights=dict(weights),
            )
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise DamagedStoreError(path, f"cannot be read as a catalog ({e.__class__.__name__}: {e})", "run") from None


def catalog_size(path: str | os.PathLike) -> int:
    """How many items a catalog file holds (added rows included), reading no ids or vectors.

    Raises as :func:`read_catalog`.
    """
    import h5py

    path = require_store_file(path, "catalog file")
    try:
        with h5py.File(path, "r") as f:
            n, stamp = int(f["ids"].shape[0]), str(f.attrs.get("stamp", ""))
        with _added_file(path, stamp) as f:
            if f is not None:
                n += int(f["ids"].shape[0])
        return n
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise DamagedStoreError(path, f"cannot be read as a catalog ({e.__class__.__name__}: {e})", "run") from None


def read_catalog_ids(path: str | os.PathLike) -> list[str]:
    """The item ids of a catalog file (added rows included), without reading its vectors."""
    import h5py

    path = require_store_file(path, "catalog file")
    try:
        with h5py.File(path, "r") as f:
            ids = [str(s) for s in f["ids"].asstr()[()]]
            stamp = str(f.attrs.get("stamp", ""))
        added = _read_added(path, stamp)
        return ids + (added[0] if added else [])
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise DamagedStoreError(path, f"cannot be read as a catalog ({e.__class__.__name__}: {e})", "run") from None
