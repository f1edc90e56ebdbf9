"""One block of the kNN graph, as a Dask task: search a range of query rows, write their lists as a part file.

The search phase of the kNN-graph job split over a cluster
(:mod:`reelsim.jobs.graph` submits the blocks and assembles the parts)::

    search_block(store, block=3, lo=49152, hi=65536, job=spec)   # -> {"block": 3, "rows": ..., "seconds": ...}

A task reads everything from the store (a shared filesystem on a cluster):
the normalised catalog and the index, memory-mapped, so the worker
processes of one machine share one copy in the page cache; the blocklist
mask and the job's fingerprint from the checkpoint folder. They are loaded
once per worker process (:func:`worker_state`), not per block. The lists of
rows ``lo..hi`` are computed exactly as in one process
(:func:`reelsim.similarity.knn.knn_graph`, the same index, the same exact
re-scoring, the same hygiene) and written as the part file
``part-<block>.parquet`` of the checkpoint folder, atomically. A block whose
part file exists is not searched again, so a job that resumes, or a task
that the scheduler runs again after its worker died, skips finished work.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from reelsim.errors import StoreError
from reelsim.similarity.catalog import load_catalog
from reelsim.similarity.grouped import GroupedIndex
from reelsim.similarity.hygiene import Hygiene
from reelsim.similarity.knn import Checkpoint, knn_graph
from reelsim.similarity.search import SearchPlan
from reelsim.storage.atomic import check_store_file
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lists import write_part

#: name of the blocklist mask in the checkpoint folder (bool (N,), ``.npy``)
BLOCKED_FILE = "blocked.npy"

_STATE: dict = {}
_STATE_LOCK = threading.Lock()


def job_spec(checkpoint: Checkpoint, *, k: int, oversample: int, block: int, dedup: float | None,
             mmr: float | None, threads: int | None) -> dict:
    """The plain, picklable description of a job that :func:`search_block` takes."""
    return {"fingerprint": checkpoint.fingerprint, "k": int(k), "oversample": int(oversample), "block": int(block),
            "dedup": dedup, "mmr": mmr, "threads": threads}


def worker_state(store: str, job: dict):
    """(catalog, search plan) of ``store`` for ``job``, loaded once per worker process and job.

    The plan (:class:`~reelsim.similarity.search.SearchPlan`: modality
    groups, the id order for ties, the blocklist) costs O(N) to make, so it
    is made here once, not per block.

    Raises
    ------
    StoreError
        The store's index or checkpoint is not the job's (another job
        replaced it): the task fails instead of writing lists of another index.
    """
    key = (os.path.abspath(store), job["fingerprint"]["build_id"])
    with _STATE_LOCK:
        if key not in _STATE:
            _STATE.clear()  # one job's state per worker process at a time
            _STATE[key] = _load(store, job)
        return _STATE[key]


def _load(store: str, job: dict):
    import faiss

    layout = StoreLayout(store)
    if job.get("threads"):
        faiss.omp_set_num_threads(int(job["threads"]))
    cat, weights = load_catalog(layout.require_catalog(), mmap=True)
    ckpt = Checkpoint(layout.knn_checkpoint, job["fingerprint"])
    gi = GroupedIndex.load(layout.index_dir, mmap=True, manifest=ckpt.index_manifest)
    if gi.build_id != job["fingerprint"]["build_id"] or not ckpt.matches():
        raise StoreError(f"the index or checkpoint in {layout.root} is not this job's (build "
                         f"{job['fingerprint']['build_id'][:8]}): another job replaced it")
    path = ckpt.folder / BLOCKED_FILE
    blocked = np.load(path) if Path(check_store_file(path, "lists")).is_file() else None
    plan = SearchPlan(cat, gi, weights, job["k"], job["oversample"], job["block"], blocked=blocked)
    return cat, plan


def search_block(store: str, block: int, lo: int, hi: int, job: dict) -> dict:
    """Search query rows ``lo..hi`` (block ``block``) and write their part file; a small summary.

    Returns
    -------
    dict with ``block``, ``rows`` (list rows written; 0 when the part
    existed), ``skipped`` (the part existed), ``seconds`` and ``worker_pid``.
    """
    t = time.perf_counter()
    part = Checkpoint(StoreLayout(store).knn_checkpoint, job["fingerprint"]).part(block)
    if part.is_file():
        return {"block": block, "rows": 0, "skipped": True, "seconds": 0.0, "worker_pid": os.getpid()}
    cat, plan = worker_state(store, job)
    lists = knn_graph(cat, plan.searcher, plan.w, job["k"], rows=np.arange(lo, hi, dtype=np.int64),
                      hygiene=Hygiene(job["dedup"], job["mmr"]), plan=plan)
    write_part(Path(part), lists)
    return {"block": block, "rows": int((lists.I >= 0).sum()), "skipped": False,
            "seconds": round(time.perf_counter() - t, 3), "worker_pid": os.getpid()}
