"""Dask task functions: module-level, plain picklable arguments, small results.

A task computes one item and writes its shard itself (big arrays never travel
through the scheduler); it returns a small status dict.  Every failure an item
can cause comes back as ``status="failed"`` with a one-line ``reason``.
"""

from __future__ import annotations

import os
import time
import traceback

from reelsim.errors import MediaError, ReelsimError
from reelsim.pipeline.config import Config
from reelsim.storage.catalog import Item, input_files
from reelsim.extractors.weights import sha256_file
from reelsim.storage.shards import sha256_text, shard_is_current, shard_path, write_shard

_THREADS_SET = False


def _limit_threads(n: int | None) -> None:
    """Give torch ``n`` intra-op threads in this worker process (once)."""
    global _THREADS_SET
    if n and not _THREADS_SET:
        import torch

        torch.set_num_threads(n)
        _THREADS_SET = True


def input_hashes(item: Item) -> dict[str, str]:
    """sha256 of every input the item's features depend on (files and text)."""
    out = {}
    for modality, path in input_files(item).items():
        if not os.path.isfile(path):
            raise MediaError(f"{modality} file not found: {path}")
        out[modality] = sha256_file(path)
    if item.text:
        out["text"] = sha256_text(item.text)
    return out


def status_row(item_id: str, kind: str | None, status: str, reason: str | None = None) -> dict:
    """One item's line in report.json (the fields every status has)."""
    return {"item": item_id, "kind": kind, "status": status, "reason": reason,
            "seconds": 0.0, "n_shots": None, "warnings": [], "timings": {}}


def process_item(item: Item, cfg: Config, store: str, torch_threads: int | None = None) -> dict:
    """Analyse one item and write its shard, unless an up-to-date shard exists.

    Returns
    -------
    dict with ``item``, ``status`` (``ok`` | ``cached`` | ``failed``),
    ``reason`` (failures), ``seconds``, ``n_shots``, ``warnings``, ``timings``.
    """
    from reelsim.pipeline.item import Models, analyse_item

    t0 = time.perf_counter()
    result = status_row(item.id, item.kind, "failed")
    try:
        _limit_threads(torch_threads)
        hashes = input_hashes(item)
        config_hash = cfg.feature_hash()
        path = shard_path(store, item.id)
        if shard_is_current(path, config_hash=config_hash, input_sha256=hashes):
            result["status"] = "cached"
        else:
            features = analyse_item(item, cfg, Models(cfg))
            write_shard(store, features, config_hash=config_hash, input_sha256=hashes)
            result.update(status="ok", warnings=features.warnings, timings=features.timings,
                          n_shots=len(features.video.shots) if features.video else None)
    except ReelsimError as e:
        result["reason"] = str(e)
    except Exception as e:  # an unexpected bug must not abort the batch: report it with its location
        where = traceback.extract_tb(e.__traceback__)[-1]
        result["reason"] = f"internal error {e.__class__.__name__}: {e} (at {os.path.basename(where.filename)}:{where.lineno})"
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result
