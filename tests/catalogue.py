"""A catalogue of awkward inputs checked in one real run: the machinery shared by the bad- and hostile-input tests.

Each :class:`Case` writes its media and returns its manifest rows (and, when
it needs them, more inputs: CSV manifests, folders). :func:`run_catalogue`
puts every case into one ``catalog.jsonl`` and runs it once on the session's
Dask cluster; :func:`check_case` then checks, case by case, the status and the
one-line reason (or warning) that report.json and the console summary give.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from conftest import run_items

from reelsim.jobs.tables import terminal_safe

#: ``Case.item`` meaning: the case's manifest location (``catalog.jsonl:N``).
AT_LINE = "@line"


@dataclass(frozen=True)
class Case:
    """One awkward input: ``rows(d)`` writes its media under ``d`` and returns its manifest rows.

    A row is a dict (written as JSON), a str (written as is) or bytes
    (written raw, e.g. not UTF-8). ``inputs(d)`` returns more inputs for the
    run (CSV manifests, folders). ``item`` is the report row to check
    (``None``: the id of the case's last row, or its manifest location when it
    has none; ``AT_LINE``: its manifest location; a str: that row; a callable:
    ``item(d)``), ``status`` and ``says`` (a substring of the reason for
    failures, of a warning for successes; None: no warning); ``check(store,
    row, media)`` asserts more.
    """

    name: str
    rows: Callable[[Path], list]
    status: str
    says: str | None = None
    item: str | Callable | None = None
    check: Callable | None = None
    inputs: Callable[[Path], list] | None = None


@dataclass(frozen=True)
class CatalogueRun:
    """What one run over a catalogue gave: ``proc`` holds the exit code and the console summary."""

    store: Path
    media: Path
    proc: subprocess.CompletedProcess
    rows: dict
    row_of: dict


def _line(row) -> bytes:
    if isinstance(row, bytes):
        return row
    return (row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)).encode("utf-8", "surrogatepass")


def run_catalogue(cases: list[Case], media: Path, store: Path, dask_client, cfg=None) -> CatalogueRun:
    """Write every case under ``media``, run them all at once into ``store`` (as the CLI would end)."""
    lines, row_of, inputs = [], {}, []
    for case in cases:
        rows = case.rows(media)
        inputs += case.inputs(media) if case.inputs else []
        lines += [_line(row) for row in rows]
        last = rows[-1] if rows else None
        own_id = last.get("id") if isinstance(last, dict) and case.item != AT_LINE else None
        item = case.item(media) if callable(case.item) else case.item
        row_of[case.name] = (item if item not in (None, AT_LINE) else None) or own_id or f"catalog.jsonl:{len(lines)}"
    (media / "catalog.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    run = run_items([media / "catalog.jsonl", *inputs], store, dask_client, cfg)
    proc = subprocess.CompletedProcess(["reelsim", "run"], run.exit_code, run.describe(store), "")
    report = json.loads((store / "report.json").read_text(encoding="utf-8"))
    return CatalogueRun(store, media, proc, {r["item"]: r for r in report["items"]}, row_of)


def check_case(run: CatalogueRun, case: Case) -> dict:
    """Assert ``case``'s status, reason or warning, and its own checks; its report row."""
    row = run.rows[run.row_of[case.name]]
    assert row["status"] == case.status, row
    console = run.proc.stdout
    if case.status == "failed":
        assert case.says in row["reason"], row["reason"]
        # the same one line on the console, terminal-safe
        assert f"FAILED {terminal_safe(row['item'])}: {terminal_safe(row['reason'])}" in console
    elif case.says is None:
        assert not row["warnings"], row["warnings"]
    else:
        warning = next((w for w in row["warnings"] if case.says in w), None)
        assert warning is not None, row["warnings"]
        assert f"warning {terminal_safe(row['item'])}: {terminal_safe(warning)}" in console
    if case.check:
        case.check(run.store, row, run.media)
    return row
