"""Dask task functions of a run's three stages: module-level, plain picklable arguments, small results.

Every item goes through the same tasks (:mod:`reelsim.jobs.driver` submits them):

- :func:`prepare_task` (a CPU worker): a group of items (one video, or many
  small items): hash their inputs, stop at a current shard (``cached``), and
  prepare the others (:func:`reelsim.pipeline.batcher.prepare_items`: decode
  once, shots, clips, audio, texts); the clips stay where they were made (that
  worker's memory, or shared memory).
- :func:`staged_summary` (where the prepared group is): the small record the driver reads.
- :func:`embed_task` (the model's device): the prepared groups of one batch
  (:func:`reelsim.pipeline.batcher.embed_batch`).
- :func:`finish_task` (a CPU worker): pool each item's embeddings and write
  its shard; the items' report rows.

Big arrays never travel through the scheduler or the driver. Every failure an
item can cause comes back as ``status="failed"`` with a one-line ``reason``.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass

from reelsim.config import Config
from reelsim.errors import MediaError, ReelsimError
from reelsim.extractors import registry
from reelsim.extractors.registry import LOADS
from reelsim.pipeline.batcher import Embedded, Prepared, complete_item, embed_batch, prepare_items
from reelsim.pipeline.item import Models
from reelsim.storage.hashing import sha256_file, sha256_text
from reelsim.storage.layout import StoreLayout, item_key
from reelsim.storage.manifest import Item, check_input_file, input_files
from reelsim.storage.shards import shard_is_current, write_shard

_THREADS_SET = False
#: Dask event topic on which every item attempt announces its start (see jobs/watch.py).
START_TOPIC = "reelsim-item-start"
#: Dask event topic on which every embed task announces its start (``phase`` ``start``), and again once its
#: worker has the models (``models-loaded``): the driver's clock for ``jobs.batch_timeout_s`` starts then.
BATCH_TOPIC = "reelsim-gpu-batch"


def limit_threads(n: int | None) -> None:
    """Give torch ``n`` intra-op threads in this worker process (once).

    A fixed thread count makes CPU features bit-for-bit repeatable from run
    to run (see docs/cluster.md, "Determinism").  (``torch.use_deterministic_algorithms``
    is not needed for our CPU inference, and it would write an inductor cache
    folder outside the store.)
    """
    global _THREADS_SET
    if not _THREADS_SET:
        import h5py  # noqa: F401  (imported here, once, rather than inside a timed item)
        import torch

        if n:
            torch.set_num_threads(n)
        _THREADS_SET = True


def worker_name() -> str:
    """This process as the report names it: the Dask worker address, or host:pid outside Dask."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def announce_start(item_id: str | list[str], run_id: str | None, phase: str = "start") -> None:
    """Tell the driver (Dask event log) that an attempt at ``item_id`` starts here, now.

    ``item_id`` is one id, or the list of ids of a group task (one event for
    the whole group). ``phase`` is ``start`` (a new attempt: the timeout clock
    starts), ``loading-models`` (clock paused: loading is not the item's
    fault) or ``models-loaded`` (clock restarts).
    """
    if run_id is None:
        return
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    key = "items" if isinstance(item_id, list) else "item"
    worker.log_event(START_TOPIC, {"run": run_id, key: item_id, "phase": phase, "worker": worker.address,
                                   "host": socket.gethostname(), "pid": os.getpid()})


def input_hashes(item: Item) -> dict[str, str]:
    """sha256 of every input the item's features depend on (files and text)."""
    out = {}
    for modality, path in input_files(item).items():
        check_input_file(modality, path)  # before reading: a device or a FIFO would be read for ever
        try:
            out[modality] = sha256_file(path)
        except OSError as e:
            raise MediaError(f"{modality} file cannot be read ({e.strerror}): {path}") from None
    if item.text:
        out["text"] = sha256_text(item.text)
    return out


def models_needed(item: Item) -> tuple[str, ...]:
    """The modalities whose models analysing ``item`` uses."""
    needed = ("visual", "image", "audio") if item.video else ()
    needed += ("image",) if item.image and not item.video else ()
    return needed + (("text",) if item.text else ())


def load_models(items: list[Item], cfg: Config, run_id: str | None, *, device: str | None = None,
                modalities: tuple[str, ...]):
    """The ``modalities`` models of a group of ``items``, loaded once per worker process (registry cache).

    The first load on a worker can take a while; the driver's timeout clock
    for the items is paused meanwhile (``loading-models`` / ``models-loaded``).
    ``device`` overrides the configured one.
    """
    ids = [i.id for i in items] if len(items) > 1 else items[0].id  # one item: announced as ``item``
    models = Models(cfg, device=device)
    if not modalities:  # nothing to load: the clock runs on
        return models
    announce_start(ids, run_id, phase="loading-models")
    for modality in modalities:
        models.get(modality)
    announce_start(ids, run_id, phase="models-loaded")
    return models


def status_row(item_id: str, kind: str | None, status: str, reason: str | None = None) -> dict:
    """One item's line in report.json (the fields every status has)."""
    return {"item": item_id, "kind": kind, "status": status, "reason": reason,
            "seconds": 0.0, "n_shots": None, "decode_errors": None, "warnings": [], "timings": {},
            "attempts": 0 if status == "failed" else 1, "worker": None, "model_loads": {}}


def ok_fields(features) -> dict:
    """The report-row fields of an item whose shard was written: status, warnings, timings, shots."""
    warnings = list(features.warnings)
    n_shots = len(features.video.shots) if features.video else None
    if features.item.video and n_shots and "audio" not in features.embeddings:
        warnings.append("no audio track (or no decodable audio): no audio features, not an error")
    return {"status": "ok", "warnings": warnings, "timings": features.timings, "n_shots": n_shots,
            "decode_errors": features.video.decode_errors if features.video else None}


def failure_reason(e: BaseException) -> str:
    """One line for a failed item: the message of a :class:`ReelsimError` (bad media, weights ...),
    else ``internal error`` with the exception and where it was raised (an unexpected bug)."""
    if isinstance(e, ReelsimError):
        return str(e)
    where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    at = f" (at {os.path.basename(where.filename)}:{where.lineno})" if where else ""
    return f"internal error {e.__class__.__name__}: {e}{at}"


@dataclass
class Staged:
    """One item after :func:`prepare_task`: prepared, or already final.

    item : the catalog item.
    prepared : the item for the embed stage; None when ``done``.
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


def prepare_task(items: list[Item], cfg: Config, store: str, torch_threads: int | None = None,
                 run_id: str | None = None, shared_dir: str | None = None) -> list[Staged]:
    """Stage 1 on a CPU worker: hash each item, skip it when its shard is current, prepare the others.

    The audio and text models run here, on the CPU; the group's texts are
    embedded as one batch. With ``shared_dir`` the pixels go to shared memory
    and only handles are returned. One item's failure never affects the others.
    Each item's ``seconds`` is its share of the group's time.
    """
    t0 = time.perf_counter()
    worker = worker_name()
    limit_threads(torch_threads)  # imports torch: slow on a fresh worker, so before the items' clock starts
    announce_start([i.id for i in items] if len(items) > 1 else items[0].id, run_id)
    staged = []
    for item in items:
        row = status_row(item.id, item.kind, "failed")
        row.update(attempts=1, worker=worker)
        staged.append(Staged(item, None, {}, row, done=True))
    config_hash = cfg.feature_hash()
    todo = []
    for s in staged:
        try:
            s.hashes = input_hashes(s.item)
            if shard_is_current(StoreLayout(store).shard(s.item.id), config_hash=config_hash,
                                input_sha256=s.hashes):
                s.row["status"] = "cached"
            else:
                todo.append(s)
        except Exception as e:  # noqa: BLE001  (this item fails, the others go on)
            s.row["reason"] = failure_reason(e)
    if todo:
        cpu_side = tuple(m for m in ("audio", "text") if any(m in models_needed(s.item) for s in todo))
        try:
            models = load_models([s.item for s in todo], cfg, run_id, device="cpu", modalities=cpu_side)
            results = prepare_items([s.item for s in todo], cfg, models, clip_len=clip_len_of(cfg))
        except Exception as e:  # noqa: BLE001  (e.g. a model that does not load: every item of the group says so)
            results = [e] * len(todo)
        for s, prepared in zip(todo, results):
            if isinstance(prepared, Exception):
                s.row["reason"] = failure_reason(prepared)
                continue
            try:
                s.prepared = prepared.share(shared_dir, item_key(s.item.id)) if shared_dir else prepared
            except Exception as e:  # noqa: BLE001  (e.g. shared memory full: this item fails)
                s.row["reason"] = failure_reason(e)
                continue
            s.row["status"], s.done = "prepared", False
    share = round((time.perf_counter() - t0) / max(1, len(items)), 3)
    loads = dict(sorted(LOADS.items()))
    for s in staged:
        s.row.update(seconds=share, model_loads=loads)
    return staged


def staged_summary(staged: list[Staged]) -> list[dict]:
    """The small record of each prepared item the driver reads (runs where the prepared group is)."""
    return [s.summary() for s in staged]


def announce_batch(run_id: str, batch_id: int, item_ids: list[str], phase: str) -> None:
    """Log a batch's ``phase`` on :data:`BATCH_TOPIC` from the Dask worker running it (nothing elsewhere)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not on a Dask worker
        return
    worker.log_event(BATCH_TOPIC, {"run": run_id, "batch": batch_id, "items": item_ids, "worker": worker.address,
                                   "pid": os.getpid(), "phase": phase})


def mixes_items(cfg: Config, device) -> bool:
    """Whether a batch's items share forward passes (``jobs.cross_item``: ``auto`` = on CUDA only).

    On the CPU each item's rows then run on their own, so its features never depend on its batch-mates.
    """
    mode = cfg.jobs.cross_item
    return mode == "on" or (mode == "auto" and str(device).startswith("cuda"))


def embed_task(cfg: Config, run_id: str, batch_id: int, torch_threads: int | None, *groups: list[Staged]):
    """Stage 2 on the model's device: one batch (:func:`~reelsim.pipeline.batcher.embed_batch`).

    ``groups`` are whole prepare tasks' results; their items still to do are
    embedded (torch limited to ``torch_threads`` in this worker, as in
    :func:`prepare_task`). Announces itself on :data:`BATCH_TOPIC` (run, batch,
    items, worker, pid, phase ``start``), and again once the models are loaded (``models-loaded``).
    """
    limit_threads(torch_threads)
    preps = [s.prepared for g in groups for s in g if not s.done]
    ids = [p.item.id for p in preps]
    announce_batch(run_id, batch_id, ids, "start")
    t0 = time.perf_counter()
    models = Models(cfg)
    visual, image = models.get("visual"), models.get("image")
    load_s = time.perf_counter() - t0
    announce_batch(run_id, batch_id, ids, "models-loaded")
    started = time.time()
    result = embed_batch(preps, visual, image, batch=cfg.jobs.gpu_batch, mix=mixes_items(cfg, visual.device))
    result.stats.update(batch=batch_id, worker=worker_name(), load_s=round(load_s, 3), device=str(visual.device),
                        started=started, ended=time.time(), model_loads=dict(sorted(LOADS.items())))
    return result


def finish_task(group: list[Staged], result, cfg: Config, store: str) -> list[dict]:
    """Stage 3 on a CPU worker: pool each prepared item's embeddings and write its shard; their report rows.

    ``result`` is the group's batch (None when the group had nothing to embed, e.g. texts only).
    """
    rows = []
    for staged in (s for s in group if not s.done):
        t0 = time.perf_counter()
        row = dict(staged.row, status="failed")
        try:
            embedded = result.embedded[staged.item.id] if result is not None else Embedded()
            features = complete_item(staged.prepared, embedded, result, cfg)
            write_shard(store, features, config_hash=cfg.feature_hash(), input_sha256=staged.hashes)
            row.update(ok_fields(features))
            if result is not None:
                stats = result.stats
                share = stats["seconds"] * staged.prepared.n_rows / max(1, stats["clips"] + stats["images"])
                row["timings"] = {**row["timings"], "embed_share_s": round(share, 4)}
                row["batch"] = {k: stats[k] for k in BATCH_FIELDS}
                row["model_loads"] = {**row["model_loads"], **stats["model_loads"]}
            row["timings"] = {**row["timings"], "finish_s": round(time.perf_counter() - t0, 4)}
        except Exception as e:  # noqa: BLE001  one bad item never aborts the batch
            row["reason"] = failure_reason(e)
        row["seconds"] = round(staged.row["seconds"] + time.perf_counter() - t0, 3)
        rows.append(row)
    return rows


#: what each row keeps of its batch's record (``batch`` in report.json)
BATCH_FIELDS = ("batch", "items", "clips", "images", "batches", "seconds", "fill_s", "load_s", "worker", "device",
                "started", "ended", "mixed", "model_loads")
