"""Interaction logs: who engaged with which item, read from ``.csv``, ``.jsonl`` or ``.parquet``.

One row per engagement with the columns ``user`` and ``item`` (strings or
integers) and, optionally, ``weight`` (a number in [0, :data:`MAX_WEIGHT`];
empty: 1; ``nan``, ``inf`` and larger numbers are refused),
``timestamp`` (seconds as a number, or an ISO 8601 string) and ``event``
(e.g. ``view``, ``purchase``). Other columns are ignored.

A malformed row stops the read with an :class:`InteractionsError` naming the
file and line (``interactions.csv:17: weight 'abc' is not a number``); a
Parquet row is named by its 1-based row number. Text must be UTF-8 (a line
of other bytes, a lone surrogate such as JSON's ``"\ud800"``, or a Parquet
binary column that is not UTF-8 is named), and a Parquet column of another
type (a list, a struct) is refused, naming the column. Rows whose item the store
does not know are dropped, counted and reported (never an error). An empty
file, or one with no rows, is an error.

CSV and Parquet are parsed by pyarrow and checked column by column; JSON
Lines are parsed line by line. 10^6 rows take a few seconds.

Examples
--------
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "log.csv")
>>> _ = open(path, "w").write("user,item,event\\nu1,a,view\\nu1,b,purchase\\nu2,zzz,view\\n")
>>> log = read_interactions(path, known_items=["a", "b"])
>>> log.n, log.unknown_rows, log.unknown_items
(2, 1, ['zzz'])
>>> log.item.tolist(), log.event_names(log.event).tolist()
([0, 1], ['view', 'purchase'])
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from reelsim.errors import UsageError
from reelsim.storage.atomic import atomic_path, encodes_utf8

#: column names read from a log; ``user`` and ``item`` are required
COLUMNS = ("user", "item", "weight", "timestamp", "event")
FORMATS = (".csv", ".jsonl", ".parquet")
#: the largest interaction weight accepted. Weights are summed in float32 (the
#: user x item matrix): at 1e9 a float32 sum overflows (3.4e38) only past 10^29
#: rows, and a user's squared norm (float64) only past 10^290; 1e300 would
#: already be inf in float32.
MAX_WEIGHT = 1e9


class InteractionsError(UsageError):
    """An interactions file that is missing, empty or has a malformed row (CLI exit code 2)."""


@dataclass
class Interactions:
    """An interaction log, coded as integer arrays.

    Attributes
    ----------
    path : str
        The file read.
    sha256 : str
        sha256 of the file's bytes (hex).
    user : np.ndarray, int64, shape (R,)
        Row -> index into ``users``.
    item : np.ndarray, int64, shape (R,)
        Row -> index into ``items`` (the store's catalog ids when ``known_items`` was given).
    users, items : list of str
        Distinct user ids (first-seen order) and the item ids ``item`` points into.
    weight : np.ndarray, float32, shape (R,)
        1 where the file has no weight.
    timestamp : np.ndarray, float64, shape (R,), or None
        Seconds (NaN where empty); None when the file has no ``timestamp`` column.
    event : np.ndarray, int32, shape (R,), or None
        Row -> index into ``events`` (-1 where empty); None without an ``event`` column.
    events : list of str
        Distinct event names.
    rows_read : int
        Rows in the file, unknown items included.
    unknown_rows : int
        Rows dropped because the store does not have their item.
    unknown_items : list of str
        Their distinct item ids, sorted (at most 20 kept; ``unknown_item_count`` has all).
    """

    path: str
    sha256: str
    user: np.ndarray
    item: np.ndarray
    users: list[str]
    items: list[str]
    weight: np.ndarray
    timestamp: np.ndarray | None = None
    event: np.ndarray | None = None
    events: list[str] = field(default_factory=list)
    rows_read: int = 0
    unknown_rows: int = 0
    unknown_items: list[str] = field(default_factory=list)
    unknown_item_count: int = 0

    @property
    def n(self) -> int:
        """Number of rows kept R."""
        return int(self.user.size)

    def event_names(self, codes: np.ndarray) -> np.ndarray:
        """Event names (object array) of event ``codes``; '' for -1."""
        names = np.array(list(self.events) + [""], dtype=object)
        return names[np.where(codes < 0, len(self.events), codes)]

    def subset(self, keep: np.ndarray) -> "Interactions":
        """The rows where ``keep`` (bool (R,)) is True; ids and event names are kept as they are."""
        pick = lambda a: None if a is None else a[keep]
        return Interactions(self.path, self.sha256, self.user[keep], self.item[keep], self.users, self.items,
                            self.weight[keep], pick(self.timestamp), pick(self.event), self.events,
                            self.rows_read, self.unknown_rows, self.unknown_items, self.unknown_item_count)

    def order(self) -> np.ndarray:
        """Row order by user, then timestamp (file order where equal or absent): int64 (R,)."""
        keys = (np.arange(self.n),) + ((self.timestamp,) if self.timestamp is not None else ()) + (self.user,)
        return np.lexsort(keys)

    def quality(self, events: Sequence[str], min_weight: float | None) -> np.ndarray:
        """bool (R,): rows marked as high-quality engagement by their event or weight."""
        out = np.zeros(self.n, bool)
        if self.event is not None and events:
            codes = [i for i, e in enumerate(self.events) if e in set(events)]
            out |= np.isin(self.event, codes)
        if min_weight is not None:
            out |= self.weight >= min_weight
        return out

    def describe(self) -> str:
        """One line for people: rows, users, items, unknown items."""
        text = (f"{self.path}: {self.n} interactions of {len(np.unique(self.user))} users with "
                f"{len(np.unique(self.item))} items")
        if self.unknown_rows:
            text += (f"; {self.unknown_rows} rows with {self.unknown_item_count} items not in the store were "
                     f"skipped (e.g. {', '.join(repr(i) for i in self.unknown_items[:3])})")
        return text


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def read_interactions(path: str | os.PathLike, known_items: Sequence[str] | None = None) -> Interactions:
    """Read and check an interactions file.

    Parameters
    ----------
    path : str or path
        ``.csv`` (with a header line), ``.jsonl`` (one JSON object per line) or ``.parquet``.
    known_items : sequence of str, optional
        The store's item ids. Given, ``Interactions.item`` indexes into them and
        rows of other items are dropped and counted; otherwise ``items`` are the
        log's distinct item ids in first-seen order.

    Returns
    -------
    Interactions

    Raises
    ------
    InteractionsError
        Missing or empty file, unknown format, a missing ``user``/``item``
        column, or a malformed row (the message names its line), or no row
        left whose item the store knows.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise InteractionsError(f"{path}: interactions must be {', '.join(FORMATS)}, got {ext or 'no extension'!r}")
    if not os.path.isfile(path):
        raise InteractionsError(f"{path}: no such interactions file")
    if os.path.getsize(path) == 0:
        raise InteractionsError(f"{path}: the interactions file is empty")
    table, where = {".csv": _read_csv, ".jsonl": _read_jsonl, ".parquet": _read_parquet}[ext](path)
    name = os.path.basename(path)
    cols = _check_columns(table, name, where)
    if cols["user"].size == 0:
        raise InteractionsError(f"{path}: the interactions file has no rows")
    return _code(path, cols, known_items)


def _read_csv(path: str):
    """pyarrow Table of string columns, and row index -> line number."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    name = os.path.basename(path)
    first_bad = []

    def on_invalid(row):
        first_bad.append(row)
        return "error"

    try:
        header = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 16, use_threads=False),
                               parse_options=pcsv.ParseOptions(invalid_row_handler=lambda r: "skip")).schema.names
    except pa.ArrowInvalid as e:
        raise InteractionsError(f"{name}:1: cannot read the header line: {_short(e)}") from None
    types = {c: pa.string() for c in header}
    try:
        table = pcsv.read_csv(path, read_options=pcsv.ReadOptions(use_threads=False),
                              parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=False),
                              convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=False,
                                                                  include_columns=[c for c in header if c in COLUMNS]))
    except pa.ArrowInvalid as e:
        if first_bad:
            r = first_bad[0]
            line = f"{name}:{r.number}" if r.number is not None else name
            raise InteractionsError(f"{line}: expected {r.expected_columns} fields (header: {', '.join(header)}), "
                                    f"got {r.actual_columns}: {r.text[:80]!r}") from None
        bad = _first_non_utf8(path)
        if bad is not None:
            raise InteractionsError(f"{name}:{bad[0]}: not UTF-8 text (byte 0x{bad[1]:02x} at column {bad[2]})") from None
        raise InteractionsError(f"{name}: cannot parse: {_short(e)}") from None
    return table, lambda i: f"{name}:{_csv_line(path, i)}"


def _first_non_utf8(path: str) -> tuple[int, int, int] | None:
    """(line number, byte, column) of the first line of ``path`` that is not UTF-8; None when all are."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return number, raw[e.start], e.start + 1
    return None


def _csv_line(path: str, row: int) -> int:
    """1-based line number of data row ``row`` (0-based) of a CSV file; blank lines are skipped as pyarrow does."""
    seen = -1  # the header is row -1
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if line.strip("\r\n"):
                if seen == row:
                    return number
                seen += 1
    return number


def _read_jsonl(path: str):
    import pyarrow as pa

    name = os.path.basename(path)
    values = {c: [] for c in COLUMNS}
    present = set()
    lines = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InteractionsError(f"{name}:{number}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                                        f"{e.start + 1})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InteractionsError(f"{name}:{number}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise InteractionsError(f"{name}:{number}: expected a JSON object, got {type(obj).__name__}")
            for c in COLUMNS:
                v = obj.get(c)
                if v is not None:
                    present.add(c)
                    if c in ("user", "item") and isinstance(v, (int, str)) and not isinstance(v, bool):
                        v = str(v)
                    elif c in ("weight", "timestamp") and isinstance(v, (int, float)) and not isinstance(v, bool):
                        v = str(v)
                    elif c == "timestamp" and isinstance(v, str):
                        pass
                    elif c == "event" and isinstance(v, str):
                        pass
                    else:
                        raise InteractionsError(f"{name}:{number}: {c} {v!r} has the wrong type "
                                                f"({type(v).__name__})")
                    if not encodes_utf8(v):
                        raise InteractionsError(f"{name}:{number}: {c} {v!r} is not valid Unicode text "
                                                "(a lone surrogate)")
                values[c].append(v)
            lines.append(number)
    cols = {c: pa.array(v, type=pa.string()) for c, v in values.items() if c in present or c in ("user", "item")}
    table = pa.table(cols) if cols else pa.table({})
    return table, lambda i: f"{name}:{lines[i]}"


#: Parquet column types read as text (ids, events); numbers (weight, timestamp) also take these
_TEXT_TYPES = ("string", "large_string", "binary", "large_binary", "integer", "dictionary")


def _parquet_kind(t) -> str | None:
    """Which of :data:`_TEXT_TYPES` (or ``floating``, ``timestamp``, ``null``) pyarrow type ``t`` is."""
    import pyarrow as pa

    for kind in (*_TEXT_TYPES, "floating", "timestamp", "null", "decimal"):
        if getattr(pa.types, f"is_{kind}")(t):
            return kind
    return None


def _read_parquet(path: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = os.path.basename(path)
    try:
        schema = pq.read_schema(path)
        table = pq.read_table(path, columns=[c for c in schema.names if c in COLUMNS])
    except (OSError, pa.ArrowException) as e:
        raise InteractionsError(f"{name}: cannot read Parquet: {_short(e)}") from None
    where = lambda i: f"{name}: row {i + 1}"
    cast = {}
    for c in table.column_names:
        col, kind = table[c], _parquet_kind(table[c].type)
        numbers = c in ("weight", "timestamp")
        if kind is None or (not numbers and kind in ("floating", "timestamp", "decimal")):
            raise InteractionsError(f"{name}: column {c!r} has type {col.type}; expected "
                                    f"{'numbers or text' if numbers else 'text or integers'}")
        if kind == "timestamp":
            col = _timestamp_seconds(col)
        elif kind == "decimal":
            col = col.cast(pa.float64())
        elif kind != "floating":
            col = _as_text(col, c, where)
        cast[c] = col
    return pa.table(cast), where


def _as_text(col, what: str, where):
    """A Parquet column as pyarrow strings; binary that is not UTF-8 is an error naming its row."""
    import pyarrow as pa

    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    try:
        return col.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    for i, v in enumerate(col.to_pylist()):
        if isinstance(v, bytes):
            try:
                v.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InteractionsError(f"{where(i)}: {what} {v[:40]!r} is not UTF-8 text (byte 0x{v[e.start]:02x})"
                                        ) from None
    raise InteractionsError(f"{where(0)}: {what}: cannot read column of type {col.type} as text")


def _timestamp_seconds(col):
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.divide(pc.cast(pc.cast(col, pa.timestamp("us")), pa.int64()).cast(pa.float64()), 1e6)


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:200]


def _check_columns(table, name: str, where) -> dict[str, np.ndarray]:
    """Check every row; column -> numpy array (user/item/event object arrays, weight/timestamp float64)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = [c for c in ("user", "item") if c not in table.column_names]
    if missing:
        raise InteractionsError(f"{name}: no {' or '.join(repr(c) for c in missing)} column "
                                f"(has {', '.join(table.column_names) or 'none'}); expected user, item "
                                "and optionally weight, timestamp, event")
    out = {}
    for c in ("user", "item"):
        col = table[c]
        empty = pc.or_kleene(pc.is_null(col), pc.equal(pc.utf8_trim_whitespace(col), ""))
        bad = np.flatnonzero(empty.to_numpy(zero_copy_only=False))
        if bad.size:
            raise InteractionsError(f"{where(int(bad[0]))}: {c} is missing or empty")
        out[c] = col.to_numpy(zero_copy_only=False)
    if "weight" in table.column_names:
        w, blank = _numbers(table["weight"], "weight", where)
        w = np.where(blank, 1.0, w)
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~(np.isfinite(w) & (w >= 0) & (w <= MAX_WEIGHT)))
        if bad.size:
            raise InteractionsError(f"{where(int(bad[0]))}: weight {w[bad[0]]} must be a finite number >= 0 "
                                    f"and <= {MAX_WEIGHT:g} (empty: 1)")
        out["weight"] = w
    if "timestamp" in table.column_names:
        out["timestamp"] = _times(table["timestamp"], where)
    if "event" in table.column_names:
        col = table["event"]
        col = pc.if_else(pc.is_null(col), "", pc.utf8_trim_whitespace(col.cast(pa.string())))
        out["event"] = col.to_numpy(zero_copy_only=False)
    return out


def _numbers(col, what: str, where) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, bool blank) of a string or numeric column: empty/null cells are blank (value NaN);
    a value that is not a number is an error with its line. ``nan`` and ``inf`` are values, not blanks."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_null(col.type):
        blank = pc.is_null(col).to_numpy(zero_copy_only=False)
        return col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64), blank
    col = pc.utf8_trim_whitespace(col)
    blank = pc.or_kleene(pc.is_null(col), pc.equal(col, ""))
    try:
        x = pc.if_else(blank, None, col).cast(pa.float64())
    except pa.ArrowInvalid:
        text = col.to_numpy(zero_copy_only=False)
        for i, v in enumerate(text):
            if v:
                try:
                    float(v)
                except ValueError:
                    raise InteractionsError(f"{where(i)}: {what} {v!r} is not a number") from None
        raise
    return x.to_numpy(zero_copy_only=False).astype(np.float64), blank.to_numpy(zero_copy_only=False)


def _times(col, where) -> np.ndarray:
    """Timestamps in seconds: numbers as they are, ISO 8601 strings parsed; empty -> NaN; ``nan``/``inf`` refused."""
    out, blank = _seconds(col, where)
    bad = np.flatnonzero(~blank & ~np.isfinite(out))
    if bad.size:
        raise InteractionsError(f"{where(int(bad[0]))}: timestamp {out[bad[0]]} is not a finite number of seconds")
    return out


def _is_text(col) -> bool:
    import pyarrow as pa

    return pa.types.is_string(col.type) or pa.types.is_large_string(col.type)


def _seconds(col, where) -> tuple[np.ndarray, np.ndarray]:
    """(float64 seconds, bool blank) of a timestamp column, as :func:`_numbers`: empty or null cells are blank
    (value NaN)."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.compute as pc

    if not _is_text(col):
        out = col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        return out, pc.is_null(col).to_numpy(zero_copy_only=False)
    col = pc.utf8_trim_whitespace(col)
    blank = pc.or_kleene(pc.is_null(col), pc.equal(col, "")).to_numpy(zero_copy_only=False)
    try:
        return pc.if_else(pc.equal(col, ""), None, col).cast(pa.float64()).to_numpy(
            zero_copy_only=False).astype(np.float64), blank
    except pa.ArrowInvalid:
        pass  # ISO 8601 strings (or a bad value): parsed one by one below
    text = col.to_numpy(zero_copy_only=False)
    out = np.full(len(text), np.nan)
    for i, s in enumerate(text):
        if not s:
            continue
        try:
            out[i] = float(s)
            continue
        except ValueError:
            pass
        try:
            t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
        except ValueError:
            raise InteractionsError(f"{where(i)}: timestamp {s!r} is neither a number of seconds nor ISO 8601") from None
        out[i] = (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).timestamp()
    return out, blank


def _codes(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(codes int64 (R,), distinct values in first-seen order)."""
    uniq, first, inverse = np.unique(values.astype(str), return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inverse].astype(np.int64), [str(u) for u in uniq[order]]


def _code(path: str, cols: dict, known_items) -> Interactions:
    rows_read = int(cols["user"].size)
    items_str = cols["item"].astype(str)
    unknown_rows, unknown_items, unknown_count = 0, [], 0
    if known_items is not None:
        known = list(known_items)
        lookup = {i: r for r, i in enumerate(known)}
        uniq, inverse = np.unique(items_str, return_inverse=True)
        rows = np.array([lookup.get(u, -1) for u in uniq.tolist()], dtype=np.int64)
        item = rows[inverse]
        keep = item >= 0
        if not keep.all():
            missing = uniq[rows < 0]
            unknown_rows, unknown_count = int((~keep).sum()), int(missing.size)
            unknown_items = sorted(str(m) for m in missing[:20])
        if not keep.any():
            raise InteractionsError(f"{path}: none of the {rows_read} rows names an item in the store "
                                    f"(e.g. {unknown_items[0]!r}); is this the right --store?")
        cols = {c: v[keep] for c, v in cols.items()}
        item, items = item[keep], known
    else:
        item, items = _codes(items_str)
    user, users = _codes(cols["user"])
    weight = cols.get("weight", np.ones(user.size)).astype(np.float32)
    event, events = None, []
    if "event" in cols:
        ev = cols["event"].astype(str)
        codes, names = _codes(ev)
        empty = [i for i, n in enumerate(names) if n == ""]
        event = codes.astype(np.int32)
        if empty:
            e = empty[0]
            event = np.where(codes == e, -1, codes - (codes > e)).astype(np.int32)
            names = [n for n in names if n != ""]
        events = names
    ts = cols.get("timestamp")
    return Interactions(path, sha256_file(path), user, item, users, list(items), weight,
                        None if ts is None else ts.astype(np.float64), event, events,
                        rows_read, unknown_rows, unknown_items, unknown_count)


def write_interactions(path: str | os.PathLike, user: Sequence, item: Sequence, *, weight=None, timestamp=None,
                       event=None) -> None:
    """Write a log as ``.csv``, ``.jsonl`` or ``.parquet`` (by extension), atomically.

    Parameters
    ----------
    user, item : sequences of str, length R
    weight : float (R,), optional
    timestamp : float (R,) seconds, optional
    event : sequence of str (R,), optional
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise InteractionsError(f"{path}: interactions must be {', '.join(FORMATS)}")
    cols = {"user": pa.array(np.asarray(user).astype(str)), "item": pa.array(np.asarray(item).astype(str))}
    if weight is not None:
        cols["weight"] = pa.array(np.asarray(weight, np.float64))
    if timestamp is not None:
        cols["timestamp"] = pa.array(np.asarray(timestamp, np.float64))
    if event is not None:
        cols["event"] = pa.array(np.asarray(event).astype(str))
    table = pa.table(cols)
    with atomic_path(path) as tmp:
        if ext == ".parquet":
            pq.write_table(table, tmp)
        elif ext == ".csv":
            pcsv.write_csv(table, tmp, pcsv.WriteOptions(quoting_style="needed"))
        else:
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                for batch in table.to_batches(max_chunksize=65536):
                    for row in batch.to_pylist():
                        f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
