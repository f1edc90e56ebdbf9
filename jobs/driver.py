"""The one driver of a run: every item through declared stages, on any cluster, CPU or GPU.

The stages are declared once (:func:`declare_stages`), each with the Dask
resources its tasks ask for and its batch size, after NeMo Curator's video
pipelines::

    prepare   CPU workers (DECODE)   a group of items: hash, skip current shards, decode once (frames and
                                     audio from one demux pass), shots, clips, keyframes, audio, texts
    embed     the model's device     a batch: on CUDA prepared groups up to jobs.gpu_batch rows, on the CPU
              (GPU)                  one prepared group; clips through the video model, keyframes and product
                                     images through the image model
    finish    CPU workers (DECODE)   pool, write each item's shard, report its row

A CPU-only run is the same driver: the embed tasks then run on any worker,
with the models on the CPU, one prepared group a batch (``jobs.cross_item``,
:func:`batches_mix`: on CUDA batches gather many items that share forward
passes; on the CPU an item's features never depend on other items, and its
shard is written as soon as its group is embedded).

One consumption loop (:meth:`StagedRun.run`): the summary and finish
futures are consumed with ``as_completed``; between completions the loop
sleeps on the completion queue's condition until the next one or the next
timeout check, never polling. One timeout path (:meth:`StagedRun.check_timeouts`):
a prepare task past ``jobs.item_timeout_s`` (clock from the start event of
its items, paused while models load) and an embed task past
``jobs.batch_timeout_s`` (clock from its models being loaded) are cancelled
and their workers restarted. One isolation and retry policy (:func:`retry`):
a task of several units (a prepare task of several items, an embed task of
several groups) that fails as a whole (its worker died too often, an error,
a timeout) is split, each unit run again on its own, so a bad item fails
alone; a task of one unit fails its items, with the reason. (An embed task past
its timeout is not split: its groups would take as long again.)

Flow control: at most two prepare tasks per CPU worker are queued, and
preparing stops while the prepared-but-unfinished rows exceed four batches per
embed worker, so memory is bounded by the batch size, never by the catalog.
Embed and finish tasks have a higher priority than queued prepare tasks.

:func:`local_client` starts the machine-local cluster of a CUDA run
(``reelsim run --device cuda``): one CPU worker per core but one, plus one GPU
worker per CUDA device.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from reelsim.config import Config
from reelsim.extractors.device import device_name, resolve_device
from reelsim.jobs.tasks import (
    BATCH_TOPIC,
    embed_task,
    finish_task,
    prepare_task,
    staged_summary,
    status_row,
)
from reelsim.pipeline.batcher import take_batch
from reelsim.storage.layout import StoreLayout, item_key
from reelsim.storage.manifest import Item
from reelsim.storage.shm import remove_transfer_dir, transfer_dir

#: Worker resource of the CPU workers of a GPU cluster (``dask worker --resources DECODE=1``).
DECODE = "DECODE"
#: Worker resource of the GPU workers (``dask worker --resources GPU=1``).
GPU = "GPU"
#: Threads (and GPU resource units) of each GPU worker of :func:`local_client`: one batch is read and
#: staged while the other computes.
GPU_WORKER_THREADS = 2


# ------------------------------------------------------------------ the stages


@dataclass(frozen=True)
class Stage:
    """One stage of a run, as the driver submits it.

    name : ``prepare``, ``embed`` or ``finish``.
    task : the module-level task function (:mod:`reelsim.jobs.tasks`).
    resources : the Dask worker resources each task asks for (None: any worker).
    batch : how much one task takes: items per prepare task (small items; a video is one task),
        rows per embed task (clips, keyframes, images; groups are taken whole), a prepare task's
        items per finish task.
    priority : Dask priority: later stages first, so finished work is written before more is prepared.
    """

    name: str
    task: Callable
    resources: dict | None
    batch: int
    priority: int


def declare_stages(cfg: Config, resources: dict[str, list[str]]) -> dict[str, Stage]:
    """The three stages on a cluster whose workers advertise ``resources`` (name -> addresses).

    CPU stages go to workers advertising ``DECODE`` where some do, the embed stage to ``GPU`` workers
    where some do; otherwise any worker takes any task.

    Examples
    --------
    >>> s = declare_stages(Config(), {"GPU": ["tcp://a:1"]})
    >>> [(n, st.resources, st.batch) for n, st in s.items()]
    [('prepare', None, 64), ('embed', {'GPU': 1}, 256), ('finish', None, 1)]
    >>> declare_stages(Config().with_settings(["models.device=cpu"]), {})["embed"].batch  # CPU: a group alone
    1
    """
    cpu = {DECODE: 1} if resources.get(DECODE) else None
    rows = cfg.jobs.gpu_batch if batches_mix(cfg, resources) else 1  # 1: each prepared group is its own batch
    return {"prepare": Stage("prepare", prepare_task, cpu, cfg.jobs.group_size, 0),
            "embed": Stage("embed", embed_task, {GPU: 1} if resources.get(GPU) else None, rows, 1),
            "finish": Stage("finish", finish_task, cpu, 1, 2)}


def batches_mix(cfg: Config, resources: dict[str, list[str]]) -> bool:
    """Whether embed batches gather many items (``jobs.cross_item``): ``on``, or ``auto`` where the models run
    on CUDA (the driver sees a GPU, or workers advertise ``GPU``). Otherwise each prepared group (one video, or
    a group of small items) is embedded on its own, and its items are written as soon as it is done."""
    mode = cfg.jobs.cross_item
    return mode == "on" or (mode == "auto" and (bool(resources.get(GPU)) or cuda_run(cfg)))


def retry(stage: str, units: int, cause: str) -> str:
    """The isolation rule: ``split`` a failed task into one task per unit, or ``fail`` its items.

    ``cause`` is ``died`` (its worker died too often), ``error`` or ``timeout``.

    Examples
    --------
    >>> retry("prepare", 12, "died"), retry("prepare", 1, "timeout"), retry("embed", 3, "timeout")
    ('split', 'fail', 'fail')
    """
    if units <= 1 or (stage == "embed" and cause == "timeout"):
        return "fail"
    return "split"


def plan_tasks(items, group_size: int, n_workers: int) -> list[list]:
    """The prepare tasks of a catalog: each video on its own, the other items in groups of consecutive items.

    Groups hold at most ``group_size`` items, and fewer when the catalog is
    small, so that every one of ``n_workers`` workers gets a group. Videos
    and groups alternate, so that a window of tasks in flight holds both.

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


# ------------------------------------------------------------------ the cluster


def worker_resources(client) -> dict[str, list[str]]:
    """resource name -> addresses of the workers that advertise it."""
    out: dict[str, list[str]] = {}
    for addr, w in client.scheduler_info(n_workers=-1)["workers"].items():
        for name, amount in (w.get("resources") or {}).items():
            if amount > 0:
                out.setdefault(name, []).append(addr)
    return out


def workers_are_local(client) -> bool:
    """Whether every worker runs on this machine (in-process, loopback, or this host's name or address)."""
    import socket

    names = {"127.0.0.1", "localhost", "::1", socket.gethostname()}
    try:
        names.add(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    for addr in client.scheduler_info(n_workers=-1)["workers"]:
        if addr.startswith("inproc://"):
            continue
        host = addr.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
        if host not in names:
            return False
    return True


def choose_transport(cfg: Config, client) -> str:
    """``shm`` or ``dask`` for ``jobs.clip_transport`` on this cluster.

    ``auto``: ``shm`` when several worker processes share this machine (the
    clips cross processes without being pickled), else ``dask`` (one worker,
    in-process workers, or workers elsewhere: Dask hands the arrays over as
    they are, or worker to worker).
    """
    mode = cfg.jobs.clip_transport
    if mode != "auto":
        return mode
    workers = list(client.scheduler_info(n_workers=-1)["workers"])
    separate = [a for a in workers if not a.startswith("inproc://")]
    return "shm" if len(separate) > 1 and workers_are_local(client) else "dask"


def cuda_run(cfg: Config) -> bool:
    """Whether the models run on CUDA (``--device cuda``, or ``auto`` where the driver sees a GPU)."""
    return device_name(cfg.models.device).startswith("cuda")


def cause_of(error: BaseException) -> str:
    """``died`` for a task whose worker died too often (``KilledWorker``), else ``error``."""
    from distributed import KilledWorker

    return "died" if isinstance(error, KilledWorker) else "error"


@contextlib.contextmanager
def local_client(cpu_workers: int | None, store, cfg: Config):
    """A ``distributed.Client`` on a new machine-local cluster of CPU and GPU workers; both closed on exit.

    ``cpu_workers`` worker processes (default: cores - 1, at least 1) with one
    thread and the ``DECODE`` resource, and one GPU worker per CUDA device
    (``CUDA_VISIBLE_DEVICES`` set to it; one on a machine without CUDA, which
    then runs the same stages on CPU) with :data:`GPU_WORKER_THREADS` threads and
    as many ``GPU`` units. Scratch space is inside ``store``.
    """
    import dask
    import torch
    from distributed import Client, Nanny, Scheduler, SpecCluster

    n_cpu = cpu_workers or max(1, (os.cpu_count() or 2) - 1)
    n_gpu = torch.cuda.device_count() if resolve_device(cfg.models.device).type == "cuda" else 1
    scratch = str(StoreLayout(store).scratch)
    common = {"local_directory": scratch, "silence_logs": logging.ERROR}
    workers = {f"cpu-{i}": {"cls": Nanny, "options": {**common, "nthreads": 1, "resources": {DECODE: 1}}}
               for i in range(n_cpu)}
    for i in range(n_gpu):
        env = {"CUDA_VISIBLE_DEVICES": str(i)} if torch.cuda.is_available() else {}
        workers[f"gpu-{i}"] = {"cls": Nanny, "options": {**common, "nthreads": GPU_WORKER_THREADS, "env": env,
                                                         "resources": {GPU: GPU_WORKER_THREADS}}}
    logging.getLogger("distributed").setLevel(logging.ERROR)
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": cfg.jobs.dashboard_address, "host": "127.0.0.1"}}
    with dask.config.set({"distributed.scheduler.allowed-failures": cfg.jobs.max_worker_deaths}):
        cluster = SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR)
    with cluster, Client(cluster) as client:
        client.wait_for_workers(len(workers), timeout=300)
        yield client


def restart_workers(client, workers: list[str]) -> str | None:
    """Restart workers through their nannies; None on success, else why not (one line)."""
    if not workers:
        return None
    try:
        client.restart_workers(workers, timeout=120, raise_for_error=True)
        return None
    except Exception as e:  # noqa: BLE001  e.g. a worker without a nanny: the item is still reported, the run goes on
        return f"{e.__class__.__name__}: {e}".splitlines()[0][:200]


# ------------------------------------------------------------------ rows of tasks that did not return


def failed_task_row(item: Item, error: BaseException, attempts: int) -> dict:
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


def restart_action(restart_error: str | None) -> str:
    """What became of a timed-out task's worker, for its rows (``restart_error``: :func:`restart_workers`)."""
    return ("its worker was restarted" if restart_error is None
            else f"its worker could not be restarted ({restart_error})")


def timed_out_row(item: Item, worker: str, seconds: float, timeout_s: float, attempts: int,
                  restart_error: str | None) -> dict:
    row = status_row(item.id, item.kind, "failed",
                     f"timed out: still running after {seconds:.0f} s (--item-timeout {timeout_s:g} s) on "
                     f"{worker}; {restart_action(restart_error)}")
    row.update(attempts=attempts, worker=worker, seconds=seconds, timed_out=True)
    return row


# ------------------------------------------------------------------ the driver


@dataclass
class Unit:
    """One prepare task: its items, its futures and what the driver knows of it.

    items : the group (one video, or small items).
    prep, summary : the prepare future and its summary's (None once cancelled).
    owed : ids of the items still owed a row.
    rows : rows the group brings to the embed stage; shared : its shared-memory files.
    batch : the batch it is in (None before).
    finish : its finish future, once submitted.
    """

    key: str
    items: list[Item]
    prep: object
    summary: object
    owed: set = field(default_factory=set)
    rows: int = 0
    shared: list = field(default_factory=list)
    batch: int | None = None
    finish: object = None
    waiting: bool = False  # its rows count towards the driver's waiting rows


@dataclass
class Batch:
    """One embed task: its future, its units, and its clock (worker, running since)."""

    future: object
    units: list[str]
    rows: int
    worker: str = "?"
    since: float | None = None


class StagedRun:
    """The driver's side of a run: submit the stages, batch, collect rows (module docstring).

    Parameters
    ----------
    client : distributed.Client
    items : the catalog items to run.
    cfg, store : the run's configuration and store.
    run_id : this run's id (task keys, events).
    watch : :class:`~reelsim.jobs.watch.ItemWatch` fed by the prepare tasks' start events.
    add_row : called with each item's final report row, once per item.
    torch_threads : torch threads of each worker (None: leave as is).
    """

    def __init__(self, client, items: list[Item], cfg: Config, store, *, run_id: str, watch,
                 add_row: Callable[[dict], None], torch_threads: int | None = None):
        self.client, self.cfg, self.store, self.run_id = client, cfg, str(store), run_id
        self.watch, self.add_row, self.threads = watch, add_row, torch_threads
        resources = worker_resources(client)
        self.stages = declare_stages(cfg, resources)
        everyone = list(client.scheduler_info(n_workers=-1)["workers"])
        n_cpu = len(resources.get(DECODE) or everyone) or 1
        n_embed = len(resources.get(GPU) or everyone) or 1
        self.todo = deque(plan_tasks(items, cfg.jobs.group_size, n_cpu))
        self.max_preparing = 2 * n_cpu
        self.max_waiting_rows = 4 * cfg.jobs.gpu_batch * (len(resources.get(GPU) or []) or 1)
        self.n_embed = n_embed
        self.shared_dir = (str(transfer_dir(run_id, StoreLayout(store).scratch))
                           if choose_transport(cfg, client) == "shm" else None)
        self.units: dict[str, Unit] = {}
        self.preparing: set[str] = set()  # units whose summary is awaited
        self.ready: list[str] = []  # units prepared, waiting for a batch, in arrival order
        self.batches: dict[int, Batch] = {}
        self.futures: dict = {}  # consumed future -> (stage, unit key)
        self.earlier: dict[str, int] = {}  # attempts made in a group before it was split, per item
        self.waiting_rows = 0
        self.n_units = self.n_batches = 0
        self.done = None  # distributed.as_completed of summary and finish futures (made in run)

    # -- submitting ----------------------------------------------------------------------------
    def submit(self, stage: str, *args, key: str):
        st = self.stages[stage]
        return self.client.submit(st.task, *args, key=f"{stage}-{key}-{self.run_id[:8]}", pure=False,
                                  resources=st.resources, priority=st.priority)

    def prepare(self, items: list[Item]) -> None:
        n = self.n_units
        self.n_units += 1
        key = f"{item_key(items[0].id)}-{len(items)}-{n}"
        prep = self.submit("prepare", items, self.cfg, self.store, self.threads, self.run_id, self.shared_dir,
                           key=key)
        summary = self.client.submit(staged_summary, prep, key=f"summary-{key}-{self.run_id[:8]}", pure=False,
                                     priority=self.stages["finish"].priority)
        self.units[key] = Unit(key, items, prep, summary, owed={i.id for i in items})
        self.watch.expect(i.id for i in items)
        self.preparing.add(key)
        self.futures[summary] = ("summary", key)
        self.done.add(summary)

    def top_up(self) -> None:
        """Submit prepare tasks while the window has room."""
        while self.todo and len(self.preparing) < self.max_preparing and self.waiting_rows < self.max_waiting_rows:
            self.prepare(self.todo.popleft())

    def dispatch(self) -> None:
        """Submit full batches (and the last, partial one once nothing is left to prepare)."""
        flush = not self.todo and not self.preparing
        while self.ready:
            keys = take_batch([(k, self.units[k].rows) for k in self.ready], self.stages["embed"].batch, flush=flush)
            if not keys:
                return
            self.ready = self.ready[len(keys):]
            self.embed(keys)

    def embed(self, keys: list[str]) -> None:
        bid = self.n_batches
        self.n_batches += 1
        units = [self.units[k] for k in keys]
        future = self.submit("embed", self.cfg, self.run_id, bid, self.threads, *[u.prep for u in units],
                             key=f"batch-{bid}")
        self.batches[bid] = Batch(future, keys, sum(u.rows for u in units))
        for u in units:
            u.batch = bid
            self.finish(u, future)

    def finish(self, unit: Unit, result) -> None:
        # a key of its own per batch: a group split out of a failed batch gets a new finish task
        unit.finish = self.submit("finish", unit.prep, result, self.cfg, self.store, key=f"{unit.key}-b{unit.batch}")
        self.futures[unit.finish] = ("finish", unit.key)
        self.done.add(unit.finish)

    # -- consuming -----------------------------------------------------------------------------
    def attempts(self, item_id: str) -> int:
        """Attempts at an item (before a split included); forgets the item's clock."""
        return max(1, self.watch.finish(item_id) + self.earlier.pop(item_id, 0))

    def row(self, unit: Unit, row: dict) -> None:
        """An item's final row: reported, and its unit forgotten once every item of it has one."""
        unit.owed.discard(row["item"])
        if not unit.owed:
            self.drop(unit)
        self.add_row(row)

    def on_summary(self, unit: Unit, fut) -> None:
        self.preparing.discard(unit.key)
        try:
            summaries = fut.result()
        except Exception as e:  # noqa: BLE001  the worker died too often, or the task could not run
            self.failed(unit, "prepare", e, cause_of(e))
            return
        by_id = {s["item"]: s for s in summaries}
        for item in unit.items:
            s = by_id[item.id]
            if s["done"]:
                self.row(unit, {**s["row"], "attempts": self.attempts(item.id)})
            else:  # its clock stops; attempts are still counted (a prepare run again after a worker died)
                self.watch.pause(item.id)
                unit.rows += s["rows"]
                unit.shared += s["shared"]
        if not unit.owed:
            return
        if unit.rows == 0:  # nothing to embed (texts only): straight to finish
            self.finish(unit, None)
            return
        self.ready.append(unit.key)
        self.waiting_rows += unit.rows
        unit.waiting = True

    def on_finish(self, unit: Unit, fut) -> None:
        try:
            rows = fut.result()
        except Exception as e:  # noqa: BLE001  its batch failed, or its worker died too often
            batch = self.batches.get(unit.batch) if unit.batch is not None else None
            if batch is not None and batch.future.status in ("error", "cancelled"):
                self.batch_failed(unit.batch, batch.future.exception() if batch.future.status == "error" else e)
            else:
                self.failed(unit, "finish", e, "error")
            return
        for r in rows:
            self.row(unit, {**r, "attempts": self.attempts(r["item"])})
        for item in [i for i in unit.items if i.id in unit.owed]:  # never left without a row
            self.row(unit, failed_task_row(item, RuntimeError("its finish task returned no row"),
                                           self.attempts(item.id)))

    def batch_failed(self, bid: int, error: BaseException, cause: str | None = None) -> None:
        """An embed task failed as a whole: split its groups into batches of their own, or fail their items."""
        batch = self.batches.pop(bid, None)
        if batch is None:
            return
        cause = cause or cause_of(error)
        units = [self.units[k] for k in batch.units if k in self.units]
        for u in units:
            self.forget_finish(u)
        self.client.cancel([batch.future])
        batch.future.release()
        if retry("embed", len(units), cause) == "split":
            for u in units:
                self.embed([u.key])
            return
        for u in units:
            for item in [i for i in u.items if i.id in u.owed]:
                self.row(u, failed_task_row(item, error, self.attempts(item.id)))

    def failed(self, unit: Unit, stage: str, error: BaseException, cause: str) -> None:
        """A prepare or finish task failed as a whole: run its items one per task, or fail them."""
        owed = [i for i in unit.items if i.id in unit.owed]
        if stage == "prepare" and retry(stage, len(owed), cause) == "split":
            for item in owed:  # carried over to the item's own task
                self.earlier[item.id] = self.watch.finish(item.id) + self.earlier.pop(item.id, 0)
            self.drop(unit)
            for item in owed:
                self.prepare([item])
            return
        for item in owed:
            self.row(unit, failed_task_row(item, error, self.attempts(item.id)))

    def forget_finish(self, unit: Unit) -> None:
        if unit.finish is not None:
            self.futures.pop(unit.finish, None)
            self.client.cancel([unit.finish])
            unit.finish.release()
            unit.finish = None

    def drop(self, unit: Unit) -> None:
        """Forget a unit whose items all have their rows; release its futures; free its batch when the last."""
        self.units.pop(unit.key, None)
        self.preparing.discard(unit.key)
        for fut in (unit.summary, unit.finish):
            if fut is not None:
                self.futures.pop(fut, None)
                fut.release()
        bid = unit.batch
        if bid is not None and bid in self.batches and not any(self.units.get(k) for k in self.batches[bid].units):
            batch = self.batches.pop(bid)
            batch.future.release()
        if unit.waiting:
            self.waiting_rows -= unit.rows
            unit.waiting = False
        unit.prep.release()
        for path in unit.shared:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    # -- timeouts ------------------------------------------------------------------------------
    def on_batch_event(self, event) -> None:
        """:data:`BATCH_TOPIC` handler: a batch's clock stops while its worker loads models, then starts."""
        _, msg = event
        if not isinstance(msg, dict) or msg.get("run") != self.run_id:
            return
        batch = self.batches.get(msg.get("batch"))
        if batch is not None:
            batch.worker = msg.get("worker", "?")
            batch.since = time.monotonic() if msg.get("phase") == "models-loaded" else None

    def check_timeouts(self) -> None:
        """The one timeout path: prepare tasks past ``jobs.item_timeout_s``, embed tasks past
        ``jobs.batch_timeout_s``: cancelled, their workers restarted, then split or failed (:func:`retry`)."""
        overdue = self.watch.overdue(self.cfg.jobs.item_timeout_s)
        now, limit = time.monotonic(), self.cfg.jobs.batch_timeout_s
        slow = {bid: b for bid, b in self.batches.items()
                if limit > 0 and b.since is not None and now - b.since > limit}
        if not overdue and not slow:
            return
        hung: dict[str, list] = {}
        for item_id, worker, seconds in overdue:
            unit = next((u for k, u in self.units.items() if k in self.preparing and item_id in u.owed), None)
            if unit is not None:
                hung.setdefault(unit.key, []).append((item_id, worker, seconds))
        self.client.cancel([self.units[k].prep for k in hung] + [self.units[k].summary for k in hung]
                           + [b.future for b in slow.values()])
        workers = sorted({w for hits in hung.values() for _, w, _ in hits} | {b.worker for b in slow.values()})
        error = restart_workers(self.client, [w for w in workers if w != "?"])
        for key, hits in hung.items():
            unit = self.units[key]
            self.preparing.discard(key)
            self.futures.pop(unit.summary, None)
            if retry("prepare", len(unit.owed), "timeout") == "split":
                self.failed(unit, "prepare", TimeoutError("timed out"), "timeout")
                continue
            for item_id, worker, seconds in hits:
                item = next(i for i in unit.items if i.id == item_id)
                self.row(unit, timed_out_row(item, worker, seconds, self.cfg.jobs.item_timeout_s,
                                             self.attempts(item_id), error))
        for bid, batch in slow.items():
            self.batch_timed_out(bid, batch, now - batch.since, error)

    def batch_timed_out(self, bid: int, batch: Batch, seconds: float, error: str | None) -> None:
        limit = self.cfg.jobs.batch_timeout_s
        action = restart_action(error)
        units = [self.units[k] for k in batch.units if k in self.units]
        items = [(u, i) for u in units for i in u.items if i.id in u.owed]
        for u in units:
            self.forget_finish(u)
        self.batches.pop(bid, None)
        batch.future.release()
        for unit, item in items:
            row = status_row(item.id, item.kind, "failed",
                             f"timed out: embed batch {bid} ({len(items)} items, {batch.rows} clips and images) "
                             f"still running after {seconds:.0f} s (jobs.batch_timeout_s {limit:g} s) on "
                             f"{batch.worker}; {action}; run again to redo it")
            row.update(attempts=self.attempts(item.id), worker=batch.worker, timed_out=True)
            self.row(unit, row)

    # -- the loop ------------------------------------------------------------------------------
    def wait(self, until: float) -> None:
        """Sleep until a future completes or ``until`` (monotonic seconds), whichever comes first."""
        cond = self.done.thread_condition
        with cond:  # completions notify under this lock: none is missed between the check and the wait
            if not self.done.has_ready():
                cond.wait(timeout=max(0.0, until - time.monotonic()))

    def run(self) -> None:
        """Until every item has its row: one loop over ``as_completed`` (no per-pass work per pending future)."""
        from distributed import as_completed

        self.done = as_completed([], raise_errors=False)
        check = time.monotonic() + 1.0
        self.client.subscribe_topic(BATCH_TOPIC, self.on_batch_event)
        try:
            while self.todo or self.units:
                self.top_up()
                self.dispatch()
                self.wait(check)
                for fut in self.done.next_batch(block=False):
                    stage, key = self.futures.pop(fut, (None, None))
                    unit = self.units.get(key)
                    if unit is None:  # cancelled (a timeout, a split): its rows are in, or will come
                        continue
                    if stage == "summary":
                        self.on_summary(unit, fut)
                    else:
                        self.on_finish(unit, fut)
                if time.monotonic() >= check:
                    self.check_timeouts()
                    check = time.monotonic() + 1.0
        finally:
            self.client.unsubscribe_topic(BATCH_TOPIC)
            if self.shared_dir:
                remove_transfer_dir(self.shared_dir)
