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

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reelsim.config import MODALITIES, Config, FusionConfig, check_weights
from reelsim.errors import DamagedStoreError, StoreError, UsageError
from reelsim.extractors.device import device_name
from reelsim.extractors.registry import load
from reelsim.reporting import Progress, report
from reelsim.similarity.blocked import DeviceGroups
from reelsim.similarity.catalog import CatalogEmbeddings, load_catalog, save_catalog
from reelsim.similarity.copies import build_copy_index, copy_pairs, summary_line
from reelsim.similarity.fusion import normalise
from reelsim.similarity.grouped import GroupedIndex, group_vectors
from reelsim.similarity.hygiene import Hygiene, blocked_rows
from reelsim.similarity.knn import Checkpoint, knn_graph
from reelsim.storage.atomic import atomic_path, check_store_file, write_text_atomic
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lists import NeighborLists, ParquetStream, remove_other_formats, write_lists
from reelsim.storage.listset import ListSet, save_array, write_arrays, write_ids, write_manifest
from reelsim.storage.provenance import recorded_models
from reelsim.storage.session import active_session, writing
from reelsim.storage.shards import read_item_vectors
from reelsim.storage.version import read_version

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


def new_stamp() -> str:
    """A random stamp (16 hex) naming one version of a catalog or model."""
    import os

    return os.urandom(8).hex()


def build_lists(store: Path, ids: list[str], fusion: FusionConfig, *, progress: Progress | None = None,
                text_model: str | None = None) -> dict:
    """Fuse, index and write every item's top-k list, as one version of the store.  Returns a small summary."""
    layout = StoreLayout(store)
    with writing(layout.root, "run") as session:
        cat, meta = catalog_from_shards(layout.root, ids)
        cat_norm = normalise(cat, pca_dim=fusion.pca_dim, whiten=fusion.whiten)
        layout.index_dir.mkdir(exist_ok=True)
        write_text_atomic(layout.items_meta, json.dumps(meta, ensure_ascii=False))
        session.note({"catalog": {"stamp": new_stamp(), "items": cat.n}})
        out = save_and_list(layout.root, cat_norm, fusion, progress=progress, text_model=text_model, raw=cat)
    out["modalities"] = {m: int(cat.masks[m].sum()) for m in cat.masks}
    return out


def relist(store: Path, overrides: dict | None = None, *, progress: Progress | None = None,
           text_model: str | None = None) -> dict:
    """``reelsim lists``: under the store's lock, rebuild the indexes and every list from the stored catalog.

    ``overrides``: :class:`FusionConfig` fields (None values ignored); the
    weights default to those the catalog was built with.

    Raises
    ------
    StoreLockedError
        Another command holds the store (a run writing it).
    """
    layout = StoreLayout(store)
    with writing(layout.root, "lists"):
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
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    layout = StoreLayout(store)
    with ThreadPoolExecutor(1, thread_name_prefix="reelsim-catalog") as pool:  # in this write session too
        saving = pool.submit(contextvars.copy_context().run, save_catalog, cat_norm, fusion.weights, layout.catalog)
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
    """The index of an unfinished kNN job over this catalog, with these settings, that left a checkpoint.

    ``cat_sha()`` gives the catalog's fingerprint (called only when there is a checkpoint).
    """
    copy = Checkpoint(layout.knn_checkpoint, {}).index_manifest
    if not (Checkpoint(layout.knn_checkpoint, {}).manifest.is_file() and copy.is_file()):
        return None
    try:
        gi = GroupedIndex.load(layout.index_dir, manifest=copy)
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


def fitted_k(fusion: FusionConfig, n: int) -> FusionConfig:
    """``fusion`` with ``k`` at most ``n - 1`` (the other items of a catalog of ``n``; at least 1): a larger
    ``k`` lists nothing more and would allocate (N, k) arrays."""
    k = min(fusion.k, max(1, n - 1))
    return fusion if k == fusion.k else dataclasses.replace(fusion, k=k)


def prepare_graph(store: Path, fusion: FusionConfig, *, cat_norm: CatalogEmbeddings | None = None,
                  progress: Progress | None = None, text_model: str | None = None,
                  raw: CatalogEmbeddings | None = None) -> GraphJob:
    """Choose and build (or, to resume, reload) the index of the store's catalog; the blocklist; the checkpoint.

    Parameters are those of :func:`index_and_lists`.
    """
    layout = StoreLayout(store)
    if cat_norm is None:
        cat_norm, _ = load_catalog(layout.require_catalog())
    from concurrent.futures import ThreadPoolExecutor

    fusion = fitted_k(fusion, cat_norm.n)
    report(progress, summary_line(build_copy_index(layout, cat_norm.ids, progress=progress)))
    t0 = time.perf_counter()
    device = device_name(fusion.device)
    fusion = with_store_blocklist(fusion, layout)
    with ThreadPoolExecutor(1, thread_name_prefix="reelsim-sha") as pool:
        cat_sha = pool.submit(catalog_fingerprint, cat_norm)  # hashed while FAISS trains, when nothing is resumed
        gi = _resumable_index(layout, cat_sha.result, fusion, cat_norm.n)
        resumed = gi is not None
        if gi is None:
            gi = GroupedIndex.build(cat_norm, fusion.weights, override=fusion.index,
                                    memory_budget_bytes=int(fusion.memory_budget_gb * 2**30),
                                    exact_below=None if device == "cpu" else GPU_EXACT_BELOW,
                                    progress=progress)
            gi.extra = {"catalog": cat_sha.result(), "request": index_request(fusion)}
    ckpt = Checkpoint(layout.knn_checkpoint, job_fingerprint(gi, cat_norm.n, fusion))
    ckpt.open()
    if resumed:
        gi.save_manifest(layout.index_dir)
    else:
        gi.save(layout.index_dir, manifest_copy=ckpt.index_manifest)
    t1 = time.perf_counter()
    blocked = blocked_rows_of(layout.root, cat_norm.ids, fusion, text_model, raw)
    copies = copy_pairs(layout.root, cat_norm.ids) if fusion.dedup is not None else None
    return GraphJob(layout, cat_norm, gi, fusion, device, resumed, blocked, ckpt, t0, t1 - t0, copies)


def with_store_blocklist(fusion: FusionConfig, layout: StoreLayout) -> FusionConfig:
    """``fusion`` with its blocklist resolved: None takes the store's (as the version records it).

    The blocklist is the store's: once a lists job sets one, every space's lists and
    every output apply it until a lists job sets another (``--blocklist``) or clears it
    (``--no-blocklist``).
    """
    if fusion.blocklist is not None:
        return fusion
    session = active_session(layout.root)
    rec = session.current("blocklist") if session is not None else read_version(layout).get("blocklist")
    rec = rec or {}
    return dataclasses.replace(fusion, blocklist=tuple(rec.get("phrases", ())),
                               blocklist_threshold=float(rec.get("threshold", fusion.blocklist_threshold)))


def content_list_settings(store: Path) -> dict:
    """The list settings (k, oversample, dedup, mmr) of the store's content lists, as FusionConfig overrides
    ({} when it has none): what a rebuild that should change nothing else keeps."""
    layout = StoreLayout(store)
    session = active_session(layout.root)
    ls = content_set(layout, session.version if session is not None else None)
    if ls is None:
        return {}
    h = ls.manifest.get("hygiene", {})
    formats = ls.manifest.get("settings", {}).get("formats")
    return {"k": ls.k, "oversample": h.get("oversample"), "dedup": h.get("dedup"), "mmr": h.get("mmr"),
            **({"lists_formats": tuple(formats)} if formats else {})}


def blocklist_changes(store: Path, fusion: FusionConfig) -> bool:
    """Whether ``fusion``'s blocklist (given, not None) differs from the store's current one."""
    layout = StoreLayout(store)
    session = active_session(layout.root)
    current = (session.current("blocklist") if session is not None else read_version(layout).get("blocklist"))
    return blocklist_record(fusion) != (current or None)


def blocklist_record(fusion: FusionConfig) -> dict | None:
    """The version's ``blocklist`` field for a resolved ``fusion`` (None: no blocklist)."""
    if not fusion.blocklist:
        return None
    return {"phrases": list(fusion.blocklist), "threshold": fusion.blocklist_threshold}


def hygiene_record(fusion: FusionConfig) -> dict:
    """What a list set records of the hygiene it applied (its manifest's ``hygiene``)."""
    return {"dedup": fusion.dedup, "mmr": fusion.mmr, "oversample": fusion.oversample,
            "blocklist": list(fusion.blocklist or ()), "blocklist_threshold": fusion.blocklist_threshold}


def index_and_lists(store: Path, fusion: FusionConfig, *, cat_norm: CatalogEmbeddings | None = None,
                    progress: Progress | None = None, text_model: str | None = None,
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
    with writing(StoreLayout(store).root, "lists"):
        return _index_and_lists(store, fusion, cat_norm, progress, text_model, raw)


def _index_and_lists(store, fusion, cat_norm, progress, text_model, raw) -> dict:
    job = prepare_graph(store, fusion, cat_norm=cat_norm, progress=progress, text_model=text_model, raw=raw)
    fusion = job.fusion  # k at most the catalog's other items
    t1 = time.perf_counter()
    searcher = None
    if job.device != "cpu":
        w = check_weights(fusion.weights)
        searcher = DeviceGroups(job.gi, lambda c: group_vectors(job.cat, w, job.gi.active, c), job.device)
        report(progress, f"kNN search of the exact groups on {job.device} ({searcher.kernel})")
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
    remove_other_formats(job.layout.lists_dir, list_formats(fusion))
    publish_content_lists(job.layout, job.cat.ids, job.gi, job.fusion, job.blocked, lists=lists)
    return finish_lists(job, rows=int((lists.I >= 0).sum()), knn_s=t2 - t1, write_s=time.perf_counter() - t2)


def finish_lists(job: GraphJob, *, rows: int, knn_s: float, write_s: float) -> dict:
    """Remove the job's checkpoint once its lists are committed (at once outside a write session); the summary."""
    session = active_session(job.layout.root)
    if session is not None:
        session.after_commit(job.checkpoint.clear)
    else:
        job.checkpoint.clear()
    return {"items": job.cat.n, "k": job.fusion.k, "rows": rows, "resumed": job.resumed, "device": job.device,
            "index": job.gi.describe()["groups"], "blocked": int(job.blocked.sum()) if job.blocked is not None else 0,
            "index_s": round(job.index_s, 3), "knn_s": round(knn_s, 3), "write_s": round(write_s, 3)}


def list_formats(fusion: FusionConfig) -> list[str]:
    """Formats to write: Parquet always (``reelsim add`` and ``export`` read it), then the others asked for."""
    return ["parquet"] + [f for f in dict.fromkeys(fusion.lists_formats) if f != "parquet"]


def publish_content_lists(layout: StoreLayout, ids: list[str], gi: GroupedIndex, fusion: FusionConfig,
                          blocked: np.ndarray | None, *, lists: NeighborLists | None = None,
                          set_dir: tuple[str, str] | None = None, floor: np.ndarray | None = None,
                          previous: ListSet | None = None) -> str:
    """Write the content space's list set and note it for the write session's commit; its name.

    Either ``lists`` (every row, in catalog order) or ``set_dir`` = (name,
    folder) of a new set whose list arrays are written already
    (:func:`reelsim.storage.lists.assemble_parts`), with the rows' ``floor``.
    ``previous``: the store's set before an add (its ids are extended, not
    sorted again). The set's settings are what ``reelsim add`` continues
    with (:func:`load_state`).
    """
    session = active_session(layout.root)
    if session is None:
        raise StoreError("lists are published inside a write session (storage/session.py)")
    if set_dir is None:
        set_dir = session.new_set_dir("content")
        write_arrays(set_dir[1], lists)
    else:
        save_array(set_dir[1], "floor", floor)
    name, folder = set_dir
    write_ids(folder, ids, previous=previous)
    settings = job_fingerprint(gi, len(ids), fusion) | {"build_id": "", "weights": check_weights(fusion.weights),
                                                        "formats": list_formats(fusion)}
    write_manifest(folder, space="content", n=len(ids), k=fusion.k, modalities=list(gi.active),
                   catalog_stamp=session.stamp_of("catalog"), hygiene=hygiene_record(fusion), settings=settings,
                   blocked=blocked)
    session.note({"lists": {"content": name}, "blocklist": blocklist_record(fusion)})
    return name


def space_set(layout: StoreLayout, space: str, version: dict) -> ListSet | None:
    """The list set of ``space`` that ``version`` names, None when it names none."""
    name = (version.get("lists") or {}).get(space)
    return ListSet.open(layout.list_set(name)) if name else None


def content_set(layout: StoreLayout, version: dict | None = None) -> ListSet | None:
    """The content space's list set the store's version names (None: a store made before list sets)."""
    return space_set(layout, "content", read_version(layout) if version is None else version)


def made_with_blocklist(ls: ListSet, phrases, threshold) -> bool:
    """Whether the list set ``ls`` applied the blocklist ``phrases`` (and, when there are phrases, ``threshold``):
    whether its lists are still valid for that blocklist."""
    h = ls.manifest.get("hygiene", {})
    return h.get("blocklist", []) == list(phrases) and (not phrases or h.get("blocklist_threshold") == threshold)


def load_state(layout: StoreLayout) -> tuple[np.ndarray, np.ndarray, dict]:
    """(floor float64 (N,), blocked bool (N,), settings) of the content lists: what ``reelsim add`` continues.

    Read from the content list set of the store's version; a store made
    before list sets has them in ``index/lists-state.npz``.
    """
    session = active_session(layout.root)
    version = session.version if session is not None else read_version(layout)
    ls = content_set(layout, version)
    if ls is not None:
        return np.array(ls.floor), np.array(ls.blocked), dict(ls.manifest["settings"])
    if not Path(check_store_file(layout.lists_state, "lists")).is_file():
        raise StoreError(f"no list state in {layout.root}: run `reelsim lists --store {layout.root}` once first")
    try:
        with np.load(layout.lists_state) as z:
            return z["floor"], z["blocked"], json.loads(str(z["settings"]))
    except Exception as e:  # noqa: BLE001  (np.load: OSError, ValueError, KeyError, zipfile.BadZipFile ...)
        raise DamagedStoreError(layout.lists_state, f"cannot be read ({e.__class__.__name__}: {e})", "lists") from None


def store_blocked(layout: StoreLayout, ids: list[str], fusion: FusionConfig, text_model: str | None) -> np.ndarray | None:
    """Blocklist mask bool (N,) over the catalog's ``ids`` for a resolved ``fusion`` (None: no blocklist).

    Taken from the content list set when it was made for this catalog with
    this blocklist (no shard is read), else computed (:func:`blocked_rows_of`).
    """
    if not fusion.blocklist:
        return None
    session = active_session(layout.root)
    version = session.version if session is not None else read_version(layout)
    stamp = session.stamp_of("catalog") if session is not None else (version.get("catalog") or {}).get("stamp")
    try:
        ls = content_set(layout, version)
    except StoreError:  # damaged: computed below
        ls = None
    if (ls is not None and ls.n == len(ids) and ls.manifest.get("catalog_stamp") == stamp
            and made_with_blocklist(ls, fusion.blocklist, fusion.blocklist_threshold)):
        return np.array(ls.blocked)
    return blocked_rows_of(layout.root, ids, fusion, text_model)


def store_text_model(store: Path) -> str:
    """The text model of the store's items (their shards' provenance), else the configured default."""
    stamp = recorded_models(store).get("text")
    return stamp.model if stamp is not None else Config().models.text


def blocked_rows_of(store: Path, ids: list[str], fusion: FusionConfig, text_model: str | None,
                    raw: CatalogEmbeddings | None = None) -> np.ndarray | None:
    """Blocklist mask over ``ids`` (None when there is no blocklist).

    Phrases are embedded with ``text_model`` (default: the store's text model, :func:`store_text_model`).

    Items' raw text embeddings come from ``raw`` (raw CatalogEmbeddings of
    ``ids``) when given, else from their shards.
    """
    if not fusion.blocklist:
        return None
    model = load("text", text_model or store_text_model(store), device="cpu")
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
