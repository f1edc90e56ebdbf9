"""Neighbour lists: their in-memory types and their files (Parquet, JSON Lines, HDF5), written atomically.

Words used throughout reelsim:

- a **neighbour** (:class:`Neighbor`) is one entry of an item's list: another
  item, its fused score and the cosine of each shared modality;
- the **lists** (:class:`NeighborLists`) are the top-k neighbours of many items
  at once, as arrays over catalog rows, as the kNN-graph job makes them;
- on disk, one row per (item, neighbour) with the keys in :data:`COLUMNS`:
  ``item, neighbor, rank`` (1-based), ``score`` and ``score_<modality>``, the
  plain cosine of each modality, or None where the two items do not share it.
  The file names per format are in :data:`reelsim.storage.layout.LIST_FILES`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from reelsim.config import MODALITIES
from reelsim.errors import DamagedStoreError, StoreError, UsageError
from reelsim.storage.atomic import (
    atomic_path,
    check_store_file,
    native_path,
    read_checked,
    remove_file,
    require_store_file,
)
from reelsim.storage.layout import LIST_FILES


class Neighbor(NamedTuple):
    """One neighbour of a query item.

    item : its id.
    score : the weighted mean of ``modalities`` (weights of the shared modalities).
    modalities : modality -> plain cosine, for the shared modalities only.
    """

    item: str
    score: float
    modalities: dict[str, float]


@dataclass
class NeighborLists:
    """The top-k neighbour lists of a set of query rows, as arrays (the kNN-graph job's output).

    rows : int64 (B,), the query rows (catalog order).
    I : int64 (B, k), neighbour rows, -1 padding.
    S : float64 (B, k), scores, -inf padding.
    cos : dict of str to float64 (B, k), per-modality cosines, NaN where not shared.
    floor : float64 (B,), the lowest score an item must reach to change the
        row's list (the last score of its candidate pool; -inf when the pool
        was not full). Incremental adds use it (``reelsim add``).
    """

    rows: np.ndarray
    I: np.ndarray
    S: np.ndarray
    cos: dict
    floor: np.ndarray

    @classmethod
    def concat(cls, parts: list["NeighborLists"], k: int, active) -> "NeighborLists":
        if not parts:
            e = np.zeros((0, k))
            return cls(np.zeros(0, np.int64), e.astype(np.int64), e, {m: e for m in active}, np.zeros(0))
        return cls(np.concatenate([p.rows for p in parts]), np.concatenate([p.I for p in parts]),
                   np.concatenate([p.S for p in parts]),
                   {m: np.concatenate([p.cos[m] for p in parts]) for m in parts[0].cos},
                   np.concatenate([p.floor for p in parts]))

    def save(self, path) -> None:
        """Write atomically as ``.npz`` (used for checkpoint batches)."""
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, rows=self.rows, I=self.I, S=self.S, floor=self.floor,
                         **{f"cos_{m}": c for m, c in self.cos.items()})

    @classmethod
    def load(cls, path) -> "NeighborLists":
        with np.load(check_store_file(path, "lists")) as z:
            cos = {name[4:]: z[name] for name in z.files if name.startswith("cos_")}
            return cls(z["rows"], z["I"], z["S"], cos, z["floor"])


COLUMNS = ("item", "neighbor", "rank", "score") + tuple(f"score_{m}" for m in MODALITIES)


def neighbor_rows(ids: Sequence[str], results: Sequence[Sequence[Neighbor]]) -> list[dict]:
    """Flatten search results into rows.

    Parameters
    ----------
    ids : sequence of str, length B
        The query items, in the order of ``results``.
    results : sequence of list of Neighbor, length B
        Output of :func:`reelsim.similarity.search.search`.

    Returns
    -------
    list of dict
        Keys :data:`COLUMNS`, ordered by query then rank.

    Examples
    --------
    >>> row, = neighbor_rows(["a"], [[Neighbor("b", 0.5, {"text": 0.5})]])
    >>> row["rank"], row["score_text"], row["score_visual"]
    (1, 0.5, None)
    """
    if len(ids) != len(results):
        raise UsageError(f"{len(ids)} ids but {len(results)} result lists")
    rows = []
    for item, neighbors in zip(ids, results):
        for rank, nb in enumerate(neighbors, start=1):
            row = {"item": item, "neighbor": nb.item, "rank": rank, "score": nb.score}
            row.update({f"score_{m}": nb.modalities.get(m) for m in MODALITIES})
            rows.append(row)
    return rows


def _checked(rows: Iterable[dict]) -> list[dict]:
    rows = list(rows)
    for row in rows:
        if set(row) != set(COLUMNS):
            raise UsageError(f"neighbour row keys {sorted(row)} are not {list(COLUMNS)}")
    return rows


def _schema():
    import pyarrow as pa

    return pa.schema([("item", pa.string()), ("neighbor", pa.string()), ("rank", pa.int32()), ("score", pa.float64())]
                     + [(f"score_{m}", pa.float64()) for m in MODALITIES])


def write_parquet(rows: Iterable[dict], path: str | os.PathLike) -> None:
    """Write neighbour rows to a Parquet file atomically (schema fixed, even with no rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(_checked(rows), schema=_schema())
    with atomic_path(path) as tmp, native_path(tmp) as name:
        pq.write_table(table, name)


def read_parquet_table(path: str | os.PathLike):
    """A list file written by :func:`write_parquet` or :func:`write_lists`, as a ``pyarrow.Table``.

    Raises
    ------
    StoreError
        Missing, or :class:`~reelsim.errors.DamagedStoreError` (unreadable, or
        other columns) naming the file.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = read_checked(path, pq.read_table, "a list file", (OSError, pa.ArrowException), redo="lists")
    _check_columns(path, table.column_names)
    return table


def check_parquet(path: str | os.PathLike) -> None:
    """A quick check that a list file is there and its Parquet footer and columns read (no rows are read).

    Raises as :func:`read_parquet_table`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_columns(path, read_checked(path, pq.read_schema, "a list file", (OSError, pa.ArrowException),
                                      redo="lists").names)


def _check_columns(path, names) -> None:
    if tuple(names) != COLUMNS:
        raise DamagedStoreError(os.fspath(path), f"has columns {list(names)}, expected {list(COLUMNS)}", "lists")


def read_parquet(path: str | os.PathLike) -> list[dict]:
    """Rows (dicts with keys :data:`COLUMNS`) of a list file (:func:`read_parquet_table`)."""
    return read_parquet_table(path).to_pylist()


def write_jsonl(rows: Iterable[dict], path: str | os.PathLike) -> None:
    """Write neighbour rows as UTF-8 JSON Lines (keys in :data:`COLUMNS` order) atomically."""
    rows = _checked(rows)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps({c: row[c] for c in COLUMNS}, ensure_ascii=False, allow_nan=False) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read rows written by :func:`write_jsonl`.

    Raises
    ------
    StoreError
        Missing file or a line that is not a JSON object.
    """
    require_store_file(path, "neighbour list", "lists")
    with open(path, encoding="utf-8") as f:
        try:
            return [json.loads(line) for line in f if line.strip()]
        except ValueError as e:  # bad JSON, or bytes that are not UTF-8
            raise StoreError(f"cannot read neighbour list {os.fspath(path)!r}: {e}") from e


def lists_table(ids: Sequence[str], lists, *, id_array=None):
    """Neighbour rows of :class:`NeighborLists` as a pyarrow Table (columns :data:`COLUMNS`).

    Built column by column (no Python object per row), so 10^7 rows take seconds.
    Same rows as :func:`neighbor_rows` of the same results. ``id_array``:
    ``ids`` as a pyarrow string array, when already made.
    """
    import pyarrow as pa

    ok = lists.I >= 0
    q, j = np.nonzero(ok)  # row-major: by query, then rank
    id_array = pa.array(list(ids), type=pa.string()) if id_array is None else id_array
    cols = {
        "item": id_array.take(pa.array(lists.rows[q])),
        "neighbor": id_array.take(pa.array(lists.I[q, j])),
        "rank": pa.array((j + 1).astype(np.int32)),
        "score": pa.array(lists.S[q, j].astype(np.float64)),
    }
    for m in MODALITIES:
        if m in lists.cos:
            v = lists.cos[m][q, j].astype(np.float64)
            cols[f"score_{m}"] = pa.array(v, mask=np.isnan(v))
        else:
            cols[f"score_{m}"] = pa.nulls(q.size, pa.float64())
    return pa.Table.from_arrays([cols[c] for c in COLUMNS], schema=_schema())


def write_lists(ids: Sequence[str], lists, folder: str | os.PathLike, formats: Sequence[str]) -> dict[str, str]:
    """Write ``lists`` under ``folder`` in each of ``formats`` (keys of :data:`LIST_FILES`), atomically.

    Returns format -> path written. HDF5 layout: ``ids`` (N,) UTF-8 catalog
    ids; ``item_row`` int64 (B,); ``neighbors`` int64 (B, k) rows into ``ids``
    (-1: none); ``scores`` float64 (B, k) (-inf: none); ``score_<modality>``
    float64 (B, k), NaN where the two items do not share the modality.
    """
    import pyarrow.parquet as pq

    unknown = set(formats) - set(LIST_FILES)
    if unknown:
        raise UsageError(f"unknown list format(s) {sorted(unknown)}; expected some of {', '.join(LIST_FILES)}")
    table = lists_table(ids, lists)
    out = {}
    for fmt in formats:
        path = os.path.join(os.fspath(folder), LIST_FILES[fmt])
        with atomic_path(path) as tmp:
            if fmt == "parquet":  # without dictionary pages: 2.4x faster to write 10^7 rows, the same size
                with native_path(tmp) as name:
                    pq.write_table(table, name, use_dictionary=False)
            elif fmt == "jsonl":
                with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                    for batch in table.to_batches(max_chunksize=65536):
                        for row in batch.to_pylist():
                            f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            else:
                _write_h5(tmp, ids, lists)
        out[fmt] = path
    return out


def remove_other_formats(folder: str | os.PathLike, formats: Sequence[str]) -> None:
    """Remove the list files of ``folder`` in formats other than ``formats`` (a rewrite must not leave an
    older build's file beside the new ones); inside a write session, at its commit."""
    for fmt, name in LIST_FILES.items():
        if fmt not in formats:
            remove_file(os.path.join(os.fspath(folder), name))


def _write_h5(path: str, ids: Sequence[str], lists) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["format"] = "reelsim.lists/1"
        f.create_dataset("ids", data=np.array(list(ids), dtype=object), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("item_row", data=lists.rows)
        f.create_dataset("neighbors", data=lists.I)
        f.create_dataset("scores", data=lists.S)
        for m, c in lists.cos.items():
            f.create_dataset(f"score_{m}", data=c)


def read_lists(path: str | os.PathLike, ids: Sequence[str], k: int, active: Sequence[str]):
    """Read a Parquet list file back into :class:`NeighborLists` over catalog ``ids``.

    Rows of items not in ``ids`` are ignored; ``floor`` comes back as -inf
    (the caller loads the stored floors).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    t = read_parquet_table(path)
    id_set = pa.array(list(ids), type=pa.string())
    item = pc.index_in(t["item"], value_set=id_set).to_numpy(zero_copy_only=False)
    nb = pc.index_in(t["neighbor"], value_set=id_set).to_numpy(zero_copy_only=False)
    rank = t["rank"].to_numpy()
    keep = ~(np.isnan(item.astype(float)) | np.isnan(nb.astype(float))) & (rank <= k)
    item, nb, rank = item[keep].astype(np.int64), nb[keep].astype(np.int64), rank[keep].astype(np.int64) - 1
    n = len(ids)
    I = np.full((n, k), -1, np.int64)
    S = np.full((n, k), -np.inf)
    I[item, rank] = nb
    S[item, rank] = t["score"].to_numpy()[keep]
    cos = {}
    for m in active:
        c = np.full((n, k), np.nan)
        c[item, rank] = t[f"score_{m}"].to_numpy(zero_copy_only=False)[keep].astype(np.float64)
        cos[m] = c
    return NeighborLists(np.arange(n, dtype=np.int64), I, S, cos, np.full(n, -np.inf))


# -- part files: one block of rows' lists, written by a worker, assembled by the driver ---------------------------

#: columns of a part file: catalog rows instead of ids (a worker needs no ids), then the list columns
PART_COLUMNS = ("item_row", "neighbor_row", "rank", "score") + tuple(f"score_{m}" for m in MODALITIES)


def _part_schema():
    import pyarrow as pa

    return pa.schema([("item_row", pa.int64()), ("neighbor_row", pa.int64()), ("rank", pa.int32()),
                      ("score", pa.float64())] + [(f"score_{m}", pa.float64()) for m in MODALITIES])


def write_part(path: str | os.PathLike, lists: NeighborLists) -> None:
    """Write one block of lists as a Parquet part file, atomically.

    One row per (item, neighbour) with the columns :data:`PART_COLUMNS`
    (catalog rows, not ids); the block's query rows and floors are in the
    file's metadata (``reelsim.rows``, ``reelsim.floor``: little-endian int64
    and float64), so items with an empty list still have their floor.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    ok = lists.I >= 0
    q, j = np.nonzero(ok)
    cols = [pa.array(lists.rows[q].astype(np.int64)), pa.array(lists.I[q, j].astype(np.int64)),
            pa.array((j + 1).astype(np.int32)), pa.array(lists.S[q, j].astype(np.float64))]
    for m in MODALITIES:
        if m in lists.cos:
            v = lists.cos[m][q, j].astype(np.float64)
            cols.append(pa.array(v, mask=np.isnan(v)))
        else:
            cols.append(pa.nulls(q.size, pa.float64()))
    meta = {b"reelsim.rows": np.asarray(lists.rows, "<i8").tobytes(),
            b"reelsim.floor": np.asarray(lists.floor, "<f8").tobytes(),
            b"reelsim.modalities": json.dumps(sorted(lists.cos)).encode()}
    table = pa.Table.from_arrays(cols, schema=_part_schema().with_metadata(meta))
    with atomic_path(path) as tmp, native_path(tmp) as name:
        pq.write_table(table, name, use_dictionary=False)


def read_part(path: str | os.PathLike):
    """(table with :data:`PART_COLUMNS`, query rows int64 (B,), floors float64 (B,)) of a part file.

    Raises
    ------
    StoreError
        A file that is not a complete part file.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_store_file(path, "lists")
    try:
        with native_path(path) as name:
            table = pq.read_table(name)
        meta = table.schema.metadata or {}
        rows = np.frombuffer(meta[b"reelsim.rows"], "<i8").astype(np.int64)
        floor = np.frombuffer(meta[b"reelsim.floor"], "<f8").astype(np.float64)
    except (OSError, KeyError, pa.ArrowException) as e:
        raise StoreError(f"cannot read list part {os.fspath(path)!r}: {e}") from e
    if tuple(table.column_names) != PART_COLUMNS or rows.size != floor.size:
        raise StoreError(f"{os.fspath(path)!r} is not a reelsim list part")
    return table, rows, floor


def assemble_parts(paths: Sequence[str | os.PathLike], ids: Sequence[str], k: int, active: Sequence[str],
                   folder: str | os.PathLike, formats: Sequence[str],
                   arrays_folder: str | os.PathLike) -> tuple[int, np.ndarray]:
    """Stream part files (in order) into the list files, the list set's arrays and the floors; one part at a time.

    Only the id array, the floors (N,) and one part are in memory: the
    Parquet and JSON Lines files are written part by part, the HDF5 file and
    the list set's ``I``, ``S`` and ``cos-<m>`` arrays
    (:mod:`reelsim.storage.listset`, in the new set's folder ``arrays_folder``)
    are filled row block by row block through memory maps. Each output file
    is written atomically (the list files staged in a write session).

    Returns
    -------
    (rows written, floor float64 (N,))
    """
    import h5py
    import pyarrow as pa
    import pyarrow.parquet as pq

    unknown = set(formats) - set(LIST_FILES)
    if unknown:
        raise UsageError(f"unknown list format(s) {sorted(unknown)}; expected some of {', '.join(LIST_FILES)}")
    n = len(ids)
    id_array = pa.array(list(ids), type=pa.string())
    floor = np.full(n, -np.inf)
    folder, arrays_folder = os.fspath(folder), os.fspath(arrays_folder)
    names = {"I": (np.int64, -1), "S": (np.float64, -np.inf), **{f"cos-{m}": (np.float64, np.nan) for m in active}}
    total = 0
    with contextlib.ExitStack() as stack:
        tmp = {fmt: stack.enter_context(atomic_path(os.path.join(folder, LIST_FILES[fmt]))) for fmt in formats}
        arr_tmp = {name: stack.enter_context(atomic_path(os.path.join(arrays_folder, f"{name}.npy"), immediate=True))
                   for name in names}
        arrays = {name: np.lib.format.open_memmap(arr_tmp[name], mode="w+", dtype=dt, shape=(n, k))
                  for name, (dt, _) in names.items()}
        for name, (_, fill) in names.items():
            arrays[name][:] = fill
        if "parquet" in tmp:
            with native_path(tmp["parquet"]) as name:
                pq_writer = pq.ParquetWriter(name, _schema(), use_dictionary=False)
        else:
            pq_writer = None
        jsonl = stack.enter_context(open(tmp["jsonl"], "w", encoding="utf-8", newline="\n")) if "jsonl" in tmp else None
        h5 = stack.enter_context(h5py.File(tmp["hdf5"], "w")) if "hdf5" in tmp else None
        for path in paths:
            part, rows, part_floor = read_part(path)
            floor[rows] = part_floor
            item_row = part["item_row"].to_numpy()
            rank = part["rank"].to_numpy().astype(np.int64) - 1
            nb = part["neighbor_row"].to_numpy()
            arrays["I"][item_row, rank] = nb
            arrays["S"][item_row, rank] = part["score"].to_numpy()
            for m in active:
                arrays[f"cos-{m}"][item_row, rank] = part[f"score_{m}"].to_numpy(zero_copy_only=False)
            table = pa.Table.from_arrays(
                [id_array.take(part["item_row"].combine_chunks()), id_array.take(part["neighbor_row"].combine_chunks()),
                 part["rank"], part["score"]]
                + [part[f"score_{m}"] for m in MODALITIES], schema=_schema())
            total += table.num_rows
            if pq_writer is not None:
                pq_writer.write_table(table)
            if jsonl is not None:
                for batch in table.to_batches(max_chunksize=65536):
                    for row in batch.to_pylist():
                        jsonl.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
        if pq_writer is not None:
            pq_writer.close()
        for a in arrays.values():
            a.flush()
        if h5 is not None:
            h5.attrs["format"] = "reelsim.lists/1"
            h5.create_dataset("ids", data=np.array(list(ids), dtype=object), dtype=h5py.string_dtype("utf-8"))
            h5.create_dataset("item_row", data=np.arange(n, dtype=np.int64))
            for name, dataset in (("I", "neighbors"), ("S", "scores"), *((f"cos-{m}", f"score_{m}") for m in active)):
                h5.create_dataset(dataset, data=arrays[name])
        del arrays
    return total, floor


class ParquetStream:
    """Writes lists to one Parquet file part by part, in a background thread, while the next part is computed.

    Parameters
    ----------
    path : str
        The file to write (give a temporary path: :func:`reelsim.storage.atomic.atomic_path`).
    ids : sequence of str
        The catalog ids the parts' rows refer to.

    The file has the rows :func:`write_lists` would write for the parts
    concatenated, in the order :meth:`put` received them (one row group per
    part). :meth:`close` waits for the writer and raises its error, if any.
    """

    def __init__(self, path: str | os.PathLike, ids: Sequence[str]):
        import queue
        import threading

        import pyarrow as pa

        self.path = os.fspath(path)
        self.ids = list(ids)
        self.id_array = pa.array(self.ids, type=pa.string())
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="reelsim-parquet", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import pyarrow.parquet as pq

        writer = None
        try:
            with native_path(self.path) as name:
                writer = pq.ParquetWriter(name, _schema(), use_dictionary=False)
            while (part := self.queue.get()) is not None:
                writer.write_table(lists_table(self.ids, part, id_array=self.id_array))
        except BaseException as e:  # noqa: BLE001  (handed to the caller by close())
            self.error = e
            while self.queue.get() is not None:  # let put() and close() go on
                pass
        finally:
            if writer is not None:
                writer.close()

    def put(self, part: NeighborLists) -> None:
        """Queue one part (blocks while two are waiting)."""
        if self.error is None:
            self.queue.put(part)

    def close(self) -> None:
        """Finish the file; raises the writer's error."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
