"""The lists stage: item embeddings from the shards -> fused FAISS index -> lists.

Writes, under the store::

    index/catalog.h5     normalised per-modality item embeddings + weights
    index/fused.faiss    exact inner-product index over the fused vectors
    index/items.json     id -> {kind, title}, for readable tables
    lists/neighbors.parquet, lists/neighbors.jsonl   one row per (item, neighbor)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from reelsim.errors import StoreError, UnknownItemError
from reelsim.pipeline.config import MODALITIES, FusionConfig
from reelsim.storage.atomic import write_text_atomic
from reelsim.storage.shards import read_item_vectors, shard_path


def catalog_from_shards(store: Path, ids: list[str]):
    """(CatalogEmbeddings of raw item vectors, {id: {kind, title}}) for ``ids``."""
    from reelsim.similarity import CatalogEmbeddings

    vecs: dict[str, list] = {m: [] for m in MODALITIES}
    meta = {}
    for item_id in ids:
        got_id, attrs, item_vecs = read_item_vectors(shard_path(store, item_id))
        if got_id != item_id:
            raise StoreError(f"shard for {item_id!r} holds {got_id!r}: the store is inconsistent")
        meta[item_id] = {"kind": str(attrs["kind"]), "title": str(attrs["title"])}
        for m in MODALITIES:
            vecs[m].append(item_vecs.get(m))
    vectors, masks = {}, {}
    for m, rows in vecs.items():
        dims = {r.shape[0] for r in rows if r is not None}
        if not dims:
            continue
        if len(dims) > 1:
            raise StoreError(f"{m} embeddings of different sizes {sorted(dims)} in one store: "
                             "re-run with one model for this modality")
        d = dims.pop()
        masks[m] = np.array([r is not None for r in rows])
        vectors[m] = np.stack([r if r is not None else np.zeros(d, np.float32) for r in rows]).astype(np.float32)
    return CatalogEmbeddings(list(ids), vectors, masks), meta


def build_lists(store: Path, ids: list[str], fusion: FusionConfig) -> dict:
    """Fuse, index and write every item's top-k list.  Returns a small summary."""
    from reelsim import similarity as sim

    store = Path(store)
    cat, meta = catalog_from_shards(store, ids)
    cat_norm = sim.normalise(cat)
    index = sim.build_index(sim.fuse(cat_norm, fusion.weights))
    (store / "index").mkdir(exist_ok=True)
    (store / "lists").mkdir(exist_ok=True)
    sim.save_catalog(cat_norm, fusion.weights, store / "index" / "catalog.h5")
    sim.save_index(index, store / "index" / "fused.faiss")
    write_text_atomic(store / "index" / "items.json", json.dumps(meta, ensure_ascii=False))
    results = sim.search(cat_norm, index, fusion.weights, None, k=fusion.k, oversample=fusion.oversample)
    rows = sim.neighbor_rows(cat_norm.ids, results)
    sim.write_parquet(rows, store / "lists" / "neighbors.parquet")
    sim.write_jsonl(rows, store / "lists" / "neighbors.jsonl")
    return {"items": cat.n, "k": fusion.k, "rows": len(rows),
            "modalities": {m: int(cat.masks[m].sum()) for m in cat.masks}}


class Lookup:
    """Neighbour queries against a finished store (``reelsim similar``)."""

    def __init__(self, store: Path, weights: dict[str, float] | None = None):
        from reelsim import similarity as sim

        store = Path(store)
        catalog = store / "index" / "catalog.h5"
        if not catalog.is_file():
            raise StoreError(f"no index in {store}: run `reelsim run INPUT --store {store}` first")
        self.cat, stored_weights = sim.load_catalog(catalog)
        self.weights = weights or stored_weights
        self.index = sim.build_index(sim.fuse(self.cat, self.weights)) if weights else sim.load_index(
            store / "index" / "fused.faiss")
        self.meta = json.loads((store / "index" / "items.json").read_text(encoding="utf-8"))

    def neighbors(self, item: str, k: int, oversample: int = 5):
        from reelsim import similarity as sim

        if item not in self.meta:
            raise UnknownItemError(f"unknown item id {item!r}: not in this store's index")
        rows = sim.rows_of(self.cat, [item])
        return sim.search(self.cat, self.index, self.weights, rows, k=k, oversample=oversample)[0]
