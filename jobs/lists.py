"""The lists stage: item embeddings from the shards -> fused FAISS index -> lists.

Writes, under the store::

    index/catalog.h5     normalised per-modality item embeddings + weights (+ PCA)
    index/index.json, index/group-*.faiss
                         one FAISS index per modality signature (similarity/grouped.py)
    index/lists-state.npz  per item: the score a new item must reach to enter its
                         list, and the blocklist mask (used by ``reelsim add``)
    index/items.json     id -> {kind, title}, for readable tables
    lists/neighbors.parquet, lists/neighbors.jsonl (, lists/neighbors.h5)
                         one row per (item, neighbor)
    lists/.knn-checkpoint/  finished batches of an unfinished kNN job

Three entry points: :func:`build_lists` (``reelsim run``: shards -> catalog
-> index -> lists), :func:`index_and_lists` (``reelsim lists``: catalog ->
index -> lists, resuming a killed job) and :func:`add_items`
(``reelsim add``: new items into the catalog, the index and the lists they enter).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from reelsim.errors import StoreError, UnknownItemError, UsageError
from reelsim.pipeline.config import MODALITIES, FusionConfig
from reelsim.storage.atomic import atomic_path, write_text_atomic
from reelsim.storage.shards import read_item_vectors, shard_path

CHECKPOINT = Path("lists") / ".knn-checkpoint"


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


def catalog_fingerprint(cat) -> str:
    """sha256 (16 hex) of a catalog's ids, vectors, masks, means and projections."""
    h = hashlib.sha256("\x00".join(cat.ids).encode("utf-8"))
    for m in cat.vectors:
        h.update(m.encode())
        for a in (cat.vectors[m], cat.masks[m], cat.means.get(m), cat.projections.get(m)):
            if a is not None:
                h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()[:16]


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr)


def build_lists(store: Path, ids: list[str], fusion: FusionConfig, *, progress: bool = False,
                text_model: str = "minilm-l6-v2") -> dict:
    """Fuse, index and write every item's top-k list.  Returns a small summary."""
    from reelsim import similarity as sim

    store = Path(store)
    cat, meta = catalog_from_shards(store, ids)
    cat_norm = sim.normalise(cat, pca_dim=fusion.pca_dim, whiten=fusion.whiten)
    (store / "index").mkdir(exist_ok=True)
    sim.save_catalog(cat_norm, fusion.weights, store / "index" / "catalog.h5")
    write_text_atomic(store / "index" / "items.json", json.dumps(meta, ensure_ascii=False))
    out = index_and_lists(store, fusion, cat_norm=cat_norm, progress=progress, text_model=text_model, raw=cat)
    out["modalities"] = {m: int(cat.masks[m].sum()) for m in cat.masks}
    return out


def _request(fusion: FusionConfig) -> dict:
    """The settings an index build depends on (besides the catalog)."""
    from reelsim.similarity import check_weights

    return {"index": fusion.index, "memory_budget_gb": fusion.memory_budget_gb,
            "weights": check_weights(fusion.weights)}


def _fingerprint(gi, n: int, fusion: FusionConfig) -> dict:
    """Everything a kNN job's lists depend on; a checkpoint is reused only when it matches."""
    return {"build_id": gi.build_id, "ntotal": gi.ntotal, "n": n, "k": fusion.k, "oversample": fusion.oversample,
            "batch": fusion.knn_batch, "dedup": fusion.dedup, "mmr": fusion.mmr,
            "blocklist": list(fusion.blocklist), "blocklist_threshold": fusion.blocklist_threshold}


def _index_dir(store: Path) -> Path:
    return Path(store) / "index"


def _resumable_index(store: Path, cat_sha: str, fusion: FusionConfig, n: int):
    """The saved index when an unfinished kNN job over it, with these settings, left a checkpoint."""
    from reelsim.similarity import grouped
    from reelsim.similarity.knn import Checkpoint

    manifest = store / CHECKPOINT / "manifest.json"
    if not (manifest.is_file() and grouped.exists(_index_dir(store))):
        return None
    gi = grouped.GroupedIndex.load(_index_dir(store))
    if gi.extra != {"catalog": cat_sha, "request": _request(fusion)}:
        return None
    ckpt = Checkpoint(store / CHECKPOINT, _fingerprint(gi, n, fusion))
    try:
        same = json.loads(manifest.read_text(encoding="utf-8")) == ckpt.fingerprint
    except (OSError, json.JSONDecodeError):
        same = False
    return gi if same else None


def index_and_lists(store: Path, fusion: FusionConfig, *, cat_norm=None, progress: bool = False,
                    text_model: str = "minilm-l6-v2", raw=None) -> dict:
    """Build the index of the store's catalog and write every item's list (``reelsim lists``).

    When ``lists/.knn-checkpoint/`` holds an unfinished job for this catalog,
    index and settings, the saved index is reused and finished batches are
    skipped, so a killed job resumes and gives the same lists.
    """
    import time

    from reelsim import similarity as sim
    from reelsim.similarity.grouped import GroupedIndex
    from reelsim.similarity.hygiene import Hygiene
    from reelsim.similarity.knn import Checkpoint, knn_graph

    store = Path(store)
    if cat_norm is None:
        cat_norm, _ = sim.load_catalog(_catalog_path(store))
    hygiene = Hygiene(fusion.dedup, fusion.mmr)
    t0 = time.perf_counter()
    cat_sha = catalog_fingerprint(cat_norm)
    gi = _resumable_index(store, cat_sha, fusion, cat_norm.n)
    resumed = gi is not None
    if gi is None:
        gi = GroupedIndex.build(cat_norm, fusion.weights, override=fusion.index,
                                memory_budget_bytes=int(fusion.memory_budget_gb * 2**30),
                                progress=(lambda s: _say(progress, s)))
        gi.extra = {"catalog": cat_sha, "request": _request(fusion)}
        gi.save(_index_dir(store))
    t1 = time.perf_counter()
    blocked = blocked_rows_of(store, cat_norm.ids, fusion, text_model, raw)
    ckpt = Checkpoint(store / CHECKPOINT, _fingerprint(gi, cat_norm.n, fusion))
    lists = knn_graph(cat_norm, gi, fusion.weights, fusion.k, oversample=fusion.oversample,
                      batch_size=fusion.knn_batch, hygiene=hygiene, blocked=blocked, checkpoint=ckpt,
                      progress=progress)
    t2 = time.perf_counter()
    (store / "lists").mkdir(exist_ok=True)
    sim.write_lists(cat_norm.ids, lists, store / "lists", list_formats(fusion))
    _save_state(store, gi, lists.floor, blocked, fusion)
    ckpt.clear()
    return {"items": cat_norm.n, "k": fusion.k, "rows": int((lists.I >= 0).sum()), "resumed": resumed,
            "index": gi.describe()["groups"], "blocked": int(blocked.sum()) if blocked is not None else 0,
            "index_s": round(t1 - t0, 3), "knn_s": round(t2 - t1, 3), "write_s": round(time.perf_counter() - t2, 3)}


def list_formats(fusion: FusionConfig) -> list[str]:
    """Formats to write: Parquet always (``reelsim add`` and ``export`` read it), then the others asked for."""
    return ["parquet"] + [f for f in dict.fromkeys(fusion.lists_formats) if f != "parquet"]


def _catalog_path(store: Path) -> Path:
    path = Path(store) / "index" / "catalog.h5"
    if not path.is_file():
        raise StoreError(f"no index in {store}: run `reelsim run INPUT --store {store}` first")
    return path


def _save_state(store: Path, gi, floor: np.ndarray, blocked, fusion: FusionConfig) -> None:
    with atomic_path(_index_dir(store) / "lists-state.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, floor=floor, blocked=np.zeros(floor.size, bool) if blocked is None else blocked,
                     settings=np.array(json.dumps(_fingerprint(gi, floor.size, fusion) | {"build_id": ""})))


def _load_state(store: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    path = _index_dir(store) / "lists-state.npz"
    if not path.is_file():
        raise StoreError(f"no list state in {store}: run `reelsim lists --store {store}` once first")
    with np.load(path) as z:
        return z["floor"], z["blocked"], json.loads(str(z["settings"]))


def blocked_rows_of(store: Path, ids: list[str], fusion: FusionConfig, text_model: str,
                    raw=None) -> np.ndarray | None:
    """Blocklist mask over ``ids`` (None when there is no blocklist).

    Items' raw text embeddings come from ``raw`` (raw CatalogEmbeddings of
    ``ids``) when given, else from their shards.
    """
    if not fusion.blocklist:
        return None
    from reelsim.extractors.registry import load
    from reelsim.similarity.hygiene import blocked_rows

    model = load("text", text_model, device="cpu")
    phrases = model.extract(list(fusion.blocklist))
    if raw is not None:
        if "text" not in raw.vectors or raw.vectors["text"].shape[1] != phrases.shape[1]:
            return np.zeros(len(ids), bool)
        return blocked_rows(raw.vectors["text"], raw.masks["text"], phrases, fusion.blocklist_threshold)
    text = np.zeros((len(ids), phrases.shape[1]), np.float32)
    has = np.zeros(len(ids), bool)
    for i, item_id in enumerate(ids):
        path = shard_path(store, item_id)
        if not path.is_file():
            raise UsageError(f"--blocklist needs each item's text embedding from its shard; none for {item_id!r}")
        _, _, vecs = read_item_vectors(path)
        if "text" in vecs and vecs["text"].shape == (phrases.shape[1],):
            text[i], has[i] = vecs["text"], True
    return blocked_rows(text, has, phrases, fusion.blocklist_threshold)


def add_items(store: Path, new_ids: list[str], fusion: FusionConfig, *, progress: bool = False,
              text_model: str = "minilm-l6-v2") -> dict:
    """Add analysed items (their shards exist) to the catalog, the index and the lists, without a rebuild.

    The new items are normalised with the catalog's stored transform (means,
    PCA), appended to the catalog and to their modality group's index; their
    own lists are computed, and so are the lists of existing items whose list
    they enter (an exact scan of the new items against the catalog finds
    them: score >= that item's stored floor). All other lists are kept as they are.
    Items already in the catalog are skipped.
    """
    from reelsim import similarity as sim

    store = Path(store)
    known = set(sim.load_catalog(_catalog_path(store))[0].ids)
    fresh = [i for i in dict.fromkeys(new_ids) if i not in known]
    if not fresh:
        return {"added": 0, "skipped": len(new_ids), "updated_lists": 0, "items": len(known)}
    raw, new_meta = catalog_from_shards(store, fresh)
    out = add_vectors(store, raw, new_meta, fusion, progress=progress, text_model=text_model)
    out["skipped"] = len(new_ids) - out["added"]
    return out


def add_vectors(store: Path, raw, new_meta: dict, fusion: FusionConfig, *, progress: bool = False,
                text_model: str = "minilm-l6-v2") -> dict:
    """:func:`add_items` for new items given as raw CatalogEmbeddings ``raw`` (ids not in the catalog)."""
    from reelsim import similarity as sim
    from reelsim.similarity.fusion import fuse_parts
    from reelsim.similarity.grouped import GroupedIndex, signature_codes
    from reelsim.similarity.hygiene import Hygiene
    from reelsim.similarity.knn import knn_graph

    from reelsim.similarity import grouped

    store = Path(store)
    cat, stored_w = sim.load_catalog(_catalog_path(store))
    if not grouped.exists(_index_dir(store)):
        raise StoreError(f"{store} has no per-group index (made by an older reelsim): "
                         f"run `reelsim lists --store {store}` once, then add")
    gi = GroupedIndex.load(_index_dir(store))
    floor, blocked, settings = _load_state(store)
    fusion = _fusion_as_built(fusion, stored_w, settings)
    dup = set(raw.ids) & set(cat.ids)
    if dup:
        raise UsageError(f"{len(dup)} item(s) already in the catalog, e.g. {sorted(dup)[0]!r}")
    fresh = raw.ids
    meta_path = store / "index" / "items.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    extra = set(raw.vectors) - set(cat.vectors)
    if any(raw.masks[m].any() and stored_w.get(m, 0) > 0 for m in extra):
        raise UsageError(f"new items have modalities {sorted(extra)} that the catalog lacks: "
                         f"re-run `reelsim run` on the whole catalog to rebuild")
    uq, mq = sim.normalise_queries(cat, {m: v for m, v in raw.vectors.items() if m in cat.vectors})
    n0, b = cat.n, len(fresh)
    cat = sim.CatalogEmbeddings(cat.ids + fresh, {m: np.concatenate([cat.vectors[m], uq[m]]) for m in cat.vectors},
                                {m: np.concatenate([cat.masks[m], mq[m]]) for m in cat.vectors},
                                cat.means, cat.projections)
    w = sim.check_weights(fusion.weights)
    new_rows = np.arange(n0, n0 + b)
    codes = signature_codes({m: cat.masks[m][new_rows] for m in gi.active}, gi.active)
    d = sum(cat.vectors[m].shape[1] for m in gi.active)
    xb = fuse_parts({m: cat.vectors[m][new_rows] for m in gi.active}, w, gi.active)
    for c in np.unique(codes):
        if c:
            gi.add(int(c), xb[codes == c], d)
    new_blocked = blocked_rows_of(store, fresh, fusion, text_model, raw)
    blocked = np.concatenate([blocked, np.zeros(b, bool) if new_blocked is None else new_blocked])
    affected = _rows_entered(cat, w, gi.active, new_rows, floor, blocked)
    rows = np.concatenate([new_rows, affected])
    hygiene = Hygiene(fusion.dedup, fusion.mmr)
    part = knn_graph(cat, gi, w, fusion.k, rows=rows, oversample=fusion.oversample, batch_size=fusion.knn_batch,
                     hygiene=hygiene, blocked=blocked, progress=progress)
    old = sim.read_lists(store / "lists" / "neighbors.parquet", cat.ids, fusion.k, gi.active)
    old.floor = np.concatenate([floor, np.full(b, -np.inf)])
    for name in ("I", "S", "floor"):
        getattr(old, name)[rows] = getattr(part, name)
    for m in old.cos:
        old.cos[m][rows] = part.cos[m]
    sim.save_catalog(cat, stored_w, _catalog_path(store))
    gi.save(_index_dir(store))
    sim.write_lists(cat.ids, old, store / "lists", list_formats(fusion))
    _save_state(store, gi, old.floor, blocked, fusion)
    meta.update(new_meta)
    write_text_atomic(meta_path, json.dumps(meta, ensure_ascii=False))
    return {"added": b, "skipped": 0, "updated_lists": int(affected.size), "items": cat.n,
            "new_neighbors": {cat.ids[r]: int((part.I[i] >= 0).sum()) for i, r in enumerate(new_rows)}}


def _fusion_as_built(fusion: FusionConfig, stored_w: dict, settings: dict) -> FusionConfig:
    """The list settings the store was built with (k, oversample, hygiene, blocklist) and its weights."""
    import dataclasses

    keep = {"k": settings["k"], "oversample": settings["oversample"], "dedup": settings["dedup"],
            "mmr": settings["mmr"], "blocklist": tuple(settings["blocklist"]),
            "blocklist_threshold": settings["blocklist_threshold"]}
    return dataclasses.replace(fusion, weights=stored_w, **keep)


def _rows_entered(cat, w: dict, active, new_rows: np.ndarray, floor: np.ndarray, blocked: np.ndarray,
                  block: int = 65536) -> np.ndarray:
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
        num = np.zeros((r.stop - i0, q.size))
        den = np.zeros_like(num)
        for m in active:
            both = cat.masks[m][r][:, None] & cat.masks[m][q][None, :]
            num += w[m] * np.where(both, cat.vectors[m][r] @ cat.vectors[m][q].T, 0.0)
            den += w[m] * both
        S = np.round(np.divide(num, den, out=np.full(num.shape, -np.inf), where=den > 0), 6)
        hit[r] = ((den > 0) & (S >= floor[r][:, None])).any(axis=1)
    return np.flatnonzero(hit).astype(np.int64)


class Lookup:
    """Neighbour queries against a finished store (``reelsim similar``)."""

    def __init__(self, store: Path, weights: dict[str, float] | None = None):
        from reelsim import similarity as sim
        from reelsim.similarity import grouped

        store = Path(store)
        catalog = store / "index" / "catalog.h5"
        if not catalog.is_file():
            raise StoreError(f"no index in {store}: run `reelsim run INPUT --store {store}` first")
        self.cat, stored_weights = sim.load_catalog(catalog)
        self.weights = weights or stored_weights
        if weights:
            self.index = sim.build_index(sim.fuse(self.cat, self.weights))
        elif grouped.exists(store / "index"):
            self.index = grouped.GroupedIndex.load(store / "index")
        else:
            self.index = sim.load_index(store / "index" / "fused.faiss")
        self.meta = json.loads((store / "index" / "items.json").read_text(encoding="utf-8"))

    def neighbors(self, item: str, k: int, oversample: int = 5):
        from reelsim import similarity as sim

        if item not in self.meta:
            raise UnknownItemError(f"unknown item id {item!r}: not in this store's index")
        rows = sim.rows_of(self.cat, [item])
        return sim.search(self.cat, self.index, self.weights, rows, k=k, oversample=oversample)[0]
