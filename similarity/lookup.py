"""Neighbour queries against a finished store (``reelsim similar``, ``reelsim report``, the Python API)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reelsim.errors import UnknownItemError
from reelsim.similarity.catalog import load_catalog, load_items_meta
from reelsim.similarity.fusion import fuse
from reelsim.similarity.grouped import GroupedIndex, load_index
from reelsim.similarity.grouped import exists as grouped_index_exists
from reelsim.similarity.hygiene import Hygiene
from reelsim.similarity.index_choice import build_index
from reelsim.similarity.knn import knn_graph
from reelsim.similarity.search import Scored, neighbors_of, rows_of
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

    def neighbors(self, item: str, k: int, oversample: int = 5, *, hygiene: Hygiene | None = None,
                  blocked: np.ndarray | None = None) -> list[Neighbor]:
        """The ``k`` best neighbours of ``item``, best first (:class:`UnknownItemError` if it is not indexed).

        ``hygiene`` (dedup, MMR) and ``blocked`` (bool (N,), rows never listed)
        are applied as the lists job applies them (:func:`reelsim.similarity.knn.knn_graph`).
        """
        if item not in self.meta:
            raise UnknownItemError(f"unknown item id {item!r}: not in this store's index")
        rows = rows_of(self.cat, [item])
        k = max(1, min(k, self.cat.n))
        lists = knn_graph(self.cat, self.index, self.weights, k, rows=rows, oversample=oversample,
                          hygiene=hygiene, blocked=blocked)
        return neighbors_of(self.cat.ids, Scored(lists.I, lists.S, lists.cos))[0]
