"""Dask task functions: module-level, plain picklable arguments, small results.

A task computes one item and writes its shard itself (big arrays never travel
through the scheduler); it returns a small status dict.  Every failure an item
can cause comes back as ``status="failed"`` with a one-line ``reason``.
"""

from __future__ import annotations

import os
import socket
import time
import traceback

from reelsim.config import Config
from reelsim.errors import MediaError, ReelsimError
from reelsim.extractors.registry import LOADS
from reelsim.pipeline.item import Models, analyse_item, analyse_products
from reelsim.storage.hashing import sha256_file, sha256_text
from reelsim.storage.layout import StoreLayout
from reelsim.storage.manifest import Item, check_input_file, input_files
from reelsim.storage.shards import shard_is_current, write_shard

_THREADS_SET = False
#: Dask event topic on which every item attempt announces its start (see jobs/watch.py).
START_TOPIC = "reelsim-item-start"


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


def load_models(item: Item | list[Item], cfg: Config, run_id: str | None, *, device: str | None = None,
                modalities: tuple[str, ...] | None = None):
    """The models of ``item`` (or of every item of a group), loaded once per worker process (registry cache).

    The first load on a worker can take a while; the driver's timeout clock
    for the item is paused meanwhile (``loading-models`` / ``models-loaded``).
    ``device`` overrides the configured one; ``modalities`` (default: all the
    item needs, :func:`models_needed`) limits which are loaded now.
    """
    items = item if isinstance(item, list) else [item]
    ids = [i.id for i in items] if isinstance(item, list) else item.id
    models = Models(cfg, device=device)
    announce_start(ids, run_id, phase="loading-models")
    needed = dict.fromkeys(m for i in items for m in models_needed(i)) if modalities is None else modalities
    for modality in needed:
        models.get(modality)
    announce_start(ids, run_id, phase="models-loaded")
    return models


def status_row(item_id: str, kind: str | None, status: str, reason: str | None = None) -> dict:
    """One item's line in report.json (the fields every status has)."""
    return {"item": item_id, "kind": kind, "status": status, "reason": reason,
            "seconds": 0.0, "n_shots": None, "decode_errors": None, "warnings": [], "timings": {},
            "attempts": 0 if status == "failed" else 1, "worker": None, "model_loads": {}}


def process_item(item: Item, cfg: Config, store: str, torch_threads: int | None = None,
                 run_id: str | None = None) -> dict:
    """Analyse one item and write its shard, unless an up-to-date shard exists.

    Returns
    -------
    dict with ``item``, ``status`` (``ok`` | ``cached`` | ``failed``),
    ``reason`` (failures), ``seconds``, ``n_shots``, ``decode_errors`` (corrupt
    packets skipped in a video item decoded in this run), ``warnings``, ``timings``,
    ``worker`` (where it ran) and ``model_loads`` (models this worker process
    has built so far: each count is 1 when models load once per worker).
    """
    t0 = time.perf_counter()
    result = status_row(item.id, item.kind, "failed")
    result.update(attempts=1, worker=worker_name())
    limit_threads(torch_threads)  # imports torch: slow on a fresh worker, so before the item's clock starts
    announce_start(item.id, run_id)
    try:
        hashes = input_hashes(item)
        config_hash = cfg.feature_hash()
        path = StoreLayout(store).shard(item.id)
        if shard_is_current(path, config_hash=config_hash, input_sha256=hashes):
            result["status"] = "cached"
        else:
            models = load_models(item, cfg, run_id)
            features = analyse_item(item, cfg, models)
            write_shard(store, features, config_hash=config_hash, input_sha256=hashes)
            result.update(ok_fields(features))
    except Exception as e:  # noqa: BLE001  one item's failure never aborts the batch (see failure_reason)
        result["reason"] = failure_reason(e)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    result["model_loads"] = dict(sorted(LOADS.items()))
    return result


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


def process_items(items: list[Item], cfg: Config, store: str, torch_threads: int | None = None,
                  run_id: str | None = None) -> list[dict]:
    """Analyse a group of items without video and write each one's shard: one task, one row per item.

    The small items of a catalog (products, text-only rows) run as tasks of
    many items (the runner groups them, ``jobs.group_size``) so that the
    scheduler's cost per task is shared and the image and text models embed
    a batch instead of one item at a time
    (:func:`reelsim.pipeline.item.analyse_products`). Each item is still
    hashed, checked against its shard, written to its own shard and reported
    on its own row, exactly as :func:`process_item` does; an item that fails
    (a missing or unreadable image, a failed write) fails alone.

    Returns
    -------
    list of dict, one per item in order, with the fields of :func:`process_item`.
    ``seconds`` is the item's share of the group's time (group seconds / items).
    """
    t0 = time.perf_counter()
    rows = []
    for item in items:
        row = status_row(item.id, item.kind, "failed")
        row.update(attempts=1)
        rows.append(row)
    worker = worker_name()
    limit_threads(torch_threads)
    announce_start([i.id for i in items], run_id)
    config_hash = cfg.feature_hash()
    todo: list[tuple[int, dict]] = []
    for n, item in enumerate(items):
        try:
            hashes = input_hashes(item)
            if shard_is_current(StoreLayout(store).shard(item.id), config_hash=config_hash, input_sha256=hashes):
                rows[n]["status"] = "cached"
            else:
                todo.append((n, hashes))
        except Exception as e:  # noqa: BLE001  (this item fails, the others go on)
            rows[n]["reason"] = failure_reason(e)
    if todo:
        try:
            models = load_models([items[n] for n, _ in todo], cfg, run_id)
            results = analyse_products([items[n] for n, _ in todo], cfg, models)
        except Exception as e:  # noqa: BLE001  (e.g. a model that does not load: every item of the group says so)
            results = [e] * len(todo)
        for (n, hashes), features in zip(todo, results):
            try:
                if isinstance(features, Exception):
                    raise features
                write_shard(store, features, config_hash=config_hash, input_sha256=hashes)
                rows[n].update(ok_fields(features))
            except Exception as e:  # noqa: BLE001
                rows[n]["reason"] = failure_reason(e)
    share = round((time.perf_counter() - t0) / max(1, len(items)), 3)
    loads = dict(sorted(LOADS.items()))
    for row in rows:
        row.update(seconds=share, worker=worker, model_loads=loads)
    return rows
