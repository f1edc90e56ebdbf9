"""``reelsim verify``: is a store whole and consistent, and what would ``run`` or ``lists`` redo?

Every file of the store (:class:`reelsim.storage.layout.StoreLayout`) is read
the way the commands read it, and the files are checked against each other:

- each shard opens, is complete, sits where its id says and its records agree
  (:func:`reelsim.storage.shards.check_shard`); temp files of killed writers;
- the catalog and ``items.json`` read and name the same items, and every
  indexed item has a complete shard, and every complete shard is indexed;
- the FAISS indexes read and hold one vector per catalog item of their group;
- ``lists-state.npz`` reads and has one row per item; the list files read,
  name only indexed items, never an item as its own neighbour, with ranks
  1, 2, ... and the same rows in every format; no unfinished kNN job.

A problem with a shard, the catalog or ``items.json`` is redone by ``reelsim
run`` (over the catalog's inputs); one with the indexes, the list state or
the lists by ``reelsim lists``. Nothing is changed.

Examples
--------
>>> v = verify_store("out/")                     # doctest: +SKIP
>>> v.ok, v.checked["shards"]                    # doctest: +SKIP
(True, 1200)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from reelsim.errors import DamagedStoreError, StoreError
from reelsim.similarity.catalog import CatalogEmbeddings, load_catalog, load_items_meta
from reelsim.similarity.copies import CopyRows, read_copy_table
from reelsim.similarity.fusion import signature_codes
from reelsim.similarity.grouped import GroupedIndex
from reelsim.similarity.grouped import exists as grouped_index_exists
from reelsim.similarity.rebuild import load_state
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lists import read_jsonl, read_parquet_table
from reelsim.storage.lock import describe_owner, is_stale, lock_record, read_lock
from reelsim.storage.shards import check_shard

#: What redoes a problem: ``run`` recomputes items and rebuilds the catalog; ``lists`` the indexes and lists.
REDO = ("run", "lists")


@dataclass(frozen=True)
class Finding:
    """One problem: the file concerned, what is wrong, what redoes it (``run`` | ``lists``), the item if any."""

    path: str
    what: str
    redo: str
    item: str | None = None


@dataclass
class Verdict:
    """What :func:`verify_store` found. ``ok`` when there is no problem (notes are not problems)."""

    store: str
    checked: dict = field(default_factory=dict)
    problems: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, path, what: str, redo: str, item: str | None = None) -> None:
        self.problems.append(Finding(str(path), what, redo, item))

    def redo(self) -> dict:
        """``{"run": [items to recompute], "lists": bool}``."""
        return {"run": sorted({p.item for p in self.problems if p.redo == "run" and p.item}),
                "lists": any(p.redo == "lists" for p in self.problems)}

    def to_json(self) -> dict:
        return {"store": self.store, "ok": self.ok, "checked": self.checked,
                "problems": [asdict(p) for p in self.problems], "redo": self.redo(), "notes": self.notes}

    def describe(self) -> list[str]:
        """The lines ``reelsim verify`` prints."""
        c = self.checked
        summary = (f"{c.get('shards', 0)} shards, {c.get('indexed', 0)} indexed items, {c.get('rows', 0)} list rows "
                   f"in {self.store}")
        lines = [f"note: {n}" for n in self.notes]
        if self.ok:
            return [f"ok: {summary}", *lines]
        for p in self.problems:
            item = f" (item {p.item!r})" if p.item else ""
            lines.append(f"DAMAGED {p.path}{item}: {p.what} -> `reelsim {p.redo}` redoes it")
        redo = self.redo()
        todo = []
        if any(p.redo == "run" for p in self.problems):
            who = f" ({len(redo['run'])} item(s) recomputed: {', '.join(map(repr, redo['run'][:5]))}" \
                  f"{' ...' if len(redo['run']) > 5 else ''})" if redo["run"] else ""
            todo.append(f"`reelsim run` over the catalog's inputs{who} rebuilds the catalog, index and lists")
        if redo["lists"] and not any(p.redo == "run" for p in self.problems):
            todo.append(f"`reelsim lists --store {self.store}` rebuilds the index and lists")
        return [*lines, f"{len(self.problems)} problem(s) in {summary}", "to repair: " + "; ".join(todo)]


def verify_store(store: str | Path) -> Verdict:
    """Check every file of ``store`` and their consistency (module docstring).

    Raises
    ------
    StoreError
        ``store`` is missing, a file, or not a reelsim store (nothing to check).
    """
    layout = StoreLayout(store)
    layout.check_root()
    if not layout.root.is_dir():
        raise StoreError(f"no store at {layout.root}")
    if not (layout.shards_dir.is_dir() or layout.index_dir.is_dir()):
        raise StoreError(f"{layout.root} is not a reelsim store (no shards/ or index/ in it)")
    v = Verdict(str(layout.root))
    _lock_note(layout, v)
    shards = _check_shards(layout, v)
    cat = _check_catalog(layout, v, shards)
    if cat is not None:
        _check_index(layout, v, cat)
        _check_lists(layout, v, cat)
        _check_copies(layout, v, cat)
    _check_report(layout, v)
    return v


def _what(e: StoreError) -> str:
    """What is wrong, without the file name and remedy the message repeats."""
    return e.what if isinstance(e, DamagedStoreError) else str(e)


def _lock_note(layout: StoreLayout, v: Verdict) -> None:
    rec = read_lock(layout.lock)
    if rec is None:
        return
    if rec and is_stale(rec, lock_record()["host"]):
        v.notes.append(f"{layout.lock} was left by a process that no longer runs ({describe_owner(rec)}); "
                       "the next run takes it over")
    else:
        v.notes.append(f"a command holds the store ({describe_owner(rec) if rec else 'lock being written'}): "
                       "files may be changing while they are checked")


def _check_shards(layout: StoreLayout, v: Verdict) -> dict[str, Path]:
    """{item id: shard} of the sound shards; a finding for every other shard file and temp file."""
    sound = {}
    files = layout.shard_files()
    for path in files:
        item_id, what = check_shard(layout, path)
        if what is None:
            sound[item_id] = path
        else:
            v.add(path, what, "run", item_id)
    for tmp in layout.shard_temp_files():
        v.add(tmp, "a temporary file left by a killed writer (the next `reelsim run` removes it)", "run")
    v.checked["shards"] = len(files)
    return sound


def _check_catalog(layout: StoreLayout, v: Verdict, shards: dict[str, Path]) -> CatalogEmbeddings | None:
    """The catalog when it and items.json read; findings for them and for shards missing from either side."""
    if not layout.catalog.is_file():
        if shards:
            v.add(layout.catalog, "no catalog: the items have shards but no index was built", "run")
        return None
    try:
        cat, _ = load_catalog(layout.catalog)
    except StoreError as e:
        v.add(layout.catalog, _what(e), "run")
        return None
    v.checked["indexed"] = cat.n
    try:
        meta = load_items_meta(layout.items_meta)
        if set(meta) != set(cat.ids):
            odd = sorted(set(meta) ^ set(cat.ids))
            v.add(layout.items_meta, f"names other items than the catalog ({len(odd)} differ, e.g. {odd[0]!r})", "run")
    except StoreError as e:
        v.add(layout.items_meta, _what(e), "run")
    damaged = {p.path: n for n, p in enumerate(v.problems)}
    for item_id in cat.ids:
        path = str(layout.shard(item_id))
        if path in damaged and v.problems[damaged[path]].item is None:  # unreadable: the catalog names its item
            v.problems[damaged[path]] = dataclasses.replace(v.problems[damaged[path]], item=item_id)
        elif item_id not in shards and path not in damaged:
            v.add(path, "the item is in the index but has no shard", "run", item_id)
    indexed = set(cat.ids)
    for item_id, path in shards.items():
        if item_id not in indexed:
            v.add(path, "the item has a shard but is not in the index (`reelsim run` adds it)", "run", item_id)
    return cat


def _check_index(layout: StoreLayout, v: Verdict, cat: CatalogEmbeddings) -> None:
    if not grouped_index_exists(layout.index_dir):
        what = "an index of an older reelsim (one fused file)" if layout.legacy_index.is_file() else "no index"
        v.add(layout.index_dir / "index.json", what, "lists")
        return
    try:
        gi = GroupedIndex.load(layout.index_dir)
    except StoreError as e:
        v.add(getattr(e, "path", "") or layout.index_dir / "index.json", _what(e), "lists")
        return
    active = tuple(m for m in gi.active if m in cat.masks)
    if active != gi.active:
        v.add(layout.index_dir / "index.json", f"fuses {list(gi.active)}, the catalog has {sorted(cat.masks)}",
              "lists")
        return
    codes = signature_codes({m: cat.masks[m] for m in active}, active)
    want = {int(c): int((codes == c).sum()) for c in np.unique(codes) if c}
    have = {c: int(ix.ntotal) for c, ix in gi.indexes.items()}
    if want != have:
        v.add(layout.index_dir / "index.json", f"holds {sum(have.values())} vectors in {len(have)} group(s); "
              f"the catalog has {sum(want.values())} in {len(want)}", "lists")
    try:
        floor, blocked, _ = load_state(layout)
        if floor.shape != (cat.n,) or blocked.shape != (cat.n,):
            v.add(layout.lists_state, f"has {floor.size} rows for {cat.n} items", "lists")
    except StoreError as e:
        v.add(layout.lists_state, _what(e), "lists")


def _check_lists(layout: StoreLayout, v: Verdict, cat: CatalogEmbeddings) -> None:
    parquet = layout.list_file("parquet")
    if layout.knn_checkpoint.exists():
        v.add(layout.knn_checkpoint, "an unfinished `reelsim lists` job left its checkpoint (rerunning it "
              "resumes)", "lists")
    try:
        table = read_parquet_table(parquet)
    except StoreError as e:
        v.add(parquet, _what(e), "lists")
        return
    rows = table.num_rows
    v.checked["rows"] = rows
    item, nb = table["item"].to_pylist(), table["neighbor"].to_pylist()
    rank = table["rank"].to_numpy()
    unknown = (set(item) | set(nb)) - set(cat.ids)
    if unknown:
        v.add(parquet, f"names {len(unknown)} item(s) not in the index, e.g. {sorted(unknown)[0]!r}", "lists")
    if any(a == b for a, b in zip(item, nb)):
        v.add(parquet, "lists an item as its own neighbour", "lists")
    if rows and not _ranks_ok(item, rank):
        v.add(parquet, "ranks are not 1, 2, ... within each item's list", "lists")
    jsonl = layout.list_file("jsonl")
    if jsonl.is_file():
        try:
            n = len(read_jsonl(jsonl))
            if n != rows:
                v.add(jsonl, f"has {n} rows, {parquet.name} {rows}: written by another build", "lists")
        except StoreError as e:
            v.add(jsonl, _what(e), "lists")


def _check_copies(layout: StoreLayout, v: Verdict, cat: CatalogEmbeddings) -> None:
    """The copy index of ``reelsim matches``: its rows, FAISS file and table read and agree with the catalog."""
    import faiss

    if not layout.copies_dir.is_dir():
        v.notes.append(f"no copy index (a store written before copy search): `reelsim lists --store {layout.root}` "
                       "builds it for `reelsim matches`")
        return
    try:
        rows = CopyRows.load(layout.copy_rows)
        table = read_copy_table(layout.copy_table)
    except StoreError as e:
        v.add(getattr(e, "path", "") or layout.copies_dir, _what(e), "lists")
        return
    try:
        ntotal = faiss.read_index(str(layout.copy_index)).ntotal
    except RuntimeError as e:
        v.add(layout.copy_index, f"cannot be read ({str(e).splitlines()[0][:120]})", "lists")
        return
    if ntotal != len(rows.item):
        v.add(layout.copy_index, f"holds {ntotal} vectors, {layout.copy_rows.name} describes {len(rows.item)}", "lists")
    unknown = (set(rows.ids) | {i for i, _ in table} | {s.other for _, s in table}) - set(cat.ids)
    if unknown:
        v.add(layout.copy_table, f"names {len(unknown)} item(s) not in the index, e.g. {sorted(unknown)[0]!r}",
              "lists")


def _ranks_ok(item: list, rank: np.ndarray) -> bool:
    """Whether each item's consecutive rows rank 1, 2, ..."""
    expect, prev = np.empty(len(item), np.int64), None
    for i, it in enumerate(item):
        expect[i] = expect[i - 1] + 1 if it == prev else 1
        prev = it
    return bool((rank == expect).all())


def _check_report(layout: StoreLayout, v: Verdict) -> None:
    if not layout.report.is_file():
        return
    try:
        json.loads(layout.report.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        v.add(layout.report, f"cannot be read ({e})", "run")
