"""``reelsim verify``: is a store whole and consistent, and what would ``run`` or ``lists`` redo?

Every file of the store (:class:`reelsim.storage.layout.StoreLayout`) is read
the way the commands read it, and the files are checked against each other:

- each shard opens, is complete, sits where its id says and its records agree
  (:func:`reelsim.storage.shards.check_shard`); temp files of killed writers;
- the catalog and ``items.json`` read and name the same items, and every
  indexed item has a complete shard, and every complete shard is indexed;
- the FAISS indexes read and hold one vector per catalog item of their group;
- ``version.json`` reads, and no commit was left unfinished (``.commit.json``);
- every list set the version names opens (its arrays have the shapes its
  manifest says), the content set has one row per catalog item and was made
  over the catalog the version names; a learned space's set made over
  another catalog, model or blocklist is stale (a note: it is answered live);
- the list files of each space read, name only indexed items, never an item
  as its own neighbour, with ranks 1, 2, ... and the same rows in every
  format and in its list set; no unfinished kNN job;
- the trained model (``learned/``): its provenance reads, its files are the
  ones the provenance names (sha256) and the model the version names.

A problem with a shard, the catalog or ``items.json`` is redone by ``reelsim
run`` (over the catalog's inputs); one with the indexes or the content lists
by ``reelsim lists``; one with a learned space's lists by ``reelsim lists
--space SPACE``; one with the model by ``reelsim train``. Nothing is changed.

Examples
--------
>>> v = verify_store("out/")                     # doctest: +SKIP
>>> v.ok, v.checked["shards"]                    # doctest: +SKIP
(True, 1200)
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from reelsim.errors import DamagedStoreError, StoreError
from reelsim.similarity.catalog import CatalogEmbeddings, load_catalog, load_items_meta
from reelsim.similarity.copies import CopyRows, read_copy_table
from reelsim.similarity.fusion import signature_codes
from reelsim.similarity.grouped import GroupedIndex, load_index
from reelsim.similarity.grouped import exists as grouped_index_exists
from reelsim.similarity.rebuild import load_state
from reelsim.similarity.spaces import check_model_files, has_model, read_provenance
from reelsim.storage.atomic import read_checked, special_file_problem
from reelsim.storage.layout import StoreLayout, lists_redo
from reelsim.storage.lists import read_jsonl, read_parquet_table
from reelsim.storage.listset import ListSet
from reelsim.storage.lock import describe_owner, is_stale, lock_record, read_lock
from reelsim.storage.session import leftovers, read_journal
from reelsim.storage.shards import check_shard
from reelsim.storage.version import read_version

#: What redoes a problem: ``run`` recomputes items and rebuilds the catalog; ``lists`` the indexes and lists;
#: ``lists --space S`` a learned space's lists; ``train`` the model.
REDO = ("run", "lists", "lists --space learned", "lists --space blend", "train", "verify --repair")


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
    #: (path, what) of every problem recorded, so that :meth:`add` finds a repeat without scanning them all
    _seen: set[tuple[str, str]] = field(default_factory=set, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._seen.update((p.path, p.what) for p in self.problems)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, path, what: str, redo: str, item: str | None = None) -> None:
        """Record a problem (once: the same words about the same file found by two checks are one problem)."""
        key = (str(path), what)
        if key not in self._seen:
            self._seen.add(key)
            self.problems.append(Finding(str(path), what, redo, item))

    def redo(self) -> dict:
        """``{"run": [items to recompute], "lists": bool, "spaces": [learned spaces to list], "train": bool}``."""
        return {"run": sorted({p.item for p in self.problems if p.redo == "run" and p.item}),
                "lists": any(p.redo == "lists" for p in self.problems),
                "spaces": sorted({p.redo.split()[-1] for p in self.problems if p.redo.startswith("lists --space")}),
                "train": any(p.redo == "train" for p in self.problems),
                "repair": any(p.redo == "verify --repair" for p in self.problems)}

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
        if redo["repair"]:
            todo.insert(0, f"`reelsim verify --repair --store {self.store}` finishes the interrupted commit")
        if redo["train"]:
            todo.append(f"`reelsim train --interactions FILE --store {self.store}` writes the model again")
        for space in redo["spaces"]:
            todo.append(f"`reelsim lists --space {space} --store {self.store}` rewrites the {space} lists")
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
    _check_special_files(layout, v)
    version = _check_version(layout, v)
    shards = _check_shards(layout, v)
    cat = _check_catalog(layout, v, shards)
    if cat is not None:
        _check_index(layout, v, cat)
        sets = _check_sets(layout, v, cat, version)
        _check_lists(layout, v, cat, "content", sets.get("content"))
        for space in ("learned", "blend"):
            if space in sets or layout.space_lists_dir(space).is_dir():
                _check_lists(layout, v, cat, space, sets.get(space))
        _check_copies(layout, v, cat)
    _check_model(layout, v, version)
    _check_report(layout, v)
    return v


def _check_version(layout: StoreLayout, v: Verdict) -> dict:
    """The version record (empty when unreadable: a finding); findings for an unfinished commit and leftovers."""
    try:
        journal = read_journal(layout)
        if journal is not None:
            v.add(layout.commit_journal, f"a commit of `reelsim {journal['version'].get('command')}` was "
                  "interrupted (any command that writes the store finishes it)", "verify --repair")
    except StoreError as e:
        v.add(layout.commit_journal, _what(e), "verify --repair")
    try:
        version = read_version(layout)
    except StoreError as e:
        v.add(layout.version_file, _what(e), "lists")
        version = {}
    v.checked["version"] = int(version.get("version", 0) or 0)
    for path in leftovers(layout):
        v.notes.append(f"{path} is a temporary file a killed writer left (the next command that writes removes it)")
    return version


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


def _redo_of(layout: StoreLayout, path: Path) -> str:
    """What rewrites the store file ``path``: ``run`` (shards, catalog, items.json, report), ``train``
    (the learned model) or ``lists`` (the rest)."""
    top = path.relative_to(layout.root).parts[0]
    if top == layout.learned_dir.name:
        return "train"
    if top in (layout.shards_dir.name, layout.report.name) or path in (layout.catalog, layout.items_meta):
        return "run"
    return "lists"


def _check_special_files(layout: StoreLayout, v: Verdict) -> None:
    """A finding for every special file (FIFO, device, socket) and every symbolic link out of the store
    among the store's own files (:func:`reelsim.storage.atomic.special_file_problem`); none is opened.

    Folders that are symbolic links are not entered.
    """
    tops = [layout.shards_dir, layout.index_dir, layout.lists_dir, layout.learned_dir]
    files = [layout.report] if os.path.lexists(layout.report) else []
    for top in tops:
        if top.is_dir() and not top.is_symlink():
            for folder, dirs, names in os.walk(top):
                files += [Path(folder, n) for n in names]
                files += [Path(folder, d) for d in dirs if os.path.islink(os.path.join(folder, d))]
    for path in files:
        problem = special_file_problem(path, layout.root)
        if problem is not None and not (path.is_dir() and "a folder" in problem):
            v.add(path, problem, _redo_of(layout, path))


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
    if special_file_problem(layout.catalog):  # found by the walk
        return None
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
    if special_file_problem(layout.index_dir / "index.json"):  # found by the walk
        return
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
    if layout.version_file.exists():
        return  # the list state is in the content list set (_check_sets)
    try:
        floor, blocked, _ = load_state(layout)
        if floor.shape != (cat.n,) or blocked.shape != (cat.n,):
            v.add(layout.lists_state, f"has {floor.size} rows for {cat.n} items", "lists")
    except StoreError as e:
        v.add(layout.lists_state, _what(e), "lists")


def _check_sets(layout: StoreLayout, v: Verdict, cat: CatalogEmbeddings, version: dict) -> dict[str, ListSet]:
    """{space: list set} of the sets the version names that open; findings and staleness notes for them."""
    sets = {}
    cat_stamp = (version.get("catalog") or {}).get("stamp")
    model_stamp = (version.get("model") or {}).get("stamp")
    blocklist = list((version.get("blocklist") or {}).get("phrases", []))
    for space, name in (version.get("lists") or {}).items():
        try:
            folder = layout.list_set(name)
            ls = ListSet.open(folder)
        except StoreError as e:
            v.add(getattr(e, "path", "") or layout.version_file, _what(e), lists_redo(space))
            continue
        m = ls.manifest
        stale = []
        if m.get("catalog_stamp") != cat_stamp:
            stale.append("another catalog")
        if space != "content" and m.get("model_stamp") != model_stamp:
            stale.append("another model")
        if list(m.get("hygiene", {}).get("blocklist", [])) != blocklist:
            stale.append("another blocklist")
        if space == "content" and (stale or ls.n != cat.n):
            v.add(folder / "manifest.json", f"the content lists were made over {' and '.join(stale) or 'another catalog'}"
                  f" ({ls.n} items, the catalog has {cat.n})", "lists")
            continue
        if stale:
            v.notes.append(f"the {space} lists ({folder}) were made over {' and '.join(stale)}: they are answered "
                           f"live until `reelsim lists --space {space} --store {layout.root}` refreshes them")
        sets[space] = ls
    v.checked["spaces"] = sorted(sets)
    return sets


def _check_model(layout: StoreLayout, v: Verdict, version: dict) -> None:
    """The trained model: provenance readable, files the ones it names, and the model the version names."""
    named = (version.get("model") or {}).get("stamp")
    if not (has_model(layout.root) or named or layout.learned_dir.is_dir()):
        return
    prov_path = layout.learned_dir / "provenance.json"
    try:
        prov = read_provenance(layout.root)
        check_model_files(layout.root, prov)
    except StoreError as e:
        v.add(getattr(e, "path", "") or prov_path, _what(e), "train")
        return
    if named and prov.get("stamp") != named:
        v.add(prov_path, "is not the model the store's version names (another write's)", "train")
    v.checked["model"] = prov.get("stamp")


def _check_lists(layout: StoreLayout, v: Verdict, cat: CatalogEmbeddings, space: str,
                 ls: ListSet | None) -> None:
    parquet = layout.space_list_file(space)
    redo = lists_redo(space)
    if space == "content" and layout.knn_checkpoint.exists():
        v.add(layout.knn_checkpoint, "an unfinished `reelsim lists` job left its checkpoint (rerunning it "
              "resumes)", "lists")
    try:
        table = read_parquet_table(parquet)
    except StoreError as e:
        v.add(parquet, _what(e), redo)
        return
    rows = table.num_rows
    v.checked["rows" if space == "content" else f"rows_{space}"] = rows
    item, nb = table["item"].to_pylist(), table["neighbor"].to_pylist()
    rank = table["rank"].to_numpy()
    unknown = (set(item) | set(nb)) - set(cat.ids)
    if unknown and (space == "content" or ls is not None and ls.manifest.get("catalog_stamp") is not None
                    and ls.n == cat.n):
        v.add(parquet, f"names {len(unknown)} item(s) not in the index, e.g. {sorted(unknown)[0]!r}", redo)
    if any(a == b for a, b in zip(item, nb)):
        v.add(parquet, "lists an item as its own neighbour", redo)
    if rows and not _ranks_ok(item, rank):
        v.add(parquet, "ranks are not 1, 2, ... within each item's list", redo)
    if ls is not None:
        in_set = int((np.asarray(ls.I) >= 0).sum())
        if in_set != rows:
            v.add(parquet, f"has {rows} rows, its list set {in_set}: not written by the same command", redo)
    for fmt in ("jsonl", "hdf5"):
        path = layout.space_list_file(space, fmt)
        if not path.is_file():
            continue
        try:
            n = len(read_jsonl(path)) if fmt == "jsonl" else _h5_rows(path)
            if n != rows:
                v.add(path, f"has {n} rows, {parquet.name} {rows}: written by another build", redo)
        except StoreError as e:
            v.add(path, _what(e), redo)


def _h5_rows(path) -> int:
    """Neighbour rows of an HDF5 list file (entries >= 0 of ``neighbors``)."""
    import h5py

    def count(p):
        with h5py.File(p, "r") as f:
            return int((f["neighbors"][...] >= 0).sum())

    return read_checked(path, count, "an HDF5 list file", (OSError, KeyError, ValueError), redo="lists")


def _check_copies(layout: StoreLayout, v: Verdict, cat: CatalogEmbeddings) -> None:
    """The copy index of ``reelsim matches``: its rows, FAISS file and table read and agree with the catalog."""
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
        ntotal = load_index(layout.copy_index).ntotal
    except StoreError as e:
        v.add(layout.copy_index, _what(e), "lists")
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
    if not layout.report.is_file() or special_file_problem(layout.report):  # a special file: found by the walk
        return
    try:
        json.loads(layout.report.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        v.add(layout.report, f"cannot be read ({e})", "run")
