"""The batch job: catalog in, shards written on Dask workers, lists out.

One task per item (``client.map``), consumed with ``as_completed`` so each
finished item is counted at once, a failed item is recorded and the rest go
on; a progress bar shows on stderr.  Then the driver fuses the item
embeddings, builds the FAISS index and writes the neighbour lists.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from reelsim.config import MODALITIES, Config
from reelsim.errors import ReelsimError, StoreError, UsageError, WeightsNotFoundError
from reelsim.extractors.registry import model_stamps
from reelsim.jobs.gpu_stage import CrossItemRun, local_client, wants_cross_item
from reelsim.jobs.tables import terminal_safe
from reelsim.jobs.tasks import START_TOPIC, models_needed, process_item, status_row
from reelsim.jobs.watch import ItemWatch
from reelsim.similarity.incremental import add_items
from reelsim.similarity.rebuild import build_lists
from reelsim.storage.atomic import write_text_atomic
from reelsim.storage.layout import StoreLayout, item_key
from reelsim.storage.lock import StoreLock
from reelsim.storage.manifest import read_inputs
from reelsim.storage.provenance import guard_model_change, usable_shards
from reelsim.storage.shards import remove_stale_temp_files

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_PARTIAL = 3


@dataclass
class RunReport:
    items: list[dict] = field(default_factory=list)
    lists: dict = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.items if r["status"] == "failed"]

    @property
    def retried(self) -> list[dict]:
        """Items that needed more than one attempt (their worker died mid-task)."""
        return [r for r in self.items if (r.get("attempts") or 0) > 1]

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.failed else EXIT_OK

    def summary(self) -> dict:
        counts = {s: sum(r["status"] == s for r in self.items) for s in ("ok", "cached", "failed")}
        return {"total": len(self.items), **counts}

    def describe(self, store: Path) -> str:
        """The console summary: counts, each failure with its reason, where the lists are."""
        s = self.summary()
        lines = [f"{s['total']} items: {s['ok']} processed, {s['cached']} unchanged, {s['failed']} failed "
                 f"in {self.wall_s:.1f} s; store: {store}"]
        safe = terminal_safe  # ids, paths and reasons come from the inputs: no control characters reach the terminal
        lines += [f"  FAILED {safe(r['item'])}: {safe(r['reason'])}" for r in self.failed]
        lines += [f"  retried {safe(r['item'])}: ran {r['attempts']} times (a worker was lost), {r['status']}"
                  for r in self.retried]
        lines += [f"  warning {safe(r['item'])}: {safe(w)}" for r in self.items for w in r.get("warnings") or []]
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
        return Client(scheduler, timeout="30s")
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


def submit_items(client, items, cfg: Config, store: Path, threads: int | None, run_id: str) -> dict:
    """``client.map`` the items, one call per resource group.  Returns {future: item}."""
    gpu_cluster = bool(gpu_workers(client))
    groups: dict[str, tuple[dict | None, list]] = {}
    for item in items:
        res = item_resources(item, cfg, gpu_cluster)
        groups.setdefault(json.dumps(res, sort_keys=True), (res, []))[1].append(item)
    by_future = {}
    for res, group in groups.values():
        futures = client.map(process_item, group, cfg=cfg, store=str(store), torch_threads=threads,
                             run_id=run_id, key=[f"item-{item_key(i.id)}-{run_id[:8]}" for i in group],
                             pure=False, resources=res)
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


def stop_overdue(client, by_future: dict, pending: set, watch, timeout_s: float) -> list[dict]:
    """Cancel items running longer than ``timeout_s`` and restart their workers; their report rows."""
    overdue = watch.overdue(timeout_s)
    if not overdue:
        return []
    by_id = {item.id: f for f, item in by_future.items() if f in pending}
    rows, restart = [], set()
    for item_id, worker, seconds in overdue:
        fut = by_id.get(item_id)
        watch.finish(item_id)
        if fut is None:
            continue
        client.cancel(fut)  # before the restart, so the scheduler does not run it again elsewhere
        pending.discard(fut)
        restart.add(worker)
        rows.append((by_future[fut], worker, seconds))
    error = _restart_workers(client, sorted(restart))
    return [timed_out_row(item, w, s, timeout_s, watch.attempts(item.id), error) for item, w, s in rows]


def _restart_workers(client, workers: list[str]) -> str | None:
    """Restart workers through their nannies; None on success, else why not (one line)."""
    if not workers:
        return None
    try:
        client.restart_workers(workers, timeout=120, raise_for_error=True)
        return None
    except Exception as e:  # e.g. a worker without a nanny: the item is still reported, the run goes on
        return f"{e.__class__.__name__}: {e}".splitlines()[0][:200]


def report_row(rows: list[dict], bar, progress: bool, row: dict) -> None:
    """Record one item's final row: append it, note failures and retries on the bar, advance the bar."""
    rows.append(row)
    if row["status"] == "failed" and progress:  # without a bar the summary lists failures
        bar.write(f"failed: {terminal_safe(row['item'])}: {terminal_safe(row['reason'])}")
    elif row.get("attempts", 1) > 1 and progress:
        bar.write(f"retried: {terminal_safe(row['item'])} ran {row['attempts']} times (a worker was lost)")
    bar.update(1)


def collect(client, by_future: dict, cfg: Config, watch, bar, progress: bool) -> list[dict]:
    """Report rows as tasks finish; enforces the per-item timeout; records attempts."""
    from distributed import wait

    rows: list[dict] = []
    pending = set(by_future)
    add = functools.partial(report_row, rows, bar, progress)

    while pending:
        try:
            done = wait(pending, timeout=1.0, return_when="FIRST_COMPLETED").done
        except TimeoutError:
            done = set()
        for fut in done:
            item = by_future[fut]
            pending.discard(fut)
            watch.finish(item.id)
            try:
                row = fut.result()
                row["attempts"] = max(1, watch.attempts(item.id))
            except Exception as e:  # the worker died too often, or the task could not run
                row = failed_task_row(item, e, watch.attempts(item.id))
            add(row)
            fut.release()
        for row in stop_overdue(client, by_future, pending, watch, cfg.jobs.item_timeout_s):
            add(row)
    return rows


def compute_items(items, store: Path, cfg: Config, scheduler: str | None, workers: int | None,
                  progress: bool, client=None) -> list[dict]:
    """Run every item on the cluster; one report row per item.

    ``client``: an existing ``distributed.Client`` to use (and leave open);
    otherwise one is made on ``scheduler`` or on a new local cluster of
    ``workers`` processes, and closed at the end.
    """
    import dask

    cross_local = client is None and not scheduler and wants_cross_item(cfg)  # the GPU path's own local cluster
    n_workers = workers or default_workers()
    threads = max(1, (os.cpu_count() or 1) // n_workers) if not (scheduler or client) else None
    run_id = uuid.uuid4().hex
    watch = ItemWatch(run_id)
    scratch = {"temporary-directory": str(StoreLayout(store).scratch)}  # a local cluster writes only in the store
    with dask.config.set(scratch), contextlib.ExitStack() as stack:
        if client is None:  # made here, inside the scratch setting, and closed on the way out
            client = stack.enter_context(local_client(workers, store, cfg) if cross_local
                                         else _client(scheduler, n_workers, store, cfg))
        bar = stack.enter_context(_progress(len(items), progress))
        client.subscribe_topic(START_TOPIC, watch.on_event)
        try:
            if cross_local or wants_cross_item(cfg, client):  # GPU path: see jobs/gpu_stage.py
                rows: list[dict] = []
                CrossItemRun(client, items, cfg, store, run_id=run_id, watch=watch,
                             add_row=functools.partial(report_row, rows, bar, progress), failed_row=failed_task_row,
                             stop_overdue=stop_overdue, torch_threads=1 if cross_local else threads).run()
                return rows
            return collect(client, submit_items(client, items, cfg, store, threads, run_id), cfg, watch,
                           bar, progress)
        finally:
            client.unsubscribe_topic(START_TOPIC)


def _stage_totals(rows: list[dict]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for r in rows:
        for k, v in (r.get("timings") or {}).items():
            totals[k] = round(totals.get(k, 0.0) + v, 3)
    return totals


def write_run_report(store: Path, report: RunReport, cfg: Config, started: str) -> Path:
    """Write ``STORE/report.json`` atomically."""
    body = {
        "started_utc": started,
        "wall_s": round(report.wall_s, 3),
        "config_hash": cfg.feature_hash(),
        "summary": report.summary(),
        "retried": [{"item": r["item"], "attempts": r["attempts"], "status": r["status"]} for r in report.retried],
        "stages_s": _stage_totals(report.items),
        "lists": report.lists,
        "items": report.items,
    }
    path = StoreLayout(store).report
    write_text_atomic(path, json.dumps(body, indent=2, ensure_ascii=False))
    return path


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="items", unit="item", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def run_catalog(inputs: list[str], store: Path, cfg: Config, *, scheduler: str | None = None,
                workers: int | None = None, progress: bool = True, re_extract: bool = False,
                lists: str = "rebuild", client=None) -> RunReport:
    """Process every item of ``inputs`` into ``store`` and write lists + report.json.

    Refuses (UsageError) a store whose features came from other models,
    unless ``re_extract`` (see :func:`reelsim.storage.provenance.guard_model_change`).

    Holds the store's lock (:class:`~reelsim.storage.lock.StoreLock`) for the
    whole run: a second run on the same store is refused.

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
    with StoreLock(store):
        remove_stale_temp_files(store)
        needed = [m for m in MODALITIES if any(m in models_needed(i) for i in items)]
        guard_model_change(store, model_stamps(cfg.models, needed), [i.id for i in items], re_extract=re_extract)
        report = RunReport(items=[status_row_for_problem(p) for p in problems])
        if items:
            report.items += compute_items(items, store, cfg, scheduler, workers, progress, client)
        order = {i.id: n for n, i in enumerate(items)}
        report.items.sort(key=lambda r: (order.get(r["item"], -1), r["item"]))
        failure = None
        try:
            report.lists = _lists(store, report, cfg, lists, progress)
        except Exception as e:  # the items are done: report them, and why there are no new lists
            failure, report.lists = e, {"error": lists_error(e)}
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
    """Neighbour lists over the items that have a shard (``mode``: ``rebuild`` or ``add``); a small summary.

    ``rebuild`` lists this run's items and every other item with a complete
    shard of this run's models in the store (e.g. added by ``reelsim add``);
    an item that failed in this run is left out, even if an older shard of it exists.
    """
    done = [r["item"] for r in report.items if r["status"] in ("ok", "cached")]
    if mode == "none":
        return {}
    if mode != "add":
        seen = {r["item"] for r in report.items}
        done += sorted(i for i in usable_shards(store, model_stamps(cfg.models)) if i not in seen)
    if not done:
        return {}
    t1 = time.perf_counter()
    make = add_items if mode == "add" else build_lists
    lists = make(store, done, cfg.fusion, progress=progress, text_model=cfg.models.text)
    lists["seconds"] = round(time.perf_counter() - t1, 3)
    return lists
