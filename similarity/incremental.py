"""``reelsim add``: new items into a store's catalog, indexes and lists, without a rebuild.

The new items are normalised with the catalog's stored transform (means,
PCA), appended to the catalog and to their modality group's index; their own
lists are computed, and so are the lists of existing items whose list they
enter (an exact scan of the new items against the catalog finds them: score
>= that item's stored floor). All other lists are kept as they are.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from reelsim.config import FusionConfig, check_weights
from reelsim.errors import StoreError, UsageError
from reelsim.similarity.catalog import CatalogEmbeddings, load_catalog, load_items_meta, save_catalog
from reelsim.similarity.fusion import (
    fuse_parts,
    normalise_queries,
    shared_score,
    signature_codes,
)
from reelsim.similarity.grouped import GroupedIndex, read_manifest
from reelsim.similarity.grouped import exists as grouped_index_exists
from reelsim.similarity.hygiene import Hygiene
from reelsim.similarity.knn import knn_graph
from reelsim.similarity.rebuild import (
    blocked_rows_of,
    catalog_from_shards,
    list_formats,
    load_state,
    save_state,
)
from reelsim.storage.atomic import write_text_atomic
from reelsim.storage.catalog import read_catalog
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lists import check_parquet, read_lists, write_lists


def check_can_add(store: Path) -> None:
    """Before any item is analysed, quickly: the store's catalog, items.json, index manifest, list state and
    lists are there and read (headers only where a file is large).

    Raises
    ------
    StoreError
        Something ``reelsim add`` needs is missing or damaged (the message names it).
    """
    layout = StoreLayout(store)
    read_catalog(layout.require_catalog(), vectors=False)
    load_items_meta(layout.items_meta)
    if not grouped_index_exists(layout.index_dir):
        raise StoreError(f"{layout.root} has no per-group index (made by an older reelsim): "
                         f"run `reelsim lists --store {layout.root}` once, then add")
    read_manifest(layout.index_dir)
    load_state(layout)
    check_parquet(layout.list_file("parquet"))


def add_items(store: Path, new_ids: list[str], fusion: FusionConfig, *, progress: bool = False,
              text_model: str = "minilm-l6-v2") -> dict:
    """Add analysed items (their shards exist) to the catalog, the index and the lists.

    Items already in the catalog are skipped. Returns a summary: ``added``,
    ``skipped``, ``updated_lists`` (existing lists the new items entered),
    ``items`` (catalog size after) and ``new_neighbors`` (per new item).
    """
    layout = StoreLayout(store)
    known = set(load_catalog(layout.require_catalog())[0].ids)
    fresh = [i for i in dict.fromkeys(new_ids) if i not in known]
    if not fresh:
        return {"added": 0, "skipped": len(new_ids), "updated_lists": 0, "items": len(known)}
    raw, new_meta = catalog_from_shards(layout.root, fresh)
    out = add_vectors(layout.root, raw, new_meta, fusion, progress=progress, text_model=text_model)
    out["skipped"] = len(new_ids) - out["added"]
    return out


def add_vectors(store: Path, raw: CatalogEmbeddings, new_meta: dict, fusion: FusionConfig, *,
                progress: bool = False, text_model: str = "minilm-l6-v2") -> dict:
    """:func:`add_items` for new items given as raw CatalogEmbeddings ``raw`` (ids not in the catalog)."""
    layout = StoreLayout(store)
    cat, stored_w = load_catalog(layout.require_catalog())
    if not grouped_index_exists(layout.index_dir):
        raise StoreError(f"{layout.root} has no per-group index (made by an older reelsim): "
                         f"run `reelsim lists --store {layout.root}` once, then add")
    gi = GroupedIndex.load(layout.index_dir)
    floor, blocked, settings = load_state(layout)
    fusion = fusion_as_built(fusion, stored_w, settings)
    dup = set(raw.ids) & set(cat.ids)
    if dup:
        raise UsageError(f"{len(dup)} item(s) already in the catalog, e.g. {sorted(dup)[0]!r}")
    fresh = raw.ids
    meta = load_items_meta(layout.items_meta)
    extra = set(raw.vectors) - set(cat.vectors)
    if any(raw.masks[m].any() and stored_w.get(m, 0) > 0 for m in extra):
        raise UsageError(f"new items have modalities {sorted(extra)} that the catalog lacks: "
                         f"re-run `reelsim run` on the whole catalog to rebuild")
    uq, mq = normalise_queries(cat, {m: v for m, v in raw.vectors.items() if m in cat.vectors})
    n0, b = cat.n, len(fresh)
    cat = CatalogEmbeddings(cat.ids + fresh, {m: np.concatenate([cat.vectors[m], uq[m]]) for m in cat.vectors},
                            {m: np.concatenate([cat.masks[m], mq[m]]) for m in cat.vectors},
                            cat.means, cat.projections)
    w = check_weights(fusion.weights)
    new_rows = np.arange(n0, n0 + b)
    codes = signature_codes({m: cat.masks[m][new_rows] for m in gi.active}, gi.active)
    d = sum(cat.vectors[m].shape[1] for m in gi.active)
    xb = fuse_parts({m: cat.vectors[m][new_rows] for m in gi.active}, w, gi.active)
    for c in np.unique(codes):
        if c:
            gi.add(int(c), xb[codes == c], d)
    new_blocked = blocked_rows_of(layout.root, fresh, fusion, text_model, raw)
    blocked = np.concatenate([blocked, np.zeros(b, bool) if new_blocked is None else new_blocked])
    affected = rows_entered(cat, w, gi.active, new_rows, floor, blocked)
    rows = np.concatenate([new_rows, affected])
    hygiene = Hygiene(fusion.dedup, fusion.mmr)
    part = knn_graph(cat, gi, w, fusion.k, rows=rows, oversample=fusion.oversample, batch_size=fusion.knn_batch,
                     hygiene=hygiene, blocked=blocked, progress=progress)
    old = read_lists(layout.list_file("parquet"), cat.ids, fusion.k, gi.active)
    old.floor = np.concatenate([floor, np.full(b, -np.inf)])
    for name in ("I", "S", "floor"):
        getattr(old, name)[rows] = getattr(part, name)
    for m in old.cos:
        old.cos[m][rows] = part.cos[m]
    save_catalog(cat, stored_w, layout.catalog)
    gi.save(layout.index_dir)
    write_lists(cat.ids, old, layout.lists_dir, list_formats(fusion))
    save_state(layout, gi, old.floor, blocked, fusion)
    meta.update(new_meta)
    write_text_atomic(layout.items_meta, json.dumps(meta, ensure_ascii=False))
    return {"added": b, "skipped": 0, "updated_lists": int(affected.size), "items": cat.n,
            "new_neighbors": {cat.ids[r]: int((part.I[i] >= 0).sum()) for i, r in enumerate(new_rows)}}


def fusion_as_built(fusion: FusionConfig, stored_w: dict, settings: dict) -> FusionConfig:
    """The list settings the store was built with (k, oversample, hygiene, blocklist) and its weights."""
    keep = {"k": settings["k"], "oversample": settings["oversample"], "dedup": settings["dedup"],
            "mmr": settings["mmr"], "blocklist": tuple(settings["blocklist"]),
            "blocklist_threshold": settings["blocklist_threshold"]}
    return dataclasses.replace(fusion, weights=stored_w, **keep)


def rows_entered(cat: CatalogEmbeddings, w: dict, active, new_rows: np.ndarray, floor: np.ndarray,
                 blocked: np.ndarray, block: int = 65536) -> np.ndarray:
    """Existing rows (int64) whose list a new row enters: exact score >= the row's floor.

    One blocked pass over the catalog's per-modality vectors (N x B scores).
    """
    n0 = new_rows[0] if new_rows.size else cat.n
    hit = np.zeros(n0, bool)
    live = ~blocked[new_rows]
    if not live.any():
        return np.zeros(0, np.int64)
    q = new_rows[live]
    for i0 in range(0, n0, block):
        r = slice(i0, min(n0, i0 + block))
        terms = ((m, cat.vectors[m][r] @ cat.vectors[m][q].T, cat.masks[m][r][:, None] & cat.masks[m][q][None, :])
                 for m in active)
        S = shared_score(terms, w)
        hit[r] = ((S > -np.inf) & (S >= floor[r][:, None])).any(axis=1)
    return np.flatnonzero(hit).astype(np.int64)
