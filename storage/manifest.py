"""Catalog input: media folders and manifests (``.jsonl`` / ``.csv``) into items.

A manifest row has any subset of ``id, video, image, title, description``;
relative paths resolve against the manifest's folder.  A folder gives one
item per video file (id = file stem) and one product per image file.  A bad
row never stops the others: it comes back as a :class:`Problem` that the
runner reports as a failed item.

Rules where input enters: manifests are read as UTF-8 (a byte-order mark,
as spreadsheets write one, is skipped); a line with bytes that are not UTF-8,
a field with a lone surrogate or a NUL, bad JSON, a CSV row with more columns
than its header are each one problem naming the line they start on.  A CSV
header with unknown columns is one problem for the file, with a hint when it
looks separated by semicolons or tabs.  Input files must be regular files
(:func:`check_input_file`): a device, a FIFO, a folder or a dangling link is
refused before anything reads it.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from reelsim.errors import ManifestError, MediaError, UsageError

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
FIELDS = ("id", "video", "image", "title", "description")


@dataclass(frozen=True, slots=True)  # slots: a catalog of 10^6 items holds 10^6 of them
class Item:
    """One catalog entry: a video, a product, or both.

    Paths are absolute.  ``kind`` is ``video`` when the item has a video,
    otherwise ``product``.  ``source`` says where the entry came from
    (``catalog.jsonl:7``, a folder, a file); it is not part of the item's identity.
    """

    id: str
    video: str | None = None
    image: str | None = None
    title: str | None = None
    description: str | None = None
    source: str | None = field(default=None, compare=False)

    @property
    def kind(self) -> str:
        return "video" if self.video else "product"

    @property
    def text(self) -> str:
        """Title and description joined; empty when the item has neither."""
        return ". ".join(t.strip() for t in (self.title, self.description) if t and t.strip())


@dataclass(frozen=True)
class Problem:
    """A catalog entry that could not become an item (reported, not fatal)."""

    id: str
    reason: str


def check_text(key: str, value: str, where: str) -> str:
    """``value`` of manifest field ``key`` if it can be stored and shown: valid Unicode, no NUL.

    Raises
    ------
    ManifestError
        A lone surrogate (JSON can spell one, ``"\\ud800"``; UTF-8 cannot hold it)
        or a NUL character (HDF5 strings and file paths end at one).
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ManifestError(f"{where}: field {key!r} is not valid Unicode (lone surrogate "
                            f"U+{ord(value[e.start]):04X} at character {e.start + 1})") from None
    if "\x00" in value:
        raise ManifestError(f"{where}: field {key!r} contains NUL (a zero character)")
    return value


def item_from_row(row: dict, base: Path, where: str) -> Item:
    """Validate one manifest row (``where`` names it in messages)."""
    if not isinstance(row, dict):
        raise ManifestError(f"{where}: expected an object with fields {', '.join(FIELDS)}")
    unknown = set(row) - set(FIELDS)
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
                            f"expected {', '.join(FIELDS)}")
    values = {}
    for key in FIELDS:
        v = row.get(key)
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        if not isinstance(v, str):
            raise ManifestError(f"{where}: field {key!r} must be a string, got {type(v).__name__}")
        v = check_text(key, v, where)
        values[key] = v.strip() if key in ("id", "video", "image") else v
    for key in ("video", "image"):
        if key in values:
            values[key] = os.path.abspath(base / values[key])
    if not ({"video", "image", "title", "description"} & set(values)):
        raise ManifestError(f"{where}: row has no video, image, title or description")
    if "id" not in values:
        source = values.get("video") or values.get("image")
        if not source:
            raise ManifestError(f"{where}: row without id needs a video or image to name it")
        values["id"] = Path(source).stem
    return Item(**values, source=where)


def _not_utf8(where: str, raw: bytes, e: UnicodeDecodeError) -> ManifestError:
    return ManifestError(f"{where}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                         "save the manifest as UTF-8")


def _jsonl_rows(path: Path) -> Iterator[tuple[str, object]]:
    """(where, row) of each non-blank line; undecodable bytes or bad JSON give a ManifestError as the row."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            where = f"{path.name}:{n}"
            if n == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield where, _not_utf8(where, raw, e)
                continue
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                yield where, ManifestError(f"{where}: not valid JSON ({e.msg})")
            except RecursionError:
                yield where, ManifestError(f"{where}: not valid JSON (nested too deeply)")


def _delimiter_hint(header: list[str]) -> str:
    """A hint when a CSV header looks separated by something other than commas ('' when not)."""
    if len(header) == 1:
        for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
            if sep in header[0]:
                return (f" (the file seems separated by {name} ({sep!r}); reelsim reads comma-separated CSV: "
                        "export it again with commas)")
    return ""


def _csv_rows(path: Path) -> Iterator[tuple[str, object]]:
    """(where, row) of each record, ``where`` naming the line it starts on (records may span lines).

    Read as UTF-8 (a byte-order mark is skipped); a record holding bytes that
    are not UTF-8 comes back as a ManifestError. A header with unknown columns
    is one problem for the whole file.
    """
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        header, end = None, 0
        for record in reader:
            start, end = end + 1, reader.line_num
            if not record or (header is None and not any(c.strip() for c in record)):
                continue
            where = f"{path.name}:{start}"
            bad = next(((i, c) for i, c in enumerate(record) if _SURROGATE.search(c)), None)
            if bad is not None:
                i, text = bad
                byte = ord(_SURROGATE.search(text).group()) - 0xDC00
                column = repr(header[i]) if header and i < len(header) else f"number {i + 1}"
                yield where, ManifestError(f"{where}: not UTF-8 (byte 0x{byte:02x} in column {column}); "
                                           "save the manifest as UTF-8")
                continue
            if header is None:
                header = [c.strip() for c in record]
                unknown = [c for c in header if c not in FIELDS]
                if unknown:
                    yield where, ManifestError(f"{where}: unknown column(s) {', '.join(map(repr, unknown))} in the "
                                               f"header; expected some of {', '.join(FIELDS)}{_delimiter_hint(header)}")
                    return
                continue
            if len(record) > len(header):
                yield where, ManifestError(f"{where}: more columns than the header ({len(record)} > {len(header)})")
            else:
                yield where, dict(zip(header, record))


#: a byte that was not UTF-8, as ``errors="surrogateescape"`` decodes it
_SURROGATE = re.compile("[\udc80-\udcff]")


def _manifest_rows(path: Path) -> Iterable[tuple[str, object]]:
    """(where, row) pairs; a row that cannot be parsed yields its error as the row."""
    if path.suffix.lower() == ".jsonl":
        yield from _jsonl_rows(path)
    elif path.suffix.lower() == ".csv":
        yield from _csv_rows(path)
    else:
        raise UsageError(f"manifest must be .jsonl or .csv: {path}")


def read_manifest(path: Path) -> tuple[list[Item], list[Problem]]:
    """Items and problems of one manifest: no row, however broken, stops the others."""
    items, problems = [], []
    for where, row in _manifest_rows(path):
        try:
            if isinstance(row, Exception):
                raise row
            items.append(item_from_row(row, path.parent, where))
        except ManifestError as e:
            problems.append(Problem(id=where, reason=str(e)))
    return items, problems


def path_text(path: str | os.PathLike) -> str:
    """``path`` as text that can be stored and printed: bytes that are not UTF-8 shown as ``\\xe9``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _media_entry(p: Path, source: str) -> Item | Problem:
    """The item of one media file named on the command line or found in a folder (a problem if unnamable)."""
    if path_text(p.name) != p.name:
        return Problem(id=path_text(p), reason=f"file name is not valid UTF-8: {path_text(p)}; rename it, or list "
                       "it in a manifest with an id")
    key = "video" if p.suffix.lower() in VIDEO_EXTENSIONS else "image"
    return Item(id=p.stem, **{key: os.path.abspath(p)}, source=source)


def read_folder(path: Path) -> tuple[list[Item], list[Problem]]:
    """One item per video or image name directly in ``path`` (sorted by name).

    Every entry with a media extension becomes an item, whatever it is (a
    symlink to a device, a folder, a dangling link): the task refuses it with
    the reason (:func:`check_input_file`), so no entry is skipped silently.
    """
    items, problems = [], []
    for p in sorted(path.iterdir()):
        if p.suffix.lower() in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS:
            got = _media_entry(p, str(p))
            (items if isinstance(got, Item) else problems).append(got)
    return items, problems


def read_inputs(inputs: Iterable[str]) -> tuple[list[Item], list[Problem]]:
    """Items from folders, manifests and single video files; duplicate ids become problems.

    Raises
    ------
    UsageError
        An input path that does not exist or is of an unknown kind.
    """
    items: list[Item] = []
    problems: list[Problem] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            got, bad = read_folder(p)
        elif p.is_file() and p.suffix.lower() in (".jsonl", ".csv"):
            got, bad = read_manifest(p)
        elif p.suffix.lower() in VIDEO_EXTENSIONS:
            # A single video path: kept even when missing, so it is reported per item.
            entry = _media_entry(p, str(p))
            got, bad = ([entry], []) if isinstance(entry, Item) else ([], [entry])
        elif not p.exists():
            raise UsageError(f"input not found: {path_text(raw)}")
        else:
            raise UsageError(f"input must be a folder, a .jsonl/.csv manifest or a video file: {path_text(raw)}")
        items += got
        problems += bad
    unique, duplicates = drop_duplicate_ids(items)
    return unique, problems + duplicates


def drop_duplicate_ids(items: list[Item]) -> tuple[list[Item], list[Problem]]:
    """The rule for duplicate ids: the first entry (in input order) wins; each later one is a problem.

    A later entry is reported under its own location (``catalog.jsonl:9``),
    so report.json keeps one row per id for the item that ran.
    """
    first: dict[str, Item] = {}
    unique: list[Item] = []
    problems: list[Problem] = []
    for item in items:
        if item.id in first:
            where = first[item.id].source or "an earlier entry"
            problems.append(Problem(id=item.source or f"{item.id} (duplicate)",
                                    reason=f"duplicate id {item.id!r}: already used by {where}; this entry "
                                    "is skipped (ids must be unique; the first entry wins)"))
            continue
        first[item.id] = item
        unique.append(item)
    return unique, problems


def input_files(item: Item) -> dict[str, str]:
    """Modality -> path of the files whose content an item's features depend on."""
    return {k: v for k, v in (("video", item.video), ("image", item.image)) if v}


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def check_input_file(modality: str, path: str) -> None:
    """Refuse, before anything opens it, an input that is not a readable regular file.

    Raises
    ------
    MediaError
        Missing, a dangling symbolic link, a folder, a device (``/dev/zero``
        would be read for ever), a FIFO (would block for ever), a socket, or
        not readable; the message names the path and what it is.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise MediaError(f"{modality} path is a broken symbolic link (to {path_text(os.readlink(path))}): "
                             f"{path_text(path)}") from None
        raise MediaError(f"{modality} file not found: {path_text(path)}") from None
    except OSError as e:
        raise MediaError(f"{modality} file cannot be read ({e.strerror}): {path_text(path)}") from None
    if not stat.S_ISREG(mode):
        raise MediaError(f"{modality} path is {_file_kind(mode)}, not a regular file: {path_text(path)}")
