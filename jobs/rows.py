"""A run's report rows on disk, so the driver's memory does not grow with the catalog.

Each finished item's row (a small dict, see :func:`reelsim.jobs.tasks.status_row`)
is appended to a JSON Lines file as it arrives, with the item's position in
the catalog. The driver keeps only counters, the byte offset and position
of each row (16 bytes per item) and the few rows that need a line of their
own on the console (retried items). Rows are read back in catalog order,
one at a time, to write ``report.json`` and the console summary.

The file lives in the store's scratch folder and is deleted when the
:class:`RowSpool` is garbage collected (or :meth:`RowSpool.close` is called).

Examples
--------
>>> import tempfile
>>> spool = RowSpool(tempfile.mkdtemp())
>>> spool.append({"item": "b", "status": "ok", "timings": {"text_s": 0.5}}, position=1)
>>> spool.append({"item": "a", "status": "failed", "reason": "gone"}, position=0)
>>> [r["item"] for r in spool.rows()], spool.counts["failed"], spool.stage_totals
(['a', 'b'], 1, {'text_s': 0.5})
"""

from __future__ import annotations

import json
import os
import tempfile
import weakref
from array import array
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def _unlink(path: str, handle) -> None:
    handle.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class RowSpool:
    """Report rows appended to a temporary JSON Lines file in ``folder``; read back in catalog order.

    Attributes
    ----------
    counts : Counter
        Rows per ``status`` (``ok``, ``cached``, ``failed``).
    stage_totals : dict of str to float
        Sum of every row's ``timings`` per stage, in seconds.
    retried : list of dict
        ``{"item", "attempts", "status"}`` of rows with more than one attempt.
    """

    def __init__(self, folder: str | os.PathLike):
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd, self.path = tempfile.mkstemp(prefix="report-rows-", suffix=".jsonl", dir=os.fspath(folder))
        self._file = os.fdopen(fd, "w+b")
        self._finalizer = weakref.finalize(self, _unlink, self.path, self._file)
        self._offsets = array("q")
        self._positions = array("q")
        self.counts: Counter = Counter()
        self.stage_totals: dict[str, float] = {}
        self.retried: list[dict] = []

    def __len__(self) -> int:
        return len(self._offsets)

    def append(self, row: dict, position: int) -> None:
        """Add one item's row; ``position`` orders the rows (its place in the catalog)."""
        self._file.seek(0, os.SEEK_END)
        self._offsets.append(self._file.tell())
        self._positions.append(position)
        self._file.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
        self.counts[row["status"]] += 1
        for k, v in (row.get("timings") or {}).items():
            self.stage_totals[k] = round(self.stage_totals.get(k, 0.0) + v, 3)
        if (row.get("attempts") or 0) > 1:
            self.retried.append({"item": row["item"], "attempts": row["attempts"], "status": row["status"]})

    def rows(self) -> Iterator[dict]:
        """Every row, in position order (ties: in the order they were added), read one at a time."""
        self._file.flush()
        order = np.argsort(np.array(self._positions, dtype=np.int64), kind="stable")
        offsets = np.array(self._offsets, dtype=np.int64)
        with open(self.path, "rb") as f:
            for i in order.tolist():
                f.seek(int(offsets[i]))
                yield json.loads(f.readline())

    def close(self) -> None:
        """Delete the file now."""
        self._finalizer()
