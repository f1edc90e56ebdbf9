"""The batch job: catalog in, shards written on Dask workers, lists out.

:func:`run_catalog` holds the store (one write session), checks the models,
runs every item through the stages (:mod:`reelsim.jobs.driver`: prepare,
embed, finish; each finished item is reported at once, a failed item is
recorded and the rest go on, and the driver keeps nothing of a finished
item), keeps the report rows on disk (:mod:`reelsim.jobs.rows`), then fuses
the item embeddings, builds the FAISS index and writes the neighbour lists.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from reelsim.config import MODALITIES, Config
from reelsim.errors import ReelsimError, StoreError, UsageError, WeightsNotFoundError
from reelsim.extractors.registry import model_stamps
from reelsim.jobs.connect import check_cluster_store, scheduler_client
from reelsim.jobs.console import progress_for
from reelsim.jobs.driver import StagedRun, cuda_run, local_client
from reelsim.jobs.rows import RowSpool
from reelsim.jobs.tables import terminal_safe
from reelsim.jobs.tasks import START_TOPIC, models_needed, status_row
from reelsim.jobs.watch import ItemWatch
from reelsim.reporting import Counter, Progress
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


def report_row(sink, tick: Counter, row: dict) -> None:
    """Record one item's final row: ``sink(row)``, then count it (``tick``), saying so when it failed or was retried."""
    sink(row)
    if row["status"] == "failed":  # a terminal without bars shows none of these: the summary lists failures
        tick(1, f"failed: {row['item']}: {row['reason']}")
    elif row.get("attempts", 1) > 1:
        tick(1, f"retried: {row['item']} ran {row['attempts']} times (a worker was lost)")
    else:
        tick(1)


def compute_items(items, store: Path, cfg: Config, scheduler: str | None, workers: int | None,
                  progress: Progress | None, client=None, sink=None) -> list[dict]:
    """Run every item through the stages (:class:`~reelsim.jobs.driver.StagedRun`); one report row per item.

    ``client``: an existing ``distributed.Client`` to use (and leave open);
    otherwise one is made on ``scheduler`` or on a new local cluster, and
    closed at the end: ``workers`` processes on the CPU, or CPU workers and one
    GPU worker per device when the models run on CUDA (:func:`~reelsim.jobs.driver.local_client`).
    ``sink(row)`` receives each row as it arrives (then nothing is returned);
    by default the rows are returned as a list.
    """
    import dask
    import distributed  # noqa: F401  (loads distributed's config defaults before the settings below)

    cuda_local = client is None and not scheduler and cuda_run(cfg)
    n_local = workers or default_workers()
    threads = (1 if cuda_local else max(1, (os.cpu_count() or 1) // n_local)) if not (scheduler or client) else None
    run_id = uuid.uuid4().hex
    watch = ItemWatch(run_id)
    settings = {"temporary-directory": str(StoreLayout(store).scratch),  # a local cluster writes only in the store
                # Dask keeps this many recent messages per connection for debugging, each compute-task message
                # with its task's items: 1000 (its default) held ~64 000 items' worth in the driver
                "distributed.admin.low-level-log-length": LOW_LEVEL_LOG_LENGTH}
    if client is None:
        check_cluster_store(store)  # the scheduler is probed as the client is made (scheduler_client)
    rows: list[dict] = []
    with dask.config.set(settings), contextlib.ExitStack() as stack:
        if client is None:  # made here, inside the scratch setting, and closed on the way out
            client = stack.enter_context(local_client(workers, store, cfg) if cuda_local
                                         else _client(scheduler, n_local, store, cfg))
        tick = Counter(progress, "items", total=len(items))
        client.subscribe_topic(START_TOPIC, watch.on_event)
        try:
            StagedRun(client, items, cfg, store, run_id=run_id, watch=watch,
                      add_row=functools.partial(report_row, sink or rows.append, tick), torch_threads=threads).run()
        finally:
            client.unsubscribe_topic(START_TOPIC)
    return rows


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


def run_catalog(inputs: list[str], store: Path, cfg: Config, *, scheduler: str | None = None,
                workers: int | None = None, progress: bool | Progress | None = True, re_extract: bool = False,
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

    ``progress``: where progress, lines and warnings go (:mod:`reelsim.reporting`);
    ``True`` draws bars on stderr, ``False`` leaves them to the ``reelsim`` logger
    (:func:`~reelsim.jobs.console.progress_for`).
    """
    progress = progress_for(progress)
    t0 = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    items, problems = read_inputs(inputs)
    store = StoreLayout(store).make_root()
    with WriteSession(store, "add" if lists == "add" else "run", progress=progress) as session:
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


def _lists(store: Path, report: RunReport, cfg: Config, mode: str, progress: Progress) -> dict:
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
