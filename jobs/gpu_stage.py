"""The GPU path on Dask: CPU workers decode, GPU workers embed clips of many videos in large batches.

Per item, three tasks (the stages of :mod:`reelsim.pipeline.batcher`):

``prepare`` (a CPU worker, ``DECODE`` resource where workers advertise it)
    hashes the inputs (an item with a current shard stops here, ``cached``),
    decodes once, detects shots, cuts the clips and keyframes, computes audio
    and text on the CPU, and keeps the pixels where they are: in that
    worker's memory (``dask`` transport), or in ``/dev/shm`` (``shm``
    transport: the task returns only a handle). A tiny ``summary`` task, run
    where the data is, tells the driver how many rows the item brings.
``embed`` (a GPU worker, ``GPU`` resource)
    takes the prepared items of one batch, whole, until they hold
    ``jobs.gpu_batch`` rows (:func:`~reelsim.pipeline.batcher.take_batch`),
    and runs them through the video and image models in batches of that size.
    With the ``dask`` transport the pixels come straight from the CPU workers
    (worker to worker, never through the scheduler or the driver), and Dask
    fetches the next batch's inputs while this one computes.
``finish`` (a CPU worker) pools the item's embeddings and writes its shard
    (atomically, as the per-item path does); its small report row goes to the driver.

Faults: a GPU worker killed mid-batch loses its task; the scheduler runs the
batch again on a GPU worker (a replacement, or another), from the prepared
items, which are still held (or recomputed from the video if their CPU
worker died too). Every item still gets exactly one row and one shard.

Flow control: the driver keeps at most two ``prepare`` tasks per CPU worker
queued and stops preparing while the prepared-but-unfinished rows exceed
four batches per GPU worker, so memory stays bounded by the batch size,
never by the catalog.

:func:`local_client` starts the machine-local cluster of this path (``reelsim
run --device cuda``): one CPU worker per core but one, plus one GPU worker per
CUDA device (two threads, so one batch is read and staged while the other
computes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from reelsim.config import Config
from reelsim.extractors import registry
from reelsim.extractors.device import device_name, resolve_device
from reelsim.extractors.registry import LOADS
from reelsim.jobs.tasks import (
    announce_start,
    failure_reason,
    input_hashes,
    limit_threads,
    load_models,
    ok_fields,
    status_row,
    worker_name,
)
from reelsim.pipeline.batcher import Prepared, complete_item, embed_batch, prepare_item, take_batch
from reelsim.pipeline.item import Models
from reelsim.storage.layout import StoreLayout, item_key
from reelsim.storage.manifest import Item
from reelsim.storage.shards import shard_is_current, write_shard
from reelsim.storage.shm import remove_transfer_dir, transfer_dir

#: Dask event topic on which every embed task announces its start (``phase`` ``start``), and again once its
#: worker has the models (``models-loaded``): the driver's clock for ``jobs.batch_timeout_s`` starts then.
BATCH_TOPIC = "reelsim-gpu-batch"
#: Worker resource of the CPU workers of a GPU cluster (``dask worker --resources DECODE=1``).
DECODE = "DECODE"
GPU = "GPU"
#: Threads (and GPU resource units) of each GPU worker of :func:`local_client`: one batch is read and
#: staged while the other computes.
GPU_WORKER_THREADS = 2


# ------------------------------------------------------------------ choosing the path


def worker_resources(client) -> dict[str, list[str]]:
    """resource name -> addresses of the workers that advertise it."""
    out: dict[str, list[str]] = {}
    for addr, w in client.scheduler_info(n_workers=-1)["workers"].items():
        for name, amount in (w.get("resources") or {}).items():
            if amount > 0:
                out.setdefault(name, []).append(addr)
    return out


def wants_cross_item(cfg: Config, client=None) -> bool:
    """Whether this run takes the GPU path (``jobs.cross_item``).

    ``on``/``off`` decide; ``auto`` is on when the models run on CUDA: the
    configured device resolves to CUDA on the driver, or ``client``'s cluster
    has workers advertising a ``GPU`` resource.
    """
    mode = cfg.jobs.cross_item
    if mode != "auto":
        return mode == "on"
    if device_name(cfg.models.device).startswith("cuda"):
        return True
    return client is not None and bool(worker_resources(client).get(GPU))


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
    """``shm`` or ``dask`` for ``jobs.clip_transport`` on this cluster."""
    mode = cfg.jobs.clip_transport
    if mode != "auto":
        return mode
    return "shm" if workers_are_local(client) else "dask"


@contextlib.contextmanager
def local_client(cpu_workers: int | None, store, cfg: Config):
    """A ``distributed.Client`` on a new machine-local cluster for the GPU path; both closed on exit.

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
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0", "host": "127.0.0.1"}}
    with dask.config.set({"distributed.scheduler.allowed-failures": cfg.jobs.max_worker_deaths}):
        cluster = SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR)
    with cluster, Client(cluster) as client:
        client.wait_for_workers(len(workers), timeout=300)
        yield client


# ------------------------------------------------------------------ tasks (run on workers)


@dataclass
class Staged:
    """What ``prepare`` returns: the prepared item, or the item's final row when nothing is left to do.

    prepared : the item for the GPU stage; None when ``done``.
    hashes : the inputs' sha256 (stored with the shard).
    row : the report row so far (worker, seconds, model loads of this stage); final when ``done``.
    done : nothing is left to do: the shard is current (``cached``) or the item ``failed``.
    """

    item: Item
    prepared: Prepared | None
    hashes: dict
    row: dict
    done: bool

    def summary(self) -> dict:
        """What the driver needs: rows to embed, shared files, and the row when the item is done."""
        p = self.prepared
        return {"item": self.item.id, "done": self.done, "row": self.row if self.done else None,
                "rows": p.n_rows if p else 0, "nbytes": p.nbytes if p else 0,
                "shared": p.shared_paths() if p else []}


def clip_len_of(cfg: Config) -> int:
    """Frames per clip of the configured video model (its class attribute: nothing is loaded)."""
    return registry.get_class("visual", cfg.models.visual).clip_len


def prepare_task(item: Item, cfg: Config, store: str, torch_threads: int | None = None, run_id: str | None = None,
                 shared_dir: str | None = None) -> Staged:
    """Stage 1 on a CPU worker: :func:`~reelsim.pipeline.batcher.prepare_item` unless the shard is current.

    Audio and text models run here, on CPU. With ``shared_dir`` the pixels go
    to shared memory and only handles are returned.
    """
    t0 = time.perf_counter()
    row = status_row(item.id, item.kind, "failed")
    row.update(attempts=1, worker=worker_name())
    limit_threads(torch_threads)
    announce_start(item.id, run_id)
    hashes: dict = {}
    try:
        hashes = input_hashes(item)
        if shard_is_current(StoreLayout(store).shard(item.id), config_hash=cfg.feature_hash(), input_sha256=hashes):
            row["status"] = "cached"
            return Staged(item, None, hashes, _timed(row, t0), done=True)
        cpu_side = (("audio",) if item.video else ()) + (("text",) if item.text else ())
        models = load_models(item, cfg, run_id, device="cpu", modalities=cpu_side)
        prepared = prepare_item(item, cfg, models, clip_len=clip_len_of(cfg))
        if shared_dir:
            prepared = prepared.share(shared_dir, item_key(item.id))
        row["status"] = "prepared"
        return Staged(item, prepared, hashes, _timed(row, t0), done=False)
    except Exception as e:  # noqa: BLE001  one bad item never aborts the batch
        row["reason"] = failure_reason(e)
        return Staged(item, None, hashes, _timed(row, t0), done=True)


def _timed(row: dict, t0: float) -> dict:
    row["seconds"] = round(time.perf_counter() - t0, 3)
    row["model_loads"] = dict(sorted(LOADS.items()))
    return row


def staged_summary(staged: Staged) -> dict:
    """The small record of a prepared item the driver reads (runs where the prepared item is)."""
    return staged.summary()


def announce_batch(run_id: str, batch_id: int, staged, phase: str) -> None:
    """Log a batch's ``phase`` on :data:`BATCH_TOPIC` from the Dask worker running it (nothing elsewhere)."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not on a Dask worker
        return
    worker.log_event(BATCH_TOPIC, {"run": run_id, "batch": batch_id, "items": [s.item.id for s in staged],
                                   "worker": worker.address, "pid": os.getpid(), "phase": phase})


def embed_task(cfg: Config, run_id: str, batch_id: int, *staged: Staged):
    """Stage 2 on a GPU worker: one cross-item batch (:func:`~reelsim.pipeline.batcher.embed_batch`).

    Announces itself on :data:`BATCH_TOPIC` (run, batch, items, worker, pid, phase ``start``), and
    again once the models are loaded (phase ``models-loaded``).
    """
    announce_batch(run_id, batch_id, staged, "start")
    t0 = time.perf_counter()
    models = Models(cfg)
    visual, image = models.get("visual"), models.get("image")
    load_s = time.perf_counter() - t0
    announce_batch(run_id, batch_id, staged, "models-loaded")
    started = time.time()
    result = embed_batch([s.prepared for s in staged], visual, image, batch=cfg.jobs.gpu_batch)
    result.stats.update(batch=batch_id, worker=worker_name(), load_s=round(load_s, 3), device=str(visual.device),
                        started=started, ended=time.time(), model_loads=dict(sorted(LOADS.items())))
    return result


def finish_task(staged: Staged, result, cfg: Config, store: str) -> dict:
    """Stage 3 on a CPU worker: pool the item's embeddings and write its shard; its report row."""
    t0 = time.perf_counter()
    row = dict(staged.row, status="failed", worker=worker_name())
    try:
        features = complete_item(staged.prepared, result.embedded[staged.item.id], result, cfg)
        write_shard(store, features, config_hash=cfg.feature_hash(), input_sha256=staged.hashes)
        row.update(ok_fields(features))
        stats = result.stats
        rows = staged.prepared.n_rows
        share = stats["seconds"] * rows / max(1, stats["clips"] + stats["images"])
        row["timings"] = {**row["timings"], "gpu_batch_share_s": round(share, 4),
                          "finish_s": round(time.perf_counter() - t0, 4)}
        row["batch"] = {k: stats[k] for k in ("batch", "items", "clips", "images", "batches", "seconds", "fill_s",
                                             "load_s", "worker", "device", "started", "ended", "model_loads")}
    except Exception as e:  # noqa: BLE001  one bad item never aborts the batch
        row["reason"] = failure_reason(e)
    row["seconds"] = round(staged.row["seconds"] + time.perf_counter() - t0, 3)
    row["model_loads"] = dict(sorted(LOADS.items()))
    return row


# ------------------------------------------------------------------ the driver


class CrossItemRun:
    """The driver's side of the GPU path: submit, batch, collect (see the module docstring).

    Parameters
    ----------
    client : distributed.Client
    items : the catalog items to run.
    cfg, store : the run's configuration and store.
    run_id : this run's id (task keys, events).
    watch : :class:`~reelsim.jobs.watch.ItemWatch` fed by the prepare tasks' start events.
    add_row : called with each item's final report row, once per item.
    failed_row : ``(item, exception, attempts) -> row`` for a task that did not return.
    stop_overdue : ``(client, {future: item}, pending set, watch, timeout_s) -> rows``; cancels
        prepare tasks running past ``jobs.item_timeout_s`` and restarts their workers.
    restart_workers : ``(addresses) -> None or why not`` (one line); restarts the GPU worker of a
        batch running past ``jobs.batch_timeout_s``.
    torch_threads : torch threads of each CPU worker (None: leave as is).
    """

    def __init__(self, client, items: list[Item], cfg: Config, store, *, run_id: str, watch,
                 add_row: Callable[[dict], None], failed_row: Callable, stop_overdue: Callable,
                 restart_workers: Callable[[list[str]], str | None],
                 torch_threads: int | None = None):
        self.client, self.cfg, self.store, self.run_id = client, cfg, str(store), run_id
        self.watch, self.add_row, self.failed_row, self.stop_overdue = watch, add_row, failed_row, stop_overdue
        self.restart_workers = restart_workers
        self.batch_clock: dict[int, tuple[str, float | None]] = {}  # batch id -> (worker, running since)
        self.threads = torch_threads
        self.todo = list(reversed(items))
        resources = worker_resources(client)
        self.cpu_res = {DECODE: 1} if resources.get(DECODE) else None
        self.gpu_res = {GPU: 1} if resources.get(GPU) else None
        n_cpu = len(resources.get(DECODE) or client.scheduler_info(n_workers=-1)["workers"]) or 1
        n_gpu = max(1, len(resources.get(GPU) or []))
        self.max_preparing = 2 * n_cpu
        self.max_waiting_rows = 4 * cfg.jobs.gpu_batch * n_gpu
        self.transport = choose_transport(cfg, client)
        self.shared_dir = (str(transfer_dir(run_id, StoreLayout(store).scratch)) if self.transport == "shm"
                           else None)
        self.preparing: dict = {}  # summary future -> (item, prepare future)
        self.ready: list = []  # (item, prepare future, summary) in arrival order
        self.finishing: dict = {}  # finish future -> (item, batch id)
        self.batches: dict[int, dict] = {}  # batch id -> {"future", "left", "preps", "shared"}
        self.waiting_rows = 0
        self.n_batches = 0
        self.done = None  # distributed.as_completed of the summary and finish futures (made in run)

    # -- steps ---------------------------------------------------------------
    def top_up(self) -> None:
        """Submit prepare tasks while the window has room."""
        while self.todo and len(self.preparing) < self.max_preparing and self.waiting_rows < self.max_waiting_rows:
            item = self.todo.pop()
            key = f"{item_key(item.id)}-{self.run_id[:8]}"
            prep = self.client.submit(prepare_task, item, self.cfg, self.store, self.threads, self.run_id,
                                      self.shared_dir, key=f"prepare-{key}", pure=False, resources=self.cpu_res)
            summary = self.client.submit(staged_summary, prep, key=f"summary-{key}", pure=False)
            self.preparing[summary] = (item, prep)
            self.done.add(summary)

    def dispatch(self) -> None:
        """Submit full batches (and the last, partial one once nothing is left to prepare)."""
        flush = not self.todo and not self.preparing
        while self.ready:
            keys = take_batch([(item.id, s["rows"]) for item, _, s in self.ready], self.cfg.jobs.gpu_batch,
                              flush=flush)
            if not keys:
                return
            taken, self.ready = self.ready[: len(keys)], self.ready[len(keys):]
            self.submit_batch(taken)

    def submit_batch(self, taken: list) -> None:
        bid = self.n_batches
        self.n_batches += 1
        future = self.client.submit(embed_task, self.cfg, self.run_id, bid, *[p for _, p, _ in taken],
                                    key=f"gpu-batch-{bid}-{self.run_id[:8]}", pure=False, resources=self.gpu_res)
        self.batches[bid] = {"future": future, "left": len(taken), "preps": [p for _, p, _ in taken],
                             "shared": [path for _, _, s in taken for path in s["shared"]],
                             "rows": sum(s["rows"] for _, _, s in taken)}
        for item, prep, s in taken:
            fin = self.client.submit(finish_task, prep, future, self.cfg, self.store,
                                     key=f"finish-{item_key(item.id)}-{self.run_id[:8]}", pure=False,
                                     resources=self.cpu_res)
            self.finishing[fin] = (item, bid, s["attempts"])
            self.done.add(fin)

    def on_summary(self, fut) -> None:
        item, prep = self.preparing.pop(fut)
        attempts = self.watch.finish(item.id)  # the prepare task's attempts (a killed CPU worker's item ran again)
        try:
            summary = fut.result()
        except Exception as e:  # noqa: BLE001  the worker died too often, or the task could not run
            self.add_row(self.failed_row(item, e, attempts))
            prep.release()
            return
        finally:
            fut.release()
        summary["attempts"] = max(1, attempts)
        if summary["done"]:
            summary["row"]["attempts"] = summary["attempts"]
            self.add_row(summary["row"])
            prep.release()
            return
        self.ready.append((item, prep, summary))
        self.waiting_rows += summary["rows"]

    def on_finish(self, fut) -> None:
        item, bid, attempts = self.finishing.pop(fut)
        try:
            row = fut.result()
            row["attempts"] = attempts
        except Exception as e:  # noqa: BLE001  e.g. the GPU worker died more often than allowed
            row = self.failed_row(item, e, attempts)
        fut.release()
        self.add_row(row)
        batch = self.batches[bid]
        batch["left"] -= 1
        if batch["left"] == 0:  # the batch and its inputs are no longer needed by anyone
            self.drop_batch(bid)

    def drop_batch(self, bid: int) -> None:
        """Release batch ``bid``'s future and inputs and remove its shared-memory files."""
        batch = self.batches.pop(bid)
        self.batch_clock.pop(bid, None)
        self.waiting_rows -= batch["rows"]
        batch["future"].release()
        for prep in batch["preps"]:
            prep.release()
        for path in batch["shared"]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def on_batch_event(self, event) -> None:
        """:data:`BATCH_TOPIC` handler: the batch's clock stops while its worker loads models, then starts."""
        _, msg = event
        if not isinstance(msg, dict) or msg.get("run") != self.run_id:
            return
        running_since = time.monotonic() if msg.get("phase") == "models-loaded" else None
        self.batch_clock[msg["batch"]] = (msg.get("worker", "?"), running_since)

    def stop_slow_batches(self) -> None:
        """Cancel batches running past ``jobs.batch_timeout_s``; restart their workers; their items fail."""
        timeout_s = self.cfg.jobs.batch_timeout_s
        now = time.monotonic()
        slow = {bid: (worker, now - since) for bid, (worker, since) in list(self.batch_clock.items())
                if since is not None and timeout_s > 0 and now - since > timeout_s and bid in self.batches}
        if not slow:
            return
        finishing = {fin: (item, bid) for fin, (item, bid, _) in self.finishing.items() if bid in slow}
        self.client.cancel([self.batches[bid]["future"] for bid in slow] + list(finishing))
        error = self.restart_workers(sorted({w for w, _ in slow.values()}))
        action = "its worker was restarted" if error is None else f"its worker could not be restarted ({error})"
        for fin, (item, bid) in finishing.items():
            worker, seconds = slow[bid]
            batch = self.batches[bid]
            row = status_row(item.id, item.kind, "failed",
                             f"timed out: GPU batch {bid} ({len(batch['preps'])} items, {batch['rows']} clips and "
                             f"images) still running after {seconds:.0f} s (jobs.batch_timeout_s {timeout_s:g} s) "
                             f"on {worker}; {action}; run again to redo it")
            row.update(attempts=self.finishing.pop(fin)[2], worker=worker, timed_out=True)
            fin.release()
            self.add_row(row)
        for bid in slow:
            self.drop_batch(bid)

    def check_overdue(self) -> None:
        by_future = {prep: item for item, prep in self.preparing.values()}
        pending = set(by_future)
        for row in self.stop_overdue(self.client, by_future, pending, self.watch, self.cfg.jobs.item_timeout_s):
            self.add_row(row)
        for summary, (item, prep) in list(self.preparing.items()):
            if prep not in pending:  # cancelled for its timeout: its row is in
                del self.preparing[summary]

    def run(self) -> None:
        """Until every item has its row (futures consumed with ``as_completed``: no per-pass work per pending one)."""
        from distributed import as_completed

        self.done = as_completed([], raise_errors=False)
        check = time.monotonic() + 1.0
        self.client.subscribe_topic(BATCH_TOPIC, self.on_batch_event)
        try:
            while self.todo or self.preparing or self.ready or self.finishing:
                self.top_up()
                self.dispatch()
                done = self.done.next_batch(block=False)
                if not done:
                    time.sleep(0.02)
                for fut in done:
                    if fut in self.preparing:
                        self.on_summary(fut)
                    elif fut in self.finishing:
                        self.on_finish(fut)
                    # else: a task cancelled for its timeout (its row is in)
                if time.monotonic() >= check:
                    self.check_overdue()
                    self.stop_slow_batches()
                    check = time.monotonic() + 1.0
        finally:
            self.client.unsubscribe_topic(BATCH_TOPIC)
            if self.shared_dir:
                remove_transfer_dir(self.shared_dir)
