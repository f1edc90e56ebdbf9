"""Neighbour queries against a finished store (``reelsim similar``, ``reelsim report``, the Python API)."""

from __future__ import annotations

from pathlib import Path

from reelsim.errors import UnknownItemError
from reelsim.similarity.catalog import load_catalog, load_items_meta
from reelsim.similarity.fusion import fuse
from reelsim.similarity.grouped import GroupedIndex, load_index
from reelsim.similarity.grouped import exists as grouped_index_exists
from reelsim.similarity.index_choice import build_index
from reelsim.similarity.search import rows_of, search
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lists import Neighbor


class Lookup:
    """An item's neighbours, computed from the store's catalog and indexes.

    Parameters
    ----------
    store : the store folder
    weights : modality weights for these queries; default the weights the
        catalog was built with (then the saved indexes are used; other weights
        build an exact index of the re-weighted catalog in memory).

    Raises
    ------
    StoreError
        The store has no catalog, or its index files cannot be read
        (:class:`~reelsim.errors.DamagedStoreError`, naming the file).
    """

    def __init__(self, store: Path, weights: dict[str, float] | None = None):
        layout = StoreLayout(store)
        self.cat, stored_weights = load_catalog(layout.require_catalog())
        self.weights = weights or stored_weights
        if weights:
            self.index = build_index(fuse(self.cat, self.weights))
        elif grouped_index_exists(layout.index_dir):
            self.index = GroupedIndex.load(layout.index_dir)
        else:
            self.index = load_index(layout.legacy_index)
        self.meta = load_items_meta(layout.items_meta)

    def neighbors(self, item: str, k: int, oversample: int = 5) -> list[Neighbor]:
        """The ``k`` best neighbours of ``item``, best first (:class:`UnknownItemError` if it is not indexed)."""
        if item not in self.meta:
            raise UnknownItemError(f"unknown item id {item!r}: not in this store's index")
        rows = rows_of(self.cat, [item])
        return search(self.cat, self.index, self.weights, rows, k=k, oversample=oversample)[0]
