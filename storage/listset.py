"""A list set: one space's neighbour lists as memory-mappable arrays, the answer that readers serve.

Each lists job (``run``, ``add``, ``lists``, ``lists --space``) writes a new
set into a new folder ``STORE/lists/sets/<space>-<stamp>/``
(:meth:`reelsim.storage.layout.StoreLayout.list_set`) and its commit names
it in ``version.json`` (:mod:`reelsim.storage.version`); a set is never
changed afterwards, so a reader that opened it is never disturbed by a
writer. Files (``.npy`` files are plain NumPy arrays, memory-mapped on open):

==================  ===========================  ==========================================================
``manifest.json``   written last                 ``format``, ``space``, ``n``, ``k``, ``modalities``, the
                                                 catalog (and model) stamp it was computed over, ``hygiene``
                                                 (dedup, mmr, blocklist, threshold) and the job's ``settings``
``I.npy``           int64 (n, k)                 neighbour rows into the set's ids, -1 padding
``S.npy``           float64 (n, k)               scores of the space, -inf padding
``cos-<m>.npy``     float64 (n, k)               plain cosine of modality m, NaN where not shared
``floor.npy``       float64 (n,)                 the score a new item must reach to enter the row's list
``blocked.npy``     bool (n,)                    rows the blocklist keeps out of every list
``ids.bin``         UTF-8 bytes                  the ids, one after the other
``ids-offsets.npy`` int64 (n + 1,)               where each id starts in ``ids.bin``
``ids-order.npy``   int64 (n,)                   rows in id order (a lookup is a binary search: no dict of n ids)
==================  ===========================  ==========================================================

Opening a set reads one small JSON file and maps the arrays: milliseconds
at 10^6 items. The rows a set answers for an item are exactly that item's
rows of the space's ``neighbors.parquet`` written in the same commit.

Examples
--------
>>> ls = ListSet.open("out/lists/sets/content-4be1c2d3e4f5a6b7")   # doctest: +SKIP
>>> [(n.item, n.score) for n in ls.neighbors("trailer-042", 3)]      # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from reelsim.errors import DamagedStoreError, StoreError
from reelsim.storage.atomic import atomic_path, require_store_file, write_text_atomic
from reelsim.storage.lists import Neighbor, NeighborLists

SET_FORMAT = "reelsim.listset/1"
MANIFEST = "manifest.json"


def save_array(folder: str | os.PathLike, name: str, a: np.ndarray) -> None:
    """Write ``a`` as ``<name>.npy`` in ``folder`` (atomically)."""
    with atomic_path(os.path.join(os.fspath(folder), f"{name}.npy"), immediate=True) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, a)


def write_ids(folder: str | os.PathLike, ids: list[str], *, previous: "ListSet | None" = None) -> None:
    """Write the id files of a set (``ids.bin``, ``ids-offsets.npy``, ``ids-order.npy``).

    ``previous``: a set whose ids are the first rows of ``ids`` (``reelsim
    add`` appends rows); its id files are extended instead of sorting every
    id again (the new ids are merged into its order).
    """
    folder = os.fspath(folder)
    n0 = previous.n if previous is not None and previous.n <= len(ids) and _is_prefix(previous, ids) else 0
    enc = lambda i: i.encode("utf-8", "surrogatepass")
    encoded = [enc(i) for i in ids[n0:]]
    offsets = np.zeros(len(ids) + 1, np.int64)
    if n0:
        offsets[:n0 + 1] = previous._offsets
    np.cumsum([len(b) for b in encoded], out=offsets[n0 + 1:])
    offsets[n0 + 1:] += offsets[n0]
    with atomic_path(os.path.join(folder, "ids.bin"), immediate=True) as tmp:
        with open(tmp, "wb") as f:
            if n0:
                f.write(previous._blob.tobytes())
            f.write(b"".join(encoded))
    save_array(folder, "ids-offsets", offsets)
    new_rows = np.array(sorted(range(len(encoded)), key=encoded.__getitem__), np.int64)
    if not n0:
        save_array(folder, "ids-order", new_rows)
        return
    at = lambda r: previous._blob[int(previous._offsets[r]):int(previous._offsets[r + 1])].tobytes()
    where = [bisect.bisect_left(previous._order, encoded[j], key=at) for j in new_rows]
    save_array(folder, "ids-order", np.insert(np.asarray(previous._order), where, new_rows + n0))


def _is_prefix(previous: "ListSet", ids: list[str]) -> bool:
    """Whether ``previous``'s ids are ``ids[:previous.n]`` (checked on a sample of rows and the byte count)."""
    n0 = previous.n
    if n0 == 0:
        return False
    sample = np.unique(np.linspace(0, n0 - 1, num=min(n0, 64)).astype(np.int64))
    if any(previous.id_of(int(r)) != ids[int(r)] for r in sample):
        return False
    return int(previous._offsets[-1]) == sum(len(i.encode("utf-8", "surrogatepass")) for i in ids[:n0])


def write_arrays(folder: str | os.PathLike, lists: NeighborLists) -> None:
    """Write the list arrays of a set from lists over every row in order (``lists.rows`` = 0..n-1)."""
    if not np.array_equal(lists.rows, np.arange(lists.rows.size)):
        raise StoreError("a list set holds every row of the catalog, in order")
    save_array(folder, "I", np.asarray(lists.I, np.int64))
    save_array(folder, "S", np.asarray(lists.S, np.float64))
    for m, c in lists.cos.items():
        save_array(folder, f"cos-{m}", np.asarray(c, np.float64))
    save_array(folder, "floor", np.asarray(lists.floor, np.float64))


def write_manifest(folder: str | os.PathLike, *, space: str, n: int, k: int, modalities: list[str],
                   catalog_stamp: str | None, hygiene: dict, settings: dict | None = None,
                   model_stamp: str | None = None, blocked: np.ndarray | None = None) -> dict:
    """Write ``blocked.npy`` and then the manifest (last: a set without it is incomplete); returns the manifest."""
    save_array(folder, "blocked", np.zeros(n, bool) if blocked is None else np.asarray(blocked, bool))
    body = {"format": SET_FORMAT, "space": space, "n": int(n), "k": int(k), "modalities": list(modalities),
            "catalog_stamp": catalog_stamp, "model_stamp": model_stamp, "hygiene": hygiene,
            "settings": settings or {}, "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    write_text_atomic(os.path.join(os.fspath(folder), MANIFEST), json.dumps(body, ensure_ascii=False), immediate=True)
    return body


def write_list_set(folder: str | os.PathLike, ids: list[str], lists: NeighborLists, *, space: str,
                   catalog_stamp: str | None, hygiene: dict, settings: dict | None = None,
                   model_stamp: str | None = None, blocked: np.ndarray | None = None,
                   previous: "ListSet | None" = None) -> dict:
    """Write a whole set (arrays, ids, manifest last) into the empty ``folder``; returns the manifest.

    ``previous``: an earlier set whose ids are the first rows of ``ids`` (:func:`write_ids`).
    """
    write_arrays(folder, lists)
    write_ids(folder, ids, previous=previous)
    return write_manifest(folder, space=space, n=len(ids), k=lists.I.shape[1], modalities=sorted(lists.cos),
                          catalog_stamp=catalog_stamp, hygiene=hygiene, settings=settings, model_stamp=model_stamp,
                          blocked=blocked)


@dataclass
class ListSet:
    """An open list set (module docstring); arrays are memory-mapped, read only."""

    folder: str
    manifest: dict[str, Any]
    I: np.ndarray
    S: np.ndarray
    cos: dict[str, np.ndarray]
    floor: np.ndarray
    blocked: np.ndarray
    _blob: np.ndarray
    _offsets: np.ndarray
    _order: np.ndarray

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "ListSet":
        """Open the set in ``folder``.

        Raises
        ------
        StoreError
            Missing; :class:`DamagedStoreError` (naming the file) when a file is
            not what the manifest says.
        """
        folder = os.fspath(folder)
        path = os.path.join(folder, MANIFEST)
        require_store_file(path, "list set file", "lists")
        try:
            with open(path, encoding="utf-8") as f:
                manifest = json.loads(f.read(1 << 20))
        except (OSError, ValueError) as e:
            raise DamagedStoreError(path, f"cannot be read as JSON ({e})", "lists") from None
        if not isinstance(manifest, dict) or manifest.get("format") != SET_FORMAT:
            raise DamagedStoreError(path, "not a reelsim list set manifest", "lists")
        n, k = manifest.get("n"), manifest.get("k")
        if not (isinstance(n, int) and isinstance(k, int) and n >= 0 and k >= 0):
            raise DamagedStoreError(path, "has no item count and k", "lists")

        def load(name: str, shape: tuple, dtype) -> np.ndarray:
            p = os.path.join(folder, f"{name}.npy")
            require_store_file(p, "list set file", "lists")
            try:
                a = np.load(p, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise DamagedStoreError(p, f"cannot be read as an array ({e})", "lists") from None
            if a.shape != shape or a.dtype != np.dtype(dtype):
                raise DamagedStoreError(p, f"holds {a.dtype} {a.shape}, expected {np.dtype(dtype)} {shape}", "lists")
            return np.asarray(a)  # still the mapped file; a plain ndarray indexes several times faster than memmap

        I = load("I", (n, k), np.int64)
        S = load("S", (n, k), np.float64)
        cos = {m: load(f"cos-{m}", (n, k), np.float64) for m in manifest.get("modalities", [])}
        floor, blocked = load("floor", (n,), np.float64), load("blocked", (n,), np.bool_)
        offsets, order = load("ids-offsets", (n + 1,), np.int64), load("ids-order", (n,), np.int64)
        blob_path = os.path.join(folder, "ids.bin")
        require_store_file(blob_path, "list set file", "lists")
        if os.path.getsize(blob_path) != int(offsets[-1]):
            raise DamagedStoreError(blob_path, f"has {os.path.getsize(blob_path)} bytes, the offsets say "
                                    f"{int(offsets[-1])}", "lists")
        blob = np.asarray(np.memmap(blob_path, np.uint8, "r")) if offsets[-1] else np.zeros(0, np.uint8)
        return cls(folder, manifest, I, S, cos, floor, blocked, blob, offsets, order)

    def __post_init__(self):
        # memoryviews of the id files: indexing one gives a Python int or bytes at once (a lookup's hot path)
        self._ids_mv = (memoryview(self._blob), memoryview(self._offsets), memoryview(self._order))

    @property
    def n(self) -> int:
        return int(self.manifest["n"])

    @property
    def k(self) -> int:
        return int(self.manifest["k"])

    @property
    def space(self) -> str:
        return str(self.manifest["space"])

    def id_of(self, row: int) -> str:
        """The id of ``row``."""
        blob, offsets, _ = self._ids_mv
        return str(blob[offsets[row]:offsets[row + 1]], "utf-8", "surrogatepass")

    def ids(self) -> list[str]:
        """Every id, in row order."""
        blob = self._blob.tobytes()
        o = self._offsets.tolist()
        return [blob[o[i]:o[i + 1]].decode("utf-8", "surrogatepass") for i in range(self.n)]

    def row_of(self, item: str) -> int | None:
        """The row of ``item``, None when the set has no such id (a binary search over the id order)."""
        key = item.encode("utf-8", "surrogatepass")
        blob, offsets, order = self._ids_mv
        at = lambda r: bytes(blob[offsets[r]:offsets[r + 1]])
        i = bisect.bisect_left(order, key, key=at)
        if i < len(order) and at(order[i]) == key:
            return order[i]
        return None

    def neighbors_of_row(self, row: int, k: int) -> list[Neighbor]:
        """The first ``k`` neighbours of ``row``, best first (as its rows of ``neighbors.parquet``)."""
        I = self.I[row, :k].tolist()
        if I and min(I) < 0:  # -1 pads a list shorter than k
            I = I[:next(j for j, r in enumerate(I) if r < 0)]
        n = len(I)
        S = self.S[row, :n].tolist()
        cos = [(m, c[row, :n].tolist()) for m, c in self.cos.items()]
        mods = [{m: v[j] for m, v in cos if v[j] == v[j]} for j in range(n)]  # NaN: the modality is not shared
        blob, offsets, _ = self._ids_mv
        ids = [str(blob[offsets[r]:offsets[r + 1]], "utf-8", "surrogatepass") for r in I]
        return list(map(Neighbor._make, zip(ids, S, mods)))

    def as_lists(self) -> NeighborLists:
        """Every row's list, in memory (a copy of the arrays: ``reelsim add`` changes some rows)."""
        return NeighborLists(np.arange(self.n, dtype=np.int64), np.array(self.I), np.array(self.S),
                             {m: np.array(c) for m, c in self.cos.items()}, np.array(self.floor))


__all__ = ["ListSet", "SET_FORMAT", "save_array", "write_arrays", "write_ids", "write_list_set", "write_manifest"]
