"""One answer to "what is similar to X", wherever it is asked: the CLI, the Python API, the report, the service.

The answer is the stored lists of the space asked for: the list set the
store's version names (:mod:`reelsim.storage.listset`), memory-mapped, so it
returns exactly that item's rows of the space's ``neighbors.parquet``, with
the hygiene the lists job applied (blocklist, dedup, MMR). A query the lists
cannot answer is computed live, with the same hygiene:

- other modality weights than the lists were made with (content space only);
- more neighbours than the lists hold (k beyond the stored k);
- a space whose lists are stale (made over another catalog, another model or
  another blocklist than the store's current ones) or missing.

Each answer says which it was (``source``: ``"lists"`` or ``"live"``) and the
store version it came from. A :class:`StoreReader` follows the store: before
each call it checks (one ``stat``) whether a commit published a new version,
and switches to it; it never reads half of a version (list sets are
immutable; everything else is read through
:func:`reelsim.storage.session.read_consistent`).

Examples
--------
>>> reader = StoreReader("out/")                           # doctest: +SKIP
>>> a = reader.similar("trailer-042", k=5)                 # doctest: +SKIP
>>> a.source, [n.item for n in a.neighbors][:2]            # doctest: +SKIP
('lists', ['trailer-042-mobile', 'trailer-017'])
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from reelsim.config import Config, ModelConfig, check_weights
from reelsim.errors import StoreError, UnknownItemError, UsageError
from reelsim.similarity.catalog import load_catalog, load_items_meta
from reelsim.similarity.hygiene import Hygiene
from reelsim.similarity.lookup import Lookup
from reelsim.similarity.rebuild import store_blocked
from reelsim.similarity.spaces import SPACES, item_row, load_model, neighbors_at, space_vectors
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lists import Neighbor
from reelsim.storage.listset import ListSet
from reelsim.storage.session import read_consistent
from reelsim.storage.version import version_token


class Answer(NamedTuple):
    """An item's neighbours in one space, and where they came from.

    item, space : what was asked.
    k : how many were asked for (after clamping to the catalog size).
    source : ``"lists"`` (the stored lists of the space) or ``"live"`` (computed now, same hygiene).
    version : the store version answered from (0: a store written before versions).
    neighbors : best first.
    """

    item: str
    space: str
    k: int
    source: str
    version: int
    neighbors: list[Neighbor]

    def to_json(self, copies: dict[str, dict] | None = None) -> dict:
        """``reelsim similar --json`` and the service: ``{"item", "space", "k", "source", "version", "neighbors"}``.

        ``copies`` (:func:`reelsim.similarity.copies.copy_marks`): a neighbour
        that is a copy of the item also has ``"copy": true`` and its matched
        ``"copy_span"``.
        """
        rows = []
        for n in self.neighbors:
            row = {"item": n.item, "score": float(n.score), "modalities": {m: float(v) for m, v in n.modalities.items()}}
            if copies and n.item in copies:
                row.update({"copy": True, "copy_span": dict(copies[n.item])})
            rows.append(row)
        return {"item": self.item, "space": self.space, "k": self.k, "source": self.source, "version": self.version,
                "neighbors": rows}


def check_space_options(space: str, *, weights: Any = None) -> None:
    """Refuse what cannot apply to ``space`` (exit 2), instead of ignoring it."""
    if space not in SPACES:
        raise UsageError(f"unknown space {space!r}; expected one of {', '.join(SPACES)}")
    if space != "content" and weights:
        raise UsageError(f"--weights applies to the content space only: the {space} space scores items with the "
                         "trained model over all their modalities")


@dataclass
class VersionView:
    """What a reader holds of one store version: the record, the list sets it names, and (lazily) live searchers."""

    layout: StoreLayout
    record: dict
    sets: dict[str, ListSet]
    errors: dict[str, StoreError]
    _live: dict = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)  # reentrant: a value may be made of others

    @property
    def number(self) -> int:
        return int(self.record.get("version", 0))

    def stamp(self, key: str) -> str | None:
        rec = self.record.get(key)
        return rec.get("stamp") if isinstance(rec, dict) else None

    def blocklist(self) -> tuple[tuple[str, ...], float]:
        rec = self.record.get("blocklist") or {}
        return tuple(rec.get("phrases", ())), float(rec.get("threshold", 0.5))

    def fresh_set(self, space: str) -> ListSet | None:
        """The space's list set when it answers for this version: same catalog, model and blocklist (found once
        per space: a view's record and list sets never change)."""
        return self.live(("fresh", space), lambda: self._fresh_set(space))

    def _fresh_set(self, space: str) -> ListSet | None:
        ls = self.sets.get(space)
        if ls is None:
            return None
        m = ls.manifest
        phrases, threshold = self.blocklist()
        h = m.get("hygiene", {})
        if m.get("catalog_stamp") != self.stamp("catalog") or list(h.get("blocklist", [])) != list(phrases):
            return None
        if phrases and h.get("blocklist_threshold") != threshold:
            return None
        if space != "content" and m.get("model_stamp") != self.stamp("model"):
            return None
        return ls

    def hygiene_of(self, space: str) -> tuple[Hygiene, int]:
        """(hygiene, oversample) the space's lists were made with (off when it has none)."""
        ls = self.sets.get(space)
        h = ls.manifest.get("hygiene", {}) if ls is not None else {}
        return Hygiene(h.get("dedup"), h.get("mmr")), int(h.get("oversample", 5))

    def live(self, key: tuple, make):
        """The value kept under ``key`` for this version, made by ``make()`` the first time (one thread at a time;
        ``make`` may ask for other keys: the blocklist mask is made of the catalog's ids)."""
        with self._lock:
            if key not in self._live:
                self._live[key] = make()
            return self._live[key]


def open_view(layout: StoreLayout, version: dict) -> VersionView:
    """Open the list sets ``version`` names (a damaged set is remembered, not raised: that space answers live)."""
    sets, errors = {}, {}
    for space, name in (version.get("lists") or {}).items():
        try:
            sets[space] = ListSet.open(layout.list_set(name))
        except StoreError as e:
            errors[space] = e
    return VersionView(layout, version, sets, errors)


class StoreReader:
    """Answers over a store, always from its current version (module docstring). Safe to share between threads.

    Parameters
    ----------
    store : the store folder
    device : where live learned-space queries run (``cpu``, ``cuda``)
    """

    def __init__(self, store: str | Path, *, device: str = "cpu"):
        self.layout = StoreLayout(store)
        self.device = device
        self._held: tuple[VersionView, tuple] | None = None  # (view, version token), replaced as one
        self._lock = threading.Lock()
        # the version file and the commit journal, as strings: checked at every call (two stats, no Path built)
        self._watched = (os.fspath(self.layout.version_file), os.fspath(self.layout.commit_journal))

    def _unchanged(self, token: tuple) -> bool:
        """Whether the view of version ``token`` still answers: the version is still ``token``, or a commit is
        in progress (the held version's list sets are immutable and kept: it answers until the commit ends)."""
        version_file, journal = self._watched
        return os.path.exists(journal) or version_token(version_file) == token

    def view(self) -> VersionView:
        """The current version's view, reloaded when a commit published a new one since the last call."""
        held = self._held
        if held is not None and self._unchanged(held[1]):
            return held[0]
        with self._lock:
            held = self._held
            if held is not None and self._unchanged(held[1]):
                return held[0]
            token = version_token(self.layout)
            view = read_consistent(self.layout, lambda v: open_view(self.layout, v))
            self._held = (view, token)
            return view

    @property
    def version(self) -> int:
        return self.view().number

    def similar(self, item: str, k: int = 10, *, space: str = "content",
                weights: dict[str, float] | None = None) -> Answer:
        """``item``'s ``k`` nearest neighbours in ``space``, from the stored lists when they answer it.

        Raises
        ------
        UnknownItemError
            ``item`` is not in the store's catalog.
        UsageError
            Bad ``k`` or space; weights for a learned space.
        """
        view, ls = self._lists_of(item, k, space, weights)
        if weights is not None and space == "content":
            weights = check_weights(weights)
            if ls is not None and weights == ls.manifest.get("settings", {}).get("weights"):
                weights = None  # the lists' own weights: the lists answer
        if ls is not None and weights is None:
            answer = self._stored(view, ls, item, k, space)
            if answer is not None:
                return answer
        return self._live(view, item, int(k), space, weights)

    def from_lists(self, item: str, k: int = 10, *, space: str = "content") -> Answer | None:
        """:meth:`similar` when the space's stored lists answer it (``source == "lists"``), else None.

        Never computes: None means the answer would be live (a space without
        fresh lists, or ``k`` beyond the stored k). The service answers these
        on its event loop and sends the rest to a thread. Raises as :meth:`similar`.
        """
        view, ls = self._lists_of(item, k, space, None)
        return None if ls is None else self._stored(view, ls, item, k, space)

    def _lists_of(self, item: str, k, space: str, weights) -> tuple[VersionView, ListSet | None]:
        """Checks of a query, then (the current view, the space's fresh list set or None)."""
        check_space_options(space, weights=weights)
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise UsageError(f"k must be a positive integer, got {k!r}")
        view = self.view()
        if space in view.errors:  # the version names this space's lists, and they cannot be read
            raise view.errors[space]
        return view, view.fresh_set(space)

    @staticmethod
    def _stored(view: VersionView, ls: ListSet, item: str, k: int, space: str) -> Answer | None:
        """The answer of the list set ``ls``; None when ``k`` (clamped to the catalog) is beyond its k."""
        k = min(int(k), max(1, ls.n - 1))
        if k > ls.k:
            return None
        row = ls.row_of(item)
        if row is None:
            raise UnknownItemError(f"unknown item id {item!r}: not in this store's index")
        return Answer(item, space, k, "lists", view.number, ls.neighbors_of_row(row, k))

    def _live(self, view: VersionView, item: str, k: int, space: str, weights: dict | None) -> Answer:
        hygiene, oversample = view.hygiene_of(space)

        def compute():
            blocked = self.blocked_mask(view)
            if space == "content":
                lookup = view.live(("lookup", _key(weights)), lambda: Lookup(self.layout.root, weights))
                kk = min(k, max(1, lookup.cat.n - 1))
                return kk, lookup.neighbors(item, kk, oversample, hygiene=hygiene, blocked=blocked)
            n = len(self.ids())
            kk = min(k, max(1, n - 1))
            # the catalog and the space's vectors, read once per version (the model's files hashed once)
            cat = view.live(("space", "catalog"), lambda: load_catalog(self.layout.require_catalog())[0])
            row = item_row(cat, item)  # before the model is read, as spaces.space_neighbors
            sv = view.live(("space", space), lambda: space_vectors(cat, load_model(self.layout.root), space,
                                                                   device=self.device))
            return kk, neighbors_at(cat, sv, row, kk, hygiene=hygiene, blocked=blocked, oversample=oversample)

        kk, neighbors = read_consistent(self.layout, lambda _: compute())
        return Answer(item, space, kk, "live", view.number, neighbors)

    def blocked_mask(self, view: VersionView | None = None) -> np.ndarray | None:
        """The store's blocklist mask bool (N,) over the catalog (from a fresh list set, else computed once per
        version); None when the store has no blocklist."""
        view = self.view() if view is None else view
        phrases, threshold = view.blocklist()
        if not phrases:
            return None
        for ls in view.sets.values():
            if view.fresh_set(ls.space) is ls:
                return np.array(ls.blocked)
        fusion = Config().with_overrides(fusion={"blocklist": phrases, "blocklist_threshold": threshold}).fusion
        return view.live(("blocked",), lambda: store_blocked(self.layout, self.ids(), fusion, ModelConfig.text))

    def ids(self) -> list[str]:
        """The catalog's ids, in catalog order."""
        view = self.view()
        ls = view.fresh_set("content")
        if ls is not None:
            return view.live(("ids",), ls.ids)
        return view.live(("ids",), lambda: read_consistent(
            self.layout, lambda _: list(load_catalog(self.layout.require_catalog(), header=False, mmap=True)[0].ids)))

    def item(self, item: str) -> dict:
        """``{"id", "kind", "title"}`` of an indexed item (:class:`UnknownItemError` when it is not)."""
        view = self.view()
        meta = view.live(("meta",), lambda: read_consistent(self.layout, lambda _: load_items_meta(
            self.layout.items_meta)))
        rec = meta.get(item)
        if rec is None:
            raise UnknownItemError(f"unknown item id {item!r}: not in this store's index")
        return {"id": item, "kind": rec.get("kind"), "title": rec.get("title")}

    def health(self) -> dict:
        """``{"version", "items", "spaces": {space: {"k", "source"}}, "model"}`` of the current version."""
        view = self.view()
        cat = view.record.get("catalog") or {}
        spaces = {}
        for space in SPACES:
            ls = view.fresh_set(space)
            if ls is not None:
                spaces[space] = {"k": ls.k, "answers": "lists"}
            elif space == "content" or view.record.get("model"):
                spaces[space] = {"k": None, "answers": "live"}
        return {"version": view.number, "items": cat.get("items"), "spaces": spaces,
                "model": (view.record.get("model") or {}).get("stamp"),
                "blocklist": len(view.blocklist()[0])}


def _key(weights: dict | None) -> str:
    import json

    return json.dumps(weights, sort_keys=True)


__all__ = ["Answer", "StoreReader", "VersionView", "check_space_options", "open_view"]
