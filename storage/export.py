"""Exports for other teams: one consolidated HDF5 file, or the lists as Parquet/JSONL.

Consolidated HDF5 layout (read it with plain h5py)::

    /                  attrs: format="reelsim-export/1", code_version, n_items
    /ids               (N,) UTF-8 item ids, in export order
    /keys              (N,) UTF-8 group names under /items (sha256 of the id)
    /items/<key>/      a copy of the item's shard: same attrs, /video, /features, /thumbnails
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from reelsim._version import __version__
from reelsim.errors import DamagedStoreError, StoreError, UsageError
from reelsim.storage.atomic import check_store_file
from reelsim.storage.layout import StoreLayout, item_key, lists_first_made_by, lists_redo
from reelsim.storage.lists import read_parquet, write_jsonl, write_parquet
from reelsim.storage.shards import atomic_h5, iter_shards, open_shard

EXPORT_FORMATS = ("hdf5", "parquet", "jsonl")


class ExportResult(NamedTuple):
    """What an export wrote: ``n`` items or rows, and the damaged shards it left out (one message each)."""

    n: int
    skipped: list[str]


def export_hdf5(store: Path, to: Path) -> ExportResult:
    """Copy every readable shard of ``store`` into one HDF5 file at ``to``.

    A damaged shard is left out and named in ``skipped``; the others are exported.
    """
    import h5py

    ids, keys, skipped = [], [], []
    with atomic_h5(Path(to)) as out:
        items = out.create_group("items")
        for path in iter_shards(store):
            key = None
            try:
                with open_shard(path) as shard:
                    item_id = str(shard.attrs["item_id"])
                    key = item_key(item_id)
                    g = items.create_group(key)
                    for name, value in shard.attrs.items():
                        g.attrs[name] = value
                    for name in shard:
                        shard.copy(shard[name], g, name=name)
            except DamagedStoreError as e:
                if key is not None and key in items:
                    del items[key]  # copied in part before the damage showed
                skipped.append(str(e))
                continue
            ids.append(item_id)
            keys.append(key)
        string = h5py.string_dtype("utf-8")
        out.create_dataset("ids", data=np.array(ids, dtype=object), dtype=string)
        out.create_dataset("keys", data=np.array(keys, dtype=object), dtype=string)
        out.attrs.update({"format": "reelsim-export/1", "code_version": __version__, "n_items": len(ids)})
    return ExportResult(len(ids), skipped)


def export_lists(store: Path, to: Path, fmt: str, space: str = "content") -> int:
    """Write the similarity lists of ``space`` as Parquet or JSONL (the space's lists file: its hygiene included).

    Returns the number of rows.
    """
    src = StoreLayout(store).space_list_file(space)
    if not Path(check_store_file(src, lists_redo(space))).is_file():
        raise StoreError(f"no {space} similarity lists in {store}: run `{lists_first_made_by(space)} --store {store}` "
                         "first")
    rows = read_parquet(src)
    (write_parquet if fmt == "parquet" else write_jsonl)(rows, Path(to))
    return len(rows)


def check_target(to: Path, example: str = "export.h5") -> None:
    """Make ``to``'s folder; :class:`UsageError` when ``to`` is a folder or a special file, or its folder
    cannot be made (a file is in the way, no permission)."""
    if to.is_dir():
        raise UsageError(f"--to {to} is a folder; give the path of a file to write, e.g. {to / example}")
    if to.exists() and not to.is_file():
        raise UsageError(f"--to {to} exists and is not a regular file; give the path of a file to write")
    try:
        to.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--to {to}: cannot make its folder {to.parent} ({e.strerror})") from None


def export(store: Path, fmt: str, to: Path, space: str = "content") -> ExportResult:
    """Export ``store`` as ``fmt`` to ``to``: features (``hdf5``) or the lists of ``space`` (``parquet``, ``jsonl``)."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    StoreLayout(store).check_root()
    check_target(Path(to), "features.h5" if fmt == "hdf5" else f"lists.{fmt}")
    return export_hdf5(store, to) if fmt == "hdf5" else ExportResult(export_lists(store, to, fmt, space), [])
