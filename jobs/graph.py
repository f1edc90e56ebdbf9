"""The kNN-graph job's search phase as a Dask job: blocks of query rows on workers, part files, then the lists.

``reelsim lists --store S --workers N`` (a local cluster) or ``--scheduler
tcp://...`` (an existing one) runs::

    prepare   the driver chooses and builds (or reloads, to resume) the index and saves it with the
              normalised catalog in the store, as the one-process job does
              (:func:`reelsim.similarity.rebuild.prepare_graph`);
    search    one task per block of ``--knn-batch`` query rows
              (:func:`reelsim.similarity.blocks.search_block`): each worker memory-maps the catalog and
              the index once and writes each block's lists as its own Parquet part file, atomically;
              blocks whose part file exists are not submitted (resume), a killed worker's block runs
              again elsewhere (Dask retries it);
    assemble  the part files, streamed one at a time in block order, become the list files, the list
              arrays and the floors (:func:`reelsim.storage.lists.assemble_parts`): the driver never
              holds every list.

The lists are those of the one-process job on the same index: the same
rows, the same exact re-scoring, the same hygiene, block by block.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import numpy as np

from reelsim.config import FusionConfig
from reelsim.jobs.connect import check_cluster_store, check_scheduler, scheduler_client
from reelsim.jobs.runner import LOW_LEVEL_LOG_LENGTH
from reelsim.reporting import Counter, Progress
from reelsim.similarity.blocks import BLOCKED_FILE, job_spec, search_block
from reelsim.similarity.catalog import load_catalog
from reelsim.similarity.rebuild import finish_lists, list_formats, prepare_graph, publish_content_lists
from reelsim.storage.atomic import atomic_path
from reelsim.storage.layout import StoreLayout, item_key
from reelsim.storage.lists import assemble_parts, remove_other_formats
from reelsim.storage.session import writing


def graph_client(store: Path, scheduler: str | None, workers: int | None):
    """A client on ``scheduler``, or on a new local cluster of ``workers`` single-threaded processes (scratch in the store)."""
    import dask
    import distributed  # noqa: F401  (loads distributed's config defaults before the settings below)
    from dask.distributed import Client, LocalCluster

    settings = {"temporary-directory": str(StoreLayout(store).scratch),
                "distributed.admin.low-level-log-length": LOW_LEVEL_LOG_LENGTH}
    with dask.config.set(settings):
        if scheduler:
            return scheduler_client(scheduler)
        logging.getLogger("distributed").setLevel(logging.ERROR)
        cluster = LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
                               dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR,
                               local_directory=str(StoreLayout(store).scratch))
        return Client(cluster)


def block_ranges(n: int, rows: int) -> list[tuple[int, int, int]]:
    """``(block, lo, hi)`` of every block of ``rows`` query rows over ``n`` items.

    Examples
    --------
    >>> block_ranges(10, 4)
    [(0, 0, 4), (1, 4, 8), (2, 8, 10)]
    """
    return [(b, lo, min(n, lo + rows)) for b, lo in enumerate(range(0, n, rows))]


def dask_lists(store: Path, fusion: FusionConfig, *, client=None, scheduler: str | None = None,
               workers: int | None = None, progress: Progress | None = None,
               text_model: str | None = None) -> dict:
    """``reelsim lists`` with the search phase on a Dask cluster; returns the job's summary.

    Parameters
    ----------
    store : the store (a shared filesystem when the workers run elsewhere)
    fusion : weights, k, index choice, hygiene, list formats; ``knn_batch`` is the block size
    client : an existing ``distributed.Client`` (left open); else one on ``scheduler``, or on a
        new local cluster of ``workers`` processes (closed at the end)
    progress : told the blocks done (stage ``kNN blocks``) and the index choices (:mod:`reelsim.reporting`)
    text_model : the text model of the blocklist's phrases (default: the store's)

    Returns
    -------
    The summary of :func:`reelsim.similarity.rebuild.index_and_lists`, and ``blocks`` (total),
    ``blocks_resumed`` (part files found from an earlier run), ``blocks_run``, ``block_s``
    (median seconds a worker spent on a block) and ``scheduler_overhead_s`` (wall seconds of the
    search phase beyond the blocks' own time divided by the workers).
    """
    layout = StoreLayout(store)
    if client is None:
        check_cluster_store(store)
        check_scheduler(scheduler)
    with writing(layout.root, "lists") as session:
        return _dask_lists(session, layout, fusion, client, scheduler, workers, progress, text_model)


def _dask_lists(session, layout: StoreLayout, fusion: FusionConfig, client, scheduler, workers, progress,
                text_model) -> dict:
    cat, _ = load_catalog(layout.require_catalog(), mmap=True)  # the driver reads it, it does not keep it all
    job = prepare_graph(layout.root, fusion, cat_norm=cat, progress=progress, text_model=text_model)
    fusion = job.fusion  # k at most the catalog's other items
    t1 = time.perf_counter()
    ckpt = job.checkpoint
    ckpt.open()
    try:
        return _search_and_write(session, job, fusion, layout, client, scheduler, workers, progress, t1)
    except BaseException:
        ckpt.clear_if_empty()  # a job that finished no block leaves nothing to resume
        raise


def _search_and_write(session, job, fusion: FusionConfig, layout: StoreLayout, client, scheduler, workers,
                      progress: bool, t1: float) -> dict:
    """The search phase of :func:`dask_lists` on the cluster, then the lists written from the part files."""
    from dask.distributed import as_completed

    ckpt = job.checkpoint
    if job.blocked is not None:
        with atomic_path(ckpt.folder / BLOCKED_FILE) as tmp, open(tmp, "wb") as f:
            np.save(f, job.blocked)
    blocks = block_ranges(job.cat.n, fusion.knn_batch)
    todo = [b for b in blocks if not ckpt.part(b[0]).is_file()]
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(graph_client(layout.root, scheduler, workers))
        n_workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        local = scheduler is None  # a local cluster (ours, or the caller's client): share the cores among its workers
        spec = job_spec(ckpt, k=fusion.k, oversample=fusion.oversample, block=fusion.knn_batch, dedup=fusion.dedup,
                        mmr=fusion.mmr, threads=max(1, (os.cpu_count() or 1) // n_workers) if local else None)
        tag = item_key(ckpt.fingerprint["build_id"])[:8]
        futures = client.map(search_block, [layout.root.as_posix()] * len(todo), [b for b, _, _ in todo],
                             [lo for _, lo, _ in todo], [hi for _, _, hi in todo], job=spec,
                             key=[f"knn-block-{tag}-{b}" for b, _, _ in todo], pure=False)
        seconds = []
        tick = Counter(progress, "kNN blocks", total=len(blocks), done=len(blocks) - len(todo), unit="block")
        for fut, result in as_completed(futures, with_results=True):
            seconds.append(result["seconds"])
            tick(1)
            fut.release()
        del futures
    t2 = time.perf_counter()
    layout.lists_dir.mkdir(exist_ok=True)
    set_dir = session.new_set_dir("content")
    rows, floor = assemble_parts([ckpt.part(b) for b, _, _ in blocks], job.cat.ids, fusion.k,
                                 job.gi.active, layout.lists_dir, list_formats(fusion), set_dir[1])
    remove_other_formats(layout.lists_dir, list_formats(fusion))
    publish_content_lists(layout, job.cat.ids, job.gi, job.fusion, job.blocked, set_dir=set_dir, floor=floor)
    out = finish_lists(job, rows=rows, knn_s=t2 - t1, write_s=time.perf_counter() - t2)
    busy = sum(seconds) / n_workers
    out.update(blocks=len(blocks), blocks_resumed=len(blocks) - len(todo), blocks_run=len(todo),
               block_s=round(float(np.median(seconds)), 3) if seconds else 0.0, workers=n_workers,
               scheduler_overhead_s=round(max(0.0, (t2 - t1) - busy), 3))
    return out
