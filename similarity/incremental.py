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
from reelsim.reporting import Progress
from reelsim.similarity.catalog import CatalogEmbeddings, append_to_catalog, load_catalog, load_items_meta
from reelsim.similarity.copies import add_to_copy_index, copy_pairs
from reelsim.similarity.fusion import fuse_parts, normalise_queries, signature_codes
from reelsim.similarity.grouped import GroupedIndex, read_manifest
from reelsim.similarity.grouped import exists as grouped_index_exists
from reelsim.similarity.hygiene import Hygiene
from reelsim.similarity.knn import knn_graph
from reelsim.similarity.rebuild import (
    blocked_rows_of,
    catalog_from_shards,
    content_set,
    list_formats,
    load_state,
    new_stamp,
    publish_content_lists,
)
from reelsim.similarity.search import exact_scores
from reelsim.storage.atomic import write_text_atomic
from reelsim.storage.catalog import read_catalog, read_catalog_ids
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lists import NeighborLists, check_parquet, read_lists, remove_other_formats, write_lists
from reelsim.storage.session import writing


def check_can_add(store: Path) -> None:
    """Before any item is analysed, quickly: the store's catalog, items.json, index manifest, list state and
    lists are there and read (headers only where a file is large).

    Raises
    ------
    StoreError
        Something ``reelsim add`` needs is missing or damaged (the message names it).
    """
    layout = StoreLayout(store)
    read_catalog(layout.require_catalog(), header=True)
    load_items_meta(layout.items_meta)
    if not grouped_index_exists(layout.index_dir):
        raise StoreError(f"{layout.root} has no per-group index (made by an older reelsim): "
                         f"run `reelsim lists --store {layout.root}` once, then add")
    read_manifest(layout.index_dir)
    load_state(layout)
    check_parquet(layout.list_file("parquet"))


def add_items(store: Path, new_ids: list[str], fusion: FusionConfig, *, progress: Progress | None = None,
              text_model: str | None = None) -> dict:
    """Add analysed items (their shards exist) to the catalog, the index and the lists.

    Items already in the catalog are skipped. Returns a summary: ``added``,
    ``skipped``, ``updated_lists`` (existing lists the new items entered),
    ``items`` (catalog size after) and ``new_neighbors`` (per new item).
    """
    layout = StoreLayout(store)
    with writing(layout.root, "add"):
        known = set(read_catalog_ids(layout.require_catalog()))
        fresh = [i for i in dict.fromkeys(new_ids) if i not in known]
        if not fresh:
            return {"added": 0, "skipped": len(new_ids), "updated_lists": 0, "items": len(known)}
        raw, new_meta = catalog_from_shards(layout.root, fresh)
        out = add_vectors(layout.root, raw, new_meta, fusion, progress=progress, text_model=text_model)
    out["skipped"] = len(new_ids) - out["added"]
    return out


def add_vectors(store: Path, raw: CatalogEmbeddings, new_meta: dict, fusion: FusionConfig, *,
                progress: Progress | None = None, text_model: str | None = None) -> dict:
    """:func:`add_items` for new items given as raw CatalogEmbeddings ``raw`` (ids not in the catalog).

    One version of the store: the catalog's new rows, the index, the list files
    and the content list set are committed together (a write session).
    """
    layout = StoreLayout(store)
    with writing(layout.root, "add") as session:
        return _add_vectors(session, layout, raw, new_meta, fusion, progress, text_model)


def _add_vectors(session, layout: StoreLayout, raw: CatalogEmbeddings, new_meta: dict, fusion: FusionConfig,
                 progress: Progress | None, text_model: str | None) -> dict:
    head, stored_w = load_catalog(layout.require_catalog(), header=True)
    if not grouped_index_exists(layout.index_dir):
        raise StoreError(f"{layout.root} has no per-group index (made by an older reelsim): "
                         f"run `reelsim lists --store {layout.root}` once, then add")
    gi = GroupedIndex.load(layout.index_dir)
    floor, blocked, settings = load_state(layout)
    fusion = fusion_as_built(fusion, stored_w, settings)
    fresh = raw.ids
    meta = load_items_meta(layout.items_meta)
    extra = set(raw.vectors) - set(head.vectors)
    if any(raw.masks[m].any() and stored_w.get(m, 0) > 0 for m in extra):
        raise UsageError(f"new items have modalities {sorted(extra)} that the catalog lacks: "
                         f"re-run `reelsim run` on the whole catalog to rebuild")
    uq, mq = normalise_queries(head, {m: v for m, v in raw.vectors.items() if m in head.vectors})
    added = CatalogEmbeddings(fresh, uq, mq, head.means, head.projections)
    try:
        cat, _ = load_catalog(layout.catalog, add=added)
    except StoreError as e:  # an id already in the catalog (the catalog's own check)
        raise UsageError(f"cannot add: {e}") from None
    n0, b = cat.n - len(fresh), len(fresh)
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
    affected = rows_entered(cat, w, gi.active, new_rows, floor, blocked, gi)
    rows = np.concatenate([new_rows, affected])
    add_to_copy_index(layout, fresh, cat.ids)
    hygiene = Hygiene(fusion.dedup, fusion.mmr, copy_pairs(layout.root, cat.ids) if fusion.dedup is not None else None)
    part = knn_graph(cat, gi, w, fusion.k, rows=rows, oversample=fusion.oversample, batch_size=fusion.knn_batch,
                     hygiene=hygiene, blocked=blocked, progress=progress)
    previous = content_set(layout, session.version)
    old = previous.as_lists() if previous is not None else None
    if old is None or old.I.shape != (n0, fusion.k) or set(old.cos) != set(gi.active):  # a store made before
        old = read_lists(layout.list_file("parquet"), cat.ids[:n0], fusion.k, gi.active)
    old = extended(old, b)
    old.floor = np.concatenate([floor, np.full(b, -np.inf)])
    for name in ("I", "S", "floor"):
        getattr(old, name)[rows] = getattr(part, name)
    for m in old.cos:
        old.cos[m][rows] = part.cos[m]
    append_to_catalog(layout.catalog, added)
    gi.save(layout.index_dir)
    write_lists(cat.ids, old, layout.lists_dir, list_formats(fusion))
    remove_other_formats(layout.lists_dir, list_formats(fusion))
    session.note({"catalog": {"stamp": new_stamp(), "items": cat.n}})
    publish_content_lists(layout, cat.ids, gi, fusion, blocked, lists=old, previous=previous)
    meta.update(new_meta)
    write_text_atomic(layout.items_meta, json.dumps(meta, ensure_ascii=False))
    return {"added": b, "skipped": 0, "updated_lists": int(affected.size), "items": cat.n,
            "new_neighbors": {cat.ids[r]: int((part.I[i] >= 0).sum()) for i, r in enumerate(new_rows)}}


def extended(lists: NeighborLists, b: int) -> NeighborLists:
    """``lists`` of rows 0..n-1 with ``b`` empty rows appended (the new items' rows, filled next)."""
    n, k = lists.I.shape
    return NeighborLists(np.arange(n + b, dtype=np.int64), np.concatenate([lists.I, np.full((b, k), -1)]),
                         np.concatenate([lists.S, np.full((b, k), -np.inf)]),
                         {m: np.concatenate([c, np.full((b, k), np.nan)]) for m, c in lists.cos.items()},
                         np.concatenate([lists.floor, np.full(b, -np.inf)]))


def fusion_as_built(fusion: FusionConfig, stored_w: dict, settings: dict) -> FusionConfig:
    """The list settings the store was built with (k, oversample, hygiene, blocklist) and its weights."""
    keep = {"k": settings["k"], "oversample": settings["oversample"], "dedup": settings["dedup"],
            "mmr": settings["mmr"], "blocklist": tuple(settings["blocklist"]),
            "blocklist_threshold": settings["blocklist_threshold"],
            **({"lists_formats": tuple(settings["formats"])} if settings.get("formats") else {})}
    return dataclasses.replace(fusion, weights=stored_w, **keep)


#: Candidates per new item that an approximate group's index proposes as rows whose list it may enter.
REVERSE_CANDIDATES = 256
#: A pair whose float32 fused score is this close below a row's floor is still checked exactly.
_MARGIN = 1e-4


def rows_entered(cat: CatalogEmbeddings, w: dict, active, new_rows: np.ndarray, floor: np.ndarray,
                 blocked: np.ndarray, index: GroupedIndex | None = None, block: int = 16384) -> np.ndarray:
    """Existing rows (int64, sorted) whose list a new row enters: exact score >= the row's floor.

    Candidate pairs (existing row, new row) come, per modality group of the
    existing rows, from a blocked float32 scan of the group's fused vectors
    against the new ones (exact groups, or without ``index``: every pair
    whose score comes within :data:`_MARGIN` of the row's floor), or from
    the group's approximate index (the :data:`REVERSE_CANDIDATES` best rows
    of each new item: like any approximate search it can miss one). Each
    candidate pair is then scored exactly, by the same function as the lists
    (:func:`~reelsim.similarity.search.exact_scores`), so the decision
    ``score >= floor`` is the one a full rebuild makes.

    Parameters
    ----------
    cat : the catalog with the new rows appended (normalised).
    w, active : weights and fused modalities.
    new_rows : int64 (B,), the appended rows (after every existing row).
    floor : float64 (n0,), each existing row's floor (-inf: its list was not full).
    blocked : bool (N,), rows never listed.
    index : the grouped index (new rows already added), or None to scan every group.
    block : existing rows per float32 block of the scan.
    """
    n0 = int(new_rows[0]) if new_rows.size else cat.n
    q = new_rows[~blocked[new_rows]]
    if not q.size:
        return np.zeros(0, np.int64)
    codes = signature_codes(cat.masks, active)
    wsum = np.array([sum(w[m] for i, m in enumerate(active) if c >> i & 1) for c in range(2 ** len(active))])
    yq = fuse_parts({m: cat.vectors[m][q] for m in active}, w, active)
    xs, ys = [], []
    for c in np.unique(codes[:n0]):
        if not c:
            continue
        den = wsum[c & codes[q]].astype(np.float32)  # shared weight with each new row
        members = np.flatnonzero(codes == c)
        plan = index.plans.get(int(c)) if index is not None else None
        if plan is not None and not plan.exact:
            _, J = index.search_group(int(c), yq, REVERSE_CANDIDATES)
            x = np.where(J >= 0, members[np.maximum(J, 0)], n0)
            qi = np.broadcast_to(np.arange(q.size)[:, None], x.shape)
            keep = (x < n0) & (den[qi] > 0)
            xs.append(x[keep])
            ys.append(qi[keep])
            continue
        old = members[members < n0]
        for i0 in range(0, old.size, block):
            r = old[i0:i0 + block]
            S = fuse_parts({m: cat.vectors[m][r] for m in active}, w, active) @ yq.T  # (b, B) numerators
            S = np.divide(S, den, out=np.full(S.shape, -np.inf, np.float32), where=den > 0)
            i, j = np.nonzero(S >= (floor[r] - _MARGIN)[:, None])
            xs.append(r[i])
            ys.append(j)
    if not xs:
        return np.zeros(0, np.int64)
    x, y = np.concatenate(xs), np.concatenate(ys)  # existing rows, positions in q
    order = np.lexsort((x, y))
    x, y = x[order], y[order]
    starts = np.searchsorted(y, np.arange(q.size + 1))
    hit = np.zeros(x.size, bool)
    # scored from the new rows' side, a (new rows, candidates) matrix at a time: the inner product is the
    # same number either way round (FAISS sums the same products in the same order), and nothing is gathered
    for j0 in range(0, q.size, 256):
        j1 = min(q.size, j0 + 256)
        width = int(np.diff(starts[j0:j1 + 1]).max(initial=0))
        for c0 in range(0, width, 4096):
            pos = starts[j0:j1, None] + c0 + np.arange(min(4096, width - c0))
            valid = pos < starts[j0 + 1:j1 + 1, None]
            I = np.where(valid, x[np.minimum(pos, x.size - 1)], 0)
            rows = q[j0:j1]
            S, _, _ = exact_scores(cat, w, active, {m: cat.vectors[m][rows] for m in active},
                                   {m: cat.masks[m][rows] for m in active}, I, valid)
            ok = valid & (S > -np.inf) & (S >= floor[I])
            hit[pos[ok]] = True
    return np.unique(x[hit]).astype(np.int64)
