"""The batch job: catalog in, shards written on Dask workers, lists out.

One task per video, and one per group of small items (products, text-only
rows: their models embed a batch), submitted with ``client.map`` and
consumed with ``as_completed``, so each finished item is counted at once, a
failed item is recorded and the rest go on, and the driver keeps nothing of
a finished task; a progress bar shows on stderr.  Then the driver fuses the item
embeddings, builds the FAISS index and writes the neighbour lists.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import itertools
import json
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from reelsim.config import MODALITIES, Config
from reelsim.errors import ReelsimError, StoreError, UsageError, WeightsNotFoundError
from reelsim.extractors.registry import model_stamps
from reelsim.jobs.connect import check_cluster_store, check_scheduler, scheduler_client
from reelsim.jobs.gpu_stage import CrossItemRun, local_client, wants_cross_item
from reelsim.jobs.rows import RowSpool
from reelsim.jobs.tables import terminal_safe
from reelsim.jobs.tasks import START_TOPIC, models_needed, process_item, process_items, status_row
from reelsim.jobs.watch import ItemWatch
from reelsim.similarity.incremental import add_items
from reelsim.similarity.rebuild import build_lists
from reelsim.storage.atomic import atomic_path
from reelsim.storage.layout import StoreLayout, item_key
from reelsim.storage.manifest import read_inputs
from reelsim.storage.provenance import guard_model_change, usable_shards
from reelsim.storage.session import WriteSession
from reelsim.storage.shards import remove_stale_temp_files

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_PARTIAL = 3
#: recent messages Dask keeps per connection (``distributed.admin.low-level-log-length``) on the clusters
#: and clients the runner makes (see :func:`compute_items`)
LOW_LEVEL_LOG_LENGTH = 16


class RunReport:
    """One run's outcome: a row per item (in catalog order), the lists summary, the wall time.

    The rows are kept on disk (:class:`~reelsim.jobs.rows.RowSpool`), not in
    memory, so a run of 10^5 or 10^6 items costs the driver a few bytes per
    item; ``items``, ``failed`` and ``retried`` read them back when asked.

    Parameters
    ----------
    rows : RowSpool
        Where the rows go (:meth:`add`).
    """

    def __init__(self, rows: RowSpool):
        self.spool = rows
        self.lists: dict = {}
        self.wall_s = 0.0

    def add(self, row: dict, position: int) -> None:
        """Record one item's row; ``position`` is its place in the catalog (rows are listed in that order)."""
        self.spool.append(row, position)

    def rows(self):
        """Every row in catalog order, one at a time."""
        return self.spool.rows()

    @property
    def items(self) -> list[dict]:
        return list(self.rows())

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows() if r["status"] == "failed"]

    @property
    def retried(self) -> list[dict]:
        """Items that needed more than one attempt (their worker died mid-task)."""
        return list(self.spool.retried)

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.spool.counts["failed"] else EXIT_OK

    def summary(self) -> dict:
        return {"total": len(self.spool), **{s: self.spool.counts[s] for s in ("ok", "cached", "failed")}}

    def describe(self, store: Path) -> str:
        """The console summary: counts, each failure with its reason, where the lists are."""
        s = self.summary()
        lines = [f"{s['total']} items: {s['ok']} processed, {s['cached']} unchanged, {s['failed']} failed "
                 f"in {self.wall_s:.1f} s; store: {store}"]
        safe = terminal_safe  # ids, paths and reasons come from the inputs: no control characters reach the terminal
        warnings = []
        for r in self.rows():
            if r["status"] == "failed":
                lines.append(f"  FAILED {safe(r['item'])}: {safe(r['reason'])}")
            warnings += [f"  warning {safe(r['item'])}: {safe(w)}" for w in r.get("warnings") or []]
        lines += [f"  retried {safe(r['item'])}: ran {r['attempts']} times (a worker was lost), {r['status']}"
                  for r in self.retried]
        lines += warnings
        if self.lists and "error" in self.lists:
            lines.append(f"lists: FAILED: {safe(self.lists['error'])}")
        elif self.lists and "added" in self.lists:
            lines.append(f"added {self.lists['added']} items ({self.lists['skipped']} already indexed), "
                         f"updated {self.lists['updated_lists']} existing lists; catalog: {self.lists['items']} "
                         f"items -> {Path(store) / 'lists'}")
        elif self.lists:
            lines.append(f"lists: {self.lists['rows']} rows for {self.lists['items']} items -> {Path(store) / 'lists'}")
        return "\n".join(lines)


def default_workers() -> int:
    """Worker processes for a LocalCluster: one per two cores, at least 1, at most 4."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _client(scheduler: str | None, workers: int, store: Path, cfg: Config):
    """A client on ``scheduler``, or on a new LocalCluster whose scratch space is inside ``store``."""
    import dask
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return scheduler_client(scheduler)
    # Dask's INFO chatter (worker start/stop) is not for reelsim's users; errors still show.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with dask.config.set({"distributed.scheduler.allowed-failures": cfg.jobs.max_worker_deaths}):
        cluster = LocalCluster(**local_cluster_options(cfg, store, workers))
    return Client(cluster)


def local_cluster_options(cfg: Config, store: Path, workers: int) -> dict:
    """Keyword arguments of the local cluster: worker processes, scratch inside the store, and a
    dashboard on ``cfg.jobs.dashboard_address`` (this machine only unless opened: it has no authentication)."""
    return {"n_workers": workers, "threads_per_worker": 1, "processes": True,
            "dashboard_address": cfg.jobs.dashboard_address, "silence_logs": logging.ERROR,
            "local_directory": str(StoreLayout(store).scratch)}


def n_workers(client) -> int:
    """How many workers the cluster has now (at least 1)."""
    return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))


def gpu_workers(client) -> list[str]:
    """Addresses of the cluster's workers that advertise a ``GPU`` resource (``dask worker --resources GPU=1``)."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    return sorted(a for a, w in info.items() if (w.get("resources") or {}).get("GPU", 0) >= 1)


def item_resources(item, cfg: Config, gpu_cluster: bool) -> dict | None:
    """The Dask resources an item's task asks for.

    On a cluster where some workers advertise ``GPU``, video items (the 3D-CNN
    work) ask for ``{"GPU": 1}`` and so run only there, one at a time per
    GPU; products and text go to any worker.  With ``--device cuda`` every
    item needs a GPU.  Without GPU workers nothing is constrained.
    """
    if not gpu_cluster:
        return None
    needs_gpu = item.kind == "video" or cfg.models.device.startswith("cuda")
    return {"GPU": 1} if needs_gpu else None


def plan_tasks(items, group_size: int, n_workers: int) -> list[list]:
    """The tasks of a catalog: each video on its own, the other items in groups of consecutive items.

    Groups hold at most ``group_size`` items, and fewer when the catalog is
    small, so that every one of ``n_workers`` workers gets a group. Videos
    and groups alternate, so that a window of tasks in flight holds both
    (GPU workers take the videos while CPU workers take the groups).

    Examples
    --------
    >>> from reelsim.storage.manifest import Item
    >>> items = [Item("v", video="/v.mp4")] + [Item(f"p{i}", title="t") for i in range(5)]
    >>> [[i.id for i in t] for t in plan_tasks(items, group_size=2, n_workers=1)]
    [['v'], ['p0', 'p1'], ['p2', 'p3'], ['p4']]
    >>> [len(t) for t in plan_tasks(items, group_size=64, n_workers=2)]
    [1, 3, 2]
    """
    small = [i for i in items if not i.video]
    size = max(1, min(group_size, math.ceil(len(small) / max(1, n_workers))))
    videos = [[i] for i in items if i.video]
    groups = [small[a:a + size] for a in range(0, len(small), size)]
    both = itertools.zip_longest(videos, groups)
    return [t for pair in both for t in pair if t is not None]


def submit_items(client, items, cfg: Config, store: Path, threads: int | None, run_id: str,
                 tasks: list[list] | None = None) -> dict:
    """Submit the items' tasks (:func:`plan_tasks`, or ``tasks``), one ``client.map`` per kind and resource group.

    A task of one item runs :func:`~reelsim.jobs.tasks.process_item`, a group
    :func:`~reelsim.jobs.tasks.process_items`. Returns {future: list of its items}.
    """
    gpu_cluster = bool(gpu_workers(client))
    if tasks is None:
        tasks = plan_tasks(items, cfg.jobs.group_size, n_workers(client))
    calls: dict[str, tuple[dict | None, list]] = {}
    for task in tasks:
        res = item_resources(task[0], cfg, gpu_cluster)
        calls.setdefault(json.dumps([len(task) > 1, res], sort_keys=True), (res, []))[1].append(task)
    by_future = {}
    for res, group in calls.values():
        grouped = len(group[0]) > 1
        keys = [f"{'items' if grouped else 'item'}-{item_key(t[0].id)}-{len(t)}-{run_id[:8]}-{uuid.uuid4().hex[:6]}"
                for t in group]
        futures = client.map(process_items if grouped else process_item,
                             group if grouped else [t[0] for t in group], cfg=cfg, store=str(store),
                             torch_threads=threads, run_id=run_id, key=keys, pure=False, resources=res)
        by_future.update(zip(futures, group))
    return by_future


def failed_task_row(item, error: BaseException, attempts: int) -> dict:
    """The report row of an item whose task did not return (its worker died too often, or it was lost)."""
    from distributed import KilledWorker

    if isinstance(error, KilledWorker):
        reason = (f"worker process died {max(attempts, 1)} time(s) while running this item "
                  f"(limit: distributed.scheduler.allowed-failures)")
    else:
        reason = f"task error {error.__class__.__name__}: {error}"
    row = status_row(item.id, item.kind, "failed", reason)
    row["attempts"] = attempts
    return row


def timed_out_row(item, worker: str, seconds: float, timeout_s: float, attempts: int,
                  restart_error: str | None) -> dict:
    action = ("its worker was restarted" if restart_error is None
              else f"its worker could not be restarted ({restart_error})")
    row = status_row(item.id, item.kind, "failed",
                     f"timed out: still running after {seconds:.0f} s (--item-timeout {timeout_s:g} s) on "
                     f"{worker}; {action}")
    row.update(attempts=attempts, worker=worker, seconds=seconds, timed_out=True)
    return row


def stop_overdue(client, pending: dict, watch, timeout_s: float) -> tuple[list, str | None]:
    """Cancel the tasks of items running longer than ``timeout_s`` and restart their workers.

    ``pending`` maps each unfinished item id to its future. Returns the
    cancelled futures with, per future, the overdue items ``(item id, worker,
    seconds)``, and the restart error (None when the workers restarted).
    """
    overdue = watch.overdue(timeout_s)
    if not overdue:
        return [], None
    stopped: dict = {}
    for item_id, worker, seconds in overdue:
        fut = pending.get(item_id)
        if fut is not None:
            stopped.setdefault(fut, []).append((item_id, worker, seconds))
    for fut in stopped:
        client.cancel(fut)  # before the restart, so the scheduler does not run it again elsewhere
    error = _restart_workers(client, sorted({w for hits in stopped.values() for _, w, _ in hits}))
    return list(stopped.items()), error


def stop_overdue_items(client, by_future: dict, pending: set, watch, timeout_s: float) -> list[dict]:
    """:func:`stop_overdue` for tasks of one item each (``by_future``: {future: item}); the timed-out rows.

    Cancelled futures are removed from ``pending``.
    """
    items = {item.id: (fut, item) for fut, item in by_future.items() if fut in pending}
    stopped, error = stop_overdue(client, {i: fut for i, (fut, _) in items.items()}, watch, timeout_s)
    rows = []
    for fut, hits in stopped:
        pending.discard(fut)
        for item_id, worker, seconds in hits:
            rows.append(timed_out_row(items[item_id][1], worker, seconds, timeout_s, watch.finish(item_id), error))
    return rows


def report_row(sink, bar, progress: bool, row: dict) -> None:
    """Record one item's final row: ``sink(row)``, note failures and retries on the bar, advance the bar."""
    sink(row)
    if row["status"] == "failed" and progress:  # without a bar the summary lists failures
        bar.write(f"failed: {terminal_safe(row['item'])}: {terminal_safe(row['reason'])}")
    elif row.get("attempts", 1) > 1 and progress:
        bar.write(f"retried: {terminal_safe(row['item'])} ran {row['attempts']} times (a worker was lost)")
    bar.update(1)


def _restart_workers(client, workers: list[str]) -> str | None:
    """Restart workers through their nannies; None on success, else why not (one line)."""
    if not workers:
        return None
    try:
        client.restart_workers(workers, timeout=120, raise_for_error=True)
        return None
    except Exception as e:  # e.g. a worker without a nanny: the item is still reported, the run goes on
        return f"{e.__class__.__name__}: {e}".splitlines()[0][:200]


class _Collector:
    """The driver's side of a batch: rows as tasks finish, the timeout, splitting failed groups.

    State is bounded by the tasks still pending: a finished future's entry is
    dropped and the future released once its rows are written.
    """

    def __init__(self, client, by_future: dict, cfg: Config, watch, bar, progress: bool, store, threads, sink,
                 more=(), window: int = 0):
        from distributed import as_completed

        self.client, self.cfg, self.watch, self.bar, self.progress = client, cfg, watch, bar, progress
        self.store, self.threads = store, threads
        self.more, self.window = iter(more), window  # tasks not submitted yet; how many may be in flight
        self.tasks: dict = {}  # future -> its items, while pending
        self.pending: dict = {}  # item id -> future, while pending
        self.done = as_completed([], with_results=True, raise_errors=False)
        self.register(by_future)
        self.rows: list[dict] = []
        self.add = functools.partial(report_row, sink or self.rows.append, bar, progress)
        self.earlier: dict[str, int] = {}  # attempts made in a group, for items split out of it

    def attempts(self, item_id: str) -> int:
        """Attempts at a finished item (its group's included); forgets the item."""
        return self.watch.finish(item_id) + self.earlier.pop(item_id, 0)

    def register(self, by_future: dict) -> None:
        for f, items in by_future.items():
            self.tasks[f] = list(items)
            self.pending.update((i.id, f) for i in items)
            self.watch.expect(i.id for i in items)
            self.done.add(f)

    def refill(self) -> None:
        """Submit more tasks while fewer than ``window`` are in flight."""
        room = self.window - len(self.tasks)
        batch = list(itertools.islice(self.more, room)) if room > 0 else []
        if batch:
            self.register(submit_items(self.client, None, self.cfg, self.store, self.threads, self.watch.run_id,
                                       tasks=batch))

    def run(self) -> list[dict]:
        check = time.monotonic() + 1.0
        self.refill()
        while not self.done.is_empty():
            batch = self.done.next_batch(block=False)
            if not batch:
                time.sleep(0.02)
            for fut, result in batch:
                self.finished(fut, result)
            self.refill()
            if time.monotonic() >= check:
                self.stop_overdue()
                check = time.monotonic() + 1.0
        return self.rows

    def forget(self, fut) -> list:
        items = self.tasks.pop(fut, [])
        for item in items:
            self.pending.pop(item.id, None)
        return items

    def finished(self, fut, result) -> None:
        items = self.forget(fut)
        if not items:  # cancelled for its timeout: already reported
            return
        if fut.status == "finished":
            for item, row in zip(items, result if isinstance(result, list) else [result]):
                row["attempts"] = max(1, self.attempts(item.id))
                self.add(row)
        elif len(items) > 1:  # a group whose worker died too often: run its items one by one
            self.resubmit(items)
        else:  # the worker died too often, or the task could not run
            error = fut.exception() if fut.status == "error" else result
            self.add(failed_task_row(items[0], error, self.attempts(items[0].id)))
        fut.release()

    def resubmit(self, items: list) -> None:
        """Run ``items`` again, one task each, so that whichever item caused the failure fails alone."""
        for item in items:
            self.earlier[item.id] = self.attempts(item.id)
        self.register(submit_items(self.client, items, self.cfg, self.store, self.threads, self.watch.run_id,
                                   tasks=[[i] for i in items]))

    def stop_overdue(self) -> None:
        stopped, error = stop_overdue(self.client, self.pending, self.watch, self.cfg.jobs.item_timeout_s)
        timeout_s = self.cfg.jobs.item_timeout_s
        for fut, hits in stopped:
            items = self.forget(fut)
            if len(items) > 1:  # which item of the group hangs is not known: run each alone
                self.resubmit(items)
            else:
                for item_id, worker, seconds in hits:
                    self.add(timed_out_row(items[0], worker, seconds, timeout_s, self.attempts(item_id), error))
            fut.release()


def collect(client, by_future: dict, cfg: Config, watch, bar, progress: bool, *, store: Path | None = None,
            threads: int | None = None, sink=None, more=(), window: int = 0) -> list[dict]:
    """Report rows as tasks finish (``as_completed``); enforces the per-item timeout; records attempts.

    ``by_future``: {future: list of items} from :func:`submit_items`. A group
    task that times out, or whose worker dies too often, is split: its items
    run again one per task (``store`` and ``threads`` are needed for that),
    so a bad item fails alone and the others complete. ``sink(row)``
    receives each row as it arrives; without one the rows are returned.
    ``more``: tasks (lists of items) to submit as earlier ones finish, so that
    at most ``window`` are in flight: the scheduler then holds a window of
    the catalog, not all of it.
    """
    return _Collector(client, by_future, cfg, watch, bar, progress, store, threads, sink, more, window).run()


def compute_items(items, store: Path, cfg: Config, scheduler: str | None, workers: int | None,
                  progress: bool, client=None, sink=None) -> list[dict]:
    """Run every item on the cluster; one report row per item.

    ``client``: an existing ``distributed.Client`` to use (and leave open);
    otherwise one is made on ``scheduler`` or on a new local cluster of
    ``workers`` processes, and closed at the end. ``sink(row)``
    receives each row as it arrives (then nothing is returned); by default
    the rows are returned as a list.

    Where the models run on a GPU (``jobs.cross_item``, :func:`~reelsim.jobs.gpu_stage.wants_cross_item`)
    the items go through :class:`~reelsim.jobs.gpu_stage.CrossItemRun` instead: CPU workers decode,
    GPU workers embed clips of many items per batch.
    """
    import dask
    import distributed  # noqa: F401  (loads distributed's config defaults before the settings below)

    cross_local = client is None and not scheduler and wants_cross_item(cfg)  # the GPU path's own local cluster
    n_local = workers or default_workers()
    threads = max(1, (os.cpu_count() or 1) // n_local) if not (scheduler or client) else None
    run_id = uuid.uuid4().hex
    watch = ItemWatch(run_id)
    settings = {"temporary-directory": str(StoreLayout(store).scratch),  # a local cluster writes only in the store
                # Dask keeps this many recent messages per connection for debugging, each compute-task message
                # with its task's items: 1000 (its default) held ~64 000 items' worth in the driver
                "distributed.admin.low-level-log-length": LOW_LEVEL_LOG_LENGTH}
    if client is None:
        check_cluster_store(store)
        check_scheduler(scheduler)
    with dask.config.set(settings), contextlib.ExitStack() as stack:
        if client is None:  # made here, inside the scratch setting, and closed on the way out
            client = stack.enter_context(local_client(workers, store, cfg) if cross_local
                                         else _client(scheduler, n_local, store, cfg))
        bar = stack.enter_context(_progress(len(items), progress))
        client.subscribe_topic(START_TOPIC, watch.on_event)
        try:
            if cross_local or wants_cross_item(cfg, client):  # GPU path: see jobs/gpu_stage.py
                rows: list[dict] = []
                CrossItemRun(client, items, cfg, store, run_id=run_id, watch=watch,
                             add_row=functools.partial(report_row, sink or rows.append, bar, progress),
                             failed_row=failed_task_row, stop_overdue=stop_overdue_items,
                             restart_workers=functools.partial(_restart_workers, client),
                             torch_threads=1 if cross_local else threads).run()
                return rows
            tasks = plan_tasks(items, cfg.jobs.group_size, n_workers(client))
            window = max(16, 4 * n_workers(client))  # tasks in flight: every worker busy, the rest waits here
            first = submit_items(client, items, cfg, store, threads, run_id, tasks=tasks[:window])
            return collect(client, first, cfg, watch, bar, progress, store=store, threads=threads, sink=sink,
                           more=tasks[window:], window=window)
        finally:
            client.unsubscribe_topic(START_TOPIC)


def write_run_report(store: Path, report: RunReport, cfg: Config, started: str) -> Path:
    """Write ``STORE/report.json`` atomically, streaming the rows from the report's spool (catalog order)."""
    head = {
        "started_utc": started,
        "wall_s": round(report.wall_s, 3),
        "config_hash": cfg.feature_hash(),
        "summary": report.summary(),
        "retried": report.retried,
        "stages_s": report.spool.stage_totals,
        "lists": report.lists,
    }
    path = StoreLayout(store).report
    text = json.dumps({**head, "items": []}, indent=2, ensure_ascii=False)
    nested = lambda row: json.dumps(row, indent=2, ensure_ascii=False).replace("\n", "\n    ")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text[:text.rindex("[]")] + "[")  # the same text as json.dumps(body, indent=2), row by row
        for n, row in enumerate(report.rows()):
            f.write(("," if n else "") + "\n    " + nested(row))
        f.write(("\n  " if len(report.spool) else "") + "]\n}")
    return path


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="items", unit="item", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def run_catalog(inputs: list[str], store: Path, cfg: Config, *, scheduler: str | None = None,
                workers: int | None = None, progress: bool = True, re_extract: bool = False,
                lists: str = "rebuild", client=None, then: Callable[[Path], dict] | None = None) -> RunReport:
    """Process every item of ``inputs`` into ``store`` and write lists + report.json.

    Refuses (UsageError) a store whose features came from other models,
    unless ``re_extract`` (see :func:`reelsim.storage.provenance.guard_model_change`).

    The whole run is one write session (:class:`~reelsim.storage.session.WriteSession`):
    it holds the store's lock (a second command writing the store is refused), and
    the catalog, index and lists it makes are published as one new store version.
    ``then(store)``: after that version, while the lock is still held, update
    the learned spaces' lists (``add --space``; ``run`` rewrites the spaces
    whose lists another blocklist made); what it writes is the next version,
    and its summary goes to ``lists.spaces``.

    ``lists``: ``rebuild`` fuses every processed item into a new catalog, index
    and lists (``reelsim run``); ``add`` adds the processed items to the
    store's existing catalog, index and lists (``reelsim add``); ``none``
    writes the shards only (e.g. GPU nodes without FAISS; benchmarks/gpu.py).

    ``client``: run the items on this existing ``distributed.Client`` (left
    open) instead of ``scheduler`` or a new local cluster.
    """
    t0 = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    items, problems = read_inputs(inputs)
    store = StoreLayout(store).make_root()
    with WriteSession(store, "add" if lists == "add" else "run") as session:
        remove_stale_temp_files(store)
        needed = [m for m in MODALITIES if any(m in models_needed(i) for i in items)]
        guard_model_change(store, model_stamps(cfg.models, needed), [i.id for i in items], re_extract=re_extract)
        report = RunReport(RowSpool(StoreLayout(store).scratch))
        for n, p in enumerate(sorted(problems, key=lambda p: p.id)):  # bad rows first, then catalog order
            report.add(status_row_for_problem(p), n)
        if items:
            order = {i.id: len(problems) + n for n, i in enumerate(items)}
            compute_items(items, store, cfg, scheduler, workers, progress, client,
                          sink=lambda row: report.add(row, order[row["item"]]))
            del order
        failure = None
        try:
            report.lists = _lists(store, report, cfg, lists, progress)
            if session.dirty:
                report.lists["version"] = session.commit()["version"]
            if then is not None and report.lists:
                spaces = then(store)
                if spaces:
                    report.lists["spaces"] = spaces
                if session.dirty:
                    report.lists["version"] = session.commit()["version"]
        except Exception as e:  # the items are done: report them, and why there are no new lists
            session.discard()
            failure, report.lists = e, {**report.lists, "error": lists_error(e)}
        report.wall_s = time.perf_counter() - t0
        write_run_report(store, report, cfg, started)
        if failure is not None:
            raise_lists_failure(failure, report)
    return report


def lists_error(e: BaseException) -> str:
    """One line saying why the lists stage failed (a file it could not write is named)."""
    if isinstance(e, OSError) and e.filename:
        return f"cannot write {e.filename}: {e.strerror}"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, ReelsimError) else f"internal error {e.__class__.__name__}: {text}"


def raise_lists_failure(e: BaseException, report: RunReport) -> None:
    """Raise for a failed lists stage: a usage, store or weights error stays one (exit 2), with ``.report``.

    A bug (not a :class:`ReelsimError` or ``OSError``) is re-raised as it is.
    """
    if not isinstance(e, (ReelsimError, OSError)):
        raise e
    cls = next((c for c in (UsageError, StoreError, WeightsNotFoundError) if isinstance(e, c)),
               StoreError if isinstance(e, OSError) else ReelsimError)
    out = cls(f"the lists stage failed after every item was processed: {report.lists['error']}; report.json has "
              "each item's status; fix the cause and run again (finished items are kept)")
    out.report = report
    raise out from e


def status_row_for_problem(problem) -> dict:
    return status_row(problem.id, None, "failed", problem.reason)


def _lists(store: Path, report: RunReport, cfg: Config, mode: str, progress: bool) -> dict:
    """Neighbour lists over the items that have a shard (``mode``: ``rebuild``, ``add`` or ``none``); a summary.

    ``rebuild`` lists this run's items and every other item with a complete
    shard of this run's models in the store (e.g. added by ``reelsim add``);
    an item that failed in this run is left out, even if an older shard of it exists.
    """
    if mode == "none":
        return {}
    done = [r["item"] for r in report.rows() if r["status"] in ("ok", "cached")]
    if mode != "add" and StoreLayout(store).shard_count() > len(done):  # shards of items outside this run
        run_keys = {item_key(r["item"]) for r in report.rows()}  # their shards are not opened
        done += sorted(usable_shards(store, model_stamps(cfg.models), skip_keys=run_keys))
        del run_keys
    if not done:
        return {}
    t1 = time.perf_counter()
    make = add_items if mode == "add" else build_lists
    lists = make(store, done, cfg.fusion, progress=progress, text_model=cfg.models.text)
    lists["seconds"] = round(time.perf_counter() - t1, 3)
    return lists
