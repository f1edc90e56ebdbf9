"""Neighbour lists as flat rows, written to Parquet or JSON Lines atomically.

One row per (item, neighbour) with the keys in :data:`COLUMNS`:
``item, neighbor, rank`` (1-based), ``score`` and ``score_<modality>``, the
plain cosine of each modality, or None where the two items do not share it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

from reelsim.errors import StoreError, UsageError
from reelsim.pipeline.config import MODALITIES
from reelsim.storage.atomic import atomic_path
from reelsim.similarity.neighbors import Neighbor

COLUMNS = ("item", "neighbor", "rank", "score") + tuple(f"score_{m}" for m in MODALITIES)


def neighbor_rows(ids: Sequence[str], results: Sequence[Sequence[Neighbor]]) -> list[dict]:
    """Flatten search results into rows.

    Parameters
    ----------
    ids : sequence of str, length B
        The query items, in the order of ``results``.
    results : sequence of list of Neighbor, length B
        Output of :func:`reelsim.similarity.neighbors.search`.

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
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: str | os.PathLike) -> list[dict]:
    """Read rows written by :func:`write_parquet`.

    Raises
    ------
    StoreError
        Missing or unreadable file, or other columns.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not os.path.isfile(path):
        raise StoreError(f"no neighbour list at {os.fspath(path)!r}")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise StoreError(f"cannot read neighbour list {os.fspath(path)!r}: {e}") from e
    if tuple(table.column_names) != COLUMNS:
        raise StoreError(f"{os.fspath(path)!r} has columns {table.column_names}, expected {list(COLUMNS)}")
    return table.to_pylist()


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
    if not os.path.isfile(path):
        raise StoreError(f"no neighbour list at {os.fspath(path)!r}")
    with open(path, encoding="utf-8") as f:
        try:
            return [json.loads(line) for line in f if line.strip()]
        except json.JSONDecodeError as e:
            raise StoreError(f"cannot read neighbour list {os.fspath(path)!r}: {e}") from e
