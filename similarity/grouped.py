"""One FAISS index per modality signature: the fused index at catalog scale.

Items with the same modalities (the same *signature*, a bit code over the
fused modalities) form a group. Inside a group the shared weight of a query
and any item is constant, so the fused inner product ranks the group exactly
like the score (docs/similarity.md). :class:`GroupedIndex` keeps one index per
group, chosen by the group's size (:func:`reelsim.similarity.index_choice.choose_index`):
small groups are exact ``Flat`` indexes, large ones IVF / HNSW / IVF-PQ. The
search code (:mod:`reelsim.similarity.search`) asks each group for its best
candidates and re-scores them exactly from the per-modality vectors.

Label ``j`` of a group's index is the ``j``-th catalog row of that group in
catalog order, so the rows are never stored: they follow from the masks.
Items added later are appended to the catalog, so they keep that order.

On disk (``save`` / ``load``), under a folder::

    index.json          manifest: build id, fused modalities, weights, one entry per group
    group-<code>.faiss  one FAISS index per group
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from reelsim.config import check_weights
from reelsim.errors import DamagedStoreError
from reelsim.reporting import Progress, report
from reelsim.similarity.catalog import CatalogEmbeddings
from reelsim.similarity.fusion import active_modalities, fuse_parts, gathered_ip, signature_codes
from reelsim.similarity.index_choice import (
    IndexPlan,
    apply_params,
    build_ann,
    choose_index,
)
from reelsim.storage.atomic import (
    atomic_path,
    check_store_file,
    native_path,
    read_checked,
    remove_file,
    write_text_atomic,
)

MANIFEST = "index.json"
#: a catalog member's IVF probes are chosen among this many times nprobe lists around its own list
MEMBER_PROBE_POOL = 16
FORMAT = "reelsim.grouped-index/1"


def fused_blocks(cat: CatalogEmbeddings, w: Mapping[str, float], active: tuple[str, ...], G: np.ndarray,
                 block: int = 16384):
    """``blocks(rows)`` for :func:`build_ann`: fused vectors of catalog rows ``G[rows]``, ``block`` at a time."""
    def blocks(rows: np.ndarray | None):
        sel = G if rows is None else G[rows]
        for i0 in range(0, sel.size, block):
            r = sel[i0:i0 + block]
            yield fuse_parts({m: cat.vectors[m][r] for m in active}, w, active)
    return blocks


def group_vectors(cat: CatalogEmbeddings, w: Mapping[str, float], active: tuple[str, ...], code: int) -> np.ndarray:
    """Fused vectors float32 (n_c, D) of the catalog rows of signature ``code``, in catalog order."""
    G = np.flatnonzero(signature_codes(cat.masks, active) == code)
    return fuse_parts({m: cat.vectors[m][G] for m in active}, w, active)


class GroupedIndex:
    """Fused-vector indexes, one per modality signature.

    Attributes
    ----------
    active : tuple of str
        Modalities fused (positive weight, present in the catalog), in ``MODALITIES`` order.
    weights : dict of str to float
        The weights the vectors were fused with.
    indexes : dict of int to faiss.Index
        Signature code -> index over that group's fused vectors.
    plans : dict of int to IndexPlan
    build_id : str
        Random id, new at each build; checkpoints of the kNN job name it.
    """

    def __init__(self, active, weights, indexes, plans, build_id=None, extra=None):
        self.extra = dict(extra or {})  # JSON-able notes saved with the manifest (e.g. the catalog fingerprint)
        self.active = tuple(active)
        self.weights = check_weights(weights)
        self.indexes = dict(indexes)
        self.plans = dict(plans)
        self.build_id = build_id or uuid.uuid4().hex

    @classmethod
    def build(cls, cat: CatalogEmbeddings, weights: Mapping[str, float], *, override: str | None = None,
              memory_budget_bytes: int | None = None, exact_below: int | None = None,
              progress: Progress | None = None) -> "GroupedIndex":
        """Choose and build one index per signature group of ``cat`` (normalised); each group's choice is
        reported to ``progress``."""
        w = check_weights(weights)
        active = active_modalities(cat, w)
        codes = signature_codes(cat.masks, active)
        d = sum(cat.vectors[m].shape[1] for m in active)
        indexes, plans = {}, {}
        extra = {} if exact_below is None else {"exact_below": exact_below}
        for c in (int(c) for c in np.unique(codes) if c):
            G = np.flatnonzero(codes == c)
            plan = choose_index(G.size, d, memory_budget_bytes=memory_budget_bytes, override=override, **extra)
            if G.size < plan.train_size:
                plan = IndexPlan("Flat", {}, 0, "exact")  # too few vectors to train this group's index
            indexes[c] = build_ann(plan, d, fused_blocks(cat, w, active, G), G.size)
            plans[c] = plan
            names = "+".join(m for i, m in enumerate(active) if c >> i & 1)
            report(progress, f"index for items with {names}: {G.size} items, {plan.factory} {plan.params}",
                   stage="index")
        return cls(active, w, indexes, plans)

    @property
    def ntotal(self) -> int:
        return sum(int(ix.ntotal) for ix in self.indexes.values())

    @property
    def exact(self) -> bool:
        return all(p.exact for p in self.plans.values())

    def describe(self) -> dict:
        """JSON-able summary: build id, modalities, and per group its size, factory and parameters."""
        return {"build_id": self.build_id, "active": list(self.active), "weights": self.weights, "extra": self.extra,
                "groups": {str(c): {"n": int(self.indexes[c].ntotal), "factory": p.factory, "params": p.params,
                                    "kind": p.kind, "train_size": p.train_size, "k_factor": p.k_factor}
                           for c, p in sorted(self.plans.items())}}

    def search_group(self, code: int, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` of group ``code`` for fused queries ``xq`` float32 (B, D).

        Returns ``D`` float32 (B, k') inner products and ``J`` int64 (B, k')
        positions in the group (``-1`` where fewer were found), ``k' = min(k, group size)``.
        """
        index = self.indexes[code]
        k = min(k, int(index.ntotal))
        return _in_blocks(xq, lambda q: index.search(q, k))

    def search_members(self, code: int, xq: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search_group` for queries that are members of group ``code`` (``positions`` in it, int64 (B,)).

        With an IVF index, a member's lists to probe are the ``nprobe`` whose
        centroids are nearest to it among the ``MEMBER_PROBE_POOL * nprobe``
        lists nearest its own list's centroid (those hold 99-100 % of its true
        nearest ``nprobe`` on the benchmark's and the tests' data): the coarse
        quantizer, which compares every query with every centroid
        (``B * nlist * D`` multiply-adds, a quarter of the kNN graph's time at
        10^6 items), is not run; a member is compared with ~100 centroids.
        Other indexes are searched as by :meth:`search_group`.
        """
        probe = self._member_probes(code)
        if probe is None:
            return self.search_group(code, xq, k)
        from faiss.contrib.ivf_tools import search_preassigned

        ivf, own, neighbours, centroids = probe
        near = neighbours[own[positions]]  # the lists around the member's own list
        coarse = gathered_ip(xq, centroids, near)
        nprobe = min(ivf.nprobe, near.shape[1])
        best = np.argpartition(-coarse, nprobe - 1, axis=1)[:, :nprobe]  # the member's nearest among them
        lists = np.ascontiguousarray(np.take_along_axis(near, best, axis=1))
        coarse = np.ascontiguousarray(np.take_along_axis(coarse, best, axis=1))
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        k = min(k, int(ivf.ntotal))
        rows = np.arange(xq.shape[0])
        return _in_blocks(rows, lambda r: search_preassigned(ivf, xq[r], k, lists[r], coarse[r]))

    def _member_probes(self, code: int):
        """(ivf, own list of each member, probe lists per list, centroids) of an IVF group; None for other indexes."""
        import faiss

        index = self.indexes[code]
        cached = getattr(self, "_probes", {}).get(code)
        if cached is not None and cached[0] == index.ntotal:
            return cached[1]
        probes = None
        if isinstance(faiss.downcast_index(index), faiss.IndexIVF):  # a bare IVF index (no pre-transform, no refine)
            ivf = faiss.downcast_index(index)
            own = np.full(ivf.ntotal, -1, np.int64)
            for lst in range(ivf.nlist):
                size = ivf.invlists.list_size(lst)
                if size:
                    own[faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), size)] = lst
            centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
            _, neighbours = faiss.knn(centroids, centroids, min(MEMBER_PROBE_POOL * ivf.nprobe, ivf.nlist),
                                      metric=faiss.METRIC_INNER_PRODUCT)
            neighbours[:, 0] = np.arange(ivf.nlist)  # its own list first, whatever ties say
            probes = (ivf, own, np.ascontiguousarray(neighbours), centroids)
        self._probes = {**getattr(self, "_probes", {}), code: (index.ntotal, probes)}
        return probes

    def add(self, code: int, xb: np.ndarray, d: int) -> None:
        """Append fused vectors ``xb`` float32 (b, D) to group ``code`` (a new group gets a Flat index).

        The index gets a new ``build_id`` (checkpoints of the old one no longer apply).
        """
        import faiss

        self.build_id = uuid.uuid4().hex
        if code not in self.indexes:
            self.indexes[code] = faiss.IndexFlatIP(d)
            self.plans[code] = IndexPlan("Flat", {}, 0, "exact")
        self.indexes[code].add(np.ascontiguousarray(xb, dtype=np.float32))

    def save(self, folder: str | os.PathLike, *, manifest_copy: str | os.PathLike | None = None) -> None:
        """Write every group's index and then the manifest, each atomically.

        Index files have a new name at each build or add (the build id), so
        they are written at once; the manifest (a fixed name) is part of the
        store's next version (staged in a write session). Index files of
        groups no longer present are removed after the manifest is in place;
        the manifest names the files that belong to it. ``manifest_copy``:
        also write the manifest there, at once (a kNN job's checkpoint: its
        workers and a resumed job read the index through it).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for c, index in self.indexes.items():
            save_index(index, folder / self.file_name(c))
        self.save_manifest(folder)
        if manifest_copy is not None:
            write_text_atomic(manifest_copy, json.dumps(self.manifest_body(), indent=1), immediate=True)

    def file_name(self, code: int) -> str:
        """The index file of group ``code`` in this build."""
        return f"group-{code}-{self.build_id[:8]}.faiss"

    def manifest_body(self) -> dict:
        return dict(self.describe(), format=FORMAT, files={str(c): self.file_name(c) for c in self.indexes})

    def save_manifest(self, folder: str | os.PathLike) -> None:
        """Write the manifest of this build into ``folder`` (its index files are there); remove other index files
        (in a write session, at its commit: until then the store's manifest names them)."""
        folder = Path(folder)
        body = self.manifest_body()
        write_text_atomic(folder / MANIFEST, json.dumps(body, indent=1))
        for p in folder.glob("group-*.faiss"):
            if p.name not in body["files"].values():
                remove_file(p)

    @classmethod
    def load(cls, folder: str | os.PathLike, *, mmap: bool = False,
             manifest: str | os.PathLike | None = None) -> "GroupedIndex":
        """Read an index written by :meth:`save` (``mmap``: memory-mapped where FAISS allows, :func:`load_index`).

        ``manifest``: read the manifest from this file instead of ``folder``'s
        (a job's copy, :meth:`save`); the index files are in ``folder``.

        Raises
        ------
        StoreError
            Missing or unreadable manifest or index file.
        """
        folder = Path(folder)
        body = read_manifest(folder, manifest)
        indexes, plans = {}, {}
        where = Path(manifest) if manifest is not None else folder / MANIFEST
        try:
            for c, g in body["groups"].items():
                indexes[int(c)] = load_index(folder / body["files"][c], mmap=mmap)
                plans[int(c)] = IndexPlan(g["factory"], g["params"], g.get("train_size", 0), g.get("kind", "custom"),
                                          g.get("k_factor", 1))
                apply_params(indexes[int(c)], plans[int(c)].params)
            return cls(body["active"], body["weights"], indexes, plans, body["build_id"], body.get("extra"))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DamagedStoreError(where, f"inconsistent index manifest ({e.__class__.__name__}: {e})",
                                    "lists") from None


def read_manifest(folder: str | os.PathLike, manifest: str | os.PathLike | None = None) -> dict:
    """The index manifest (``index.json``) of ``folder``, after checking that every index file it names exists.

    ``manifest``: read it from this file instead (index files still in ``folder``).

    Raises
    ------
    DamagedStoreError
        Unreadable, not a grouped-index manifest, or naming a missing file.
    """
    path = Path(check_store_file(Path(manifest) if manifest is not None else Path(folder) / MANIFEST, "lists"))
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: bad JSON, or bytes that are not UTF-8
        raise DamagedStoreError(path, f"cannot be read as JSON ({e})", "lists") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT or not isinstance(body.get("files"), dict):
        raise DamagedStoreError(path, "not a reelsim grouped index", "lists")
    for f in body["files"].values():
        if str(f) != os.path.basename(str(f)) or str(f) in ("", ".", ".."):
            raise DamagedStoreError(path, f"names index file {str(f)!r}, which is not a file name in {folder}",
                                    "lists")
        check_store_file(Path(folder) / str(f), "lists")
    missing = [f for f in body["files"].values() if not (Path(folder) / str(f)).is_file()]
    if missing:
        raise DamagedStoreError(path, f"names index file {missing[0]!r}, which is not there", "lists")
    return body


#: queries per FAISS call: its fast-scan search holds look-up tables for every query of a call
#: (16 384 queries of 384 dimensions took 300 MB more than 4096 do)
QUERY_BLOCK = 4096


def _in_blocks(q: np.ndarray, search) -> tuple[np.ndarray, np.ndarray]:
    """``search(q[block])`` for blocks of :data:`QUERY_BLOCK` rows of ``q``, results stacked: (D, I)."""
    if q.shape[0] <= QUERY_BLOCK:
        return search(q)
    parts = [search(q[i0:i0 + QUERY_BLOCK]) for i0 in range(0, q.shape[0], QUERY_BLOCK)]
    return np.concatenate([d for d, _ in parts]), np.concatenate([i for _, i in parts])


def exists(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a grouped index manifest."""
    return (Path(folder) / MANIFEST).is_file()


def save_index(index, path: str | os.PathLike) -> None:
    """Write a FAISS index to ``path`` atomically."""
    import faiss

    with atomic_path(path) as tmp, native_path(tmp) as name:
        faiss.write_index(index, name)


def load_index(path: str | os.PathLike, *, mmap: bool = False):
    """Read a FAISS index written by :func:`save_index` (:class:`StoreError` naming a missing or damaged file).

    ``mmap``: map the file read-only instead of reading it
    (``faiss.IO_FLAG_MMAP``), so processes on one machine share one copy;
    index types FAISS cannot map are read as usual.
    """
    import faiss

    def read(name: str):
        if mmap:
            try:
                return faiss.read_index(name, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            except RuntimeError:
                pass  # this index type cannot be mapped: read below
        return faiss.read_index(name)

    return read_checked(path, read, "a FAISS index", (RuntimeError,), redo="lists")
