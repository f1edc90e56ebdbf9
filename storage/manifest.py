"""Catalog input: media folders and manifests (``.jsonl`` / ``.csv``) into items.

A manifest row has any subset of ``id, video, image, title, description``;
relative paths resolve against the manifest's folder.  A folder gives one
item per video file (id = file stem) and one product per image file.  A bad
row never stops the others: it comes back as a :class:`Problem` that the
runner reports as a failed item.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from reelsim.errors import ManifestError, UsageError

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


def item_from_row(row: dict, base: Path, where: str) -> Item:
    """Validate one manifest row (``where`` names it in messages)."""
    if not isinstance(row, dict):
        raise ManifestError(f"{where}: expected an object with fields {', '.join(FIELDS)}")
    unknown = set(row) - set(FIELDS)
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; expected {', '.join(FIELDS)}")
    values = {}
    for key in FIELDS:
        v = row.get(key)
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        if not isinstance(v, str):
            raise ManifestError(f"{where}: field {key!r} must be a string, got {type(v).__name__}")
        values[key] = v.strip() if key in ("id", "video", "image") else v
    for key in ("video", "image"):
        if key in values:
            values[key] = str((base / values[key]).resolve())
    if not ({"video", "image", "title", "description"} & set(values)):
        raise ManifestError(f"{where}: row has no video, image, title or description")
    if "id" not in values:
        source = values.get("video") or values.get("image")
        if not source:
            raise ManifestError(f"{where}: row without id needs a video or image to name it")
        values["id"] = Path(source).stem
    return Item(**values, source=where)


def _manifest_rows(path: Path) -> Iterable[tuple[str, object]]:
    """(where, row) pairs; a row that cannot be parsed yields its error message as the row."""
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path.name}:{n}"
                try:
                    yield where, json.loads(line)
                except json.JSONDecodeError as e:
                    yield where, ManifestError(f"{where}: not valid JSON ({e.msg})")
    elif path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            for n, row in enumerate(reader, 2):
                where = f"{path.name}:{n}"
                if None in row:
                    yield where, ManifestError(f"{where}: more columns than the header")
                else:
                    yield where, {k: v for k, v in row.items() if k is not None}
    else:
        raise UsageError(f"manifest must be .jsonl or .csv: {path}")


def read_manifest(path: Path) -> tuple[list[Item], list[Problem]]:
    items, problems = [], []
    for where, row in _manifest_rows(path):
        try:
            if isinstance(row, Exception):
                raise row
            items.append(item_from_row(row, path.parent, where))
        except ManifestError as e:
            problems.append(Problem(id=where, reason=str(e)))
    return items, problems


def read_folder(path: Path) -> list[Item]:
    """One item per video or image file directly in ``path`` (sorted by name)."""
    items = []
    for p in sorted(path.iterdir()):
        ext = p.suffix.lower()
        if p.is_file() and ext in VIDEO_EXTENSIONS:
            items.append(Item(id=p.stem, video=str(p.resolve()), source=str(p)))
        elif p.is_file() and ext in IMAGE_EXTENSIONS:
            items.append(Item(id=p.stem, image=str(p.resolve()), source=str(p)))
    return items


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
            items += read_folder(p)
        elif p.is_file() and p.suffix.lower() in (".jsonl", ".csv"):
            got, bad = read_manifest(p)
            items += got
            problems += bad
        elif p.suffix.lower() in VIDEO_EXTENSIONS:
            # A single video path: kept even when missing, so it is reported per item.
            items.append(Item(id=p.stem, video=str(p.resolve()), source=str(p)))
        elif not p.exists():
            raise UsageError(f"input not found: {raw}")
        else:
            raise UsageError(f"input must be a folder, a .jsonl/.csv manifest or a video file: {raw}")
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
