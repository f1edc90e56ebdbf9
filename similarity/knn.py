"""The kNN-graph job: every item's top-k, in batches, with a resumable checkpoint.

::

    lists = knn_graph(cat_norm, index, weights, k=10, checkpoint=Checkpoint(folder, fingerprint))

Queries are processed ``batch_size`` rows at a time; each batch is one
multi-threaded FAISS search per modality group (FAISS's OpenMP threads, not
Dask: see docs/similarity.md for the measurement) followed by exact
re-scoring. A finished batch is written atomically to the checkpoint folder
as ``batch-<b>.npz`` before the next starts, so a killed job resumes at the
first missing batch and gives the same lists: the index is read back from
disk (never rebuilt), the batches are the same rows, and the search is
deterministic for a given batch.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from reelsim.reporting import Counter, Progress
from reelsim.similarity.hygiene import Hygiene, select
from reelsim.similarity.search import Scored, SearchPlan
from reelsim.storage.atomic import special_file_problem, write_text_atomic
from reelsim.storage.lists import NeighborLists


class Checkpoint:
    """Finished batches of one kNN job in a folder, valid for one ``fingerprint``.

    ``fingerprint`` (JSON-able dict) names everything the lists depend on:
    the index build id and size, the catalog size, k, oversample, batch size,
    weights and hygiene. A folder left by a job with another fingerprint is
    cleared on :meth:`open`. A saved batch that cannot be read is computed
    again, and why it could not be read is kept in :attr:`unreadable`
    (batch -> reason; :func:`knn_graph` reports it as a warning).
    """

    def __init__(self, folder: str | Path, fingerprint: Mapping):
        self.folder = Path(folder)
        self.fingerprint = json.loads(json.dumps(dict(fingerprint), sort_keys=True))
        self.unreadable: dict[int, str] = {}

    @property
    def manifest(self) -> Path:
        return self.folder / "manifest.json"

    @property
    def index_manifest(self) -> Path:
        """The job's copy of its index manifest: its workers and a resumed job read the index by it
        (the store's own ``index.json`` is replaced only when the job's lists are committed)."""
        return self.folder / "index.json"

    def matches(self) -> bool:
        """Whether the folder holds a job with exactly this fingerprint (so its batches can be reused)."""
        if special_file_problem(self.manifest) is not None:
            return False  # never opened; open() replaces the folder
        try:
            return json.loads(self.manifest.read_text(encoding="utf-8")) == self.fingerprint
        except (OSError, json.JSONDecodeError):
            return False

    def open(self) -> int:
        """Prepare the folder; returns how many finished batches (or parts) it already holds."""
        if self.matches():
            return len(list(self.folder.glob("batch-*.npz"))) + len(self.parts())
        self.clear()
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.manifest, json.dumps(self.fingerprint, sort_keys=True), immediate=True)
        return 0

    def path(self, b: int) -> Path:
        return self.folder / f"batch-{b:06d}.npz"

    def finished(self, b: int) -> NeighborLists | None:
        """Batch ``b`` as saved, or None when it is not there or cannot be read (then it is computed again)."""
        if not self.path(b).is_file():
            return None
        try:
            return NeighborLists.load(self.path(b))
        except Exception as e:  # noqa: BLE001  (np.load of a damaged file: OSError, ValueError, BadZipFile, KeyError)
            self.unreadable[b] = f"{e.__class__.__name__}: {e}".splitlines()[0][:200]
            return None

    def part(self, b: int) -> Path:
        """Block ``b``'s Parquet part file (the Dask job's checkpoint: :mod:`reelsim.similarity.blocks`)."""
        return self.folder / f"part-{b:06d}.parquet"

    def parts(self) -> list[Path]:
        """The part files present, in block order."""
        return sorted(self.folder.glob("part-*.parquet"))

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def clear_if_empty(self) -> None:
        """Remove the folder when it holds no finished batch or part: a job that failed (or was refused)
        before finishing one leaves nothing behind (``reelsim verify`` would report an unfinished job)."""
        if not (any(self.folder.glob("batch-*.npz")) or self.parts()):
            self.clear()


def knn_graph(cat, index, weights: Mapping[str, float], k: int, *, rows: np.ndarray | None = None,
              oversample: int = 5, batch_size: int = 16384, hygiene: Hygiene | None = None,
              blocked: np.ndarray | None = None, checkpoint: Checkpoint | None = None,
              progress: Progress | None = None, searcher=None, sink=None,
              plan: SearchPlan | None = None) -> NeighborLists:
    """Top-``k`` lists of catalog ``rows`` (default: every item).

    Parameters
    ----------
    cat : CatalogEmbeddings
        Normalised catalog (N items).
    index : GroupedIndex or faiss.IndexFlatIP
        Fused index of ``cat`` (:class:`reelsim.similarity.grouped.GroupedIndex`).
    weights : dict
        Modality weights the index was fused with.
    k : int
        Neighbours per item.
    rows : int64 (B,), optional
        Query rows; default ``arange(N)``.
    oversample : int
        Candidates per group = ``oversample * k + 1``; with hygiene on, the
        pool of ``oversample * k`` exactly scored candidates it selects from.
    batch_size : int
        Queries per batch (and per checkpoint file).
    hygiene : Hygiene, optional
        Collapse / MMR settings (off by default).
    blocked : bool (N,), optional
        Rows never returned as neighbours (blocklist).
    checkpoint : Checkpoint, optional
        Where finished batches go; a job that finds batches there skips them.
    progress : Progress, optional
        Told the queries done (stage ``kNN lists``), :mod:`reelsim.reporting`.
    searcher : optional
        Answers the groups' searches instead of ``index`` (a
        :class:`reelsim.similarity.blocked.DeviceGroups` on a GPU).
    sink : callable, optional
        Called with each batch's :class:`NeighborLists` in order, as soon as
        it is ready (a :class:`reelsim.storage.lists.ParquetStream` writes it).
    plan : SearchPlan, optional
        A plan made before for this catalog, index, weights, k, oversample,
        batch size and blocklist (its making is O(N): a worker that searches
        many blocks makes it once); the arguments it covers are then not used.

    Returns
    -------
    NeighborLists
    """
    hygiene = hygiene or Hygiene()
    rows = np.arange(cat.n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if plan is None:
        plan = SearchPlan(cat, index, weights, k, oversample, batch_size, blocked=blocked, searcher=searcher)
    k = min(k, plan.k)  # at most the catalog's size
    pool = plan.kc - 1 if hygiene.on else plan.k
    if checkpoint is not None:
        checkpoint.open()
    parts = []
    tick = Counter(progress, "kNN lists", total=int(rows.size))
    try:
        for b, r in enumerate(plan.batches(rows.size)):
            q = rows[r]
            part = checkpoint.finished(b) if checkpoint is not None else None
            if part is None:
                if checkpoint is not None and b in checkpoint.unreadable:
                    tick.say(f"checkpoint batch {b} could not be read ({checkpoint.unreadable[b]}); computing it "
                             "again", warning=True)
                part = _batch(plan, cat, q, pool, k, hygiene)
                if checkpoint is not None:
                    part.save(checkpoint.path(b))
            if sink is not None:
                sink(part)
            parts.append(part)
            tick(int(q.size))
    except BaseException:
        if checkpoint is not None:
            checkpoint.clear_if_empty()
        raise
    return NeighborLists.concat(parts, k, plan.active)


def _batch(plan: SearchPlan, cat, q: np.ndarray, pool: int, k: int, hygiene: Hygiene) -> NeighborLists:
    """Lists of query rows ``q``: exact re-scored pool, its floor, then hygiene."""
    sc = plan.run_arrays({m: cat.vectors[m][q] for m in plan.active}, {m: cat.masks[m][q] for m in plan.active},
                         q, pool)
    floor = np.where(sc.I[:, -1] >= 0, sc.S[:, -1], -np.inf) if pool else np.full(q.size, -np.inf)
    if hygiene.on:
        sc = select(sc, k, cat, plan.w, plan.active, hygiene)
    return NeighborLists(q, sc.I, sc.S, sc.cos, floor)


def recall_at(I: np.ndarray, I_true: np.ndarray, k: int) -> float:
    """Mean fraction of each row's true top ``k`` (``I_true``) found in the top ``k`` of ``I`` (-1 ignored)."""
    hits = [len(set(a[:k][a[:k] >= 0].tolist()) & set(b[:k][b[:k] >= 0].tolist())) / max(1, int((b[:k] >= 0).sum()))
            for a, b in zip(I, I_true)]
    return float(np.mean(hits)) if hits else float("nan")


def scored_of(lists: NeighborLists) -> Scored:
    return Scored(lists.I, lists.S, lists.cos)
