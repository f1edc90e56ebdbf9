"""Scaling with worker processes, and the scheduler's overhead per item.

Prints, in one run:
- a catalog of N short clips (default 16 clips of 2 s, two shots each,
  320x240, with audio) processed at 1, 2 and 4 local worker processes:
  cold (``run_catalog`` as ``reelsim run`` does it: cluster start and model
  loading included) and warm (a cluster started and its models loaded
  beforehand, then the same catalog on a fresh store through
  ``--scheduler``); items/s and the speed-up over 1 worker;
- scheduler overhead per item: the whole catalog again with every item
  cached (each prepare task hashes its input and opens its shard) through the
  run's driver (:class:`~reelsim.jobs.driver.StagedRun`), against the same
  task function called in-process; and a no-op task round trip
  (``client.map`` + wait) per item.

The machine's core count and load average are printed: figures from a
shared or loaded machine are only comparable within one run.

``--text N`` instead: a catalog of N text-only products (titles made from
word lists, seeded) end to end as ``reelsim run`` does it (its own local
cluster, the small items in groups with batched text-model calls, the
shards, then the lists), with the driver's peak RSS (this process is the
driver), items/s, and the scheduler's overhead per item (the same catalog
again, every item cached, through the runner against the task function
called in-process on the same groups).

Usage: python benchmarks/scale.py [--clips 16] [--workers 1 2 4] [--workdir DIR]
       python benchmarks/scale.py --text 100000 [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from reelsim.config import Config
from reelsim.jobs.driver import StagedRun, plan_tasks
from reelsim.jobs.runner import run_catalog
from reelsim.jobs.tasks import START_TOPIC, prepare_task
from reelsim.jobs.watch import ItemWatch
from reelsim.pipeline.synth import Segment, make_video
from reelsim.storage.manifest import read_inputs

SOURCES = ["testsrc2", "mandelbrot", "smptebars", "rgbtestsrc", "cellauto=rule=110:seed=3",
           "life=seed=3:ratio=0.3:mold=10", "sierpinski=type=carpet:seed=2", "gradients=seed=5:speed=0.05"]


def make_catalog(folder: Path, n: int) -> Path:
    """``n`` clips of two 25-frame shots at 25 fps, 320x240, tone per shot; a manifest listing them."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        a, b = SOURCES[i % len(SOURCES)], SOURCES[(i * 3 + 1) % len(SOURCES)]
        segs = [Segment(a, 25, f"sine=frequency={200 + 40 * i}"), Segment(b, 25 + i % 2, "sine=frequency=700")]
        make_video(folder / f"clip{i:03d}.mp4", segs)
        lines.append(f'{{"id": "clip{i:03d}", "video": "clip{i:03d}.mp4"}}')
    (folder / "catalog.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "catalog.jsonl"


def load() -> str:
    return "load average %.1f %.1f %.1f" % os.getloadavg()


def cold(manifest: Path, store: Path, workers: int) -> float:
    t = time.perf_counter()
    report = run_catalog([str(manifest)], store, Config(), workers=workers, progress=False)
    assert report.summary()["ok"] == report.summary()["total"], report.summary()
    return time.perf_counter() - t


def warm(manifest: Path, warmup: Path, store: Path, workers: int) -> float:
    """Seconds for the catalog on a cluster whose workers have already loaded their models."""
    import logging

    from dask.distributed import Client, LocalCluster

    threads = max(1, (os.cpu_count() or 1) // workers)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                      silence_logs=logging.ERROR, local_directory=str(store.parent / ".scratch")) as cluster, \
            Client(cluster) as client:
        run_on(client, warmup, store.parent / f"warm-{workers}", threads)  # every worker loads its models
        t = time.perf_counter()
        rows = run_on(client, manifest, store, threads)
        wall = time.perf_counter() - t
    assert all(r["status"] == "ok" for r in rows), [r["reason"] for r in rows if r["status"] != "ok"]
    return wall


def run_on(client, manifest: Path, store: Path, threads: int | None) -> list[dict]:
    """The run's driver on an existing client (no lists, no report): every item's row."""
    import uuid

    items, _ = read_inputs([str(manifest)])
    store.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex
    watch = ItemWatch(run_id)
    rows: list[dict] = []
    client.subscribe_topic(START_TOPIC, watch.on_event)
    try:
        StagedRun(client, items, Config(), store, run_id=run_id, watch=watch, add_row=rows.append,
                  torch_threads=threads).run()
    finally:
        client.unsubscribe_topic(START_TOPIC)
    return rows


def overhead(manifest: Path, cached_store: Path, repeats: int = 3) -> tuple[float, float, float, int]:
    """(in-process s/item, through Dask s/item, no-op round trip s/item, n) on an all-cached store."""
    import logging

    from dask.distributed import Client, LocalCluster, wait

    items, _ = read_inputs([str(manifest)])
    n = len(items)
    best_local = min(_timed(lambda: [prepare_task([i], Config(), str(cached_store)) for i in items])
                     for _ in range(repeats))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                      silence_logs=logging.ERROR, local_directory=str(cached_store.parent / ".scratch-oh")) as c, \
            Client(c) as client:
        run_on(client, manifest, cached_store, 1)  # imports on the worker
        best_dask = min(_timed(lambda: run_on(client, manifest, cached_store, 1)) for _ in range(repeats))
        noop = min(_timed(lambda: wait(client.map(_noop, range(n), pure=False))) for _ in range(repeats))
    return best_local / n, best_dask / n, noop / n, n


def _noop(x):
    return x


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


WORDS = ("organic fresh frozen smoked dark milk white whole wheat gluten-free crunchy spicy sweet salted "
         "roasted vegan creamy sparkling wireless portable steel bamboo cotton leather ceramic classic mini "
         "family large").split()
THINGS = ("bananas apples coffee tea chocolate cookies pasta rice salmon cheese yogurt juice water soap shampoo "
          "headphones earbuds speaker charger cable mug towel pan knife blanket candle notebook backpack").split()


def make_text_catalog(path: Path, n: int, seed: int = 0) -> Path:
    """A manifest of ``n`` text-only products: ``{"id", "title", "description"}`` from word lists."""
    import json
    import random

    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            words = rng.sample(WORDS, 3)
            thing = rng.choice(THINGS)
            f.write(json.dumps({"id": f"sku-{i:07d}", "title": f"{' '.join(words).capitalize()} {thing}",
                                "description": f"{rng.randint(1, 12) * 50} g, {rng.choice(WORDS)} {thing}"}) + "\n")
    return path


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def text_run(n: int, workers: int, work: Path) -> None:
    """``--text``: N text-only products end to end, driver peak RSS, items/s, scheduler overhead per item."""
    manifest = make_text_catalog(work / "catalog.jsonl", n)
    store = work / "store"
    print(f"catalog: {n} text-only products; {load()}; driver peak RSS so far {peak_rss_mb():.0f} MB", flush=True)
    t = time.perf_counter()
    report = run_catalog([str(manifest)], store, Config(), workers=workers, progress=True)
    wall = time.perf_counter() - t
    s = report.summary()
    print(f"run: {s} in {wall:.1f} s = {n / wall:.1f} items/s end to end (items, shards, lists); lists "
          f"{report.lists.get('seconds')} s ({report.lists.get('index')}); driver peak RSS {peak_rss_mb():.0f} MB; "
          f"{load()}", flush=True)
    stages = report.spool.stage_totals
    print(f"  stage seconds summed over items: {stages}", flush=True)

    # scheduler overhead: the same catalog, every item cached now, through the runner vs in-process (the
    # in-process part imports torch into this process: the driver's peak RSS above is the run's)
    items, _ = read_inputs([str(manifest)])
    t = time.perf_counter()
    again = run_catalog([str(manifest)], store, Config(), workers=workers, progress=False, lists="add")
    through = time.perf_counter() - t
    sample = plan_tasks(items, Config().jobs.group_size, workers)[:max(1, 2000 // Config().jobs.group_size)]
    t = time.perf_counter()
    for group in sample:
        prepare_task(group, Config(), str(store))
    local = (time.perf_counter() - t) / sum(len(g) for g in sample)
    print(f"cached re-run through the runner ({again.summary()['cached']} cached): {through:.1f} s = "
          f"{through / n * 1e3:.2f} ms/item (cluster start included); the task in-process: {local * 1e3:.2f} ms/item "
          f"-> scheduler overhead about {(through / n - local / workers) * 1e3:.2f} ms/item; {load()}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--text", type=int, default=0, help="instead: N text-only products end to end")
    args = ap.parse_args()
    import logging

    logging.getLogger("distributed").setLevel(logging.CRITICAL)  # shutdown chatter of the benchmark's clusters
    work = args.workdir or Path(tempfile.mkdtemp(prefix="reelsim-scale-"))
    print(f"machine: {os.cpu_count()} CPU cores; {load()}")
    if args.text:
        text_run(args.text, args.workers[0], work)
        return
    t = time.perf_counter()
    manifest = make_catalog(work / "media", args.clips)
    warmup = make_catalog(work / "warmup", max(args.workers))
    print(f"catalog: {args.clips} clips of 2 s (2 shots, 320x240, audio), made in {time.perf_counter() - t:.1f} s")

    results = {}
    for w in args.workers:
        c = cold(manifest, work / f"cold-{w}" / "store", w)
        print(f"  {w} worker(s), cold: {c:6.1f} s = {args.clips / c:.2f} items/s (cluster start + model loads)"
              f"; {load()}")
        h = warm(manifest, warmup, work / f"warm-{w}" / "store", w)
        print(f"  {w} worker(s), warm: {h:6.1f} s = {args.clips / h:.2f} items/s (models already loaded)"
              f"; {load()}")
        results[w] = (c, h)
    base_c, base_h = results[args.workers[0]]
    print(f"\nspeed-up over {args.workers[0]} worker(s) (cold / warm): " + ", ".join(
        f"{w}: {base_c / c:.2f}x / {base_h / h:.2f}x" for w, (c, h) in results.items()))

    local, dask, noop, n = overhead(manifest, work / f"cold-{args.workers[0]}" / "store")
    print(f"\nscheduler overhead, {n} cached items, 1 worker, best of 3: in-process {local * 1e3:.1f} ms/item, "
          f"through the run's driver {dask * 1e3:.1f} ms/item -> overhead {(dask - local) * 1e3:.1f} "
          f"ms/item; no-op task round trip {noop * 1e3:.2f} ms/item; {load()}")


if __name__ == "__main__":
    main()
