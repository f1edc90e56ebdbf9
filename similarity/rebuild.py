"""The lists of a whole store: shards -> catalog -> indexes -> every item's top-k list.

Two entry points:

- :func:`build_lists` (``reelsim run``): read every item's embeddings from
  its shard, normalise them into the catalog, then :func:`index_and_lists`;
- :func:`index_and_lists` (``reelsim lists``): choose and build the indexes of
  the stored catalog, run the kNN-graph job (:mod:`reelsim.similarity.knn`)
  and write the list files. When an unfinished job over the same catalog,
  index and settings left a checkpoint, the saved index is reused and finished
  batches are skipped, so a killed job resumes and gives the same lists.

What it writes, where: :class:`reelsim.storage.layout.StoreLayout` (catalog,
items.json, index manifest and files, lists-state.npz, list files,
checkpoint). New items are added without a rebuild by
:mod:`reelsim.similarity.incremental`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from reelsim.config import MODALITIES, FusionConfig, check_weights
from reelsim.errors import StoreError, UsageError
from reelsim.extractors.registry import load
from reelsim.similarity.catalog import CatalogEmbeddings, load_catalog, save_catalog
from reelsim.similarity.fusion import normalise
from reelsim.similarity.blocked import DeviceGroups, lists_device
from reelsim.similarity.grouped import GroupedIndex, group_vectors
from reelsim.similarity.grouped import exists as grouped_index_exists
from reelsim.similarity.hygiene import Hygiene, blocked_rows
from reelsim.similarity.knn import Checkpoint, knn_graph
from reelsim.storage.atomic import atomic_path, write_text_atomic
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lists import NeighborLists, write_list_arrays, write_lists
from reelsim.storage.shards import read_item_vectors


#: On a GPU, modality groups below this many items are searched exactly (blocked bf16 top-k, re-scored in
#: fp32); their FAISS index is then a Flat one. 10^7 x 10^7 x 256 multiply-adds take minutes on an H200.
GPU_EXACT_BELOW = 10**7


def catalog_from_shards(store: Path, ids: list[str]) -> tuple[CatalogEmbeddings, dict]:
    """(raw CatalogEmbeddings of ``ids``' item vectors, {id: {kind, title}}), read from their shards."""
    layout = StoreLayout(store)
    vecs: dict[str, list] = {m: [] for m in MODALITIES}
    meta = {}
    for item_id in ids:
        got_id, attrs, item_vecs = read_item_vectors(layout.shard(item_id))
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


def catalog_fingerprint(cat: CatalogEmbeddings) -> str:
    """sha256 (16 hex) of a catalog's ids, vectors, masks, means and projections."""
    h = hashlib.sha256("\x00".join(cat.ids).encode("utf-8"))
    for m in cat.vectors:
        h.update(m.encode())
        for a in (cat.vectors[m], cat.masks[m], cat.means.get(m), cat.projections.get(m)):
            if a is not None:
                h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()[:16]


def say(progress: bool, text: str) -> None:
    """One progress line on stderr (when ``progress``)."""
    if progress:
        print(text, file=sys.stderr)


def build_lists(store: Path, ids: list[str], fusion: FusionConfig, *, progress: bool = False,
                text_model: str = "minilm-l6-v2") -> dict:
    """Fuse, index and write every item's top-k list.  Returns a small summary."""
    layout = StoreLayout(store)
    cat, meta = catalog_from_shards(layout.root, ids)
    cat_norm = normalise(cat, pca_dim=fusion.pca_dim, whiten=fusion.whiten)
    layout.index_dir.mkdir(exist_ok=True)
    save_catalog(cat_norm, fusion.weights, layout.catalog)
    write_text_atomic(layout.items_meta, json.dumps(meta, ensure_ascii=False))
    out = index_and_lists(layout.root, fusion, cat_norm=cat_norm, progress=progress, text_model=text_model, raw=cat)
    out["modalities"] = {m: int(cat.masks[m].sum()) for m in cat.masks}
    return out


def index_request(fusion: FusionConfig) -> dict:
    """The settings an index build depends on (besides the catalog)."""
    return {"index": fusion.index, "memory_budget_gb": fusion.memory_budget_gb,
            "weights": check_weights(fusion.weights)}


def job_fingerprint(gi: GroupedIndex, n: int, fusion: FusionConfig) -> dict:
    """Everything a kNN job's lists depend on; a checkpoint is reused only when it matches."""
    return {"build_id": gi.build_id, "ntotal": gi.ntotal, "n": n, "k": fusion.k, "oversample": fusion.oversample,
            "batch": fusion.knn_batch, "dedup": fusion.dedup, "mmr": fusion.mmr,
            "blocklist": list(fusion.blocklist), "blocklist_threshold": fusion.blocklist_threshold}


def _resumable_index(layout: StoreLayout, cat_sha: str, fusion: FusionConfig, n: int) -> GroupedIndex | None:
    """The saved index when an unfinished kNN job over it, with these settings, left a checkpoint."""
    if not (Checkpoint(layout.knn_checkpoint, {}).manifest.is_file() and grouped_index_exists(layout.index_dir)):
        return None
    gi = GroupedIndex.load(layout.index_dir)
    if gi.extra != {"catalog": cat_sha, "request": index_request(fusion)}:
        return None
    return gi if Checkpoint(layout.knn_checkpoint, job_fingerprint(gi, n, fusion)).matches() else None


def index_and_lists(store: Path, fusion: FusionConfig, *, cat_norm: CatalogEmbeddings | None = None,
                    progress: bool = False, text_model: str = "minilm-l6-v2",
                    raw: CatalogEmbeddings | None = None) -> dict:
    """Build the index of the store's catalog and write every item's list (``reelsim lists``).

    Parameters
    ----------
    store : the store folder
    fusion : weights, k, index choice, hygiene, list formats
    cat_norm : the normalised catalog (default: read from the store)
    text_model : the text model that embeds blocklist phrases
    raw : the raw catalog of the same items, when at hand (its text vectors
        serve the blocklist instead of re-reading every shard)

    Returns
    -------
    dict: items, k, rows, resumed, index (per group), blocked, and seconds per phase.
    """
    layout = StoreLayout(store)
    if cat_norm is None:
        cat_norm, _ = load_catalog(layout.require_catalog())
    hygiene = Hygiene(fusion.dedup, fusion.mmr)
    t0 = time.perf_counter()
    cat_sha = catalog_fingerprint(cat_norm)
    device = lists_device(fusion.device)
    gi = _resumable_index(layout, cat_sha, fusion, cat_norm.n)
    resumed = gi is not None
    if gi is None:
        gi = GroupedIndex.build(cat_norm, fusion.weights, override=fusion.index,
                                memory_budget_bytes=int(fusion.memory_budget_gb * 2**30),
                                exact_below=None if device == "cpu" else GPU_EXACT_BELOW,
                                progress=(lambda s: say(progress, s)))
        gi.extra = {"catalog": cat_sha, "request": index_request(fusion)}
        gi.save(layout.index_dir)
    t1 = time.perf_counter()
    blocked = blocked_rows_of(layout.root, cat_norm.ids, fusion, text_model, raw)
    ckpt = Checkpoint(layout.knn_checkpoint, job_fingerprint(gi, cat_norm.n, fusion))
    searcher = None
    if device != "cpu":
        w = check_weights(fusion.weights)
        searcher = DeviceGroups(gi, lambda c: group_vectors(cat_norm, w, gi.active, c), device)
        say(progress, f"kNN search of the exact groups on {device} ({searcher.kernel})")
    lists = knn_graph(cat_norm, gi, fusion.weights, fusion.k, oversample=fusion.oversample,
                      batch_size=fusion.knn_batch, hygiene=hygiene, blocked=blocked, checkpoint=ckpt,
                      progress=progress, searcher=searcher)
    t2 = time.perf_counter()
    layout.lists_dir.mkdir(exist_ok=True)
    write_lists(cat_norm.ids, lists, layout.lists_dir, list_formats(fusion))
    save_state(layout, gi, lists.floor, blocked, fusion, lists)
    ckpt.clear()
    return {"items": cat_norm.n, "k": fusion.k, "rows": int((lists.I >= 0).sum()), "resumed": resumed,
            "device": device,
            "index": gi.describe()["groups"], "blocked": int(blocked.sum()) if blocked is not None else 0,
            "index_s": round(t1 - t0, 3), "knn_s": round(t2 - t1, 3), "write_s": round(time.perf_counter() - t2, 3)}


def list_formats(fusion: FusionConfig) -> list[str]:
    """Formats to write: Parquet always (``reelsim add`` and ``export`` read it), then the others asked for."""
    return ["parquet"] + [f for f in dict.fromkeys(fusion.lists_formats) if f != "parquet"]


def save_state(layout: StoreLayout, gi: GroupedIndex, floor: np.ndarray, blocked: np.ndarray | None,
               fusion: FusionConfig, lists: NeighborLists | None = None) -> None:
    """Write ``lists-state.npz``: each row's floor (float64 (N,)), the blocklist mask and the list settings.

    With ``lists`` (every row's list, in catalog order), also their arrays
    (:func:`reelsim.storage.lists.write_list_arrays`), which ``reelsim add``
    reads instead of the Parquet file.
    """
    settings = job_fingerprint(gi, floor.size, fusion) | {"build_id": ""}
    if lists is not None:
        settings["lists_arrays"] = write_list_arrays(layout.list_arrays, lists)
    with atomic_path(layout.lists_state) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, floor=floor, blocked=np.zeros(floor.size, bool) if blocked is None else blocked,
                     settings=np.array(json.dumps(settings)))


def load_state(layout: StoreLayout) -> tuple[np.ndarray, np.ndarray, dict]:
    """(floor, blocked, settings) written by :func:`save_state`."""
    if not layout.lists_state.is_file():
        raise StoreError(f"no list state in {layout.root}: run `reelsim lists --store {layout.root}` once first")
    with np.load(layout.lists_state) as z:
        return z["floor"], z["blocked"], json.loads(str(z["settings"]))


def blocked_rows_of(store: Path, ids: list[str], fusion: FusionConfig, text_model: str,
                    raw: CatalogEmbeddings | None = None) -> np.ndarray | None:
    """Blocklist mask over ``ids`` (None when there is no blocklist).

    Items' raw text embeddings come from ``raw`` (raw CatalogEmbeddings of
    ``ids``) when given, else from their shards.
    """
    if not fusion.blocklist:
        return None
    model = load("text", text_model, device="cpu")
    phrases = model.extract(list(fusion.blocklist))
    if raw is not None:
        if "text" not in raw.vectors or raw.vectors["text"].shape[1] != phrases.shape[1]:
            return np.zeros(len(ids), bool)
        return blocked_rows(raw.vectors["text"], raw.masks["text"], phrases, fusion.blocklist_threshold)
    layout = StoreLayout(store)
    text = np.zeros((len(ids), phrases.shape[1]), np.float32)
    has = np.zeros(len(ids), bool)
    for i, item_id in enumerate(ids):
        path = layout.shard(item_id)
        if not path.is_file():
            raise UsageError(f"--blocklist needs each item's text embedding from its shard; none for {item_id!r}")
        _, _, vecs = read_item_vectors(path)
        if "text" in vecs and vecs["text"].shape == (phrases.shape[1],):
            text[i], has[i] = vecs["text"], True
    return blocked_rows(text, has, phrases, fusion.blocklist_threshold)
