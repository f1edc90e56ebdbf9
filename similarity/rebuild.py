"""The lists of a whole store: shards -> catalog -> indexes -> every item's top-k list.

Two entry points:

- :func:`build_lists` (``reelsim run``): read every item's embeddings from
  its shard, normalise them into the catalog, then :func:`index_and_lists`;
- :func:`index_and_lists` (``reelsim lists``, through :func:`relist`, which
  holds the store's lock): choose and build the indexes of
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reelsim.config import MODALITIES, Config, FusionConfig, check_weights
from reelsim.errors import DamagedStoreError, StoreError, UsageError
from reelsim.extractors.device import device_name
from reelsim.extractors.registry import load
from reelsim.similarity.blocked import DeviceGroups
from reelsim.similarity.catalog import CatalogEmbeddings, load_catalog, save_catalog
from reelsim.similarity.copies import build_copy_index, copy_pairs, summary_line
from reelsim.similarity.fusion import normalise
from reelsim.similarity.grouped import GroupedIndex, group_vectors
from reelsim.similarity.grouped import exists as grouped_index_exists
from reelsim.similarity.hygiene import Hygiene, blocked_rows
from reelsim.similarity.knn import Checkpoint, knn_graph
from reelsim.storage.atomic import atomic_path, write_text_atomic
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lists import NeighborLists, ParquetStream, write_list_arrays, write_lists
from reelsim.storage.lock import StoreLock
from reelsim.storage.shards import read_item_vectors

#: On a GPU, modality groups below this many items are searched exactly (blocked bf16 top-k, re-scored in
#: fp32); their FAISS index is then a Flat one. 10^7 x 10^7 x 256 multiply-adds take minutes on an H200.
GPU_EXACT_BELOW = 10**7


def catalog_from_shards(store: Path, ids: list[str]) -> tuple[CatalogEmbeddings, dict]:
    """(raw CatalogEmbeddings of ``ids``' item vectors, {id: {kind, title}}), read from their shards.

    Each modality's (N, d) array is allocated when the first item that has
    it is read and filled row by row, so memory holds the catalog once (not
    a list of N small arrays and then their stacked copy).
    """
    layout = StoreLayout(store)
    n = len(ids)
    vectors: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    meta = {}
    for row, item_id in enumerate(ids):
        got_id, attrs, item_vecs = read_item_vectors(layout.shard(item_id), item_id)
        if got_id != item_id:
            raise StoreError(f"shard for {item_id!r} holds {got_id!r}: the store is inconsistent")
        meta[item_id] = {"kind": str(attrs["kind"]), "title": str(attrs["title"])}
        for m, v in item_vecs.items():
            if m not in MODALITIES:
                continue
            if m not in vectors:
                vectors[m], masks[m] = np.zeros((n, v.shape[0]), np.float32), np.zeros(n, bool)
            if v.shape[0] != vectors[m].shape[1]:
                raise StoreError(f"{m} embeddings of different sizes {sorted({v.shape[0], vectors[m].shape[1]})} "
                                 "in one store: re-run with one model for this modality")
            vectors[m][row], masks[m][row] = v, True
    order = [m for m in MODALITIES if m in vectors]
    return CatalogEmbeddings(list(ids), {m: vectors[m] for m in order}, {m: masks[m] for m in order}), meta


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
    write_text_atomic(layout.items_meta, json.dumps(meta, ensure_ascii=False))
    out = save_and_list(layout.root, cat_norm, fusion, progress=progress, text_model=text_model, raw=cat)
    out["modalities"] = {m: int(cat.masks[m].sum()) for m in cat.masks}
    return out


def relist(store: Path, overrides: dict | None = None, *, progress: bool = False,
           text_model: str = "minilm-l6-v2") -> dict:
    """``reelsim lists``: under the store's lock, rebuild the indexes and every list from the stored catalog.

    ``overrides``: :class:`FusionConfig` fields (None values ignored); the
    weights default to those the catalog was built with.

    Raises
    ------
    StoreLockedError
        Another command holds the store (a run writing it).
    """
    layout = StoreLayout(store)
    with StoreLock(layout.root):
        cat, stored_w = load_catalog(layout.require_catalog())
        fusion = over_stored_weights(stored_w, overrides)
        return index_and_lists(layout.root, fusion, cat_norm=cat, progress=progress, text_model=text_model)


def stored_fusion(store: Path, overrides: dict | None = None) -> FusionConfig:
    """The list settings of a ``reelsim lists`` run: ``overrides`` (None values ignored) over the catalog's weights."""
    _, stored_w = load_catalog(StoreLayout(store).require_catalog(), header=True)
    return over_stored_weights(stored_w, overrides)


def over_stored_weights(stored_w: dict[str, float], overrides: dict | None) -> FusionConfig:
    """:class:`FusionConfig` of ``overrides`` (None values ignored), weights defaulting to the catalog's."""
    return Config().with_overrides(fusion={"weights": stored_w, **(overrides or {})}).fusion


def save_and_list(store: Path, cat_norm: CatalogEmbeddings, fusion: FusionConfig, **kw) -> dict:
    """Save the normalised catalog while the index is built and the lists computed (:func:`index_and_lists`).

    The catalog file is written by a second thread (h5py and FAISS leave
    the GIL to each other); the lists are returned once both are done, so a
    store with lists always has its catalog.
    """
    from concurrent.futures import ThreadPoolExecutor

    layout = StoreLayout(store)
    with ThreadPoolExecutor(1, thread_name_prefix="reelsim-catalog") as pool:
        saving = pool.submit(save_catalog, cat_norm, fusion.weights, layout.catalog)
        out = index_and_lists(layout.root, fusion, cat_norm=cat_norm, **kw)
        saving.result()
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


def _resumable_index(layout: StoreLayout, cat_sha, fusion: FusionConfig, n: int) -> GroupedIndex | None:
    """The saved index when an unfinished kNN job over it, with these settings, left a checkpoint.

    ``cat_sha()`` gives the catalog's fingerprint (called only when there is a checkpoint).
    """
    if not (Checkpoint(layout.knn_checkpoint, {}).manifest.is_file() and grouped_index_exists(layout.index_dir)):
        return None
    try:
        gi = GroupedIndex.load(layout.index_dir)
    except StoreError:  # damaged: built again
        return None
    if gi.extra != {"catalog": cat_sha(), "request": index_request(fusion)}:
        return None
    return gi if Checkpoint(layout.knn_checkpoint, job_fingerprint(gi, n, fusion)).matches() else None


@dataclass
class GraphJob:
    """A kNN-graph job ready to search: the catalog, its index, where and with what.

    Made by :func:`prepare_graph`; searched in one process
    (:func:`index_and_lists`) or block by block on a Dask cluster
    (:mod:`reelsim.jobs.graph`); finished by :func:`finish_lists`.
    """

    layout: StoreLayout
    cat: CatalogEmbeddings
    gi: GroupedIndex
    fusion: FusionConfig
    device: str
    resumed: bool
    blocked: np.ndarray | None
    checkpoint: Checkpoint
    started: float
    index_s: float
    copies: object | None = None

    @property
    def hygiene(self) -> Hygiene:
        return Hygiene(self.fusion.dedup, self.fusion.mmr, self.copies)


def prepare_graph(store: Path, fusion: FusionConfig, *, cat_norm: CatalogEmbeddings | None = None,
                  progress: bool = False, text_model: str = "minilm-l6-v2",
                  raw: CatalogEmbeddings | None = None) -> GraphJob:
    """Choose and build (or, to resume, reload) the index of the store's catalog; the blocklist; the checkpoint.

    Parameters are those of :func:`index_and_lists`.
    """
    layout = StoreLayout(store)
    if cat_norm is None:
        cat_norm, _ = load_catalog(layout.require_catalog())
    from concurrent.futures import ThreadPoolExecutor

    say(progress, summary_line(build_copy_index(layout, cat_norm.ids, progress=(lambda s: say(progress, s)))))
    t0 = time.perf_counter()
    device = device_name(fusion.device)
    with ThreadPoolExecutor(1, thread_name_prefix="reelsim-sha") as pool:
        cat_sha = pool.submit(catalog_fingerprint, cat_norm)  # hashed while FAISS trains, when nothing is resumed
        gi = _resumable_index(layout, cat_sha.result, fusion, cat_norm.n)
        resumed = gi is not None
        if gi is None:
            gi = GroupedIndex.build(cat_norm, fusion.weights, override=fusion.index,
                                    memory_budget_bytes=int(fusion.memory_budget_gb * 2**30),
                                    exact_below=None if device == "cpu" else GPU_EXACT_BELOW,
                                    progress=(lambda s: say(progress, s)))
            gi.extra = {"catalog": cat_sha.result(), "request": index_request(fusion)}
            gi.save(layout.index_dir)
    t1 = time.perf_counter()
    blocked = blocked_rows_of(layout.root, cat_norm.ids, fusion, text_model, raw)
    ckpt = Checkpoint(layout.knn_checkpoint, job_fingerprint(gi, cat_norm.n, fusion))
    copies = copy_pairs(layout.root, cat_norm.ids) if fusion.dedup is not None else None
    return GraphJob(layout, cat_norm, gi, fusion, device, resumed, blocked, ckpt, t0, t1 - t0, copies)


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
    dict: items, k, rows, resumed, device, index (per group), blocked, and seconds per phase.
    """
    job = prepare_graph(store, fusion, cat_norm=cat_norm, progress=progress, text_model=text_model, raw=raw)
    t1 = time.perf_counter()
    searcher = None
    if job.device != "cpu":
        w = check_weights(fusion.weights)
        searcher = DeviceGroups(job.gi, lambda c: group_vectors(job.cat, w, job.gi.active, c), job.device)
        say(progress, f"kNN search of the exact groups on {job.device} ({searcher.kernel})")
    job.layout.lists_dir.mkdir(exist_ok=True)
    with atomic_path(job.layout.list_file("parquet")) as tmp:  # written batch by batch while the next is searched
        stream = ParquetStream(tmp, job.cat.ids)
        try:
            lists = knn_graph(job.cat, job.gi, fusion.weights, fusion.k, oversample=fusion.oversample,
                              batch_size=fusion.knn_batch, hygiene=job.hygiene, blocked=job.blocked,
                              checkpoint=job.checkpoint, progress=progress, searcher=searcher, sink=stream.put)
        finally:
            t2 = time.perf_counter()
            stream.close()
    write_lists(job.cat.ids, lists, job.layout.lists_dir, list_formats(fusion)[1:])
    save_state(job.layout, job.gi, lists.floor, job.blocked, fusion, lists)
    return finish_lists(job, rows=int((lists.I >= 0).sum()), knn_s=t2 - t1, write_s=time.perf_counter() - t2)


def finish_lists(job: GraphJob, *, rows: int, knn_s: float, write_s: float) -> dict:
    """Remove the job's checkpoint (its lists are written); the job's summary."""
    job.checkpoint.clear()
    return {"items": job.cat.n, "k": job.fusion.k, "rows": rows, "resumed": job.resumed, "device": job.device,
            "index": job.gi.describe()["groups"], "blocked": int(job.blocked.sum()) if job.blocked is not None else 0,
            "index_s": round(job.index_s, 3), "knn_s": round(knn_s, 3), "write_s": round(write_s, 3)}


def list_formats(fusion: FusionConfig) -> list[str]:
    """Formats to write: Parquet always (``reelsim add`` and ``export`` read it), then the others asked for."""
    return ["parquet"] + [f for f in dict.fromkeys(fusion.lists_formats) if f != "parquet"]


def save_state(layout: StoreLayout, gi: GroupedIndex, floor: np.ndarray, blocked: np.ndarray | None,
               fusion: FusionConfig, lists: NeighborLists | None = None, arrays_stamp: str | None = None) -> None:
    """Write ``lists-state.npz``: each row's floor (float64 (N,)), the blocklist mask and the list settings.

    With ``lists`` (every row's list, in catalog order), also their arrays
    (:func:`reelsim.storage.lists.write_list_arrays`), which ``reelsim add``
    reads instead of the Parquet file; ``arrays_stamp``: those arrays were
    written already (:func:`reelsim.storage.lists.assemble_parts`) with this stamp.
    """
    settings = job_fingerprint(gi, floor.size, fusion) | {"build_id": ""}
    if lists is not None:
        arrays_stamp = write_list_arrays(layout.list_arrays, lists)
    if arrays_stamp is not None:
        settings["lists_arrays"] = arrays_stamp
    with atomic_path(layout.lists_state) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, floor=floor, blocked=np.zeros(floor.size, bool) if blocked is None else blocked,
                     settings=np.array(json.dumps(settings)))


def load_state(layout: StoreLayout) -> tuple[np.ndarray, np.ndarray, dict]:
    """(floor, blocked, settings) written by :func:`save_state`."""
    if not layout.lists_state.is_file():
        raise StoreError(f"no list state in {layout.root}: run `reelsim lists --store {layout.root}` once first")
    try:
        with np.load(layout.lists_state) as z:
            return z["floor"], z["blocked"], json.loads(str(z["settings"]))
    except Exception as e:  # noqa: BLE001  (np.load: OSError, ValueError, KeyError, zipfile.BadZipFile ...)
        raise DamagedStoreError(layout.lists_state, f"cannot be read ({e.__class__.__name__}: {e})", "lists") from None


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
        _, _, vecs = read_item_vectors(path, item_id)
        if "text" in vecs and vecs["text"].shape == (phrases.shape[1],):
            text[i], has[i] = vecs["text"], True
    return blocked_rows(text, has, phrases, fusion.blocklist_threshold)
