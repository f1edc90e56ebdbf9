"""The batch job: catalog in, shards written on Dask workers, lists out.

One task per item (``client.map``), consumed with ``as_completed`` so each
finished item is counted at once, a failed item is recorded and the rest go
on; a progress bar shows on stderr.  Then the driver fuses the item
embeddings, builds the FAISS index and writes the neighbour lists.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from reelsim.pipeline.config import Config
from reelsim.storage.atomic import write_text_atomic
from reelsim.storage.catalog import read_inputs

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
        lines += [f"  FAILED {r['item']}: {r['reason']}" for r in self.failed]
        lines += [f"  warning {r['item']}: {w}" for r in self.items for w in r.get("warnings") or []]
        if self.lists and "added" in self.lists:
            lines.append(f"added {self.lists['added']} items ({self.lists['skipped']} already indexed), "
                         f"updated {self.lists['updated_lists']} existing lists; catalog: {self.lists['items']} "
                         f"items -> {Path(store) / 'lists'}")
        elif self.lists:
            lines.append(f"lists: {self.lists['rows']} rows for {self.lists['items']} items -> {Path(store) / 'lists'}")
        return "\n".join(lines)


def default_workers() -> int:
    """Worker processes for a LocalCluster: one per two cores, at least 1, at most 4."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _client(scheduler: str | None, workers: int):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout="30s")
    # Dask's INFO chatter (worker start/stop) is not for reelsim's users; errors still show.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    return Client(cluster)


def _stage_totals(rows: list[dict]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for r in rows:
        for k, v in (r.get("timings") or {}).items():
            totals[k] = round(totals.get(k, 0.0) + v, 3)
    return totals


def write_report(store: Path, report: RunReport, cfg: Config, started: str) -> Path:
    """Write ``STORE/report.json`` atomically."""
    body = {
        "started_utc": started,
        "wall_s": round(report.wall_s, 3),
        "config_hash": cfg.feature_hash(),
        "summary": report.summary(),
        "stages_s": _stage_totals(report.items),
        "lists": report.lists,
        "items": report.items,
    }
    path = store / "report.json"
    write_text_atomic(path, json.dumps(body, indent=2, ensure_ascii=False))
    return path


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="items", unit="item", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def run_catalog(inputs: list[str], store: Path, cfg: Config, *, scheduler: str | None = None,
                workers: int | None = None, progress: bool = True, lists: str = "rebuild") -> RunReport:
    """Process every item of ``inputs`` into ``store`` and write lists + report.json.

    ``lists``: ``rebuild`` fuses every processed item into a new catalog, index
    and lists (``reelsim run``); ``add`` adds the processed items to the
    store's existing catalog, index and lists (``reelsim add``).
    """
    from dask.distributed import as_completed

    from reelsim.jobs.lists import add_items, build_lists
    from reelsim.jobs.tasks import process_item, status_row
    from reelsim.storage.shards import item_key

    t0 = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    items, problems = read_inputs(inputs)
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    report = RunReport(items=[status_row(p.id, None, "failed", p.reason) for p in problems])
    workers = workers or default_workers()
    threads = max(1, (os.cpu_count() or 1) // workers) if not scheduler else None
    if items:
        with _client(scheduler, workers) as client, _progress(len(items), progress) as bar:
            futures = client.map(process_item, items, cfg=cfg, store=str(store), torch_threads=threads,
                                 key=[f"item-{item_key(i.id)}" for i in items], pure=False)
            by_key = {f.key: i for f, i in zip(futures, items)}
            for fut in as_completed(futures):
                try:
                    row = fut.result()
                except Exception as e:  # the worker died or the task could not run: the item failed
                    item = by_key[fut.key]
                    row = status_row(item.id, item.kind, "failed", f"task error {e.__class__.__name__}: {e}")
                report.items.append(row)
                if row["status"] == "failed" and progress:  # without a bar the summary lists failures
                    bar.write(f"failed: {row['item']}: {row['reason']}")
                bar.update(1)
                fut.release()
    order = {i.id: n for n, i in enumerate(items)}
    report.items.sort(key=lambda r: (order.get(r["item"], -1), r["item"]))
    done = [r["item"] for r in report.items if r["status"] in ("ok", "cached")]
    if done:
        t1 = time.perf_counter()
        if lists == "add":
            report.lists = add_items(store, done, cfg.fusion, progress=progress, text_model=cfg.models.text)
        else:
            report.lists = build_lists(store, done, cfg.fusion, progress=progress, text_model=cfg.models.text)
        report.lists["seconds"] = round(time.perf_counter() - t1, 3)
    report.wall_s = time.perf_counter() - t0
    write_report(store, report, cfg, started)
    return report
